"""Where and how to reach one SSH host: the inventory's ``ssh`` settings over the user's
``~/.ssh/config``, resolved the way OpenSSH resolves them. Nothing here connects.

Precedence, per setting: a value the inventory sets (at any layer) wins, as OpenSSH's
command line beats its config files; then ``~/.ssh/config`` (and ``/etc/ssh/ssh_config``)
for the host's ``address``; then releasebook's defaults. Identity files add up, as ``-i``
and ``IdentityFile`` do: the inventory's first, then the config's.

Host keys are always checked against the inventory's known_hosts file, under the name
OpenSSH would look up (``HostKeyAlias``, else ``HostName``, as ``[host]:port`` off port
22): ``UserKnownHostsFile`` and ``StrictHostKeyChecking`` in the config are ignored.
"""

from __future__ import annotations

import getpass
import io
from dataclasses import dataclass
from pathlib import Path

import paramiko

from releasebook.inventory.hops import NONE, parse_hops
from releasebook.inventory.model import SshSettings

Found = paramiko.SSHConfigDict  # what SSHConfig.lookup returns for one host


class SshConfigError(ValueError):
    """A value in ~/.ssh/config (or an ssh.gateway) that cannot be used."""


@dataclass(frozen=True)
class Endpoint:
    """One SSH server to connect and authenticate to: the host itself or a gateway."""

    hostname: str
    port: int
    user: str
    key_name: str  # the name its key has in known_hosts
    identity_files: tuple[Path, ...]
    use_agent: bool

    @property
    def label(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


@dataclass(frozen=True)
class Route:
    """The host and how to get there: through gateways (outermost first), or through a
    ProxyCommand, or directly."""

    target: Endpoint
    gateways: tuple[Endpoint, ...]
    proxy_command: str | None
    connect_timeout: float

    @property
    def via(self) -> str:
        if self.gateways:
            return "gateway " + ",".join(g.label for g in self.gateways)
        return f"ProxyCommand {self.proxy_command}" if self.proxy_command else ""


def known_hosts_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


@dataclass(frozen=True)
class SshConfigFiles:
    """The text of ``~/.ssh/config`` and ``/etc/ssh/ssh_config``, read in that order as
    OpenSSH (and Fabric) read them: for each setting, the first value found wins."""

    texts: tuple[str, ...]

    @classmethod
    def load(cls) -> SshConfigFiles:
        paths = (Path("~/.ssh/config").expanduser(), Path("/etc/ssh/ssh_config"))
        try:
            return cls(tuple(p.read_text(encoding="utf-8") for p in paths if p.is_file()))
        except (OSError, UnicodeDecodeError) as exc:
            raise SshConfigError(f"cannot read the SSH config: {exc}") from None

    def lookup(self, host: str, *, user: str | None = None, port: int | None = None) -> Found:
        """The settings for ``host``. ``user`` and ``port``, when given, come first, as
        OpenSSH's command line does, so that tokens (%r, %p) expand to the final values."""
        first = "".join(
            f"  {key} {value}\n" for key, value in (("User", user), ("Port", port)) if value
        )
        config = paramiko.SSHConfig()
        try:
            for text in (f"Host {host}\n{first}" if first else "", *self.texts):
                config.parse(io.StringIO(text))
            return config.lookup(host)
        except (paramiko.ConfigParseError, paramiko.CouldNotCanonicalize, ValueError) as exc:
            raise SshConfigError(f"~/.ssh/config for {host!r}: {exc}") from None


def resolve(address: str, settings: SshSettings, files: SshConfigFiles) -> Route:
    """The route to the host at ``address`` (an address, or a ~/.ssh/config alias)."""
    explicit = settings.explicit
    found = files.lookup(address)
    user = settings.user if "user" in explicit else found.get("user", settings.user)
    port = settings.port if "port" in explicit else _int(found, "port", settings.port)
    found = files.lookup(address, user=user, port=port)
    own = (settings.identity_file,) if settings.identity_file else ()
    target = _endpoint(found, user=user, port=port, identity_files=own)
    if "connect_timeout" in explicit:
        timeout = settings.connect_timeout
    else:
        timeout = float(_int(found, "connecttimeout", int(settings.connect_timeout)))
    jump = settings.gateway if "gateway" in explicit else found.get("proxyjump")
    gateways = _gateways(jump, files, own) if jump else ()
    # "Host * / ProxyJump bastion" also matches the bastion itself: it is reached directly.
    gateways = tuple(g for g in gateways if (g.hostname, g.port) != (target.hostname, port))
    command = None if "gateway" in explicit or jump else found.get("proxycommand")
    if command is not None and command.strip().lower() == NONE:
        command = None
    return Route(target, gateways, command, timeout)


def _gateways(
    spec: str, files: SshConfigFiles, identities: tuple[Path, ...]
) -> tuple[Endpoint, ...]:
    """Each hop as OpenSSH's ``-J`` resolves it: spec, then its own config entry, then
    the defaults (port 22, the local user). A hop's own ProxyJump is not followed; write
    a chain as ``outer,inner``. The host's inventory identity_file is offered too."""
    try:
        hops = parse_hops(spec)
    except ValueError as exc:
        raise SshConfigError(f"ProxyJump {spec!r}: {exc}") from None
    endpoints: list[Endpoint] = []
    for hop in hops:
        found = files.lookup(hop.host)
        user = hop.user or found.get("user") or getpass.getuser()
        port = hop.port or _int(found, "port", 22)
        found = files.lookup(hop.host, user=user, port=port)
        endpoints.append(_endpoint(found, user=user, port=port, identity_files=identities))
    return tuple(endpoints)


def _endpoint(found: Found, *, user: str, port: int, identity_files: tuple[Path, ...]) -> Endpoint:
    hostname = found["hostname"]
    configured = tuple(Path(p).expanduser() for p in found.get("identityfile", []))
    identities_only = found.get("identitiesonly", "no").lower() == "yes"
    return Endpoint(
        hostname=hostname,
        port=port,
        user=user,
        key_name=found.get("hostkeyalias") or known_hosts_name(hostname, port),
        identity_files=tuple(dict.fromkeys((*identity_files, *configured))),
        # IdentitiesOnly keeps to the files; paramiko cannot pick agent keys by file.
        use_agent=not identities_only and found.get("identityagent", "").lower() != NONE,
    )


def _int(found: Found, key: str, default: int) -> int:
    value = found.get(key)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise SshConfigError(f"~/.ssh/config: {key} {value!r}: expected a positive number")
    return number
