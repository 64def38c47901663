"""``inv backup``, ``inv restore`` and ``inv restore-drill``: flags -> library -> exit codes."""

from __future__ import annotations

from collections.abc import Callable

from invoke.context import Context
from invoke.tasks import task

from releasebook.cli.kit import session
from releasebook.cli.plan_print import print_plan
from releasebook.deploy.backups import available, normalized_name
from releasebook.deploy.backups import backup as backup_run
from releasebook.deploy.backups import restore as restore_run
from releasebook.deploy.backups import restore_drill as drill_run
from releasebook.errors import UsageError
from releasebook.inventory import Environment
from releasebook.plan.build import build_plan
from releasebook.plan.model import Plan, PlanKind
from releasebook.plan.source import find_source

DRY_HELP = "print the exact plan (the live release shown as ${RELEASE}) and touch nothing"
JSON_HELP = "machine-readable events, one JSON object per line"
VERBOSE_HELP = "show each command and its output (the run's log always has them)"
WAIT_HELP = "if another run holds the lock, wait up to this many seconds for it"


def _dry(environment: Environment, kind: PlanKind, backup: str | None = None) -> Plan:
    return build_plan(environment, kind, source=find_source(environment), run=None, backup=backup)


def _show(plan: Plan, out: Callable[[str], None]) -> None:
    print_plan(plan, out)


def _wait(seconds: float) -> float:
    if seconds < 0:
        raise UsageError(f"--wait {seconds:g}: expected seconds to wait, 0 or more")
    return seconds


@task(
    help={
        "env": "inventory whose database to back up: inventories/<env>.yml",
        "dry_run": DRY_HELP,
        "json": JSON_HELP,
        "verbose": VERBOSE_HELP,
        "wait": WAIT_HELP,
    }
)
def backup(
    c: Context,
    env: str = "",
    dry_run: bool = False,
    json: bool = False,
    verbose: bool = False,
    wait: float = 0,
) -> None:
    """Back up the app's database on the migrate host (pg_dump -Fc or SQLite's backup API)
    into backup.dir, checksummed, mode 0600, keeping backup.keep; recorded in the history."""
    with session("backup") as s:
        environment = s.load(env)
        if dry_run:
            _show(_dry(environment, "backup"), s.print)
            return
        backup_run(environment, s.reporter(json, verbose=verbose), s.masker, lock_wait=_wait(wait))


@task(
    help={
        "env": "inventory whose database to restore: inventories/<env>.yml",
        "from": "the backup to restore: its name, as `inv backup` and `inv history` print it",
        "yes": "go ahead: the database's contents are replaced by the backup's",
        "dry_run": DRY_HELP,
        "json": JSON_HELP,
        "verbose": VERBOSE_HELP,
        "wait": WAIT_HELP,
    }
)
def restore(
    c: Context,
    env: str = "",
    from_: str = "",
    yes: bool = False,
    dry_run: bool = False,
    json: bool = False,
    verbose: bool = False,
    wait: float = 0,
) -> None:
    """Restore the database from a backup: maintenance on, workers stopped, pg_restore
    --clean, migrations brought to the live release's, /readyz verified, maintenance off."""
    with session("restore") as s:
        environment = s.load(env)
        if not from_:
            host, known = available(environment, s.masker)
            for item in known:
                s.print(
                    f"{item['name']}  {item.get('created_at', '')}  {item.get('engine', '')}  "
                    f"{item.get('size', '')} bytes  release {item.get('release_id', '')}"
                )
            raise UsageError(
                f"--from BACKUP is required: one of the {len(known)} backups on {host}"
                + (" listed above" if known else "")
            )
        if dry_run:
            _show(_dry(environment, "restore", normalized_name(from_)), s.print)
            return
        restore_run(
            environment,
            s.reporter(json, verbose=verbose),
            s.masker,
            name=from_,
            yes=yes,
            lock_wait=_wait(wait),
        )


@task(
    name="restore-drill",
    help={
        "env": "inventory whose newest backup to try: inventories/<env>.yml",
        "dry_run": DRY_HELP,
        "json": JSON_HELP,
        "verbose": VERBOSE_HELP,
        "wait": WAIT_HELP,
    },
)
def restore_drill(
    c: Context,
    env: str = "",
    dry_run: bool = False,
    json: bool = False,
    verbose: bool = False,
    wait: float = 0,
) -> None:
    """Restore the newest backup into a scratch database, compare its migrations and row
    counts with the live ones, drop it; print and record how long the restore took."""
    with session("restore-drill") as s:
        environment = s.load(env)
        if dry_run:
            _show(_dry(environment, "restore_drill"), s.print)
            return
        drill_run(environment, s.reporter(json, verbose=verbose), s.masker, lock_wait=_wait(wait))


BACKUP_TASKS = (backup, restore, restore_drill)
