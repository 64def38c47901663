"""``inv hosts --trust``: compare each host's SSH key with the inventory's known_hosts.

A host's key is fetched with a bare key exchange (no authentication, nothing trusted),
then found to be trusted, NEW (may be added once a person accepts its fingerprint) or
CHANGED (never replaced here: the old entry must be removed by hand, on purpose).

Hosts are reached as the transport reaches them (:func:`releasebook.transport.sshconfig.resolve`):
at the ``HostName`` and ``Port`` of a ``~/.ssh/config`` alias, through its ProxyCommand,
or through its gateways. Each gateway's key is checked too, before the keys behind it:
those are fetched over a ``direct-tcpip`` channel of an authenticated connection to the
gateway, which is only opened once the gateway's own key is trusted (in an earlier round
of the same run, with ``--trust``). Keys are looked up and recorded under the name
OpenSSH uses (``HostKeyAlias``, or ``HostName`` as ``[host]:port`` off port 22).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import paramiko
from paramiko.hostkeys import HostKeyEntry

from releasebook.errors import HostUnreachable
from releasebook.execute.parallel import run_parallel
from releasebook.inventory import Environment, Host
from releasebook.quoting import quote
from releasebook.transport import SshTransport
from releasebook.transport.known_hosts import KnownHosts
from releasebook.transport.sshconfig import (
    Endpoint,
    Route,
    SshConfigError,
    SshConfigFiles,
    known_hosts_name,
    resolve,
)

# unchecked: behind a gateway whose key is not trusted, so never asked.
Status = Literal["trusted", "new", "changed", "unreachable", "unchecked"]
# paramiko logs a failed handshake with a traceback; the scan reports it in one line.
_PARAMIKO_LOG = "releasebook.transport.hostkeys.paramiko"
logging.getLogger(_PARAMIKO_LOG).addHandler(logging.NullHandler())
_UNTRUSTED = {"new": "is not trusted", "changed": "CHANGED", "unreachable": "could not be fetched"}


@dataclass(frozen=True)
class KeyStatus:
    host: str  # the inventory host; for a gateway: every host behind it, joined by ", "
    name: str  # the name in known_hosts: HostKeyAlias, or HostName ("[name]:port" off 22)
    known_hosts: Path
    status: Status
    key: paramiko.PKey | None = None  # what the host offered
    known: tuple[paramiko.PKey, ...] = ()  # what known_hosts holds for it
    error: str = ""
    gateway: str = ""  # user@host:port when this is the key of a gateway on the way

    @property
    def label(self) -> str:
        return f"{self.host}: gateway {self.gateway}" if self.gateway else self.host


def fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def _load(path: Path) -> KnownHosts:
    return KnownHosts.load(path)


def _negotiable(key_type: str) -> list[str]:
    # known_hosts says ssh-rsa; the key exchange names RSA keys by their signature.
    return ["rsa-sha2-512", "rsa-sha2-256", key_type] if key_type == "ssh-rsa" else [key_type]


_Socket = socket.socket | paramiko.Channel | paramiko.ProxyCommand


def _handshake(sock: _Socket, timeout: float, prefer: Sequence[str]) -> paramiko.PKey:
    """The host key offered on ``sock`` (closed after), preferring the types in ``prefer``
    (as paramiko's SSHClient does when known_hosts has the host), trusting nothing."""
    try:
        transport = paramiko.Transport(sock)
    except BaseException:
        sock.close()
        raise
    try:
        transport.set_log_channel(_PARAMIKO_LOG)
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        options = transport.get_security_options()
        first = [t for p in prefer for t in _negotiable(p) if t in options.key_types]
        options.key_types = [
            *dict.fromkeys(first),
            *(t for t in options.key_types if t not in first),
        ]
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    finally:
        transport.close()


def _fetch(host: Host, route: Route, hop: int, prefer: Sequence[str]) -> paramiko.PKey:
    """The key of hop ``hop`` of ``route`` (its gateways, then the host), reached as the
    transport reaches it. Raises OSError, EOFError, SSHException or HostUnreachable."""
    timeout = route.connect_timeout
    if hop > 0:  # through the gateways before it, their keys checked
        transport = SshTransport(host)
        try:
            return _handshake(transport.tunnel(hop), timeout, prefer)
        finally:
            transport.close()
    if route.proxy_command is not None:
        return _handshake(paramiko.ProxyCommand(route.proxy_command), timeout, prefer)
    first = (*route.gateways, route.target)[0]
    sock = socket.create_connection((first.hostname, first.port), timeout=timeout)
    return _handshake(sock, timeout, prefer)


@dataclass
class _Walk:
    """One host's way through its gateways to itself: ``done`` hops have trusted keys."""

    host: Host
    route: Route
    done: int = 0
    stop: KeyStatus | None = None  # the gateway whose key is not trusted

    @property
    def hops(self) -> tuple[Endpoint, ...]:
        return (*self.route.gateways, self.route.target)


@dataclass(eq=False)
class _Check:
    """One key to fetch: a host's, or a gateway's on the way to the ``walks``' hosts."""

    walks: list[_Walk] = field(default_factory=list)

    def status(self) -> KeyStatus:
        walk = self.walks[0]
        endpoint = walk.hops[walk.done]
        known_hosts = walk.host.ssh.known_hosts
        lookup = _load(known_hosts).lookup(endpoint.key_name)
        known = lookup.by_type()
        base = KeyStatus(
            ", ".join(w.host.name for w in self.walks),
            endpoint.key_name,
            known_hosts,
            "new",
            known=tuple(known.values()),
            gateway=endpoint.label if walk.done < len(walk.route.gateways) else "",
        )
        try:
            key = _fetch(walk.host, walk.route, walk.done, list(known))
        except HostUnreachable as exc:
            return replace(base, status="unreachable", error=str(exc))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            return replace(base, status="unreachable", error=f"{type(exc).__name__}: {exc}")
        if lookup.is_revoked(key):
            return replace(base, key=key, status="changed", error="REVOKED in known_hosts")
        if not known:
            return replace(base, key=key)
        trusted = known.get(key.get_name()) == key
        return replace(base, key=key, status="trusted" if trusted else "changed")


def _pinned(status: KeyStatus) -> bool:
    """Whether the key ``status`` saw is in known_hosts now (``trust`` may have added it)."""
    if status.status == "trusted":
        return True
    if status.status != "new" or status.key is None:
        return False
    pinned = _load(status.known_hosts).lookup(status.name).by_type()
    return pinned.get(status.key.get_name()) == status.key


def _walks(env: Environment) -> tuple[list[_Walk], list[KeyStatus]]:
    """Each SSH host's route, or why it has none."""
    hosts = [h for h in env.hosts if h.transport == "ssh"]
    walks: list[_Walk] = []
    failed: list[KeyStatus] = []
    files: SshConfigFiles | SshConfigError
    try:
        files = SshConfigFiles.load()
    except SshConfigError as exc:
        files = exc
    for host in hosts:
        try:
            if isinstance(files, SshConfigError):
                raise files
            walks.append(_Walk(host, resolve(host.address, host.ssh, files)))
        except SshConfigError as exc:
            name = known_hosts_name(host.address, host.ssh.port)
            failed.append(
                KeyStatus(host.name, name, host.ssh.known_hosts, "unreachable", error=str(exc))
            )
    return walks, failed


def scan(
    env: Environment, *, review: Callable[[list[KeyStatus]], object] | None = None
) -> list[KeyStatus]:
    """Every SSH host's key against its known_hosts file, and each gateway's key on the
    way, in rounds: the first gateway of every host (or the host itself), then what lies
    behind the gateways found trusted, and so on. ``review`` sees each round's statuses
    before the next round (it may ``trust`` NEW keys: a gateway trusted there is passed
    through). A host behind a gateway whose key is not trusted is ``unchecked``."""
    walks, failed = _walks(env)
    found: list[KeyStatus] = []
    while True:
        checks: dict[object, _Check] = {}
        rounds: list[_Check | KeyStatus] = [*failed]  # no route: the first round only
        failed = []
        for walk in walks:
            if walk.stop is not None:
                rounds.append(_unchecked(walk, walk.stop))
                walk.stop, walk.done = None, len(walk.hops)
            if walk.done == len(walk.hops):
                continue
            # A gateway's key is checked once for all hosts behind it (the same way there);
            # a host's own key is the host's.
            ident: object = (walk.host.ssh.known_hosts, walk.hops[: walk.done + 1])
            if walk.done == len(walk.route.gateways):
                ident = walk.host.name
            if ident not in checks:
                checks[ident] = _Check()
                rounds.append(checks[ident])
            checks[ident].walks.append(walk)
        if not rounds:
            return found
        jobs = [check.status for check in checks.values()]
        fetched = dict(zip(checks.values(), run_parallel(jobs, env.max_parallel), strict=True))
        statuses = [fetched[r] if isinstance(r, _Check) else r for r in rounds]
        if review is not None:
            review(statuses)
        found += statuses
        for check, status in fetched.items():
            for walk in check.walks:
                if not status.gateway:
                    walk.done = len(walk.hops)
                elif _pinned(status):
                    walk.done += 1
                else:
                    walk.stop = status


def _unchecked(walk: _Walk, gateway: KeyStatus) -> KeyStatus:
    target = walk.route.target
    why = _UNTRUSTED.get(gateway.status, "is not trusted")
    return KeyStatus(
        walk.host.name,
        target.key_name,
        walk.host.ssh.known_hosts,
        "unchecked",
        error=f"not checked: the key of gateway {gateway.gateway} {why}",
    )


def _append(path: Path, name: str, key: paramiko.PKey) -> None:
    line = HostKeyEntry([name], key).to_line()
    assert line is not None  # a name and a key make a valid entry
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    with path.open("a", encoding="utf-8") as f:
        f.write(("\n" if text and not text.endswith("\n") else "") + line)


def trust(
    env: Environment, statuses: Sequence[KeyStatus], *, confirm: Callable[[KeyStatus], bool]
) -> list[KeyStatus]:
    """Append each NEW key that ``confirm`` accepts to its known_hosts file (the host's,
    for a gateway too); return those written (now trusted). CHANGED keys are never
    written."""
    written: list[KeyStatus] = []
    for status in statuses:
        if status.status != "new" or status.key is None or not confirm(status):
            continue
        path = status.known_hosts
        if _load(path).lookup(status.name).keys:
            continue  # pinned meanwhile (by hand, or a second entry for the same address)
        _append(path, status.name, status.key)
        written.append(replace(status, status="trusted", known=(status.key,)))
    return written


# --- formatting -------------------------------------------------------------------------


def remove_command(status: KeyStatus) -> str:
    return f"ssh-keygen -R {quote(status.name)} -f {quote(status.known_hosts)}"


def format_status(status: KeyStatus, env_name: str) -> str:
    where = f"{status.label} ({status.name})"
    offered = fingerprint(status.key) if status.key is not None else ""
    if status.status == "trusted":
        return f"{where}: trusted  {offered}"
    if status.status == "new":
        return f"{where}: NEW key, not in {status.known_hosts}\n  {offered}"
    if status.status == "unreachable":
        return f"{where}: cannot fetch its key: {status.error}"
    if status.status == "unchecked":
        return f"{where}: {status.error}"
    pinned = "\n".join(f"    {fingerprint(k)}" for k in status.known) or "    (no other key)"
    if status.error:
        return f"{where}: host key {offered} is {status.error}; refusing it"
    return (
        f"{where}: host key CHANGED; refusing to replace it\n"
        f"  known_hosts {status.known_hosts} has:\n{pinned}\n"
        f"  the host offers:\n    {offered}\n"
        "  If the host was rebuilt, check the new fingerprint out of band (on its console:\n"
        "  ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), remove the old entry with\n"
        f"    {remove_command(status)}\n"
        f"  and run `inv hosts --trust --env={env_name}` again."
    )


def format_scan(statuses: Sequence[KeyStatus], env_name: str) -> str:
    if not statuses:
        return f"{env_name}: no SSH hosts"
    return "\n".join(format_status(s, env_name) for s in statuses)
