"""An ASGI app with Channels on two simulated web hosts sharing a real Redis channel layer.

The ASGI example is released (gunicorn with uvicorn workers, the supervisord-held socket);
its WebSockets answer through each web host and a message crosses hosts through the
layer; a second release under steady HTTP load and open WebSockets fails no request and
closes WebSockets only with a normal close code, and clients reconnect to the new
release; a rollback restores the first. The gate refuses, by name, an unreachable
channel-layer Redis, a router without Origin validation and the in-memory layer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from e2e_project import (
    CONTROLLER_PYTHON,
    HOST_HEADER,
    Project,
    history,
    make_project,
    readyz,
    released_id,
)
from load import Load
from services import fresh_database, started_fleet
from simhosts import SimFleet
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

pytestmark = pytest.mark.e2e

SOURCE = "example-asgi"
ROLES = {"web1": ["web", "migrate"], "web2": ["web"]}
REDIS = "redis://127.0.0.1:6379/9"
# A stopping uvicorn worker closes with 1012 (service restart); 1001 (going away) is normal too.
NORMAL_CLOSE = {1001, 1012}
ORIGIN = Origin(f"https://{HOST_HEADER}")


def _inventory(fleet: SimFleet, database: str, channels_redis: str) -> str:
    hosts = "".join(
        f"  {name}:\n    address: {fleet.host(name).address}\n    roles: [{', '.join(r)}]\n"
        for name, r in ROLES.items()
    )
    return f"""
app:
  source: {SOURCE}
  settings: config.settings.prod
  asgi: config.asgi:application
  python: {CONTROLLER_PYTHON}
deploy:
  path: /srv/app
  keep_releases: 3
ssh:
  user: root
  port: {fleet.hosts[0].port}
  identity_file: {fleet.client_key}
  known_hosts: {fleet.known_hosts}
  connect_timeout: 5
web:
  workers: 2
  graceful_timeout: 10
health:
  host_header: {HOST_HEADER}
  timeout: 30
  websocket_path: /ws/releasebook/verify/
env:
  required: [DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DATABASE_URL]
  generate: [DJANGO_SECRET_KEY]
  values:
    DJANGO_ALLOWED_HOSTS: "{HOST_HEADER}"
    DJANGO_CSRF_TRUSTED_ORIGINS: "https://{HOST_HEADER}"
    DATABASE_URL: "{database}"
    CHANNELS_REDIS_URL: "{channels_redis}"
hosts:
{hosts}"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    with started_fleet(tmp_path_factory.mktemp("asgi"), list(ROLES)) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database("rb_asgi") as url:
        yield url


@pytest.fixture(scope="module")
def project(fleet: SimFleet, database: str, tmp_path_factory: pytest.TempPathFactory) -> Project:
    inventory = _inventory(fleet, database, REDIS)
    return make_project(tmp_path_factory.mktemp("asgi"), inventory, source=SOURCE)


