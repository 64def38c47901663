"""Every readiness check releasebook runs before a release, as data.

This registry is the single description of the gate: ids, titles, the seed section
(chapter 36, "Production Readiness Checklist") each check enforces, its severity, how
it is checked and how to fix it. The host-side script (:mod:`releasebook.gate.gate`)
cannot import it (it runs with the release's own interpreter), so it repeats ids,
titles and severities in its own table; ``tests/test_checks.py`` keeps the two equal.

Severity ``error`` blocks the release; ``warning`` is reported and does not block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]

ID_PATTERN = re.compile(r"^RB-[A-Z]+-\d{3}$")

SECTIONS: dict[str, str] = {
    "36.1": "Environment Separation",
    "36.2": "Secrets and Configuration",
    "36.3": "Debug and Error Pages",
    "36.4": "Allowed Hosts, CSRF Trusted Origins, CORS",
    "36.5": "HTTPS and Secure Cookies",
    "36.6": "Static Files",
    "36.7": "Media / Uploads",
    "36.8": "Database Readiness and Migration Plan",
    "36.9": "Background Tasks (Celery) and Redis",
    "36.10": "Observability and Monitoring",
    "36.11": "Security Review Checklist",
    "36.12": "Performance Readiness",
    "36.13": "Deployment Documentation (Runbooks)",
    "36.14": "Production Readiness Gate Script",
}


@dataclass(frozen=True, kw_only=True)
class CheckSpec:
    id: str
    title: str
    section: str  # a key of SECTIONS
    severity: Severity
    how: str  # how it is checked, one sentence
    fix: str  # how to fix a failure, one sentence

    def __post_init__(self) -> None:
        if not ID_PATTERN.match(self.id):
            raise ValueError(f"check id {self.id!r} does not look like RB-AREA-000")
        if self.section not in SECTIONS:
            raise ValueError(f"{self.id}: unknown seed section {self.section!r}")

    @property
    def section_title(self) -> str:
        return SECTIONS[self.section]


def _spec(id: str, title: str, section: str, severity: Severity, how: str, fix: str) -> CheckSpec:
    return CheckSpec(id=id, title=title, section=section, severity=severity, how=how, fix=fix)


CHECKS: tuple[CheckSpec, ...] = (
    _spec(
        "RB-ENV-001",
        "Required environment variables are set",
        "36.2",
        "error",
        "Every name given with --require is present and non-empty in the environment the "
        "launcher loaded from `shared/.env`; only names are reported, never values.",
        "Add the missing names to `<deploy>/shared/.env` on the host, or declare them under "
        "env.values or env.generate in the inventory.",
    ),
    _spec(
        "RB-ENV-002",
        "Production settings module",
        "36.1",
        "error",
        "DJANGO_SETTINGS_MODULE equals --expect-settings and does not name a dev, local or "
        "test module.",
        "Set app.settings in the inventory to the production module (the env launcher exports it).",
    ),
    _spec(
        "RB-ENV-003",
        "Settings load",
        "36.1",
        "error",
        "django.setup() finishes with the real settings and environment within its timeout.",
        "Read the error's type and first line, then set the variable or setting it names.",
    ),
    _spec(
        "RB-SEC-001",
        "Django deployment checks",
        "36.11",
        "error",
        "django.core.checks.run_checks(include_deployment_checks=True), as `manage.py check "
        "--deploy --fail-level WARNING`, minus SILENCED_SYSTEM_CHECKS; each finding is "
        "reported with its id.",
        "Fix each finding named (security.W001 ... W025 and others), or silence it in "
        "SILENCED_SYSTEM_CHECKS with a comment saying why.",
    ),
    _spec(
        "RB-SEC-002",
        "DEBUG is off",
        "36.3",
        "error",
        "settings.DEBUG is False.",
        "Set DEBUG = False in the production settings module, not from the environment.",
    ),
    _spec(
        "RB-SEC-003",
        "ALLOWED_HOSTS lists real hosts",
        "36.4",
        "error",
        "ALLOWED_HOSTS is non-empty and contains no '*'.",
        "Set DJANGO_ALLOWED_HOSTS (or ALLOWED_HOSTS) to the site's host names, comma-separated.",
    ),
    _spec(
        "RB-SEC-004",
        "CSRF trusted origins are HTTPS",
        "36.4",
        "error",
        "Every CSRF_TRUSTED_ORIGINS entry starts with https://.",
        "List the https:// origins users post from (scheme and host, no path).",
    ),
    _spec(
        "RB-SEC-005",
        "CORS is explicit",
        "36.4",
        "error",
        "When corsheaders is installed, CORS_ALLOW_ALL_ORIGINS is off and "
        "CORS_ALLOWED_ORIGINS (or CORS_ALLOWED_ORIGIN_REGEXES) lists origins, without '*'.",
        "Set CORS_ALLOW_ALL_ORIGINS = False and list each cross-origin frontend in "
        "CORS_ALLOWED_ORIGINS.",
    ),
    _spec(
        "RB-SEC-006",
        "Cookies are Secure and HttpOnly",
        "36.5",
        "error",
        "SESSION_COOKIE_SECURE, CSRF_COOKIE_SECURE and SESSION_COOKIE_HTTPONLY are True.",
        "Set those three settings to True in the production settings module.",
    ),
    _spec(
        "RB-SEC-007",
        "SameSite is set on cookies",
        "36.5",
        "error",
        "SESSION_COOKIE_SAMESITE and CSRF_COOKIE_SAMESITE are 'Lax' or 'Strict', or 'None' "
        "only together with the matching *_COOKIE_SECURE.",
        "Use 'Lax' for same-site apps; use 'None' only for cross-origin cookie auth, and "
        "then with Secure cookies.",
    ),
    _spec(
        "RB-SEC-008",
        "HTTPS is enforced",
        "36.5",
        "error",
        "SECURE_SSL_REDIRECT is True, or SECURE_PROXY_SSL_HEADER names the header of the "
        "TLS-terminating proxy in front, which then redirects http itself.",
        "Set SECURE_SSL_REDIRECT = True (and SECURE_PROXY_SSL_HEADER behind a proxy).",
    ),
    _spec(
        "RB-SEC-009",
        "HSTS is on",
        "36.5",
        "error",
        "SECURE_HSTS_SECONDS is a positive number of seconds.",
        "Start with SECURE_HSTS_SECONDS = 3600 and raise it once HTTPS is proven.",
    ),
    _spec(
        "RB-SEC-010",
        "HSTS started small",
        "36.5",
        "warning",
        "Warns when includeSubDomains or preload comes with a max-age of a year or more.",
        "Start small (an hour), raise max-age after verification, and add "
        "includeSubDomains/preload only when every subdomain serves HTTPS for good.",
    ),
    _spec(
        "RB-SEC-011",
        "No env file inside the release",
        "36.2",
        "error",
        "No `.env` or `.env.*` in the release directory is a regular file or a link that "
        "stays inside it; releasebook's link to shared/.env is allowed.",
        "Remove the file from the repository, add it to .gitignore, and keep values in "
        "`<deploy>/shared/.env`.",
    ),
    _spec(
        "RB-SEC-012",
        "No committed secrets",
        "36.2",
        "error",
        "The release's source files are scanned for private key blocks, AWS access key "
        "ids, GitHub and Slack tokens and long SECRET_KEY literals; only file:line and the "
        "kind are reported.",
        "Remove the secret from the code (and git history), rotate it, and load it from "
        "an environment variable.",
    ),
    _spec(
        "RB-ERR-001",
        "Custom 404 and 500 pages",
        "36.3",
        "error",
        "Templates 404.html and 500.html exist and Django's error views render them with "
        "DEBUG off, without a traceback.",
        "Add templates/404.html and templates/500.html that need no context beyond request_path.",
    ),
    _spec(
        "RB-STATIC-001",
        "STATIC_ROOT is set",
        "36.6",
        "error",
        "STATIC_URL and STATIC_ROOT are set.",
        "Set STATIC_ROOT = BASE_DIR / 'staticfiles' (releasebook collects into each release).",
    ),
    _spec(
        "RB-STATIC-002",
        "collectstatic works",
        "36.6",
        "error",
        "`collectstatic --dry-run --noinput` finds every static file without error; a "
        "digest of what it would collect is recorded for the collectstatic step.",
        "Fix the storage or finder error it reports (often a missing file referenced by "
        "a manifest storage).",
    ),
    _spec(
        "RB-MEDIA-001",
        "Media on persistent storage",
        "36.7",
        "error",
        "With file-system storage, MEDIA_ROOT (symlinks resolved) is an existing, writable "
        "directory outside the release directory.",
        "Point MEDIA_ROOT at the release's `media` link (shared/media) or another persistent "
        "path, or use object storage.",
    ),
    _spec(
        "RB-DB-001",
        "Database is PostgreSQL",
        "36.8",
        "warning",
        "Every DATABASES engine is PostgreSQL (or PostGIS).",
        "Use PostgreSQL in production (DATABASE_URL=postgres://...).",
    ),
    _spec(
        "RB-DB-002",
        "Database answers",
        "36.8",
        "error",
        "Each database answers SELECT 1 within the check's timeout.",
        "Check DATABASE_URL, the network path and the database server's state.",
    ),
    _spec(
        "RB-DB-003",
        "Models match migrations",
        "36.8",
        "error",
        "`makemigrations --check --dry-run` finds no model change without a migration.",
        "Run makemigrations locally, review and commit the migration, then release again.",
    ),
    _spec(
        "RB-DB-004",
        "Migration plan",
        "36.8",
        "error",
        "The migrations that the release will apply are computed from the database and "
        "listed (recorded with the release); conflicts or inconsistent history fail.",
        "Resolve conflicting leaf migrations with makemigrations --merge, or repair the "
        "history the error names.",
    ),
    _spec(
        "RB-MIG-001",
        "Migrations drop or rename nothing the old release uses",
        "36.8",
        "error",
        "Each migration the release would apply is read with Django's loader and project "
        "states: RemoveField, DeleteModel, RenameField, RenameModel, AlterModelTable and an "
        "AlterField that renames the column fail when the table or column exists now, "
        "because the old release keeps serving until the switch and still names them.",
        "Expand/contract: stop using the field or model in one release (a "
        "SeparateDatabaseAndState whose state_operations remove it keeps the column), drop "
        "or rename it in a later release; or acknowledge the migration with a reason.",
    ),
    _spec(
        "RB-MIG-002",
        "Column changes keep the old release's writes valid",
        "36.8",
        "error",
        "An AddField that is NOT NULL without a database default (db_default) on an existing "
        "table, an AlterField that makes a column NOT NULL or changes its type fail: the old "
        "release's inserts omit the new column or write the old type, and most type changes "
        "rewrite the table.",
        "Add the column nullable or with db_default, backfill, and make it NOT NULL (or move "
        "to the new type through a new column) in a later release; or acknowledge it.",
    ),
    _spec(
        "RB-MIG-003",
        "Migrations can be reversed",
        "36.8",
        "error",
        "Every operation is reversible as Django's executor sees it: a RunPython without "
        "reverse_code or a RunSQL without reverse_sql (also inside SeparateDatabaseAndState) "
        "fails, since a rollback could not unapply it.",
        "Give it reverse_code=migrations.RunPython.noop or reverse_sql=migrations.RunSQL.noop "
        "when there is nothing to undo, or the code that undoes it; or acknowledge it.",
    ),
    _spec(
        "RB-MIG-004",
        "Migrations take no long locks (PostgreSQL)",
        "36.8",
        "error",
        "On PostgreSQL, on a table that exists now: an AddIndex (not AddIndexConcurrently), an "
        "AddField or AlterField that creates an index (db_index, unique, ForeignKey), an "
        "AddConstraint of a UniqueConstraint, a new unique_together, and a foreign key added "
        "by AddField or AlterField (it validates every row) fail.",
        "Use AddIndexConcurrently in a migration with atomic = False, build unique indexes "
        "CONCURRENTLY before adding the constraint, add foreign keys NOT VALID and validate "
        "them later; or acknowledge the migration.",
    ),
    _spec(
        "RB-CACHE-001",
        "Cache answers",
        "36.9",
        "error",
        "Each CACHES alias stores and returns a probe key within the timeout.",
        "Check the cache LOCATION (e.g. REDIS_URL) and that the cache server is up.",
    ),
    _spec(
        "RB-CELERY-001",
        "Celery broker reachable",
        "36.9",
        "error",
        "The broker in CELERY_BROKER_URL answers within the timeout: redis PING, amqp TCP "
        "connect, or writable filesystem:// folders.",
        "Check CELERY_BROKER_URL and that the broker is running and reachable from this host.",
    ),
    _spec(
        "RB-DISK-001",
        "Free disk space",
        "36.14",
        "error",
        "Free space under --deploy-path is at least --min-free-mb.",
        "Free space (old logs, unused releases) or grow the disk, then release again.",
    ),
    _spec(
        "RB-WEB-001",
        "gunicorn loads the app",
        "36.8",
        "error",
        "gunicorn's configuration (command line, `GUNICORN_CMD_ARGS`, `gunicorn.conf.py`), "
        "its worker class and the WSGI application load, as `gunicorn --check-config` "
        "loads them, in the gate's own process (when gunicorn is installed).",
        "Fix the import or configuration error gunicorn reports for the WSGI module.",
    ),
    _spec(
        "RB-ASGI-001",
        "ASGI application imports",
        "36.9",
        "error",
        "For an ASGI app (`app.asgi`), the module imports with the release's settings and "
        "names a callable; RB-WEB-001 then loads it with the uvicorn worker class.",
        "Fix the import error reported for the ASGI module, or point app.asgi at the "
        "application (e.g. config.asgi:application).",
    ),
    _spec(
        "RB-ASGI-002",
        "Channel layer is not in-memory",
        "36.9",
        "error",
        "With Channels installed, no CHANNEL_LAYERS alias uses InMemoryChannelLayer, whose "
        "messages never leave one process (other workers and hosts never see them).",
        "Use channels_redis.core.RedisChannelLayer with the Redis every web host shares.",
    ),
    _spec(
        "RB-ASGI-003",
        "Channel layer answers",
        "36.9",
        "error",
        "With Channels installed, each CHANNEL_LAYERS alias sends a message to a new channel "
        "and receives it back within the timeout, and a Redis layer's socket timeout is "
        "longer than its blocking pop (else idle consumers fail and their WebSockets drop).",
        "Check the layer's CONFIG hosts (e.g. REDIS_URL) and that its Redis is running and "
        "reachable from this host; give its hosts no socket timeout "
        '(`{"address": url, "socket_timeout": None}`).',
    ),
    _spec(
        "RB-ASGI-004",
        "WebSocket routes validate the Origin",
        "36.9",
        "error",
        "With Channels installed, the websocket entry of the ProtocolTypeRouter is wrapped "
        "(through any middleware) in AllowedHostsOriginValidator or OriginValidator, or every "
        "route of its URLRouter is.",
        "Wrap the websocket router: "
        '`"websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(...)))`.',
    ),
)

BY_ID: dict[str, CheckSpec] = {spec.id: spec for spec in CHECKS}


def get(check_id: str) -> CheckSpec:
    """The check with this id; KeyError names the unknown id."""
    try:
        return BY_ID[check_id]
    except KeyError:
        raise KeyError(f"unknown readiness check {check_id!r}") from None


def unknown_ids(ids: list[str] | tuple[str, ...]) -> list[str]:
    """The ids not in the registry, in the order given (to reject bad --skip values)."""
    return [i for i in ids if i not in BY_ID]
