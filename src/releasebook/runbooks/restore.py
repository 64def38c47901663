"""Restore and the restore drill, as data.

``inv restore --from BACKUP --yes`` checks the backup, puts the web hosts in maintenance
(the flag file ``shared/maintenance``, which releasebook's Django middleware answers with
a 503), stops the Celery worker and beat, replaces the database's contents with the
backup's, brings the migrations to what the live release expects, starts the workers,
leaves maintenance and verifies ``/readyz``. ``inv restore-drill`` restores the newest
backup into a scratch database, compares it with the live one and drops it.
"""

from __future__ import annotations

from releasebook.runbooks.backup import IN_CURRENT
from releasebook.runbooks.bookkeeping import LOCK, RECORD, UNLOCK
from releasebook.runbooks.maintenance import MAINTENANCE_OFF, MAINTENANCE_ON
from releasebook.runbooks.model import Runbook, Step, cmd
from releasebook.runbooks.release import VERIFY

IF_SUPERVISED = "if {supervisorctl} pid >/dev/null 2>&1; then "

CHECK = Step(
    name="check",
    title="Check the backup",
    why=(
        "On the migrate host, before anything changes: the backup named by `--from` is in "
        "the backup directory and its SHA-256 matches its manifest."
    ),
    roles=frozenset({"migrate"}),
    once=True,
    commands=(cmd(IN_CURRENT + " verify --dir {backup_dir} --name {backup_name} --json"),),
    reports=True,
    verify_text='It printed `{"ok": true, "backup": {...}}`.',
    undo_text="Nothing to undo: it only reads.",
    timeout=600,
)

MAINTENANCE_ON = Step(
    name="maintenance_on",
    title="Put the web hosts in maintenance",
    why=(
        "Creates the maintenance flag `shared/maintenance` on every web host: the app's "
        "releasebook middleware answers every request with a 503 and `Retry-After` while "
        "it exists (`/healthz` stays live), so no request reads or writes the database "
        "while it is replaced."
    ),
    roles=frozenset({"web"}),
    phase="live",
    commands=MAINTENANCE_ON.commands,
    verify=MAINTENANCE_ON.verify,
    verify_text="The flag file exists on every web host.",
    undo_text=(
        "Left on when a later step fails: the database may be half restored. Remove "
        "`shared/maintenance` once it is right (or run the restore again)."
    ),
    timeout=60,
)

STOP_WORKERS = Step(
    name="stop_workers",
    title="Stop the Celery worker and beat",
    why=(
        "Stops the worker (a warm shutdown: running tasks finish) and beat, so no task "
        "writes to the database while it is replaced and none is scheduled meanwhile."
    ),
    roles=frozenset({"worker", "beat"}),
    phase="live",
    commands=(
        cmd(IF_SUPERVISED + "{supervisorctl} stop worker; fi", "worker"),
        cmd(IF_SUPERVISED + "{supervisorctl} stop beat; fi", "beat"),
    ),
    verify_text="`supervisorctl status` says STOPPED for each.",
    undo_text="Left stopped when a later step fails; `start_workers` below starts them.",
    timeout=600,
)

RESTORE = Step(
    name="restore",
    title="Restore the database from the backup",
    why=(
        "Runs once, on the migrate host, from the live release with its env file. "
        "PostgreSQL: tables the backup does not have are dropped, then `pg_restore "
        "--clean --if-exists --single-transaction` replaces the others, so the database is "
        "exactly the backup's (the connection passed in libpq's `PG*` environment "
        "variables). SQLite: the backup is copied over the database with the online "
        "backup API. Everything written since the backup was taken is lost."
    ),
    roles=frozenset({"migrate"}),
    once=True,
    phase="live",
    commands=(cmd(IN_CURRENT + " restore --dir {backup_dir} --name {backup_name} --json"),),
    reports=True,
    verify_text='It printed `{"ok": true, "backup": {...}, "seconds": ...}`.',
    undo_text=(
        "None: restore another backup (the newest one taken before this restore is in "
        "`inv history`) or fix the database by hand; maintenance stays on meanwhile."
    ),
    timeout=3600,
)

