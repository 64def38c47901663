"""Run a script or copy a file on one host: over SSH (``ssh``, Fabric with strict host
keys and ``~/.ssh/config``) or on this machine (``local``). Transports know nothing of
steps."""

from __future__ import annotations

from pathlib import Path

from releasebook.inventory import Host
from releasebook.transport.base import Result, Transport
from releasebook.transport.local import LocalTransport
from releasebook.transport.ssh import PASSPHRASE_ENV, SshTransport

__all__ = [
    "PASSPHRASE_ENV",
    "LocalTransport",
    "Result",
    "SshTransport",
    "Transport",
    "open_transport",
]


def open_transport(host: Host, root: Path) -> Transport:
    if host.transport == "local":
        return LocalTransport(host.name, root)
    transport = SshTransport(host)
    transport.open()
    return transport
