"""How many WebSocket connections a web restart closed, from the restart step's output.

An ASGI app's workers (``releasebook.django.asgi_worker``) log a line as they stop,
``releasebook: closing N WebSocket connection(s) with 1012 (service restart)``; the
restart step prints the lines each stopped master's log gained while it stopped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from releasebook.execute.outcome import Outcome

CLOSING_RE = re.compile(r"releasebook: closing (\d+) WebSocket connection\(s\) with 1012")


def websockets_closed(stdout: str) -> int | None:
    """The WebSockets the stops in ``stdout`` closed; None when no worker said (host
    output: untrusted, so only the line's count is read)."""
    counts = [int(match.group(1)) for match in CLOSING_RE.finditer(stdout)]
    return sum(counts) if counts else None


def websocket_report(outcomes: Iterable[Outcome]) -> tuple[dict[str, int], str | None]:
    """Each host's count, for the history, and a line for the operator (None: no host's
    workers said, as for a WSGI app)."""
    per_host = {
        outcome.target: count
        for outcome in outcomes
        if (count := websockets_closed(outcome.stdout)) is not None
    }
    if not per_host:
        return {}, None
    hosts = ", ".join(f"{host}: {count}" for host, count in per_host.items())
    total = sum(per_host.values())
    return per_host, (
        f"restart closed {total} WebSocket connection(s) with 1012 (service restart); {hosts}"
    )