MIGRATE_LIVE = Step(
    name="migrate",
    title="Bring the migrations to what the live release expects",
    why=(
        "The backup may predate migrations the live release has: `manage.py migrate` "
        "from the live release applies them, so the schema is exactly what the code "
        "that serves expects."
    ),
    roles=frozenset({"migrate"}),
    once=True,
    phase="live",
    commands=(
        cmd("cd {current} && {current_launcher} venv/bin/python manage.py migrate --noinput"),
    ),
    verify=(cmd("cd {current} && {current_launcher} venv/bin/python manage.py migrate --check"),),
    verify_text="`manage.py migrate --check` of the live release exits 0.",
    undo_text="None: maintenance stays on until the schema is fixed.",
    timeout=3600,
)

START_WORKERS = Step(
    name="start_workers",
    title="Start the Celery worker and beat",
    why="Starts the worker and beat stopped above, on the restored database.",
    roles=frozenset({"worker", "beat"}),
    phase="live",
    commands=(
        cmd(IF_SUPERVISED + "{supervisorctl} start worker; fi", "worker"),
        cmd(IF_SUPERVISED + "{supervisorctl} start beat; fi", "beat"),
    ),
    verify=(
        cmd(IF_SUPERVISED + "{supervisorctl} status worker; fi", "worker"),
        cmd(IF_SUPERVISED + "{supervisorctl} status beat; fi", "beat"),
    ),
    verify_text="`supervisorctl status` says RUNNING for each.",
    undo_text="Nothing to undo.",
    timeout=600,
)

MAINTENANCE_OFF = Step(
    name="maintenance_off",
    title="Leave maintenance",
    why="Removes the maintenance flag on every web host: requests are served again.",
    roles=frozenset({"web"}),
    phase="live",
    commands=MAINTENANCE_OFF.commands,
    verify=MAINTENANCE_OFF.verify,
    verify_text="The flag file is gone on every web host.",
    undo_text="Nothing to undo.",
    timeout=60,
)

RESTORE_RUNBOOK = Runbook(
    name="restore",
    title="Restore",
    steps=(
        LOCK,
        CHECK,
        MAINTENANCE_ON,
        STOP_WORKERS,
        RESTORE,
        MIGRATE_LIVE,
        START_WORKERS,
        MAINTENANCE_OFF,
        VERIFY,
        RECORD,
        UNLOCK,
    ),
)

DRILL = Step(
    name="drill",
    title="Restore the newest backup into a scratch database and compare",
    why=(
        "Runs once, on the migrate host, from the live release with its env file, and "
        "never writes to the live database: the newest backup (its checksum checked) is "
        "restored into a new scratch database (PostgreSQL: `CREATE DATABASE`, so the "
        "database user needs CREATEDB; SQLite: a temporary file), which is then compared "
        "with the live one: its applied migrations with the live release's migration "
        "files (a migration the live release does not know makes it inconsistent), each "
        "table's row count with the live table's. The scratch database is dropped, "
        "whatever happened, and how long the restore took is printed and recorded: the "
        "number to know before an incident."
    ),
    roles=frozenset({"migrate"}),
    once=True,
    commands=(cmd(IN_CURRENT + " drill --dir {backup_dir} --json"),),
    reports=True,
    verify_text=(
        'It printed `{"ok": true, "restore_seconds": ..., "migrations": {"consistent": '
        'true, ...}, "tables": [...]}`.'
    ),
    undo_text="Nothing to undo: the scratch database is dropped by the step itself.",
    timeout=3600,
)

DRILL_RUNBOOK = Runbook(
    name="restore_drill", title="Restore drill", steps=(LOCK, DRILL, RECORD, UNLOCK)
)
