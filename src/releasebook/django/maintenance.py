"""Maintenance mode: while a flag file exists, the site answers 503 with Retry-After.

The file is ``shared/maintenance`` in the deploy directory; releasebook's launcher exports
its path as ``RELEASEBOOK_MAINTENANCE_FILE`` (the RELEASEBOOK_MAINTENANCE_FILE setting
overrides it). ``inv maintenance on|off`` creates and removes it on every web host.
``/healthz`` stays 200 (the process is alive); ``/readyz`` answers 503 with status
``maintenance``, except to releasebook's own readiness probe (the ``X-Releasebook-Probe``
header), which must see whether a release run in maintenance is ready before it ends it.
"""

import os
from pathlib import Path

from django.conf import settings

ENV_NAME = "RELEASEBOOK_MAINTENANCE_FILE"
PROBE_HEADER = "X-Releasebook-Probe"
DEFAULT_RETRY_AFTER = 120


def flag_path() -> Path | None:
    configured = getattr(settings, "RELEASEBOOK_MAINTENANCE_FILE", None) or os.environ.get(ENV_NAME)
    return Path(configured) if configured else None


def in_maintenance() -> bool:
    """Whether the flag file exists now (checked on every request: it is one stat)."""
    path = flag_path()
    return path is not None and path.exists()


def retry_after() -> int:
    value = getattr(settings, "RELEASEBOOK_MAINTENANCE_RETRY_AFTER", DEFAULT_RETRY_AFTER)
    return int(value)
