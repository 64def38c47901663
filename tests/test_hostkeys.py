"""`inv hosts --trust` against real sshd: trusted, NEW (added on confirmation, then a
strict connection works) and CHANGED (refused with both fingerprints, never replaced)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest
from invoke.context import Context
from invoke.exceptions import Exit
from simhosts import SimFleet, SimFleetFactory
from test_lock import ENV, write_env

from releasebook.hostkeys import KeyStatus, fingerprint, format_scan, scan, trust
from releasebook.safety_tasks import hosts


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
