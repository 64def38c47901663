"""Release, rollback and status: plans run against hosts, with one decision per failure.

A failure before ``switch`` aborts: the half-made release directory is removed on every
host and live traffic never changed. A failure at or after ``switch`` rolls every host
back to the release it served before, verifies that, and then reports the failure.
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, NoReturn

from releasebook.batches import ROLLING, schedule
from releasebook.checks.report import (
    GateOutputError,
    HostReport,
    format_table,
    host_failed,
    parse_gate_output,
    summary,
)
from releasebook.envsecrets import delivered
from releasebook.errors import (
    HostUnreachable,
    ReleasebookError,
    ReleaseFailed,
    RollbackFailed,
    UsageError,
)
from releasebook.inventory import Environment
from releasebook.lock import LockInfo, environment_lock, fence_commands, release_commands
from releasebook.plan import (
    Plan,
    PlanKind,
    PlannedStep,
    ReleaseInfo,
    Source,
    build_plan,
)
from releasebook.reporting import Reporter
from releasebook.runner import LOCK_LOST, Guard, Outcome, execute_group, fuse, run_scripts
from releasebook.source import find_source, new_release
from releasebook.state import (
    HostState,
    deploy_dir,
    history_commands,
    parse_probe,
    probe_commands,
    validate_release_id,
)
from releasebook.transport import LocalTransport, Transport, open_transport

CONTROLLER = "controller"
# --- connections -----------------------------------------------------------------


@contextmanager
def connect(
    env: Environment, attempt_record: dict[str, Any] | None = None
) -> Iterator[dict[str, Transport]]:
    """Open one transport per host (concurrently, capped) plus the controller. When a
    host cannot be reached, the hosts that could be get ``attempt_record`` in their
    history, so that the next operator sees the attempt and why it never started."""
    transports: dict[str, Transport] = {CONTROLLER: LocalTransport(CONTROLLER, env.root)}
    errors: list[str] = []

    def attempt(host_name: str) -> None:
        try:
            transports[host_name] = open_transport(env.host(host_name), env.root)
        except HostUnreachable as exc:
            errors.append(str(exc))

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(env.max_parallel, len(env.hosts)))) as pool:
            list(pool.map(attempt, [h.name for h in env.hosts]))
        if errors:
            unreachable = "\n  ".join(sorted(errors))
            reason = (
                f"cannot reach every host, so no step ran and nothing was changed:\n  {unreachable}"
            )
            if attempt_record is not None:
                record = {**attempt_record, "outcome": "not_started", "reason": reason}
                reached = [h.name for h in env.hosts if h.name in transports]
                _record(env, transports, dict.fromkeys(reached, record))
            raise HostUnreachable(reason)
        yield transports
    finally:
        for transport in transports.values():
            transport.close()


def _attempt(action: str, release: str) -> dict[str, Any]:
    return {
        "action": action,
        "release": release,
        "by": f"{getpass.getuser()}@{socket.gethostname()}",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def read_states(
    env: Environment, transports: Mapping[str, Transport], hosts: list[str] | None = None
) -> dict[str, HostState]:
    names = hosts if hosts is not None else [h.name for h in env.hosts]
    results = run_scripts(dict.fromkeys(names, probe_commands(env)), transports, env.max_parallel)
    states: dict[str, HostState] = {}
    for name, result in results.items():
        if isinstance(result, Exception) or not result.ok:
            detail = result if isinstance(result, Exception) else result.tail()
            raise HostUnreachable(f"{name}: cannot read the deploy state: {detail}")
        states[name] = parse_probe(name, result.stdout)
    return states


@contextmanager
def _locked(
    env: Environment,
    transports: Mapping[str, Transport],
    command: str,
    release_id: str,
    wait: float,
) -> Iterator[tuple[dict[str, HostState], LockInfo, set[str]]]:
    """Hold the environment lock; the hosts' state is read in the same round trip.

    Yields the states, the lock, and a set to which the caller adds the hosts whose lock
    it released in its own last script."""
    probed: dict[str, str] = {}
    released: set[str] = set()
    with environment_lock(
        env,
        transports,
        command=command,
        release_id=release_id,
        wait=wait,
        probe=probe_commands(env),
        probed=probed,
        released=released,
    ) as lock:
        states = {name: parse_probe(name, output) for name, output in probed.items()}
        missing = [h.name for h in env.hosts if h.name not in states]
        if missing:  # local hosts sharing this machine share one lock
            states.update(read_states(env, transports, missing))
        yield states, lock, released


def _record(
    env: Environment,
    transports: Mapping[str, Transport],
    records: Mapping[str, dict[str, Any]],
) -> None:
    scripts = {host: history_commands(env, record) for host, record in records.items()}
    run_scripts(scripts, transports, env.max_parallel)


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
    skips = dict(skips or {})
    started = time.monotonic()
    command = "preflight" if stop_after else "release"
    with (
        delivered(env, info.release_id),  # the inventory's secrets: read before any host
        connect(env, _attempt(command, info.release_id)) as transports,
        _locked(env, transports, command, info.release_id, lock_wait) as (states, lock, released),
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
            gate_skips=list(skips),
            ready_hosts=ready,
        )
        reporter.plan_started(plan)
        run = _Run(env, transports, reporter, {}, guard(env, command, info.release_id, lock))
        base: dict[str, Any] = {
            "action": command,
            "release": info.release_id,
            "git_sha": info.git_sha,
            "by": info.created_by,
            "at": info.created_at,
        }
        warnings: list[str] = []
        recorded: set[str] = set()
        live = False  # has a step that changes live traffic started?
        try:
            for group in _groups(plan, batch_size):
                live = live or any(p.step.phase != "prepare" for p in group)
                if any(p.step.name == "cleanup" for p in group):
                    # Verified and live: the record goes in with cleanup's own script.
                    records = {
                        h.name: {
                            **base,
                            "outcome": "released",
                            "previous": previous.get(h.name),
                            "duration": round(time.monotonic() - started, 3),
                            "steps": dict(run.durations),
                        }
                        for h in env.hosts
                    }
                    group = [
                        _with_record(p, env, records, release_commands(env, lock.token))
                        if p.step.name == "cleanup"
                        else p
                        for p in group
                    ]
                    recorded = {w.target for p in group if p.step.name == "cleanup" for w in p.work}
                for planned, outcomes in zip(group, run.group(group), strict=True):
                    failed = [o for o in outcomes if not o.ok]
                    if planned.step.name == "cleanup":
                        released.update(o.target for o in outcomes if o.ok)
                    if planned.step.name == "gate":
                        gate, blocking = _gate_result(
                            env, outcomes, skips, reporter, info.created_by
                        )
                        base["gate"] = gate
                        failed = [o for o in outcomes if o.target in blocking] or failed
                    if not failed and planned.step.name == stop_after:
                        _abort(plan, run)
                        _record(
                            env,
                            transports,
                            {h.name: {**base, "outcome": "passed"} for h in env.hosts},
                        )
                        reporter.finished(
                            True, f"{stop_after} passed; the candidate release was removed"
                        )
                        return info
                    if not failed:
                        continue
                    if any(o.exited == LOCK_LOST for o in failed):
                        _stop_lock_lost(plan, run, info, base, planned.step.name, failed, live)
                    reason = _failure_text(planned.step.name, failed)
                    if planned.step.name == "gate":
                        reason = "readiness gate failed: " + base["gate"]["summary"]
                    if planned.step.phase == "finish":
                        # The release is live and verified: report, undo nothing.
                        warnings.append(reason)
                        reporter.message(f"warning: {reason}")
                        continue
                    if planned.step.phase == "prepare":
                        _abort(plan, run)
                        _record(
                            env,
                            transports,
                            {
                                h.name: {
                                    **base,
                                    "outcome": "aborted",
                                    "step": planned.step.name,
                                    "reason": reason,
                                    "steps": run.durations,
                                }
                                for h in env.hosts
                            },
                        )
                        reporter.finished(False, f"release {info.release_id} aborted before switch")
                        raise ReleaseFailed(
                            f"{reason}\nNothing live changed: "
                            "the release was removed from every host."
                        )
                    _roll_back_after_failure(
                        env, run, info, previous, reason, base, source, batch_size
                    )
        except KeyboardInterrupt:
            # The scripts running on hosts were let finish (see runner), so what undoes
            # them now cannot race them.
            reason = f"interrupted (Ctrl-C) during {run.running}"
            if live:
                reporter.message(f"{reason}: rolling back; Ctrl-C again to stop that too")
                _roll_back_after_interrupt(env, run, info, previous, reason, base, source)
            _abort(plan, run)
            _record(
                env,
                transports,
                {
                    h.name: {
                        **base,
                        "outcome": "interrupted",
                        "reason": reason,
                        "steps": run.durations,
                    }
                    for h in env.hosts
                },
            )
            reporter.finished(False, f"release {info.release_id} {reason}")
            raise ReleaseFailed(
                f"{reason} before switch: the new release was removed from every host; "
                "nothing live changed."
            ) from None
        unrecorded = {h.name for h in env.hosts} - recorded
        if warnings or unrecorded:
            _record(
                env,
                transports,
                {
                    h.name: {
                        **base,
                        "outcome": "released",
                        "previous": previous.get(h.name),
                        "steps": run.durations,
                        "warnings": warnings,
                    }
                    for h in env.hosts
                    if h.name in unrecorded or warnings
                },
            )
    reporter.finished(True, f"released {info.release_id} to {env.name}")
    return info


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


def _stop_lock_lost(
    plan: Plan,
    run: _Run,
    info: ReleaseInfo,
    base: dict[str, Any],
    step: str,
    failed: list[Outcome],
    live: bool,
) -> NoReturn:
    """Someone broke the lock (``inv unlock``) while this run held it: another run may
    be under way, so change nothing more, not even by rolling back."""
    hosts = ", ".join(o.target for o in failed if o.exited == LOCK_LOST)
    reason = (
        f"step {step!r} refused on {hosts}: the environment lock was broken (inv unlock) "
        "or taken over while this run held it; the run stopped there"
    )
    if not live:
        _abort(plan, run)
    _record(
        run.env,
        run.transports,
        {
            h.name: {**base, "outcome": "lock_lost", "step": step, "reason": reason}
            for h in run.env.hosts
        },
    )
    run.reporter.finished(False, f"release {info.release_id} stopped: lock lost")
    if not live:
        raise ReleaseFailed(
            f"{reason}.\nNothing live changed: the new release was removed from every host."
        )
    raise RollbackFailed(
        f"{reason}, after the switch, so it did not roll back either: hosts may serve "
        f"{info.release_id} or the release before it. Check `inv status --env={run.env.name}`."
    )


def _roll_back_after_interrupt(
    env: Environment,
    run: _Run,
    info: ReleaseInfo,
    previous: Mapping[str, str],
    reason: str,
    base: dict[str, Any],
    source: Source,
) -> NoReturn:
    """Ctrl-C after the switch: undo like a failure, unless Ctrl-C comes again."""
    try:
        _roll_back_after_failure(env, run, info, previous, reason, base, source, None)
    except KeyboardInterrupt:
        _record(
            env,
            run.transports,
            {
                h.name: {**base, "outcome": "rollback_interrupted", "reason": reason}
                for h in env.hosts
            },
        )
        run.reporter.finished(False, "the automatic rollback was interrupted")
        raise RollbackFailed(
            f"{reason}, and the automatic rollback was interrupted too: hosts may serve "
            f"{info.release_id} or the release before it. Check `inv status "
            f"--env={env.name}`, then `inv rollback --env={env.name}` or release again."
        ) from None


def _roll_back_after_failure(
    env: Environment,
    run: _Run,
    info: ReleaseInfo,
    previous: Mapping[str, str],
    reason: str,
    base: dict[str, Any],
    source: Source,
    batch_size: int | None,
) -> NoReturn:
    transports = run.transports
    if not previous:
        _record(
            env,
            transports,
            {
                h.name: {**base, "outcome": "failed_after_switch", "reason": reason}
                for h in env.hosts
            },
        )
        run.reporter.finished(False, "first release failed; nothing to roll back to")
        raise ReleaseFailed(
            f"{reason}\nThis was the first release on these hosts: there is no previous "
            f"release to roll back to. {info.release_id} stays current; fix and release again."
        )
    run.reporter.message("rolling every host back to the release it served before")
    plan = build_plan(env, "rollback", source=source, release=info, per_host_release=dict(previous))
    undo = replace(run.guard, action="rollback", release=",".join(sorted(set(previous.values()))))
    rollback_failed: list[Outcome] = []
    for group in _groups(plan, batch_size):
        for outcomes in execute_group(group, transports, run.reporter, env.max_parallel, undo):
            rollback_failed.extend(o for o in outcomes if not o.ok)
            if rollback_failed:
                break
        if rollback_failed:
            break
    outcome = "rolled_back" if not rollback_failed else "rollback_failed"
    _record(
        env,
        transports,
        {
            h.name: {**base, "outcome": outcome, "reason": reason, "restored": previous.get(h.name)}
            for h in env.hosts
        },
    )
    if rollback_failed:
        run.reporter.finished(False, "release failed and the automatic rollback failed too")
        raise RollbackFailed(
            f"{reason}\nThe automatic rollback failed as well:\n"
            + _failure_text(rollback_failed[0].step, rollback_failed)
        )
    restored = ", ".join(sorted(set(previous.values())))
    run.reporter.finished(False, f"release {info.release_id} failed; restored {restored}")
    raise ReleaseFailed(f"{reason}\nEvery host was rolled back to {restored} and verified.")


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
        connect(env, _attempt("rollback", to or "")) as transports,
        _locked(env, transports, "rollback", to or "", lock_wait) as (states, lock, _),
    ):
        targets = _rollback_targets(states, to)
        target_id = next(iter(set(targets.values())))
        info = ReleaseInfo(
            release_id=target_id,
            git_sha="",
            requirements_hash="",
            created_by=f"{getpass.getuser()}@{socket.gethostname()}",
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        plan = build_plan(env, "rollback", source=source, release=info, per_host_release=targets)
        reporter.plan_started(plan)
        run = _Run(env, transports, reporter, {}, guard(env, "rollback", target_id, lock))
        failed: list[Outcome] = []
        for group in _groups(plan, batch_size):
            for outcomes in run.group(group):
                failed = [o for o in outcomes if not o.ok]
                if failed:
                    break
            if failed:
                break
        record_base = {"action": "rollback", "by": info.created_by, "at": info.created_at}
        _record(
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
    with connect(env) as transports:
        return read_states(env, transports)


def plan_only(env: Environment, kind: PlanKind, reporter: Reporter) -> Plan:
    """The plan ``--dry-run`` prints: no connection is opened, nothing is changed."""
    source = find_source(env)
    info = new_release(env, source, reporter)
    return build_plan(env, kind, source=source, release=info)


__all__ = ["ReleasebookError", "plan_only", "release", "rollback", "status"]
