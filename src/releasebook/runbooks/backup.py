"""Backups, as data: the backup a release takes before ``migrate`` and the step of
``inv backup``, which both run the host-side helper ``db_backup.py`` (shipped in every
release's ``.releasebook/``) through a release's env launcher, so the database's
credentials come from the release's env file and are never on a command line.

The restore and drill runbooks are in :mod:`releasebook.runbooks.restore`.
"""

from __future__ import annotations

from releasebook.gate.command import DB_BACKUP_IN_RELEASE
from releasebook.runbooks.bookkeeping import LOCK, RECORD, UNLOCK
from releasebook.runbooks.model import Runbook, Step, cmd

# The helper, run from the live release (`current`) or from the release being made.
IN_CURRENT = f"cd {{current}} && {{current_launcher}} venv/bin/python {DB_BACKUP_IN_RELEASE}"
IN_RELEASE = f"cd {{release_dir}} && {{launcher}} venv/bin/python {DB_BACKUP_IN_RELEASE}"
IN_LIVE = f"cd {{live_dir}} && {{live_launcher}} venv/bin/python {DB_BACKUP_IN_RELEASE}"
DUMP_ARGS = " dump --dir {backup_dir} --keep {backup_keep} --json"

BACKUP_WHAT = (
    "PostgreSQL is dumped with `pg_dump -Fc` (a consistent snapshot, taken while the app "
    "serves), the connection passed to it in libpq's `PG*` environment variables; "
    "SQLite is copied with its online backup API. The file is named "
    "`<UTC time>-<release>-<git sha>` (`.dump` or `.sqlite3`), mode 0600, in the "
    "backup directory (`backup.dir`, outside the releases), with its `.sha256` and a "
    "manifest (`.json`: the release, git sha, engine, size, checksum and the applied "
    "migrations). Only the newest `backup.keep` backups are kept."
)

BACKUP_BEFORE_MIGRATE = Step(
    name="backup",
    title="Back up the database before migrating",
    barrier=True,
    why=(
        "Runs once, on the migrate host, after the readiness gate passed everywhere and "
        "only when `migrate` has migrations to apply: a release without pending "
        "migrations takes none. On by default for PostgreSQL (`backup.before_migrate: "
        "true` takes one for SQLite too, `false` switches it off). It runs from the new "
        "release (whose migrations decide what is pending) with its env file. Where the "
        "release's readiness gate found the plan empty (it records it in "
        "`.releasebook/pending-migrations`, under the same lock), the helper says so "
        "without setting Django up. " + BACKUP_WHAT
    ),
    roles=frozenset({"migrate"}),
    once=True,
    commands=(
        cmd(
            IN_RELEASE + DUMP_ARGS + " --label before-migrate --when {backup_when}",
            when="backup_before_migrate",
        ),
        cmd(
            "echo 'backup.before_migrate is false: no backup before migrating'",
            when="no_backup_before_migrate",
        ),
    ),
    reports=True,
    # What it printed is the check: a skipped backup (nothing pending, SQLite) makes no
    # backup directory, so there is no file test that holds for both.
    verify_text=(
        'It printed `{"ok": true, "backup": {...}}` naming the file and its checksum, or '
        '`"skipped"` saying why no backup was needed; the history records which.'
    ),
    undo_text=(
        "Nothing is undone: a backup is kept (retention removes the oldest ones). "
        "`inv restore --from NAME` puts it back."
    ),
    timeout=3600,
)

BACKUP_BEFORE_UNAPPLY = Step(
    name="backup",
    title="Back up the database before unapplying (--migrate)",
    barrier=True,
    why=(
        "Runs once, on the migrate host, only when `inv rollback --migrate` has migrations "
        "to unapply (a rollback that keeps the schema takes none), after maintenance mode "
        "went on where it was asked for. Unapplying drops what those migrations added, so "
        "this is what brings it back. The same switch as the release's backup before "
        "migrating: on by default for PostgreSQL (`backup.before_migrate: true` takes one "
        "for SQLite too, `false` switches it off). It runs from the live release with its "
        "env file. " + BACKUP_WHAT
    ),
    roles=frozenset({"migrate"}),
    once=True,
    commands=(
        cmd(
            IN_LIVE + DUMP_ARGS + " --label before-unapply --when {backup_unapply_when}",
            when="backup_before_migrate",
        ),
        cmd(
            "echo 'backup.before_migrate is false: no backup before unapplying'",
            when="no_backup_before_migrate",
        ),
    ),
    reports=True,
    verify_text=BACKUP_BEFORE_MIGRATE.verify_text,
    undo_text=(
        "Nothing is undone: a backup is kept. `inv restore --from NAME` puts the data "
        "the unapplied migrations dropped back (after releasing the newer code again)."
    ),
    timeout=3600,
)

BACKUP = Step(
    name="backup",
    title="Back up the database",
    why="Runs once, on the migrate host, from the live release with its env file. " + BACKUP_WHAT,
    roles=frozenset({"migrate"}),
    once=True,
    commands=(cmd(IN_CURRENT + DUMP_ARGS + " --label backup"),),
    reports=True,
    verify=(cmd('cd {backup_dir} && sha256sum --quiet -c "$(ls -1 *.sha256 | tail -n 1)"'),),
    verify_text=(
        'It printed `{"ok": true, "backup": {...}}`; `sha256sum -c` accepts the newest '
        "backup's checksum file."
    ),
    undo_text="Nothing to undo: a backup is kept.",
    timeout=3600,
)

BACKUP_RUNBOOK = Runbook(name="backup", title="Backup", steps=(LOCK, BACKUP, RECORD, UNLOCK))

# Read before any lock is taken: the manifests of the backups on the migrate host, one
# JSON object a line (what `inv restore` checks its --from against).
LIST_BACKUPS = (
    cmd(
        "for manifest in {backup_dir}/*.json; do\n"
        '  [ -f "$manifest" ] && head -c 65536 "$manifest" && echo\n'
        "done; true"
    ),
)
