"""Run a script or copy a file on one host: over SSH (Fabric) or on this machine (Invoke).

Transports know nothing of steps. One SSH connection per host is opened once and reused
for the whole run. Host keys are checked against the inventory's known_hosts file and an
unknown or changed key is refused: Fabric's default of accepting any key is switched off,
for gateways too (Fabric's own ProxyJump connections would accept any key, so gateways are
built here). ``~/.ssh/config`` is applied by :mod:`releasebook.transport.sshconfig`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config, Connection

from releasebook.errors import HostKeyChanged, HostUnreachable
from releasebook.inventory import Host
from releasebook.transport.base import LineStream, OnLine, Result
from releasebook.transport.known_hosts import KnownHosts, Lookup
from releasebook.transport.sshconfig import (
    Endpoint,
    SshConfigError,
    SshConfigFiles,
    known_hosts_name,
    resolve,
)

# The name of the variable that unlocks encrypted identity files, not a secret.
PASSPHRASE_ENV = "RELEASEBOOK_SSH_PASSPHRASE"  # noqa: S105
_KEY_TYPES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
# paramiko logs failures (with tracebacks) that the errors below already report.
_PARAMIKO_LOG = "releasebook.transport.paramiko"
logging.getLogger(_PARAMIKO_LOG).addHandler(logging.NullHandler())

RECONNECT_FOR = 30.0
# How paramiko says that a server accepted TCP but never completed the SSH handshake.
_NO_GREETING = ("protocol banner", "No existing session", "EOF during negotiation")


class _CannotConnect(HostUnreachable):
    """The host did not answer (as opposed to answering with a wrong key)."""


class SshTransport:
    """One host over SSH, with strict host key checking."""

    def __init__(self, host: Host) -> None:
        self.name = host.name
        self._host = host
        self._gave_up = False
        settings = host.ssh
        if not settings.known_hosts.is_file():
            raise HostUnreachable(
                f"{host.name}: known_hosts file {settings.known_hosts} not found; "
                "it must hold this host's key"
            )
        try:
            self._route = resolve(host.address, settings, SshConfigFiles.load())
        except SshConfigError as exc:
            raise HostUnreachable(f"{host.name}: {exc}") from None
        known = KnownHosts.load(settings.known_hosts)
        self._skipped: dict[Endpoint, list[Path]] = {}  # encrypted keys left to the agent
        self._known = known
        gateway: Connection | str | bool = self._route.proxy_command or False
        self._gateways: list[Connection] = []
        for hop in self._route.gateways:
            gateway = self._connection_to(hop, known, gateway, f"gateway {hop.label}: ")
            self._gateways.append(gateway)
        self._connection = self._connection_to(self._route.target, known, gateway, "")

    def _connection_to(
        self,
        endpoint: Endpoint,
        known: KnownHosts,
        gateway: Connection | str | bool,
        role: str,
    ) -> Connection:
        connection = Connection(
            endpoint.hostname,
            user=endpoint.user,
            port=endpoint.port,
            config=Config(ssh_config=paramiko.SSHConfig()),  # resolve() applied the files
            gateway=gateway,
            connect_timeout=math.ceil(self._route.connect_timeout),
            connect_kwargs=self._auth(endpoint, role),
        )
        client = connection.client
        client.set_log_channel(_PARAMIKO_LOG)
        lookup = known.lookup(endpoint.key_name)
        client.set_missing_host_key_policy(_Refuse(endpoint, lookup))
        _pin(client.get_host_keys(), lookup, endpoint)
        return connection

    def _auth(self, endpoint: Endpoint, role: str) -> dict[str, object]:
        passphrase = os.environ.get(PASSPHRASE_ENV) or None
        agent = endpoint.use_agent and bool(os.environ.get("SSH_AUTH_SOCK"))
        keys: list[str] = []
        for path in endpoint.identity_files:
            problem = _read_key(path, passphrase)
            if problem is None:
                keys.append(str(path))
            elif path == self._host.ssh.identity_file and not (problem == "encrypted" and agent):
                raise HostUnreachable(f"{self.name}: {role}{_key_problem(path, problem)}")
            elif problem == "encrypted":  # the agent may hold it, or another key may do
                self._skipped.setdefault(endpoint, []).append(path)
            # else: ~/.ssh/config names a file that is not there, as OpenSSH, go on
        timeout = self._route.connect_timeout
        kwargs: dict[str, object] = {
            "allow_agent": endpoint.use_agent,
            # OpenSSH tries ~/.ssh/id_* only when no identity file is named.
            "look_for_keys": not endpoint.identity_files,
            # A host that accepts TCP but never speaks SSH times out like one that never
            # answers, instead of after paramiko's own 15 s default.
            "banner_timeout": timeout,
            "auth_timeout": timeout,
        }
        if keys:
            kwargs["key_filename"] = keys
        if passphrase is not None:
            kwargs["passphrase"] = passphrase
        return kwargs

    def _where(self) -> str:
        via = f" via {self._route.via}" if self._route.via else ""
        return f"{self.name} ({self._route.target.label}{via})"

    def open(self) -> None:
        self._open_gateways(len(self._gateways))
        self._open(self._connection, self._route.target, self._where())

    def _open_gateways(self, count: int) -> None:
        """Open the first ``count`` gateways, outermost first."""
        for hop, connection in zip(
            self._route.gateways[:count], self._gateways[:count], strict=True
        ):
            self._open(connection, hop, self._gateway_where(hop))

    def _gateway_where(self, hop: Endpoint) -> str:
        return f"{self.name} ({self._route.target.label}): gateway {hop.label}"

    def tunnel(self, hop: int) -> paramiko.Channel:
        """A ``direct-tcpip`` channel to the SSH port of gateway number ``hop`` (the host
        itself when ``hop`` is the number of gateways), opened by the gateway before it;
        that gateway and those before it are connected to (keys checked, authenticated),
        the one at the far end is not: ``inv hosts`` fetches its key through the channel.
        ``close()`` closes the gateways."""
        endpoints = (*self._route.gateways, self._route.target)
        if not 0 < hop < len(endpoints):
            raise ValueError(f"{self.name}: no gateway before hop {hop}")
        self._open_gateways(hop)
        far = endpoints[hop]
        where = self._where() if hop == len(self._gateways) else self._gateway_where(far)
        try:
            channel: paramiko.Channel = self._gateways[hop - 1].transport.open_channel(
                "direct-tcpip",
                (far.hostname, far.port),
                ("", 0),
                timeout=self._route.connect_timeout,
            )
        except paramiko.ChannelException as exc:
            raise _CannotConnect(
                f"{where}: the gateway could not open a connection to "
                f"{far.hostname}:{far.port} ({exc.text})"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _CannotConnect(f"{where}: the gateway did not open a channel: {exc}") from None
        return channel

    def _open(self, connection: Connection, endpoint: Endpoint, where: str) -> None:
        known_hosts = self._host.ssh.known_hosts
        try:
            connection.open()
        except _KeyRefused as exc:
            if "not found in known_hosts" not in str(exc):
                raise HostKeyChanged(f"{where}: {exc}. Refusing to connect.") from None
            raise HostUnreachable(
                f"{where}: host key of {endpoint.key_name} not in {known_hosts}; add it after "
                "checking its fingerprint (ssh-keyscan, or `inv hosts --trust`)"
            ) from None
        except paramiko.BadHostKeyException as exc:
            if self._known.lookup(endpoint.key_name).is_revoked(exc.key):
                raise HostKeyChanged(
                    f"{where}: host key {_fingerprint(exc.key)} is REVOKED in known_hosts "
                    f"{known_hosts}. Refusing to connect."
                ) from None
            raise HostKeyChanged(
                f"{where}: host key CHANGED. known_hosts {known_hosts} has "
                f"{_fingerprint(exc.expected_key)}, the host offered "
                f"{_fingerprint(exc.key)}. Refusing to connect."
            ) from None
        except paramiko.ChannelException as exc:
            target = self._route.target
            raise _CannotConnect(
                f"{where}: the gateway could not open a connection to "
                f"{target.hostname}:{target.port} ({exc.text})"
            ) from None
        except paramiko.SSHException as exc:
            message = str(exc)
            if "not found in known_hosts" in message:
                message = (
                    f"host key of {endpoint.key_name} not in {known_hosts}; add it after "
                    "checking its fingerprint (ssh-keyscan, or `inv hosts --trust`)"
                )
            elif "timeout" in message.lower():
                pass  # paramiko's "Authentication timeout." is not a refusal
            elif isinstance(exc, paramiko.AuthenticationException) or "authentication" in message:
                message = self._auth_failed(endpoint, connection.connect_kwargs)
            elif any(sign in message for sign in _NO_GREETING):
                raise _CannotConnect(
                    f"{where}: timed out: no SSH greeting within "
                    f"{self._route.connect_timeout:g}s (is sshd hung, or is something "
                    "else listening on that port?)"
                ) from None
            raise HostUnreachable(f"{where}: {message}") from None
        except (OSError, EOFError) as exc:
            raise _CannotConnect(f"{where}: cannot connect: {exc}") from None

    def _auth_failed(self, endpoint: Endpoint, kwargs: Mapping[str, Any]) -> str:
        """Why no key was accepted; ``kwargs``: what paramiko was given to try."""
        tried = [f"key file {path}" for path in kwargs.get("key_filename", [])]
        notes: list[str] = []
        if endpoint.use_agent and os.environ.get("SSH_AUTH_SOCK"):
            tried.append("the SSH agent's keys")
        elif endpoint.use_agent:
            notes.append("no SSH agent: SSH_AUTH_SOCK is not set")
        if kwargs.get("look_for_keys"):
            tried.append("~/.ssh/id_*")
        notes += [
            f"key file {path} is encrypted and {PASSPHRASE_ENV} is not set"
            for path in self._skipped.get(endpoint, [])
        ]
        return (
            f"authentication as {endpoint.user} failed "
            f"(tried {', '.join(tried) or 'no key'}{''.join('; ' + n for n in notes)}). "
            "Set ssh.identity_file, or add the key to the agent (ssh-add)."
        )

    def _reopen(self) -> None:
        """After a dropped connection, connect again (sshd may be restarting) for up to
        RECONNECT_FOR seconds, so undoing and unlocking still reach the host. Once that
        failed, later scripts try once: the run is ending and should say so promptly."""
        if self._connection.is_connected:
            return
        deadline = time.monotonic() + (0 if self._gave_up else RECONNECT_FOR)
        while True:
            try:
                self.open()
                return
            except _CannotConnect as exc:
                if time.monotonic() >= deadline:
                    self._gave_up = True
                    raise HostUnreachable(
                        f"{exc} (the connection was lost; retried for {RECONNECT_FOR:.0f}s)"
                    ) from None
            time.sleep(1.0)

    def run(
        self, script: str, *, timeout: float | None = None, on_line: OnLine | None = None
    ) -> Result:
        self._reopen()
        started = time.monotonic()
        result = self._connection.run(
            script,
            hide=True,
            warn=True,
            in_stream=False,
            timeout=timeout,
            out_stream=LineStream(on_line),
            err_stream=LineStream(),
        )
        stderr = result.stderr
        if result.exited == -1 and not self._connection.is_connected:
            stderr += f"\nconnection to {self.name} lost before the script finished\n"
        return Result(result.exited, result.stdout, stderr, time.monotonic() - started)

    def interact(self, script: str, *, pty: bool) -> int:
        """Run ``script`` attached to this terminal (a pseudo-terminal when ``pty``):
        its exit status."""
        self._reopen()
        result = self._connection.run(script, warn=True, pty=pty)
        return int(result.exited)

    def put(self, local: Path, remote: str) -> None:
        self._reopen()
        self._connection.put(str(local), remote=remote)

    def close(self) -> None:
        self._connection.close()
        for gateway in reversed(self._gateways):
            gateway.close()


def _pin(pinned: paramiko.HostKeys, lookup: Lookup, endpoint: Endpoint) -> None:
    """Trust, for this one connection, exactly the keys known_hosts holds under the name
    OpenSSH would look up (HostKeyAlias, or HostName and port), revoked ones excepted.
    paramiko looks the host up by the name it connects to; nothing is ever written back."""
    name = known_hosts_name(endpoint.hostname, endpoint.port)
    for key_type, key in lookup.by_type().items():
        pinned.add(name, key_type, key)


class _KeyRefused(paramiko.SSHException):
    """Raised by the policy below: the message is the user's."""


