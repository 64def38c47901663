"""Plan -> markdown runbooks through the Jinja2 templates in ``templates/``.

The runbook is rendered from a symbolic plan (run-specific values are shell variables
the operator sets), so what it shows is exactly what ``inv release`` runs.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from releasebook.errors import TemplateError
from releasebook.inventory import Environment
from releasebook.plan.build import build_plan, runbook_commands
from releasebook.plan.model import Plan, Source
from releasebook.provision.inventory import playbook_dir
from releasebook.render.backups import backup_restore_path, render_backup_restore
from releasebook.render.blocks import blocks
from releasebook.render.ops import render_ops
from releasebook.render.readiness import render_readiness
from releasebook.render.setup import render_setup
from releasebook.render.templating import markdown_environment, template_dirs
from releasebook.runbooks import bookkeeping as book

RUNBOOKS = ("release", "rollback")


def _environment(root: Path) -> jinja2.Environment:
    return markdown_environment(template_dirs(root), {"blocks": blocks})


def render_runbook(env: Environment, source: Source, name: str) -> str:
    plan: Plan = build_plan(
        env, "release" if name == "release" else "rollback", source=source, run=None
    )
    host, frame = next(iter(plan.frames.items()))
    sample = frame.script([("STEP", ("COMMANDS OF THE STEP",), 600)]).rstrip("\n")
    renew = "\n".join(runbook_commands(env, book.RENEW))
    try:
        template = _environment(env.root).get_template(f"{name}.md.j2")
        return template.render(
            plan=plan,
            env=env,
            source=source,
            name=name,
            frame=sample,
            frame_host=host,
            renew=renew,
        )
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"templates/{exc.name}:{exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"templates/{name}.md.j2: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"templates/{exc.name}: template not found") from None


def runbook_paths(env: Environment) -> dict[str, Path]:
    return {name: env.root / "runbooks" / env.name / f"{name}.md" for name in RUNBOOKS}


def render_all(env: Environment, source: Source) -> dict[Path, str]:
    """Every generated document for an environment: release, rollback, readiness."""
    documents = {
        path: render_runbook(env, source, name) for name, path in runbook_paths(env).items()
    }
    readiness = env.root / "runbooks" / env.name / "production-readiness.md"
    documents[readiness] = render_readiness(env)
    # The setup runbook is read from the provisioning playbook: the project's own, or
    # the one installed with releasebook.
    playbook = playbook_dir(env.root) / "provision.yml"
    if any(host.transport == "ssh" for host in env.hosts) and playbook.is_file():
        documents[env.root / "runbooks" / env.name / "setup.md"] = render_setup(env)
    documents.update(render_ops(env))
    documents[backup_restore_path(env)] = render_backup_restore(env, source, {"blocks": blocks})
    return documents
