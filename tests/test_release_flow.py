"""The decisions of a release, without hosts: the failure policy as a table, and the
release run against scripted hosts (``transport.scripted``) that answer as releasebook's
scripts would, recording what they were sent. End-to-end behaviour on real hosts is in
the ``*_e2e.py`` files; this shows the rules themselves, fast and without root."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from releasebook.deploy.policy import Action, decide, on_interrupt
from releasebook.deploy.release import release
from releasebook.errors import LockHeld, ReleaseFailed
from releasebook.execute.outcome import NOT_RUN, Outcome
from releasebook.inventory import Environment, Host, load_environment
from releasebook.masking import Masker
from releasebook.plan.model import CONTROLLER
from releasebook.runbooks.bookkeeping import LOCK_LOST
from releasebook.transport import Transport
from releasebook.transport.scripted import ScriptedHost

R1 = "20260101-120000-000"


def _failed(exited: int = 1) -> Outcome:
    return Outcome("x", "web1", False, exited, "tail", 0.1)


@pytest.mark.parametrize(
    ("phase", "failed", "live", "stop_after", "step", "expected"),
    [
        ("prepare", [], False, None, "install", Action.CONTINUE),
        ("prepare", [], False, "gate", "gate", Action.FINISH_PREFLIGHT),
        ("prepare", [_failed()], False, None, "install", Action.ABORT),
        ("prepare", [_failed(NOT_RUN)], False, None, "install", Action.ABORT),
        ("live", [_failed()], True, None, "restart_web", Action.ROLL_BACK),
        ("live", [], True, None, "verify", Action.CONTINUE),
        ("finish", [_failed()], True, None, "cleanup", Action.WARN),
        ("prepare", [_failed(LOCK_LOST)], False, None, "install", Action.LOCK_LOST_UNDO),
        ("live", [_failed(LOCK_LOST)], True, None, "switch", Action.LOCK_LOST_STOP),
        ("finish", [_failed(LOCK_LOST)], True, None, "cleanup", Action.LOCK_LOST_STOP),
    ],
)
def test_failure_policy(
    phase: Any,
    failed: list[Outcome],
    live: bool,
    stop_after: str | None,
    step: str,
    expected: Action,
) -> None:
    assert decide(step, phase, failed, live=live, stop_after=stop_after) is expected


def test_an_interruption_follows_the_same_rule() -> None:
    assert on_interrupt(live=False) is Action.ABORT
    assert on_interrupt(live=True) is Action.ROLL_BACK


# --- the release against scripted hosts ---------------------------------------------------


class _Quiet:
    def plan_started(self, plan: object) -> None: ...

    def step_started(self, planned: object) -> None: ...

    def host_finished(self, planned: object, outcome: object) -> None: ...

    def message(self, text: str, **data: object) -> None: ...

    def finished(self, ok: bool, summary: str) -> None: ...


class _Ready(BaseHTTPRequestHandler):
    """/readyz of a host serving R1."""

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "release": R1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def serving() -> Iterator[str]:
    """web1's bind: an HTTP server on loopback that answers as a host serving R1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def env(tmp_path: Path, serving: str) -> Environment:
    """Two ssh hosts (never reached: the hosts are scripted) and a git repository."""
    root = tmp_path / "project"
    (root / "app").mkdir(parents=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("")
    (root / "inventories").mkdir()
    (root / "inventories" / "known_hosts").write_text("")
    (root / "inventories" / "flow.yml").write_text(
        "app: {source: app, settings: config.settings, wsgi: 'config.wsgi:application'}\n"
        "deploy: {path: /srv/app}\n"
        "ssh: {known_hosts: inventories/known_hosts}\n"
        "health: {host_header: app.test, timeout: 2}\n"
        "hosts:\n"
        f"  web1: {{address: 127.0.0.1, roles: [web, migrate], bind: '{serving}'}}\n"
        "  web2: {address: 127.0.0.2, roles: [web], bind: '127.0.0.2:9'}\n"
    )
    git = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "app"], check=True)
    return load_environment("flow", root)


def _facts(current: str | None) -> tuple[str, ...]:
    if current is None:
        return ()
    record = f'{{"action": "release", "release": "{current}", "outcome": "released"}}'
    return (f"current={current}", f"release={current}", f"history={record}")


@pytest.fixture
def hosts() -> Iterator[dict[str, ScriptedHost]]:
    yield {
        CONTROLLER: ScriptedHost(CONTROLLER),
        "web1": ScriptedHost("web1", _facts(R1)),
        "web2": ScriptedHost("web2", _facts(R1)),
    }


def _run(env: Environment, hosts: dict[str, ScriptedHost], **kwargs: Any) -> None:
    def opener(env: Environment, host: Host | None) -> Transport:
        return hosts[host.name if host else CONTROLLER]

    release(env, _Quiet(), Masker(), opener=opener, **kwargs)


def test_a_failure_before_the_switch_runs_the_undo_of_every_step_begun(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web2"].fail = {"gate": 1}
    with pytest.raises(ReleaseFailed, match="Nothing live changed"):
        _run(env, hosts)
    for name in ("web1", "web2"):
        host = hosts[name]
        assert not host.ran("mv -T ")  # never switched
        assert host.journaled_undo() == ["install", "upload", "record"]  # newest first
        assert host.scripts[-1].startswith("set -eu\nif grep -qF")  # then the lock goes
    assert hosts[CONTROLLER].ran("rm -rf ")  # the build's own undo


def test_a_failure_after_the_switch_rolls_back_and_retires_a_new_host(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web2"].facts = ()  # a host that never had a release
    hosts["web1"].fail = {"restart_web": 1}
    with pytest.raises(ReleaseFailed) as failed:
        _run(env, hosts)
    message = str(failed.value)
    assert f"web1: serves {R1}, verified" in message
    assert "web2: out of service" in message
    assert hosts["web1"].ran(f"ln -sfn /srv/app/releases/{R1} /srv/app/.current-{R1}")
    assert hosts["web2"].ran("rm -f /srv/app/current")
    assert not hosts["web2"].ran(f"/srv/app/releases/{R1}")  # nothing to switch it to


def test_a_held_lock_stops_the_release_on_the_first_host(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web1"].held_by = '{"user": "alice", "token": "abc", "lease_until": 4000000000}'
    with pytest.raises(LockHeld, match="web1: alice"):
        _run(env, hosts)
    assert not hosts["web2"].ran("if mkdir ")  # the first host is asked alone, first
    assert hosts["web1"].scripts[1:] == [s for s in hosts["web1"].scripts[1:] if "mkdir" not in s]


def test_a_lost_lock_stops_the_run_and_undoes_only_its_own_steps(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web1"].fail = {"install": LOCK_LOST}
    with pytest.raises(ReleaseFailed, match="the environment lock was broken"):
        _run(env, hosts)
    assert hosts["web1"].journaled_undo() == ["install", "upload", "record"]
    # the record says so, and the lock is not released where it is no longer ours
    assert hosts["web1"].ran("lock_lost")
    assert not hosts["web1"].scripts[-1].startswith("set -eu\nif grep -qF")
