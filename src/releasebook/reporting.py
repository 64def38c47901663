"""Progress for people (live lines and a summary table) and for machines (JSON lines).

Both mask every secret value the inventory declared (:func:`hide_secrets`): whatever a
command printed, those values never reach the terminal, a JSON consumer or the history.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from releasebook.plan import Plan, PlannedStep
    from releasebook.runner import Outcome


MASK = "***"
_hidden: set[str] = set()


def hide_secrets(values: Iterable[str]) -> None:
    """From now on, mask these values in everything releasebook prints or records."""
    _hidden.update(value for value in values if value)


def redact(text: str) -> str:
    """``text`` with each hidden value, as is or JSON-escaped, replaced by ``***``."""
    for secret in sorted(_hidden, key=len, reverse=True):
        for form in (secret, json.dumps(secret)[1:-1]):
            text = text.replace(form, MASK)
    return text


class Reporter(Protocol):
    def plan_started(self, plan: Plan) -> None: ...

    def step_started(self, planned: PlannedStep) -> None: ...

    def host_finished(self, planned: PlannedStep, outcome: Outcome) -> None: ...

    def message(self, text: str, **data: Any) -> None: ...

    def finished(self, ok: bool, summary: str) -> None: ...


@dataclass
class _Row:
    number: int
    name: str
    hosts: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    duration: float = 0.0


class ConsoleReporter:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._out = stream or sys.stdout
        self._started = time.monotonic()
        self._total = 0
        self._rows: dict[str, _Row] = {}

    def _print(self, text: str) -> None:
        print(redact(text), file=self._out, flush=True)

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self._started:6.1f}s"

    def plan_started(self, plan: Plan) -> None:
        self._total = len(plan.steps)
        hosts = ", ".join(h.name for h in plan.environment.hosts)
        self._print(f"{plan.kind} {plan.release_id} to {plan.environment.name} ({hosts})")

    def step_started(self, planned: PlannedStep) -> None:
        self._rows[planned.step.name] = _Row(planned.number, planned.step.name)
        targets = ", ".join(w.target for w in planned.work)
        self._print(
            f"{self._elapsed()} [{planned.number:>2}/{self._total}] {planned.step.title} "
            f"({targets})"
        )

    def host_finished(self, planned: PlannedStep, outcome: Outcome) -> None:
        row = self._rows.setdefault(planned.step.name, _Row(planned.number, planned.step.name))
        row.hosts.append(outcome.target)
        row.duration = max(row.duration, outcome.duration)
        status = "ok" if outcome.ok else f"FAILED (exit {outcome.exited})"
        self._print(
            f"{self._elapsed()}          {outcome.target:<16} {status} {outcome.duration:.2f}s"
        )
        if not outcome.ok:
            row.failed.append(outcome.target)
            if planned.step.reports:
                return  # the caller shows the parsed report instead of raw output
            for line in outcome.tail.splitlines():
                self._print(f"{'':>26}| {line}")

    def message(self, text: str, **data: Any) -> None:
        self._print(f"{self._elapsed()} {text}")

    def finished(self, ok: bool, summary: str) -> None:
        if self._rows:
            self._print("")
            self._print(f"{'step':<17} {'hosts':>5} {'result':<24} {'slowest':>8}")
            for row in sorted(self._rows.values(), key=lambda r: r.number):
                result = "ok" if not row.failed else "failed: " + ", ".join(row.failed)
                self._print(
                    f"{row.name:<17} {len(row.hosts):>5} {result:<24} {row.duration:>7.2f}s"
                )
            self._print("")
        self._print(f"{'OK' if ok else 'FAILED'}: {summary} (total {self._elapsed().strip()})")


class JsonReporter:
    """One JSON object per line on stdout: for CI and other programs."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._out = stream or sys.stdout
        self._started = time.monotonic()

    def _emit(self, event: str, **data: Any) -> None:
        record = {"event": event, "elapsed": round(time.monotonic() - self._started, 3), **data}
        print(redact(json.dumps(record, sort_keys=True)), file=self._out, flush=True)

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
