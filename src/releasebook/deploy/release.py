"""Release and preflight: the release runbook run against the hosts, one decision per
failure (``deploy.policy``), the undo that runs being the undo the runbook shows.

Before ``switch`` a failure aborts: the undo of every step begun runs on each host, newest
first, and nothing live changed. At or after ``switch`` every host is rolled back to the
release it served before (the rollback runbook), a host that served nothing is taken out
of service, and that is verified. In ``cleanup`` (live and verified) a failure is only
reported. A preflight is the release up to the gate, then undone.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from releasebook.deploy.backup_report import backup_report
from releasebook.deploy.connection import (
    Opener,
    Record,
    attempt,
    connect,
    open_real,
    record,
    record_everywhere,
)
from releasebook.deploy.policy import Action, decide, on_interrupt
from releasebook.deploy.running import Runner, lock_info_for, run_until_failure, with_records
from releasebook.deploy.websocket_report import websocket_report
from releasebook.errors import (
    GateOutputError,
    Interrupted,
    MigrationStateError,
    ReleasebookError,
    ReleaseFailed,
    RollbackFailed,
)
from releasebook.execute.events import Reporter
from releasebook.execute.lock import HeldLock, environment_lock
from releasebook.execute.outcome import Outcome
from releasebook.execute.runner import plain_script, run_scripts
from releasebook.gate.migration_report import parse_leaves
from releasebook.gate.report import (
    CheckResult,
    HostReport,
    acknowledged_record,
    format_migration_findings,
    format_table,
    host_failed,
    parse_gate_output,
)
from releasebook.gate.report import summary as gate_summary
from releasebook.inventory import Environment
from releasebook.inventory.secrets import delivered
from releasebook.masking import Masker
from releasebook.plan.build import Run, build_plan, render_step
from releasebook.plan.model import CONTROLLER, Plan, PlannedStep, ReleaseInfo, Source
from releasebook.plan.schedule import plan_groups
from releasebook.plan.source import find_source, for_hosts, new_release
from releasebook.runbooks.bookkeeping import RECORD, LockInfo
from releasebook.runbooks.maintenance import RELEASE_MAINTENANCE_STEPS
from releasebook.runbooks.release import RELEASE

PREFLIGHT_STEPS = (*RELEASE.step_names[: RELEASE.step_names.index("gate") + 1], "record", "unlock")
# Without --maintenance a release has no maintenance steps.
UNMAINTAINED_STEPS = tuple(n for n in RELEASE.step_names if n not in RELEASE_MAINTENANCE_STEPS)
ROLLBACK_STEPS = ("retire", "switch", "restart_web", "restart_workers", "verify")


def release(
    env: Environment,
    reporter: Reporter,
    masker: Masker,
    *,
    source: Source | None = None,
    batch_size: int | None = None,
    skips: Mapping[str, str] | None = None,
    stop_after: str | None = None,
    lock_wait: float = 0,
    opener: Opener = open_real,
    maintenance: bool = False,
    ref: str = "HEAD",
) -> ReleaseInfo:
    """Release ``ref`` (HEAD by default). ``skips`` maps readiness check ids to why they
    are skipped (recorded).
    ``stop_after="gate"`` is a preflight: the candidate is removed again once the gate
    passed; a ``ReleaseFailed`` is raised if anything failed. ``maintenance``: the web
    hosts answer 503 from before ``migrate`` until the new release is verified."""
    built: Source = source or find_source(env)
    info = new_release(env, built, reporter.message, ref=ref)
    started = time.monotonic()
    command = "preflight" if stop_after else "release"
    marker = secrets.token_hex(8)
    steps = PREFLIGHT_STEPS if stop_after else (None if maintenance else UNMAINTAINED_STEPS)

    def plan_with(lock: LockInfo, held: HeldLock | None = None) -> Plan:
        facts = held.facts if held is not None else None
        return build_plan(
            env,
            "release",
            source=built,
            run=Run(release=info, lock=lock, marker=marker, action=command, facts=facts),
            previous={h: f.current for h, f in facts.items() if f.current} if facts else None,
            gate_skips=list(skips or {}),
            steps=steps,
        )

    lock = lock_info_for(command, info.release_id)
    with (
        delivered(env, info.release_id, masker),  # the inventory's secrets: read before any host
        connect(env, masker, attempt(command, info.release_id), opener) as transports,
    ):
        reporter.plan_started(plan_with(lock))
        with environment_lock(plan_with, lock, transports, reporter, wait=lock_wait) as held:
            # The wheels are for the hosts' Python, as the lock step's probe found it.
            pythons = {h: f.python for h, f in held.facts.items() if f.python is not None}
            built, info = for_hosts(env, built, info, pythons)
            plan = plan_with(held.info, held)
            previous = {h: f.current for h, f in held.facts.items() if f.current}
            going = _Release(
                plan=plan,
                runner=Runner(env, transports, reporter, plan.frames),
                masker=masker,
                info=info,
                source=built,
                held=held,
                marker=marker,
                previous=previous,
                skips=dict(skips or {}),
                batch_size=batch_size,
                stop_after=stop_after,
                started=started,
                base={
                    "action": command,
                    "release": info.release_id,
                    "git_sha": info.git_sha,
                    **({"ref": ref} if ref != "HEAD" else {}),
                    "by": info.created_by,
                    "at": info.created_at,
                },
            )
            try:
                passed = going.execute()
            except KeyboardInterrupt as exc:
                raise going.interrupted(exc) from None
            if passed:
                reporter.finished(True, f"{stop_after} passed; the candidate release was removed")
                return info
            going.record_unrecorded()
    reporter.finished(True, f"released {info.release_id} to {env.name}")
    return info


@dataclass
class _Release:
    """A release (or preflight) under way: its plan, what it records on the hosts, and
    the one decision taken when a step fails or the run is interrupted."""

    plan: Plan
    runner: Runner
    masker: Masker
    info: ReleaseInfo
    source: Source
    held: HeldLock
    marker: str
    previous: dict[str, str]  # by host: the release it served before
    skips: dict[str, str]
    batch_size: int | None
    stop_after: str | None
    started: float
    base: Record  # what every history record of this run holds
    warnings: list[str] = field(default_factory=list)
    recorded: set[str] = field(default_factory=set)  # hosts given the success record
    live: bool = False  # has a step that changes live traffic started?

    @property
    def env(self) -> Environment:
        return self.runner.env

    @property
    def reporter(self) -> Reporter:
        return self.runner.reporter

    def execute(self) -> bool:
        """Run every group of steps after the lock; True when a preflight passed."""
        for group in plan_groups(self.plan, self.batch_size, after="lock"):
            self.live = self.live or any(p.step.phase != "prepare" for p in group)
            group = self._with_success_record(group)
            for planned, outcomes in zip(group, self.runner.run(group), strict=True):
                if self._decide(planned, outcomes):
                    return True
        return False

    def _schema_left(self, outcomes: list[Outcome]) -> dict[str, Any]:
        """What migrate applied (the gate's plan) and the leaves it left, for the history:
        a later rollback says from it what stays applied."""
        left: dict[str, Any] = {"applied": self.base.get("gate", {}).get("pending_migrations", [])}
        for outcome in outcomes:
            try:
                left["leaves"] = {
                    app: list(names)
                    for app, names in parse_leaves(
                        outcome.target, outcome.stdout, "migrate"
                    ).items()
                }
            except MigrationStateError as exc:
                left["leaves_error"] = str(exc)
        return left

    def _success_record(self, host: str) -> Record:
        return {
            **self.base,
            "outcome": "released",
            "previous": self.previous.get(host),
            "duration": round(time.monotonic() - self.started, 3),
            "steps": dict(self.runner.durations),
        }

    def _with_success_record(self, group: list[PlannedStep]) -> list[PlannedStep]:
        """The record step carries each host's record, filled in now: the run is live and
        verified by the time its script (cleanup's) runs."""
        if not any(p.step.name == "record" for p in group):
            return group
        records = {h.name: self._success_record(h.name) for h in self.env.hosts}
        self.recorded = set(records)
        return with_records(self.plan, group, records, self.masker)

    def _decide(self, planned: PlannedStep, outcomes: list[Outcome]) -> bool:
        """One step's outcomes: True when the run is done early (a preflight passed);
        raises when the release failed."""
        name = planned.step.name
        failed = [o for o in outcomes if not o.ok]
        if name == "unlock":
            self.held.released.update(o.target for o in outcomes if o.ok)
        if name == "record":
            self.recorded -= {o.target for o in failed}
        if name == "gate":
            gate, blocking = _gate_result(
                self.env, outcomes, self.skips, self.reporter, self.info.created_by
            )
            self.base["gate"] = gate
            failed = [o for o in outcomes if o.target in blocking] or failed
        if name == "migrate" and not failed:
            self.base["migrations"] = self._schema_left(outcomes)
        if name == "backup" and not failed:
            self.base["backup"], line = backup_report(outcomes)
            self.reporter.message(line)
        if name == "restart_web":
            closed, said = websocket_report(o for o in outcomes if o.ok)
            if said is not None:
                self.reporter.message(said, websockets_closed=closed)
        action = decide(
            name, planned.step.phase, failed, live=self.live, stop_after=self.stop_after
        )
        if action is Action.CONTINUE:
            return False
        if action is Action.FINISH_PREFLIGHT:
            self._undo("passed")
            return True
        if action in (Action.LOCK_LOST_UNDO, Action.LOCK_LOST_STOP):
            raise self._lock_lost(name, failed)
        reason = self.base["gate"]["summary"] if name == "gate" else failure_text(name, failed)
        if action is Action.WARN:
            self.warnings.append(reason)
            self.reporter.message(f"warning: {reason}")
            return False
        if action is Action.ABORT:
            raise self._aborted(name, reason)
        raise self._rolled_back(reason)

    # Each of these undoes what it must, records and reports it, and returns the error
    # the release ends with.

    def _undo(self, outcome: str, **details: Any) -> None:
        """The undo of every step begun, newest first, on every host and on this machine,
        then this run's record: one script per host, under the host's step lock (so it
        waits for a script still running there) but not fenced: what it removes is this
        run's own, whoever holds the lock now."""
        entry = {**self.base, "outcome": outcome, "steps": dict(self.runner.durations), **details}
        scripts: dict[str, str] = {}
        for host in self.env.hosts:
            name = host.name
            parts = [
                (step, work.undo, work.timeout)
                for step in reversed(self.runner.began.get(name, []))
                if (work := self.plan.step(step).on(name)) is not None
                and work.undo
                and step != "lock"  # released last, by the lock's holder
            ]
            line = self.masker.mask(json.dumps(entry, sort_keys=True))
            parts.append(("record", render_step(self.plan, RECORD, name, record=line), 60))
            scripts[name] = self.plan.frames[name].unfenced("undo").script(parts)
        build = [
            w.undo
            for step in reversed(self.runner.began.get(CONTROLLER, []))
            if (w := self.plan.step(step).on(CONTROLLER)) is not None and w.undo
        ]
        if build:
            scripts[CONTROLLER] = plain_script([c for undo in build for c in undo])
        results = run_scripts(scripts, self.runner.transports, self.env.max_parallel)
        left = sorted(t for t, r in results.items() if isinstance(r, Exception) or not r.ok)
        if left:
            self.reporter.message(
                "warning: undo did not complete on "
                + ", ".join(left)
                + "; the new release never became current there, and cleanup removes what "
                "is left once it is older than the kept releases"
            )
        else:
            self.reporter.message("undid every step begun, newest first, on every host")

    def _aborted(self, step: str, reason: str) -> ReleasebookError:
        self._undo("aborted", step=step, reason=reason)
        what = "preflight" if self.stop_after else "release"
        when = "removed" if self.stop_after else "aborted before switch"
        self.reporter.finished(False, f"{what} {self.info.release_id} failed; candidate {when}")
        return ReleaseFailed(
            f"{reason}\nNothing live changed: every step begun was undone on every host."
        )

    def _lock_lost(self, step: str, failed: list[Outcome]) -> ReleasebookError:
        """Someone broke the lock (``inv unlock``) while this run held it: another run
        may be under way, so change nothing more, not even by rolling back."""
        hosts = ", ".join(o.target for o in failed)
        reason = (
            f"step {step!r} refused on {hosts}: the environment lock was broken (inv unlock) "
            "or taken over while this run held it; the run stopped there"
        )
        self.held.lost.update(o.target for o in failed)
        if not self.live:
            self._undo("lock_lost", step=step, reason=reason)
        else:
            record_everywhere(
                self.env,
                self.runner.transports,
                self.masker,
                {**self.base, "outcome": "lock_lost", "step": step, "reason": reason},
            )
        self.reporter.finished(False, f"release {self.info.release_id} stopped: lock lost")
        if not self.live:
            return ReleaseFailed(
                f"{reason}.\nNothing live changed: the new release was removed from every host."
            )
        return RollbackFailed(
            f"{reason}, after the switch, so it did not roll back either: hosts may serve "
            f"{self.info.release_id} or the release before it. "
            f"Check `inv status --env={self.env.name}`."
        )

    def interrupted(self, exc: KeyboardInterrupt) -> ReleasebookError:
        """Ctrl-C, SIGTERM or SIGHUP. The scripts running on hosts were let finish (see
        ``execute.parallel``), so what undoes them now cannot race them."""
        name = exc.signal_name if isinstance(exc, Interrupted) else "Ctrl-C"
        reason = f"interrupted ({name}) during {self.runner.running}"
        if on_interrupt(live=self.live) is Action.ROLL_BACK:
            self.reporter.message(f"{reason}: rolling back; {name} again to stop that too")
            try:
                return self._rolled_back(reason)
            except KeyboardInterrupt:
                record_everywhere(
                    self.env,
                    self.runner.transports,
                    self.masker,
                    {**self.base, "outcome": "rollback_interrupted", "reason": reason},
                )
                self.reporter.finished(False, "the automatic rollback was interrupted")
                return RollbackFailed(
                    f"{reason}, and the automatic rollback was interrupted too: hosts may "
                    f"serve {self.info.release_id} or the release before it. Check `inv "
                    f"status --env={self.env.name}`, then `inv rollback --env={self.env.name}` "
                    "or release again."
                )
        self._undo("interrupted", reason=reason)
        what = "preflight" if self.stop_after else "release"
        self.reporter.finished(False, f"{what} {self.info.release_id} {reason}")
        return ReleaseFailed(
            f"{reason} before switch: every step begun was undone on every host; "
            "nothing live changed."
        )

    def _rolled_back(self, reason: str) -> ReleasebookError:
        """Every host back to the release it served before, verified; a host that served
        nothing before is taken out of service."""
        env, previous = self.env, self.previous
        retired = [h.name for h in env.hosts if h.name not in previous]
        going = ", ".join(f"{h} to {r}" for h, r in previous.items())
        self.reporter.message(
            f"rolling back from {self.info.release_id} (failed): "
            + (f"{going}" if going else "no host served a release before")
            + (
                f"; taking {', '.join(retired)} out of service (it served nothing)"
                if retired
                else ""
            )
        )
        applied = self.base.get("migrations", {}).get("applied", [])
        schema = (
            "The schema is kept: " + ", ".join(applied) + " stay applied (they passed the "
            "readiness gate's migration lint, so the older code tolerates them; "
            f"`inv rollback --env={env.name} --migrate` would unapply reversible ones)."
            if applied
            else "No migration was applied: the schema is as it was."
        )
        plan = build_plan(
            env,
            "rollback",
            source=self.source,
            run=Run(
                release=self.info,
                lock=self.held.info,
                marker=self.marker,
                action="rollback",
                facts=self.held.facts,
            ),
            targets=previous,
            steps=ROLLBACK_STEPS,
        )
        self.reporter.plan_started(plan)
        undo = Runner(env, self.runner.transports, self.reporter, plan.frames)
        failed = run_until_failure(plan, undo, self.batch_size)
        if not failed and self.plan.has("maintenance_off"):
            # The release it went back to is verified: it serves again (--maintenance).
            self.runner.run([self.plan.step("maintenance_off")])
        outcome = "rolled_back" if not failed else "rollback_failed"
        # The automatic rollback is a run of its own in the history, as `inv rollback` is;
        # the release's record, written last, ends the run's story.
        record(
            env,
            self.runner.transports,
            self.masker,
            {
                h.name: {
                    **attempt("rollback", previous.get(h.name) or ""),
                    "automatic": True,
                    "from": self.info.release_id,
                    "outcome": (
                        "failed"
                        if failed
                        else ("rolled_back_to" if h.name in previous else "retired")
                    ),
                    "reason": f"automatic, after release {self.info.release_id} failed: "
                    + reason.splitlines()[0],
                    "steps": dict(undo.durations),
                }
                for h in env.hosts
            },
        )
        record(
            env,
            self.runner.transports,
            self.masker,
            {
                h.name: {
                    **self.base,
                    "outcome": outcome,
                    "reason": reason,
                    "restored": previous.get(h.name),
                    "steps": dict(self.runner.durations),
                }
                for h in env.hosts
            },
        )
        serving = "\n".join(
            f"  {h.name}: "
            + (
                f"serves {previous[h.name]}, verified"
                if h.name in previous
                else "out of service: it served nothing before this release; its programs "
                "are stopped and `current` removed"
            )
            for h in env.hosts
        )
        release_id, name = self.info.release_id, env.name
        choices = (
            f"Choices: fix the cause and release again (`inv release --env={name}`), or "
            f"leave the hosts out of service until then; `inv status --env={name}` shows them."
        )
        if failed:
            self.reporter.finished(False, "release failed and the automatic rollback failed too")
            broken = (
                f"\n{', '.join(retired)} served no release before {release_id} (a first "
                f"release): {release_id} may still be LIVE there, and it is BROKEN. Stop its "
                "programs (`supervisorctl stop all` with the host's supervisord) or fix the "
                f"cause and release again (`inv release --env={name}`)."
                if retired
                else ""
            )
            return RollbackFailed(
                f"{reason}\nThe automatic rollback failed as well:\n"
                + failure_text(failed[0].step, failed)
                + broken
            )
        if not previous:
            self.reporter.finished(
                False, f"first release {release_id} failed after the switch; out of service"
            )
            return ReleaseFailed(
                f"{reason}\n{release_id} was the first release of {name} and it failed after "
                "going live: there is no earlier release to go back to, so every host was "
                f"taken out of service:\n{serving}\n"
                f"Nothing is served now. {choices}\n{schema}"
            )
        self.reporter.finished(False, f"release {release_id} failed; rolled back")
        extra = f"\n{choices}" if retired else ""
        return ReleaseFailed(f"{reason}\nRolled back; each host now:\n{serving}{extra}\n{schema}")

    def record_unrecorded(self) -> None:
        """The success record where cleanup's script did not carry it, and a failed
        cleanup's warnings on every host."""
        unrecorded = {h.name for h in self.env.hosts} - self.recorded
        if not (self.warnings or unrecorded):
            return
        record(
            self.env,
            self.runner.transports,
            self.masker,
            {
                h.name: {**self._success_record(h.name), "warnings": self.warnings}
                for h in self.env.hosts
                if h.name in unrecorded or self.warnings
            },
        )


def failure_text(step: str, failed: list[Outcome]) -> str:
    lines = [f"step {step!r} failed on " + ", ".join(o.target for o in failed)]
    for outcome in failed:
        lines.append(f"--- {outcome.target} (exit {outcome.exited}):")
        lines.extend("    " + line for line in outcome.tail.splitlines())
    return "\n".join(lines)


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
            report = parse_gate_output(outcome.target, outcome.stdout)
        except GateOutputError:
            report = host_failed(outcome.target, outcome.tail or "no output")
        reports.append(_who_skipped(report, env.gate_skips, skips, user))
    problems = any(r.error is not None or r.blocking or r.warnings or r.skipped for r in reports)
    shown = gate_summary(reports)
    if problems:
        shown += " (the failures, warnings and skips; -v shows every check):\n"
        shown += format_table(reports, problems_only=True)
    reporter.message(shown, gate=_gate_json(reports), detail=format_table(reports))
    skipped = {
        **{k: {"reason": v, "by": "inventory"} for k, v in env.gate_skips.items()},
        **{k: {"reason": v, "by": user} for k, v in skips.items()},
    }
    if any(r.migration_findings for r in reports):
        reporter.message("migration lint:\n" + format_migration_findings(reports))
    kept = {
        "summary": gate_summary(reports),
        "skipped": skipped,
        "acknowledged_migrations": acknowledged_record(reports),
        "warnings": sorted({r.id for report in reports for r in report.warnings}),
        "blocking": sorted({r.id for report in reports for r in report.blocking}),
        "pending_migrations": next(
            (list(r.pending_migrations) for r in reports if r.pending_migrations), []
        ),
    }
    return kept, {r.host for r in reports if not r.ok}


def _who_skipped(
    report: HostReport, inventory: Mapping[str, str], skips: Mapping[str, str], user: str
) -> HostReport:
    """Each skipped check's message says who skipped it and why."""

    def said(result: CheckResult) -> CheckResult:
        if result.status != "skip":
            return result
        if result.id in skips:
            return replace(result, message=f"skipped by --skip ({user}): {skips[result.id]}")
        if result.id in inventory:
            return replace(result, message=f"skipped by the inventory: {inventory[result.id]}")
        return result

    return replace(report, results=tuple(said(r) for r in report.results))


def _gate_json(reports: list[HostReport]) -> list[dict[str, Any]]:
    return [
        {"host": r.host, "ok": r.ok, "error": r.error, "results": [asdict(c) for c in r.results]}
        for r in reports
    ]


__all__ = ["failure_text", "release"]
