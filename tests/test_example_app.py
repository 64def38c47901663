"""Run example/ the way a host does: manage.py commands and real gunicorn, prod settings.

Everything runs on a temp copy of the project so nothing is written into example/.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "example"
HOST = "app.example.test"
RELEASE = {
    "release_id": "20250101T000000Z-test",
    "git_sha": "0123456789abcdef0123456789abcdef01234567",
    "created_by": "pytest",
    "created_at": "2025-01-01T00:00:00Z",
    "requirements_hash": "sha256:0000",
}


def copy_project(parent: Path) -> Path:
    """A copy of example/ in ``parent`` with a release.json for RELEASE."""
    root = parent / "example"
    shutil.copytree(
        EXAMPLE,
        root,
        ignore=shutil.ignore_patterns(
            "__pycache__", "staticfiles", "media", "var", "*.sqlite3", "release.json"
        ),
    )
    (root / "release.json").write_text(json.dumps(RELEASE))
    return root


def prod_env(project: Path) -> dict[str, str]:
    """This process's environment without app settings, plus what prod settings require
    (sqlite and the filesystem broker next to ``project``)."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "CACHE_", "SITE_"))
    }
    return inherited | {
        "DJANGO_SETTINGS_MODULE": "config.settings.prod",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": HOST,
        "DJANGO_HTTPS": "1",
        "DATABASE_URL": f"sqlite:///{project.parent / 'db.sqlite3'}",
        "CELERY_BROKER_FOLDER": str(project.parent / "broker"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def env(project: Path) -> dict[str, str]:
    return prod_env(project)


def manage(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def migrated(project: Path, env: dict[str, str]) -> dict[str, str]:
    result = manage(project, env, "migrate", "--noinput")
    assert result.returncode == 0, result.stderr
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    client: httpx.Client  # sends the allowed Host header
    log_path: Path  # gunicorn's stdout and stderr, so the app's log too

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def gunicorn(project: Path, env: dict[str, str]) -> Iterator[Server]:
    """A running gunicorn, once it answers /healthz."""
    port = free_port()
    log_path = project.parent / f"gunicorn-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "--chdir", str(project)),
                *("--bind", f"127.0.0.1:{port}", "--workers", "1", "--no-control-socket"),
                "config.wsgi:application",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Host": HOST}, timeout=10)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"gunicorn exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"gunicorn not ready:\n{log_path.read_text()}"
            try:
                client.get("/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield Server(client, log_path)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_check_deploy_passes_with_prod_settings(project: Path, env: dict[str, str]) -> None:
    result = manage(project, env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prod_settings_refuse_to_start_without_secret_key(
    project: Path, env: dict[str, str]
) -> None:
    result = manage(project, env | {"DJANGO_SECRET_KEY": ""}, "check")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_migrations_apply_and_match_models(project: Path, migrated: dict[str, str]) -> None:
    result = manage(project, migrated, "makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr


def test_collectstatic_gathers_app_and_admin_css(project: Path, env: dict[str, str]) -> None:
    result = manage(project, env, "collectstatic", "--noinput")
    assert result.returncode == 0, result.stderr
    assert (project / "staticfiles" / "notes" / "site.css").is_file()
    assert (project / "staticfiles" / "admin" / "css" / "base.css").is_file()


def test_gunicorn_serves_health_probes(project: Path, migrated: dict[str, str]) -> None:
    collected = manage(project, migrated, "collectstatic", "--noinput")
    assert collected.returncode == 0, collected.stderr
    with gunicorn(project, migrated) as server:
        client = server.client
        live = client.get("/healthz")
        assert live.status_code == 200
        assert live.json() == {"status": "ok", "release": RELEASE["release_id"]}

        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ok"
        assert (body["release"], body["git_sha"]) == (RELEASE["release_id"], RELEASE["git_sha"])
        assert body["checks"]["database"]["ok"] is True
        assert body["checks"]["migrations"]["ok"] is True
        assert body["checks"]["migrations"]["pending"] == 0
        # No CACHE_URL: the per-process memory cache has nothing to check.
        assert set(body["checks"]) == {"database", "migrations", "broker"}
        assert body["checks"]["broker"]["ok"] is True

        # SSL redirect is on for pages, yet the proxied probe is answered directly.
        page = client.get("/")
        assert page.status_code == 301
        assert page.headers["location"] == f"https://{HOST}/"
        proxied = client.get("/readyz", headers={"X-Forwarded-Proto": "https"})
        assert proxied.status_code == 200, proxied.text
        assert "max-age=3600" in proxied.headers["strict-transport-security"]

        # The answer names one collected CSS file, and the app itself serves it.
        assert body["static"] == "/static/admin/css/base.css"
        css = client.get(body["static"], headers={"X-Forwarded-Proto": "https"})
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert "body" in css.text


def test_readyz_reports_unapplied_migrations(project: Path, env: dict[str, str]) -> None:
    fresh = env | {"DATABASE_URL": f"sqlite:///{project.parent / 'fresh.sqlite3'}"}
    with gunicorn(project, fresh) as server:
        ready = server.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["ok"] is True
    migrations = ready.json()["checks"]["migrations"]
    assert migrations["ok"] is False
    assert migrations["pending"] > 0
    assert migrations["error"].startswith("unapplied migrations: contenttypes.0001_initial")


@pytest.mark.parametrize("hung", [False, True], ids=["refused", "hung"])
def test_readyz_fails_fast_when_database_is_down(
    project: Path, env: dict[str, str], hung: bool
) -> None:
    # The app cannot even boot with a postgres DATABASE_URL without the driver.
    pytest.importorskip("psycopg", reason="needs psycopg[binary] in the venv")
    password = "do-not-leak-" + secrets.token_hex(8)
    # Port 1 refuses; a listener that never accepts completes the handshake and then
    # never answers, like a hung database.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1] if hung else 1
        down = env | {"DATABASE_URL": f"postgres://app:{password}@127.0.0.1:{port}/app"}
        with gunicorn(project, down) as server:
            started = time.monotonic()
            ready = server.client.get("/readyz")
            elapsed = time.monotonic() - started
    assert ready.status_code == 503
    assert elapsed < 4.5  # RELEASEBOOK_CHECK_TIMEOUT is 3 s
    body = ready.json()
    assert (body["status"], body["release"]) == ("fail", RELEASE["release_id"])
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["database"]["error"]
    assert body["checks"]["migrations"]["ok"] is False
    assert password not in ready.text
