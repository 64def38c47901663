"""``backup:`` in the inventory: where the migrate host keeps database backups, how many,
and whether a release takes one before ``migrate``.

```yaml
backup:
  dir: shared/backups       # relative to deploy.path, or absolute
  keep: 7                   # the newest N are kept
  before_migrate: true      # default: only for PostgreSQL; false: never
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from releasebook.errors import InventoryError
from releasebook.inventory.model import BackupSettings

SAFE_DIR = re.compile(r"^[A-Za-z0-9._/-]+$")


class Reader(Protocol):
    """What the inventory loader offers: errors that name the file and line."""

    def error(self, key_path: str, message: str) -> InventoryError: ...

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]: ...


def parse_backup(r: Reader, data: Mapping[str, Any]) -> BackupSettings:
    section = r.mapping(data.get("backup"), "backup", ("dir", "keep", "before_migrate"))
    defaults = BackupSettings()
    directory = section.get("dir", defaults.dir)
    if (
        not isinstance(directory, str)
        or not SAFE_DIR.fullmatch(directory)
        or ".." in directory.split("/")
    ):
        raise r.error(
            "backup.dir",
            "backup.dir: expected a path of letters, digits, '.', '_', '-' and '/' "
            f"(relative to deploy.path, or absolute), got {directory!r}",
        )
    keep = section.get("keep", defaults.keep)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise r.error(
            "backup.keep", f"backup.keep: expected a number of backups, 1 or more, got {keep!r}"
        )
    before = section.get("before_migrate")
    if before is not None and not isinstance(before, bool):
        raise r.error(
            "backup.before_migrate",
            f"backup.before_migrate: expected true or false, got {before!r}",
        )
    return BackupSettings(dir=directory.rstrip("/") or "/", keep=keep, before_migrate=before)
