"""Progress for people (live lines and a summary table) and for machines (JSON lines).

Both pass everything through the run's :class:`~releasebook.masking.Masker`: whatever a
command printed, declared secret values never reach the terminal or a JSON consumer, and
control characters from hosts are stripped. Hosts report from several threads at once,
so each line is written whole, under a lock. A closed terminal (SIGHUP, a broken pipe)
does not stop the run: output that cannot be written is dropped.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
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
    duration: float = 0.0


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


class ConsoleReporter:
    def __init__(self, masker: Masker, stream: TextIO | None = None) -> None:
        self._w = _Writer(stream, masker)
        self._sections: list[_Section] = []
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        self._w.write(text)

    def _stamp(self) -> str:
        return f"{self._w.elapsed():6.1f}s"

    def plan_started(self, plan: Plan) -> None:
        hosts = ", ".join(h.name for h in plan.environment.hosts)
        action = next(iter(plan.frames.values())).action if plan.frames else plan.kind
        self._sections.append(_Section(f"{action} {plan.release_id}", len(plan.steps)))
        self._print(f"{action} {plan.release_id} to {plan.environment.name} ({hosts})")

    def _section(self) -> _Section:
        if not self._sections:
            self._sections.append(_Section("run", 0))
        return self._sections[-1]

    def step_started(self, planned: PlannedStep) -> None:
        section = self._section()
        with self._lock:
            section.rows[planned.step.name] = _Row(planned.number, planned.step.name)
        targets = ", ".join(w.target for w in planned.work)
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
        status = "ok" if outcome.ok else f"FAILED (exit {outcome.exited})"
        self._print(
            f"{self._stamp()}      {outcome.target:<16} {planned.step.name:<15} "
            f"{status} {outcome.duration:.2f}s"
        )
        if not outcome.ok and not planned.step.reports:
            for line in outcome.tail.splitlines():
                self._print(f"{'':>13}| {line}")

    def message(self, text: str, **data: Any) -> None:
        self._print(f"{self._stamp()} {text}")

    def finished(self, ok: bool, summary: str) -> None:
        for section in self._sections:
            if not section.rows:
                continue
            self._print("")
            self._print(f"{section.title}:")
            self._print(f"{'step':<17} {'hosts':>5} {'result':<24} {'slowest':>8}")
            for row in sorted(section.rows.values(), key=lambda r: r.number):
                result = "ok" if not row.failed else "failed: " + ", ".join(row.failed)
                if not row.hosts:
                    result = "not reached"
                self._print(
                    f"{row.name:<17} {len(row.hosts):>5} {result:<24} {row.duration:>7.2f}s"
                )
        self._sections.clear()
        self._print("")
        self._print(f"{'OK' if ok else 'FAILED'}: {summary} (total {self._w.elapsed():.1f}s)")


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
            environment=plan.environment.name,
            release=plan.release_id,
            steps=[p.step.name for p in plan.steps],
        )

    def step_started(self, planned: PlannedStep) -> None:
        self._emit("step", step=planned.step.name, hosts=[w.target for w in planned.work])

    def host_finished(self, planned: PlannedStep, outcome: Outcome) -> None:
        self._emit("host", **asdict(outcome))

    def message(self, text: str, **data: Any) -> None:
        self._emit("message", text=text, **data)

    def finished(self, ok: bool, summary: str) -> None:
        self._emit("finished", ok=ok, summary=summary)
