"""SSH access as OpenSSH does it, against real sshd: ~/.ssh/config aliases, the SSH agent
(a real ssh-agent), encrypted keys, and jump hosts (inventory ``ssh.gateway``, ProxyJump,
ProxyCommand), each gateway's key checked against the inventory's known_hosts.

The jump-host tests make the target reachable only through the gateway: the target's
inventory name (``app.invalid``) resolves nowhere but in the gateway's own /etc/hosts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from e2e_project import make_project
from simhosts import SimFleet, SimFleetFactory, SimHost

from releasebook.errors import HostUnreachable
from releasebook.inventory import Environment, SshSettings, load_environment
from releasebook.transport import PASSPHRASE_ENV, open_transport
from releasebook.transport.sshconfig import SshConfigFiles, resolve

ENV = "sa"
HIDDEN = "app.invalid"  # the target's name, known only to the gateway
PASSPHRASE = "correct horse battery staple"


# --- helpers -------------------------------------------------------------------------------


def write_env(tmp: Path, address: str, *ssh: str) -> Environment:
    """A one-host inventory (host ``app`` at ``address``) with these ``ssh:`` lines."""
    root = tmp / "project"
    (root / "app").mkdir(parents=True, exist_ok=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("")
    (root / "inventories").mkdir(exist_ok=True)
    (root / "inventories" / f"{ENV}.yml").write_text(inventory(address, *ssh))
    return load_environment(ENV, root)


def inventory(address: str, *ssh: str, app: str = "app") -> str:
    settings = "".join(f"  {line}\n" for line in ssh)
    return f"""
app: {{source: {app}, settings: config.settings, wsgi: "config.wsgi:application"}}
deploy: {{path: /srv/app}}
ssh:
{settings}health: {{host_header: app.test}}
hosts:
  app:
    address: {address}
    roles: [web, migrate]
"""


def write_ssh_config(text: str) -> None:
    ssh_dir = Path.home() / ".ssh"  # the test's own HOME (conftest)
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "config").write_text(text)


def exercise(env: Environment, srv: Path) -> str:
    """Open the host's transport, run a script and put a file; return its hostname."""
    transport = open_transport(env.host("app"), env.root)
    try:
        result = transport.run("hostname")
        assert result.ok, result.tail()
        local = env.root / "probe.txt"
        local.write_text(f"probe {time.monotonic()}\n")
        transport.put(local, "/srv/probe.txt")
        assert (srv / "probe.txt").read_text() == local.read_text()
        return result.stdout.strip()
    finally:
        transport.close()


def unreachable(env: Environment) -> str:
    with pytest.raises(HostUnreachable) as info:
        exercise(env, Path("/nonexistent"))
    return str(info.value)


def accepted(host: SimHost) -> int:
    """Logins the host's sshd accepted so far."""
    return host.log_tail(10_000).count("Accepted publickey")


def hide_behind(fleet: SimFleet, gateway: SimHost, target: SimHost) -> Path:
    """Make ``target`` known as HIDDEN to ``gateway`` alone (a bind mount over /etc/hosts
    in the gateway's mount namespace, gone with it); return a known_hosts file pinning
    both hosts as OpenSSH names them."""
    hosts = fleet.base_dir / f"{gateway.name}-etc-hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{target.address} {HIDDEN}\n")
    namespace = f"--mount=/proc/{fleet.processes(gateway)[0]}/ns/mnt"
    subprocess.run(["nsenter", namespace, "mount", "--bind", str(hosts), "/etc/hosts"], check=True)
    with pytest.raises(OSError):
        socket.getaddrinfo(HIDDEN, target.port)  # not from here: only through the gateway
    known_hosts = fleet.base_dir / "known_hosts_hidden"
    target_key = target.host_key_line.split(" ", 1)[1]
    known_hosts.write_text(f"{gateway.host_key_line}\n[{HIDDEN}]:{target.port} {target_key}\n")
    return known_hosts


def encrypted_key(fleet: SimFleet, host: SimHost, tmp: Path) -> Path:
    """A new passphrase-protected key that ``host`` accepts for root."""
    key = tmp / "encrypted_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", str(key)], check=True
    )
    with (host.home / ".ssh" / "authorized_keys").open("a") as f:
        f.write(key.with_suffix(".pub").read_text())
    return key


