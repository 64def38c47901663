"""What one step did on one host: the unit every decision is made from."""

from __future__ import annotations

from dataclasses import dataclass

NOT_RUN = -2
LOST = -1  # the connection broke, or the script could not be run: its end was not seen


@dataclass(frozen=True)
class Outcome:
    step: str
    target: str
    ok: bool
    exited: int
    tail: str
    duration: float
    stdout: str = ""  # the whole of it, for steps whose output is a report to parse
    stderr: str = ""  # the whole of it, for the verbose output and the run's log

    @property
    def began(self) -> bool:
        """The step's commands started (it may have changed something)."""
        return self.exited != NOT_RUN
