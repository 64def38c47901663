"""Execute planned steps: hosts in parallel, every outcome collected, no decision.

Round trips are the cost to save, so consecutive host steps of the same phase are fused:
each host gets one script for the whole group, with a marker line before each step on
stdout and stderr, and the output is split back per step. A step with ``barrier`` starts
a new group (every host finishes what came before it first), and so do controller steps,
steps that run once, and a change of phase. Uploads go first, over one SFTP session.
The caller decides what a failure means.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from releasebook.health import wait_ready
from releasebook.parallel import run_parallel
from releasebook.plan import HostWork, PlannedStep
from releasebook.quoting import quote
from releasebook.reporting import Reporter
from releasebook.transport import Result, Transport

SCRIPT_HEADER = "set -eu"
MARK = "@@releasebook-step"
NOT_RUN = -2
# flock's exit status when the wait for another run's script ran out.
BUSY = 75
BUSY_WAIT = 300
# A guard's fence found that this run no longer holds the environment lock.
LOCK_LOST = 76


@dataclass(frozen=True)
class Guard:
    """Where a host serialises step scripts, and journals the steps it completed.

    A step script keeps running on its host when the controller loses it (a dropped
    connection, a killed controller), so every step script and every undo takes the
    host's step lock first: an undo waits for what it undoes instead of racing it.
    ``flock -o`` keeps the lock out of daemons the script starts (supervisord)."""

    lock: str
    journal: str
    action: str
    release: str
    # Run once the step lock is held, before the script: a check that stops it (exit
    # ``LOCK_LOST``) when this run no longer holds the environment lock.
    fence: tuple[str, ...] = ()

    def wrap(self, script: str) -> str:
        if self.fence:
            script = host_script(self.fence) + script
        state_dir = quote(str(PurePosixPath(self.lock).parent))
        busy = quote(
            f"another releasebook script is still running on this host; waited {BUSY_WAIT}s "
            f"for {self.lock}"
        )
        return host_script(
            (
                "command -v flock >/dev/null || "
                "{ echo 'flock (util-linux) is required on this host' >&2; exit 127; }",
                f"mkdir -p {state_dir}",
                "rc=0",
                f"flock -o -w {BUSY_WAIT} -E {BUSY} {quote(self.lock)} bash -c {quote(script)}"
                " || rc=$?",
                f"if [ \"$rc\" = {BUSY} ]; then printf '%s\\n' {busy} >&2; fi",
                'exit "$rc"',
            )
        )

    def journal_line(self, step: str) -> str:
        entry = quote(f"{self.action} {self.release} {step}")
        return (
            f"printf '%s %s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" {entry} >> {quote(self.journal)}"
        )


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


def fuse(
    order: list[PlannedStep], *, keep_apart: frozenset[str] = frozenset()
) -> list[list[PlannedStep]]:
    """Group consecutive steps that can share one script per host."""
    groups: list[list[PlannedStep]] = []
    for planned in order:
        if groups and _joins(groups[-1][-1], planned, keep_apart):
            groups[-1].append(planned)
        else:
            groups.append([planned])
    return groups


def _joins(before: PlannedStep, step: PlannedStep, keep_apart: frozenset[str]) -> bool:
    a, b = before.step, step.step
    return (
        a.where == b.where == "hosts"
        and a.phase == b.phase
        and not (a.once or b.once or b.barrier)
        and not {a.name, b.name} & keep_apart
    )


def execute_group(
    group: list[PlannedStep],
    transports: Mapping[str, Transport],
    reporter: Reporter,
    max_parallel: int,
    guard: Guard | None = None,
) -> list[list[Outcome]]:
    """Run a fused group; return each step's outcomes, in the group's order. With a
    ``guard``, host scripts hold the host's step lock and journal each completed step."""
    for planned in group:
        reporter.step_started(planned)
    if len(group) == 1 and group[0].step.where == "controller":
        name = group[0].step.name
        per_host = run_parallel(
            [partial(_run_one, name, w, transports[w.target]) for w in group[0].work],
            max_parallel,
        )
    else:
        targets = list(dict.fromkeys(w.target for p in group for w in p.work))
        per_host = run_parallel(
            [partial(_run_fused, group, t, transports[t], guard) for t in targets], max_parallel
        )
    results: list[list[Outcome]] = []
    for planned in group:
        outcomes = [o for host in per_host for o in host if o.step == planned.step.name]
        for outcome in outcomes:
            reporter.host_finished(planned, outcome)
        results.append(outcomes)
    return results


