"""The environment lock on real SSH hosts: one holder at a time, released however the
block ends, waited for, renewed, reported stale, and broken by `inv unlock`."""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import pytest
from invoke.context import Context
from invoke.exceptions import Exit
from simhosts import SimFleet, SimFleetFactory

from releasebook.cli.safety import unlock
from releasebook.deploy.connection import connect
from releasebook.deploy.history import read_history
from releasebook.deploy.running import lock_info_for
from releasebook.errors import LockHeld
from releasebook.execute.lock import (
    HeldLock,
    break_locks,
    environment_lock,
    read_lock_digests,
    read_locks,
)
from releasebook.inventory import Environment, load_environment
from releasebook.masking import Masker
from releasebook.plan import Plan, ReleaseInfo, Run, Source, build_plan
from releasebook.runbooks.bookkeeping import RENEW_EVERY, LockInfo
from releasebook.transport import Transport

RELEASE = "20240501-120000-000"
# The console command: it needs no tasks.py in the project.
RELEASEBOOK = str(Path(sys.executable).with_name("releasebook"))
ENV = "lk"
MASKER = Masker()


class _Quiet:
    def plan_started(self, plan: object) -> None: ...

    def step_started(self, planned: object) -> None: ...

    def host_finished(self, planned: object, outcome: object) -> None: ...

    def message(self, text: str, **data: object) -> None: ...

    def finished(self, ok: bool, summary: str) -> None: ...


def locked(
    env: Environment,
    transports: Mapping[str, Transport],
    *,
    command: str = "release",
    wait: float = 0,
    lease: float = 300,
    renew_every: float = RENEW_EVERY,
) -> AbstractContextManager[HeldLock]:
    """The environment lock as a run takes it: the lock step of the run's plan."""
    source = Source(
        repo=env.root,
        subdir="app",
        cache=env.root / "cache",
        python="python3",
        python_version="3.11.2",
        python_abi="cpython 3.11",
    )
    release = ReleaseInfo(
        release_id=RELEASE,
        git_sha="0" * 40,
        requirements_hash="0" * 16,
        created_by="t",
        created_at="2024-05-01T12:00:00Z",
    )

    def plan_with(lock: LockInfo, held: HeldLock | None = None) -> Plan:
        run = Run(release=release, lock=lock, marker="m", action=command)
        return build_plan(env, "release", source=source, run=run, steps=("lock", "unlock"))

    info = replace(lock_info_for(command, RELEASE), lease_until=time.time() + lease)
    return environment_lock(
        plan_with, info, transports, _Quiet(), wait=wait, renew_every=renew_every
    )


