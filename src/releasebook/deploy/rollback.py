"""``inv rollback``: the rollback runbook to the release each host served before the live
one (from the history), or to a chosen one, verified, and recorded.

Before switching, the schema step compares what the database has applied with the
migrations the release to go back to has. Without ``--migrate`` newer migrations stay
applied, and the output and the history say which; with it, reversible ones are unapplied
first, from the live release, after a backup where the inventory takes them, and an
irreversible one refuses the rollback before anything changes. ``--maintenance`` puts the
web hosts in maintenance from before the backup until the release gone back to is
verified.

A failure before the switch undoes what began, newest first (the migrations applied
again, maintenance off): nothing live changed. A failure at or after it leaves the site
in maintenance (its hosts did not verify) and says so.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from releasebook.deploy.backup_report import backup_report
from releasebook.deploy.connection import Opener, attempt, connect, open_real, record_everywhere
from releasebook.deploy.release import failure_text
from releasebook.deploy.running import Runner, lock_info_for, with_records
from releasebook.deploy.schema_history import unchanged_for
from releasebook.deploy.websocket_report import websocket_report
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
from releasebook.execute.runner import plain_script, run_scripts
from releasebook.gate.migration_report import RollbackPlan, parse_rollback_plan
from releasebook.inventory import Environment
from releasebook.masking import Masker
from releasebook.plan.build import Run, build_plan
from releasebook.plan.facts import HostFacts, validate_release_id
from releasebook.plan.model import Plan, ReleaseInfo, Source
from releasebook.plan.schedule import plan_groups
from releasebook.plan.source import find_source
from releasebook.runbooks.bookkeeping import LockInfo
from releasebook.runbooks.rollback import rollback_steps

FINISH = ("record", "unlock")
# Before the switch, newest first: what an aborted rollback undoes.
UNDONE = ("unapply", "maintenance_on")


def rollback(
    env: Environment,
    reporter: Reporter,
    masker: Masker,
    *,
    to: str | None = None,
    migrate: bool = False,
    maintenance: bool = False,
    source: Source | None = None,
    batch_size: int | None = None,
    lock_wait: float = 0,
    opener: Opener = open_real,
) -> str:
    """Switch every host back to an earlier release; the release id it went to.
    ``migrate``: unapply the migrations the older release does not have, first (after a
    backup, where the inventory takes them). ``maintenance``: the web hosts answer 503
    from before the backup, the unapply and the switch until the release is verified."""
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
        steps = rollback_steps(unapply=unapply is not None, maintenance=maintenance)
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
            schema = _schema(plan, runner, held.facts, target_id, migrate=migrate)
            base["schema"] = schema.record
            if schema.unapply:
                plan = plan_with(held.info, held, target_id, schema.unapply)
                runner.frames = plan.frames
            failed = _change(plan, runner, batch_size, base, masker)
            warnings = _open_again(plan, runner) if not failed else []
            if failed and plan.has("maintenance_on"):
                base["maintenance"] = "left_on"
            records = {
                name: {
                    **base,
                    "release": targets[name],
                    "from": left[name],
                    "outcome": "failed" if failed else "rolled_back_to",
                    "duration": round(time.monotonic() - started, 3),
                    "steps": dict(runner.durations),
                    **({"reason": failure_text(failed[0].step, failed)} if failed else {}),
                    **({"warnings": warnings} if warnings else {}),
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
                still = _left_in_maintenance(plan) if plan.has("maintenance_on") else ""
                if still:
                    reporter.message(f"warning: {still}")
                reporter.finished(False, "rollback failed")
                text = failure_text(failed[0].step, failed)
                raise RollbackFailed(f"{text}\n{still}" if still else text)
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


def _change(
    plan: Plan, runner: Runner, batch_size: int | None, base: dict[str, Any], masker: Masker
) -> list[Outcome]:
    """Run the steps that change the hosts, maintenance on to verify: the failed outcomes of
    a step at or after the switch that failed; one before the switch is undone, recorded
    and raised. The backup's report goes to the history, as a release's does."""
    for group in plan_groups(_between(plan), batch_size):
        for planned, outcomes in zip(group, runner.run(group), strict=True):
            failed = [o for o in outcomes if not o.ok]
            if planned.step.name == "backup" and not failed:
                base["backup"], line = backup_report(outcomes, "unapplying")
                runner.reporter.message(line)
            if planned.step.name == "restart_web":
                closed, said = websocket_report(o for o in outcomes if o.ok)
                if said is not None:
                    runner.reporter.message(said, websockets_closed=closed)
            if not failed:
                continue
            if planned.step.phase == "prepare":
                raise _aborted(plan, runner, failed, base, masker)
            return failed
    return []


def _undo(plan: Plan, runner: Runner, name: str) -> dict[str, str] | None:
    """Step ``name``'s undo, on every host where it began: None where it began nowhere,
    else the hosts where the undo failed, with what they said."""
    if not plan.has(name):
        return None
    works = [w for w in plan.step(name).work if w.undo and name in runner.began.get(w.target, [])]
    if not works:
        return None
    results = run_scripts(
        {w.target: plain_script(w.undo) for w in works},
        runner.transports,
        plan.environment.max_parallel,
        timeout=max(w.timeout for w in works),
    )
    return {
        target: str(result) if isinstance(result, Exception) else result.tail()
        for target, result in results.items()
        if isinstance(result, Exception) or not result.ok
    }


def _aborted(
    plan: Plan,
    runner: Runner,
    failed: list[Outcome],
    base: dict[str, Any],
    masker: Masker,
) -> ReleasebookError:
    """A step before the switch failed (maintenance on, the backup, the unapply): no code
    was switched. What began is undone, newest first: the migrations applied again from
    the live release, then maintenance off; and the attempt is recorded."""
    step = failed[0].step
    reason = failure_text(step, failed)
    env = plan.environment.name
    schema, flag = (_undo(plan, runner, name) for name in UNDONE)
    lines: list[str] = []
    between = bool(schema)
    if schema:
        lines.append(
            f"Applying the migrations again failed too ({'; '.join(schema.values())}): the "
            "schema is between releases; the code was not switched. Run `manage.py migrate` "
            "from the live release."
        )
    else:
        again = " the migrations were applied again and" if schema is not None else ""
        lines.append(f"Nothing live changed:{again} no code was switched.")
    if flag:
        lines.append(
            f"Maintenance mode is still ON on {', '.join(sorted(flag))} (removing the flag "
            f"failed: {'; '.join(flag.values())}): `inv maintenance off --env={env}`."
        )
    elif flag is not None:
        lines.append("Maintenance mode was turned off again: the site serves as before.")
    record_everywhere(
        plan.environment,
        runner.transports,
        masker,
        {
            **base,
            "outcome": "failed",
            "step": step,
            "reason": reason,
            **({"maintenance": "left_on"} if flag else {}),
        },
    )
    what = "unapplying migrations" if step == "unapply" else f"in its {step} step"
    runner.reporter.finished(False, f"rollback failed {what}, before the switch")
    if between or flag:
        return RollbackFailed("\n".join([reason, *lines]))
    return ReleaseFailed("\n".join([reason, *lines]))


def _open_again(plan: Plan, runner: Runner) -> list[str]:
    """Maintenance off once the release gone back to is verified (``--maintenance``);
    where that failed, the warning the history records."""
    if not plan.has("maintenance_off"):
        return []
    (outcomes,) = runner.run([plan.step("maintenance_off")])
    failed = sorted(o.target for o in outcomes if not o.ok)
    if not failed:
        return []
    warning = (
        f"maintenance mode is still on on {', '.join(failed)}: turning it off failed; "
        f"`inv maintenance off --env={plan.environment.name}`"
    )
    runner.reporter.message(f"warning: {warning}")
    return [warning]


def _left_in_maintenance(plan: Plan) -> str:
    hosts = ", ".join(w.target for w in plan.step("maintenance_on").work)
    return (
        f"Maintenance mode is still ON on {hosts}: the hosts did not verify, so the site "
        f"stays closed. `inv maintenance off --env={plan.environment.name}` once they serve."
    )


class _Schema:
    """What the schema step found, and what the rollback does about it."""

    def __init__(
        self,
        found: RollbackPlan | None,
        migrate: bool,
        problem: str = "",
        from_history: bool = False,  # answered by the history, not by the database
    ) -> None:
        self.found, self.migrate, self.problem = found, migrate, problem
        self.from_history = from_history

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
        return {
            "compared": True,
            key: self.newer,
            "not_on_disk": list(self.found.not_on_disk),
            **({"from": "history"} if self.from_history else {}),
        }

    @property
    def summary(self) -> str:
        if self.found is None:
            return f"the schema was not compared ({self.problem}) and is kept"
        if not self.newer and self.from_history:
            return (
                "the schema needed no change (the history: the live release's schema is "
                "unchanged since it was recorded, and the release gone back to left the same)"
            )
        if not self.newer:
            return "the schema needed no change"
        if self.unapply:
            return "unapplied " + ", ".join(self.newer)
        return (
            "the schema is kept: " + ", ".join(self.newer) + " stay applied (the older code "
            "must tolerate them; `--migrate` unapplies reversible ones)"
        )


def _schema(
    plan: Plan,
    runner: Runner,
    facts: Mapping[str, HostFacts],
    target_id: str,
    *,
    migrate: bool,
) -> _Schema:
    """Run the schema step, unless a plain rollback's answer is in the migrate host's
    history; refuse ``--migrate`` that cannot be honoured."""
    planned = plan.step("schema")
    if not planned.work:
        return _Schema(None, migrate, "no migrate host")
    (work,) = planned.work
    host = facts.get(work.target)
    if not migrate and host is not None and unchanged_for(host.history, host.current, target_id):
        nothing = RollbackPlan(target="", newer=(), commands=(), not_on_disk=())
        schema = _Schema(nothing, migrate=False, from_history=True)
        runner.reporter.message(schema.summary)
        return schema
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
    """The plan between the schema step and maintenance off (or the record): what
    changes the hosts."""
    skip = ("lock", "schema", "maintenance_off", *FINISH)
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
