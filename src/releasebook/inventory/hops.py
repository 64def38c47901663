"""Jump hosts as the inventory writes them (``ssh.gateway``) and as ``ProxyJump`` does:
``[user@]host[:port]``, comma-separated, or ``none``."""

from __future__ import annotations

import re
from dataclasses import dataclass

NONE = "none"  # ProxyJump/ProxyCommand/gateway value that switches jumping off
_HOP = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?"
    r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)


@dataclass(frozen=True)
class Hop:
    """One ``[user@]host[:port]`` of a ProxyJump list or an ``ssh.gateway``."""

    user: str | None
    host: str
    port: int | None


def parse_hops(spec: str) -> tuple[Hop, ...]:
    """``"user@bastion:22,inner"`` -> hops; ``"none"`` -> no hop. Raises ValueError."""
    if spec.strip().lower() == NONE:
        return ()
    hops: list[Hop] = []
    for part in spec.split(","):
        match = _HOP.match(part.strip().removeprefix("ssh://"))
        if match is None:
            raise ValueError(f"expected [user@]host[:port], got {part.strip()!r}")
        port = int(match["port"]) if match["port"] else None
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"expected a port number between 1 and 65535 in {part.strip()!r}")
        hops.append(Hop(match["user"], match["host"].strip("[]"), port))
    return tuple(hops)