@pytest.fixture(scope="module")
def first_release(project: Project) -> str:
    done = project.inv("release", "--env=e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    return released_id(done)


def _bind(fleet: SimFleet, name: str) -> str:
    return f"{fleet.host(name).address}:8000"


def _open(fleet: SimFleet, name: str, path: str = "/ws/notes/") -> ClientConnection:
    """A WebSocket to this host's server, as a browser on the site opens it."""
    import socket

    host, port = _bind(fleet, name).split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.settimeout(None)  # the client's reader thread waits for frames for as long as it takes
    return connect(
        f"ws://{HOST_HEADER}{path}",
        sock=sock,
        origin=ORIGIN,
        open_timeout=10,
        proxy=None,
        compression=None,
    )


def _greeting(ws: ClientConnection) -> str:
    release: str = json.loads(ws.recv(timeout=10))["release"]
    return release


def test_websockets_answer_through_each_host_and_share_the_layer(
    project: Project, fleet: SimFleet, first_release: str
) -> None:
    for name in ROLES:
        assert readyz(_bind(fleet, name)).json()["release"] == first_release
    with _open(fleet, "web1") as one, _open(fleet, "web2") as two:
        assert _greeting(one) == first_release
        assert _greeting(two) == first_release
        # Sent on web1, delivered on web2: the Redis channel layer joins the hosts.
        one.send("hello from web1")
        assert json.loads(two.recv(timeout=10)) == {"note": "hello from web1"}
        assert json.loads(one.recv(timeout=10)) == {"note": "hello from web1"}
    # The programs run the ASGI app under releasebook's subclass of uvicorn's worker class.
    programs = fleet.run("web1", "cat /srv/app/current/.releasebook/programs.conf")
    assert programs.ok, programs.stderr
    assert "--worker-class releasebook.django.asgi_worker.UvicornWorker" in programs.stdout
    assert "--graceful-timeout 10" in programs.stdout


@dataclass
class Sockets:
    """WebSockets held open on every web host, each read until the server closes it."""

    fleet: SimFleet
    per_host: int = 3
    codes: list[int | None] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    greeted: list[str] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Sockets:
        ready = threading.Barrier(self.per_host * len(ROLES) + 1, timeout=60)
        for name in ROLES:
            for _ in range(self.per_host):
                thread = threading.Thread(target=self._hold, args=(name, ready), daemon=True)
                thread.start()
                self._threads.append(thread)
        ready.wait()
        return self

    def _hold(self, name: str, ready: threading.Barrier) -> None:
        try:
            with _open(self.fleet, name) as ws:
                greeting = _greeting(ws)
                with self._lock:
                    self.greeted.append(greeting)
                ready.wait()
                while True:
                    ws.recv(timeout=300)
        except ConnectionClosed as closed:
            received = closed.rcvd
            with self._lock:
                self.codes.append(received.code if received is not None else None)
                self.closes.append(f"{name}: {closed!r}")
        except Exception as exc:
            with self._lock:
                self.errors.append(f"{name}: {exc!r}")
            ready.abort()

    def __exit__(self, *exc: object) -> None:
        for thread in self._threads:
            thread.join(timeout=60)


def test_second_release_under_load_and_websockets_then_rollback(
    project: Project, fleet: SimFleet, first_release: str
) -> None:
    consumers = project.root / SOURCE / "notes" / "consumers.py"
    consumers.write_text(consumers.read_text().replace("MAX_TEXT = 500", "MAX_TEXT = 400"))
    project.commit("shorter notes")
    urls = [f"http://{_bind(fleet, name)}/healthz" for name in ROLES]
    # One connection per request, as nginx talks to its upstream by default: a connection
    # kept alive directly to uvicorn can be closed idle by a stopping worker just as the
    # client reuses it (clients retry those, RFC 9112 9.3.1); new connections must all
    # be answered, from the socket supervisord holds.
    load = Load(urls, HOST_HEADER, max_seconds=300, keep_alive=False)
    with Sockets(fleet) as sockets, load:
        assert sockets.greeted == [first_release] * 6
        done = project.inv("release", "--env=e2e")
        # Both masters of both hosts restarted: every old WebSocket was closed.
        deadline = time.monotonic() + 60
        while len(sockets.codes) + len(sockets.errors) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert done.returncode == 0, done.stdout + done.stderr
    second = released_id(done)
    assert load.report.failures == [], load.report.failures[:5]
    assert load.report.total > 50
    assert sockets.errors == []
    assert len(sockets.codes) == 6
    logs = fleet.run("web1", "tail -n 40 /srv/app/shared/log/web_0.log").stdout
    assert set(sockets.codes) <= NORMAL_CLOSE, (sockets.closes, logs)
    # The release says how many the restart closed: the three on each host.
    assert (
        "restart closed 6 WebSocket connection(s) with 1012 (service restart); web1: 3, web2: 3"
    ) in done.stdout, done.stdout
    # Clients reconnect, to the new release, on each host.
    for name in ROLES:
        with _open(fleet, name) as ws:
            assert _greeting(ws) == second

    back = Load(urls, HOST_HEADER, max_seconds=300, keep_alive=False)
    with Sockets(fleet) as sockets, back:
        assert sockets.greeted == [second] * 6
        done = project.inv("rollback", "--env=e2e")
        deadline = time.monotonic() + 60
        while len(sockets.codes) + len(sockets.errors) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert back.report.failures == [], back.report.failures[:5]
    assert sockets.errors == []
    assert set(sockets.codes) <= NORMAL_CLOSE, sockets.closes
    # The rollback says how many its web restart closed, as the release does.
    assert (
        "restart closed 6 WebSocket connection(s) with 1012 (service restart); web1: 3, web2: 3"
    ) in done.stdout, done.stdout
    for name in ROLES:
        assert readyz(_bind(fleet, name)).json()["release"] == first_release
        with _open(fleet, name) as ws:
            assert _greeting(ws) == first_release


def _gate_blocking(project: Project, fleet: SimFleet) -> tuple[str, list[str]]:
    live = readyz(_bind(fleet, "web1")).json()["release"]
    done = project.inv("release", "--env=e2e")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "readiness gate failed" in done.stderr
    for name in ROLES:
        assert readyz(_bind(fleet, name)).json()["release"] == live
    last = history(fleet.hosts[0].srv)[-1]
    assert (last["outcome"], last["step"]) == ("aborted", "gate")
    return done.stdout + done.stderr, list(last["gate"]["blocking"])


def test_gate_names_unreachable_redis_and_a_router_without_origin_checks(
    project: Project, fleet: SimFleet, database: str, first_release: str
) -> None:
    inventory = project.root / "inventories" / "e2e.yml"
    asgi = project.root / SOURCE / "config" / "asgi.py"
    asgi_before = asgi.read_text()
    asgi.write_text(
        asgi_before.replace(
            "AllowedHostsOriginValidator(\n"
            "            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))\n        )",
            "AuthMiddlewareStack(URLRouter(websocket_urlpatterns))",
        )
    )
    assert asgi.read_text() != asgi_before
    project.commit("websocket routes without Origin validation")
    inventory.write_text(_inventory(fleet, database, "redis://:pw-0d9c8b@127.0.0.1:1/0"))
    try:
        output, blocking = _gate_blocking(project, fleet)
    finally:
        asgi.write_text(asgi_before)
        project.commit("Origin validation back")
        inventory.write_text(_inventory(fleet, database, REDIS))
    assert blocking == ["RB-ASGI-003", "RB-ASGI-004"], output
    assert "pw-0d9c8b" not in output

    inventory.write_text(_inventory(fleet, database, ""))
    try:
        output, blocking = _gate_blocking(project, fleet)
    finally:
        inventory.write_text(_inventory(fleet, database, REDIS))
    assert blocking == ["RB-ASGI-002"], output
    assert "InMemoryChannelLayer" in output
