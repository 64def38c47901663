"""ASGI and Channels apps: the inventory's ``app.asgi``, the web programs that run them,
the gate's RB-ASGI checks on the ASGI example, and verify's WebSocket check against a
real uvicorn serving the example.

The gate runs as a host runs it (the script copied into a copy of ``example-asgi``,
the release's interpreter, real Redis on 127.0.0.1:6379).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from releasebook.deploy.websocket_report import websocket_report, websockets_closed
from releasebook.django import asgi_worker
from releasebook.errors import InventoryError
from releasebook.execute.health import wait_ready
from releasebook.execute.outcome import Outcome
from releasebook.gate import gate, registry
from releasebook.gate.command import GATE_IN_RELEASE, GATE_SOURCE
from releasebook.inventory import load_inventory
from releasebook.plan.model import HttpProbe
from releasebook.plan.values import app_option, gate_argv
from releasebook.runbooks import processes

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_ASGI = REPO / "example-asgi"
REDIS = "redis://127.0.0.1:6379/11"
HOST = "app.test"

INVENTORY = """\
app:
  source: app
  settings: config.settings
  asgi: config.asgi:application
deploy:
  path: /srv/app
ssh:
  known_hosts: inventories/known_hosts
web:
  timeout: 30
  graceful_timeout: 45
health:
  host_header: example.com
  websocket_path: /ws/releasebook/verify/
hosts:
  web1:
    address: 10.0.0.1
    roles: [web, migrate]
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "app" / "manage.py").write_text("")
    (tmp_path / "app" / "requirements.txt").write_text("")
    file = tmp_path / "inventories" / "x.yml"
    file.parent.mkdir(exist_ok=True)
    file.write_text(text)
    return file


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.strip().startswith(needle))


# --- the inventory --------------------------------------------------------------------


def test_asgi_app_and_its_settings_load(tmp_path: Path) -> None:
    env = load_inventory(_write(tmp_path, INVENTORY))
    assert env.app.asgi == "config.asgi:application"
    assert env.app.wsgi is None
    assert env.app.server_app == "config.asgi:application"
    assert env.hosts[0].web.drain == 45
    assert env.health.websocket_path == "/ws/releasebook/verify/"
    assert app_option(env) == "--asgi config.asgi:application"
    argv = gate_argv(env, Path("/srv/app"))
    assert argv[argv.index("--asgi") + 1] == "config.asgi:application"
    assert "--wsgi" not in argv


def test_wsgi_and_asgi_together_name_the_asgi_line(tmp_path: Path) -> None:
    text = INVENTORY.replace("  asgi:", "  wsgi: config.wsgi:application\n  asgi:")
    file = _write(tmp_path, text)
    with pytest.raises(InventoryError) as info:
        load_inventory(file)
    message = str(info.value)
    assert message.startswith(f"{file}:{_line(text, 'asgi:')}: app: expected exactly one of wsgi")
    assert "got both" in message
    assert info.value.exit_code == 2


def test_neither_wsgi_nor_asgi_names_the_app(tmp_path: Path) -> None:
    text = INVENTORY.replace("  asgi: config.asgi:application\n", "")
    file = _write(tmp_path, text)
    with pytest.raises(InventoryError, match="got neither") as info:
        load_inventory(file)
    assert str(info.value).startswith(f"{file}:{_line(text, 'app:')}: app: expected exactly one")


def test_a_websocket_path_needs_an_asgi_app(tmp_path: Path) -> None:
    text = INVENTORY.replace("  asgi: config.asgi:application", "  wsgi: config.wsgi:application")
    file = _write(tmp_path, text)
    with pytest.raises(InventoryError, match=r"health.websocket_path: WebSockets need") as info:
        load_inventory(file)
    assert f":{_line(text, 'websocket_path:')}:" in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("graceful_timeout: 45", "graceful_timeout: 0", "web.graceful_timeout: expected a pos"),
        ("graceful_timeout: 45", "graceful_timeout: soon", "web.graceful_timeout: expected an"),
        ("websocket_path: /ws/", "websocket_path: ws/", "websocket_path: expected a URL path"),
        ("asgi: config.asgi:application", "asgi: config.asgi", "app.asgi: expected 'module"),
    ],
)
def test_bad_asgi_values_name_their_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = INVENTORY.replace(old, new)
    with pytest.raises(InventoryError, match=message):
        load_inventory(_write(tmp_path, text))


