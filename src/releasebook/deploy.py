"""Release, rollback and status: plans run against hosts, with one decision per failure.

A failure before ``switch`` aborts: the half-made release directory is removed on every
host and live traffic never changed. A failure at or after ``switch`` rolls every host
back to the release it served before, verifies that, and then reports the failure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from releasebook.batches import ROLLING, schedule
from releasebook.connection import (
    CONTROLLER,
    attempt,
    connect,
    locked,
    read_states,
    record,
    record_everywhere,
)
from releasebook.envsecrets import delivered
from releasebook.errors import ReleasebookError, ReleaseFailed, RollbackFailed, UsageError
from releasebook.gate.report import (
    GateOutputError,
    HostReport,
    format_table,
    host_failed,
    parse_gate_output,
    summary,
)
from releasebook.inventory import Environment
from releasebook.lock import LockInfo, fence_commands, release_commands
from releasebook.plan import Plan, PlanKind, PlannedStep, ReleaseInfo, Source, build_plan
from releasebook.reporting import Reporter
from releasebook.runner import LOCK_LOST, Guard, Outcome, execute_group, fuse, run_scripts
from releasebook.source import find_source, new_release
from releasebook.state import HostState, deploy_dir, history_commands, validate_release_id
from releasebook.transport import Transport

# --- running a plan ----------------------------------------------------------------


def guard(env: Environment, action: str, release: str, lock: LockInfo) -> Guard:
    """Step scripts of a run holding ``lock``: serialised on each host, journaled, and
    fenced, so that they stop on a host where the lock is no longer the run's."""
    state = deploy_dir(env) / ".releasebook"
    return Guard(
        str(state / "steps.lock"),
        str(state / "journal"),
        action,
        release,
        fence_commands(env, lock.token),
    )


@dataclass
class _Run:
    env: Environment
    transports: Mapping[str, Transport]
    reporter: Reporter
    durations: dict[str, float]
    guard: Guard
    running: str = "start-up"  # the group now running, for messages

    def group(self, group: list[PlannedStep]) -> list[list[Outcome]]:
        steps = ", ".join(p.step.name for p in group)
        targets = ", ".join(dict.fromkeys(w.target for p in group for w in p.work))
        self.running = f"{steps} on {targets}"
        results = execute_group(
            group, self.transports, self.reporter, self.env.max_parallel, self.guard
        )
        for planned, outcomes in zip(group, results, strict=True):
            slowest = max((o.duration for o in outcomes), default=0.0)
            name = planned.step.name
            self.durations[name] = round(self.durations.get(name, 0.0) + slowest, 3)
        return results


def _groups(plan: Plan, batch_size: int | None) -> list[list[PlannedStep]]:
    keep_apart = frozenset(ROLLING) if batch_size else frozenset()
    return fuse(schedule(plan, batch_size), keep_apart=keep_apart)


def _with_record(
    planned: PlannedStep,
    env: Environment,
    records: Mapping[str, dict[str, Any]],
    unlock: tuple[str, ...],
) -> PlannedStep:
    """The last step, carrying each host's history record (first) and the lock's release
    (last, once the step itself is done): no extra round trips."""
    work = tuple(
        replace(w, commands=history_commands(env, records[w.target]) + w.commands + unlock)
        if w.target in records
        else w
        for w in planned.work
    )
    return replace(planned, work=work)


def _failure_text(step: str, failed: list[Outcome]) -> str:
    lines = [f"step {step!r} failed on " + ", ".join(o.target for o in failed)]
    for outcome in failed:
        lines.append(f"--- {outcome.target} (exit {outcome.exited}):")
        lines.extend("    " + line for line in outcome.tail.splitlines())
    return "\n".join(lines)


