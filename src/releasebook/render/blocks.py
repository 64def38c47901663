"""Steps as the runbooks show them: the hosts that run the same commands grouped into
one block, uploads as the ``scp`` an operator types, the verify probe as ``curl``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from releasebook.execute.health import PROBE_HEADER
from releasebook.inventory import Host
from releasebook.plan.model import HostWork, PlannedStep, PlannedUpload
from releasebook.quoting import ShellVar, quote, render_command


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


_STATIC_FIELD = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"static\"])'"


def _probe_commands(work: HostWork) -> tuple[str, ...]:
    assert work.probe is not None
    probe = work.probe
    headers = {
        "host": f"Host: {probe.host_header}",
        "proto": f"X-Forwarded-Proto: {probe.forwarded_proto}",
        "probe": f"{PROBE_HEADER[0]}: {PROBE_HEADER[1]}",
    }
    ready = render_command(
        "curl -fsS --max-time 5 -H {host} -H {proto} -H {probe} {url}",
        {**headers, "url": probe.url},
    )
    if probe.static_base is None:
        return (ready,)
    # Through nginx with TLS the certificate names the site, not the host's address.
    insecure = "-k " if probe.static_base.startswith("https://") else ""
    static = render_command(
        "curl -fsS " + insecure + "--max-time 5 -o /dev/null -w '%{{content_type}}\\n' "
        '-H {host} -H {proto} {base}"${{STATIC}}"',
        {**headers, "base": probe.static_base},
    )
    return (
        f'# the answer\'s "static" is the path of a CSS file; expect text/css:\n'
        f"STATIC=$({ready} | {_STATIC_FIELD})",
        static,
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
        commands = _probe_commands(work)
        if work.probe.websocket_url is not None:
            commands += (_websocket_command(work),)
        return commands
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
