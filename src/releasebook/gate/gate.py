#!/usr/bin/env python3
"""releasebook's readiness gate, run on each host inside a new release before it goes live.

Self-contained on purpose (the standard library and Django only): the build copies this
one file into the artifact as ``.releasebook/gate.py`` and each host runs it with the
release's own interpreter, settings and environment::

    cd <release_dir> && <with-env launcher> venv/bin/python .releasebook/gate.py --json \\
        --expect-settings config.settings.prod --require DJANGO_SECRET_KEY ... \\
        --min-free-mb 1024 --deploy-path /srv/app [--skip RB-XXX-000 ...] \\
        [--wsgi MODULE:CALLABLE | --asgi MODULE:CALLABLE] \\
        [--acknowledge app.0003_drop_x=REASON ...]

Every check runs in its own daemon thread bounded by its own timeout, so a database or
broker that never answers fails its check instead of hanging the gate. With ``--json``
the only thing on stdout is one JSON document::

    {"ok": bool, "version": 1, "pending_migrations": ["app.0002_x", ...],
     "results": [{"id", "title", "severity", "status": "pass|fail|skip", "message",
                  "duration_ms"}],
     "migration_findings": [{"check", "migration", "app", "name", "operation", "kind",
                             "description", "problem", "alternative",
                             "acknowledged": null | {"by", "reason"}, "note"}],
     "acknowledged_migrations": [{"migration", "by": "inventory|migration", "reason",
                                  "checks": [...], "operations": [...]}]}

The RB-MIG checks lint the pending migrations (see "migration safety" below); an
acknowledged finding passes and is listed in ``acknowledged_migrations``.

Exit status: 0 when no ``error`` check failed, 1 otherwise, 2 on bad usage. Values of
environment variables and secrets are never printed: names, kinds and file:line only,
and every message is redacted before it is written.

The ids, titles and severities below repeat ``releasebook.gate.registry`` (which this
script cannot import); releasebook's tests keep the two equal.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import ssl
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
    ("RB-MIG-001", "Migrations drop or rename nothing the old release uses", "error"),
    ("RB-MIG-002", "Column changes keep the old release's writes valid", "error"),
    ("RB-MIG-003", "Migrations can be reversed", "error"),
    ("RB-MIG-004", "Migrations take no long locks (PostgreSQL)", "error"),
    ("RB-CACHE-001", "Cache answers", "error"),
    ("RB-CELERY-001", "Celery broker reachable", "error"),
    ("RB-DISK-001", "Free disk space", "error"),
    ("RB-WEB-001", "gunicorn loads the app", "error"),
    ("RB-ASGI-001", "ASGI application imports", "error"),
    ("RB-ASGI-002", "Channel layer is not in-memory", "error"),
    ("RB-ASGI-003", "Channel layer answers", "error"),
    ("RB-ASGI-004", "WebSocket routes validate the Origin", "error"),
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
    asgi: str | None = None
    django_ready: bool = False
    pending: list[str] = field(default_factory=list)
    # migration -> why it is acknowledged (--acknowledge, from the inventory)
    acknowledged: dict[str, str] = field(default_factory=dict)
    lint: MigrationLint | None = None
    lint_error: str | None = None
    lint_lock: threading.Lock = field(default_factory=threading.Lock)


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
    with override_settings(DEBUG=False, **_storage_before_collectstatic()):
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


def _storage_before_collectstatic() -> dict[str, Any]:
    """Settings to render pages with before collectstatic has run: a manifest storage
    (hashed names) has no manifest yet, so its URLs are rendered unhashed instead of
    failing; once collectstatic writes the manifest, the pages use the real storage."""
    from django.contrib.staticfiles.storage import staticfiles_storage

    read_manifest = getattr(staticfiles_storage, "read_manifest", None)
    if read_manifest is None:
        return {}
    try:
        if read_manifest() is not None:
            return {}
    except Exception:  # noqa: S110 - an unreadable manifest: render as if there is none
        pass
    storages = dict(_setting("STORAGES", {}))
    storages["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    return {"STORAGES": storages}


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
    recorded = record_static_inputs(ctx)
    return True, f"collectstatic --dry-run found {count} files" + (
        f"; static inputs {recorded[:12]} recorded" if recorded else ""
    )


STATIC_INPUTS = ".releasebook/static-inputs"
# The pending migrations the plan check found (one per line; empty: none), for the
# backup before migrate, which then need not boot Django to ask again.
PENDING_MIGRATIONS = ".releasebook/pending-migrations"


def static_inputs(root: str) -> str:
    """A digest of everything collectstatic's output depends on: each file it would
    collect (the first one found for each path, as it collects them) and its content,
    the storage and its settings, Django and the virtualenv's packages."""
    import django
    from django.apps import apps
    from django.contrib.staticfiles.finders import get_finders

    config = apps.get_app_config("staticfiles")
    winners: dict[str, str] = {}
    for finder in get_finders():
        for path, storage in finder.list(list(getattr(config, "ignore_patterns", []))):
            prefix = getattr(storage, "prefix", None)
            name = f"{prefix}/{path}" if prefix else path
            if name not in winners:
                content = hashlib.sha256()
                with storage.open(path) as source:
                    for chunk in iter(lambda: source.read(1 << 16), b""):
                        content.update(chunk)
                winners[name] = content.hexdigest()
    storages = _setting("STORAGES", {}) or {}
    lines = [
        "v1",
        f"django {django.__version__}",
        _venv_identity(),
        f"root {root}",
        f"url {_setting('STATIC_URL', '')}",
        f"storage {json.dumps(storages.get('staticfiles'), sort_keys=True, default=repr)}",
        *(f"file {winners[name]} {name}" for name in sorted(winners)),
    ]
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def _venv_identity() -> str:
    """The packages the virtualenv holds, as its install resolved them (its
    ``.complete``), or where it has no such list, its path."""
    try:
        resolved = (Path(sys.prefix) / ".complete").read_bytes()
    except OSError:
        resolved = b""
    if resolved.strip():
        return f"venv-packages {hashlib.sha256(resolved).hexdigest()}"
    return f"venv {os.path.realpath(sys.prefix)}"


