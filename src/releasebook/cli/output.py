"""Progress for people (live lines and a summary table) and for machines (JSON lines).

Both pass everything through the run's :class:`~releasebook.masking.Masker`: whatever a
command printed, declared secret values never reach the terminal or a JSON consumer, and
control characters from hosts are stripped. Hosts report from several threads at once,
so each line is written whole, under a lock. A closed terminal (SIGHUP, a broken pipe)
does not stop the run: output that cannot be written is dropped.

Steps that share one script per host run at once, each host at its own pace, so their
headers are printed together, as one group, and every host line names its step. While a
step runs long, a heartbeat says what is still running, where, and for how long. Verbose
(``-v``, and always in the run's log file) adds each step's commands and their output.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from releasebook.masking import Masker

if TYPE_CHECKING:
    from releasebook.execute.outcome import Outcome
    from releasebook.plan.model import Plan, PlannedStep


@dataclass
class _Row:
    number: int
    name: str
    hosts: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    duration: float = 0.0
    planned: int = -1  # the hosts it was planned on (-1: not known)


@dataclass
class _Section:
    title: str
    total: int
    rows: dict[str, _Row] = field(default_factory=dict)


class _Writer:
    def __init__(self, stream: TextIO | None, masker: Masker) -> None:
        self._out = stream or sys.stdout
        self._masker = masker
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def write(self, text: str) -> None:
        line = self._masker.screen(text)
        # The terminal may be gone (SIGHUP, a closed pipe): the run goes on.
        with self._lock, contextlib.suppress(OSError, ValueError):
            print(line, file=self._out, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


HEARTBEAT = 10.0  # seconds between "still running" lines while a step runs long
INDENT = " " * 14


class ConsoleReporter:
    """Live lines and a summary table per plan. ``verbose``: each step's commands and
    output too. ``heartbeat``: seconds between "still running" lines (0: none)."""

    def __init__(
        self,
        masker: Masker,
        stream: TextIO | None = None,
        *,
        verbose: bool = False,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self._w = _Writer(stream, masker)
        self._sections: list[_Section] = []
        self._lock = threading.Lock()
        self.verbose = verbose
        self._heartbeat = heartbeat
        self._queue: dict[str, list[str]] = {}  # by target: the steps still to report
        self._since: dict[str, float] = {}  # by target: when its first step in queue began
        self._in_group: set[str] = set()  # steps announced by group_started
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _print(self, text: str) -> None:
        self._w.write(text)

    def _stamp(self) -> str:
        return f"{self._w.elapsed():6.1f}s"

    def plan_started(self, plan: Plan) -> None:
        hosts = ", ".join(h.name for h in plan.environment.hosts)
        action = next(iter(plan.frames.values())).action if plan.frames else plan.kind
        title = f"{action} {plan.release_id}"
        line = f"{action} {plan.release_id} to {plan.environment.name} ({hosts})"
        if plan.kind == "rollback":
            switching = any(p.work for p in plan.steps if p.step.name == "switch")
            title = (
                f"{action} to {plan.release_id}" if switching else f"{action}: hosts out of service"
            )
            line = f"{title} on {plan.environment.name} ({hosts})"
        self._sections.append(_Section(title, len(plan.steps)))
        self._print(line)
        self._start_heartbeat()

    # --- the heartbeat ----------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        if self._heartbeat <= 0 or self._beat is not None:
            return
        self._stop.clear()
        self._beat = threading.Thread(target=self._beating, name="heartbeat", daemon=True)
        self._beat.start()

    def _beating(self) -> None:
        while not self._stop.wait(self._heartbeat):
            line = self.still_running(time.monotonic())
            if line:
                self._print(f"{self._stamp()} {line}")

    def still_running(self, now: float) -> str:
        """``still running: install on web1 (12s), web2 (12s)``, for the steps running
        for a heartbeat or longer; "" when none is."""
        by_step: dict[str, list[str]] = {}
        with self._lock:
            for target, queue in self._queue.items():
                if queue and now - self._since[target] >= self._heartbeat:
                    seconds = now - self._since[target]
                    by_step.setdefault(queue[0], []).append(f"{target} ({seconds:.0f}s)")
        if not by_step:
            return ""
        return "still running: " + "; ".join(
            f"{step} on {', '.join(where)}" for step, where in by_step.items()
        )

    def close(self) -> None:
        """Stop the heartbeat (the run is over, however it ended)."""
        self._stop.set()
        beat, self._beat = self._beat, None
        if beat is not None and beat is not threading.current_thread():
            beat.join(5)

    # --- steps ------------------------------------------------------------------------

    def group_started(self, group: Sequence[PlannedStep]) -> None:
        """Steps that run as one script on each host: one header for them all; each
        host line below names its step."""
        if len(group) < 2:
            return
        section = self._section()
        first, last = group[0].number, group[-1].number
        targets = ", ".join(dict.fromkeys(w.target for p in group for w in p.work))
        with self._lock:
            self._in_group = {p.step.name for p in group}
        if not targets:
            names = ", ".join(p.step.name for p in group)
            self._print(f"{self._stamp()} [{first}-{last}/{section.total}] no host: {names}")
            return
        self._print(
            f"{self._stamp()} [{first}-{last}/{section.total}] {len(group)} steps in one "
            f"script per host, each host at its own pace ({targets}):"
        )
        for planned in group:
            where = ", ".join(w.target for w in planned.work) or "no host"
            self._print(f"{INDENT}{planned.step.name}: {planned.step.title} ({where})")

    def _section(self) -> _Section:
        if not self._sections:
            self._sections.append(_Section("run", 0))
        return self._sections[-1]

    def step_started(self, planned: PlannedStep) -> None:
        section = self._section()
        now = time.monotonic()
        with self._lock:
            section.rows[planned.step.name] = _Row(
                planned.number, planned.step.name, planned=len(planned.work)
            )
            for work in planned.work:
                queue = self._queue.setdefault(work.target, [])
                if not queue:
                    self._since[work.target] = now
                queue.append(planned.step.name)
            grouped = planned.step.name in self._in_group
            self._in_group.discard(planned.step.name)
        if grouped:
            return
        targets = ", ".join(w.target for w in planned.work) or "no host"
        self._print(
            f"{self._stamp()} [{planned.number:>2}/{section.total}] {planned.step.title} "
            f"({targets})"
        )

    def host_finished(self, planned: PlannedStep, outcome: Outcome) -> None:
        section = self._section()
        with self._lock:
            row = section.rows.setdefault(
                planned.step.name, _Row(planned.number, planned.step.name)
            )
            row.hosts.append(outcome.target)
            row.duration = max(row.duration, outcome.duration)
            if not outcome.ok:
                row.failed.append(outcome.target)
            if not outcome.began:
                row.not_run.append(outcome.target)
            queue = self._queue.get(outcome.target, [])
            if planned.step.name in queue:
                queue.remove(planned.step.name)
            self._since[outcome.target] = time.monotonic()
        status = "ok" if outcome.ok else f"FAILED (exit {outcome.exited})"
        self._print(
            f"{self._stamp()}      {outcome.target:<16} {planned.step.name:<15} "
            f"{status} {outcome.duration:.2f}s"
        )
        if self.verbose:
            self._commands(planned, outcome)
        elif not outcome.ok and not planned.step.reports:
            for line in outcome.tail.splitlines():
                self._print(f"{'':>13}| {line}")

    def _commands(self, planned: PlannedStep, outcome: Outcome) -> None:
        """Verbose: what the step sent to that host and ran there, and all it printed."""
        work = planned.on(outcome.target)
        if work is not None:
            for upload in work.uploads:
                self._print(f"{INDENT}put {upload.remote}")
            for command in work.commands + work.verify:
                for n, line in enumerate(command.splitlines()):
                    self._print(f"{INDENT}{'$' if n == 0 else '>'} {line}")
        for name, text in (("", outcome.stdout), ("stderr: ", outcome.stderr)):
            for line in text.splitlines():
                self._print(f"{'':>13}| {name}{line}")
        if not outcome.stdout and not outcome.stderr and outcome.tail:
            for line in outcome.tail.splitlines():
                self._print(f"{'':>13}| {line}")

    def message(self, text: str, **data: Any) -> None:
        """``detail=`` is shown too when verbose (the gate's full table)."""
        self._print(f"{self._stamp()} {text}")
        detail = data.get("detail")
        if self.verbose and isinstance(detail, str) and detail:
            self._print(detail)

    def finished(self, ok: bool, summary: str) -> None:
        for section in self._sections:
            if not section.rows:
                continue
            self._print("")
            self._print(f"{section.title}:")
            self._print(f"{'step':<17} {'hosts':>5} {'result':<24} {'slowest':>8}")
            for row in sorted(section.rows.values(), key=lambda r: r.number):
                result = _result(row)
                self._print(
                    f"{row.name:<17} {len(row.hosts):>5} {result:<24} {row.duration:>7.2f}s"
                )
        self._sections.clear()
        self._print("")
        self._print(f"{'OK' if ok else 'FAILED'}: {summary} (total {self._w.elapsed():.1f}s)")
        self.close()


def _result(row: _Row) -> str:
    """How a step ended: ok, or the hosts where it failed and where it never ran."""
    if not row.hosts:
        return "no host" if row.planned == 0 else "not reached"
    failed = [h for h in row.failed if h not in row.not_run]
    parts = (["failed: " + ", ".join(failed)] if failed else []) + (
        ["not run: " + ", ".join(row.not_run)] if row.not_run else []
    )
    return "; ".join(parts) or "ok"


class Fanout:
    """One run reported to several reporters: the terminal's and the log file's."""

    def __init__(self, *reporters: Any) -> None:
        self.reporters = reporters

    def plan_started(self, plan: Plan) -> None:
        for r in self.reporters:
            r.plan_started(plan)

    def group_started(self, group: Sequence[PlannedStep]) -> None:
        for r in self.reporters:
            announce = getattr(r, "group_started", None)
            if announce is not None:
                announce(group)

    def step_started(self, planned: PlannedStep) -> None:
        for r in self.reporters:
            r.step_started(planned)

    def host_finished(self, planned: PlannedStep, outcome: Outcome) -> None:
        for r in self.reporters:
            r.host_finished(planned, outcome)

    def message(self, text: str, **data: Any) -> None:
        for r in self.reporters:
            r.message(text, **data)

    def finished(self, ok: bool, summary: str) -> None:
        for r in self.reporters:
            r.finished(ok, summary)

    def close(self) -> None:
        for r in self.reporters:
            close = getattr(r, "close", None)
            if close is not None:
                close()


class JsonReporter:
    """One JSON object per line on stdout: for CI and other programs."""

    def __init__(self, masker: Masker, stream: TextIO | None = None) -> None:
        self._w = _Writer(stream, masker)

    def _emit(self, event: str, **data: Any) -> None:
        record = {"event": event, "elapsed": round(self._w.elapsed(), 3), **data}
        self._w.write(json.dumps(record, sort_keys=True))

    def plan_started(self, plan: Plan) -> None:
        self._emit(
            "plan",
            kind=plan.kind,
            action=next(iter(plan.frames.values())).action if plan.frames else plan.kind,
            environment=plan.environment.name,
            release=plan.release_id,
            steps=[p.step.name for p in plan.steps],
        )

    def step_started(self, planned: PlannedStep) -> None:
        self._emit("step", step=planned.step.name, hosts=[w.target for w in planned.work])

    def host_finished(self, planned: PlannedStep, outcome: Outcome) -> None:
        self._emit("host", **asdict(outcome))

    def message(self, text: str, **data: Any) -> None:
        data.pop("detail", None)  # the verbose text; the data it shows is in other keys
        self._emit("message", text=text, **data)

    def finished(self, ok: bool, summary: str) -> None:
        self._emit("finished", ok=ok, summary=summary)
