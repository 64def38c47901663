"""The simulated hosts themselves: real sshd processes in their own namespaces."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
import simhosts
from simhosts import SimFleet, SimFleetFactory, SimHostError

pytestmark = pytest.mark.e2e


def _exec(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, stderr = client.exec_command(command, timeout=30)
    out = stdout.read().decode()
    status = stdout.channel.recv_exit_status()
    assert status == 0, f"{command!r} exited {status}: {stderr.read().decode()}"
    return out


def _paramiko_client(fleet: SimFleet, name: str, known_hosts: Path) -> paramiko.SSHClient:
    host = fleet[name]
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host.address,
        port=host.port,
        username="root",
        key_filename=str(fleet.client_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def test_hosts_have_own_hostname_and_srv(sim_fleet_factory: SimFleetFactory) -> None:
    fleet = sim_fleet_factory(2, names=["web1", "web2"])
    web1, web2 = fleet.hosts
    assert web1.address != web2.address
    assert fleet.known_hosts.read_text().splitlines() == [web1.host_key_line, web2.host_key_line]
    assert web1.host_key_line.startswith(f"[{web1.address}]:{web1.port} ssh-ed25519 AAAA")

    with (
        _paramiko_client(fleet, "web1", fleet.known_hosts) as c1,
        _paramiko_client(fleet, "web2", fleet.known_hosts) as c2,
    ):
        assert _exec(c1, "hostname").strip() == "web1"
        assert _exec(c2, "hostname").strip() == "web2"

        _exec(c1, "echo hello-from-web1 > /srv/marker")
        assert _exec(c1, "cat /srv/marker") == "hello-from-web1\n"
        assert _exec(c2, "ls -A /srv") == ""
        assert (web1.srv / "marker").read_text() == "hello-from-web1\n"
        assert not (web2.srv / "marker").exists()

        # A clean home from /etc/skel, not the controller's /root.
        assert _exec(c1, 'echo "$HOME"; ls -A ~/.ssh').split() == ["/root", "authorized_keys"]
        assert (web1.home / ".ssh" / "authorized_keys").is_file()


def test_default_names(sim_fleet_factory: SimFleetFactory) -> None:
    fleet = sim_fleet_factory(2)
    assert [h.name for h in fleet.hosts] == ["host1", "host2"]
    assert fleet.run("host2", "hostname").stdout == "host2\n"


def test_empty_known_hosts_is_rejected(sim_host: SimFleet, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _paramiko_client(sim_host, "host1", empty)

    wrong = tmp_path / "wrong_known_hosts"  # right name, someone else's key
    host = sim_host.hosts[0]
    other = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    assert other.returncode == 0
    key = (tmp_path / "k.pub").read_text().split()
    wrong.write_text(f"{host.known_hosts_name} {key[0]} {key[1]}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        _paramiko_client(sim_host, "host1", wrong)


def test_session_count_increases(sim_host: SimFleet) -> None:
    host = sim_host.hosts[0]
    before = host.session_count()
    with sim_host.connect(host) as client:
        for _ in range(3):
            _exec(client, "true")
    assert host.session_count() == before + 3


def test_openssh_client_with_generated_ssh_config(sim_host: SimFleet) -> None:
    result = subprocess.run(
        ["ssh", "-F", str(sim_host.ssh_config), "-o", "BatchMode=yes", "host1", "hostname"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "host1\n"), result.stderr


def test_stop_kills_background_processes(sim_fleet_factory: SimFleetFactory) -> None:
    fleet = sim_fleet_factory(1)
    host = fleet.hosts[0]
    sshd = fleet.sshd_pid(host)
    with fleet.connect(host) as client:
        pid = int(_exec(client, "nohup sleep 300 >/dev/null 2>&1 & echo $!"))
        # A daemon that escaped sshd: double fork, re-parented away from the session.
        _exec(client, "(setsid nohup sleep 301 >/dev/null 2>&1 &)")
    daemon = _wait_for(lambda: _pids_of(fleet, "sleep 301"))
    assert pid in fleet.processes(host)
    assert os.readlink(f"/proc/{pid}/ns/mnt") == fleet.mount_namespace(host)
    assert daemon[0] in fleet.processes(host)

    started = time.monotonic()
    fleet.stop()
    assert time.monotonic() - started < 5
    for p in (pid, daemon[0], sshd):
        assert not _alive(p), f"pid {p} survived stop()"
    assert fleet.processes(host) == []
    fleet.stop()  # idempotent
    assert fleet.stopped
    assert host.log_path.exists()  # files stay for inspection


def test_stop_kills_daemonized_supervisord_and_gunicorn(sim_host: SimFleet) -> None:
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "supervisord").exists() or not (venv_bin / "gunicorn").exists():
        pytest.skip("supervisord/gunicorn not installed in this environment")
    host = sim_host.hosts[0]
    (host.srv / "app.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'hello']\n"
    )
    (host.srv / "supervisord.conf").write_text(
        "[supervisord]\nlogfile=/srv/supervisord.log\npidfile=/srv/supervisord.pid\nchildlogdir=/srv\n"
        f"[program:web]\ncommand={venv_bin}/gunicorn --chdir /srv -w 2"
        f" -b {host.address}:8000 app:app\n"
    )
    assert sim_host.run(host, f"{venv_bin}/supervisord -c /srv/supervisord.conf").ok
    body = _wait_for(lambda: _http_get(f"http://{host.address}:8000/"), timeout=15)
    assert bytes(body) == b"hello"
    supervisord = int((host.srv / "supervisord.pid").read_text())
    # supervisord, gunicorn master and 2 workers (the 2nd worker may still be booting)
    services = _wait_for(lambda: _services(sim_host) if len(_services(sim_host)) >= 4 else [])
    assert supervisord in services
    assert _parent(supervisord) != sim_host.sshd_pid(host)  # daemonized away from sshd

    sim_host.stop()
    for pid in services:
        assert not _alive(pid), f"pid {pid} survived stop()"


def test_controller_python_visible_read_only(sim_host: SimFleet) -> None:
    if not sim_host.root_shares:
        pytest.skip("the controller's Python does not live under /root")
    share = sim_host.root_shares[0]
    result = sim_host.run("host1", f"{sys.executable} -c 'import paramiko' && touch {share}/x")
    assert result.exit_status != 0
    assert "Read-only file system" in result.stderr
    assert not (share / "x").exists()


def test_reset_keeps_sshd(sim_host: SimFleet) -> None:
    host = sim_host.hosts[0]
    with sim_host.connect(host) as client:
        _exec(client, "touch /srv/a ~/junk; (setsid nohup sleep 302 >/dev/null 2>&1 &)")
        sleeper = _wait_for(lambda: _pids_of(sim_host, "sleep 302"))
        sim_host.reset(host)
        assert not _alive(sleeper[0])
        assert list(host.srv.iterdir()) == []
        assert _exec(client, "ls -A /srv; ls ~/junk 2>/dev/null || echo gone") == "gone\n"
    assert sim_host.run(host, "hostname").stdout == "host1\n"


def test_concurrent_fleets_get_distinct_addresses(sim_fleet_factory: SimFleetFactory) -> None:
    a = sim_fleet_factory(2)
    b = sim_fleet_factory(1)
    addresses = [h.address for h in (*a.hosts, *b.hosts)]
    assert len(set(addresses)) == 3
    assert b.run("host1", "hostname").ok


def test_invalid_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid host name"):
        SimFleet.start(1, tmp_path, names=["Bad_Name"])
    with pytest.raises(ValueError, match="duplicate"):
        SimFleet.start(2, tmp_path, names=["a", "a"])


@pytest.mark.usefixtures("simhosts_available")
def test_sshd_dying_at_start_reports_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simhosts._sshd_version()  # cache the real version before faking sshd
    fake = tmp_path / "fake-sshd"
    fake.write_text("#!/bin/sh\necho 'fake sshd refuses to start' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(simhosts, "SSHD", fake)
    with pytest.raises(SimHostError, match=r"(?s)exited with status 3.*fake sshd refuses"):
        SimFleet.start(1, tmp_path / "fleet")


@pytest.mark.usefixtures("simhosts_available")
def test_sshd_never_ready_times_out_and_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simhosts._sshd_version()
    fake = tmp_path / "fake-sshd"
    sleeper = f"sleep 303.{os.getpid()}"  # unique to this test run
    fake.write_text(f"#!/bin/sh\necho 'fake sshd hangs' >&2\nexec {sleeper}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(simhosts, "SSHD", fake)
    started = time.monotonic()
    with pytest.raises(SimHostError, match=r"(?s)not ready after 0.5s.*fake sshd hangs"):
        SimFleet.start(1, tmp_path / "fleet", ready_timeout=0.5)
    assert time.monotonic() - started < 5
    assert _sleepers(sleeper) == []  # stop() ran before the error was raised


def _sleepers(cmdline: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            try:
                text = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text.strip() == cmdline:
                found.append(int(entry.name))
    return found


def _pids_of(fleet: SimFleet, cmdline: str) -> list[int]:
    found = []
    for host in fleet.hosts:
        for pid in fleet.processes(host):
            try:
                text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text.strip() == cmdline:
                found.append(pid)
    return found


def _wait_for(probe: Callable[[], list[int]], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def _services(fleet: SimFleet) -> list[int]:
    host = fleet.hosts[0]
    return [p for p in fleet.processes(host) if p != fleet.sshd_pid(host)]


def _http_get(url: str) -> list[int]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return list(response.read())
    except OSError:
        return []


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_environment_is_isolated() -> None:
    """conftest's autouse fixture: no developer HOME, SSH agent or RELEASEBOOK_* settings."""
    home = Path(os.environ["HOME"])
    assert home.name.startswith("home") and home != Path("/root")
    assert list(home.iterdir()) == []
    assert "SSH_AUTH_SOCK" not in os.environ
    assert "SSH_AGENT_PID" not in os.environ
    assert not [name for name in os.environ if name.startswith("RELEASEBOOK_")]