def record_static_inputs(ctx: Ctx) -> str | None:
    """Write the static inputs' digest and STATIC_ROOT (relative to the release) to
    ``.releasebook/static-inputs``, for the collectstatic step: where the live release's
    file is the same, it links the live STATIC_ROOT instead of collecting again. Only
    a STATIC_ROOT inside the release is recorded; the digest, or None."""
    project = ctx.project.resolve()
    static_root = (ctx.project / str(_setting("STATIC_ROOT", ""))).resolve()
    if static_root == project or not _inside(static_root, project):
        return None
    root = static_root.relative_to(project).as_posix()
    if "\n" in root:
        return None
    digest = static_inputs(root)
    _write_atomically(ctx.project / STATIC_INPUTS, f"root {root}\ndigest {digest}\n")
    return digest


def _write_atomically(target: Path, text: str) -> None:
    partial = target.with_name(f"{target.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(target)


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

    record = ctx.project / PENDING_MIGRATIONS
    record.unlink(missing_ok=True)  # only a plan computed in this run is recorded
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
    _write_atomically(record, "".join(f"{name}\n" for name in ctx.pending))
    if not ctx.pending:
        return True, "no migrations to apply"
    return True, f"{len(ctx.pending)} to apply: " + ", ".join(ctx.pending)


# --- migration safety -------------------------------------------------------------
# Every migration the release would apply (the plan against the real database) is read
# with Django's own loader, executor and project states, operation by operation, the way
# `migrate` would run it. While it runs, and until the switch, the old release keeps
# serving: what it still names must stay, what it writes must stay valid, and on
# PostgreSQL no table may be locked for the length of a scan or an index build. A
# finding blocks unless its migration is acknowledged, with a reason, in the inventory
# (--acknowledge) or in the migration module (``releasebook_acknowledge``).

MIG_NAMES, MIG_WRITES, MIG_REVERSIBLE, MIG_LOCKS = (
    "RB-MIG-001",
    "RB-MIG-002",
    "RB-MIG-003",
    "RB-MIG-004",
)
ACK_ATTRIBUTE = "releasebook_acknowledge"
MIGRATION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z0-9_]+$")
VARCHAR = re.compile(r"^varchar\((\d+)\)$")
MIG_SHOWN = 3  # findings a check's message explains in full

EXPAND_DROP = (
    "release the code without it first, keeping the {what} (a SeparateDatabaseAndState "
    "whose state_operations hold this operation and no database_operations; a kept "
    "column must be nullable or have a db_default), then {verb} it in a later release"
)
EXPAND_RENAME = (
    "add the new {what} beside the old one, write both, backfill, read the new one, and "
    "drop the old one in a later release; or keep the database name ({keep})"
)


@dataclass(frozen=True)
class Acknowledgement:
    by: str  # "inventory" or "migration"
    reason: str
    operations: tuple[int, ...] = ()  # 1-based; empty: every operation of the migration

    def covers(self, operation: int) -> bool:
        return not self.operations or operation in self.operations


@dataclass
class Finding:
    check: str
    app: str
    name: str  # the migration's name in its app
    operation: int  # 1-based position in Migration.operations
    kind: str  # the operation's class; nested ones as SeparateDatabaseAndState/RemoveField
    description: str  # Django's own describe()
    problem: str
    alternative: str
    acknowledged: Acknowledgement | None = None
    note: str = ""  # why an acknowledgement in the migration module did not count

    @property
    def migration(self) -> str:
        return f"{self.app}.{self.name}"

    def short(self) -> str:
        return f"{self.migration} operation {self.operation} {self.kind}"

    def where(self) -> str:
        return f"{self.short()} ({self.description})"

    def text(self) -> str:
        note = f" [{self.note}]" if self.note else ""
        return f"{self.where()}: {self.problem}; instead, {self.alternative}{note}"

    def as_json(self) -> dict[str, Any]:
        ack = self.acknowledged
        return {
            "check": self.check,
            "migration": self.migration,
            "app": self.app,
            "name": self.name,
            "operation": self.operation,
            "kind": self.kind,
            "description": self.description,
            "problem": self.problem,
            "alternative": self.alternative,
            "acknowledged": {"by": ack.by, "reason": ack.reason} if ack else None,
            "note": self.note,
        }


@dataclass
class MigrationLint:
    vendor: str
    pending: list[str]
    findings: list[Finding]