def _run_one(step: str, work: HostWork, transport: Transport) -> list[Outcome]:
    return [_run_work(step, work, transport)]


def _run_fused(
    group: list[PlannedStep], target: str, transport: Transport, guard: Guard | None
) -> list[Outcome]:
    works = [(p.step.name, w) for p in group for w in p.work if w.target == target]
    names = [name for name, _ in works]
    started = time.monotonic()
    try:
        for _, work in works:
            for upload in work.uploads:
                if upload.skip_if is not None and transport.run(upload.skip_if).ok:
                    continue
                transport.put(Path(str(upload.local)), str(upload.remote))
        parts = [(name, w.commands + w.verify) for name, w in works]
        if not any(commands for _, commands in parts):
            elapsed = time.monotonic() - started
            return [Outcome(name, target, True, 0, "", elapsed) for name in names]
        result = transport.run(_fused_script(parts, guard))
    except Exception as exc:  # a lost connection is a failed step on that host, not a crash
        failed = Outcome(
            names[0],
            target,
            False,
            -1,
            f"{type(exc).__name__}: {exc}",
            time.monotonic() - started,
        )
        return [failed, *(_not_run(name, target) for name in names[1:])]
    return _split(names, target, result)


def _fused_script(parts: list[tuple[str, tuple[str, ...]]], guard: Guard | None = None) -> str:
    lines = [SCRIPT_HEADER]
    done: str | None = None
    for name, commands in [*parts, ("", ())]:
        if guard is not None and done is not None:
            lines.append(guard.journal_line(done))
        marker = quote(f"{MARK} {name or '-'}")
        lines.append(f"printf '%s %s\\n' {marker} \"$(date +%s.%N)\"; printf '%s\\n' {marker} >&2")
        lines.extend(commands)
        done = name
    script = "\n".join(lines) + "\n"
    return guard.wrap(script) if guard is not None else script


def _sections(text: str) -> tuple[dict[str, list[str]], dict[str, float]]:
    sections: dict[str, list[str]] = {}
    stamps: dict[str, float] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(MARK + " "):
            name, _, stamp = line[len(MARK) + 1 :].partition(" ")
            current = sections.setdefault(name, [])
            if stamp:
                with contextlib.suppress(ValueError):
                    stamps[name] = float(stamp)
            continue
        if current is not None:
            current.append(line)
    return sections, stamps


def _split(names: list[str], target: str, result: Result) -> list[Outcome]:
    out, stamps = _sections(result.stdout)
    err, _ = _sections(result.stderr)
    ran = [name for name in names if name in out]
    if not ran and not result.ok:
        # Stopped before its first step (the step lock's wait ran out, a fence, a
        # missing flock): the first step carries why.
        first = _outcome(names[0], target, result, 0.0)
        return [first, *(_not_run(name, target) for name in names[1:])]
    outcomes: list[Outcome] = []
    for index, name in enumerate(names):
        if name not in out:
            outcomes.append(_not_run(name, target))
            continue
        following = names[index + 1] if index + 1 < len(names) else "-"
        end = stamps.get(following if following in stamps else "-")
        duration = (end - stamps[name]) if end and name in stamps else result.duration
        finished = name != ran[-1] or "-" in out
        stdout = "\n".join(out[name]) + ("\n" if out[name] else "")
        stderr = "\n".join(err.get(name, []))
        section = Result(0 if finished else result.exited, stdout, stderr, duration)
        outcomes.append(
            Outcome(name, target, section.ok, section.exited, section.tail(), duration, stdout)
        )
    return outcomes


def _not_run(name: str, target: str) -> Outcome:
    return Outcome(name, target, False, NOT_RUN, "not run: an earlier step failed here", 0.0)


def run_scripts(
    scripts: Mapping[str, tuple[str, ...]],
    transports: Mapping[str, Transport],
    max_parallel: int,
    guard: Guard | None = None,
) -> dict[str, Result | Exception]:
    """Run bookkeeping scripts (state probes, history) on several hosts at once; undo
    scripts pass the ``guard`` so that they wait for any step script still running."""

    def script(target: str, commands: tuple[str, ...]) -> str:
        text = host_script(commands)
        return guard.wrap(text) if guard is not None and target != "controller" else text

    def run(target: str, commands: tuple[str, ...]) -> Result | Exception:
        try:
            return transports[target].run(script(target, commands))
        except Exception as exc:  # a host's failure is its result, not the others'
            return exc

    jobs = [partial(run, target, commands) for target, commands in scripts.items()]
    return dict(zip(scripts, run_parallel(jobs, max_parallel), strict=True))
