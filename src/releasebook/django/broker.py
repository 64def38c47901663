"""Reachability of the Celery broker named by CELERY_BROKER_URL (setting, else env).

- ``redis://``, ``rediss://``: PING (needs the ``redis`` package).
- ``filesystem://``: the folders of CELERY_BROKER_TRANSPORT_OPTIONS ``data_folder_in``
  and ``data_folder_out`` exist and are writable.
- ``amqp://``, ``amqps://``, ``pyamqp://``: a TCP connection to the host and port.
- ``memory://`` and other transports are reported as not checked.

With failover URLs (``url1;url2``) the first one is checked.
"""

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from .runner import Outcome

AMQP_PORTS = {"amqp": 5672, "pyamqp": 5672, "amqps": 5671}


def broker_url() -> str | None:
    url = getattr(settings, "CELERY_BROKER_URL", None) or os.environ.get("CELERY_BROKER_URL")
    if not isinstance(url, str) or not url.strip():
        return None
    return url.split(";")[0].strip()


def celery_transport(url: str) -> str | None:
    """Import the Celery transport the app's workers use for ``url`` (kombu's), as a
    worker does when it starts: a dependency it lacks fails here, not only in the worker.
    Its module name; None when kombu is not installed (the app has no Celery)."""
    try:
        from kombu.transport import resolve_transport
    except ImportError:
        return None
    scheme = url.partition("://")[0].lower()
    try:
        transport = resolve_transport(scheme)
    except KeyError:
        raise ValueError(f"kombu has no transport for {scheme}://") from None
    return getattr(transport, "__module__", str(transport))


def check_broker(url: str, timeout: float) -> Outcome:
    scheme = url.partition("://")[0].lower()
    transport = celery_transport(url)
    outcome = _reach_broker(url, scheme, timeout)
    if transport is None or not outcome.ok:
        return outcome
    return Outcome(outcome.ok, f"{outcome.message}; Celery's {transport} loads", outcome.extra)


def _reach_broker(url: str, scheme: str, timeout: float) -> Outcome:
    if scheme in {"redis", "rediss"}:
        return _ping_redis(url, timeout)
    if scheme == "filesystem":
        return _filesystem_folders()
    if scheme in AMQP_PORTS:
        return _connect_tcp(url, AMQP_PORTS[scheme], timeout)
    return Outcome(message=f"not checked: {scheme}:// is not supported by this check")


def _ping_redis(url: str, timeout: float) -> Outcome:
    import redis

    # Connect and reply share the budget, so a hung server is reported as such rather
    # than as the check's own timeout.
    half = timeout / 2
    client = redis.Redis.from_url(url, socket_connect_timeout=half, socket_timeout=half)
    try:
        client.ping()
    finally:
        client.close()
    return Outcome(message="PING answered")


def _filesystem_folders() -> Outcome:
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    # kombu's defaults, relative to the working directory like kombu resolves them.
    folders = {
        Path(options.get("data_folder_in", "data_in")),
        Path(options.get("data_folder_out", "data_out")),
    }
    for folder in sorted(folders):
        if not folder.is_dir():
            return Outcome(ok=False, message=f"broker folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            return Outcome(ok=False, message=f"broker folder {folder} is not writable")
    return Outcome(message="broker folders exist and are writable")


def _connect_tcp(url: str, default_port: int, timeout: float) -> Outcome:
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or default_port
    with socket.create_connection((host, port), timeout=timeout):
        pass
    return Outcome(message=f"TCP connection to {host}:{port} accepted")