def release(
    env: Environment,
    reporter: Reporter,
    *,
    source: Source | None = None,
    batch_size: int | None = None,
    skips: Mapping[str, str] | None = None,
    stop_after: str | None = None,
    lock_wait: float = 0,
) -> ReleaseInfo:
    """Release HEAD. ``skips`` maps readiness check ids to why they are skipped (recorded).
    ``stop_after`` names a step before ``switch`` after which the candidate is removed
    again (``inv preflight``); a ``ReleaseFailed`` is raised if anything failed."""
    source = source or find_source(env)
    info = new_release(env, source, reporter)
    started = time.monotonic()
    command = "preflight" if stop_after else "release"
    with (
        delivered(env, info.release_id),  # the inventory's secrets: read before any host
        connect(env, attempt(command, info.release_id)) as transports,
        locked(env, transports, command, info.release_id, lock_wait) as (states, lock, released),
    ):
        previous = {name: state.current for name, state in states.items() if state.current}
        ready = frozenset(
            name for name, state in states.items() if state.venv_ready(info.requirements_hash)
        )
        plan = build_plan(
            env,
            "release",
            source=source,
            release=info,
            previous=previous,
            gate_skips=list(skips or {}),
            ready_hosts=ready,
        )
        reporter.plan_started(plan)
        run = _Run(env, transports, reporter, {}, guard(env, command, info.release_id, lock))
        going = _Release(
            plan=plan,
            run=run,
            info=info,
            source=source,
            previous=previous,
            skips=dict(skips or {}),
            batch_size=batch_size,
            stop_after=stop_after,
            lock=lock,
            released=released,
            started=started,
            base={
                "action": command,
                "release": info.release_id,
                "git_sha": info.git_sha,
                "by": info.created_by,
                "at": info.created_at,
            },
        )
        try:
            passed = going.execute()
        except KeyboardInterrupt:
            raise going.interrupted() from None
        if passed:
            reporter.finished(True, f"{stop_after} passed; the candidate release was removed")
            return info
        going.record_unrecorded()
    reporter.finished(True, f"released {info.release_id} to {env.name}")
    return info