class _Refuse(paramiko.MissingHostKeyPolicy):
    """No key is ever accepted that known_hosts does not pin; the refusal says why: a
    revoked key, a host known only through a certificate authority, or an unknown key."""

    def __init__(self, endpoint: Endpoint, lookup: Lookup) -> None:
        self._endpoint, self._lookup = endpoint, lookup

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        name = self._endpoint.key_name
        if self._lookup.is_revoked(key):
            raise _KeyRefused(f"host key of {name} ({_fingerprint(key)}) is REVOKED in known_hosts")
        if self._lookup.authorities:
            raise _KeyRefused(
                f"{name} is known only through a certificate authority (@cert-authority), "
                "and releasebook does not verify host certificates: pin the host's own key "
                "(ssh-keyscan, or `inv hosts --trust`)"
            )
        raise _KeyRefused(f"Server {name!r} not found in known_hosts")


def _read_key(path: Path, passphrase: str | None) -> str | None:
    """None if paramiko can use the key file, else why not: missing, encrypted, unreadable."""
    encrypted = False
    for key_type in _KEY_TYPES:
        try:
            key_type.from_private_key_file(str(path), passphrase)
        except paramiko.PasswordRequiredException:
            encrypted = True
        except paramiko.SSHException:
            continue
        except OSError:
            return "missing"
        else:
            return None
    return "encrypted" if encrypted else "unreadable"


def _key_problem(path: Path, problem: str) -> str:
    if problem == "missing":
        return f"identity file {path} not found"
    if problem == "encrypted":
        return (
            f"key file {path} is encrypted: load it into the SSH agent (ssh-add {path}) "
            f"or set {PASSPHRASE_ENV}"
        )
    if os.environ.get(PASSPHRASE_ENV):
        return f"cannot read key file {path} with the passphrase in {PASSPHRASE_ENV}"
    return f"cannot read key file {path}: not a private key paramiko understands"


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"
