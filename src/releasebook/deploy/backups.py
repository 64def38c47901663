"""``inv backup``, ``inv restore`` and ``inv restore-drill``: their runbooks run against the
hosts under the environment lock, each run recorded in every host's history.

Each runs from the release live on the migrate host (the helper ``db_backup.py`` in it,
through its env launcher), so the database's credentials come from that release's env
file. A restore checks its ``--from`` against the backups on the migrate host, and
refuses without ``--yes``, before any lock is taken or anything changes.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from releasebook.deploy.backup_report import backup_report, parse_report, summary
from releasebook.deploy.connection import Opener, attempt, connect, open_real
from releasebook.deploy.release import failure_text
from releasebook.deploy.running import Runner, lock_info_for, with_records
from releasebook.errors import ReleaseFailed, RollbackFailed, UsageError
from releasebook.execute.events import Reporter
from releasebook.execute.lock import HeldLock, environment_lock
from releasebook.execute.outcome import Outcome
from releasebook.inventory import Environment, Host
from releasebook.masking import Masker
from releasebook.plan.backups import backup_dir
from releasebook.plan.build import Run, bookkeeping_script, build_plan
from releasebook.plan.model import Plan, PlanKind, ReleaseInfo, Source
from releasebook.plan.schedule import plan_groups
from releasebook.plan.source import find_source
from releasebook.plan.values import layout_of
from releasebook.runbooks.backup import LIST_BACKUPS
from releasebook.runbooks.bookkeeping import LockInfo
from releasebook.transport import Transport

FINISH = ("record", "unlock")
BACKUP_NAME = r"^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9._-]+$"


def migrate_host(env: Environment) -> Host:
    hosts = env.hosts_with("migrate")
    if not hosts:
        raise UsageError(f"{env.file.name}: no host has the migrate role: nothing to back up")
    return hosts[0]


Steps = dict[str, list[Outcome]]
Finish = Callable[[Steps, list[Outcome]], tuple[str, dict[str, Any]]]


@dataclass
class _Run:
    """One backup, restore or drill under way: its plan and history base."""

    env: Environment
    reporter: Reporter
    masker: Masker
    kind: PlanKind
    source: Source
    backup: str | None = None

    def __post_init__(self) -> None:
        self.marker = secrets.token_hex(8)
        self.started = time.monotonic()
        self.base = attempt(self.kind, "")

    def plan_with(self, lock: LockInfo, held: HeldLock | None = None) -> Plan:
        facts = held.facts if held is not None else None
        live = {n: f.current for n, f in facts.items() if f.current} if facts else {}
        info = ReleaseInfo(
            release_id=live.get(migrate_host(self.env).name, ""),
            git_sha="",
            requirements_hash="",
            created_by=self.base["by"],
            created_at=self.base["at"],
        )
        return build_plan(
            self.env,
            self.kind,
            source=self.source,
            run=Run(release=info, lock=lock, marker=self.marker, action=self.kind, facts=facts),
            targets=live or None,
            backup=self.backup,
        )

    def execute(
        self, transports: Mapping[str, Transport], lock_wait: float, finish: Finish
    ) -> None:
        """Take the lock, check a release is live on the migrate host, run the steps
        until one fails, then ``finish`` (the outcome and what to record) and record."""
        lock = lock_info_for(self.kind, "")
        self.reporter.plan_started(self.plan_with(lock))
        with environment_lock(
            self.plan_with, lock, transports, self.reporter, wait=lock_wait
        ) as held:
            host = migrate_host(self.env).name
            if not held.facts[host].current:
                raise UsageError(f"{host}: no release is live there: release first")
            plan = self.plan_with(held.info, held)
            runner = Runner(self.env, transports, self.reporter, plan.frames)
            between = replace(
                plan, steps=tuple(p for p in plan.steps if p.step.name not in ("lock", *FINISH))
            )
            seen: Steps = {}
            failed: list[Outcome] = []
            for group in plan_groups(between, None):
                for planned, outcomes in zip(group, runner.run(group), strict=True):
                    seen[planned.step.name] = outcomes
                    failed = failed or [o for o in outcomes if not o.ok]
                if failed:
                    break
            outcome, details = finish(seen, failed)
            records = {
                h.name: {
                    **self.base,
                    "release": held.facts[h.name].current or "",
                    "outcome": outcome,
                    "duration": round(time.monotonic() - self.started, 3),
                    "steps": dict(runner.durations),
                    **details,
                    **({"reason": failure_text(failed[0].step, failed)} if failed else {}),
                }
                for h in self.env.hosts
            }
            last = [p for p in plan.steps if p.step.name in FINISH]
            for planned, outcomes in zip(
                last, runner.run(with_records(plan, last, records, self.masker)), strict=True
            ):
                if planned.step.name == "unlock":
                    held.released.update(o.target for o in outcomes if o.ok)


def backup(
    env: Environment,
    reporter: Reporter,
    masker: Masker,
    *,
    source: Source | None = None,
    lock_wait: float = 0,
    opener: Opener = open_real,
) -> dict[str, Any]:
    """Take a backup on the migrate host; what the history recorded of it."""
    going = _Run(env, reporter, masker, "backup", source or find_source(env))
    kept: dict[str, Any] = {}

    def finish(seen: Steps, failed: list[Outcome]) -> tuple[str, dict[str, Any]]:
        if failed:
            return "failed", {}
        kept.update(backup_report(seen.get("backup", []))[0])
        return "backed_up", {"backup": kept}

    with connect(env, masker, attempt("backup", ""), opener) as transports:
        going.execute(transports, lock_wait, finish)
    if not kept.get("name"):
        reporter.finished(False, "backup failed")
        raise ReleaseFailed(f"the backup of {env.name} failed; see the output above")
    reporter.message(_backup_line(kept, migrate_host(env).name, env))
    reporter.finished(True, f"backed up {env.name}: {kept['name']}")
    return kept


def _backup_line(kept: Mapping[str, Any], host: str, env: Environment) -> str:
    where = backup_dir(env, layout_of(env, env.root)) / str(kept.get("file"))
    removed = kept.get("removed") or []
    gone = f"; removed {len(removed)} older (backup.keep {env.backup.keep})" if removed else ""
    return (
        f"{host}:{where} ({kept.get('size')} bytes, sha256 {kept.get('sha256')}) of release "
        f"{kept.get('release_id')} ({str(kept.get('git_sha'))[:10]}){gone}"
    )


# --- restore ----------------------------------------------------------------------------


def list_backups(
    env: Environment, transports: Mapping[str, Transport]
) -> tuple[str, list[dict[str, Any]]]:
    """The migrate host and the manifests of its backups, oldest first (untrusted: only
    well-formed ones)."""
    host = migrate_host(env).name
    directory = backup_dir(env, layout_of(env, env.root))
    result = transports[host].run(
        bookkeeping_script(env, LIST_BACKUPS, backup_dir=directory), timeout=60
    )
    if not result.ok:
        raise ReleaseFailed(f"{host}: cannot list the backups in {directory}: {result.tail()}")
    found: dict[str, dict[str, Any]] = {}
    for line in result.stdout.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and re.fullmatch(BACKUP_NAME, str(data.get("name", ""))):
            found[str(data["name"])] = summary(data) | {
                "created_at": str(data.get("created_at", ""))[:40]
            }
    return host, [found[name] for name in sorted(found)]


def available(
    env: Environment, masker: Masker, opener: Opener = open_real
) -> tuple[str, list[dict[str, Any]]]:
    """The migrate host and its backups, oldest first; nothing is locked or changed."""
    with connect(env, masker, None, opener) as transports:
        return list_backups(env, transports)


def normalized_name(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    for suffix in (".json", ".sha256", ".dump", ".sqlite3"):
        base = base.removesuffix(suffix)
    if not re.fullmatch(BACKUP_NAME, base):
        raise UsageError(
            f"--from {name!r}: expected a backup's name, <UTC time>-<release>-<sha> "
            "(`inv restore` without --from lists them)"
        )
    return base


def restore(
    env: Environment,
    reporter: Reporter,
    masker: Masker,
    *,
    name: str,
    yes: bool,
    source: Source | None = None,
    lock_wait: float = 0,
    opener: Opener = open_real,
) -> dict[str, Any]:
    """Replace the database's contents with a backup's, in maintenance, verified."""
    wanted = normalized_name(name)
    going = _Run(env, reporter, masker, "restore", source or find_source(env), wanted)
    with connect(env, masker, None, opener) as transports:
        host, known = list_backups(env, transports)
        chosen = next((b for b in known if b["name"] == wanted), None)
        if chosen is None:
            names = "\n  ".join(b["name"] for b in known[-10:]) or "(none)"
            raise UsageError(
                f"unknown backup {wanted!r}: it is not in {host}'s backup directory; "
                f"nothing was changed. The newest there:\n  {names}"
            )
        if not yes:
            raise UsageError(
                f"restore refused without --yes; nothing was changed. It would overwrite the "
                f"{chosen.get('engine')} database of {env.name} (the live release's "
                f"DATABASES['default'], from its env file) on {host} with backup {wanted} "
                f"(taken {chosen.get('created_at')} from release {chosen.get('release_id')}): "
                "everything written since is lost. Meanwhile every web host answers 503 "
                "(maintenance) and the Celery worker and beat are stopped. Run it again with "
                "--yes to go ahead."
            )
        kept: dict[str, Any] = {"backup": summary(chosen)}
        why: list[str] = []

        def finish(seen: Steps, failed: list[Outcome]) -> tuple[str, dict[str, Any]]:
            for outcome in seen.get("restore", []):
                try:
                    report = parse_report(outcome.target, outcome.stdout)
                except ReleaseFailed:
                    continue
                if isinstance(report.get("seconds"), int | float):
                    kept["restore_seconds"] = report["seconds"]
                dropped = report.get("dropped") or []
                kept["dropped_tables"] = [str(t) for t in dropped if isinstance(t, str)]
            if failed:
                kept["failed_step"] = failed[0].step
                why.append(failure_text(failed[0].step, failed))
            return ("failed" if failed else "restored"), kept

        going.execute(transports, lock_wait, finish)
    step = kept.get("failed_step")
    if step is None:
        reporter.finished(True, f"restored {env.name} from {wanted}; /readyz verified")
        return kept
    reporter.finished(False, f"restore of {env.name} failed in {step}")
    if step == "check":
        raise ReleaseFailed(
            f"backup {wanted} failed its check on {host}; nothing was changed\n" + "".join(why)
        )
    flag = layout_of(env, env.root).maintenance_flag
    if step in ("maintenance_off", "verify"):
        state = "the database was restored and maintenance is off, but /readyz did not pass"
    else:
        state = (
            f"maintenance is still ON (remove {flag} on the web hosts once the database is "
            "right) and the Celery worker and beat may be stopped"
        )
    raise RollbackFailed(
        f"the restore of {env.name} from {wanted} failed in step {step!r}: {state}. "
        f"Check `inv status --env={env.name}`, then restore again.\n" + "".join(why)
    )


# --- the drill --------------------------------------------------------------------------


def restore_drill(
    env: Environment,
    reporter: Reporter,
    masker: Masker,
    *,
    source: Source | None = None,
    lock_wait: float = 0,
    opener: Opener = open_real,
) -> dict[str, Any]:
    """Restore the newest backup into a scratch database and compare it with the live one."""
    going = _Run(env, reporter, masker, "restore_drill", source or find_source(env))
    kept: dict[str, Any] = {}

    def finish(seen: Steps, failed: list[Outcome]) -> tuple[str, dict[str, Any]]:
        for outcome in seen.get("drill", []):
            try:
                report = parse_report(outcome.target, outcome.stdout)
            except ReleaseFailed as exc:
                kept["error"] = str(exc)
                continue
            if not report.get("ok"):
                kept["error"] = str(report.get("error", ""))[:300]
                continue
            kept.update(_drill_record(report))
        passed = not failed and kept.get("consistent") is True
        return ("drill_passed" if passed else "drill_failed"), kept

    with connect(env, masker, attempt("restore_drill", ""), opener) as transports:
        going.execute(transports, lock_wait, finish)
    if "restore_seconds" in kept:
        reporter.message(_drill_text(kept))
    if kept.get("consistent") is not True:
        reporter.finished(False, "restore drill failed")
        problem = kept.get("error") or (
            "the backup's migrations are not consistent with the live release: "
            + ", ".join(kept.get("unknown_migrations", []))
        )
        raise ReleaseFailed(f"restore drill of {env.name} failed: {problem}")
    reporter.finished(
        True,
        f"restore drill of {env.name} passed: {kept['backup'].get('name')} restored in "
        f"{kept['restore_seconds']}s into a scratch database (dropped); the live one was "
        "not touched",
    )
    return kept


def _drill_record(report: Mapping[str, Any]) -> dict[str, Any]:
    migrations = report.get("migrations") if isinstance(report.get("migrations"), dict) else {}
    assert isinstance(migrations, dict)
    tables = [t for t in report.get("tables") or [] if isinstance(t, dict)]
    return {
        "backup": summary(report.get("backup")),
        "restore_seconds": report.get("restore_seconds"),
        "consistent": migrations.get("consistent") is True,
        "same_migrations_as_live": migrations.get("same_as_live") is True,
        "unknown_migrations": [str(m) for m in migrations.get("unknown_to_live_release") or []],
        "to_apply": [str(m) for m in migrations.get("to_apply") or []],
        "tables": len(tables),
        "tables_differ": [
            {"table": str(t.get("table")), "live": t.get("live"), "backup": t.get("backup")}
            for t in tables
            if t.get("live") != t.get("backup")
        ],
    }


def _drill_text(kept: Mapping[str, Any]) -> str:
    lines = [
        f"restore drill: {kept['backup'].get('name')} restored in {kept['restore_seconds']}s",
        "  migrations: "
        + ("consistent with the live release" if kept["consistent"] else "INCONSISTENT")
        + ("" if kept["same_migrations_as_live"] else " (the live database has others)"),
    ]
    if kept["to_apply"]:
        lines.append("  a restore would then apply: " + ", ".join(kept["to_apply"]))
    differ = kept["tables_differ"]
    lines.append(f"  tables: {kept['tables']}, {len(differ)} with other row counts than live")
    for row in differ[:20]:
        lines.append(f"    {row['table']}: live {row['live']}, backup {row['backup']}")
    return "\n".join(lines)
