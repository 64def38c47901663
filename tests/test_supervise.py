"""The restart steps' supervisord client (runbooks/supervise.py), run as the steps run
it (its text on stdin) against a real supervisord whose programs stand in for gunicorn
masters: each boots, forks a worker, and on TERM logs a closing line and exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from releasebook.runbooks.processes import SUPERVISE_TEXT

SUPERVISORD = Path(sys.executable).with_name("supervisord")

# argv: boot seconds, trace file, name. Fails to boot where trace.fail-NAME exists, and
# takes trace.drain-NAME's seconds to exit after TERM.
MASTER = """
import os, signal, sys, time
boot, trace, name = float(sys.argv[1]), sys.argv[2], sys.argv[3]
def note(what):
    with open(trace, "a") as f:
        f.write(f"{time.monotonic():.6f} {name} {what} {os.getpid()}\\n")
note("boot")
time.sleep(boot)
if os.path.exists(trace + ".fail-" + name):
    print("ImportError: the app does not load", flush=True)
    sys.exit(3)
child = os.fork()
if child == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        time.sleep(60)
note("forked")
def stop(*_):
    note("stop")
    print("[INFO] releasebook: closing 2 WebSocket connection(s) with 1012 "
          "(service restart)", flush=True)
    os.kill(child, signal.SIGTERM)
    os.waitpid(child, 0)
    if os.path.exists(trace + ".drain-" + name):  # requests still running: finish them
        time.sleep(float(open(trace + ".drain-" + name).read()))
    note("exit")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(60)
