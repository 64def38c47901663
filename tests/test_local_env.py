"""The README's main job: `inv release --env=local` deploys the example on this machine
(no SSH) under supervisord, a second run makes a second release, rollback goes back.
Runs in a copy of the project with its own port so a developer's own local deploy is
left alone; every process it starts is stopped."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_project import REPO, Project, make_project

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def local_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, int]]:
    port = _free_port()
    inventory = (REPO / "inventories" / "local.yml").read_text()
    inventory = inventory.replace("port: 8000", f"port: {port}").replace(
        "http://localhost:8000", f"http://localhost:{port}"
    )
    assert f"port: {port}" in inventory
    project = make_project(tmp_path_factory.mktemp("local"), inventory, env_name="local")
    try:
        yield project, port
    finally:
        stop_supervisord(project.root / "var" / "local" / ".releasebook")


def stop_supervisord(state: Path) -> None:
    """Shut supervisord down and wait until it and its programs are gone."""
    pidfile = state / "supervisord.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().strip())
    subprocess.run(
        [str(state / "tools/bin/supervisorctl"), "-c", str(state / "supervisord.conf"), "shutdown"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "supervisord did not stop"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _served(port: int) -> str:
    response = httpx.get(
        f"http://127.0.0.1:{port}/readyz", headers={"Host": "localhost"}, timeout=5
    )
    assert response.status_code == 200, response.text
    release: str = response.json()["release"]
    return release


def test_local_release_twice_then_rollback(local_project: tuple[Project, int]) -> None:
    project, port = local_project
    done = project.inv("release", "--env=local", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["event"] == "plan"
    assert events[-1] == {**events[-1], "event": "finished", "ok": True}
    hosts = [e for e in events if e["event"] == "host"]
    assert {e["step"] for e in hosts} >= {"install", "migrate", "switch", "verify"}
    assert all(e["ok"] for e in hosts)
    first = events[0]["release"]
    assert _served(port) == first
    # The admin is styled: its stylesheet is served, as verify checked.
    css = httpx.get(
        f"http://127.0.0.1:{port}/static/admin/css/base.css",
        headers={"Host": "localhost"},
        timeout=5,
    )
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    verified = next(e for e in hosts if e["step"] == "verify")
    assert "text/css" in json.dumps(verified), verified

    done = project.inv("release", "--env=local")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"serving at http://127.0.0.1:{port}/" in done.stdout
    second = _served(port)
    assert second != first

    done = project.inv("rollback", "--env=local")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _served(port) == first
    deploy = project.root / "var" / "local"
    assert Path(deploy / "current").resolve().name == first
    # The secret generated on the host is never printed.
    secret_line = next(
        line
        for line in (deploy / "shared" / ".env").read_text().splitlines()
        if line.startswith("DJANGO_SECRET_KEY=")
    )
    assert secret_line.split("=", 1)[1] not in done.stdout + done.stderr


def test_dry_run_names_every_step(local_project: tuple[Project, int]) -> None:
    project, _ = local_project
    done = project.inv("release", "--env=local", "--dry-run")
    assert done.returncode == 0, done.stderr
    for step in ("setup", "preflight", "build", "migrate", "switch", "verify", "cleanup"):
        assert f": {step}" in done.stdout or f". {step}:" in done.stdout
