"""Plan -> markdown runbooks through the Jinja2 templates in ``templates/``.

The runbook is rendered from a symbolic plan (run-specific values are shell variables
the operator sets), so what it shows is exactly what ``inv release`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from releasebook.errors import TemplateError
from releasebook.inventory import Environment, Host
from releasebook.plan.build import build_plan, runbook_commands
from releasebook.plan.model import HostWork, Plan, PlannedStep, PlannedUpload, Source
from releasebook.quoting import ShellVar, quote, render_command
from releasebook.render.readiness import render_readiness
from releasebook.render.templating import markdown_environment
from releasebook.runbooks import bookkeeping as book

RUNBOOKS = ("release", "rollback")


@dataclass(frozen=True)
class Block:
    """Hosts that run the same commands in a step, shown once."""

    targets: tuple[str, ...]
    commands: tuple[str, ...]
    verify: tuple[str, ...]
    undo: tuple[str, ...]


def _upload_command(host: Host, upload: PlannedUpload) -> str:
    if host.transport == "local":
        return f"cp {quote(upload.local)} {quote(upload.remote)}"
    # scp speaks SFTP: the remote path is taken literally, so expand it here, locally.
    login = f"{host.ssh.user}@{host.address}:"
    remote: Path | ShellVar | str = (
        ShellVar(upload.remote.name, upload.remote.suffix, login + upload.remote.prefix)
        if isinstance(upload.remote, ShellVar)
        else f"{login}{upload.remote}"
    )
    return f"scp -P {host.ssh.port} {quote(upload.local)} {quote(remote)}"


def _probe_command(work: HostWork) -> str:
    assert work.probe is not None
    probe = work.probe
    return render_command(
        "curl -fsS --max-time 5 -H {host} -H {proto} {url}",
        {
            "host": f"Host: {probe.host_header}",
            "proto": f"X-Forwarded-Proto: {probe.forwarded_proto}",
            "url": probe.url,
        },
    )


def _websocket_command(work: HostWork) -> str:
    """The upgrade by hand: curl's answer must start with ``HTTP/1.1 101``."""
    probe = work.probe
    assert probe is not None
    url = probe.websocket_url
    assert url is not None
    return render_command(
        "curl -sS --max-time 5 --include --http1.1 -H {host} -H {origin} "
        "-H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' "
        "-H 'Sec-WebSocket-Key: cmVsZWFzZWJvb2sgdmVyaWZ5' {url} | head -n 1",
        {
            "host": f"Host: {probe.host_header}",
            "origin": f"Origin: {probe.origin}",
            "url": "http" + url.removeprefix("ws"),
        },
    )


def _commands(work: HostWork) -> tuple[str, ...]:
    if work.probe is not None:
        if work.probe.websocket_url is not None:
            return (_probe_command(work), _websocket_command(work))
        return (_probe_command(work),)
    uploads: tuple[str, ...] = ()
    if work.host is not None:
        for upload in work.uploads:
            if upload.skip_if:
                uploads += (
                    f"# skip the next line when this succeeds on the host: {upload.skip_if}",
                )
            uploads += (_upload_command(work.host, upload),)
    return uploads + work.commands


def blocks(planned: PlannedStep) -> list[Block]:
    grouped: dict[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for work in planned.work:
        key = (_commands(work), work.verify, work.undo)
        grouped.setdefault(key, []).append(work.target)
    return [
        Block(tuple(targets), commands, verify, undo)
        for (commands, verify, undo), targets in grouped.items()
    ]


def _environment(root: Path) -> jinja2.Environment:
    return markdown_environment(root / "templates", {"blocks": blocks})


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
    documents[readiness] = render_readiness(env, env.root / "templates")
    return documents
