"""What release and rollback share while a plan runs: the runner that remembers what each
host began (for undo) and how long each step took, the run's lock info, and the record
step filled in with each host's history record."""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from releasebook.execute.events import Reporter
from releasebook.execute.outcome import Outcome
from releasebook.execute.runner import run_group
from releasebook.inventory import Environment
from releasebook.masking import Masker
from releasebook.plan.build import render_step
from releasebook.plan.model import Frame, Plan, PlannedStep
from releasebook.plan.schedule import plan_groups
from releasebook.runbooks import bookkeeping as book
from releasebook.transport import Transport


def lock_info_for(command: str, release: str) -> book.LockInfo:
    now = time.time()
    return book.LockInfo(
        user=getpass.getuser(),
        controller=socket.gethostname(),
        pid=os.getpid(),
        started=book.iso(now),
        command=command,
        release=release,
        token=os.urandom(16).hex(),
        lease_until=now + book.LEASE,
    )


@dataclass
class Runner:
    """Runs a plan's groups; keeps, by target, the steps begun (in order) and, by step,
    the slowest host's duration."""

    env: Environment
    transports: Mapping[str, Transport]
    reporter: Reporter
    frames: Mapping[str, Frame]
    durations: dict[str, float] = field(default_factory=dict)
    began: dict[str, list[str]] = field(default_factory=dict)
    running: str = "start-up"  # the group now running, for messages

    def run(self, group: Sequence[PlannedStep]) -> list[list[Outcome]]:
        """Run ``group``. What began is kept from each outcome as it is reported, so it
        is known even when a stop signal ends the group (its running scripts finish,
        report, and the signal is raised)."""
        steps = ", ".join(p.step.name for p in group)
        targets = ", ".join(dict.fromkeys(w.target for p in group for w in p.work))
        self.running = f"{steps} on {targets}"
        slowest: dict[str, float] = {}
        try:
            return run_group(
                group,
                self.transports,
                _Tracking(self.reporter, self.began, slowest),
                self.env.max_parallel,
                self.frames,
            )
        finally:
            for name, seconds in slowest.items():
                self.durations[name] = round(self.durations.get(name, 0.0) + seconds, 3)


@dataclass
class _Tracking:
    """The run's reporter, noting what each outcome says began and how long it took."""

    inner: Reporter
    began: dict[str, list[str]]
    slowest: dict[str, float]

    def plan_started(self, plan: Plan) -> None:
        self.inner.plan_started(plan)

    def group_started(self, group: Sequence[PlannedStep]) -> None:
        announce = getattr(self.inner, "group_started", None)
        if announce is not None:
            announce(group)

    def step_started(self, planned: PlannedStep) -> None:
        self.inner.step_started(planned)

    def host_finished(self, planned: PlannedStep, outcome: Outcome) -> None:
        name = planned.step.name
        begun = self.began.setdefault(outcome.target, [])
        if outcome.began and name not in begun:
            begun.append(name)
        self.slowest[name] = max(self.slowest.get(name, 0.0), outcome.duration)
        self.inner.host_finished(planned, outcome)

    def message(self, text: str, **data: Any) -> None:
        self.inner.message(text, **data)

    def finished(self, ok: bool, summary: str) -> None:
        self.inner.finished(ok, summary)


def run_until_failure(plan: Plan, runner: Runner, batch_size: int | None) -> list[Outcome]:
    """Run the plan's groups until a step fails somewhere: that step's failed outcomes."""
    for group in plan_groups(plan, batch_size):
        for outcomes in runner.run(group):
            failed = [o for o in outcomes if not o.ok]
            if failed:
                return failed
    return []


def with_records(
    plan: Plan,
    group: Sequence[PlannedStep],
    records: Mapping[str, dict[str, Any]],
    masker: Masker,
) -> list[PlannedStep]:
    """``group`` with its record step's commands filled in with each host's record."""
    out: list[PlannedStep] = []
    for planned in group:
        if planned.step.name != book.RECORD.name:
            out.append(planned)
            continue
        work = tuple(
            replace(
                w,
                commands=render_step(
                    plan,
                    book.RECORD,
                    w.target,
                    record=masker.mask(json.dumps(records[w.target], sort_keys=True)),
                ),
            )
            for w in planned.work
            if w.target in records
        )
        out.append(replace(planned, work=work))
    return out