# --- the web programs -----------------------------------------------------------------


def _values(**extra: object) -> dict[str, object]:
    return {
        "current_launcher": Path("/srv/app/current/.releasebook/with-env"),
        "web_workers": 2,
        "web_timeout": 30,
        "web_graceful_timeout": 45,
        "wsgi": "config.asgi:application",
        "asgi": True,
        "bind": "10.0.0.1:8000",
        "current": Path("/srv/app/current"),
        "logs": Path("/srv/app/shared/log"),
        **extra,
    }


def test_an_asgi_app_runs_under_gunicorn_with_uvicorn_workers_on_the_held_socket() -> None:
    text = processes.programs_text(_values(), ("web",))
    assert "[fcgi-program:web]" in text
    assert "socket=tcp://10.0.0.1:8000" in text
    assert (
        "-m gunicorn --bind fd://0 --workers 2 "
        "--worker-class releasebook.django.asgi_worker.UvicornWorker "
        "--timeout 30 --graceful-timeout 45 --no-control-socket config.asgi:application"
    ) in text
    # supervisord waits for the drain before it kills.
    assert "stopwaitsecs=55" in text


def test_a_wsgi_app_keeps_its_command_line() -> None:
    text = processes.programs_text(
        _values(asgi=False, wsgi="config.wsgi:application", web_graceful_timeout=30), ("web",)
    )
    assert "worker-class" not in text
    assert (
        "--workers 2 --timeout 30 --graceful-timeout 30 --no-control-socket config.wsgi:application"
    ) in text


def test_the_gate_and_the_programs_name_the_same_worker_class() -> None:
    assert gate.ASGI_WORKER_CLASS == processes.ASGI_WORKER_CLASS
    assert {"RB-ASGI-001", "RB-ASGI-002", "RB-ASGI-003", "RB-ASGI-004"} <= set(registry.BY_ID)


def _serve_websockets(count: int) -> tuple[list[int | None], str]:
    """A server of releasebook's worker class with ``count`` WebSockets open, stopped as
    TERM stops it: the close codes its clients got, and what it logged."""
    from releasebook.django.asgi_worker import _Server

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            while (await receive())["type"] != "websocket.disconnect":
                pass

    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    server = _Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("uvicorn.error")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)  # as gunicorn's error log is
    try:
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        codes: list[int | None] = []
        with contextlib.ExitStack() as stack:
            sockets = [
                stack.enter_context(connect(f"ws://127.0.0.1:{port}/", open_timeout=5, proxy=None))
                for _ in range(count)
            ]
            server.should_exit = True  # what its TERM handler sets
            for ws in sockets:
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
                codes.append(closed.value.rcvd.code if closed.value.rcvd is not None else None)
        thread.join(timeout=10)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    return codes, "\n".join(records)


def test_the_worker_closes_websockets_with_1012_and_logs_how_many() -> None:
    codes, logged = _serve_websockets(3)
    assert codes == [1012, 1012, 1012]
    assert asgi_worker.CLOSING % 3 in logged
    assert websockets_closed(logged) == 3


def test_the_restart_report_adds_up_what_each_hosts_workers_closed() -> None:
    def restarted(host: str, *counts: int) -> Outcome:
        lines = [
            f"[2026-12-02 16:03:15 +0000] [7684] [INFO] {asgi_worker.CLOSING % n}" for n in counts
        ]
        stdout = "web:web_0: stopped\nweb:web_0: started\n" + "\n".join(lines) + "\n"
        return Outcome("restart_web", host, True, 0, "", 1.0, stdout)

    closed, line = websocket_report([restarted("web1", 2, 1, 0, 0), restarted("web2", 3)])
    assert closed == {"web1": 3, "web2": 3}
    assert line == (
        "restart closed 6 WebSocket connection(s) with 1012 (service restart); web1: 3, web2: 3"
    )
    # A WSGI app's workers say nothing: no line.
    assert websocket_report([Outcome("restart_web", "web1", True, 0, "", 1.0, "ok\n")]) == (
        {},
        None,
    )


