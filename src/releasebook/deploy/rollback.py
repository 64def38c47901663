"""``inv rollback``: the rollback runbook to the release each host served before the live
one (from the history), or to a chosen one, verified, and recorded."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import replace

from releasebook.deploy.connection import Opener, attempt, connect, open_real
from releasebook.deploy.release import failure_text
from releasebook.deploy.running import Runner, lock_info_for, run_until_failure, with_records
from releasebook.errors import RollbackFailed, UsageError
from releasebook.execute.events import Reporter
from releasebook.execute.lock import HeldLock, environment_lock
from releasebook.inventory import Environment
from releasebook.masking import Masker
from releasebook.plan.build import Run, build_plan
from releasebook.plan.facts import HostFacts, validate_release_id
from releasebook.plan.model import Plan, ReleaseInfo, Source
from releasebook.plan.source import find_source
from releasebook.runbooks.bookkeeping import LockInfo

STEPS = ("lock", "switch", "restart_web", "restart_workers", "verify", "record", "unlock")


def rollback(
    env: Environment,
    reporter: Reporter,
    masker: Masker,
    *,
    to: str | None = None,
    source: Source | None = None,
    batch_size: int | None = None,
    lock_wait: float = 0,
    opener: Opener = open_real,
) -> str:
    """Switch every host back to an earlier release; the release id it went to."""
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

    def plan_with(lock: LockInfo, held: HeldLock | None = None, to_id: str = "") -> Plan:
        facts = held.facts if held is not None else None
        targets = _targets(facts, to) if facts is not None else None
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
            steps=STEPS,
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
            failed = run_until_failure(_without_record(plan), runner, batch_size)
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
            finish = [p for p in plan.steps if p.step.name in ("record", "unlock")]
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
    reporter.finished(True, f"{env.name} {verb} from {sources} to {target_id}")
    return target_id


def _without_record(plan: Plan) -> Plan:
    """The plan from after the lock up to verify: the record and the unlock run once the
    outcome is known."""
    steps = tuple(p for p in plan.steps if p.step.name not in ("lock", "record", "unlock"))
    return replace(plan, steps=steps)


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