@pytest.fixture
def fleet(sim_fleet_factory: SimFleetFactory) -> SimFleet:
    """Two hosts: ``gw`` (the jump host) and ``app``."""
    return sim_fleet_factory(2, names=["gw", "app"])


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ssh-agent, as SSH_AUTH_SOCK; stopped at teardown."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.01)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def ssh_add(key: Path, passphrase: str | None = None) -> None:
    environ = dict(os.environ)
    if passphrase is not None:
        askpass = key.with_name("askpass")
        askpass.write_text(f"#!/bin/sh\necho '{passphrase}'\n")
        askpass.chmod(0o700)
        environ.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force")
    subprocess.run(
        ["ssh-add", "-q", str(key)],
        env=environ,
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


# --- known_hosts as OpenSSH reads it -------------------------------------------------------


def test_known_hosts_markers_and_negation_on_real_sshd(fleet: SimFleet, tmp_path: Path) -> None:
    """A revoked key is refused even where a line pins it; a host known only through a
    certificate authority is refused with that reason; a line whose negation names the
    host does not pin it. Each is a HostUnreachable (no traceback), nothing is written."""
    app = fleet["app"]
    name, key = app.host_key_line.split(" ", 1)
    known_hosts = tmp_path / "known_hosts"
    ssh = (
        f"known_hosts: {known_hosts}",
        "user: root",
        f"port: {app.port}",
        f"identity_file: {fleet.client_key}",
    )
    cases = {
        f"{app.host_key_line}\n@revoked * {key}\n": "is REVOKED in known_hosts",
        f"@cert-authority * {key}\n": "known only through a certificate authority",
        f"{name},!{name} {key}\n": "not in",
    }
    for text, expected in cases.items():
        known_hosts.write_text(text)
        message = unreachable(write_env(tmp_path, app.address, *ssh))
        assert expected in message, message
        assert known_hosts.read_text() == text
    known_hosts.write_text(f"*,!nothing-here {key}\n")  # a wildcard line does pin it
    assert exercise(write_env(tmp_path, app.address, *ssh), app.srv) == "app"


# --- ~/.ssh/config -------------------------------------------------------------------------


def test_config_alias_supplies_hostname_port_user_and_key(fleet: SimFleet, tmp_path: Path) -> None:
    app = fleet["app"]
    write_ssh_config(
        f"Host web-alias\n  HostName {app.address}\n  Port {app.port}\n  User root\n"
        f"  IdentityFile {fleet.client_key}\n"
    )
    env = write_env(tmp_path, "web-alias", f"known_hosts: {fleet.known_hosts}")
    assert exercise(env, app.srv) == "app"


def test_inventory_values_beat_the_config(fleet: SimFleet, tmp_path: Path) -> None:
    app = fleet["app"]
    write_ssh_config(
        f"Host web-alias\n  HostName {app.address}\n  Port {app.port}\n  User root\n"
        f"  IdentityFile {fleet.client_key}\n"
    )
    env = write_env(tmp_path, "web-alias", f"known_hosts: {fleet.known_hosts}", "user: nobody")
    message = unreachable(env)
    assert message.startswith(f"app (nobody@{app.address}:{app.port}): authentication as nobody")


def test_host_key_alias_names_the_key_in_known_hosts(fleet: SimFleet, tmp_path: Path) -> None:
    app = fleet["app"]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("app-key " + app.host_key_line.split(" ", 1)[1] + "\n")
    write_ssh_config(
        f"Host web-alias\n  HostName {app.address}\n  Port {app.port}\n  HostKeyAlias app-key\n"
    )
    ssh = (f"known_hosts: {known_hosts}", "user: root", f"identity_file: {fleet.client_key}")
    assert exercise(write_env(tmp_path, "web-alias", *ssh), app.srv) == "app"

    known_hosts.write_text(app.host_key_line + "\n")  # under its address: not what is asked
    message = unreachable(write_env(tmp_path, "web-alias", *ssh))
    assert f"host key of app-key not in {known_hosts}" in message
    assert known_hosts.read_text() == app.host_key_line + "\n"  # nothing added


# --- the agent and key files ---------------------------------------------------------------


def test_agent_only_authentication(fleet: SimFleet, tmp_path: Path, agent: Path) -> None:
    app = fleet["app"]
    ssh_add(fleet.client_key)
    ssh = (f"known_hosts: {fleet.known_hosts}", "user: root", f"port: {app.port}")
    assert exercise(write_env(tmp_path, app.address, *ssh), app.srv) == "app"


def test_no_agent_and_no_key_is_one_clear_error(fleet: SimFleet, tmp_path: Path) -> None:
    app = fleet["app"]
    ssh = (f"known_hosts: {fleet.known_hosts}", "user: root", f"port: {app.port}")
    message = unreachable(write_env(tmp_path, app.address, *ssh))
    assert message == (
        f"app (root@{app.address}:{app.port}): authentication as root failed (tried "
        "~/.ssh/id_*; no SSH agent: SSH_AUTH_SOCK is not set). Set ssh.identity_file, or add "
        "the key to the agent (ssh-add)."
    )


def test_encrypted_key_needs_a_passphrase_source(
    fleet: SimFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = fleet["app"]
    key = encrypted_key(fleet, app, tmp_path)
    ssh = (f"known_hosts: {fleet.known_hosts}", "user: root", f"port: {app.port}")
    env = write_env(tmp_path, app.address, *ssh, f"identity_file: {key}")
    assert unreachable(env) == (
        f"app: key file {key} is encrypted: load it into the SSH agent (ssh-add {key}) "
        f"or set {PASSPHRASE_ENV}"
    )
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong " + PASSPHRASE)
    message = unreachable(env)
    assert message == f"app: cannot read key file {key} with the passphrase in {PASSPHRASE_ENV}"
    assert PASSPHRASE not in message

    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    assert exercise(env, app.srv) == "app"


def test_encrypted_key_named_by_the_config_is_passed_over(fleet: SimFleet, tmp_path: Path) -> None:
    """OpenSSH would prompt for it; here the other keys are tried, and if none is
    accepted the error says which encrypted key was passed over."""
    app = fleet["app"]
    key = encrypted_key(fleet, app, tmp_path)
    write_ssh_config(f"Host *\n  IdentityFile {key}\n")
    ssh = (f"known_hosts: {fleet.known_hosts}", "user: root", f"port: {app.port}")
    env = write_env(tmp_path, app.address, *ssh, f"identity_file: {fleet.client_key}")
    assert exercise(env, app.srv) == "app"

    message = unreachable(write_env(tmp_path, app.address, *ssh))
    assert message.endswith(
        f"failed (tried no key; no SSH agent: SSH_AUTH_SOCK is not set; key file {key} is "
        f"encrypted and {PASSPHRASE_ENV} is not set). Set ssh.identity_file, or add the key "
        "to the agent (ssh-add)."
    ), message


def test_encrypted_key_held_by_the_agent(fleet: SimFleet, tmp_path: Path, agent: Path) -> None:
    app = fleet["app"]
    key = encrypted_key(fleet, app, tmp_path)
    ssh_add(key, PASSPHRASE)
    ssh = (f"known_hosts: {fleet.known_hosts}", "user: root", f"port: {app.port}")
    assert exercise(write_env(tmp_path, app.address, *ssh, f"identity_file: {key}"), app.srv)


# --- jump hosts ----------------------------------------------------------------------------


def test_inventory_gateway(fleet: SimFleet, tmp_path: Path) -> None:
    gw, app = fleet["gw"], fleet["app"]
    known_hosts = hide_behind(fleet, gw, app)
    env = write_env(
        tmp_path,
        HIDDEN,
        f"known_hosts: {known_hosts}",
        "user: root",
        f"port: {app.port}",
        f"identity_file: {fleet.client_key}",
        f"gateway: root@{gw.address}:{gw.port}",
    )
    before = accepted(gw), gw.session_count()
    assert exercise(env, app.srv) == "app"
    # one login on the gateway, and no session there: it only forwarded
    assert (accepted(gw), gw.session_count()) == (before[0] + 1, before[1])


def test_proxyjump_from_ssh_config(fleet: SimFleet, tmp_path: Path) -> None:
    gw, app = fleet["gw"], fleet["app"]
    known_hosts = hide_behind(fleet, gw, app)
    write_ssh_config(
        f"Host bastion\n  HostName {gw.address}\n  Port {gw.port}\n  User root\n"
        f"  IdentityFile {fleet.client_key}\n\n"
        f"Host app-behind\n  HostName {HIDDEN}\n  Port {app.port}\n  User root\n"
        f"  IdentityFile {fleet.client_key}\n  ProxyJump bastion\n"
    )
    before = accepted(gw)
    assert exercise(write_env(tmp_path, "app-behind", f"known_hosts: {known_hosts}"), app.srv)
    assert accepted(gw) == before + 1


def test_proxycommand_from_ssh_config(fleet: SimFleet, tmp_path: Path) -> None:
    gw, app = fleet["gw"], fleet["app"]
    known_hosts = hide_behind(fleet, gw, app)
    jump = (
        f"ssh -F /dev/null -i {fleet.client_key} -o IdentitiesOnly=yes -o BatchMode=yes "
        f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
        f"-p {gw.port} -W %h:%p root@{gw.address}"
    )
    write_ssh_config(f"Host app-behind\n  HostName {HIDDEN}\n  ProxyCommand {jump}\n")
    ssh = (f"known_hosts: {known_hosts}", "user: root", f"port: {app.port}")
    before = accepted(gw)
    env = write_env(tmp_path, "app-behind", *ssh, f"identity_file: {fleet.client_key}")
    assert exercise(env, app.srv) == "app"
    assert accepted(gw) == before + 1


def test_gateway_failures_name_the_host_and_the_gateway(fleet: SimFleet, tmp_path: Path) -> None:
    gw, app = fleet["gw"], fleet["app"]
    known_hosts = hide_behind(fleet, gw, app)
    ssh = (
        "user: root",
        f"port: {app.port}",
        f"identity_file: {fleet.client_key}",
    )
    gateway = f"root@{gw.address}:{gw.port}"
    host = f"app (root@{HIDDEN}:{app.port})"

    only_app = tmp_path / "only_app"
    only_app.write_text(known_hosts.read_text().split("\n", 1)[1])
    env = write_env(tmp_path, HIDDEN, *ssh, f"known_hosts: {only_app}", f"gateway: {gateway}")
    assert unreachable(env) == (
        f"{host}: gateway {gateway}: host key of {gw.known_hosts_name} not in {only_app}; "
        "add it after checking its fingerprint (ssh-keyscan, or `inv hosts --trust`)"
    )
    assert accepted(gw) == 0  # refused before authenticating
    assert gw.host_key_line not in only_app.read_text()  # and never added

    closed = f"root@{gw.address}:1"
    env = write_env(tmp_path, HIDDEN, *ssh, f"known_hosts: {known_hosts}", f"gateway: {closed}")
    message = unreachable(env)
    assert message.startswith(f"{host}: gateway {closed}: cannot connect: "), message
    assert message.endswith(f"Unable to connect to port 1 on {gw.address}"), message

    env = write_env(
        tmp_path, "nowhere.invalid", *ssh, f"known_hosts: {known_hosts}", f"gateway: {gateway}"
    )
    assert unreachable(env) == (
        f"app (root@nowhere.invalid:{app.port} via gateway {gateway}): the gateway could not "
        f"open a connection to nowhere.invalid:{app.port} (Connect failed)"
    )


def test_changed_gateway_key_is_refused(fleet: SimFleet, tmp_path: Path) -> None:
    gw, app = fleet["gw"], fleet["app"]
    known_hosts = hide_behind(fleet, gw, app)
    other = paramiko.Ed25519Key.from_private_key_file(str(fleet.client_key))
    forged = f"{gw.known_hosts_name} {other.get_name()} {other.get_base64()}\n"
    known_hosts.write_text(forged + known_hosts.read_text().split("\n", 1)[1])
    ssh = ("user: root", f"port: {app.port}", f"identity_file: {fleet.client_key}")
    gateway = f"gateway: root@{gw.address}:{gw.port}"
    message = unreachable(write_env(tmp_path, HIDDEN, *ssh, f"known_hosts: {known_hosts}", gateway))
    assert message.startswith(
        f"app (root@{HIDDEN}:{app.port}): gateway root@{gw.address}:{gw.port}: host key CHANGED"
    ), message
    assert f"has ssh-ed25519 {other.fingerprint}" in message


# --- the command line ----------------------------------------------------------------------


def test_inv_status_through_alias_proxyjump_and_agent(
    fleet: SimFleet, tmp_path: Path, agent: Path
) -> None:
    """`inv status` reaches a host known only by its ~/.ssh/config alias, through the
    config's ProxyJump, with the key only in the agent; then, with no agent, it fails
    with one line naming the host."""
    gw, app = fleet["gw"], fleet["app"]
    known_hosts = hide_behind(fleet, gw, app)
    write_ssh_config(
        f"Host bastion\n  HostName {gw.address}\n  Port {gw.port}\n  User root\n\n"
        f"Host app-behind\n  HostName {HIDDEN}\n  Port {app.port}\n  User root\n"
        "  ProxyJump bastion\n"
    )
    ssh_add(fleet.client_key)
    project = make_project(
        tmp_path, inventory("app-behind", f"known_hosts: {known_hosts}", app="example"), ENV
    )
    before = accepted(gw), accepted(app)
    done = project.inv("status", f"--env={ENV}")
    assert (done.returncode, done.stdout) == (0, "app: current (none)\n"), done.stderr
    assert (accepted(gw), accepted(app)) == (before[0] + 1, before[1] + 1)

    os.environ.pop("SSH_AUTH_SOCK")  # restored by the agent fixture's monkeypatch
    done = project.inv("status", f"--env={ENV}")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert (
        f"app (root@{HIDDEN}:{app.port}): gateway root@{gw.address}:{gw.port}: "
        "authentication as root failed (tried ~/.ssh/id_*; no SSH agent: SSH_AUTH_SOCK is "
        "not set)"
    ) in done.stderr


def test_inv_status_never_prints_the_passphrase(
    fleet: SimFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = fleet["app"]
    key = encrypted_key(fleet, app, tmp_path)
    ssh = (f"known_hosts: {fleet.known_hosts}", "user: root", f"port: {app.port}")
    project = make_project(
        tmp_path, inventory(app.address, *ssh, f"identity_file: {key}", app="example"), ENV
    )
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    done = project.inv("status", f"--env={ENV}")
    assert (done.returncode, done.stdout) == (0, "app: current (none)\n"), done.stderr

    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE[:-1])
    done = project.inv("status", f"--env={ENV}")
    assert done.returncode == 1
    assert f"app: cannot read key file {key} with the passphrase in {PASSPHRASE_ENV}" in (
        done.stderr
    )
    assert PASSPHRASE[:-1] not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


# --- resolution rules (no network) ---------------------------------------------------------


def settings(**explicit: object) -> SshSettings:
    values: dict[str, object] = {
        "user": "deploy",
        "port": 22,
        "identity_file": None,
        "known_hosts": Path("/kh"),
        "connect_timeout": 10.0,
        "gateway": None,
    }
    values.update(explicit)
    return SshSettings(**values, explicit=frozenset(explicit))  # type: ignore[arg-type]


def config(text: str) -> SshConfigFiles:
    return SshConfigFiles((text, "Host *\n  IdentityFile /k/system\n"))


def test_resolution_precedence_inventory_then_config_then_defaults() -> None:
    found = config(
        "Host web\n  HostName 10.0.0.5\n  Port 2200\n  User ops\n  IdentityFile /k/config\n"
        "  ConnectTimeout 3\n"
    )
    route = resolve("web", settings(), found)
    target = route.target
    assert (target.hostname, target.port, target.user) == ("10.0.0.5", 2200, "ops")
    assert target.identity_files == (Path("/k/config"), Path("/k/system"))
    assert (target.key_name, route.connect_timeout) == ("[10.0.0.5]:2200", 3.0)

    mine = settings(user="deploy", port=22, identity_file=Path("/k/mine"), connect_timeout=7)
    route = resolve("web", mine, found)
    target = route.target
    assert (target.hostname, target.port, target.user) == ("10.0.0.5", 22, "deploy")
    # identity files add up: the inventory's, then the user's config, then the system's
    assert target.identity_files == (Path("/k/mine"), Path("/k/config"), Path("/k/system"))
    assert (target.key_name, route.connect_timeout) == ("10.0.0.5", 7)

    route = resolve("10.0.0.9", settings(), found)  # no entry: defaults
    assert (route.target.hostname, route.target.port, route.target.user) == (
        "10.0.0.9",
        22,
        "deploy",
    )


def test_resolution_of_jumps() -> None:
    found = config(
        "Host bastion\n  HostName 192.0.2.1\n  User jump\n  HostKeyAlias bastion-key\n"
        "  IdentitiesOnly yes\n\n"
        "Host direct\n  ProxyJump none\n\n"
        "Host *\n  ProxyJump bastion\n"
    )
    route = resolve("web", settings(identity_file=Path("/k/mine")), found)
    (hop,) = route.gateways
    assert (hop.hostname, hop.port, hop.user, hop.key_name) == (
        "192.0.2.1",
        22,
        "jump",
        "bastion-key",
    )
    assert hop.identity_files == (Path("/k/mine"), Path("/k/system"))
    assert not hop.use_agent  # IdentitiesOnly
    assert route.target.use_agent
    assert route.via == "gateway jump@192.0.2.1:22"
    assert resolve("direct", settings(), found).gateways == ()
    assert resolve("bastion", settings(), found).gateways == ()  # not through itself
    assert resolve("web", settings(gateway="none"), found).gateways == ()

    route = resolve("web", settings(gateway="a@outer:2022,inner"), found)
    assert [(g.user, g.hostname, g.port) for g in route.gateways] == [
        ("a", "outer", 2022),
        (route.gateways[1].user, "inner", 22),
    ]


def test_proxycommand_tokens_expand_to_the_final_user_and_port() -> None:
    found = config("Host web\n  HostName 10.0.0.5\n  Port 2200\n  ProxyCommand relay %h %p %r\n")
    route = resolve("web", settings(user="ops", port=2222), found)
    assert route.proxy_command == "relay 10.0.0.5 2222 ops"
    assert route.via == "ProxyCommand relay 10.0.0.5 2222 ops"
    assert resolve("web", settings(gateway="none"), found).proxy_command is None
