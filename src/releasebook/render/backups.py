"""``runbooks/<env>/backup-restore.md``: the backup, restore and drill runbooks, and the
backup a release takes before migrating, from the same plans the commands run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import jinja2

from releasebook.errors import TemplateError
from releasebook.inventory import Environment
from releasebook.plan.build import build_plan
from releasebook.plan.model import Source
from releasebook.render.templating import markdown_environment, template_dirs

NAME = "backup-restore"


def backup_restore_path(env: Environment) -> Path:
    return env.root / "runbooks" / env.name / f"{NAME}.md"


def render_backup_restore(
    env: Environment, source: Source, filters: Mapping[str, Callable[..., object]]
) -> str:
    """``filters``: the release runbook's (``blocks``), so steps are shown alike."""
    plans = {
        kind: build_plan(env, kind, source=source, run=None)
        for kind in ("backup", "restore", "restore_drill")
    }
    release = build_plan(env, "release", source=source, run=None)
    try:
        template = markdown_environment(template_dirs(env.root), filters).get_template(
            f"{NAME}.md.j2"
        )
        return template.render(
            env=env,
            source=source,
            backup=plans["backup"],
            restore=plans["restore"],
            drill=plans["restore_drill"],
            before=release.step("backup"),
        )
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"templates/{exc.name}:{exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"templates/{NAME}.md.j2: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"templates/{exc.name}: template not found") from None
