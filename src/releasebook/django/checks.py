"""The readiness checks shared by /readyz and ``manage.py readiness``.

- ``database`` (``database:<alias>`` for other aliases): ``SELECT 1`` on each database.
- ``migrations``: no unapplied migrations on the default database.
- ``cache`` (``cache:<alias>``): set, get and delete a probe key, for every cache whose
  backend lives outside the process; the dummy and local-memory backends cannot be down.
- ``broker``: the Celery broker, when CELERY_BROKER_URL is set (see ``broker``).
- ``env`` (``manage.py readiness`` only): required environment variables are set.

Each check has RELEASEBOOK_CHECK_TIMEOUT seconds (default 3), or its own entry in
RELEASEBOOK_CHECK_TIMEOUTS, e.g. ``{"broker": 1.5}``.
"""

import contextlib
import importlib
import os
import re
import uuid
from collections.abc import Iterable
from functools import partial

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.utils import load_backend
from django.utils.module_loading import import_string

from .broker import broker_url, celery_transport, check_broker
from .runner import Check, Outcome

DEFAULT_TIMEOUT = 3.0
IN_PROCESS_CACHES = frozenset(
    {
        "django.core.cache.backends.dummy.DummyCache",
        "django.core.cache.backends.locmem.LocMemCache",
    }
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def readiness_checks() -> list[Check]:
    """The checks /readyz runs, as configured by the settings."""
    checks: list[Check] = []
    for alias in settings.DATABASES:
        name = _named("database", alias)
        checks.append(Check(name, partial(check_database, alias), check_timeout(name)))
    checks.append(Check("migrations", check_migrations, check_timeout("migrations")))
    for alias, config in settings.CACHES.items():
        if config.get("BACKEND") not in IN_PROCESS_CACHES:
            name = _named("cache", alias)
            checks.append(Check(name, partial(check_cache, alias), check_timeout(name)))
    url = broker_url()
    if url:
        timeout = check_timeout("broker")
        checks.append(Check("broker", partial(check_broker, url, timeout), timeout))
    return checks


def warm_up() -> None:
    """Import, once and in one thread, what the checks' client libraries import. Checks
    run in threads, and a client imported by two of them at once can deadlock or be
    seen half-initialized (redis's, for one), failing a fresh process's first requests.
    Errors are left to the checks, which report them."""
    for config in settings.DATABASES.values():
        with contextlib.suppress(Exception):
            load_backend(config.get("ENGINE", ""))
    modules = []
    for config in settings.CACHES.values():
        backend = str(config.get("BACKEND", ""))
        with contextlib.suppress(Exception):
            import_string(backend)
        if "redis" in backend.lower():
            modules.append("redis")
    url = broker_url()
    if url:
        if url.partition("://")[0].lower() in {"redis", "rediss"}:
            modules.append("redis")
        with contextlib.suppress(Exception):
            celery_transport(url)
    for module in modules:
        with contextlib.suppress(Exception):
            importlib.import_module(module)


def env_check(names: Iterable[str]) -> Check:
    return Check("env", partial(check_env, tuple(names)), check_timeout("env"))


def check_database(alias: str) -> Outcome:
    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()
    return Outcome(message="SELECT 1 answered")


def check_migrations() -> Outcome:
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    finally:
        connection.close()
    pending = [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]
    if not pending:
        return Outcome(message="no unapplied migrations", extra={"pending": 0})
    return Outcome(
        ok=False,
        message="unapplied migrations: " + _first_of(pending, limit=200),
        extra={"pending": len(pending)},
    )


def check_cache(alias: str) -> Outcome:
    cache = caches[alias]
    key = f"releasebook:readiness:{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    try:
        cache.set(key, token, timeout=30)
        read_back = cache.get(key)
        cache.delete(key)
    finally:
        cache.close()
    if read_back != token:
        return Outcome(ok=False, message="a value written to the cache was not read back")
    return Outcome(message="set, get and delete answered")


def check_env(names: tuple[str, ...]) -> Outcome:
    """Whether each variable is set and non-empty; values are never read out."""
    if not names:
        return Outcome(message="none required")
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        return Outcome(ok=False, message="missing or empty: " + ", ".join(missing))
    return Outcome(message="set: " + ", ".join(names))


def required_env_names(extra: Iterable[str] = ()) -> list[str]:
    """RELEASEBOOK_REQUIRED_ENV plus ``extra``, deduplicated, in order."""
    configured = getattr(settings, "RELEASEBOOK_REQUIRED_ENV", [])
    if not isinstance(configured, list | tuple):
        raise ImproperlyConfigured("RELEASEBOOK_REQUIRED_ENV must be a list of names")
    names: list[str] = []
    for name in [*configured, *extra]:
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ImproperlyConfigured(f"not an environment variable name: {name!r}")
        if name not in names:
            names.append(name)
    return names


def check_timeout(name: str) -> float:
    per_check = getattr(settings, "RELEASEBOOK_CHECK_TIMEOUTS", {})
    if not isinstance(per_check, dict):
        raise ImproperlyConfigured("RELEASEBOOK_CHECK_TIMEOUTS must map check names to seconds")
    value = per_check.get(name, getattr(settings, "RELEASEBOOK_CHECK_TIMEOUT", DEFAULT_TIMEOUT))
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ImproperlyConfigured(f"the timeout of check {name!r} must be positive seconds")
    return float(value)


def _first_of(names: list[str], limit: int) -> str:
    """``names`` joined by commas, cut to whole names within ``limit`` characters."""
    shown = names[:1]
    for name in names[1:]:
        if len(", ".join([*shown, name])) > limit:
            break
        shown.append(name)
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _named(kind: str, alias: str) -> str:
    return kind if alias == "default" else f"{kind}:{alias}"