@dataclass
class _Release:
    """A release (or preflight) under way: its plan, what it records on the hosts, and
    the one decision taken when a step fails or the run is interrupted.

    Before ``switch`` a failure aborts (the new release directory is removed); at or
    after it every host is rolled back to what it served; in ``cleanup`` (live and
    verified) it is only a warning."""

    plan: Plan
    run: _Run
    info: ReleaseInfo
    source: Source
    previous: dict[str, str]  # by host: the release it served before
    skips: dict[str, str]
    batch_size: int | None
    stop_after: str | None
    lock: LockInfo
    released: set[str]  # hosts whose lock cleanup's own script released
    started: float
    base: dict[str, Any]  # what every history record of this run holds
    warnings: list[str] = field(default_factory=list)
    recorded: set[str] = field(default_factory=set)  # hosts given the success record
    live: bool = False  # has a step that changes live traffic started?

    @property
    def env(self) -> Environment:
        return self.run.env

    def execute(self) -> bool:
        """Run every group of steps; True when ``stop_after`` passed (preflight)."""
        for group in _groups(self.plan, self.batch_size):
            self.live = self.live or any(p.step.phase != "prepare" for p in group)
            group = self._with_success_record(group)
            for planned, outcomes in zip(group, self.run.group(group), strict=True):
                if self._decide(planned, outcomes):
                    return True
        return False

    def _with_success_record(self, group: list[PlannedStep]) -> list[PlannedStep]:
        """Verified and live by cleanup: its own script carries each host's record (first)
        and the lock's release (last), so neither costs a round trip."""
        if not any(p.step.name == "cleanup" for p in group):
            return group
        records = {
            h.name: {
                **self.base,
                "outcome": "released",
                "previous": self.previous.get(h.name),
                "duration": round(time.monotonic() - self.started, 3),
                "steps": dict(self.run.durations),
            }
            for h in self.env.hosts
        }
        unlock = release_commands(self.env, self.lock.token)
        group = [
            _with_record(p, self.env, records, unlock) if p.step.name == "cleanup" else p
            for p in group
        ]
        self.recorded = {w.target for p in group if p.step.name == "cleanup" for w in p.work}
        return group

    def _decide(self, planned: PlannedStep, outcomes: list[Outcome]) -> bool:
        """One step's outcomes: True when the run is done early (preflight passed);
        raises when the release failed."""
        name = planned.step.name
        failed = [o for o in outcomes if not o.ok]
        if name == "cleanup":
            self.released.update(o.target for o in outcomes if o.ok)
        if name == "gate":
            gate, blocking = _gate_result(
                self.env, outcomes, self.skips, self.run.reporter, self.info.created_by
            )
            self.base["gate"] = gate
            failed = [o for o in outcomes if o.target in blocking] or failed
        if not failed:
            if name == self.stop_after:
                _abort(self.plan, self.run)
                self._record_everywhere("passed")
                return True
            return False
        if any(o.exited == LOCK_LOST for o in failed):
            raise self._lock_lost(name, failed)
        if name == "gate":
            reason = "readiness gate failed: " + self.base["gate"]["summary"]
        else:
            reason = _failure_text(name, failed)
        if planned.step.phase == "finish":
            # The release is live and verified: report, undo nothing.
            self.warnings.append(reason)
            self.run.reporter.message(f"warning: {reason}")
            return False
        if planned.step.phase == "prepare":
            raise self._aborted(name, reason)
        raise self._rolled_back(reason, self.batch_size)

    def _record_everywhere(self, outcome: str, **details: Any) -> None:
        entry = {**self.base, "outcome": outcome, **details}
        record_everywhere(self.env, self.run.transports, entry)

    # Each of these undoes what it must, records and reports it, and returns the error
    # the release ends with.

    def _aborted(self, step: str, reason: str) -> ReleasebookError:
        _abort(self.plan, self.run)
        self._record_everywhere("aborted", step=step, reason=reason, steps=self.run.durations)
        self.run.reporter.finished(False, f"release {self.info.release_id} aborted before switch")
        return ReleaseFailed(
            f"{reason}\nNothing live changed: the release was removed from every host."
        )

    def _lock_lost(self, step: str, failed: list[Outcome]) -> ReleasebookError:
        """Someone broke the lock (``inv unlock``) while this run held it: another run
        may be under way, so change nothing more, not even by rolling back."""
        hosts = ", ".join(o.target for o in failed if o.exited == LOCK_LOST)
        reason = (
            f"step {step!r} refused on {hosts}: the environment lock was broken (inv unlock) "
            "or taken over while this run held it; the run stopped there"
        )
        if not self.live:
            _abort(self.plan, self.run)
        self._record_everywhere("lock_lost", step=step, reason=reason)
        self.run.reporter.finished(False, f"release {self.info.release_id} stopped: lock lost")
        if not self.live:
            return ReleaseFailed(
                f"{reason}.\nNothing live changed: the new release was removed from every host."
            )
        return RollbackFailed(
            f"{reason}, after the switch, so it did not roll back either: hosts may serve "
            f"{self.info.release_id} or the release before it. "
            f"Check `inv status --env={self.env.name}`."
        )

    def interrupted(self) -> ReleasebookError:
        """Ctrl-C. The scripts running on hosts were let finish (see runner), so what
        undoes them now cannot race them."""
        reason = f"interrupted (Ctrl-C) during {self.run.running}"
        if self.live:
            self.run.reporter.message(f"{reason}: rolling back; Ctrl-C again to stop that too")
            try:
                error = self._rolled_back(reason, None)
            except KeyboardInterrupt:
                self._record_everywhere("rollback_interrupted", reason=reason)
                self.run.reporter.finished(False, "the automatic rollback was interrupted")
                return RollbackFailed(
                    f"{reason}, and the automatic rollback was interrupted too: hosts may "
                    f"serve {self.info.release_id} or the release before it. Check `inv "
                    f"status --env={self.env.name}`, then `inv rollback --env={self.env.name}` "
                    "or release again."
                )
            return error
        _abort(self.plan, self.run)
        self._record_everywhere("interrupted", reason=reason, steps=self.run.durations)
        self.run.reporter.finished(False, f"release {self.info.release_id} {reason}")
        return ReleaseFailed(
            f"{reason} before switch: the new release was removed from every host; "
            "nothing live changed."
        )

    def _rolled_back(self, reason: str, batch_size: int | None) -> ReleasebookError:
        """Switch every host back to the release it served before, and verify it."""
        env, run, previous = self.env, self.run, self.previous
        if not previous:
            self._record_everywhere("failed_after_switch", reason=reason)
            run.reporter.finished(False, "first release failed; nothing to roll back to")
            return ReleaseFailed(
                f"{reason}\nThis was the first release on these hosts: there is no previous "
                f"release to roll back to. {self.info.release_id} stays current; fix and "
                "release again."
            )
        run.reporter.message("rolling every host back to the release it served before")
        plan = build_plan(
            env, "rollback", source=self.source, release=self.info, per_host_release=previous
        )
        targets = sorted(set(previous.values()))
        undo = replace(run.guard, action="rollback", release=",".join(targets))
        undo_run = _Run(env, run.transports, run.reporter, {}, undo)
        rollback_failed = _run_until_failure(plan, undo_run, batch_size)
        outcome = "rolled_back" if not rollback_failed else "rollback_failed"
        record(
            env,
            run.transports,
            {
                h.name: {
                    **self.base,
                    "outcome": outcome,
                    "reason": reason,
                    "restored": previous.get(h.name),
                }
                for h in env.hosts
            },
        )
        if rollback_failed:
            run.reporter.finished(False, "release failed and the automatic rollback failed too")
            return RollbackFailed(
                f"{reason}\nThe automatic rollback failed as well:\n"
                + _failure_text(rollback_failed[0].step, rollback_failed)
            )
        restored = ", ".join(targets)
        run.reporter.finished(False, f"release {self.info.release_id} failed; restored {restored}")
        return ReleaseFailed(f"{reason}\nEvery host was rolled back to {restored} and verified.")

    def record_unrecorded(self) -> None:
        """The success record where cleanup's script did not carry it, and a failed
        cleanup's warnings on every host."""
        unrecorded = {h.name for h in self.env.hosts} - self.recorded
        if not (self.warnings or unrecorded):
            return
        record(
            self.env,
            self.run.transports,
            {
                h.name: {
                    **self.base,
                    "outcome": "released",
                    "previous": self.previous.get(h.name),
                    "steps": self.run.durations,
                    "warnings": self.warnings,
                }
                for h in self.env.hosts
                if h.name in unrecorded or self.warnings
            },
        )


