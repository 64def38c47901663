"""The order a plan's steps run in, and which of them share one script per host.

Rolling restarts: with a batch size, ``restart_web`` and ``verify`` run for the first
batch of web hosts, then the next, so a release that fails verification is stopped after
one batch. Every other step runs on all its hosts at once, as planned.

Round trips are the cost to save, so consecutive host steps of the same phase are fused:
each host gets one script for the whole group (``Frame.script``). A step with
``barrier`` starts a new group (every host finishes what came before it first), and so
do controller steps, steps that run once (unless they follow one that runs once on the
same hosts) or on the first host alone, and a change of phase.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace

from releasebook.errors import UsageError
from releasebook.plan.model import Plan, PlannedStep

ROLLING = ("restart_web", "verify")
Group = list[PlannedStep]


def parse_batch_size(value: str, web_hosts: int) -> int | None:
    """``"2"`` or ``"25%"`` of the web hosts (at least one); ``""`` for no batching."""
    if not value:
        return None
    match = re.fullmatch(r"([1-9][0-9]*)(%?)", value.strip())
    if not match or (match.group(2) and int(match.group(1)) > 100):
        raise UsageError(
            f"--batch-size {value!r}: expected a number of hosts (e.g. 2) or a percentage "
            "of the web hosts from 1% to 100% (e.g. 25%)"
        )
    number = int(match.group(1))
    if match.group(2):
        return max(1, math.ceil(web_hosts * number / 100))
    return number


def schedule(steps: Sequence[PlannedStep], batch_size: int | None) -> list[PlannedStep]:
    """The steps in the order they run, the rolling pair split into batches."""
    names = [p.step.name for p in steps]
    if batch_size is None or "restart_web" not in names or "verify" not in names:
        return list(steps)
    restart = steps[names.index("restart_web")]
    verify = steps[names.index("verify")]
    hosts = [w.target for w in restart.work]
    batches = [hosts[i : i + batch_size] for i in range(0, len(hosts), batch_size)]
    order: list[PlannedStep] = []
    for planned in steps:
        if planned.step.name == "verify":
            continue
        if planned.step.name != "restart_web":
            order.append(planned)
            continue
        for batch in batches:
            for step in (restart, verify):
                order.append(replace(step, work=tuple(w for w in step.work if w.target in batch)))
    return order


def groups(steps: Sequence[PlannedStep], batch_size: int | None = None) -> list[Group]:
    """Consecutive steps that share one script per host, in the order they run."""
    keep_apart = frozenset(ROLLING) if batch_size else frozenset()
    out: list[Group] = []
    for planned in schedule(steps, batch_size):
        if out and _joins(out[-1][-1], planned, keep_apart):
            out[-1].append(planned)
        else:
            out.append([planned])
    return out


def _joins(before: PlannedStep, step: PlannedStep, keep_apart: frozenset[str]) -> bool:
    a, b = before.step, step.step
    # Steps run once on the same host (the backup, then migrate) share its script: the
    # first began its own group, after every host finished the steps before it, so the
    # second's barrier holds too.
    same_once = a.once and b.once and a.roles == b.roles and not (a.first_alone or b.first_alone)
    return (
        a.where == b.where == "hosts"
        and a.phase == b.phase
        and a.framed
        and b.framed
        and (same_once or not (a.once or b.once or b.barrier or a.first_alone or b.first_alone))
        and not {a.name, b.name} & keep_apart
    )


def plan_groups(plan: Plan, batch_size: int | None, after: str | None = None) -> list[Group]:
    """The plan's groups, from the step after ``after`` on (the lock is taken first)."""
    steps = plan.after(after) if after is not None else plan.steps
    return groups(steps, batch_size)
