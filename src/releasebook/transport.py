"""Run a script or copy a file on one host: over SSH (Fabric) or on this machine (Invoke).

Transports know nothing of steps. One SSH connection per host is opened once and reused
for the whole run. Host keys are checked against the inventory's known_hosts file and an
unknown or changed key is refused: Fabric's default of accepting any key is switched off.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko
from fabric import Connection
from invoke.context import Context

from releasebook.errors import HostUnreachable
from releasebook.inventory import Host

TAIL_LINES = 20


@dataclass(frozen=True)
class Result:
    """What one script did on one host."""

    exited: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def tail(self, lines: int = TAIL_LINES) -> str:
        text = (self.stdout.rstrip("\n") + "\n" + self.stderr.rstrip("\n")).strip("\n")
        return "\n".join(text.splitlines()[-lines:])


class Transport(Protocol):
    name: str

    def run(self, script: str, *, timeout: float | None = None) -> Result: ...

    def put(self, local: Path, remote: str) -> None: ...

    def close(self) -> None: ...


class LocalTransport:
    """This machine, through Invoke: the ``local`` environment."""

    def __init__(self, name: str, cwd: Path) -> None:
        self.name = name
        self._context = Context()
        self._cwd = cwd

    def run(self, script: str, *, timeout: float | None = None) -> Result:
        started = time.monotonic()
        with self._context.cd(str(self._cwd)):
            # bash, like the login shell of the SSH hosts; the script is the plan's own text.
            result = self._context.run(  # noqa: S604
                script, hide=True, warn=True, in_stream=False, timeout=timeout, shell="/bin/bash"
            )
        assert result is not None  # warn=True always returns a result
        return Result(result.exited, result.stdout, result.stderr, time.monotonic() - started)

    def put(self, local: Path, remote: str) -> None:
        target = Path(remote)
        if not target.is_absolute():
            target = self._cwd / target
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)

    def close(self) -> None:
        return None


class SshTransport:
    """One host over SSH, with strict host key checking."""

    def __init__(self, host: Host) -> None:
        self.name = host.name
        self._host = host
        settings = host.ssh
        connect_kwargs: dict[str, object] = {"look_for_keys": settings.identity_file is None}
        if settings.identity_file is not None:
            connect_kwargs["key_filename"] = str(settings.identity_file)
        self._connection = Connection(
            host.address,
            user=settings.user,
            port=settings.port,
            connect_timeout=int(settings.connect_timeout),
            connect_kwargs=connect_kwargs,
        )
        client = self._connection.client
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if not settings.known_hosts.is_file():
            raise HostUnreachable(
                f"{host.name}: known_hosts file {settings.known_hosts} not found; "
                "it must hold this host's key"
            )
        client.load_host_keys(str(settings.known_hosts))

    def open(self) -> None:
        settings = self._host.ssh
        where = f"{self.name} ({settings.user}@{self._host.address}:{settings.port})"
        try:
            self._connection.open()
        except paramiko.BadHostKeyException as exc:
            raise HostUnreachable(
                f"{where}: host key CHANGED. known_hosts {settings.known_hosts} has "
                f"{_fingerprint(exc.expected_key)}, the host offered "
                f"{_fingerprint(exc.key)}. Refusing to connect."
            ) from None
        except paramiko.SSHException as exc:
            message = str(exc)
            if "not found in known_hosts" in message:
                message = (
                    f"host key not in {settings.known_hosts}; add it after checking its "
                    "fingerprint (ssh-keyscan, or `inv hosts --trust`)"
                )
            raise HostUnreachable(f"{where}: {message}") from None
        except (OSError, EOFError) as exc:
            raise HostUnreachable(f"{where}: cannot connect: {exc}") from None

    def run(self, script: str, *, timeout: float | None = None) -> Result:
        started = time.monotonic()
        result = self._connection.run(
            script, hide=True, warn=True, in_stream=False, timeout=timeout
        )
        return Result(result.exited, result.stdout, result.stderr, time.monotonic() - started)

    def put(self, local: Path, remote: str) -> None:
        self._connection.put(str(local), remote=remote)

    def close(self) -> None:
        self._connection.close()


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def open_transport(host: Host, root: Path) -> Transport:
    if host.transport == "local":
        return LocalTransport(host.name, root)
    transport = SshTransport(host)
    transport.open()
    return transport