def _run_until_failure(plan: Plan, run: _Run, batch_size: int | None) -> list[Outcome]:
    """Run the plan's groups until a step fails somewhere: that step's failed outcomes."""
    for group in _groups(plan, batch_size):
        for outcomes in run.group(group):
            failed = [o for o in outcomes if not o.ok]
            if failed:
                return failed
    return []


def _gate_result(
    env: Environment,
    outcomes: list[Outcome],
    skips: Mapping[str, str],
    reporter: Reporter,
    user: str,
) -> tuple[dict[str, Any], set[str]]:
    """Show the gate's table; return what the history keeps and the hosts it blocks."""
    reports = []
    for outcome in outcomes:
        try:
            reports.append(parse_gate_output(outcome.target, outcome.stdout))
        except GateOutputError:
            reports.append(host_failed(outcome.target, outcome.tail or "no output"))
    reporter.message("readiness gate:\n" + format_table(reports), gate=_gate_json(reports))
    skipped = {
        **{k: {"reason": v, "by": "inventory"} for k, v in env.gate_skips.items()},
        **{k: {"reason": v, "by": user} for k, v in skips.items()},
    }
    record = {
        "summary": summary(reports),
        "skipped": skipped,
        "warnings": sorted({r.id for report in reports for r in report.warnings}),
        "blocking": sorted({r.id for report in reports for r in report.blocking}),
        "pending_migrations": next(
            (list(r.pending_migrations) for r in reports if r.pending_migrations), []
        ),
    }
    return record, {r.host for r in reports if not r.ok}


