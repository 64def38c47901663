"""``inv app.logs --follow`` without SSH: its real follow script runs in bash on this
machine (the local transport) against log files the test writes. The newest lines come
first, then each new line as it is written, filtered by request id; when the host's
script ends, its tails end too and the follow says which host stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from releasebook.deploy.follow import follow
from releasebook.errors import OperationFailed
from releasebook.inventory import Environment, load_environment
from releasebook.masking import Masker

INVENTORY = (
    "transport: local\n"
    "app: {source: app, settings: config.settings, wsgi: 'config.wsgi:application'}\n"
    "deploy: {path: deployed}\n"
    "health: {host_header: localhost, timeout: 2}\n"
    "hosts:\n"
    "  local: {roles: [web, worker, migrate]}\n"
)


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "manage.py").write_text("")
    (tmp_path / "app" / "requirements.txt").write_text("")
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "loc.yml").write_text(INVENTORY)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return load_environment("loc", tmp_path)


def _until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _processes_naming(text: str) -> dict[int, str]:
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in args:
            found[int(entry.name)] = args
    return found


def test_follow_prints_the_newest_then_new_lines_and_its_tails_end_with_it(
    env: Environment,
) -> None:
    logs = env.root / "deployed" / "shared" / "log"
    logs.mkdir(parents=True)
    web = logs / "web_0.log"
    worker = logs / "worker.log"
    web.write_text("2026-01-01 10:00:00 old request_id=r-1 status=200\n")
    worker.write_text("2026-01-01 10:00:01 old task request_id=r-1\n")
    out: list[str] = []
    notes: list[str] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            follow(env, Masker(), out.append, notes.append, request_id="r-1", lines=10)
        except OperationFailed as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    _until(lambda: any("following the logs of local" in n for n in notes), "the follow to start")
    assert out == [
        "local web_0.log 2026-01-01 10:00:00 old request_id=r-1 status=200",
        "local worker.log 2026-01-01 10:00:01 old task request_id=r-1",
    ]
    with web.open("a") as f:
        f.write("2026-01-01 10:00:02 new request_id=r-1 status=500\n")
        f.write("2026-01-01 10:00:03 another request_id=r-2\n")
    with worker.open("a") as f:
        f.write("2026-01-01 10:00:04 task failed request_id=r-1\n")
    _until(lambda: len(out) == 4, "the new lines")
    assert set(out[2:]) == {
        "local web_0.log 2026-01-01 10:00:02 new request_id=r-1 status=500",
        "local worker.log 2026-01-01 10:00:04 task failed request_id=r-1",
    }
    # The host's follow script ends (as when its SSH session goes): its tails end with it.
    scripts = {
        pid: args
        for pid, args in _processes_naming(str(logs)).items()
        if "while echo" in args and "tail -n 0 -F" in args and "bash" in args.split()[0]
    }
    assert scripts, "the follow script is not running"
    for pid in scripts:
        os.kill(pid, signal.SIGTERM)
    thread.join(20)
    assert not thread.is_alive()
    assert failure and "local: its follow script ended" in str(failure[0])
    assert any("local: stopped following" in n for n in notes)
    _until(
        lambda: not any(a.startswith("tail ") for a in _processes_naming(str(logs)).values()),
        "the tails to end",
    )


def test_follow_refuses_bad_input_before_reaching_a_host(env: Environment) -> None:
    def never(*_: object) -> None:
        raise AssertionError("printed")

    with pytest.raises(Exception, match="--lines 0"):
        follow(env, Masker(), never, never, lines=0)
    with pytest.raises(Exception, match="--request-id"):
        follow(env, Masker(), never, never, request_id="a b")
    with pytest.raises(Exception, match="role"):
        follow(env, Masker(), never, never, role="nope")