# --- the gate on the ASGI example -----------------------------------------------------

ONLY_ASGI = [
    c for c, _, _ in gate.TABLE if not c.startswith(("RB-ASGI-", "RB-ENV-")) and c != "RB-WEB-001"
]


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(
    not _redis_up() and not os.environ.get("CI"), reason="Redis is not on 127.0.0.1:6379"
)


@pytest.fixture
def asgi_release(tmp_path: Path) -> Path:
    release = tmp_path / "release"
    shutil.copytree(EXAMPLE_ASGI, release, ignore=shutil.ignore_patterns("__pycache__"))
    (release / ".releasebook").mkdir()
    shutil.copy(GATE_SOURCE, release / GATE_IN_RELEASE)
    (release / "release.json").write_text(json.dumps({"release_id": "r1", "git_sha": "0" * 40}))
    return release


def _app_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CHANNELS_"))}
    return inherited | {
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "config.settings.prod",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": HOST,
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        **extra,
    }


def _asgi_results(release: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    skips = [word for check in ONLY_ASGI for word in ("--skip", check)]
    done = subprocess.run(
        [sys.executable, GATE_IN_RELEASE, "--json", "--asgi", "config.asgi:application", *skips],
        cwd=release,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return {r["id"]: r for r in json.loads(done.stdout)["results"]}


@needs_redis
def test_the_asgi_example_passes_the_asgi_checks(asgi_release: Path, tmp_path: Path) -> None:
    results = _asgi_results(asgi_release, _app_env(tmp_path, CHANNELS_REDIS_URL=REDIS))
    for check in ("RB-ASGI-001", "RB-ASGI-002", "RB-ASGI-003", "RB-ASGI-004"):
        assert results[check]["status"] == "pass", results[check]
    assert "sent and received a message" in results["RB-ASGI-003"]["message"]
    # gunicorn loads the app with the worker class that serves it.
    assert results["RB-WEB-001"]["status"] == "pass", results["RB-WEB-001"]
    assert results["RB-WEB-001"]["message"] == (
        "gunicorn's configuration and --worker-class "
        "releasebook.django.asgi_worker.UvicornWorker config.asgi:application loaded"
    )


def test_a_redis_socket_timeout_no_longer_than_the_blocking_pop_fails() -> None:
    from channels_redis.core import RedisChannelLayer

    # redis-py 8's default socket timeout (5 s) is the pop's (brpop_timeout, 5 s).
    problem = gate.idle_read_problem("default", RedisChannelLayer(hosts=[REDIS]))
    assert problem is not None
    assert "(5s) is no longer than the layer's blocking pop (5s)" in problem
    none = RedisChannelLayer(hosts=[{"address": REDIS, "socket_timeout": None}])
    assert gate.idle_read_problem("default", none) is None
    longer = RedisChannelLayer(hosts=[{"address": REDIS, "socket_timeout": 30}])
    assert gate.idle_read_problem("default", longer) is None


def test_the_in_memory_layer_fails_by_name(asgi_release: Path, tmp_path: Path) -> None:
    results = _asgi_results(asgi_release, _app_env(tmp_path))
    assert results["RB-ASGI-002"]["status"] == "fail"
    assert "InMemoryChannelLayer keeps messages in one process" in results["RB-ASGI-002"]["message"]


def test_an_unreachable_layer_fails_within_its_bound(asgi_release: Path, tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    env = _app_env(tmp_path, CHANNELS_REDIS_URL=f"redis://:pw-9f8e7d@127.0.0.1:{port}/0")
    results = _asgi_results(asgi_release, env)
    assert time.monotonic() - started < 60
    failed = results["RB-ASGI-003"]
    assert failed["status"] == "fail"
    assert "RedisChannelLayer" in failed["message"]
    assert str(port) in failed["message"]
    assert "pw-9f8e7d" not in json.dumps(results)


@needs_redis
def test_a_router_without_origin_validation_fails_by_name(
    asgi_release: Path, tmp_path: Path
) -> None:
    asgi = asgi_release / "config" / "asgi.py"
    text = asgi.read_text()
    unguarded = text.replace(
        "AllowedHostsOriginValidator(\n"
        "            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))\n        )",
        "AuthMiddlewareStack(URLRouter(websocket_urlpatterns))",
    )
    assert unguarded != text
    asgi.write_text(unguarded)
    results = _asgi_results(asgi_release, _app_env(tmp_path, CHANNELS_REDIS_URL=REDIS))
    failed = results["RB-ASGI-004"]
    assert failed["status"] == "fail"
    assert "not wrapped in AllowedHostsOriginValidator or OriginValidator" in failed["message"]
    assert results["RB-ASGI-001"]["status"] == "pass"


def test_a_broken_asgi_module_fails_the_import_check(asgi_release: Path, tmp_path: Path) -> None:
    (asgi_release / "config" / "asgi.py").write_text("import no_such_module_here\n")
    results = _asgi_results(asgi_release, _app_env(tmp_path, CHANNELS_REDIS_URL=REDIS))
    assert results["RB-ASGI-001"]["status"] == "fail"
    assert "no_such_module_here" in results["RB-ASGI-001"]["message"]


def test_a_wsgi_app_passes_the_asgi_checks_as_not_applicable() -> None:
    ctx = gate.Ctx(Path(), None, (), 0, Path(), "config.wsgi:application")
    for fn in (
        gate.check_asgi_app,
        gate.check_channel_layer_kind,
        gate.check_channel_layer,
        gate.check_websocket_origin,
    ):
        ok, message = fn(ctx, 1.0)
        assert ok and message.startswith("not applicable"), message


# --- verify's WebSocket check against uvicorn serving the example ---------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served(asgi_release: Path, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = _app_env(tmp_path, CHANNELS_REDIS_URL=REDIS, DJANGO_HTTPS="0")
    migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
    subprocess.run(migrate, cwd=asgi_release, env=env, check=True, timeout=120)
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)),
            *("--log-level", "warning", "config.asgi:application"),
        ],
        cwd=asgi_release,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Host": HOST}, timeout=1)
                break
            except httpx.HTTPError:
                assert server.poll() is None, "uvicorn exited"
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _probe(bind: str, *, origin: str, path: str = "/ws/releasebook/verify/") -> HttpProbe:
    return HttpProbe(
        url=f"http://{bind}/readyz",
        host_header=HOST,
        forwarded_proto="http",
        expect_release="r1",
        deadline=3,
        websocket_url=f"ws://{bind}{path}",
        origin=origin,
    )


