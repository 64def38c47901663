"""`inv hosts --trust` against real sshd: trusted, NEW (added on confirmation, then a
strict connection works) and CHANGED (refused with both fingerprints, never replaced);
hosts reached as the transport reaches them: a ~/.ssh/config alias, a host behind a
gateway (the gateway's key first), a ProxyCommand."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import paramiko
import pytest
from invoke.context import Context
from invoke.exceptions import Exit
from simhosts import SimFleet, SimFleetFactory, SimHost
from test_lock import ENV, write_env
from test_ssh_access import ENV as SA_ENV
from test_ssh_access import HIDDEN, accepted, exercise, hide_behind, write_ssh_config
from test_ssh_access import write_env as write_sa_env

from releasebook.cli.safety import hosts
from releasebook.execute.hostkeys import KeyStatus, fingerprint, format_scan, scan, trust
from releasebook.inventory import Environment


def test_fleet_keys_are_trusted(sim_fleet_factory: SimFleetFactory, tmp_path: Path) -> None:
    fleet = sim_fleet_factory(2)
    env = write_env(tmp_path, fleet)
    statuses = scan(env)
    assert [(s.host, s.status) for s in statuses] == [("host1", "trusted"), ("host2", "trusted")]
    assert statuses[0].name == fleet.hosts[0].known_hosts_name
    text = format_scan(statuses, env.name)
    for status in statuses:
        assert status.key is not None
        assert f"{status.host} ({status.name}): trusted  ssh-ed25519 SHA256:" in text


def test_new_key_is_added_only_when_confirmed(sim_host: SimFleet, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("# pinned by hand\n")
    env = write_env(tmp_path, sim_host, known_hosts=known_hosts)
    host = sim_host.hosts[0]

    statuses = scan(env)
    assert [s.status for s in statuses] == ["new"]
    assert statuses[0].key is not None
    assert fingerprint(statuses[0].key) in format_scan(statuses, env.name)
    asked: list[KeyStatus] = []

    def decline(status: KeyStatus) -> bool:
        asked.append(status)
        return False

    assert trust(env, statuses, confirm=decline) == []
    assert asked == statuses
    assert known_hosts.read_text() == "# pinned by hand\n"
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        sim_host.connect(host, known_hosts=known_hosts, timeout=5)

    written = trust(env, statuses, confirm=lambda status: True)
    assert [s.status for s in written] == ["trusted"]
    assert known_hosts.read_text() == f"# pinned by hand\n{host.host_key_line}\n"
    with sim_host.connect(host, known_hosts=known_hosts, timeout=5) as client:  # RejectPolicy
        assert client.get_transport() is not None
    assert [s.status for s in scan(env)] == ["trusted"]


def test_changed_key_is_refused_and_kept(
    sim_host: SimFleet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    old_key = paramiko.Ed25519Key.from_private_key_file(str(other))
    host = sim_host.hosts[0]
    pinned = f"{host.known_hosts_name} ssh-ed25519 {old_key.get_base64()}\n"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(pinned)
    env = write_env(tmp_path, sim_host, known_hosts=known_hosts)

    statuses = scan(env)
    assert [s.status for s in statuses] == ["changed"]
    assert trust(env, statuses, confirm=lambda status: True) == []

    monkeypatch.setenv("RELEASEBOOK_ROOT", str(env.root))
    with pytest.raises(Exit) as caught:
        hosts(Context(), env=ENV, trust=True, yes=True)
    assert caught.value.code == 5
    out = capsys.readouterr().out
    offered = statuses[0].key
    assert offered is not None
    assert "host key CHANGED" in out
    assert fingerprint(old_key) in out and fingerprint(offered) in out
    assert fingerprint(old_key) != fingerprint(offered)
    assert f"ssh-keygen -R '{host.known_hosts_name}' -f {known_hosts}" in out
    assert known_hosts.read_text() == pinned


# --- reached as the transport reaches it: ~/.ssh/config, gateways, ProxyCommand ------------


@pytest.fixture
def behind(sim_fleet_factory: SimFleetFactory) -> SimFleet:
    """``gw`` and ``app``; ``app`` is known as HIDDEN to ``gw`` alone (see test_ssh_access)."""
    fleet = sim_fleet_factory(2, names=["gw", "app"])
    hide_behind(fleet, fleet["gw"], fleet["app"])
    return fleet


def key_of(host: SimHost) -> paramiko.PKey:
    key_type, data = host.host_key_line.split(" ")[1:3]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(data))


def run_hosts(
    env: Environment, capsys: pytest.CaptureFixture[str], *, trust: bool = False
) -> tuple[int, str]:
    """`inv hosts [--trust --yes]`: exit code and output."""
    os.environ["RELEASEBOOK_ROOT"] = str(env.root)  # HOME and RELEASEBOOK_* reset per test
    try:
        hosts(Context(), env=SA_ENV, trust=trust, yes=trust)
        code = 0
    except Exit as exc:
        code = exc.code
    return code, capsys.readouterr().out


def test_config_alias_is_scanned_at_its_hostname_and_port(
    sim_host: SimFleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = sim_host.hosts[0]
    known_hosts = tmp_path / "known_hosts"
    alias = f"Host web-alias\n  HostName {host.address}\n  Port {host.port}\n"
    write_ssh_config(alias)
    ssh = (f"known_hosts: {known_hosts}", "user: root", f"identity_file: {sim_host.client_key}")
    env = write_sa_env(tmp_path, "web-alias", *ssh)
    (status,) = scan(env)
    assert (status.host, status.name, status.status) == ("app", host.known_hosts_name, "new")
    assert status.key == key_of(host)

    write_ssh_config(alias + "  HostKeyAlias app-key\n")
    code, out = run_hosts(env, capsys, trust=True)
    assert code == 0, out
    assert f"added app (app-key) to {known_hosts}" in out
    assert known_hosts.read_text() == "app-key " + host.host_key_line.split(" ", 1)[1] + "\n"
    assert exercise(env, host.srv) == "host1"  # the strict transport takes the entry


def test_gateway_and_the_host_behind_it_are_trusted(
    behind: SimFleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, app = behind["gw"], behind["app"]
    known_hosts = tmp_path / "known_hosts"
    env = write_sa_env(
        tmp_path,
        HIDDEN,
        f"known_hosts: {known_hosts}",
        "user: root",
        f"port: {app.port}",
        f"identity_file: {behind.client_key}",
        f"gateway: root@{gw.address}:{gw.port}",
    )
    gateway = f"app: gateway root@{gw.address}:{gw.port} ({gw.known_hosts_name})"
    target = f"app ([{HIDDEN}]:{app.port})"

    code, out = run_hosts(env, capsys)  # no --trust: the gateway's key is not, so no login
    assert code == 0, out
    assert f"{gateway}: NEW key, not in {known_hosts}\n  {fingerprint(key_of(gw))}" in out
    assert f"{target}: not checked: the key of gateway root@{gw.address}:{gw.port} is not" in out
    assert not known_hosts.exists()
    assert accepted(gw) == 0

    code, out = run_hosts(env, capsys, trust=True)
    assert code == 0, out
    assert f"{target}: NEW key, not in {known_hosts}\n  {fingerprint(key_of(app))}" in out
    assert out.index(f"added {gateway} to") < out.index(f"added {target} to"), out
    app_key = app.host_key_line.split(" ", 1)[1]
    assert known_hosts.read_text() == f"{gw.host_key_line}\n[{HIDDEN}]:{app.port} {app_key}\n"
    # the key came through one login on the gateway; the host itself was not logged into
    assert (accepted(gw), accepted(app)) == (1, 0)

    assert exercise(env, app.srv) == "app"
    code, out = run_hosts(env, capsys)
    assert (code, out.count(": trusted  ssh-ed25519 SHA256:")) == (0, 2), out


def test_changed_key_behind_a_gateway_is_refused(
    behind: SimFleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw, app = behind["gw"], behind["app"]
    old_key = paramiko.Ed25519Key.from_private_key_file(str(behind.client_key))  # not app's
    pinned = f"{gw.host_key_line}\n[{HIDDEN}]:{app.port} ssh-ed25519 {old_key.get_base64()}\n"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(pinned)
    ssh = ("user: root", f"port: {app.port}", f"identity_file: {behind.client_key}")
    gateway = f"gateway: root@{gw.address}:{gw.port}"
    env = write_sa_env(tmp_path, HIDDEN, *ssh, f"known_hosts: {known_hosts}", gateway)

    code, out = run_hosts(env, capsys, trust=True)
    assert code == 5, out
    assert f"app: gateway root@{gw.address}:{gw.port} ({gw.known_hosts_name}): trusted" in out
    assert f"app ([{HIDDEN}]:{app.port}): host key CHANGED; refusing to replace it" in out
    assert fingerprint(old_key) in out and fingerprint(key_of(app)) in out
    assert fingerprint(old_key) != fingerprint(key_of(app))
    assert f"ssh-keygen -R '[{HIDDEN}]:{app.port}' -f {known_hosts}" in out
    assert known_hosts.read_text() == pinned


def test_proxycommand_host_is_scanned_through_the_command(behind: SimFleet, tmp_path: Path) -> None:
    gw, app = behind["gw"], behind["app"]
    jump_known = tmp_path / "jump_known_hosts"  # the command's own, pinning the gateway
    jump_known.write_text(gw.host_key_line + "\n")
    jump = (
        f"ssh -F /dev/null -i {behind.client_key} -o IdentitiesOnly=yes -o BatchMode=yes "
        f"-o UserKnownHostsFile={jump_known} -o StrictHostKeyChecking=yes "
        f"-p {gw.port} -W %h:%p root@{gw.address}"
    )
    write_ssh_config(f"Host app-behind\n  HostName {HIDDEN}\n  ProxyCommand {jump}\n")
    known_hosts = tmp_path / "known_hosts"
    env = write_sa_env(tmp_path, "app-behind", f"known_hosts: {known_hosts}", f"port: {app.port}")
    (status,) = scan(env)
    assert (status.name, status.status, status.key) == (
        f"[{HIDDEN}]:{app.port}",
        "new",
        key_of(app),
    )
