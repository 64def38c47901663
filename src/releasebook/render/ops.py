"""The day-2 runbooks: ``operations.md`` (maintenance, the app's processes, logs, commands
with the release's environment) and ``incident.md`` (the quick guide, from the same
definitions ``inv doctor`` runs), rendered from symbolic plans like release and rollback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from releasebook.errors import TemplateError
from releasebook.inventory import Environment
from releasebook.plan.model import Plan
from releasebook.plan.ops import ops_plan
from releasebook.render.blocks import blocks
from releasebook.render.templating import markdown_environment, template_dirs
from releasebook.runbooks import ops as book
from releasebook.runbooks.model import Runbook


@dataclass(frozen=True)
class Section:
    heading: str
    intro: str
    plan: Plan


def _sections(env: Environment) -> list[Section]:
    def plan(runbook: Runbook) -> Plan:
        return ops_plan(env, runbook, facts=None)

    name = env.name
    return [
        Section(
            "Maintenance mode",
            f"`inv maintenance on --env={name}` and `inv maintenance off --env={name}`. "
            f"`inv release --env={name} --maintenance` runs the same pair around its "
            "migrations (see `release.md`).",
            Plan(
                kind="ops",
                runbook=book.MAINTENANCE["on"],
                environment=env,
                release_id="maintenance",
                steps=plan(book.MAINTENANCE["on"]).steps + plan(book.MAINTENANCE["off"]).steps,
            ),
        ),
        *(
            Section(
                f"App {action}",
                f"`inv app.{action} --env={name} [--role ROLE]`: with `--role`, only that "
                "role's hosts and programs.",
                plan(book.APP[action]),
            )
            for action in ("status", "start", "stop", "restart")
        ),
        Section(
            "App logs",
            f"`inv app.logs --env={name} [--role ROLE] [--request-id ID] [--since 10m] "
            "[--lines N] [--follow]`: every host's lines merged by time on the controller. "
            "With `--request-id`, `cat` below is `grep --line-buffered -F -e ID`; `200` is "
            "`--lines`. The second step runs only with `--follow`, from the moment its tails "
            "have started on every host (so no line falls between the two), until Ctrl-C.",
            plan(book.LOGS_FOLLOW),
        ),
        Section(
            "A command with the live release's environment",
            f"`inv app.exec --env={name} -- CMD ARGS` and `inv app.manage --env={name} -- "
            "createsuperuser` (`venv/bin/python manage.py ...`), on one host (`--host`, "
            "`--role`; default the first web host), interactive on a terminal.",
            plan(book.EXEC),
        ),
    ]


def render_ops(env: Environment) -> dict[Path, str]:
    templates = markdown_environment(template_dirs(env.root), {"blocks": blocks})
    out = env.root / "runbooks" / env.name
    try:
        return {
            out / "operations.md": templates.get_template("operations.md.j2").render(
                env=env, sections=_sections(env)
            ),
            out / "incident.md": templates.get_template("incident.md.j2").render(
                env=env, plan=ops_plan(env, book.DOCTOR, facts=None)
            ),
        }
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"templates/{exc.name}:{exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"templates: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"templates/{exc.name}: template not found") from None
