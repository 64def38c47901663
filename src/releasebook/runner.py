"""Execute one planned step: its hosts in parallel, every outcome collected, no decision.

A host's commands for a step go in as one script (one round trip); uploads are skipped
where their ``skip_if`` test passes on the host. The caller decides what a failure means.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from releasebook.health import wait_ready
from releasebook.plan import HostWork, PlannedStep
from releasebook.reporting import Reporter
from releasebook.transport import Result, Transport

SCRIPT_HEADER = "set -eu"


@dataclass(frozen=True)
class Outcome:
    step: str
    target: str
    ok: bool
    exited: int
    tail: str
    duration: float
    stdout: str = ""  # the whole of it, for steps whose output is a report to parse


def host_script(commands: tuple[str, ...]) -> str:
    return "\n".join((SCRIPT_HEADER, *commands)) + "\n"


def _run_work(step: str, work: HostWork, transport: Transport) -> Outcome:
    if work.probe is not None:
        probe = wait_ready(work.probe)
        return Outcome(
            step, work.target, probe.ok, 0 if probe.ok else 1, probe.detail, probe.duration
        )
    duration = 0.0
    try:
        for upload in work.uploads:
            if upload.skip_if is not None:
                check = transport.run(upload.skip_if)
                duration += check.duration
                if check.ok:
                    continue
            transport.put(Path(str(upload.local)), str(upload.remote))
        commands = work.commands + work.verify
        if not commands:
            return Outcome(step, work.target, True, 0, "", duration)
        result = transport.run(host_script(commands))
    except Exception as exc:  # a lost connection is a failed step on that host, not a crash
        return Outcome(step, work.target, False, -1, f"{type(exc).__name__}: {exc}", duration)
    return _outcome(step, work.target, result, duration)


def _outcome(step: str, target: str, result: Result, extra: float) -> Outcome:
    return Outcome(
        step,
        target,
        result.ok,
        result.exited,
        result.tail(),
        result.duration + extra,
        result.stdout,
    )


def execute_step(
    planned: PlannedStep,
    transports: Mapping[str, Transport],
    reporter: Reporter,
    max_parallel: int,
) -> list[Outcome]:
    reporter.step_started(planned)
    work = planned.work
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(work)))) as pool:
        futures = [
            pool.submit(_run_work, planned.step.name, item, transports[item.target])
            for item in work
        ]
        outcomes = []
        for future in futures:
            outcome = future.result()
            reporter.host_finished(planned, outcome)
            outcomes.append(outcome)
    return outcomes


def run_scripts(
    scripts: Mapping[str, tuple[str, ...]],
    transports: Mapping[str, Transport],
    max_parallel: int,
) -> dict[str, Result | Exception]:
    """Run bookkeeping scripts (state probes, history) on several hosts at once."""
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(scripts) or 1))) as pool:
        futures = {
            target: pool.submit(transports[target].run, host_script(commands))
            for target, commands in scripts.items()
        }
        results: dict[str, Result | Exception] = {}
        for target, future in futures.items():
            try:
                results[target] = future.result()
            except Exception as exc:
                results[target] = exc
        return results
