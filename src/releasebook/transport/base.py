"""What every transport offers: run a script, copy a file, close; and what a run returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

TAIL_LINES = 20


@dataclass(frozen=True)
class Result:
    """What one script did on one host."""

    exited: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def tail(self, lines: int = TAIL_LINES) -> str:
        text = (self.stdout.rstrip("\n") + "\n" + self.stderr.rstrip("\n")).strip("\n")
        return "\n".join(text.splitlines()[-lines:])


class Transport(Protocol):
    name: str

    def run(self, script: str, *, timeout: float | None = None) -> Result: ...

    def put(self, local: Path, remote: str) -> None: ...

    def close(self) -> None: ...