class _Schema:
    """The tables and columns the database has now: what the serving release uses."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        with connection.cursor() as cursor:
            self.tables = set(connection.introspection.table_names(cursor))
        self._columns: dict[str, set[str]] = {}

    def has_table(self, table: str) -> bool:
        return table in self.tables

    def has_column(self, table: str, column: str | None) -> bool:
        if column is None or table not in self.tables:
            return False
        if table not in self._columns:
            introspection = self.connection.introspection
            with self.connection.cursor() as cursor:
                described = introspection.get_table_description(cursor, table)
            self._columns[table] = {c.name for c in described}
        return column in self._columns[table]


Issue = tuple[str, str, str]  # check id, problem, alternative
Located = tuple[str, str, str, str]  # check id, operation kind, problem, alternative


class _Linter:
    def __init__(self, connection: Any, schema: _Schema) -> None:
        self.connection = connection
        self.schema = schema
        self.postgres = connection.vendor == "postgresql"

    def model(self, state: Any, app: str, name: str) -> Any:
        """The rendered model, or None when Django would not migrate it here (unmanaged,
        proxy, swapped, routed elsewhere) or it does not exist in that state."""
        try:
            model = state.apps.get_model(app, name)
        except LookupError:
            return None
        from django.db import router

        if not model._meta.can_migrate(self.connection):
            return None
        return model if router.allow_migrate_model(self.connection.alias, model) else None

    def operation(self, op: Any, app: str, before: Any, after: Any) -> Iterator[Located]:
        from django.db import migrations
        from django.db.migrations.operations.base import Operation

        if isinstance(op, migrations.SeparateDatabaseAndState):
            # Only its database_operations touch the database, each from the state the
            # previous one left (as SeparateDatabaseAndState.database_forwards runs them).
            current = before
            for inner in op.database_operations:
                following = current.clone()
                inner.state_forwards(app, following)
                for check, kind, problem, alternative in self.operation(
                    inner, app, current, following
                ):
                    yield check, f"{type(op).__name__}/{kind}", problem, alternative
                current = following
            return
        kind = type(op).__name__
        if not op.reversible:
            check, problem, alternative = self._irreversible(op)
            yield check, kind, problem, alternative
        handlers: tuple[tuple[type[Operation], Callable[..., Iterator[Issue]]], ...] = (
            (migrations.RemoveField, self.remove_field),
            (migrations.DeleteModel, self.delete_model),
            (migrations.RenameField, self.rename_field),
            (migrations.RenameModel, self.rename_model),
            (migrations.AlterModelTable, self.alter_model_table),
            (migrations.AddField, self.add_field),
            (migrations.AlterField, self.alter_field),
            (migrations.AddIndex, self.add_index),
            (migrations.AddConstraint, self.add_constraint),
            (migrations.AlterUniqueTogether, self.alter_unique_together),
        )
        for operation_class, handler in handlers:
            if isinstance(op, operation_class):
                for check, problem, alternative in handler(op, app, before, after):
                    yield check, kind, problem, alternative
                return

    @staticmethod
    def _irreversible(op: Any) -> Issue:
        from django.db import migrations

        name = type(op).__name__
        if isinstance(op, migrations.RunPython):
            missing, fix = "reverse_code", "reverse_code=migrations.RunPython.noop"
        elif isinstance(op, migrations.RunSQL):
            missing, fix = "reverse_sql", "reverse_sql=migrations.RunSQL.noop"
        else:
            return (
                MIG_REVERSIBLE,
                f"{name} is not reversible: a rollback could not unapply this migration, "
                "only a restore from a backup undoes it",
                "make the operation reversible, or split what cannot be undone into its "
                "own, acknowledged migration",
            )
        return (
            MIG_REVERSIBLE,
            f"{name} without {missing}: a rollback could not unapply this migration, only "
            "a restore from a backup undoes it",
            f"pass {fix} when there is nothing to undo, or the code that undoes it",
        )

    # names the old release uses

    def remove_field(self, op: Any, app: str, before: Any, after: Any) -> Iterator[Issue]:
        model = self.model(before, app, op.model_name)
        if model is None:
            return
        field = model._meta.get_field(op.name)
        label = f"{model._meta.object_name}.{op.name}"
        column = getattr(field, "column", None)
        through = getattr(field.remote_field, "through", None) if field.many_to_many else None
        if through is not None and through._meta.auto_created:
            table = through._meta.db_table
            if self.schema.has_table(table):
                yield (
                    MIG_NAMES,
                    f"drops table {table} of the many-to-many {label}, which the old release "
                    "still reads and writes",
                    EXPAND_DROP.format(what="table", verb="drop"),
                )
            return
        table = model._meta.db_table
        if self.schema.has_column(table, column):
            yield (
                MIG_NAMES,
                f"drops column {table}.{column} ({label}), which the old release "
                "still selects and inserts: its queries fail until the switch",
                EXPAND_DROP.format(what="column", verb="drop"),
            )

    def delete_model(self, op: Any, app: str, before: Any, after: Any) -> Iterator[Issue]:
        model = self.model(before, app, op.name)
        if model is not None and self.schema.has_table(model._meta.db_table):
            yield (
                MIG_NAMES,
                f"drops table {model._meta.db_table} ({model._meta.object_name}), which the "
                "old release still queries",
                EXPAND_DROP.format(what="table", verb="drop"),
            )

    def rename_field(self, op: Any, app: str, before: Any, after: Any) -> Iterator[Issue]:
        old_model = self.model(before, app, op.model_name)
        new_model = self.model(after, app, op.model_name)
        if old_model is None or new_model is None:
            return
        old = old_model._meta.get_field(op.old_name)
        new = new_model._meta.get_field(op.new_name)
        yield from self._renamed_column(old_model, old, new, f"db_column={old.column!r}")

    def _renamed_column(self, model: Any, old: Any, new: Any, keep: str) -> Iterator[Issue]:
        table = model._meta.db_table
        label = f"{model._meta.object_name}.{old.name}"
        if old.many_to_many and new.many_to_many:
            old_through, new_through = old.remote_field.through, new.remote_field.through
            old_table, new_table = old_through._meta.db_table, new_through._meta.db_table
            if (
                old_through._meta.auto_created
                and old_table != new_table
                and self.schema.has_table(old_table)
            ):
                yield (
                    MIG_NAMES,
                    f"renames table {old_table} of the many-to-many {label} to {new_table}; "
                    "the old release still queries the old name",
                    EXPAND_RENAME.format(what="table", keep=f"db_table={old_table!r}"),
                )
            return
        if old.column != new.column and self.schema.has_column(table, old.column):
            yield (
                MIG_NAMES,
                f"renames column {table}.{old.column} ({label}) to {new.column}; the old "
                "release still selects and inserts the old name",
                EXPAND_RENAME.format(what="column", keep=keep),
            )

    def rename_model(self, op: Any, app: str, before: Any, after: Any) -> Iterator[Issue]:
        old = self.model(before, app, op.old_name)
        new = self.model(after, app, op.new_name)
        if old is not None and new is not None:
            yield from self._renamed_table(old, new._meta.db_table)

    def alter_model_table(self, op: Any, app: str, before: Any, after: Any) -> Iterator[Issue]:
        old = self.model(before, app, op.name)
        new = self.model(after, app, op.name)
        if old is not None and new is not None:
            yield from self._renamed_table(old, new._meta.db_table)

    def _renamed_table(self, old: Any, new_table: str) -> Iterator[Issue]:
        table = old._meta.db_table
        if table != new_table and self.schema.has_table(table):
            yield (
                MIG_NAMES,
                f"renames table {table} ({old._meta.object_name}) to {new_table}; the old "
                "release still queries the old name",
                EXPAND_RENAME.format(what="table", keep=f"Meta.db_table={table!r}"),
            )

    # writes the old release makes

    def add_field(self, op: Any, app: str, before: Any, after: Any) -> Iterator[Issue]:
        from django.db.models import NOT_PROVIDED

        model = self.model(after, app, op.model_name)
        if model is None or not self.schema.has_table(model._meta.db_table):
            return  # a table made in this plan: the old release never sees it
        field = model._meta.get_field(op.name)
        if field.many_to_many or getattr(field, "column", None) is None:
            return
        table, label = model._meta.db_table, f"{model._meta.object_name}.{op.name}"
        db_default = getattr(field, "db_default", NOT_PROVIDED)
        if not field.null and db_default is NOT_PROVIDED and not getattr(field, "generated", 0):
            yield (
                MIG_WRITES,
                f"adds NOT NULL column {table}.{field.column} ({label}) without a database "
                "default: the old release's inserts leave it out and fail",
                "add it with db_default=... (Django 5.0+) or null=True, and make it NOT NULL "
                "in a later release, once every running release writes it",
            )
        if self.postgres:
            yield from self._new_index(model, None, field)
            yield from self._new_foreign_key(model, None, field)

    def alter_field(self, op: Any, app: str, before: Any, after: Any) -> Iterator[Issue]:
        old_model = self.model(before, app, op.model_name)
        new_model = self.model(after, app, op.model_name)
        if old_model is None or new_model is None:
            return
        old = old_model._meta.get_field(op.name)
        new = new_model._meta.get_field(op.name)
        if old.many_to_many or new.many_to_many:
            return
        if getattr(old, "column", None) is None or getattr(new, "column", None) is None:
            return
        yield from self._renamed_column(old_model, old, new, f"db_column={old.column!r}")
        table, label = old_model._meta.db_table, f"{old_model._meta.object_name}.{op.name}"
        if not self.schema.has_table(table):
            return
        if old.null and not new.null:
            yield (
                MIG_WRITES,
                f"makes {table}.{new.column} ({label}) NOT NULL: the old release may still "
                "write NULL there, and SET NOT NULL scans the whole table under an exclusive "
                "lock",
                "backfill and release code that always writes a value first; set NOT NULL "
                "in a later release (on PostgreSQL, after validating a CHECK (... IS NOT "
                "NULL) NOT VALID constraint)",
            )
        old_type = old.db_parameters(connection=self.connection)["type"]
        new_type = new.db_parameters(connection=self.connection)["type"]
        if old_type != new_type and not self._widening(old_type, new_type):
            yield (
                MIG_WRITES,
                f"changes column {table}.{new.column} ({label}) from {old_type} to "
                f"{new_type}: the old release reads and writes the old type, and most type "
                "changes rewrite the table under an exclusive lock",
                "add a column of the new type beside the old one, write both, backfill, "
                "read the new one, and drop the old one in a later release",
            )
        if self.postgres:
            yield from self._new_index(old_model, old, new)
            yield from self._new_foreign_key(old_model, old, new)

    def _widening(self, old_type: str | None, new_type: str | None) -> bool:
        """A longer varchar (or varchar to text on PostgreSQL) changes no stored row."""
        old = VARCHAR.match(old_type or "")
        if old is None:
            return False
        if self.postgres and new_type == "text":
            return True
        new = VARCHAR.match(new_type or "")
        return new is not None and int(new.group(1)) >= int(old.group(1))

    # locks on PostgreSQL

    def _new_index(self, model: Any, old: Any, new: Any) -> Iterator[Issue]:
        if new.primary_key:
            return
        indexed = new.db_index and not (old is not None and old.db_index)
        unique = new.unique and not (old is not None and old.unique)
        if not (indexed or unique):
            return
        table = model._meta.db_table
        what = "a unique index" if unique else "an index"
        yield (
            MIG_LOCKS,
            f"builds {what} on {table}.{new.column} without CONCURRENTLY, blocking writes "
            "to the table until it is built",
            "add the field without db_index/unique, then the index in a migration with "
            "atomic = False: AddIndexConcurrently, or for uniqueness CREATE UNIQUE INDEX "
            "CONCURRENTLY and ADD CONSTRAINT ... UNIQUE USING INDEX",
        )

    def _new_foreign_key(self, model: Any, old: Any, new: Any) -> Iterator[Issue]:
        if not (new.remote_field and getattr(new, "db_constraint", False)):
            return
        target = new.remote_field.model._meta.db_table
        if old is not None and old.remote_field and getattr(old, "db_constraint", False):
            same_target = old.remote_field.model._meta.db_table == target
            old_type = old.db_parameters(connection=self.connection)["type"]
            new_type = new.db_parameters(connection=self.connection)["type"]
            if same_target and old.column == new.column and old_type == new_type:
                return  # the constraint is kept as it is
        table = model._meta.db_table
        yield (
            MIG_LOCKS,
            f"adds a foreign key from {table}.{new.column} to {target}: validating it scans "
            f"every row of {table} while writes to both tables wait",
            "add the column with db_constraint=False, then add the constraint NOT VALID and "
            "VALIDATE CONSTRAINT in a later migration (RunSQL in a SeparateDatabaseAndState)",
        )

    def add_index(self, op: Any, app: str, before: Any, after: Any) -> Iterator[Issue]:
        if not self.postgres:
            return
        from django.contrib.postgres.operations import AddIndexConcurrently  # needs psycopg

        if isinstance(op, AddIndexConcurrently):
            return
        model = self.model(before, app, op.model_name)
        if model is not None and self.schema.has_table(model._meta.db_table):
            yield (
                MIG_LOCKS,
                f"creates index {op.index.name} on {model._meta.db_table} without "
                "CONCURRENTLY, blocking writes to the table until it is built",
                "use django.contrib.postgres.operations.AddIndexConcurrently in a migration "
                "with atomic = False",
            )

    def add_constraint(self, op: Any, app: str, before: Any, after: Any) -> Iterator[Issue]:
        from django.db.models import UniqueConstraint

        if not self.postgres or not isinstance(op.constraint, UniqueConstraint):
            return
        model = self.model(before, app, op.model_name)
        if model is not None and self.schema.has_table(model._meta.db_table):
            yield self._unique(model._meta.db_table, f"unique constraint {op.constraint.name}")

    def alter_unique_together(self, op: Any, app: str, before: Any, after: Any) -> Iterator[Issue]:
        old_model = self.model(before, app, op.name)
        new_model = self.model(after, app, op.name)
        if not self.postgres or old_model is None or new_model is None:
            return
        old = {tuple(f) for f in old_model._meta.unique_together}
        added = [f for f in new_model._meta.unique_together if tuple(f) not in old]
        if added and self.schema.has_table(old_model._meta.db_table):
            fields = ", ".join("(" + ", ".join(f) + ")" for f in added)
            yield self._unique(old_model._meta.db_table, f"unique_together {fields}")

    @staticmethod
    def _unique(table: str, what: str) -> Issue:
        return (
            MIG_LOCKS,
            f"adds {what} on {table}: building its unique index blocks writes to the table "
            "while it reads every row (and fails on duplicates)",
            "CREATE UNIQUE INDEX CONCURRENTLY in a migration with atomic = False, then ALTER "
            "TABLE ... ADD CONSTRAINT ... UNIQUE USING INDEX, as the database_operations of a "
            "SeparateDatabaseAndState whose state_operations hold this operation",
        )


def _module_acknowledgement(migration: Any) -> tuple[Acknowledgement | None, str]:
    """``releasebook_acknowledge`` on the Migration class: a reason, or a dict with a
    ``reason`` and optionally the 1-based ``operations`` it covers."""
    raw = getattr(migration, ACK_ATTRIBUTE, None)
    if raw is None:
        return None, ""
    if isinstance(raw, str):
        raw = {"reason": raw}
    problem = f"{ACK_ATTRIBUTE} ignored: expected a dict with a non-empty 'reason'"
    if not isinstance(raw, dict) or set(raw) - {"reason", "operations"}:
        return None, problem + " and optionally 'operations'"
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        return None, problem
    operations = raw.get("operations", ())
    count = len(migration.operations)
    if not isinstance(operations, list | tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= count for n in operations
    ):
        return None, (
            f"{ACK_ATTRIBUTE} ignored: 'operations' must list operation numbers 1 to {count}"
        )
    return Acknowledgement("migration", " ".join(reason.split()), tuple(operations)), ""


def lint_migrations(ctx: Ctx) -> MigrationLint:
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    pending = [f"{m.app_label}.{m.name}" for m, _backwards in plan]
    lint = MigrationLint(vendor=connection.vendor, pending=pending, findings=[])
    if not plan:
        return lint
    # The state the applied migrations leave, built as `migrate` builds it (a private
    # method, unchanged since Django 1.10); rendering it once lets each operation
    # re-render only the models it changes.
    state = executor._create_project_state(with_applied_migrations=True)  # type: ignore[attr-defined]
    _ = state.apps
    linter = _Linter(connection, _Schema(connection))
    for migration, _backwards in plan:
        app = migration.app_label
        in_module, note = _module_acknowledgement(migration)
        reason = ctx.acknowledged.get(f"{app}.{migration.name}")
        in_inventory = Acknowledgement("inventory", reason) if reason else None
        for number, operation in enumerate(migration.operations, start=1):
            before = state.clone()
            operation.state_forwards(app, state)
            for check, kind, problem, alternative in linter.operation(
                operation, app, before, state
            ):
                ack = in_module if in_module and in_module.covers(number) else in_inventory
                lint.findings.append(
                    Finding(
                        check=check,
                        app=app,
                        name=migration.name,
                        operation=number,
                        kind=kind,
                        description=str(operation.describe()),
                        problem=problem,
                        alternative=alternative,
                        acknowledged=ack,
                        note="" if ack else note,
                    )
                )
    return lint


def _linted(ctx: Ctx) -> MigrationLint:
    """The lint of the pending migrations, made once for the four checks that report it.
    Checks run one after another, so a lint still running belongs to an earlier check
    that timed out: the others fail at once instead of each waiting out its timeout."""
    if not ctx.lint_lock.acquire(blocking=False):
        raise Fail(
            "not checked: the migration lint did not finish within an earlier check's timeout"
        )
    try:
        if ctx.lint is None and ctx.lint_error is None:
            try:
                ctx.lint = lint_migrations(ctx)
            except Fail as exc:
                ctx.lint_error = str(exc)
            except Exception as exc:
                ctx.lint_error = "migrations could not be read: " + _describe(exc)
    finally:
        ctx.lint_lock.release()
    if ctx.lint is None:
        raise Fail(ctx.lint_error or "migrations could not be read")
    return ctx.lint


def _migration_check(ctx: Ctx, check_id: str, clean: str) -> Outcome:
    lint = _linted(ctx)
    if check_id == MIG_LOCKS and lint.vendor != "postgresql":
        return True, f"not applicable: the database is {lint.vendor}, not PostgreSQL"
    if not lint.pending:
        return True, "no migrations to apply"
    mine = [f for f in lint.findings if f.check == check_id]
    blocking = [f for f in mine if f.acknowledged is None]
    acknowledged = [f for f in mine if f.acknowledged is not None]
    tail = ""
    if acknowledged:
        tail = f"; {len(acknowledged)} acknowledged: " + "; ".join(
            f"{f.where()} ({f.acknowledged.by}: {f.acknowledged.reason})"
            for f in acknowledged
            if f.acknowledged is not None
        )
    if blocking:
        # In full up to a few; the rest by name (all are in migration_findings).
        shown, rest = blocking[:MIG_SHOWN], blocking[MIG_SHOWN:]
        more = f"; and {len(rest)} more: " + "; ".join(f.short() for f in rest) if rest else ""
        return False, f"{len(blocking)} unsafe: " + "; ".join(f.text() for f in shown) + more + tail
    return True, f"{len(lint.pending)} migration(s) to apply, {clean}" + tail


def check_migrations_keep_names(ctx: Ctx, timeout: float) -> Outcome:
    return _migration_check(ctx, MIG_NAMES, "nothing the old release uses is dropped or renamed")


def check_migrations_keep_writes(ctx: Ctx, timeout: float) -> Outcome:
    return _migration_check(ctx, MIG_WRITES, "no column change breaks the old release's writes")


def check_migrations_reversible(ctx: Ctx, timeout: float) -> Outcome:
    return _migration_check(ctx, MIG_REVERSIBLE, "every operation can be unapplied")


def check_migrations_locks(ctx: Ctx, timeout: float) -> Outcome:
    return _migration_check(ctx, MIG_LOCKS, "no index build or validation locks a table")


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
    target = ctx.asgi or _wsgi_target(ctx)
    if target is None:
        return False, "no WSGI application: pass --wsgi module:callable or set WSGI_APPLICATION"
    # An ASGI app is loaded by the worker class that serves it.
    worker = ["--worker-class", ASGI_WORKER_CLASS] if ctx.asgi else []
    if worker and importlib.util.find_spec("uvicorn_worker") is None:
        missing = f"uvicorn-worker (for {ASGI_WORKER_CLASS}) is not installed"
        return False, f"{missing}: add uvicorn-worker to the requirements"
    problem = _gunicorn_load_problem([*worker, target])
    if problem is not None:
        return False, f"gunicorn {' '.join([*worker, target])}: {problem}"
    return True, f"gunicorn's configuration and {' '.join([*worker, target])} loaded"


def _last_line(text: io.StringIO) -> str:
    lines = [line.strip() for line in text.getvalue().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _gunicorn_load_problem(argv: list[str]) -> str | None:
    """What stops gunicorn from starting with ``argv``, found as ``gunicorn --check-config``
    finds it, in this process (another interpreter would boot Django once more on every
    host): its configuration (the command line, ``GUNICORN_CMD_ARGS``, a
    ``gunicorn.conf.py``), the worker class and the application. None: all load."""
    from gunicorn.app.wsgiapp import WSGIApplication  # type: ignore[import-untyped]

    class Checked(WSGIApplication):  # type: ignore[misc]
        def do_load_config(self) -> None:  # gunicorn's own prints the error and exits
            self.load_default_config()
            self.load_config()

    saved_argv, saved_cwd, said = sys.argv, Path.cwd(), io.StringIO()
    sys.argv = ["gunicorn", *argv]  # gunicorn parses sys.argv; the checks run one at a time
    try:
        with contextlib.redirect_stderr(said):
            app = Checked("%(prog)s [OPTIONS] [APP_MODULE]")
            app.cfg.worker_class  # noqa: B018 - the property imports the class
            if not callable(app.load()):
                return "the application is not callable"
            if app.cfg.pidfile:
                return (
                    f"its configuration sets a pidfile ({app.cfg.pidfile}): the master each "
                    "restart boots beside the serving one would find it and exit "
                    "('Already running on PID'); remove the pidfile setting"
                )
    except SystemExit as exc:
        return _last_line(said) or f"exited {exc.code}"
    except Exception as exc:  # with what gunicorn said of it, if anything
        return "; ".join(filter(None, [_last_line(said), _describe(exc)]))
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)  # a configured `chdir` moves the process
    return None


# --- ASGI and Channels ------------------------------------------------------------

# Must equal releasebook.runbooks.processes.ASGI_WORKER_CLASS (the tests keep them equal).
ASGI_WORKER_CLASS = "releasebook.django.asgi_worker.UvicornWorker"
IN_MEMORY_LAYER = "channels.layers.InMemoryChannelLayer"
WRAPPED = ("inner", "application", "app")  # where ASGI middleware keep what they wrap


def _channels_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("channels") is not None


def _asgi_app(ctx: Ctx) -> Any:
    import importlib

    module_name, _, name = str(ctx.asgi).partition(":")
    project = str(ctx.project)
    if project not in sys.path:
        sys.path.insert(0, project)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise Fail(f"importing {module_name}: {_describe(exc)}") from None
    app = getattr(module, name, None)
    if app is None:
        raise Fail(f"{module_name} has no attribute {name!r}")
    return app


def check_asgi_app(ctx: Ctx, timeout: float) -> Outcome:
    if not ctx.asgi:
        return True, "not applicable: not an ASGI app (no --asgi)"
    app = _asgi_app(ctx)
    if not callable(app):
        return False, f"{ctx.asgi} is a {type(app).__name__}, not an ASGI callable"
    return True, f"{ctx.asgi} imports ({type(app).__name__})"


def _layers() -> dict[str, Any]:
    layers = _setting("CHANNEL_LAYERS", None) or {}
    if not isinstance(layers, dict):
        raise Fail(f"CHANNEL_LAYERS is a {type(layers).__name__}, expected a dict")
    return layers


def check_channel_layer_kind(ctx: Ctx, timeout: float) -> Outcome:
    if not ctx.asgi or not _channels_installed():
        return True, "not applicable: no ASGI app with Channels installed"
    layers = _layers()
    if not layers:
        return True, "no CHANNEL_LAYERS configured: consumers cannot use groups"
    in_memory = [
        alias for alias, spec in layers.items() if str(spec.get("BACKEND", "")) == IN_MEMORY_LAYER
    ]
    if in_memory:
        return False, (
            f"CHANNEL_LAYERS {', '.join(map(repr, in_memory))}: InMemoryChannelLayer keeps "
            "messages in one process, so consumers in other workers and hosts never see them; "
            "use "
            "channels_redis.core.RedisChannelLayer"
        )
    return True, "; ".join(f"{alias}: {spec.get('BACKEND')}" for alias, spec in layers.items())


def _round_trip(alias: str, budget: float) -> str:
    import asyncio

    from channels.layers import channel_layers

    layer = channel_layers[alias]
    kind = f"{type(layer).__module__}.{type(layer).__name__}"

    async def trip() -> None:
        try:
            channel = await layer.new_channel("releasebook-gate.")
            payload = uuid.uuid4().hex
            await layer.send(channel, {"type": "releasebook.gate", "payload": payload})
            message = await layer.receive(channel)
            if message.get("payload") != payload:
                raise Fail(f"{alias} ({kind}): received another message than the one sent")
        finally:
            close = getattr(layer, "close_pools", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(trip(), budget))
    except Fail:
        raise
    except TimeoutError:
        raise Fail(f"{alias} ({kind}): no send/receive round trip within {budget:g}s") from None
    except Exception as exc:
        raise Fail(f"{alias} ({kind}): {_describe(exc)}") from None
    return f"{alias} ({kind}) sent and received a message in {_ms(started)} ms"


def idle_read_problem(alias: str, layer: Any) -> str | None:
    """Why a layer drops idle consumers, or None: channels_redis's RedisChannelLayer waits
    for a message with a blocking pop of ``brpop_timeout`` seconds, which a Redis socket
    timeout as short (redis-py 8's default is 5 s, as the pop) ends with an error."""
    pop = getattr(layer, "brpop_timeout", None)
    hosts = getattr(layer, "hosts", None)
    if not isinstance(pop, int | float) or not isinstance(hosts, list):
        return None
    for index in range(len(hosts)):
        # Built, not connected: the pool and a connection hold the timeout it would use.
        make = getattr(layer.create_pool(index), "make_connection", None)
        socket_timeout = getattr(make(), "socket_timeout", None) if callable(make) else None
        if isinstance(socket_timeout, int | float) and socket_timeout <= pop:
            return (
                f"{alias}: the Redis socket timeout ({socket_timeout:g}s) is no longer than "
                f"the layer's blocking pop ({pop:g}s), so every idle consumer fails and its "
                "WebSocket is dropped without a close frame; give the hosts no socket "
                'timeout ({"address": url, "socket_timeout": None})'
            )
    return None


def check_channel_layer(ctx: Ctx, timeout: float) -> Outcome:
    if not ctx.asgi or not _channels_installed():
        return True, "not applicable: no ASGI app with Channels installed"
    layers = _layers()
    if not layers:
        return True, "no CHANNEL_LAYERS configured"
    from channels.layers import channel_layers

    for alias in layers:
        problem = idle_read_problem(alias, channel_layers[alias])
        if problem is not None:
            return False, problem
    budget = max(0.5, timeout * 0.8 / len(layers))
    return True, "; ".join(_round_trip(alias, budget) for alias in layers)


def _validates_origin(node: Any, depth: int = 0) -> bool:
    from channels.routing import URLRouter
    from channels.security.websocket import OriginValidator

    if depth > 20:
        return False
    if isinstance(node, OriginValidator):
        return True
    if isinstance(node, URLRouter):
        routes = list(getattr(node, "routes", []))
        return bool(routes) and all(
            _validates_origin(route.callback, depth + 1) for route in routes
        )
    for attr in WRAPPED:
        inner = getattr(node, attr, None)
        if inner is not None and inner is not node:
            return _validates_origin(inner, depth + 1)
    return False


def _protocol_router(node: Any) -> Any:
    from channels.routing import ProtocolTypeRouter

    for _ in range(20):
        if isinstance(node, ProtocolTypeRouter):
            return node
        node = next((getattr(node, a) for a in WRAPPED if getattr(node, a, None)), None)
        if node is None:
            return None
    return None


def check_websocket_origin(ctx: Ctx, timeout: float) -> Outcome:
    if not ctx.asgi or not _channels_installed():
        return True, "not applicable: no ASGI app with Channels installed"
    router = _protocol_router(_asgi_app(ctx))
    if router is None:
        return True, f"{ctx.asgi} is not a Channels ProtocolTypeRouter: no WebSocket routes"
    websocket = router.application_mapping.get("websocket")
    if websocket is None:
        return True, "the ProtocolTypeRouter routes no websocket protocol"
    if not _validates_origin(websocket):
        return False, (
            "the websocket router is not wrapped in AllowedHostsOriginValidator or "
            "OriginValidator: any site could open WebSockets with your users' cookies"
        )
    return True, "the websocket router is wrapped in an OriginValidator"


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
    "RB-MIG-001": (check_migrations_keep_names, 60, True),
    "RB-MIG-002": (check_migrations_keep_writes, 60, True),
    "RB-MIG-003": (check_migrations_reversible, 60, True),
    "RB-MIG-004": (check_migrations_locks, 60, True),
    "RB-CACHE-001": (check_cache, 10, True),
    "RB-CELERY-001": (check_broker, 10, True),
    "RB-DISK-001": (check_disk, 5, False),
    "RB-WEB-001": (check_gunicorn, 60, False),
    "RB-ASGI-001": (check_asgi_app, 30, True),
    "RB-ASGI-002": (check_channel_layer_kind, 5, True),
    "RB-ASGI-003": (check_channel_layer, 10, True),
    "RB-ASGI-004": (check_websocket_origin, 30, True),
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


def _acknowledgement(text: str) -> tuple[str, str]:
    migration, sep, reason = text.partition("=")
    if not sep or not MIGRATION_NAME.match(migration) or not reason.strip():
        raise argparse.ArgumentTypeError(
            f"expected APP.MIGRATION=REASON (e.g. shop.0003_drop_x=why), got {text!r}"
        )
    return migration, " ".join(reason.split())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gate.py", description="releasebook readiness gate (run inside a release)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--expect-settings", metavar="MODULE")
    parser.add_argument("--require", action="append", default=[], metavar="NAME")
    parser.add_argument("--skip", action="append", default=[], metavar="ID")
    parser.add_argument(
        "--acknowledge",
        action="append",
        default=[],
        type=_acknowledgement,
        metavar="APP.MIGRATION=REASON",
        help="let this migration's findings pass, for the reason given (recorded)",
    )
    parser.add_argument("--min-free-mb", type=int, default=1024, metavar="N")
    parser.add_argument("--deploy-path", type=Path, metavar="PATH")
    parser.add_argument("--project-dir", type=Path, default=Path.cwd(), metavar="PATH")
    parser.add_argument("--wsgi", metavar="MODULE:CALLABLE")
    parser.add_argument("--asgi", metavar="MODULE:CALLABLE", help="an ASGI app (with uvicorn)")
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
        asgi=args.asgi,
        acknowledged=dict(args.acknowledge),
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
    ran = {r["id"] for r in results if r["status"] != "skip"}
    findings = [f for f in (ctx.lint.findings if ctx.lint else []) if f.check in ran]
    return {
        "ok": ok,
        "version": VERSION,
        "pending_migrations": ctx.pending,
        "results": results,
        "migration_findings": [_redacted(f.as_json(), secrets) for f in findings],
        "acknowledged_migrations": [
            _redacted(a, secrets) for a in acknowledged_migrations(findings)
        ],
    }


def acknowledged_migrations(findings: list[Finding]) -> list[dict[str, Any]]:
    """One entry per migration and acknowledgement that let findings pass."""
    grouped: dict[tuple[str, Acknowledgement], list[Finding]] = {}
    for f in findings:
        if f.acknowledged is not None:
            grouped.setdefault((f.migration, f.acknowledged), []).append(f)
    return [
        {
            "migration": migration,
            "by": ack.by,
            "reason": ack.reason,
            "checks": sorted({f.check for f in covered}),
            "operations": sorted({f.operation for f in covered}),
        }
        for (migration, ack), covered in grouped.items()
    ]


def _redacted(data: dict[str, Any], secrets: set[str]) -> dict[str, Any]:
    return {k: redact(v, secrets) if isinstance(v, str) else v for k, v in data.items()}


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
