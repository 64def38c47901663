"""What every transport offers: run a script, copy a file, close; and what a run returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

TAIL_LINES = 20
OnLine = Callable[[str], None]


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

    def run(
        self, script: str, *, timeout: float | None = None, on_line: OnLine | None = None
    ) -> Result:
        """Run ``script`` with bash; ``on_line`` sees each line of its stdout as it comes."""
        ...

    def put(self, local: Path, remote: str) -> None: ...

    def close(self) -> None: ...


class LineStream:
    """A write-only stream handing each complete line to ``on_line`` (as Invoke and
    Fabric write output while a command runs); or discarding it."""

    def __init__(self, on_line: OnLine | None = None) -> None:
        self._on_line = on_line
        self._partial = ""

    def write(self, data: str) -> int:
        if self._on_line is not None:
            lines = (self._partial + data).split("\n")
            self._partial = lines.pop()
            for line in lines:
                self._on_line(line)
        return len(data)

    def flush(self) -> None:
        return None
