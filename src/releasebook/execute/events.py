"""What a run tells whoever watches it: the reporter protocol. The console and JSON
reporters live in ``releasebook.cli.output``; tests use quiet ones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from releasebook.execute.outcome import Outcome
    from releasebook.plan.model import Plan, PlannedStep


class Reporter(Protocol):
    def plan_started(self, plan: Plan) -> None: ...

    def step_started(self, planned: PlannedStep) -> None: ...

    def host_finished(self, planned: PlannedStep, outcome: Outcome) -> None: ...

    def message(self, text: str, **data: Any) -> None: ...

    def finished(self, ok: bool, summary: str) -> None: ...
