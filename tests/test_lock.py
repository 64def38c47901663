"""The environment lock on real SSH hosts: one holder at a time, released however the
block ends, waited for, renewed, reported stale, and broken by `inv unlock`."""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from invoke.context import Context
from simhosts import SimFleet, SimFleetFactory

from releasebook.cli.safety import unlock
from releasebook.connection import connect
from releasebook.history import read_history
from releasebook.inventory import Environment, load_environment
from releasebook.lock import LockHeld, LockInfo, break_lock, environment_lock, read_locks

RELEASE = "20240501-120000-000"
ENV = "lk"


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
    info = LockInfo("alice", "laptop", 4242, "2024-05-01T11:00:00Z", "release", RELEASE, token, 0)
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
        with connect(env) as transports:
            start.wait(10)
            try:
                with environment_lock(env, transports, command=command, release_id=RELEASE):
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
    with connect(env) as transports:
        with (
            pytest.raises(error),
            environment_lock(env, transports, command="release", release_id=RELEASE) as info,
        ):
            held = read_locks(env, transports)["host1"]
            assert held is not None and held.token == info.token
            raise error("boom")
        assert not lock_path(sim_host, "host1").exists()
        assert read_locks(env, transports) == {"host1": None}


def test_refused_on_one_host_releases_the_others_and_reports_stale(
    sim_fleet_factory: SimFleetFactory, tmp_path: Path
) -> None:
    fleet = sim_fleet_factory(2)
    env = write_env(tmp_path, fleet)
    plant_lock(fleet, "host2", lease_until=time.time() - 120)
    with connect(env) as transports:
        with (
            pytest.raises(LockHeld) as caught,
            environment_lock(env, transports, command="release", release_id=RELEASE),
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
            connect(env) as transports,
            environment_lock(env, transports, command="release", release_id=RELEASE),
        ):
            held.set()
            time.sleep(2)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        with connect(env) as transports:
            started = time.monotonic()
            with (
                pytest.raises(LockHeld, match=r"waited 0\.5s"),
                environment_lock(env, transports, command="rollback", release_id=RELEASE, wait=0.5),
            ):
                pytest.fail("acquired a held lock")
            with environment_lock(
                env, transports, command="rollback", release_id=RELEASE, wait=20
            ) as info:
                waited = time.monotonic() - started
                assert read_locks(env, transports)["host1"] == info
    finally:
        thread.join(30)
    assert 1 < waited < 10


def test_renewer_moves_the_lease_and_release_spares_another_holder(
    sim_host: SimFleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = write_env(tmp_path, sim_host)
    info_file = lock_path(sim_host, "host1") / "info.json"
    with connect(env) as transports:
        with environment_lock(
            env, transports, command="release", release_id=RELEASE, lease=5, renew_every=0.2
        ) as info:
            first = json.loads(info_file.read_text())["lease_until"]
            assert first == info.lease_until
            time.sleep(1.2)
            renewed = json.loads(info_file.read_text())
            assert renewed["lease_until"] > first + 0.5
            assert renewed["token"] == info.token
            # Someone breaks the lock and another run takes it: ours must leave it alone.
            assert break_lock(env, transports)["host1"] is not None
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
    with connect(env) as transports:
        records = read_history(env, transports)["host1"]
        with environment_lock(env, transports, command="release", release_id=RELEASE):
            pass
    assert len(records) == 1
    record = records[0]
    assert record["action"] == "unlock" and record["outcome"] == "unlocked"
    assert record["by"] == f"{getpass.getuser()}@{socket.gethostname()}"
    assert record["holder"]["user"] == "alice" and record["holder"]["pid"] == 4242
    assert "token" not in record["holder"]
