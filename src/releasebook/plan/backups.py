"""The values of the backup, restore and drill steps: where backups are on a host, how
many are kept, when a release takes one."""

from __future__ import annotations

from pathlib import Path

from releasebook.inventory import Environment
from releasebook.quoting import ShellVar
from releasebook.runbooks.layout import HostLayout

BACKUP_VAR = ShellVar("BACKUP")  # the runbook's --from: the operator sets it


def backup_dir(env: Environment, layout: HostLayout) -> Path:
    directory = Path(env.backup.dir)
    return directory if directory.is_absolute() else layout.deploy / directory


def backup_values(
    env: Environment, layout: HostLayout, backup_name: str | None
) -> dict[str, object]:
    before = env.backup.before_migrate
    return {
        "backup_dir": backup_dir(env, layout),
        "backup_keep": env.backup.keep,
        "backup_when": "pending-postgresql" if before is None else "pending",
        # A rollback's migrations are applied, not pending: the engine alone decides.
        "backup_unapply_when": "postgresql" if before is None else "always",
        "backup_before_migrate": before is not False,
        "no_backup_before_migrate": before is False,
        "backup_name": backup_name if backup_name is not None else BACKUP_VAR,
    }
