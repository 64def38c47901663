"""Day-2 operations end to end over real SSH: a web host and a worker host (with beat),
real gunicorn and Celery under supervisord, PostgreSQL and Redis. The broker is reached
through a TCP relay the test owns, so Redis can be made unreachable from the hosts.

In file order, on one release: doctor passes and status says what is up; bad input
changes nothing; maintenance on makes the web host answer 503 with Retry-After while
/healthz stays 200, off brings 200 back; one request's lines are found by its id on the
web and the worker host; doctor names the failing row when the worker is stopped, when a
web process is down, and when Redis is unreachable.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any

import httpx
import pytest
from e2e_project import HOST_HEADER, Project, make_project, settled_status, ssh_inventory
from services import fresh_database, started_fleet
from simhosts import SimFleet

pytestmark = pytest.mark.e2e

ROLES = {"web1": ["web", "migrate"], "worker1": ["worker", "beat"]}
SUPERVISORCTL = (
    "/srv/app/.releasebook/tools/bin/supervisorctl -c /srv/app/.releasebook/supervisord.conf"
)


class Relay:
    """A TCP relay on loopback to Redis; ``stop`` closes it and every connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.running = False
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    with started_fleet(tmp_path_factory.mktemp("fleet"), list(ROLES)) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    relay = Relay(("127.0.0.1", 6379))
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture(scope="module")
def project(
    fleet: SimFleet, relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    with fresh_database("rb_ops") as database:
        inventory = ssh_inventory(
            fleet,
            database_url=database,
            broker_url=f"redis://127.0.0.1:{relay.port}/9",
            timeout=30,
            roles=ROLES,
        )
        project = make_project(tmp_path_factory.mktemp("ops"), inventory)
        done = project.inv("release", "--env=e2e")
        assert done.returncode == 0, done.stdout + done.stderr
        yield project


def _url(fleet: SimFleet, path: str) -> str:
    return f"http://{fleet.host('web1').address}:8000{path}"


def _get(fleet: SimFleet, path: str, **headers: str) -> httpx.Response:
    return httpx.get(
        _url(fleet, path),
        headers={"Host": HOST_HEADER, "X-Forwarded-Proto": "https", **headers},
        timeout=10,
    )


def _doctor(project: Project) -> tuple[int, list[dict[str, Any]]]:
    done = project.inv("doctor", "--env=e2e", "--json")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert rows, done.stdout + done.stderr
    return done.returncode, rows


def _failing(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(r["host"], r["check"]) for r in rows if r["status"] == "fail"}


def _until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _running(fleet: SimFleet, host: str) -> str:
    return fleet.run(host, f"{SUPERVISORCTL} status || true").stdout


def _pids(fleet: SimFleet, host: str) -> list[tuple[str, str]]:
    """(program, pid) of each RUNNING program: a restart changes the pid."""
    return re.findall(r"(\S+)\s+RUNNING\s+pid (\d+)", _running(fleet, host))


def test_doctor_passes_and_status_says_what_is_up(project: Project) -> None:
    code, rows = _doctor(project)
    assert code == 0, rows
    checks = {(r["host"], r["check"]) for r in rows if r["status"] == "ok"}
    for expected in [
        ("web1", "processes"),
        ("web1", "readyz"),
        ("worker1", "processes"),
        ("worker1", "worker"),
        ("worker1", "beat"),
        ("web1", "database"),
        ("worker1", "database"),
        ("worker1", "broker"),
        ("web1", "disk"),
    ]:
        assert expected in checks, rows
    table = project.inv("doctor", "--env=e2e")
    assert table.returncode == 0 and "OK: every check passed" in table.stdout
    state = project.status()
    assert state["web1"]["processes"]["ok"] and state["web1"]["readyz"]["ok"]
    assert state["worker1"]["processes"]["ok"]
    status = project.inv("status", "--env=e2e")
    assert "  readyz: up: GET http://" in status.stdout


def test_bad_input_exits_2_and_changes_nothing(project: Project, fleet: SimFleet) -> None:
    before = {h: _pids(fleet, h) for h in ROLES}
    for args in (
        ("app.stop", "--env=e2e", "--role", "nope"),
        ("app.restart", "--env=e2e", "--role", "nope"),
        ("app.logs", "--env=e2e", "--role", "nope"),
        ("maintenance", "sideways", "--env=e2e"),
    ):
        done = project.inv(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
    assert {h: _pids(fleet, h) for h in ROLES} == before
    assert len(before["web1"]) == 1 and len(before["worker1"]) == 2  # one web master serves
    assert not (fleet.host("web1").srv / "app" / "shared" / "maintenance").exists()


def test_maintenance_on_and_off(project: Project, fleet: SimFleet) -> None:
    flag = fleet.host("web1").srv / "app" / "shared" / "maintenance"
    done = project.inv("maintenance", "on", "--env=e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        assert flag.is_file()
        page = _get(fleet, "/")
        assert page.status_code == 503
        assert page.headers["Retry-After"].isdigit()
        assert "maintenance" in page.text
        assert _get(fleet, "/healthz").status_code == 200
        ready = _get(fleet, "/readyz")
        assert (ready.status_code, ready.json()["status"]) == (503, "maintenance")
        code, rows = _doctor(project)
        assert code == 0, rows  # releasebook's probe still sees the release ready
        notes = [r for r in rows if r["check"] == "maintenance"]
        assert notes and notes[0]["detail"].startswith("maintenance on since")
    finally:
        done = project.inv("maintenance", "off", "--env=e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not flag.exists()
    assert _get(fleet, "/").status_code == 200
    assert _get(fleet, "/readyz").status_code == 200


def test_logs_by_request_id_on_the_web_and_the_worker_host(
    project: Project, fleet: SimFleet
) -> None:
    request_id = "ops-" + uuid.uuid4().hex
    queued = _get(fleet, "/notes/count", **{"X-Request-ID": request_id})
    assert queued.status_code == 202, queued.text
    found: list[str] = []

    def both() -> bool:
        done = project.inv("app.logs", "--env=e2e", "--request-id", request_id)
        assert done.returncode == 0, done.stdout + done.stderr
        found[:] = done.stdout.splitlines()
        return {line.split()[0] for line in found} == {"web1", "worker1"}

    _until(both, 60, "the request's lines on both hosts")
    assert all(request_id in line for line in found)
    web = [line for line in found if line.startswith("web1 web_")]
    worker = [line for line in found if line.startswith("worker1 worker.log ")]
    assert any("queued count_notes" in line for line in web), found
    assert any("counted" in line and "notes" in line for line in worker), found
    assert any("path=/notes/count status=202" in line for line in web), found
    # merged by time: the web's lines of the request come before the worker's
    assert found.index(web[0]) < found.index(worker[-1])
    tail = project.inv("app.logs", "--env=e2e", "--role", "worker", "--lines", "3")
    assert tail.returncode == 0
    assert tail.stdout and all(line.startswith("worker1 ") for line in tail.stdout.splitlines())


class _Lines:
    """A pipe's lines, read in a thread as they come."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, found: Callable[[list[str]], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: found(self.lines), timeout):
                raise AssertionError(f"timed out waiting for {what}: {self.lines}")


def test_logs_follow_prints_new_lines_of_every_host_until_ctrl_c(
    project: Project, fleet: SimFleet
) -> None:
    request_id = "follow-" + uuid.uuid4().hex
    follow = project.popen(
        "app.logs", "--env=e2e", "--follow", "--request-id", request_id, "--lines", "5"
    )
    try:
        out, err = _Lines(follow.stdout), _Lines(follow.stderr)  # type: ignore[arg-type]
        err.wait_for(lambda ls: any("following the logs of" in x for x in ls), 60, "start")
        assert out.lines == [], out.lines  # no line held this id before the request
        queued = _get(fleet, "/notes/count", **{"X-Request-ID": request_id})
        assert queued.status_code == 202, queued.text

        def both(lines: list[str]) -> bool:
            return {x.split()[0] for x in lines if x.strip()} == {"web1", "worker1"}

        out.wait_for(both, 60, "the request's lines from both hosts")
        assert all(request_id in line for line in out.lines), out.lines
        assert any(x.startswith("web1 web_") and "status=202" in x for x in out.lines)
        assert any(x.startswith("worker1 worker.log ") for x in out.lines)
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=30) == 0
        assert any("stopped following" in x for x in err.lines), err.lines
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()

    def tails_gone() -> bool:
        return all("tail -n 0 -F" not in fleet.run(host, "ps -eo args").stdout for host in ROLES)

    _until(tails_gone, 30, "the hosts' tails to end once the controller stopped following")


MAINTENANCE_HOOK = (
    "hooks:\n  before:\n    migrate:\n"
    "      - 'if test -e /srv/app/shared/maintenance; then echo in-maintenance; fi; exit 3'\n"
)


def test_release_in_maintenance(project: Project, fleet: SimFleet) -> None:
    flag = fleet.host("web1").srv / "app" / "shared" / "maintenance"
    text = (project.root / "inventories" / "e2e.yml").read_text()
    failing = text.replace("\nhosts:\n", "\n" + MAINTENANCE_HOOK + "hosts:\n", 1)
    (project.root / "inventories" / "e2e-hook.yml").write_text(failing)
    # The hook before migrate sees the flag, then fails: the release aborts and its undo
    # turns maintenance off again.
    done = project.inv("release", "--env=e2e-hook", "--maintenance")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "in-maintenance" in done.stdout + done.stderr
    assert not flag.exists()
    assert _get(fleet, "/").status_code == 200
    done = project.inv("release", "--env=e2e", "--maintenance", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    names = [e["step"] for e in steps if e["event"] == "step"]
    done_ok = {(e["step"], e["target"]) for e in steps if e["event"] == "host" and e["ok"]}
    assert {("maintenance_on", "web1"), ("maintenance_off", "web1")} <= done_ok
    assert names.index("maintenance_on") < names.index("migrate") < names.index("verify")
    assert names.index("verify") < names.index("maintenance_off")
    assert not flag.exists()
    assert _get(fleet, "/").status_code == 200


def test_app_exec_runs_with_the_release_environment(project: Project) -> None:
    done = project.inv(
        "app.exec", "--env=e2e", "--", "sh", "-c", 'echo "settings=$DJANGO_SETTINGS_MODULE"'
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "settings=config.settings.prod" in done.stdout
    done = project.inv(
        "app.manage", "--env=e2e", "--role", "worker", "--", "showmigrations", "notes"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[X] 0001_initial" in done.stdout


def test_doctor_names_a_stopped_worker(project: Project, fleet: SimFleet) -> None:
    done = project.inv("app.stop", "--env=e2e", "--role", "worker")
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        assert re.search(r"^worker\s+STOPPED", _running(fleet, "worker1"), re.M)
        assert [name for name, _ in _pids(fleet, "worker1")] == ["beat"]
        code, rows = _doctor(project)
        assert code == 1
        assert {("worker1", "processes"), ("worker1", "worker")} <= _failing(rows)
        assert ("web1", "readyz") not in _failing(rows)
        table = project.inv("doctor", "--env=e2e")
        assert table.returncode == 1
        assert "FAIL" in table.stdout and "worker1 processes" in table.stdout
    finally:
        done = project.inv("app.start", "--env=e2e", "--role", "worker")
    assert done.returncode == 0, done.stdout + done.stderr
    _until(lambda: _doctor(project)[0] == 0, 60, "the worker to answer again")


def test_doctor_names_a_web_process_that_is_down(project: Project, fleet: SimFleet) -> None:
    fleet.run("web1", f"{SUPERVISORCTL} stop 'web:*'")
    try:
        code, rows = _doctor(project)
        assert code == 1
        assert {("web1", "processes"), ("web1", "readyz")} <= _failing(rows)
        state = project.status()
        assert not state["web1"]["processes"]["ok"]
        assert not state["web1"]["readyz"]["ok"]
        status = project.inv("status", "--env=e2e")
        assert "  processes: DOWN:" in status.stdout
    finally:
        done = project.inv("app.start", "--env=e2e", "--role", "web")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _get(fleet, "/readyz").status_code == 200
    started = _pids(fleet, "web1")
    assert [name for name, _ in started] == ["web:web_0"], started
    done = project.inv("app.restart", "--env=e2e", "--role", "web")
    assert done.returncode == 0, done.stdout + done.stderr
    # The restart booted the other master beside the serving one, then stopped that one.
    assert [name for name, _ in _pids(fleet, "web1")] == ["web:web_1"]
    assert re.search(
        r"^web:web_0\s+STOPPED", settled_status(fleet, "web1", f"{SUPERVISORCTL} status"), re.M
    )


def test_doctor_names_an_unreachable_redis(project: Project, relay: Relay) -> None:
    relay.stop()  # last: the broker stays unreachable for the rest of the module
    code, rows = _doctor(project)
    assert code == 1
    failing = _failing(rows)
    assert ("web1", "broker") in failing and ("worker1", "broker") in failing, rows
    assert ("worker1", "database") not in failing