@needs_redis
def test_verify_opens_the_websocket_and_gets_the_echo(served: str) -> None:
    result = wait_ready(_probe(served, origin=f"https://{HOST}"))
    assert result.ok, result.detail
    assert "upgraded, echo from release r1" in result.detail


@needs_redis
def test_verify_fails_when_the_origin_is_refused(served: str) -> None:
    result = wait_ready(_probe(served, origin="https://elsewhere.test"))
    assert not result.ok
    assert "no upgrade, HTTP 403" in result.detail


@needs_redis
def test_verify_fails_without_a_websocket_route(served: str) -> None:
    result = wait_ready(_probe(served, origin=f"https://{HOST}", path="/ws/nothing-here/"))
    assert not result.ok
    assert "WebSocket" in result.detail


def test_a_stopping_worker_answers_a_connection_it_accepted_before_the_request_came() -> None:
    """uvicorn closes a connection with no request in progress as it stops: a client that
    connected just before the stop lost its request. The worker's server stops accepting,
    then reads and answers it."""
    from releasebook.django.asgi_worker import _Server

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]}
        )
        await send({"type": "http.response.body", "body": b"served"})

    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    server = _Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            while not server.server_state.connections:
                assert time.monotonic() < deadline, "uvicorn did not accept"
                time.sleep(0.01)
            server.should_exit = True  # what its TERM handler sets
            while any(s.is_serving() for s in server.servers):
                assert time.monotonic() < deadline, "uvicorn did not stop accepting"
                time.sleep(0.01)
            client.sendall(b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := client.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert answer.endswith(b"served")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()
