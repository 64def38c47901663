"""The readiness gate: registry, the host-side script, the controller's report, the document.

The script is run as a host runs it: copied into a release laid out like releasebook's
(``media`` and ``.env`` linked into ``shared/``), with ``sys.executable`` as the
release's interpreter, real PostgreSQL and Redis on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import fresh_database

from releasebook.errors import GateOutputError, UsageError
from releasebook.gate import db_backup, gate, registry
from releasebook.gate.command import (
    GATE_COMMAND,
    GATE_IN_RELEASE,
    GATE_SOURCE,
    PENDING_MIGRATIONS,
    STATIC_INPUTS,
    validate_skips,
)
from releasebook.gate.report import (
    format_table,
    gate_passed,
    host_failed,
    parse_gate_output,
    summary,
)
from releasebook.inventory import load_inventory
from releasebook.plan import gate_argv, gate_options
from releasebook.plan.values import app_option
from releasebook.quoting import Raw, render_command
from releasebook.render.readiness import render_readiness
from releasebook.runbooks.release import RELEASE_STEPS

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example"
MISCONFIGURED = Path(__file__).resolve().parent / "fixtures" / "misconfigured"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
HOST = "app.example.test"
PROD = "config.settings.prod"
REQUIRED = ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "CELERY_BROKER_URL")
SLOW = ("RB-WEB-001", "RB-STATIC-002", "RB-SEC-012")  # skipped where they are not the point


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _need(port: int, what: str) -> None:
    if not _listening(port):
        reason = f"{what} is not listening on 127.0.0.1:{port}"
        if _in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


# --- a release laid out as releasebook lays it out -----------------------------------


def make_release(root: Path) -> Path:
    """``<root>/deploy/releases/<id>``: the example, gate.py, links into ``shared/``."""
    deploy = root / "deploy"
    release = deploy / "releases" / "20250101-000000-000"
    shutil.copytree(
        EXAMPLE,
        release,
        ignore=shutil.ignore_patterns("__pycache__", "staticfiles", "media", "var", "*.sqlite3"),
    )
    (release / ".releasebook").mkdir()
    shutil.copy(GATE_SOURCE, release / GATE_IN_RELEASE)
    (deploy / "shared" / "media").mkdir(parents=True)
    (deploy / "shared" / ".env").write_text("SOMETHING=from-the-shared-env-file\n")
    (release / "media").symlink_to(deploy / "shared" / "media")
    (release / ".env").symlink_to(deploy / "shared" / ".env")
    (release / "release.json").write_text(
        json.dumps({"release_id": "20250101-000000-000", "git_sha": "0" * 40})
    )
    return release


def base_env() -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "SITE_", "MISCONFIGURED_"))
        and k != "PYTHONPATH"
    }
    return inherited | {"PYTHONDONTWRITEBYTECODE": "1"}


def run_gate(
    release: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, GATE_IN_RELEASE, "--json", *args],
        cwd=release,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    return done, json.loads(done.stdout)


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in report["results"]}


def standard_args(release: Path) -> list[str]:
    args = ["--expect-settings", PROD, "--min-free-mb", "1", "--deploy-path", str(release)]
    for name in REQUIRED:
        args += ["--require", name]
    return args


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    _need(5432, "PostgreSQL")
    with fresh_database("rb_gate") as url:
        yield url


@pytest.fixture(scope="module")
def good_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def good_env(database: str) -> dict[str, str]:
    _need(6379, "Redis")
    return base_env() | {
        "DJANGO_SETTINGS_MODULE": PROD,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": HOST,
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://{HOST}",
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    }


@pytest.fixture(scope="module")
def good_run(
    good_release: Path, good_env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    return run_gate(good_release, good_env, *standard_args(good_release))


# --- the example's production settings pass ------------------------------------------


def test_example_prod_settings_pass_the_whole_gate(
    good_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
    good_env: dict[str, str],
    good_release: Path,
) -> None:
    done, report = good_run
    problems = [(r["id"], r["message"]) for r in report["results"] if r["status"] != "pass"]
    assert problems == []
    assert done.returncode == 0
    assert report["ok"] is True
    assert [r["id"] for r in report["results"]] == [c.id for c in registry.CHECKS]
    for result in report["results"]:
        assert set(result) == {"id", "title", "severity", "status", "message", "duration_ms"}
        assert isinstance(result["duration_ms"], float)
    results = by_id(report)
    assert "notes.0001_initial" in report["pending_migrations"]
    assert "notes.0001_initial" in results["RB-DB-004"]["message"]
    # The plan it found, kept in the release for the backup before migrate.
    recorded = (good_release / PENDING_MIGRATIONS).read_text().splitlines()
    assert recorded == report["pending_migrations"]
    assert "redis 127.0.0.1:6379 answered PING" in results["RB-CELERY-001"]["message"]
    assert "outside the release" in results["RB-MEDIA-001"]["message"]
    for name in ("DJANGO_SECRET_KEY", "DATABASE_URL"):
        assert good_env[name] not in done.stdout + done.stderr


def test_gunicorn_loads_its_configuration_and_the_app_in_the_gates_process(
    good_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, report = good_run
    result = by_id(report)["RB-WEB-001"]
    assert result["status"] == "pass"
    assert result["message"] == "gunicorn's configuration and config.wsgi:application loaded"


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (
            ("config/wsgi.py", "import missing_dependency\n"),
            "gunicorn config.wsgi:application: ModuleNotFoundError: No module named "
            "'missing_dependency'",
        ),
        (("config/wsgi.py", "app = None\n"), "Failed to find attribute 'application'"),
        (
            ("gunicorn.conf.py", "workers = 'many'\n"),
            "Invalid value for workers: many; ValueError: invalid literal for int()",
        ),
        (("gunicorn.conf.py", "workers = (\n"), "SyntaxError"),
        (
            ("gunicorn.conf.py", "pidfile = '/srv/app/shared/gunicorn.pid'\n"),
            "its configuration sets a pidfile (/srv/app/shared/gunicorn.pid)",
        ),
    ],
    ids=["app-import", "no-callable", "bad-setting", "config-syntax", "pidfile"],
)
def test_gunicorn_names_what_does_not_load(
    tmp_path: Path, good_env: dict[str, str], broken: tuple[str, str], problem: str
) -> None:
    release = make_release(tmp_path)
    path, text = broken
    (release / path).write_text(text)
    done, report = run_gate(
        release, good_env, *standard_args(release), "--skip=RB-STATIC-002", "--skip=RB-SEC-012"
    )
    result = by_id(report)["RB-WEB-001"]
    assert (done.returncode, result["status"]) == (1, "fail"), result
    assert problem in result["message"], result["message"]
    assert Path.cwd() != release  # the gate's own working directory is unchanged


def _static_inputs(release: Path, env: dict[str, str], *args: str) -> str:
    skips = [f"--skip={c}" for c, _, _ in gate.TABLE if c != "RB-STATIC-002"]
    _, report = run_gate(release, env, *args, *skips)
    assert by_id(report)["RB-STATIC-002"]["status"] == "pass", report
    return (release / STATIC_INPUTS).read_text()


def test_the_gate_records_what_collectstatic_would_read(
    tmp_path: Path, good_env: dict[str, str]
) -> None:
    first = make_release(tmp_path / "a")
    same = make_release(tmp_path / "b")
    recorded = _static_inputs(first, good_env)
    assert recorded.startswith("root staticfiles\ndigest ")
    assert _static_inputs(same, good_env) == recorded  # another directory, the same inputs

    css = next((same / "notes" / "static").rglob("*.css"))
    css.write_text(css.read_text() + "\n/* changed */\n")
    assert _static_inputs(same, good_env) != recorded
    css.write_text(css.read_text().replace("\n/* changed */\n", ""))
    assert _static_inputs(same, good_env) == recorded
    (same / "notes" / "static" / "added.js").write_text("// new\n")
    assert _static_inputs(same, good_env) != recorded
    (same / "notes" / "static" / "added.js").unlink()
    assert _static_inputs(same, good_env) == recorded


def test_missing_required_variable_is_named_without_values(
    good_release: Path, good_env: dict[str, str]
) -> None:
    env = good_env | {"EMPTY_ONE": ""}
    args = [*standard_args(good_release), "--require", "NOT_SET_ANYWHERE", "--require", "EMPTY_ONE"]
    done, report = run_gate(good_release, env, *args, *[f"--skip={i}" for i in SLOW])
    result = by_id(report)["RB-ENV-001"]
    assert done.returncode == 1
    assert result["status"] == "fail"
    assert result["message"] == "missing or empty: NOT_SET_ANYWHERE, EMPTY_ONE"
    assert good_env["DJANGO_SECRET_KEY"] not in done.stdout


def test_settings_that_do_not_load_fail_everything_that_needs_them(
    good_release: Path, good_env: dict[str, str]
) -> None:
    env = {k: v for k, v in good_env.items() if k != "DJANGO_SECRET_KEY"}
    done, report = run_gate(good_release, env, "--skip", "RB-WEB-001")
    results = by_id(report)
    assert results["RB-ENV-003"]["message"] == (
        "ImproperlyConfigured: environment variable DJANGO_SECRET_KEY is required"
    )
    assert results["RB-SEC-002"]["message"] == ("not checked: RB-ENV-003 failed")
    assert results["RB-DISK-001"]["status"] == "pass"
    assert done.returncode == 1


# --- the misconfigured settings fail, with the right ids -----------------------------


def _fake_aws_key() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "AKIA" + "".join(random.choices(alphabet, k=16))


@pytest.fixture(scope="module")
def bad_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    release = make_release(tmp_path_factory.mktemp("bad"))
    aws = _fake_aws_key()
    literal = secrets.token_urlsafe(40)
    env_file_value = secrets.token_urlsafe(20)
    (release / ".env").unlink()
    (release / ".env").write_text(f"DJANGO_SECRET_KEY={env_file_value}\n")
    (release / "notes" / "leak.py").write_text(f'AWS_ACCESS_KEY_ID = "{aws}"\n')
    with (release / "config" / "settings" / "base.py").open("a") as f:
        f.write(f'\nSECRET_KEY = "{literal}"\n')
        f.write('SECRET_KEY = "django-insecure-0123456789abcdefghijklmnopqrstuvwxyz"\n')
    return release, [aws, literal, env_file_value]


def bad_env(**extra: str) -> dict[str, str]:
    return (
        base_env()
        | {
            "DJANGO_SETTINGS_MODULE": "misconfigured_settings",
            "PYTHONPATH": str(MISCONFIGURED),
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        }
        | extra
    )


EXPECTED_FAILURES = {
    "RB-ENV-002": "expected config.settings.prod",
    "RB-SEC-001": "security.W004",
    "RB-SEC-002": "DEBUG is True",
    "RB-SEC-003": "'*'",
    "RB-SEC-004": "not https://",
    "RB-SEC-005": "CORS_ALLOW_ALL_ORIGINS is True",
    "RB-SEC-006": "SESSION_COOKIE_SECURE, CSRF_COOKIE_SECURE, SESSION_COOKIE_HTTPONLY",
    "RB-SEC-007": "'None' but not Secure",
    "RB-SEC-008": "neither SECURE_SSL_REDIRECT nor SECURE_PROXY_SSL_HEADER",
    "RB-SEC-009": "SECURE_HSTS_SECONDS is not set",
    "RB-SEC-011": ".env (a regular file)",
    "RB-SEC-012": "notes/leak.py:1 AWS access key id",
    "RB-STATIC-001": "STATIC_ROOT",
    "RB-STATIC-002": "STATIC_ROOT",
    "RB-MEDIA-001": "inside the release",
    "RB-DB-001": "sqlite3",
}


def test_misconfigured_settings_fail_each_check_with_its_id(
    bad_release: tuple[Path, list[str]],
) -> None:
    release, planted = bad_release
    env = bad_env()
    done, report = run_gate(release, env, *standard_args(release), "--skip", "RB-WEB-001")
    results = by_id(report)
    failed = {i for i, r in results.items() if r["status"] == "fail"}
    # Required names unset here: only CELERY/DATABASE/ALLOWED_HOSTS are missing.
    assert failed - {"RB-ENV-001"} == set(EXPECTED_FAILURES)
    for check_id, text in EXPECTED_FAILURES.items():
        assert text in results[check_id]["message"], check_id
    deploy_findings = results["RB-SEC-001"]["message"]
    for finding in ("W004", "W008", "W012", "W016", "W018"):
        assert f"security.{finding}" in deploy_findings
    assert results["RB-DB-001"]["severity"] == "warning"
    assert results["RB-SEC-012"]["message"].count("SECRET_KEY literal") == 1
    assert "config/settings/base.py:" in results["RB-SEC-012"]["message"]
    assert results["RB-ENV-001"]["message"] == (
        "missing or empty: DJANGO_ALLOWED_HOSTS, DATABASE_URL, CELERY_BROKER_URL"
    )
    assert done.returncode == 1
    assert report["ok"] is False
    for secret in [*planted, env["DJANGO_SECRET_KEY"]]:
        assert secret not in done.stdout
        assert secret not in done.stderr


def test_hsts_preload_for_two_years_is_a_warning(bad_release: tuple[Path, list[str]]) -> None:
    release, _planted = bad_release
    env = bad_env(MISCONFIGURED_HSTS="preload")
    _done, report = run_gate(release, env, *[f"--skip={i}" for i in SLOW])
    results = by_id(report)
    assert results["RB-SEC-009"]["status"] == "pass"
    warning = results["RB-SEC-010"]
    assert (warning["status"], warning["severity"]) == ("fail", "warning")
    assert "(730 days) with includeSubDomains and preload" in warning["message"]
    assert "Start small" in warning["message"]


# --- brokers, timeouts, --skip, usage ------------------------------------------------


def test_down_broker_fails_and_skip_is_reported(
    good_release: Path, good_env: dict[str, str]
) -> None:
    env = good_env | {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    done, report = run_gate(good_release, env, *[f"--skip={i}" for i in SLOW])
    results = by_id(report)
    broker = results["RB-CELERY-001"]
    assert broker["status"] == "fail"
    assert "redis 127.0.0.1:1: ConnectionRefusedError" in broker["message"]
    assert broker["duration_ms"] < 10_000
    for check_id in SLOW:
        assert (results[check_id]["status"], results[check_id]["message"]) == (
            "skip",
            "skipped by --skip",
        )
    assert done.returncode == 1


def test_silent_broker_fails_within_its_timeout(
    good_release: Path, good_env: dict[str, str]
) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        env = good_env | {"CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0"}
        started = time.monotonic()
        _done, report = run_gate(
            good_release, env, "--timeout", "RB-CELERY-001=1", *[f"--skip={i}" for i in SLOW]
        )
        elapsed = time.monotonic() - started
    broker = by_id(report)["RB-CELERY-001"]
    assert broker["status"] == "fail"
    assert f"redis 127.0.0.1:{port}: no answer within 0.8s" in broker["message"]
    assert broker["duration_ms"] <= 1100
    assert elapsed < 30


def test_skipping_the_failing_check_lets_the_gate_pass(
    good_release: Path, good_env: dict[str, str]
) -> None:
    env = good_env | {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    done, report = run_gate(
        good_release, env, "--skip", "RB-CELERY-001", *[f"--skip={i}" for i in SLOW]
    )
    assert by_id(report)["RB-CELERY-001"]["status"] == "skip"
    assert (done.returncode, report["ok"]) == (0, True)


@pytest.mark.parametrize(
    "args",
    [
        ["--skip", "RB-NOPE-001"],
        ["--require", "NOT A NAME"],
        ["--timeout", "RB-DB-002=soon"],
        ["--min-free-mb", "lots"],
    ],
)
def test_bad_usage_exits_2(good_release: Path, args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, GATE_IN_RELEASE, "--json", *args],
        cwd=good_release,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""


def test_a_hung_check_is_abandoned_at_its_timeout(tmp_path: Path) -> None:
    ctx = gate.Ctx(tmp_path, None, (), 0, tmp_path, None)

    def hang(ctx: gate.Ctx, timeout: float) -> gate.Outcome:
        time.sleep(5)
        return True, "never"

    started = time.monotonic()
    (passed, message), duration_ms = gate.run_bounded(ctx, hang, 0.2, "hang")
    assert (passed, message) == (False, "timed out: no answer within 0.2s")
    assert duration_ms < 1000
    assert time.monotonic() - started < 1


# --- redaction and the secret scanner ------------------------------------------------


def test_redact_masks_url_passwords_and_known_secrets() -> None:
    text = "failed: postgres://app:hunter2hunter2@db:5432/app token=abcdef123456"
    out = gate.redact(text, {"abcdef123456"})
    assert out == "failed: postgres://app:***@db:5432/app token=***"


def test_scanner_finds_each_kind_and_spares_placeholders() -> None:
    token = "ghp_" + "a1B2" * 9
    pat = "github_pat_" + "x" * 22 + "_" + "Y7" * 30
    slack = "xoxb-" + "1234567890-abcdefABCDEF"
    real = secrets.token_urlsafe(40)
    text = "\n".join(
        [
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            f"TOKEN = '{token}'",
            f"PAT = '{pat}'",
            f"SLACK = '{slack}'",
            f'SECRET_KEY = "{real}"',
            'SECRET_KEY = "django-insecure-abcdefghijklmnopqrstuvwxyz0123456789"',
            'SECRET_KEY = "dev-only-insecure-key-never-use-in-production"',
            'SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]',
            "AWS = 'AKIAIOSFODNN7EXAMPLE'",
            f"IGNORED = '{token}'  # releasebook: allow-secret",
        ]
    )
    found = list(gate._scan_text(text, python=True))
    assert found == [
        (1, "private key block"),
        (2, "GitHub token"),
        (3, "GitHub token"),
        (4, "Slack token"),
        (5, "SECRET_KEY literal"),
    ]
    assert list(gate._scan_text(GATE_SOURCE.read_text(), python=True)) == []


# --- registry and the script agree ---------------------------------------------------


def test_registry_ids_are_unique_and_well_formed() -> None:
    ids = [c.id for c in registry.CHECKS]
    assert len(ids) == len(set(ids))
    assert all(registry.ID_PATTERN.match(i) for i in ids)
    assert all(c.section in registry.SECTIONS for c in registry.CHECKS)
    assert all(c.how.endswith(".") and c.fix.endswith(".") for c in registry.CHECKS)


def test_gate_table_equals_the_registry() -> None:
    expected = [(c.id, c.title, c.severity) for c in registry.CHECKS]
    assert list(gate.TABLE) == expected
    assert list(gate.RUNNERS) == [c.id for c in registry.CHECKS]
    assert gate.STATIC_INPUTS == STATIC_INPUTS
    assert gate.PENDING_MIGRATIONS == PENDING_MIGRATIONS
    assert f".releasebook/{db_backup.PENDING_MIGRATIONS}" == PENDING_MIGRATIONS


def test_gate_lists_its_checks(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(GATE_SOURCE), "--list", "--json"],
        cwd=tmp_path,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    expected = [{"id": c.id, "title": c.title, "severity": c.severity} for c in registry.CHECKS]
    assert json.loads(done.stdout) == expected


# --- the controller's side -----------------------------------------------------------


def _doc(*results: tuple[str, str, str, str]) -> str:
    rows = [
        {
            "id": check_id,
            "title": registry.get(check_id).title,
            "severity": registry.get(check_id).severity,
            "status": status,
            "message": message,
            "duration_ms": duration,
        }
        for check_id, status, message, duration in (
            (r[0], r[1], r[2], float(r[3])) for r in results
        )
    ]
    ok = not any(r["status"] == "fail" and r["severity"] == "error" for r in rows)
    return json.dumps({"ok": ok, "version": 1, "pending_migrations": ["a.0001"], "results": rows})


def test_report_parses_and_formats_every_host(
    good_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    good = parse_gate_output("web1", good_run[0].stdout)
    long = "a finding " * 40
    bad = parse_gate_output(
        "prod-web2",
        "launcher noise\n"
        + _doc(
            ("RB-SEC-002", "fail", "DEBUG is True", "1.5"),
            ("RB-DB-001", "fail", "default uses sqlite3", "0.2"),
            ("RB-SEC-001", "fail", long, "2300"),
            ("RB-WEB-001", "skip", "skipped by --skip", "0"),
        ),
    )
    reports = [good, bad, host_failed("prod-worker1", "python3: not found")]
    assert good.ok and not bad.ok
    assert [r.id for r in bad.blocking] == ["RB-SEC-002", "RB-SEC-001"]
    assert bad.pending_migrations == ("a.0001",)
    assert not gate_passed(reports)
    assert gate_passed([good])

    table = format_table(reports, width=100)
    lines = table.splitlines()
    assert lines[0].split() == ["check", "host", "status", "message", "time"]
    assert all(len(line) <= 100 for line in lines)
    status_col = lines[0].index("status")
    rows = [line for line in lines[2:] if line[:1].strip()]
    assert {line[status_col : status_col + 4] for line in rows} <= {"pass", "FAIL", "warn", "skip"}
    assert lines[2].startswith("gate") and "python3: not found" in lines[2]
    assert any("RB-DB-001" in line and "warn" in line for line in lines)
    sec001 = next(i for i, line in enumerate(lines) if "RB-SEC-001" in line and "prod-web2" in line)
    assert lines[sec001].rstrip().endswith("2.3 s")
    assert lines[sec001 + 2].rstrip().endswith("…")
    assert not lines[sec001 + 3].startswith(" ")

    problems = format_table(reports, problems_only=True)
    assert "web1 " not in problems.replace("prod-web1", "")
    line = summary(reports)
    assert line.startswith("readiness gate failed: no gate report from prod-worker1; RB-SEC-001")
    assert "RB-SEC-002 (DEBUG is off) on prod-web2" in line
    assert line.endswith("(1 warning(s), 1 skipped)")
    assert summary([good]) == "readiness gate passed on 1 host(s)"


@pytest.mark.parametrize(
    ("stdout", "problem"),
    [
        ("Traceback (most recent call last):", "no JSON report"),
        ('{"ok": true}', "'results' list"),
        ('{"ok": true, "results": [{"id": "RB-X"}]}', "results[0]"),
        (_doc(("RB-SEC-002", "fail", "x", "1")).replace('"ok": false', '"ok": true'), "disagrees"),
    ],
)
def test_malformed_gate_output_names_the_host(stdout: str, problem: str) -> None:
    with pytest.raises(GateOutputError, match=f"^web9: .*{re.escape(problem)}"):
        parse_gate_output("web9", stdout)


def test_gate_command_for_the_plan(tmp_path: Path) -> None:
    env = _inventory(tmp_path)
    options = gate_options(env, skip=["RB-DB-001", "RB-DB-001"])
    assert options == (
        " --require DJANGO_SECRET_KEY --require DATABASE_URL --require WEBHOOK_ACME_SECRET"
        " --skip RB-DB-001"
    )
    command = render_command(
        GATE_COMMAND,
        {
            "release_dir": Path("/srv/x y/releases/1"),
            "launcher": Path("/srv/x y/releases/1/.releasebook/with-env"),
            "settings_module": env.app.settings_module,
            "app_option": Raw(app_option(env)),
            "min_free_mb": env.min_free_mb,
            "deploy": Path("/srv/x y"),
            "gate_options": Raw(options),
        },
    )
    assert command.startswith(
        "cd '/srv/x y/releases/1' && '/srv/x y/releases/1/.releasebook/with-env' "
        "venv/bin/python .releasebook/gate.py --json "
        "--expect-settings config.settings.prod --wsgi config.wsgi:application "
        "--min-free-mb 750 --deploy-path '/srv/x y' --require DJANGO_SECRET_KEY"
    )
    argv = gate_argv(env, Path("/srv/x y"), skip=["RB-WEB-001"])
    assert argv[:3] == ("venv/bin/python", ".releasebook/gate.py", "--json")
    assert argv[-2:] == ("--skip", "RB-WEB-001")
    with pytest.raises(UsageError, match="RB-NOPE-001"):
        validate_skips(["RB-DB-001", "RB-NOPE-001"])


# --- the readiness document ----------------------------------------------------------

VALUES = {
    "DJANGO_ALLOWED_HOSTS": "shop-7f3a.internal.test",
    "DATABASE_URL": "postgres://app:pw-5b7e91@db-4c2d.internal:5432/shop",
    "WEBHOOK_ACME_SECRET": "whsec_8d1c9e0b7a6f",
    "CELERY_BROKER_FOLDER": "{deploy}/shared/broker-91ab",
}


def _inventory(tmp_path: Path) -> Any:
    values = "\n".join(f"    {k}: {json.dumps(v)}" for k, v in VALUES.items())
    file = tmp_path / "inventories" / "docs.yml"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(
        f"""transport: local
