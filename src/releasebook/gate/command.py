"""How the controller ships and runs the gate: the script's source, where it goes in the
artifact, and the command line for each host.

The build copies :data:`GATE_SOURCE` into the artifact as :data:`GATE_IN_RELEASE`; the
plan then runs :data:`GATE_COMMAND` (a ``releasebook.runbooks.release`` template, filled and quoted
by ``releasebook.plan``) with ``gate_options`` as a ``Raw`` value. The migration state
script (:data:`MIGRATION_STATE_SOURCE`, shipped as :data:`MIGRATION_STATE_IN_RELEASE`)
has its templates here too, for the migrate and rollback steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from releasebook.errors import UsageError
from releasebook.gate.registry import unknown_ids

GATE_SOURCE = Path(__file__).with_name("gate.py")
GATE_IN_RELEASE = ".releasebook/gate.py"
# The migration state script ships next to the gate (the build copies both).
MIGRATION_STATE_SOURCE = Path(__file__).with_name("migration_state.py")
MIGRATION_STATE_IN_RELEASE = ".releasebook/migration_state.py"
# Where the gate records what collectstatic would read (gate.STATIC_INPUTS; the tests keep
# them equal), for the collectstatic step.
STATIC_INPUTS = ".releasebook/static-inputs"
# Where it records the pending migrations it found (gate.PENDING_MIGRATIONS), which the
# backup before migrate reads (db_backup.PENDING_MIGRATIONS).
PENDING_MIGRATIONS = ".releasebook/pending-migrations"
# The database backup helper (backup, restore, restore drill) ships with them too.
DB_BACKUP_SOURCE = Path(__file__).with_name("db_backup.py")
DB_BACKUP_IN_RELEASE = ".releasebook/db_backup.py"
# What the build copies into the artifact's .releasebook/.
GATE_FILES = (GATE_SOURCE, MIGRATION_STATE_SOURCE, DB_BACKUP_SOURCE)

# Placeholders are releasebook.plan host values, except {gate_options} (gate_options());
# {app_option} is `--wsgi MODULE:CALLABLE` or, for an ASGI app, `--asgi MODULE:CALLABLE`.
GATE_COMMAND = (
    "cd {release_dir} && {launcher} venv/bin/python "
    + GATE_IN_RELEASE
    + " --json --expect-settings {settings_module} {app_option}"
    " --min-free-mb {min_free_mb} --deploy-path {deploy}{gate_options}"
)


def validate_skips(skips: Iterable[str]) -> tuple[str, ...]:
    """The ids to skip, in order and once each; UsageError (exit 2) names unknown ones."""
    ids = tuple(dict.fromkeys(skips))
    unknown = unknown_ids(ids)
    if unknown:
        raise UsageError("--skip: unknown readiness check(s): " + ", ".join(unknown))
    return ids
