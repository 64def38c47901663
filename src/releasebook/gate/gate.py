#!/usr/bin/env python3
"""releasebook's readiness gate, run on each host inside a new release before it goes live.

Self-contained on purpose (the standard library and Django only): the build copies this
one file into the artifact as ``.releasebook/gate.py`` and each host runs it with the
release's own interpreter, settings and environment::

    cd <release_dir> && <with-env launcher> venv/bin/python .releasebook/gate.py --json \\
        --expect-settings config.settings.prod --require DJANGO_SECRET_KEY ... \\
        --min-free-mb 1024 --deploy-path /srv/app [--skip RB-XXX-000 ...]

Every check runs in its own daemon thread bounded by its own timeout, so a database or
broker that never answers fails its check instead of hanging the gate. With ``--json``
the only thing on stdout is one JSON document::

    {"ok": bool, "version": 1, "pending_migrations": ["app.0002_x", ...],
     "results": [{"id", "title", "severity", "status": "pass|fail|skip", "message",
                  "duration_ms"}]}

Exit status: 0 when no ``error`` check failed, 1 otherwise, 2 on bad usage. Values of
environment variables and secrets are never printed: names, kinds and file:line only,
and every message is redacted before it is written.

The ids, titles and severities below repeat ``releasebook.gate.registry`` (which this
script cannot import); releasebook's tests keep the two equal.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, unquote, urlsplit

VERSION = 1

# (id, title, severity): must equal releasebook.gate.registry.CHECKS.
TABLE: tuple[tuple[str, str, str], ...] = (
    ("RB-ENV-001", "Required environment variables are set", "error"),
    ("RB-ENV-002", "Production settings module", "error"),
    ("RB-ENV-003", "Settings load", "error"),
    ("RB-SEC-001", "Django deployment checks", "error"),
    ("RB-SEC-002", "DEBUG is off", "error"),
    ("RB-SEC-003", "ALLOWED_HOSTS lists real hosts", "error"),
    ("RB-SEC-004", "CSRF trusted origins are HTTPS", "error"),
    ("RB-SEC-005", "CORS is explicit", "error"),
    ("RB-SEC-006", "Cookies are Secure and HttpOnly", "error"),
    ("RB-SEC-007", "SameSite is set on cookies", "error"),
    ("RB-SEC-008", "HTTPS is enforced", "error"),
    ("RB-SEC-009", "HSTS is on", "error"),
    ("RB-SEC-010", "HSTS started small", "warning"),
    ("RB-SEC-011", "No env file inside the release", "error"),
    ("RB-SEC-012", "No committed secrets", "error"),
    ("RB-ERR-001", "Custom 404 and 500 pages", "error"),
    ("RB-STATIC-001", "STATIC_ROOT is set", "error"),
    ("RB-STATIC-002", "collectstatic works", "error"),
    ("RB-MEDIA-001", "Media on persistent storage", "error"),
    ("RB-DB-001", "Database is PostgreSQL", "warning"),
    ("RB-DB-002", "Database answers", "error"),
    ("RB-DB-003", "Models match migrations", "error"),
    ("RB-DB-004", "Migration plan", "error"),
    ("RB-CACHE-001", "Cache answers", "error"),
    ("RB-CELERY-001", "Celery broker reachable", "error"),
    ("RB-DISK-001", "Free disk space", "error"),
    ("RB-WEB-001", "gunicorn loads the app", "error"),
)

SETUP_ID = "RB-ENV-003"
SETUP_TIMEOUT = 30.0
MAX_MESSAGE = 2000
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HSTS_YEAR = 365 * 24 * 3600

Outcome = tuple[bool, str]


class Fail(Exception):
    """Raised by a check to fail with a message."""


@dataclass
class Ctx:
    project: Path
    expect_settings: str | None
    required: tuple[str, ...]
    min_free_mb: int
    deploy_path: Path
    wsgi: str | None
    django_ready: bool = False
    pending: list[str] = field(default_factory=list)


# --- helpers ----------------------------------------------------------------------


def _setting(name: str, default: Any = None) -> Any:
    from django.conf import settings

    return getattr(settings, name, default)


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text[:300]


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.relative_to(directory)
    except ValueError:
        return False
    return True


def _close_connections() -> None:
    from django.db import connections

    connections.close_all()


# --- environment ------------------------------------------------------------------


def check_required_env(ctx: Ctx, timeout: float) -> Outcome:
    missing = [name for name in ctx.required if not os.environ.get(name, "").strip()]
    if missing:
        return False, "missing or empty: " + ", ".join(missing)
    if not ctx.required:
        return True, "no variables required (pass --require NAME)"
    return True, f"{len(ctx.required)} set: " + ", ".join(ctx.required)


DEV_PARTS = frozenset({"dev", "develop", "development", "local", "test", "tests", "testing"})


def check_settings_module(ctx: Ctx, timeout: float) -> Outcome:
    module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    if not module:
        return False, "DJANGO_SETTINGS_MODULE is not set"
    if ctx.expect_settings and module != ctx.expect_settings:
        return False, f"DJANGO_SETTINGS_MODULE is {module}, expected {ctx.expect_settings}"
    dev = [part for part in module.lower().split(".") if part in DEV_PARTS]
    if dev:
        return False, f"DJANGO_SETTINGS_MODULE {module} names a development module ({dev[0]})"
    return True, f"DJANGO_SETTINGS_MODULE is {module}"


def setup_django(ctx: Ctx, timeout: float) -> Outcome:
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return False, "DJANGO_SETTINGS_MODULE is not set"
    project = str(ctx.project)
    if project not in sys.path:
        sys.path.insert(0, project)
    import django

    django.setup()
    ctx.django_ready = True
    return True, f"Django {django.get_version()} set up with {os.environ['DJANGO_SETTINGS_MODULE']}"


# --- security settings ------------------------------------------------------------


def check_deploy(ctx: Ctx, timeout: float) -> Outcome:
    from django.core import checks

    found = [m for m in checks.run_checks(include_deployment_checks=True) if not m.is_silenced()]
    failing = sorted((m for m in found if m.level >= checks.WARNING), key=lambda m: m.id or "")
    silenced = list(_setting("SILENCED_SYSTEM_CHECKS", []) or [])
    note = f" ({len(silenced)} silenced: {', '.join(silenced)})" if silenced else ""
    if not failing:
        info = f"; {len(found)} below WARNING" if found else ""
        return True, f"no findings at WARNING or above{info}{note}"
    parts = []
    for message in failing:
        where = f"{message.obj}: " if message.obj is not None else ""
        first = str(message.msg).strip().split(". ")[0].rstrip(".")
        parts.append(f"{where}({message.id}) {first}")
    return False, f"{len(failing)} findings: " + "; ".join(parts) + note


def check_debug(ctx: Ctx, timeout: float) -> Outcome:
    if _setting("DEBUG", False):
        return False, "DEBUG is True: tracebacks and settings would be shown to visitors"
    return True, "DEBUG is False"


def check_allowed_hosts(ctx: Ctx, timeout: float) -> Outcome:
    hosts = list(_setting("ALLOWED_HOSTS", []) or [])
    if not hosts:
        return False, "ALLOWED_HOSTS is empty: every request would get 400"
    if "*" in hosts:
        return False, "ALLOWED_HOSTS contains '*': any Host header is accepted"
    return True, f"{len(hosts)} host name(s), no '*'"


def check_csrf_origins(ctx: Ctx, timeout: float) -> Outcome:
    origins = list(_setting("CSRF_TRUSTED_ORIGINS", []) or [])
    bad = [i + 1 for i, origin in enumerate(origins) if not str(origin).startswith("https://")]
    if bad:
        schemes = sorted({str(origins[i - 1]).partition("://")[0] or "none" for i in bad})
        return False, (
            f"CSRF_TRUSTED_ORIGINS entries {', '.join(f'#{i}' for i in bad)} of {len(origins)} "
            f"are not https:// (scheme {', '.join(schemes)})"
        )
    if not origins:
        return True, "none configured (same-origin POSTs only)"
    return True, f"{len(origins)} https origin(s)"


def check_cors(ctx: Ctx, timeout: float) -> Outcome:
    apps = [str(a) for a in _setting("INSTALLED_APPS", [])]
    if not any(a == "corsheaders" or a.startswith("corsheaders.") for a in apps):
        return True, "not applicable: corsheaders is not installed"
    problems = []
    if _setting("CORS_ALLOW_ALL_ORIGINS", False) or _setting("CORS_ORIGIN_ALLOW_ALL", False):
        problems.append("CORS_ALLOW_ALL_ORIGINS is True")
    origins = list(
        _setting("CORS_ALLOWED_ORIGINS", None) or _setting("CORS_ORIGIN_WHITELIST", None) or []
    )
    regexes = list(_setting("CORS_ALLOWED_ORIGIN_REGEXES", None) or [])
    if "*" in origins:
        problems.append("CORS_ALLOWED_ORIGINS contains '*'")
    if not origins and not regexes:
        problems.append("CORS_ALLOWED_ORIGINS is empty: list the origins explicitly")
    if problems:
        return False, "; ".join(problems)
    credentials = "with" if _setting("CORS_ALLOW_CREDENTIALS", False) else "without"
    return True, f"{len(origins) + len(regexes)} explicit origin(s), {credentials} credentials"


def check_cookies(ctx: Ctx, timeout: float) -> Outcome:
    wanted = ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY")
    off = [name for name in wanted if _setting(name, False) is not True]
    if off:
        return False, "not True: " + ", ".join(off)
    return True, "session and CSRF cookies are Secure; the session cookie is HttpOnly"


def check_samesite(ctx: Ctx, timeout: float) -> Outcome:
    problems, seen = [], []
    for cookie in ("SESSION", "CSRF"):
        value = _setting(f"{cookie}_COOKIE_SAMESITE", "Lax")
        secure = _setting(f"{cookie}_COOKIE_SECURE", False) is True
        text = str(value).lower() if isinstance(value, str) else ""
        if text in ("lax", "strict"):
            seen.append(f"{cookie}={value}")
        elif text == "none":
            if secure:
                seen.append(f"{cookie}=None (Secure)")
            else:
                problems.append(f"{cookie}_COOKIE_SAMESITE is 'None' but not Secure")
        else:
            problems.append(f"{cookie}_COOKIE_SAMESITE is not set (got {value!r})")
    if problems:
        return False, "; ".join(problems)
    return True, ", ".join(seen)


def check_https(ctx: Ctx, timeout: float) -> Outcome:
    header = _setting("SECURE_PROXY_SSL_HEADER", None)
    valid_header = (
        isinstance(header, tuple | list)
        and len(header) == 2
        and str(header[0]).startswith("HTTP_")
        and bool(header[1])
    )
    if header is not None and not valid_header:
        return False, 'SECURE_PROXY_SSL_HEADER must be a ("HTTP_...", value) pair'
    if _setting("SECURE_SSL_REDIRECT", False):
        behind = f", behind a proxy sending {header[0]}" if valid_header else ""
        return True, f"SECURE_SSL_REDIRECT is True{behind}"
    if valid_header:
        return True, (
            f"SECURE_SSL_REDIRECT is off; the TLS-terminating proxy (trusted via "
            f"{header[0]}) must redirect http itself"
        )
    return False, "neither SECURE_SSL_REDIRECT nor SECURE_PROXY_SSL_HEADER is set"


def check_hsts(ctx: Ctx, timeout: float) -> Outcome:
    seconds = _setting("SECURE_HSTS_SECONDS", 0) or 0
    if not isinstance(seconds, int) or seconds <= 0:
        return False, "SECURE_HSTS_SECONDS is not set: browsers are never told to stay on HTTPS"
    return True, f"HSTS max-age={seconds}"


def check_hsts_small(ctx: Ctx, timeout: float) -> Outcome:
    seconds = _setting("SECURE_HSTS_SECONDS", 0) or 0
    extras = [
        name
        for name, setting in (
            ("includeSubDomains", "SECURE_HSTS_INCLUDE_SUBDOMAINS"),
            ("preload", "SECURE_HSTS_PRELOAD"),
        )
        if _setting(setting, False)
    ]
    if extras and isinstance(seconds, int) and seconds >= HSTS_YEAR:
        reach = " and every subdomain" if "includeSubDomains" in extras else ""
        preload = ", and leaving browsers' preload lists takes months" * ("preload" in extras)
        return False, (
            f"HSTS max-age={seconds} ({seconds // 86400} days) with {' and '.join(extras)}: "
            f"browsers will refuse plain http on this domain{reach} for that long{preload}. "
            "Start small (an hour), raise max-age after verification, and add "
            "includeSubDomains/preload only when sure (seed 36.5)"
        )
    return True, f"max-age={seconds}" + (f" with {' and '.join(extras)}" if extras else "")


# --- files in the release ---------------------------------------------------------

SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", "node_modules", "venv", ".venv", ".releasebook",
     ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", "staticfiles", "media"}
)  # fmt: skip
ENV_TEMPLATES = frozenset({"example", "sample", "template", "dist", "defaults"})


def _walk(ctx: Ctx) -> Iterator[Path]:
    """Files of the release, not following links into other directories."""
    skip_roots: set[Path] = set()
    if ctx.django_ready:
        for name in ("STATIC_ROOT", "MEDIA_ROOT"):
            value = _setting(name, None)
            if value:
                skip_roots.add(Path(value).absolute())
    for top, dirs, files in os.walk(ctx.project):
        here = Path(top)
        dirs[:] = sorted(
            d for d in dirs if d not in SKIP_DIRS and (here / d).absolute() not in skip_roots
        )
        for name in sorted(files):
            yield here / name


def check_env_files(ctx: Ctx, timeout: float) -> Outcome:
    project = ctx.project.resolve()
    bad, linked = [], []
    for path in _walk(ctx):
        name = path.name
        if name != ".env" and not (
            name.startswith(".env.") and name[5:].lower() not in ENV_TEMPLATES
        ):
            continue
        relative = path.relative_to(ctx.project)
        if path.is_symlink():
            if _inside(path.resolve(), project):
                bad.append(f"{relative} (a link that stays inside the release)")
            else:
                linked.append(str(relative))
        else:
            bad.append(f"{relative} (a regular file)")
    if bad:
        return False, "env files inside the release: " + ", ".join(bad)
    if linked:
        return True, "only links out of the release: " + ", ".join(linked)
    return True, "no env file in the release"


SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("private key block", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    (
        "GitHub token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})\b"),
    ),
    ("Slack token", re.compile(r"\bxox[bp]-[0-9A-Za-z][0-9A-Za-z-]{9,}")),
)
SECRET_KEY_LITERAL = re.compile(
    r"""\b[A-Z0-9_]*SECRET_KEY['"]?\s*[:=]\s*[rRbBuU]?(['"])([^'"\\\n]{32,})\1"""
)
PLACEHOLDER_WORDS = frozenset(
    {"dev", "develop", "development", "local", "test", "testing", "insecure", "unsafe",
     "example", "sample", "dummy", "fake", "placeholder", "change", "changeme", "replace",
     "your", "notsecret", "not", "xxx", "todo", "ci"}
)  # fmt: skip
ALLOW_MARK = "releasebook: allow-secret"
BINARY_SUFFIXES = frozenset(
    {".pyc", ".pyo", ".so", ".png", ".jpg", ".jpeg", ".gif", ".ico", ".webp", ".woff",
     ".woff2", ".ttf", ".eot", ".otf", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".whl", ".pdf",
     ".mo", ".sqlite3", ".db"}
)  # fmt: skip
MAX_SCAN_BYTES = 1_000_000


def _entropy(text: str) -> float:
    counts = {c: text.count(c) for c in set(text)}
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _real_secret_key(value: str) -> bool:
    lowered = value.lower()
    if lowered.startswith("django-insecure"):
        return False
    words = set(re.split(r"[^a-z0-9]+", lowered))
    if words & PLACEHOLDER_WORDS:
        return False
    return len(set(value)) >= 12 and _entropy(value) >= 3.5


def _scan_text(text: str, python: bool) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if ALLOW_MARK in line:
            continue
        for kind, pattern in SECRET_PATTERNS:
            match = pattern.search(line)
            if match and "EXAMPLE" not in match.group(0):
                yield number, kind
        if python:
            literal = SECRET_KEY_LITERAL.search(line)
            if literal and _real_secret_key(literal.group(2)):
                yield number, "SECRET_KEY literal"


def check_committed_secrets(ctx: Ctx, timeout: float) -> Outcome:
    deadline = time.monotonic() + timeout * 0.9
    findings: list[str] = []
    scanned = 0
    for path in _walk(ctx):
        if time.monotonic() > deadline:
            raise Fail(f"scan did not finish in time ({scanned} files scanned)")
        if path.is_symlink() or path.suffix.lower() in BINARY_SUFFIXES:
            continue
        try:
            if path.stat().st_size > MAX_SCAN_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:4096]:
            continue
        scanned += 1
        relative = path.relative_to(ctx.project)
        text = data.decode("utf-8", errors="replace")
        findings.extend(
            f"{relative}:{line} {kind}" for line, kind in _scan_text(text, path.suffix == ".py")
        )
    if findings:
        shown = findings[:20]
        more = f" and {len(findings) - 20} more" if len(findings) > 20 else ""
        return False, f"{len(findings)} possible secrets: " + "; ".join(shown) + more
    return True, f"{scanned} files scanned, nothing found"


# --- error pages, static, media ---------------------------------------------------


def check_error_pages(ctx: Ctx, timeout: float) -> Outcome:
    from django.http import Http404
    from django.template import TemplateDoesNotExist, loader
    from django.test import RequestFactory
    from django.test.utils import override_settings
    from django.views import defaults

    missing = []
    for name in ("404.html", "500.html"):
        try:
            loader.get_template(name)
        except TemplateDoesNotExist:
            missing.append(name)
    if missing:
        return False, f"missing templates: {', '.join(missing)} (Django's bare pages would show)"
    hosts = [h for h in _setting("ALLOWED_HOSTS", []) if h and h != "*"]
    host = hosts[0].lstrip(".") if hosts else "localhost"
    request = RequestFactory().get("/releasebook-gate-probe-missing", HTTP_HOST=host)
    with override_settings(DEBUG=False):
        not_found = defaults.page_not_found(request, Http404("releasebook gate probe"))
        error = defaults.server_error(request)
    problems = []
    for response, status in ((not_found, 404), (error, 500)):
        body = response.content.decode("utf-8", errors="replace")
        if response.status_code != status:
            problems.append(f"{status}.html answered {response.status_code}")
        if "Traceback" in body:
            problems.append(f"{status}.html shows a traceback")
    if problems:
        return False, "; ".join(problems)
    return True, "404.html and 500.html render with DEBUG off"


def check_static_root(ctx: Ctx, timeout: float) -> Outcome:
    missing = [name for name in ("STATIC_URL", "STATIC_ROOT") if not _setting(name, None)]
    if missing:
        return False, "not set: " + ", ".join(missing)
    return True, f"STATIC_ROOT is {_setting('STATIC_ROOT')}"


def check_collectstatic(ctx: Ctx, timeout: float) -> Outcome:
    from django.core.management import call_command

    buffer = io.StringIO()
    call_command(
        "collectstatic", interactive=False, dry_run=True, verbosity=1, stdout=buffer, stderr=buffer
    )
    count = sum(1 for line in buffer.getvalue().splitlines() if line.startswith("Pretending"))
    return True, f"collectstatic --dry-run found {count} files"


def check_media(ctx: Ctx, timeout: float) -> Outcome:
    from django.core.files.storage import FileSystemStorage
    from django.utils.module_loading import import_string

    storages = _setting("STORAGES", {}) or {}
    backend = str(storages.get("default", {}).get("BACKEND", ""))
    if backend and not issubclass(import_string(backend), FileSystemStorage):
        return True, f"media stored by {backend}"
    root = _setting("MEDIA_ROOT", "")
    if not root:
        return False, "MEDIA_ROOT is not set: uploads would land in the working directory"
    resolved = (ctx.project / Path(root)).resolve()
    project = ctx.project.resolve()
    if _inside(resolved, project):
        return False, (
            f"MEDIA_ROOT resolves to {resolved}, inside the release: uploads vanish with the "
            "next release (point it at the `media` link into shared/)"
        )
    if not resolved.is_dir():
        return False, f"MEDIA_ROOT resolves to {resolved}, which is not a directory"
    if not os.access(resolved, os.W_OK | os.X_OK):
        return False, f"MEDIA_ROOT {resolved} is not writable by this user"
    return True, f"MEDIA_ROOT resolves to {resolved}, outside the release"


# --- database ---------------------------------------------------------------------

POSTGRES = ("postgresql", "postgis", "psycopg")


def check_db_engine(ctx: Ctx, timeout: float) -> Outcome:
    databases = _setting("DATABASES", {}) or {}
    other = [
        f"{alias} uses {str(db.get('ENGINE', '')).rsplit('.', 1)[-1] or 'no engine'}"
        for alias, db in databases.items()
        if not any(name in str(db.get("ENGINE", "")) for name in POSTGRES)
    ]
    if other:
        return False, "; ".join(other) + " (PostgreSQL is the production default)"
    return True, f"{len(databases)} PostgreSQL database(s)"


def check_db_connection(ctx: Ctx, timeout: float) -> Outcome:
    from django.db import connections

    answers = []
    for alias in connections:
        started = time.monotonic()
        connection = connections[alias]
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        except Exception as exc:
            raise Fail(f"{alias}: {_describe(exc)}") from None
        answers.append(f"{alias} ({connection.vendor}) answered in {_ms(started)} ms")
    return True, "; ".join(answers) or "no databases configured"


def check_makemigrations(ctx: Ctx, timeout: float) -> Outcome:
    from django.core.management import call_command

    buffer = io.StringIO()
    try:
        call_command(
            "makemigrations",
            check_changes=True,
            dry_run=True,
            interactive=False,
            verbosity=1,
            stdout=buffer,
            stderr=buffer,
        )
    except SystemExit as exc:
        if exc.code:
            lines = [line.strip() for line in buffer.getvalue().splitlines() if line.strip()]
            return False, "model changes without a migration: " + " | ".join(lines[:12])
    return True, "no model changes without a migration"


def check_migration_plan(ctx: Ctx, timeout: float) -> Outcome:
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    conflicts = executor.loader.detect_conflicts()
    if conflicts:
        return False, "conflicting migrations: " + "; ".join(
            f"{app}: {', '.join(sorted(names))}" for app, names in sorted(conflicts.items())
        )
    executor.loader.check_consistent_history(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    ctx.pending = [f"{m.app_label}.{m.name}" for m, _backwards in plan]
    if not ctx.pending:
        return True, "no migrations to apply"
    return True, f"{len(ctx.pending)} to apply: " + ", ".join(ctx.pending)


# --- cache, broker, disk, web -----------------------------------------------------


def check_cache(ctx: Ctx, timeout: float) -> Outcome:
    from django.core.cache import caches

    answers = []
    for alias in _setting("CACHES", {}) or {}:
        cache = caches[alias]
        kind = type(cache).__name__
        if kind == "DummyCache":
            answers.append(f"{alias} (DummyCache, stores nothing)")
            continue
        key, value = f"releasebook-gate-{uuid.uuid4().hex}", uuid.uuid4().hex
        started = time.monotonic()
        try:
            cache.set(key, value, 30)
            got = cache.get(key)
            cache.delete(key)
        except Exception as exc:
            raise Fail(f"{alias} ({kind}): {_describe(exc)}") from None
        if got != value:
            raise Fail(f"{alias} ({kind}): a value just stored was not returned")
        answers.append(f"{alias} ({kind}) answered in {_ms(started)} ms")
    return True, "; ".join(answers) or "no caches configured"


def _readline(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer")
        sock.settimeout(remaining)
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data[:-2]


def _resp(*words: str) -> bytes:
    out = f"*{len(words)}\r\n"
    for word in words:
        out += f"${len(word.encode())}\r\n{word}\r\n"
    return out.encode()


def _redis_ping(url: str, timeout: float) -> str:
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    scheme = parts.scheme.lower()
    if scheme == "redis+socket":
        where = parts.path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(where)
    else:
        host, port = parts.hostname or "localhost", parts.port or 6379
        where = f"{host}:{port}"
        sock = socket.create_connection((host, port), timeout=timeout)
        if scheme == "rediss":
            context = ssl.create_default_context()
            cert_reqs = dict(parse_qsl(parts.query)).get("ssl_cert_reqs", "").lower()
            if cert_reqs in ("none", "cert_none"):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=host)
    started = time.monotonic()
    with sock:
        if parts.password:
            user = [unquote(parts.username)] if parts.username else []
            sock.sendall(_resp("AUTH", *user, unquote(parts.password)))
            if not _readline(sock, deadline).startswith(b"+OK"):
                raise Fail(f"redis {where} refused the credentials")
        sock.sendall(_resp("PING"))
        answer = _readline(sock, deadline)
    if not answer.startswith(b"+PONG"):
        reply = answer.decode(errors="replace").split(" ")[0].lstrip("-")
        raise Fail(f"redis {where} answered PING with {reply}")
    return f"redis {where} answered PING in {_ms(started)} ms"


def _tcp_connect(url: str, default_port: int, timeout: float) -> str:
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or default_port
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout):
        pass
    return f"{parts.scheme} {host}:{port} accepted a TCP connection in {_ms(started)} ms"


def _filesystem_broker() -> str:
    options = dict(
        _setting("CELERY_BROKER_TRANSPORT_OPTIONS", None)
        or _setting("BROKER_TRANSPORT_OPTIONS", None)
        or {}
    )
    keys: tuple[str, ...] = ("data_folder_in", "data_folder_out", "control_folder")
    if options.get("store_processed"):
        keys += ("processed_folder",)
    folders = sorted({str(options[k]) for k in keys if options.get(k)})
    if not folders:
        raise Fail("filesystem:// broker without data_folder_in/out in its transport options")
    for folder in folders:
        probe = Path(folder) / f".releasebook-gate-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise Fail(f"filesystem broker folder {folder} not writable: {exc.strerror}") from None
    return f"filesystem broker: {len(folders)} folder(s) writable"


def _probe_broker(url: str, timeout: float) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("redis", "rediss", "redis+socket"):
        return _redis_ping(url, timeout)
    if scheme in ("amqp", "pyamqp", "librabbitmq"):
        return _tcp_connect(url, 5672, timeout)
    if scheme == "amqps":
        return _tcp_connect(url, 5671, timeout)
    if scheme == "filesystem":
        return _filesystem_broker()
    if scheme == "memory":
        raise Fail("memory:// only works inside one process: workers would never see a task")
    return f"{scheme}:// broker not probed (only redis, amqp and filesystem are)"


def check_broker(ctx: Ctx, timeout: float) -> Outcome:
    configured = _setting("CELERY_BROKER_URL", None) or _setting("BROKER_URL", None)
    if not configured:
        return True, "not applicable: no CELERY_BROKER_URL in settings"
    urls = configured if isinstance(configured, list | tuple) else str(configured).split(";")
    urls = [str(u).strip() for u in urls if str(u).strip()]
    answers, failures = [], []
    budget = max(0.5, timeout * 0.8 / len(urls))
    for url in urls:
        scheme = urlsplit(url).scheme or "?"
        try:
            answers.append(_probe_broker(url, budget))
        except Fail as exc:
            failures.append(str(exc))
        except (OSError, ssl.SSLError) as exc:
            parts = urlsplit(url)
            where = f"{parts.hostname}:{parts.port}" if parts.hostname else parts.path
            problem = f"no answer within {budget:g}s" if isinstance(exc, TimeoutError) else None
            failures.append(f"{scheme} {where}: {problem or _describe(exc)}")
    if not answers:
        return False, "; ".join(failures)
    return True, "; ".join(answers + [f"failover not reachable: {f}" for f in failures])


def check_disk(ctx: Ctx, timeout: float) -> Outcome:
    if not ctx.deploy_path.exists():
        return False, f"deploy path {ctx.deploy_path} does not exist"
    free_mb = shutil.disk_usage(ctx.deploy_path).free // (1024 * 1024)
    text = f"{free_mb} MB free under {ctx.deploy_path} (minimum {ctx.min_free_mb} MB)"
    return free_mb >= ctx.min_free_mb, text


def _wsgi_target(ctx: Ctx) -> str | None:
    if ctx.wsgi:
        return ctx.wsgi
    if ctx.django_ready:
        dotted = _setting("WSGI_APPLICATION", None)
        if dotted and "." in str(dotted):
            module, _, name = str(dotted).rpartition(".")
            return f"{module}:{name}"
    return None


def check_gunicorn(ctx: Ctx, timeout: float) -> Outcome:
    import importlib.util

    if importlib.util.find_spec("gunicorn") is None:
        return True, "not applicable: gunicorn is not installed in this interpreter"
    target = _wsgi_target(ctx)
    if target is None:
        return False, "no WSGI application: pass --wsgi module:callable or set WSGI_APPLICATION"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gunicorn", "--check-config", target],
            cwd=ctx.project,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            capture_output=True,
            text=True,
            timeout=max(1.0, timeout - 1),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"gunicorn --check-config {target} did not finish in time"
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        return False, f"gunicorn --check-config {target} exited {done.returncode}: " + (
            lines[-1][:300] if lines else "no output"
        )
    return True, f"gunicorn --check-config {target} loaded the app"


# --- running ----------------------------------------------------------------------

CheckFn = Callable[[Ctx, float], Outcome]

# id -> (function, default timeout in seconds, needs Django set up)
RUNNERS: dict[str, tuple[CheckFn, float, bool]] = {
    "RB-ENV-001": (check_required_env, 5, False),
    "RB-ENV-002": (check_settings_module, 5, False),
    "RB-ENV-003": (setup_django, SETUP_TIMEOUT, False),
    "RB-SEC-001": (check_deploy, 30, True),
    "RB-SEC-002": (check_debug, 5, True),
    "RB-SEC-003": (check_allowed_hosts, 5, True),
    "RB-SEC-004": (check_csrf_origins, 5, True),
    "RB-SEC-005": (check_cors, 5, True),
    "RB-SEC-006": (check_cookies, 5, True),
    "RB-SEC-007": (check_samesite, 5, True),
    "RB-SEC-008": (check_https, 5, True),
    "RB-SEC-009": (check_hsts, 5, True),
    "RB-SEC-010": (check_hsts_small, 5, True),
    "RB-SEC-011": (check_env_files, 30, False),
    "RB-SEC-012": (check_committed_secrets, 60, False),
    "RB-ERR-001": (check_error_pages, 15, True),
    "RB-STATIC-001": (check_static_root, 5, True),
    "RB-STATIC-002": (check_collectstatic, 60, True),
    "RB-MEDIA-001": (check_media, 5, True),
    "RB-DB-001": (check_db_engine, 5, True),
    "RB-DB-002": (check_db_connection, 10, True),
    "RB-DB-003": (check_makemigrations, 30, True),
    "RB-DB-004": (check_migration_plan, 20, True),
    "RB-CACHE-001": (check_cache, 10, True),
    "RB-CELERY-001": (check_broker, 10, True),
    "RB-DISK-001": (check_disk, 5, False),
    "RB-WEB-001": (check_gunicorn, 60, False),
}


def run_bounded(ctx: Ctx, fn: CheckFn, timeout: float, name: str) -> tuple[Outcome, float]:
    """Run ``fn`` in a daemon thread; a check that outlives ``timeout`` fails."""
    box: dict[str, Outcome] = {}

    def target() -> None:
        try:
            box["outcome"] = fn(ctx, timeout)
        except Fail as exc:
            box["outcome"] = (False, str(exc))
        except BaseException as exc:  # SystemExit from commands, driver errors, ...
            box["outcome"] = (False, _describe(exc))
        finally:
            if ctx.django_ready:
                with contextlib.suppress(Exception):  # closing is best effort
                    _close_connections()

    started = time.monotonic()
    worker = threading.Thread(target=target, name=f"gate-{name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if "outcome" not in box:
        return (False, f"timed out: no answer within {timeout:g}s"), _ms(started)
    return box["outcome"], _ms(started)


# --- redaction --------------------------------------------------------------------

URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*:)[^@/\s]+@")
SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|PASSWD|PASS$|TOKEN|KEY|CREDENTIAL|AUTH|DSN|PRIVATE|SALT|_URL$|^URL",
    re.IGNORECASE,
)
NOT_SECRET = frozenset({"DJANGO_SETTINGS_MODULE"})


def secret_values(ctx: Ctx) -> set[str]:
    found = {
        value
        for name, value in os.environ.items()
        if name not in NOT_SECRET
        and len(value) >= 6
        and (name in ctx.required or SECRET_NAME.search(name))
    }
    if ctx.django_ready:
        key = _setting("SECRET_KEY", "")
        if isinstance(key, str) and len(key) >= 6:
            found.add(key)
        for database in (_setting("DATABASES", {}) or {}).values():
            if database.get("PASSWORD"):
                found.add(str(database["PASSWORD"]))
    for value in list(found):
        for match in re.finditer(r"://[^:@/\s]*:([^@/\s]+)@", value):
            found.update({match.group(1), unquote(match.group(1))})
    return {v for v in found if len(v) >= 4}


def redact(text: str, secrets: set[str]) -> str:
    text = URL_PASSWORD.sub(r"\g<head>***@", text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 40] + f" ... ({len(text) - MAX_MESSAGE + 40} more chars)"
    return text


# --- command line -----------------------------------------------------------------


def _timeout_override(text: str) -> tuple[str, float]:
    check_id, sep, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not sep or check_id not in RUNNERS or not value > 0:
        raise argparse.ArgumentTypeError(f"expected CHECK_ID=SECONDS with a known id, got {text!r}")
    return check_id, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gate.py", description="releasebook readiness gate (run inside a release)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--expect-settings", metavar="MODULE")
    parser.add_argument("--require", action="append", default=[], metavar="NAME")
    parser.add_argument("--skip", action="append", default=[], metavar="ID")
    parser.add_argument("--min-free-mb", type=int, default=1024, metavar="N")
    parser.add_argument("--deploy-path", type=Path, metavar="PATH")
    parser.add_argument("--project-dir", type=Path, default=Path.cwd(), metavar="PATH")
    parser.add_argument("--wsgi", metavar="MODULE:CALLABLE")
    parser.add_argument(
        "--timeout", action="append", default=[], type=_timeout_override, metavar="ID=SECONDS"
    )
    args = parser.parse_args(argv)
    bad = [n for n in args.require if not ENV_NAME.match(n)]
    if bad:
        parser.error("--require expects environment variable names, got " + ", ".join(bad))
    unknown = [i for i in args.skip if i not in RUNNERS]
    if unknown:
        parser.error("--skip: unknown check id(s) " + ", ".join(unknown))
    if args.min_free_mb < 0:
        parser.error("--min-free-mb must be 0 or more")
    return args


def _claim_stdout() -> TextIO:
    """Keep fd 1 for the report; anything else written to stdout goes to stderr."""
    sys.stdout.flush()
    report = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return report


def run_gate(args: argparse.Namespace) -> dict[str, Any]:
    project = args.project_dir.absolute()
    ctx = Ctx(
        project=project,
        expect_settings=args.expect_settings,
        required=tuple(dict.fromkeys(args.require)),
        min_free_mb=args.min_free_mb,
        deploy_path=(args.deploy_path or project).absolute(),
        wsgi=args.wsgi,
    )
    timeouts = {check_id: spec[1] for check_id, spec in RUNNERS.items()} | dict(args.timeout)
    skip = set(args.skip)
    outcomes: dict[str, tuple[str, str, float]] = {}

    setup, setup_ms = run_bounded(ctx, setup_django, timeouts[SETUP_ID], SETUP_ID)
    for check_id, _title, _severity in TABLE:
        fn, _default, needs_django = RUNNERS[check_id]
        if check_id in skip:
            outcomes[check_id] = ("skip", "skipped by --skip", 0.0)
            continue
        if check_id == SETUP_ID:
            (passed, message), duration = setup, setup_ms
        elif needs_django and not ctx.django_ready:
            passed, message, duration = False, f"not checked: {SETUP_ID} failed", 0.0
        else:
            (passed, message), duration = run_bounded(ctx, fn, timeouts[check_id], check_id)
        outcomes[check_id] = ("pass" if passed else "fail", message, duration)

    secrets = secret_values(ctx)
    results = [
        {
            "id": check_id,
            "title": title,
            "severity": severity,
            "status": outcomes[check_id][0],
            "message": redact(outcomes[check_id][1], secrets),
            "duration_ms": outcomes[check_id][2],
        }
        for check_id, title, severity in TABLE
    ]
    ok = not any(r["status"] == "fail" and r["severity"] == "error" for r in results)
    return {"ok": ok, "version": VERSION, "pending_migrations": ctx.pending, "results": results}


def _text(report: dict[str, Any]) -> str:
    lines = []
    for r in report["results"]:
        status = "WARN" if r["status"] == "fail" and r["severity"] == "warning" else r["status"]
        lines.append(f"{status.upper():<5} {r['id']:<14} {r['title']}: {r['message']}")
    lines.append("gate: " + ("passed" if report["ok"] else "FAILED"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        table = [{"id": i, "title": t, "severity": s} for i, t, s in TABLE]
        text = (
            json.dumps(table) + "\n"
            if args.json
            else "".join(f"{i:<14} {s:<8} {t}\n" for i, t, s in TABLE)
        )
        sys.stdout.write(text)
        return 0
    sys.dont_write_bytecode = True
    out = _claim_stdout()
    report = run_gate(args)
    out.write(json.dumps(report) + "\n" if args.json else _text(report))
    out.flush()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # A check stuck in a driver call must not keep the interpreter from exiting.
    os._exit(code)
