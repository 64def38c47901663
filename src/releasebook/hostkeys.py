"""``inv hosts --trust``: compare each host's SSH key with the inventory's known_hosts.

A host's key is fetched with a bare key exchange (no authentication, nothing trusted),
then found to be trusted, NEW (may be added once a person accepts its fingerprint) or
CHANGED (never replaced here: the old entry must be removed by hand, on purpose).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import paramiko
from paramiko.hostkeys import HostKeyEntry

from releasebook.errors import ReleasebookError
from releasebook.inventory import Environment, Host
from releasebook.quoting import quote

Status = Literal["trusted", "new", "changed", "unreachable"]
# paramiko logs a failed handshake with a traceback; the scan reports it in one line.
_PARAMIKO_LOG = "releasebook.hostkeys.paramiko"
logging.getLogger(_PARAMIKO_LOG).addHandler(logging.NullHandler())


class HostKeyChanged(ReleasebookError):
    """Exit 5: a host offered a key other than the one pinned in known_hosts (a rebuilt
    host, or someone in the middle). Nothing was written."""

    exit_code = 5


@dataclass(frozen=True)
class KeyStatus:
    host: str
    name: str  # the host as known_hosts names it: "addr", or "[addr]:port" off port 22
    known_hosts: Path
    status: Status
    key: paramiko.PKey | None = None  # what the host offered
    known: tuple[paramiko.PKey, ...] = ()  # what known_hosts holds for it
    error: str = ""


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def _load(path: Path) -> paramiko.HostKeys:
    return paramiko.HostKeys(str(path)) if path.is_file() else paramiko.HostKeys()


def _negotiable(key_type: str) -> list[str]:
    # known_hosts says ssh-rsa; the key exchange names RSA keys by their signature.
    return ["rsa-sha2-512", "rsa-sha2-256", key_type] if key_type == "ssh-rsa" else [key_type]


def fetch_key(address: str, port: int, timeout: float, prefer: Sequence[str] = ()) -> paramiko.PKey:
    """The host key ``address:port`` offers, preferring the types in ``prefer`` (as
    paramiko's SSHClient does when known_hosts has the host), trusting nothing."""
    sock = socket.create_connection((address, port), timeout=timeout)
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


def _scan_host(host: Host) -> KeyStatus:
    settings = host.ssh
    name = known_hosts_name(host.address, settings.port)
    entry = _load(settings.known_hosts).lookup(name)
    known = dict(entry) if entry is not None else {}
    base = KeyStatus(host.name, name, settings.known_hosts, "new", known=tuple(known.values()))
    try:
        key = fetch_key(host.address, settings.port, settings.connect_timeout, list(known))
    except (OSError, EOFError, paramiko.SSHException) as exc:
        return replace(base, status="unreachable", error=f"{type(exc).__name__}: {exc}")
    if not known:
        return replace(base, key=key)
    trusted = known.get(key.get_name()) == key
    return replace(base, key=key, status="trusted" if trusted else "changed")


def scan(env: Environment) -> list[KeyStatus]:
    """Every SSH host's key against its known_hosts file, in inventory order."""
    hosts = [h for h in env.hosts if h.transport == "ssh"]
    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(env.max_parallel, len(hosts)))) as pool:
        return list(pool.map(_scan_host, hosts))


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
    """Append each NEW key that ``confirm`` accepts to its host's known_hosts file; return
    those written (now trusted). CHANGED keys are never written."""
    written: list[KeyStatus] = []
    for status in statuses:
        if status.status != "new" or status.key is None or not confirm(status):
            continue
        path = env.host(status.host).ssh.known_hosts
        if _load(path).lookup(status.name) is not None:
            continue  # pinned meanwhile (by hand, or a second entry for the same address)
        _append(path, status.name, status.key)
        written.append(replace(status, status="trusted", known=(status.key,)))
    return written


# --- formatting -------------------------------------------------------------------------


def remove_command(status: KeyStatus) -> str:
    return f"ssh-keygen -R {quote(status.name)} -f {quote(status.known_hosts)}"


def format_status(status: KeyStatus, env_name: str) -> str:
    where = f"{status.host} ({status.name})"
    offered = fingerprint(status.key) if status.key is not None else ""
    if status.status == "trusted":
        return f"{where}: trusted  {offered}"
    if status.status == "new":
        return f"{where}: NEW key, not in {status.known_hosts}\n  {offered}"
    if status.status == "unreachable":
        return f"{where}: cannot fetch its key: {status.error}"
    pinned = "\n".join(f"    {fingerprint(k)}" for k in status.known)
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