def _gate_json(reports: list[HostReport]) -> list[dict[str, Any]]:
    return [
        {"host": r.host, "ok": r.ok, "error": r.error, "results": [asdict(c) for c in r.results]}
        for r in reports
    ]


def _abort(plan: Plan, run: _Run) -> None:
    """Remove what the release made before it went live, on every host. Not fenced: the
    directory is this run's own, whoever holds the lock now."""
    undo = plan.step("install")
    scripts = {w.target: w.undo for w in undo.work if w.undo}
    build = plan.step("build").work[0]
    scripts[CONTROLLER] = build.undo
    unfenced = replace(run.guard, fence=())
    results = run_scripts(scripts, run.transports, run.env.max_parallel, unfenced)
    left = sorted(t for t, r in results.items() if isinstance(r, Exception) or not r.ok)
    if left:
        run.reporter.message(
            "warning: could not remove the new release directory on "
            + ", ".join(left)
            + "; it never became current, and cleanup removes it once it is older than the kept "
            "releases"
        )
    else:
        run.reporter.message("removed the new release directory on every host")


def rollback(
    env: Environment,
    reporter: Reporter,
    *,
    to: str | None = None,
    source: Source | None = None,
    batch_size: int | None = None,
    lock_wait: float = 0,
) -> str:
    if to is not None:
        validate_release_id(to)
    source = source or find_source(env)
    started = time.monotonic()
    with (
        connect(env, attempt("rollback", to or "")) as transports,
        locked(env, transports, "rollback", to or "", lock_wait) as (states, lock, _),
    ):
        targets = _rollback_targets(states, to)
        target_id = next(iter(set(targets.values())))
        record_base = attempt("rollback", target_id)
        info = ReleaseInfo(
            release_id=target_id,
            git_sha="",
            requirements_hash="",
            created_by=record_base["by"],
            created_at=record_base["at"],
        )
        plan = build_plan(env, "rollback", source=source, release=info, per_host_release=targets)
        reporter.plan_started(plan)
        run = _Run(env, transports, reporter, {}, guard(env, "rollback", target_id, lock))
        failed = _run_until_failure(plan, run, batch_size)
        record(
            env,
            transports,
            {
                name: {
                    **record_base,
                    "release": targets[name],
                    "from": states[name].current,
                    "outcome": "failed" if failed else "rolled_back_to",
                    "duration": round(time.monotonic() - started, 3),
                    "steps": run.durations,
                    **({"reason": _failure_text(failed[0].step, failed)} if failed else {}),
                }
                for name in targets
            },
        )
        if failed:
            reporter.finished(False, "rollback failed")
            raise RollbackFailed(_failure_text(failed[0].step, failed))
    reporter.finished(True, f"rolled {env.name} back to {target_id}")
    return target_id


def _rollback_targets(states: Mapping[str, HostState], to: str | None) -> dict[str, str]:
    targets: dict[str, str] = {}
    problems: list[str] = []
    for name, state in states.items():
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
            problems.append(f"{name}: nothing to roll back to (current: {state.current or 'none'})")
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


def status(env: Environment) -> dict[str, HostState]:
    """Each host's state, read without the lock (a run may be under way)."""
    with connect(env) as transports:
        return read_states(env, transports)


def plan_only(env: Environment, kind: PlanKind, reporter: Reporter) -> Plan:
    """The plan ``--dry-run`` prints: no connection is opened, nothing is changed."""
    source = find_source(env)
    info = new_release(env, source, reporter)
    return build_plan(env, kind, source=source, release=info)


__all__ = ["ReleasebookError", "plan_only", "release", "rollback", "status"]