"""


@dataclass
class Supervised:
    root: Path
    conf: Path
    socket: Path
    trace: Path

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-",
                "--conf",
                str(self.conf),
                "--socket",
                str(self.socket),
                "--supervisord",
                str(SUPERVISORD),
                *args,
            ],
            input=SUPERVISE_TEXT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def web_args(self, *, wait_stopped: bool = True) -> list[str]:
        masters = [a for n in ("web_0", "web_1") for a in ("--web", f"web:{n}", str(self.log(n)))]
        return [*masters, "--wait-stopped"] if wait_stopped else masters

    def wait_forked(self, *names: str) -> None:
        deadline = time.monotonic() + 20
        while not set(names) <= {n for n, what, _ in self.events() if what == "forked"}:
            assert time.monotonic() < deadline, self.events()
            time.sleep(0.05)

    def info(self, name: str) -> dict[str, object]:
        from releasebook.runbooks import supervise

        info: dict[str, object] = supervise.connect(str(self.socket)).getProcessInfo(name)
        return info

    def pid(self, name: str) -> int:
        return int(str(self.info(name)["pid"]))

    def states(self) -> dict[str, str]:
        return {n: str(self.info(f"web:{n}")["statename"]) for n in ("web_0", "web_1")}

    def events(self) -> list[tuple[str, str, int]]:
        text = self.trace.read_text() if self.trace.exists() else ""
        rows = [line.split() for line in text.splitlines()]
        return [(name, what, int(pid)) for _, name, what, pid in rows]


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervised]:
    # A short socket path: AF_UNIX paths are limited to ~107 bytes.
    socket_path = Path(f"/tmp/rb-supervise-{os.getpid()}.sock")
    trace = tmp_path / "trace"
    master = tmp_path / "master.py"
    master.write_text(MASTER)
    programs = ""
    for name, boot in (("web", 0.3), ("worker", 0.1), ("beat", 0.1)):
        numbered = name == "web"
        label = "%(process_num)d" if numbered else name
        programs += textwrap.dedent(f"""
            [program:{name}]
            command={sys.executable} {master} {boot} {trace} {label}
            {"process_name=%(program_name)s_%(process_num)d" if numbered else ""}
            numprocs={2 if numbered else 1}
            startsecs=1
            stopwaitsecs=10
            stdout_logfile={tmp_path}/{"%(program_name)s_%(process_num)d" if numbered else name}.log
            redirect_stderr=true
            """)
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        textwrap.dedent(f"""
        [unix_http_server]
        file={socket_path}
        [supervisord]
        logfile={tmp_path}/supervisord.log
        pidfile={tmp_path}/supervisord.pid
        [rpcinterface:supervisor]
        supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
        """)
        + programs
    )
    yield Supervised(tmp_path, conf, socket_path, trace)
    pidfile = tmp_path / "supervisord.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid):
            assert time.monotonic() < deadline, "supervisord did not stop"
            time.sleep(0.05)
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(master) not in processes, "a program outlived supervisord"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    return status != "Z"


def _forked_at(events: list[tuple[str, str, int]], name: str, pid: int) -> int:
    return next(i for i, e in enumerate(events) if e == (name, "forked", pid))


def _stops(events: list[tuple[str, str, int]], name: str) -> list[int]:
    return [i for i, e in enumerate(events) if e[:2] == (name, "stop")]


def test_one_master_serves_and_each_restart_boots_the_other_beside_it(
    supervised: Supervised,
) -> None:
    first = supervised.run("--ensure")
    assert first.returncode == 0, first.stderr
    assert (supervised.root / "supervisord.pid").exists()
    supervised.wait_forked("0", "1")  # both autostart, as after a host's boot
    old = {name: pid for name, what, pid in supervised.events() if what == "forked"}

    # Both serve: web_1 restarts in place while web_0 accepts, then web_0 stops.
    result = supervised.run("--ensure", *supervised.web_args())

    assert result.returncode == 0, result.stderr
    events = supervised.events()
    new_1 = supervised.pid("web:web_1")
    assert new_1 != old["1"] and supervised.states() == {"web_0": "STOPPED", "web_1": "RUNNING"}
    assert _forked_at(events, "1", new_1) < _stops(events, "0")[0], events
    assert f"pid {new_1}," in result.stdout and result.stdout.count("RUNNING") == 1
    # The closing line of each master that stopped, once, from the log it gained.
    assert result.stdout.count("releasebook: closing 2 WebSocket") == 2, result.stdout

    # One serves: the idle web_0 boots beside it and web_1 stops once web_0 serves.
    again = supervised.run("--ensure", *supervised.web_args())

    assert again.returncode == 0, again.stderr
    events = supervised.events()
    new_0 = supervised.pid("web:web_0")
    assert supervised.states() == {"web_0": "RUNNING", "web_1": "STOPPED"}
    assert _forked_at(events, "0", new_0) < _stops(events, "1")[-1], events
    assert [e[:2] for e in events].count(("0", "boot")) == 2  # one boot per restart
    assert [e[:2] for e in events].count(("1", "boot")) == 2
    assert again.stdout.count("releasebook: closing 2 WebSocket") == 1, again.stdout


def test_without_waiting_the_old_master_drains_after_the_step_and_the_next_waits_for_it(
    supervised: Supervised,
) -> None:
    assert supervised.run("--ensure", *supervised.web_args()).returncode == 0
    (supervised.root / "trace.drain-0").write_text("1.5")

    result = supervised.run("--ensure", *supervised.web_args(wait_stopped=False))

    assert result.returncode == 0, result.stderr
    assert "web:web_0: stopping" in result.stdout
    # The step ended with the new master serving and the old one still finishing.
    assert supervised.states() == {"web_0": "STOPPING", "web_1": "RUNNING"}
    assert ("0", "exit") not in [e[:2] for e in supervised.events()]

    again = supervised.run("--ensure", *supervised.web_args(wait_stopped=False))

    assert again.returncode == 0, again.stderr
    events = supervised.events()
    exits = [i for i, e in enumerate(events) if e[:2] == ("0", "exit")]
    boots = [i for i, e in enumerate(events) if e[:2] == ("0", "boot")]
    assert len(exits) == 1 and exits[0] < boots[-1], events  # drained, then booted again
    assert supervised.pid("web:web_0") == events[boots[-1]][2]
    assert supervised.states()["web_0"] == "RUNNING"


def test_masters_supervisord_has_just_started_are_kept_not_restarted(
    supervised: Supervised,
) -> None:
    result = supervised.run("--ensure", *supervised.web_args())

    assert result.returncode == 0, result.stderr
    assert supervised.states() == {"web_0": "RUNNING", "web_1": "STOPPED"}
    assert [e[:2] for e in supervised.events()].count(("0", "boot")) == 1


def test_a_master_that_dies_before_forking_fails_and_the_serving_one_goes_on(
    supervised: Supervised,
) -> None:
    assert supervised.run("--ensure", *supervised.web_args()).returncode == 0
    serving = supervised.pid("web:web_0")
    (supervised.root / "trace.fail-1").touch()

    result = supervised.run("--ensure", *supervised.web_args())

    assert result.returncode == 1
    assert "web:web_1 did not start (it exited before forking a worker)" in result.stderr
    assert "ImportError: the app does not load" in result.stderr
    # The failed master is stopped, not left retrying; the one that served still does.
    assert supervised.states() == {"web_0": "RUNNING", "web_1": "STOPPED"}
    assert supervised.pid("web:web_0") == serving
    assert not _stops(supervised.events(), "0")

    (supervised.root / "trace.fail-1").unlink()
    fixed = supervised.run("--ensure", *supervised.web_args())
    assert fixed.returncode == 0, fixed.stderr
    assert supervised.states() == {"web_0": "STOPPED", "web_1": "RUNNING"}


def test_worker_and_beat_are_restarted_and_must_reach_running(supervised: Supervised) -> None:
    assert supervised.run("--ensure").returncode == 0
    args = [a for n in ("worker", "beat") for a in ("--program", n, str(supervised.log(n)))]
    supervised.wait_forked("worker", "beat")

    result = supervised.run(*args)

    assert result.returncode == 0, result.stderr
    assert "worker: stopped\nworker: started\nbeat: stopped\nbeat: started\n" in result.stdout
    assert result.stdout.count("RUNNING") == 2
    forks = [(n, pid) for n, what, pid in supervised.events() if what == "forked"]
    assert [n for n, _ in forks].count("worker") == 2 and [n for n, _ in forks].count("beat") == 2


def test_programs_supervisord_has_just_started_are_not_restarted(supervised: Supervised) -> None:
    args = [a for n in ("worker", "beat") for a in ("--program", n, str(supervised.log(n)))]

    result = supervised.run("--ensure", *args)

    assert result.returncode == 0, result.stderr
    assert "stopped" not in result.stdout and result.stdout.count("RUNNING") == 2
    boots = [n for n, what, _ in supervised.events() if what == "boot"]
    assert boots.count("worker") == 1 and boots.count("beat") == 1


def test_without_ensure_a_supervisord_that_does_not_answer_is_named(
    supervised: Supervised,
) -> None:
    result = supervised.run("--program", "worker", str(supervised.log("worker")))

    assert result.returncode == 1
    assert f"supervisord does not answer on {supervised.socket}" in result.stderr
    assert not (supervised.root / "supervisord.pid").exists()


def test_a_supervisord_that_does_not_start_is_named_without_a_traceback(
    supervised: Supervised,
) -> None:
    conf = supervised.root / "bad.conf"
    conf.write_text("[supervisord]\nlogfile=/nonexistent/dir/supervisord.log\n")
    result = subprocess.run(
        [sys.executable, "-", "--conf", str(conf), "--socket", str(supervised.socket),
         "--supervisord", str(SUPERVISORD), "--ensure"],
        input=SUPERVISE_TEXT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"supervisord -c {conf} did not start (exit " in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_both_ways_of_finding_a_child_agree() -> None:
    from releasebook.runbooks import supervise

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert supervise._has_child(os.getpid())
        assert supervise._has_child_by_scan(os.getpid())
        assert not supervise._has_child(child.pid)
        assert not supervise._has_child_by_scan(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not supervise._has_child(child.pid)  # gone: no /proc entry