def write_env(
    tmp: Path,
    fleet: SimFleet,
    *,
    known_hosts: Path | None = None,
    name: str = ENV,
    reverse: bool = False,
) -> Environment:
    """An inventory for the fleet (first host web+migrate, the others web) in a throwaway
    project; the app is a stub, as nothing here builds it. ``reverse``: the hosts are
    listed last first."""
    root = tmp / "project"
    (root / "app").mkdir(parents=True, exist_ok=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("")
    (root / "inventories").mkdir(exist_ok=True)
    roles = ["web, migrate"] + ["web"] * (len(fleet.hosts) - 1)
    listed = list(zip(fleet.hosts, roles, strict=True))
    hosts = "".join(
        f"  {h.name}:\n    address: {h.address}\n    roles: [{r}]\n"
        for h, r in (reversed(listed) if reverse else listed)
    )
    (root / "inventories" / f"{name}.yml").write_text(
        f"""
app: {{source: app, settings: config.settings, wsgi: "config.wsgi:application"}}
deploy: {{path: /srv/app}}
ssh:
  user: root
  port: {fleet.hosts[0].port}
  identity_file: {fleet.client_key}
  known_hosts: {known_hosts or fleet.known_hosts}
  connect_timeout: 5
health: {{host_header: app.test}}
hosts:
{hosts}"""
    )
    return load_environment(name, root)


def lock_path(fleet: SimFleet, host: str) -> Path:
    """The lock directory of ``host``, seen from the controller."""
    return fleet.host(host).srv / "app" / ".releasebook" / "lock"


def plant_lock(fleet: SimFleet, host: str, *, lease_until: float, token: str = "f" * 32) -> None:
    """A lock left by another controller's run (which may since have died)."""
    path = lock_path(fleet, host)
    path.mkdir(parents=True)
    info = LockInfo("alice", "laptop", 4242, "2024-05-01T11:00:00Z", "release", RELEASE, token, 0.0)
    data = {**json.loads(info.to_json()), "lease_until": lease_until}
    (path / "info.json").write_text(json.dumps(data) + "\n")


def test_one_of_two_concurrent_attempts_wins(
    sim_fleet_factory: SimFleetFactory, tmp_path: Path
) -> None:
    fleet = sim_fleet_factory(3)
    # The two runs list the hosts in opposite orders: they still take the locks in one.
    envs = {
        "release": write_env(tmp_path, fleet),
        "rollback": write_env(tmp_path, fleet, name="backwards", reverse=True),
    }
    for _ in range(4):  # taken host by host in parallel, both runs often lost
        _race(fleet, envs)


def _race(fleet: SimFleet, envs: dict[str, Environment]) -> None:
    start = threading.Barrier(2)
    loser_done = threading.Event()
    outcomes: dict[str, str | LockHeld] = {}

    def attempt(command: str) -> None:
        env = envs[command]
        with connect(env, MASKER) as transports:
            start.wait(10)
            try:
                with locked(env, transports, command=command):
                    outcomes[command] = "won"
                    loser_done.wait(30)
            except LockHeld as exc:
                outcomes[command] = exc
                loser_done.set()

    threads = [threading.Thread(target=attempt, args=(c,)) for c in ("release", "rollback")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    winners = [c for c, o in outcomes.items() if o == "won"]
    losers = [o for o in outcomes.values() if isinstance(o, LockHeld)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    message = str(losers[0])
    for expected in (
        "host1:",
        getpass.getuser(),
        socket.gethostname(),
        f"pid {os.getpid()}",
        f"running `{winners[0]}`",
        f"of release {RELEASE}",
        "since 20",
        "lease active until",
    ):
        assert expected in message, message
    assert losers[0].exit_code == 4
    for host in fleet.hosts:
        assert not lock_path(fleet, host.name).exists(), host.name


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_released_when_the_block_raises(
    sim_host: SimFleet, tmp_path: Path, error: type[BaseException]
) -> None:
    env = write_env(tmp_path, sim_host)
    with connect(env, MASKER) as transports:
        with (
            pytest.raises(error),
            locked(env, transports) as lock,
        ):
            held = read_locks(env, transports)["host1"]
            assert held is not None and held.token == lock.info.token
            raise error("boom")
        assert not lock_path(sim_host, "host1").exists()
        assert read_locks(env, transports) == {"host1": None}


def test_refused_on_one_host_releases_the_others_and_reports_stale(
    sim_fleet_factory: SimFleetFactory, tmp_path: Path
) -> None:
    fleet = sim_fleet_factory(2)
    env = write_env(tmp_path, fleet)
    plant_lock(fleet, "host2", lease_until=time.time() - 120)
    with connect(env, MASKER) as transports:
        with (
            pytest.raises(LockHeld) as caught,
            locked(env, transports),
        ):
            pytest.fail("acquired a lock that host2 holds")
        message = str(caught.value)
        assert "host2: alice on laptop (pid 4242) since 2024-05-01T11:00:00Z" in message
        assert "running `release`" in message and "stale since" in message
        assert f"inv unlock --env={ENV}" in message
        assert "host1" not in message
        assert not lock_path(fleet, "host1").exists(), "host1's half of the lock was kept"
        held = read_locks(env, transports)
        assert held["host1"] is None
        assert held["host2"] is not None and held["host2"].stale(time.time())


def test_wait_acquires_once_the_holder_releases(sim_host: SimFleet, tmp_path: Path) -> None:
    env = write_env(tmp_path, sim_host)
    held = threading.Event()

    def holder() -> None:
        with (
            connect(env, MASKER) as transports,
            locked(env, transports),
        ):
            held.set()
            time.sleep(2)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        with connect(env, MASKER) as transports:
            started = time.monotonic()
            with (
                pytest.raises(LockHeld, match=r"waited 0\.5s"),
                locked(env, transports, command="rollback", wait=0.5),
            ):
                pytest.fail("acquired a held lock")
            with locked(env, transports, command="rollback", wait=20) as lock:
                waited = time.monotonic() - started
                assert read_locks(env, transports)["host1"] == lock.info
    finally:
        thread.join(30)
    assert 1 < waited < 10


def test_renewer_moves_the_lease_and_release_spares_another_holder(
    sim_host: SimFleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = write_env(tmp_path, sim_host)
    info_file = lock_path(sim_host, "host1") / "info.json"
    with connect(env, MASKER) as transports:
        with locked(env, transports, lease=5, renew_every=0.2) as lock:
            first = json.loads(info_file.read_text())["lease_until"]
            assert first == lock.info.lease_until
            time.sleep(1.2)
            renewed = json.loads(info_file.read_text())
            assert renewed["lease_until"] > first + 0.5
            assert renewed["token"] == lock.info.token
            # Someone breaks the lock and another run takes it: ours must leave it alone.
            (_, digest) = read_lock_digests(env, transports)["host1"]
            assert break_locks(env, transports, {"host1": digest})["host1"][0] == "broken"
            plant_lock(sim_host, "host1", lease_until=time.time() + 60)
            time.sleep(0.6)  # a renewal finds the token changed and stops
        assert "host1: the environment lock was broken or taken over" in caplog.text
        other = read_locks(env, transports)["host1"]
        assert other is not None and other.user == "alice" and not other.stale()


def test_unlock_breaks_a_stale_lock_and_records_it(
    sim_host: SimFleet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = write_env(tmp_path, sim_host)
    monkeypatch.setenv("RELEASEBOOK_ROOT", str(env.root))
    plant_lock(sim_host, "host1", lease_until=time.time() - 60)

    unlock(Context(), env=ENV, yes=True)

    out = capsys.readouterr().out
    assert "host1: alice on laptop (pid 4242)" in out and "stale since" in out
    assert f"unlocked {ENV} on host1" in out
    assert not lock_path(sim_host, "host1").exists()
    with connect(env, MASKER) as transports:
        records = read_history(env, transports)["host1"]
        with locked(env, transports):
            pass
    assert len(records) == 1
    record = records[0]
    assert record["action"] == "unlock" and record["outcome"] == "unlocked"
    assert record["by"] == f"{getpass.getuser()}@{socket.gethostname()}"
    assert record["holder"]["user"] == "alice" and record["holder"]["pid"] == 4242
    assert "token" not in record["holder"]


def test_unlock_breaks_only_the_lock_it_showed(
    sim_host: SimFleet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Between showing the holder and the operator's yes, the stale lock was released and
    another run took the environment: that run's lock must survive the unlock."""
    env = write_env(tmp_path, sim_host)
    monkeypatch.setenv("RELEASEBOOK_ROOT", str(env.root))
    plant_lock(sim_host, "host1", lease_until=time.time() - 60)

    def meanwhile(question: str) -> bool:
        path = lock_path(sim_host, "host1")
        (path / "info.json").unlink()
        path.rmdir()
        plant_lock(sim_host, "host1", lease_until=time.time() + 300, token="e" * 32)
        return True

    monkeypatch.setattr("releasebook.cli.safety._ask", meanwhile)
    with pytest.raises(Exit) as caught:
        unlock(Context(), env=ENV, yes=False)
    assert caught.value.code == 1
    out = capsys.readouterr().out
    assert "host1: the lock changed since it was shown and was left alone" in out
    info = json.loads((lock_path(sim_host, "host1") / "info.json").read_text())
    assert info["token"] == "e" * 32
    with connect(env, MASKER) as transports:
        assert read_history(env, transports)["host1"] == []  # nothing was broken


@pytest.mark.parametrize(
    "info",
    [
        '{"user": "x", "lease_until": 1e308, "pid": "nope", "token": "abc"}',
        '{"user": 7, "lease_until": "NaN", "token": "$(reboot)"}',
        '{"lease_until": -99999999999999999999999}',
        "[1, 2, 3]",
        "\x1b[2J\x1b[31mnot json at all",
    ],
)
def test_a_lock_file_with_nonsense_is_reported_and_breakable(
    sim_host: SimFleet, tmp_path: Path, info: str
) -> None:
    """Host data is untrusted: a lock whose info.json holds absurd values is shown as
    unreadable or stale, never a traceback; `inv unlock` breaks it; status shows it."""
    env = write_env(tmp_path, sim_host)
    path = lock_path(sim_host, "host1")
    path.mkdir(parents=True)
    (path / "info.json").write_text(info + "\n")
    environ = {**os.environ, "RELEASEBOOK_ROOT": str(env.root)}

    def inv(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RELEASEBOOK, *args],
            cwd=env.root,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )

    status = inv("status", f"--env={ENV}")
    assert status.returncode == 0, status.stderr
    assert "LOCKED:" in status.stdout and "Traceback" not in status.stderr
    assert "\x1b" not in status.stdout
    with (
        connect(env, MASKER) as transports,
        pytest.raises(LockHeld) as held,
        locked(env, transports),
    ):
        pytest.fail("took a held lock")
    assert "host1:" in str(held.value)
    done = inv("unlock", f"--env={ENV}", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "\x1b" not in done.stdout
    assert not path.exists()
