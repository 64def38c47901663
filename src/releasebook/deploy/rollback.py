"""``inv rollback``: the rollback runbook to the release each host served before the live
one (from the history), or to a chosen one, verified, and recorded.

Before switching, the schema step compares what the database has applied with the
migrations the release to go back to has. Without ``--migrate`` newer migrations stay
applied, and the output and the history say which; with it, reversible ones are unapplied
first, from the live release, and an irreversible one refuses the rollback before
anything changes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from releasebook.deploy.connection import Opener, attempt, connect, open_real, record_everywhere
from releasebook.deploy.release import failure_text
from releasebook.deploy.running import Runner, lock_info_for, run_until_failure, with_records
from releasebook.errors import (
    MigrationStateError,
    ReleasebookError,
    ReleaseFailed,
    RollbackFailed,
    UsageError,
)
from releasebook.execute.events import Reporter
from releasebook.execute.lock import HeldLock, environment_lock
from releasebook.execute.outcome import Outcome
from releasebook.execute.runner import plain_script
from releasebook.gate.migration_report import RollbackPlan, parse_rollback_plan
from releasebook.inventory import Environment
from releasebook.masking import Masker
from releasebook.plan.build import Run, build_plan
from releasebook.plan.facts import HostFacts, validate_release_id
from releasebook.plan.model import Plan, ReleaseInfo, Source
from releasebook.plan.source import find_source
from releasebook.runbooks.bookkeeping import LockInfo

STEPS = ("lock", "schema", "switch", "restart_web", "restart_workers", "verify", "record", "unlock")
FINISH = ("record", "unlock")


def rollback(
    env: Environment,
    reporter: Reporter,
    masker: Masker,
    *,
    to: str | None = None,
    migrate: bool = False,
    source: Source | None = None,
    batch_size: int | None = None,
    lock_wait: float = 0,
    opener: Opener = open_real,
) -> str:
    """Switch every host back to an earlier release; the release id it went to.
    ``migrate``: unapply the migrations the older release does not have, first."""
    if to is not None:
        validate_release_id(to)
    source = source or find_source(env)
    started = time.monotonic()
    marker = secrets.token_hex(8)
    base = attempt("rollback", to or "")
    info = ReleaseInfo(
        release_id=to or "",
        git_sha="",
        requirements_hash="",
        created_by=base["by"],
        created_at=base["at"],
    )

    def plan_with(
        lock: LockInfo,
        held: HeldLock | None = None,
        to_id: str = "",
        unapply: list[tuple[str, str]] | None = None,
    ) -> Plan:
        facts = held.facts if held is not None else None
        targets = _targets(facts, to) if facts is not None else None
        steps = STEPS if unapply is None else ("unapply", *STEPS)
        return build_plan(
            env,
            "rollback",
            source=source,
            run=Run(
                release=replace(info, release_id=to_id or info.release_id),
                lock=lock,
                marker=marker,
                action="rollback",
                facts=facts,
            ),
            targets=targets,
            steps=steps,
            unapply=unapply,
        )

    lock = lock_info_for("rollback", to or "")
    with connect(env, masker, base, opener) as transports:
        reporter.plan_started(plan_with(lock))
        with environment_lock(plan_with, lock, transports, reporter, wait=lock_wait) as held:
            targets = _targets(held.facts, to)
            target_id = next(iter(set(targets.values())))
            plan = plan_with(held.info, held, target_id)
            runner = Runner(env, transports, reporter, plan.frames)
            left = {name: held.facts[name].current for name in targets}
            reporter.message(_leaving(left, target_id))
            schema = _schema(plan, runner, migrate=migrate)
            base["schema"] = schema.record
            if schema.unapply:
                plan = plan_with(held.info, held, target_id, schema.unapply)
                runner.frames = plan.frames
            failed = run_until_failure(_between(plan), runner, batch_size)
            if failed and failed[0].step == "unapply":
                raise _unapply_failed(plan, runner, failed, base, masker)
            records = {
                name: {
                    **base,
                    "release": targets[name],
                    "from": left[name],
                    "outcome": "failed" if failed else "rolled_back_to",
                    "duration": round(time.monotonic() - started, 3),
                    "steps": dict(runner.durations),
                    **({"reason": failure_text(failed[0].step, failed)} if failed else {}),
                }
                for name in targets
            }
            finish = [p for p in plan.steps if p.step.name in FINISH]
            for planned, outcomes in zip(
                finish, runner.run(with_records(plan, finish, records, masker)), strict=True
            ):
                if planned.step.name == "unlock":
                    held.released.update(o.target for o in outcomes if o.ok)
            if failed:
                reporter.finished(False, "rollback failed")
                raise RollbackFailed(failure_text(failed[0].step, failed))
    sources = ", ".join(sorted({str(v) for v in left.values() if v})) or "nothing"
    verb = "rolled back" if to is None else "switched, as asked (--to),"
    if _forward(left, target_id):
        verb = "moved forward (--to a newer release)"
    reporter.finished(True, f"{env.name} {verb} from {sources} to {target_id}; {schema.summary}")
    return target_id


def _forward(left: Mapping[str, str | None], target: str) -> bool:
    """Is ``target`` newer than every release it replaces (ids sort by time)?"""
    return all(current is not None and target > current for current in left.values())


def _leaving(left: Mapping[str, str | None], target: str) -> str:
    """Which release the rollback leaves, on which hosts, and which it goes to."""
    by_release: dict[str, list[str]] = {}
    for host, current in left.items():
        by_release.setdefault(current or "no release", []).append(host)
    leaving = "; ".join(f"{r} (live on {', '.join(h)})" for r, h in by_release.items())
    if _forward(left, target):
        return f"leaving {leaving} for {target}, a NEWER release: this moves forward"
    return f"leaving {leaving} for {target}"


def _unapply_failed(
    plan: Plan,
    runner: Runner,
    failed: list[Outcome],
    base: dict[str, Any],
    masker: Masker,
) -> ReleasebookError:
    """Unapplying failed before anything was switched: its undo (migrate forward again,
    from the live release) runs, and the attempt is recorded."""
    (work,) = plan.step("unapply").work
    result = runner.transports[work.target].run(plain_script(work.undo), timeout=work.timeout)
    reason = failure_text("unapply", failed)
    record_everywhere(
        plan.environment,
        runner.transports,
        masker,
        {**base, "outcome": "failed", "step": "unapply", "reason": reason},
    )
    runner.reporter.finished(False, "rollback failed while unapplying migrations")
    if not result.ok:
        return RollbackFailed(
            f"{reason}\nApplying them again failed too ({result.tail()}): the schema is "
            "between releases; the code was not switched. Run `manage.py migrate` from the "
            "live release."
        )
    return ReleaseFailed(
        f"{reason}\nThe migrations were applied again and no code was switched: every host "
        "serves the live release as before."
    )


class _Schema:
    """What the schema step found, and what the rollback does about it."""

    def __init__(self, found: RollbackPlan | None, migrate: bool, problem: str = "") -> None:
        self.found, self.migrate, self.problem = found, migrate, problem

    @property
    def unapply(self) -> list[tuple[str, str]]:
        if self.found is None or not self.migrate:
            return []
        return [(c.app, c.target) for c in self.found.commands]

    @property
    def newer(self) -> list[str]:
        return [m.migration for m in self.found.newer] if self.found is not None else []

    @property
    def record(self) -> dict[str, Any]:
        if self.found is None:
            return {"compared": False, "reason": self.problem}
        key = "unapplied" if self.unapply else "kept"
        return {"compared": True, key: self.newer, "not_on_disk": list(self.found.not_on_disk)}

    @property
    def summary(self) -> str:
        if self.found is None:
            return f"the schema was not compared ({self.problem}) and is kept"
        if not self.newer:
            return "the schema needed no change"
        if self.unapply:
            return "unapplied " + ", ".join(self.newer)
        return (
            "the schema is kept: " + ", ".join(self.newer) + " stay applied (the older code "
            "must tolerate them; `--migrate` unapplies reversible ones)"
        )


def _schema(plan: Plan, runner: Runner, *, migrate: bool) -> _Schema:
    """Run the schema step; refuse ``--migrate`` that cannot be honoured."""
    planned = plan.step("schema")
    if not planned.work:
        return _Schema(None, migrate, "no migrate host")
    (outcomes,) = runner.run([planned])
    (outcome,) = outcomes
    try:
        if not outcome.ok:
            raise MigrationStateError(f"{outcome.target}: {outcome.tail or 'no output'}")
        found = parse_rollback_plan(outcome.target, outcome.stdout)
    except MigrationStateError as exc:
        if migrate:
            raise UsageError(
                f"--migrate: the schema cannot be compared with the release to go back to "
                f"({exc}); nothing was changed"
            ) from None
        runner.reporter.message(f"note: could not compare the schema ({exc}); it is kept")
        return _Schema(None, migrate, str(exc))
    schema = _Schema(found, migrate)
    if migrate and not found.reversible:
        names = [m.migration for m in found.irreversible] + list(found.not_on_disk)
        env = plan.environment.name
        raise UsageError(
            "--migrate refused: " + ", ".join(names) + " cannot be unapplied (no reverse "
            "code, or their files are in no release); nothing was changed. Roll back "
            f"without --migrate to keep the schema, or restore a backup: inv restore "
            f"--env={env} --from BACKUP"
        )
    runner.reporter.message(schema.summary)
    return schema


def _between(plan: Plan) -> Plan:
    """The plan between the schema step and the record: what changes the hosts."""
    skip = ("lock", "schema", *FINISH)
    return replace(plan, steps=tuple(p for p in plan.steps if p.step.name not in skip))


def _targets(facts: Mapping[str, HostFacts], to: str | None) -> dict[str, str]:
    targets: dict[str, str] = {}
    problems: list[str] = []
    for name, state in facts.items():
        if to is not None:
            if to not in state.releases:
                problems.append(f"{name}: release {to} is not on this host")
            elif to == state.current:
                problems.append(f"{name}: release {to} is already current")
            else:
                targets[name] = to
            continue
        target = state.rollback_target()
        if target is None:
            problems.append(
                f"{name}: nothing to roll back to (current: {state.current or 'none'}; the "
                "history names no earlier good release still on the host)"
            )
        else:
            targets[name] = target
    if problems:
        raise UsageError("cannot roll back:\n  " + "\n  ".join(problems))
    if len(set(targets.values())) > 1:
        detail = ", ".join(f"{n} -> {t}" for n, t in sorted(targets.items()))
        raise UsageError(
            f"hosts would roll back to different releases ({detail}); pick one with --to"
        )
    return targets
