"""/healthz answers whether the process is alive; /readyz whether it should get traffic.

Failure messages carry the exception type and first line only, with the database
password masked, so they are safe to show to whoever can reach the probe.
"""

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .release import current_release

logger = logging.getLogger(__name__)

Check = dict[str, Any]
_SKIPPED: Check = {"ok": False, "error": "skipped: database unavailable"}


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok", "release": current_release().release_id})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    release = current_release()
    checks = run_checks(float(getattr(settings, "HEALTH_CHECK_TIMEOUT", 3.0)))
    ok = all(check["ok"] for check in checks.values())
    if not ok:
        logger.warning("readiness check failed: %s", checks)
    body = {
        "status": "ok" if ok else "fail",
        "release": release.release_id,
        "git_sha": release.git_sha,
        "checks": checks,
    }
    return JsonResponse(body, status=200 if ok else 503)


def run_checks(timeout: float, alias: str = DEFAULT_DB_ALIAS) -> dict[str, Check]:
    """Run the database checks, giving up after ``timeout`` seconds.

    They run in a daemon thread (with its own connection, as Django connections are
    per thread) because no single driver setting bounds connect, query and
    migration-table reads on every backend; a hung database cannot hang the probe.
    """
    result: dict[str, dict[str, Check]] = {}

    def target() -> None:
        result["checks"] = _database_checks(alias)

    worker = threading.Thread(target=target, name="readyz", daemon=True)
    worker.start()
    worker.join(timeout)
    if "checks" in result:
        return result["checks"]
    return {
        "database": {"ok": False, "error": f"no answer within {timeout:g}s"},
        "migrations": _SKIPPED,
    }


def _database_checks(alias: str) -> dict[str, Check]:
    started = time.monotonic()
    try:
        connection = connections[alias]
    except Exception as exc:  # e.g. the database driver is not installed
        return {"database": _failure(exc, started, alias), "migrations": _SKIPPED}
    try:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        except Exception as exc:
            return {"database": _failure(exc, started, alias), "migrations": _SKIPPED}
        database = {"ok": True, "duration_ms": _ms_since(started)}
        return {"database": database, "migrations": _migrations_check(connection, alias)}
    finally:
        connection.close()


def _migrations_check(connection: BaseDatabaseWrapper, alias: str) -> Check:
    started = time.monotonic()
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:
        return _failure(exc, started, alias)
    pending = [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]
    check: Check = {"ok": not pending, "pending": len(pending), "duration_ms": _ms_since(started)}
    if pending:
        more = f" and {len(pending) - 10} more" if len(pending) > 10 else ""
        check["error"] = "unapplied migrations: " + ", ".join(pending[:10]) + more
    return check


def _failure(exc: BaseException, started: float, alias: str) -> Check:
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    password = settings.DATABASES.get(alias, {}).get("PASSWORD")
    if password:
        message = message.replace(password, "***")
    return {"ok": False, "duration_ms": _ms_since(started), "error": message[:300]}


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
