"""Rolling restarts: the web restart and its verification, one batch of hosts at a time.

With a batch size, ``restart_web`` and ``verify`` run for the first batch of web hosts,
then the next, so a release that fails verification is stopped after one batch. Every
other step runs on all its hosts at once, as planned.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from releasebook.errors import UsageError
from releasebook.plan import Plan, PlannedStep

ROLLING = ("restart_web", "verify")


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


def schedule(plan: Plan, batch_size: int | None) -> list[PlannedStep]:
    """The plan's steps in the order they run, the rolling pair split into batches."""
    if batch_size is None or "restart_web" not in {p.step.name for p in plan.steps}:
        return list(plan.steps)
    restart, verify = plan.step("restart_web"), plan.step("verify")
    hosts = [w.target for w in restart.work]
    batches = [hosts[i : i + batch_size] for i in range(0, len(hosts), batch_size)]
    order: list[PlannedStep] = []
    for planned in plan.steps:
        if planned.step.name == "verify":
            continue
        if planned.step.name != "restart_web":
            order.append(planned)
            continue
        for batch in batches:
            for step in (restart, verify):
                order.append(replace(step, work=tuple(w for w in step.work if w.target in batch)))
    return order