app:
  source: example
  settings: config.settings.prod
  wsgi: config.wsgi:application
deploy: {{path: /srv/shop}}
disk: {{min_free_mb: 750}}
health: {{host_header: shop.example.test, timeout: 45}}
env:
  required: [DJANGO_SECRET_KEY, DATABASE_URL, WEBHOOK_ACME_SECRET]
  generate: [DJANGO_SECRET_KEY]
  values:
{values}
hosts:
  shop-web1: {{roles: [web, migrate], bind: "127.0.0.21:8000"}}
  shop-worker1: {{roles: [worker, beat]}}
"""
    )
    return load_inventory(file, root=REPO)


def test_readiness_document_lists_every_check_and_no_value(tmp_path: Path) -> None:
    env = _inventory(tmp_path)
    doc = render_readiness(env)
    for check in registry.CHECKS:
        assert f"| `{check.id}` | {check.title} | {check.section} " in doc
    for value in VALUES.values():
        assert value not in doc
        for part in ("pw-5b7e91", "db-4c2d", "shop-7f3a", "whsec_8d1c9e0b7a6f", "broker-91ab"):
            assert part not in doc
    for number, step in enumerate(RELEASE_STEPS, start=1):
        assert f"| {number} | `{step.name}` | {step.title} |" in doc
    assert "| `WEBHOOK_ACME_SECRET` | yes | inventory `env.values`" in doc
    assert "| `DJANGO_SECRET_KEY` | yes | generated on each host" in doc
    assert "| `CELERY_BROKER_FOLDER` | no |" in doc
    assert (
        "curl -H 'Host: shop.example.test' -H 'X-Forwarded-Proto: https' "
        "http://127.0.0.21:8000/readyz"
    ) in doc
    for heading in ("Known risks", "Monitoring", "Rollback plan", "Health checks"):
        assert heading in doc
    assert doc.endswith("|\n")
