"""Run a plan's groups of steps: hosts in parallel, every outcome collected, no decision.

A group of host steps is one script per host (``Frame.script``): uploads go first, over
one SFTP session, then the script, whose marker lines (a per-run token no step can know)
split its output back per step, live, so each step's result is reported as it happens.
A controller step runs its commands on this machine; an HTTP check probes every web host.
The caller decides what a failure means.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from releasebook.execute.events import Reporter
from releasebook.execute.health import wait_ready
from releasebook.execute.outcome import LOST, NOT_RUN, Outcome
from releasebook.execute.parallel import run_parallel
from releasebook.plan.model import Frame, HostWork, PlannedStep
from releasebook.runbooks.bookkeeping import BUSY, LOCK_LOST, TIMED_OUT
from releasebook.transport import Result, Transport

SLACK = 60.0  # beyond the steps' own limits, before the controller gives up on a script

__all__ = ["BUSY", "LOCK_LOST", "NOT_RUN", "TIMED_OUT", "Outcome", "run_group", "run_scripts"]


def plain_script(commands: Sequence[str]) -> str:
    return "\n".join(("set -eu", *commands)) + "\n"


def run_group(
    group: Sequence[PlannedStep],
    transports: Mapping[str, Transport],
    reporter: Reporter,
    max_parallel: int,
    frames: Mapping[str, Frame],
) -> list[list[Outcome]]:
    """Run a group; each step's outcomes, in the group's order, reported as they come."""
    announce = getattr(reporter, "group_started", None)  # optional: one header for a group
    if announce is not None:
        announce(group)
    for planned in group:
        reporter.step_started(planned)
    report = _Reporting(group, reporter)
    first = group[0]
    if len(group) == 1 and first.step.where == "controller":
        jobs = [
            partial(_run_controller, first, work, transports[work.target], report)
            for work in first.work
        ]
    else:
        targets = list(dict.fromkeys(w.target for p in group for w in p.work))
        jobs = [partial(_run_host, group, t, transports[t], frames[t], report) for t in targets]
    per_target = run_parallel(jobs, max_parallel)
    return [
        [o for outcomes in per_target for o in outcomes if o.step == planned.step.name]
        for planned in group
    ]


class _Reporting:
    """Reports each (step, target) outcome once, as soon as it is known, from whichever
    thread learns it."""

    def __init__(self, group: Sequence[PlannedStep], reporter: Reporter) -> None:
        self._steps = {p.step.name: p for p in group}
        self._reporter = reporter
        self._done: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, outcome: Outcome) -> None:
        with self._lock:
            key = (outcome.step, outcome.target)
            if key in self._done:
                return
            self._done.add(key)
        self._reporter.host_finished(self._steps[outcome.step], outcome)


def _run_controller(
    planned: PlannedStep, work: HostWork, transport: Transport, report: Callable[[Outcome], None]
) -> list[Outcome]:
    name = planned.step.name
    if work.probe is not None:
        probe = wait_ready(work.probe)
        outcome = Outcome(
            name, work.target, probe.ok, 0 if probe.ok else 1, probe.detail, probe.duration
        )
    else:
        try:
            result = transport.run(
                plain_script(work.commands + work.verify), timeout=work.timeout + SLACK
            )
            outcome = _outcome(name, work.target, result)
        except Exception as exc:  # a failure on this machine is the step's result
            outcome = Outcome(name, work.target, False, LOST, f"{type(exc).__name__}: {exc}", 0.0)
    report(outcome)
    return [outcome]


def _outcome(step: str, target: str, result: Result) -> Outcome:
    return Outcome(
        step,
        target,
        result.ok,
        result.exited,
        result.tail(),
        result.duration,
        result.stdout,
        result.stderr,
    )


def _run_host(
    group: Sequence[PlannedStep],
    target: str,
    transport: Transport,
    frame: Frame,
    report: Callable[[Outcome], None],
) -> list[Outcome]:
    works = [(p.step.name, w) for p in group if (w := p.on(target)) is not None]
    names = [name for name, _ in works]
    started = time.monotonic()
    watcher = _Watcher(frame, target, report)
    try:
        for _, work in works:
            for upload in work.uploads:
                transport.put(Path(str(upload.local)), str(upload.remote))
        parts = [(name, w.commands + w.verify, w.timeout) for name, w in works]
        if not any(commands for _, commands, _ in parts):
            elapsed = time.monotonic() - started
            outcomes = [Outcome(name, target, True, 0, "", elapsed) for name in names]
        else:
            limit = sum(timeout for _, _, timeout in parts) + SLACK
            result = transport.run(frame.script(parts), timeout=limit, on_line=watcher)
            outcomes = split(frame, names, target, result)
    except Exception as exc:  # a lost connection is a failed step on that host, not a crash
        began = watcher.began or names[:1]
        detail = f"{type(exc).__name__}: {exc}"
        outcomes = [
            Outcome(name, target, False, LOST, detail, time.monotonic() - started)
            if name == began[-1]
            else (
                Outcome(name, target, True, 0, "", 0.0) if name in began else not_run(name, target)
            )
            for name in names
        ]
    for outcome in outcomes:
        report(outcome)
    return outcomes


class _Watcher:
    """Follows a host script's stdout as it comes: when a step's marker appears, the step
    before it completed, which is reported at once."""

    def __init__(self, frame: Frame, target: str, report: Callable[[Outcome], None]) -> None:
        self._prefix = frame.prefix
        self._target = target
        self._report = report
        self.began: list[str] = []
        self._stamp: float | None = None
        self._lines: list[str] = []  # what the running step printed so far

    def __call__(self, line: str) -> None:
        if not line.startswith(self._prefix):
            self._lines.append(line)
            return
        name, _, stamp = line[len(self._prefix) :].partition(" ")
        now = _float(stamp)
        printed = "".join(f"{text}\n" for text in self._lines)
        self._lines = []
        if self.began and self._stamp is not None and now is not None:
            self._report(
                Outcome(self.began[-1], self._target, True, 0, "", now - self._stamp, printed)
            )
        if name != "-":
            self.began.append(name)
        self._stamp = now


def _float(text: str) -> float | None:
    with contextlib.suppress(ValueError):
        return float(text)
    return None


def _sections(text: str, prefix: str) -> tuple[dict[str, list[str]], dict[str, float]]:
    sections: dict[str, list[str]] = {}
    stamps: dict[str, float] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(prefix):
            name, _, stamp = line[len(prefix) :].partition(" ")
            current = sections.setdefault(name, [])
            value = _float(stamp)
            if value is not None:
                stamps[name] = value
            continue
        if current is not None:
            current.append(line)
    return sections, stamps


def split(frame: Frame, names: Sequence[str], target: str, result: Result) -> list[Outcome]:
    """A host script's result, split back into one outcome per step by its markers."""
    prefix = frame.prefix
    out, stamps = _sections(result.stdout, prefix)
    err, _ = _sections(result.stderr, prefix)
    ran = [name for name in names if name in out]
    if not ran and not result.ok:
        # Stopped before its first step (the step lock's wait ran out, the fence, a
        # missing flock): the first step carries why.
        first = _outcome(names[0], target, result)
        return [first, *(not_run(name, target) for name in names[1:])]
    outcomes: list[Outcome] = []
    for index, name in enumerate(names):
        if name not in out:
            outcomes.append(not_run(name, target))
            continue
        following = names[index + 1] if index + 1 < len(names) else "-"
        end = stamps.get(following if following in stamps else "-")
        duration = (end - stamps[name]) if end and name in stamps else result.duration
        finished = name != ran[-1] or "-" in out
        stdout = "\n".join(out[name]) + ("\n" if out[name] else "")
        stderr = "\n".join(err.get(name, []))
        section = Result(0 if finished else result.exited, stdout, stderr, duration)
        outcomes.append(
            Outcome(
                name, target, section.ok, section.exited, section.tail(), duration, stdout, stderr
            )
        )
    return outcomes


def not_run(name: str, target: str) -> Outcome:
    return Outcome(name, target, False, NOT_RUN, "not run: an earlier step failed here", 0.0)


def run_scripts(
    scripts: Mapping[str, str],
    transports: Mapping[str, Transport],
    max_parallel: int,
    timeout: float = 300,
) -> dict[str, Result | Exception]:
    """Run whole scripts (bookkeeping: the lock, probes, undo) on several hosts at once."""

    def run(target: str, script: str) -> Result | Exception:
        try:
            return transports[target].run(script, timeout=timeout)
        except Exception as exc:  # a host's failure is its result, not the others'
            return exc

    jobs = [partial(run, target, script) for target, script in scripts.items()]
    return dict(zip(scripts, run_parallel(jobs, max_parallel), strict=True))
