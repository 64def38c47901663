"""Typed readers for the environment variables the settings are built from.

Error messages name the variable but never echo its value: values may hold secrets.
"""

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

POSTGRES_CONNECT_TIMEOUT = 5  # seconds; override with ?connect_timeout=N in DATABASE_URL
REDIS_TIMEOUT = 2  # seconds to connect and to answer, so a down cache cannot hang requests


def env_str(name: str, default: str) -> str:
    """The variable's value, or ``default`` when it is unset or empty."""
    return os.environ.get(name) or default


def require_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ImproperlyConfigured(f"environment variable {name} is required")
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off")


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    """A comma-separated variable as a list, blanks dropped."""
    items = [item.strip() for item in os.environ.get(name, "").split(",")]
    items = [item for item in items if item]
    return items or list(default or [])


def parse_database_url(url: str, base_dir: Path) -> dict[str, Any]:
    """Turn DATABASE_URL into a Django ``DATABASES`` entry.

    ``sqlite:////abs/db.sqlite3`` is absolute, ``sqlite:///db.sqlite3`` is relative to
    ``base_dir``; ``postgres://`` and ``postgresql://`` take user, password, host, port,
    database name and libpq options as query parameters.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ImproperlyConfigured("DATABASE_URL must look like scheme://...")
    if scheme == "sqlite":
        path = unquote(rest.partition("?")[0])
        # "sqlite:///x" leaves "/x" and "sqlite:////x" leaves "//x": drop the separator.
        if not path.startswith("/") or len(path) < 2:
            raise ImproperlyConfigured(
                "DATABASE_URL for sqlite must be sqlite:///relative/path or sqlite:////abs/path"
            )
        file = Path(path[1:])
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(file if file.is_absolute() else base_dir / file),
        }
    if scheme in {"postgres", "postgresql"}:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured("DATABASE_URL has an invalid port") from None
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ImproperlyConfigured("DATABASE_URL for postgres must name a database")
        options: dict[str, Any] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT}
        options.update(parse_qsl(parts.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": unquote(parts.hostname or ""),
            "PORT": str(port or ""),
            "OPTIONS": options,
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {scheme!r} is not supported; use sqlite:// or postgres://"
    )


def parse_cache_url(url: str) -> dict[str, Any]:
    """Turn CACHE_URL into a Django ``CACHES`` entry: ``redis://`` and ``rediss://`` use
    Django's Redis backend, ``locmem://`` the per-process memory cache."""
    scheme = url.partition("://")[0].lower()
    if scheme in {"redis", "rediss"}:
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": REDIS_TIMEOUT, "socket_timeout": REDIS_TIMEOUT},
        }
    if scheme == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    raise ImproperlyConfigured(
        f"CACHE_URL scheme {scheme!r} is not supported; use redis://, rediss:// or locmem://"
    )


def filesystem_broker_options(folder: Path) -> dict[str, Any]:
    """Kombu transport options for ``filesystem://``, creating its folders.

    Producers (web) and consumers (worker, beat) must point at the same folder.
    """
    queue, control, processed = folder / "queue", folder / "control", folder / "processed"
    for path in (queue, control, processed):
        path.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "control_folder": str(control),
        "processed_folder": str(processed),
        "store_processed": False,
    }
