"""releasebook.django in the example project, against real PostgreSQL and Redis.

The example runs as a host runs it (a temp copy, prod settings, real gunicorn and
manage.py processes) on a fresh database, with Redis as cache and Celery broker.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from psycopg import sql
from test_example_app import RELEASE, Server, copy_project, gunicorn, manage, prod_env

from releasebook.django.redact import redact
from releasebook.django.release import DEV_RELEASE, read_manifest
from releasebook.django.requestid import accept_request_id

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/0"
CHECK_TIMEOUT = 3.0  # RELEASEBOOK_CHECK_TIMEOUT in example/config/settings/base.py
ALL_CHECKS = {"database", "migrations", "cache", "broker"}
SIGNED_IN_SESSION = """
from django.contrib import auth
from django.contrib.sessions.backends.db import SessionStore
user = auth.get_user_model().objects.create_user("reader")
session = SessionStore()
session[auth.SESSION_KEY] = str(user.pk)
session[auth.BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[auth.HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(user.pk, session.session_key)
"""


def _admin(statement: sql.Composed) -> None:
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"releasebook_test_{secrets.token_hex(6)}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("django-app"))


@pytest.fixture(scope="module")
def env(project: Path, database: str) -> dict[str, str]:
    """Everything up: PostgreSQL migrated, Redis as cache and broker."""
    environ = prod_env(project) | {
        "DATABASE_URL": database,
        "CACHE_URL": REDIS,
        "CELERY_BROKER_URL": REDIS,
    }
    result = manage(project, environ, "migrate", "--noinput")
    assert result.returncode == 0, result.stdout + result.stderr
    return environ


@pytest.fixture(scope="module")
def server(project: Path, env: dict[str, str]) -> Iterator[Server]:
    with gunicorn(project, env) as running:
        yield running


def timed_readyz(server: Server, request_id: str = "-") -> tuple[httpx.Response, float]:
    headers = {"X-Forwarded-Proto": "https", "X-Request-ID": request_id}
    started = time.monotonic()
    response = server.client.get("/readyz", headers=headers)
    return response, time.monotonic() - started


def access_line(server: Server, request_id: str, logger: str = "releasebook.access") -> str:
    """The line ``logger`` wrote for ``request_id``, waiting briefly for it to be flushed."""
    deadline = time.monotonic() + 5
    while True:
        for line in server.log().splitlines():
            if f" {logger} " in line and f"request_id={request_id}" in line:
                return line
        assert time.monotonic() < deadline, f"no access line for {request_id}:\n{server.log()}"
        time.sleep(0.05)


def test_readyz_lists_every_check_when_all_is_up(server: Server) -> None:
    ready, _ = timed_readyz(server)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ok"
    assert (body["release"], body["git_sha"]) == (RELEASE["release_id"], RELEASE["git_sha"])
    assert set(body["checks"]) == ALL_CHECKS
    for name, check in body["checks"].items():
        assert check["ok"] is True, name
        assert isinstance(check["duration_ms"], int | float), name
        assert 0 <= check["duration_ms"] < CHECK_TIMEOUT * 1000, name
        assert "error" not in check, name


@pytest.mark.parametrize(
    ("variable", "failing"),
    [("DATABASE_URL", {"database", "migrations"}), ("REDIS", {"cache", "broker"})],
    ids=["database-down", "redis-down"],
)
def test_readyz_fails_within_its_timeout_when_a_dependency_is_down(
    project: Path, env: dict[str, str], variable: str, failing: set[str]
) -> None:
    password = "do-not-leak-" + secrets.token_hex(8)
    if variable == "DATABASE_URL":
        down = {"DATABASE_URL": f"postgres://postgres:{password}@127.0.0.1:1/app"}
    else:
        closed = f"redis://:{password}@127.0.0.1:1/0"
        down = {"CACHE_URL": closed, "CELERY_BROKER_URL": closed}
    request_id = "probe-" + secrets.token_hex(4)
    with gunicorn(project, env | down) as server:
        ready, elapsed = timed_readyz(server, request_id)
        live = server.client.get("/healthz")
        # Django logs the 503 after the middleware returned; the id is still on it.
        assert access_line(server, request_id, logger="django.request")
    assert ready.status_code == 503, ready.text
    assert elapsed < CHECK_TIMEOUT + 2
    body = ready.json()
    assert (body["status"], body["release"]) == ("fail", RELEASE["release_id"])
    assert set(body["checks"]) == ALL_CHECKS
    assert {name for name, check in body["checks"].items() if not check["ok"]} == failing
    for name in failing:
        assert body["checks"][name]["error"], name
    assert password not in ready.text
    # Liveness depends on nothing, so a dependency outage never restarts the process.
    assert live.status_code == 200
    assert live.json() == {"status": "ok", "release": RELEASE["release_id"]}


def test_readyz_is_bounded_when_redis_hangs(project: Path, env: dict[str, str]) -> None:
    # A listener that never accepts completes the TCP handshake and then never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hung = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        with gunicorn(project, env | {"CELERY_BROKER_URL": hung, "CACHE_URL": hung}) as server:
            ready, elapsed = timed_readyz(server)
    assert ready.status_code == 503, ready.text
    assert elapsed < CHECK_TIMEOUT + 2
    checks = ready.json()["checks"]
    assert (checks["cache"]["ok"], checks["broker"]["ok"]) == (False, False)
    assert checks["database"]["ok"] is True


def test_request_id_is_echoed_when_valid(server: Server) -> None:
    request_id = "lb-7f3a.1:42_" + secrets.token_hex(4)
    response = server.client.get("/healthz", headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    line = access_line(server, request_id)
    assert "method=GET path=/healthz status=200 duration_ms=" in line
    assert "user_id=-" in line
    assert line.count("request_id=") == 1, line  # once, from the format


@pytest.mark.parametrize("incoming", [None, "x" * 129, "has space", "semi;colon", ""])
def test_request_id_is_generated_when_missing_or_invalid(
    server: Server, incoming: str | None
) -> None:
    headers = {} if incoming is None else {"X-Request-ID": incoming}
    response = server.client.get("/healthz", headers=headers)
    generated = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert generated != incoming
    access_line(server, generated)


def test_access_log_has_no_query_string_headers_or_cookies(server: Server) -> None:
    token = "tok-" + secrets.token_hex(8)
    response = server.client.get(
        f"/readyz?access_token={token}",
        headers={
            "X-Forwarded-Proto": "https",
            "Authorization": f"Bearer {token}-auth",
            "Cookie": f"sessionid={token}-cookie",
        },
    )
    assert response.status_code == 200, response.text
    line = access_line(server, response.headers["x-request-id"])
    # Once: the formatter's request_id (the record's), not repeated in the message.
    assert line.count(f"request_id={response.headers['x-request-id']}") == 1
    assert line.count("request_id=") == 1
    assert "path=/readyz status=200" in line
    assert token not in server.log()
    assert "?" not in line


def test_access_log_names_the_signed_in_user(
    project: Path, env: dict[str, str], server: Server
) -> None:
    made = manage(project, env, "shell", "--verbosity", "0", "-c", SIGNED_IN_SESSION)
    assert made.returncode == 0, made.stdout + made.stderr
    user_id, session_key = made.stdout.split()
    response = server.client.get(
        "/healthz", headers={"X-Forwarded-Proto": "https", "Cookie": f"sessionid={session_key}"}
    )
    line = access_line(server, response.headers["x-request-id"])
    assert line.rstrip().endswith(f"user_id={user_id}") or f"user_id={user_id} " in line
    assert session_key not in server.log()


def test_readiness_command_passes_with_everything_up(project: Path, env: dict[str, str]) -> None:
    result = manage(project, env, "readiness")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ["env", *sorted(ALL_CHECKS)]:
        assert re.search(rf"^ok +{name} \(", result.stdout, re.MULTILINE), result.stdout

    as_json = manage(project, env, "readiness", "--json")
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["ok"] is True
    assert report["checks"][0]["name"] == "env"
    assert {check["name"] for check in report["checks"]} == {"env", *ALL_CHECKS}
    for check in report["checks"]:
        assert set(check) == {"name", "ok", "duration_ms", "message"}
        assert check["ok"] is True


def test_readiness_command_fails_when_the_database_is_down(
    project: Path, env: dict[str, str]
) -> None:
    password = "do-not-leak-" + secrets.token_hex(8)
    down = env | {"DATABASE_URL": f"postgres://postgres:{password}@127.0.0.1:1/app"}
    result = manage(project, down, "readiness", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert checks["database"]["ok"] is False
    assert checks["cache"]["ok"] is True
    assert password not in result.stdout + result.stderr


def test_readiness_command_names_a_missing_variable_but_no_value(
    project: Path, env: dict[str, str]
) -> None:
    missing = "RELEASEBOOK_TEST_MISSING_" + secrets.token_hex(4).upper()
    result = manage(project, env, "readiness", "--require", missing, "--require", "CACHE_URL")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert re.search(rf"^FAIL env \(.*{missing}", result.stdout, re.MULTILINE), output
    # RELEASEBOOK_REQUIRED_ENV (prod settings) and --require are both named, never valued.
    for name in ("DJANGO_SECRET_KEY", "DATABASE_URL", "CACHE_URL"):
        assert env[name] not in output
    assert "DJANGO_SECRET_KEY" not in output  # set, so only the missing one is named
    assert "not ready: env" in result.stderr


@pytest.mark.parametrize(
    "args", [("--bogus",), ("--require", "not a name"), ("--require",)], ids=str
)
def test_readiness_command_exits_2_on_bad_usage(
    project: Path, env: dict[str, str], args: tuple[str, ...]
) -> None:
    result = manage(project, env, "readiness", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""


def test_redact_masks_url_passwords_and_known_secrets() -> None:
    message = "cannot reach redis://:p%40ss@cache:6379/0 or amqp://app:hunter2@mq// (hunter2)"
    assert redact(message, {"hunter2"}) == (
        "cannot reach redis://:***@cache:6379/0 or amqp://app:***@mq// (***)"
    )


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [("abc-123_X.y:z", True), ("a" * 128, True), ("a" * 129, False), ("a\nb", False), ("", False)],
)
def test_accept_request_id(incoming: str, kept: bool) -> None:
    assert (accept_request_id(incoming) == incoming) is kept


def test_release_manifest_missing_is_dev_and_malformed_is_refused(tmp_path: Path) -> None:
    assert read_manifest(tmp_path / "release.json") == DEV_RELEASE
    (tmp_path / "release.json").write_text('{"release_id": "r1"}')
    with pytest.raises(ImproperlyConfigured, match="git_sha"):
        read_manifest(tmp_path / "release.json")
    (tmp_path / "release.json").write_text(json.dumps(RELEASE))
    assert read_manifest(tmp_path / "release.json").release_id == RELEASE["release_id"]
