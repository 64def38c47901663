"""``migrations:`` in the inventory: the migrations whose readiness-gate findings this
environment lets pass, each with its reason, and how they reach the gate.

```yaml
migrations:
  acknowledge:
    shop.0007_drop_legacy_sku: "no release since 41 reads legacy_sku"
```

Each key is ``<app label>.<migration name>`` as Django names them; each value is the
reason, one line, recorded with the release. The gate receives them as
``--acknowledge app.migration=REASON`` (:func:`acknowledge_args`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from releasebook.errors import InventoryError
from releasebook.inventory.model import MigrationSettings

MIGRATION_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z0-9_]+$")
MAX_REASON = 300


class Reader(Protocol):
    """What the inventory loader offers: errors that name the file and line."""

    def error(self, key_path: str, message: str) -> InventoryError: ...

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]: ...


def parse_migrations(r: Reader, data: Mapping[str, Any]) -> MigrationSettings:
    section = r.mapping(data.get("migrations"), "migrations", ("acknowledge",))
    raw = section.get("acknowledge")
    if raw is None:
        return MigrationSettings()
    if not isinstance(raw, dict):
        raise r.error(
            "migrations.acknowledge",
            "migrations.acknowledge: expected a mapping of app.migration to the reason",
        )
    acknowledge: dict[str, str] = {}
    for name, reason in raw.items():
        where = f"migrations.acknowledge.{name}"
        if not MIGRATION_KEY.fullmatch(name):
            raise r.error(
                where,
                f"{where}: expected <app label>.<migration name>, e.g. shop.0007_drop_sku",
            )
        if not isinstance(reason, str) or not reason.strip():
            raise r.error(where, f"{where}: expected the reason this migration is acknowledged")
        if any(ord(c) < 32 or ord(c) == 127 for c in reason) or len(reason) > MAX_REASON:
            raise r.error(
                where, f"{where}: expected a one-line reason of at most {MAX_REASON} characters"
            )
        acknowledge[name] = reason.strip()
    return MigrationSettings(acknowledge=acknowledge)


def acknowledge_args(settings: MigrationSettings) -> list[str]:
    """The gate's arguments for these acknowledgements (unquoted words)."""
    words: list[str] = []
    for name, reason in settings.acknowledge.items():
        words += ["--acknowledge", f"{name}={reason}"]
    return words
