"""A scripted stand-in for a host, for unit tests of decisions (as invoke's MockContext
is for tasks): it runs nothing, records every script and upload it is given, and answers
as releasebook's scripts would on a host in a given state.

It understands the three kinds of script releasebook sends: the lock step (``state=``
lines, then the probe's facts), framed step scripts (it finds the run's marker and each
step in the frame and answers each step's start marker; a step named in ``fail`` exits
with that status, the steps after it do not start), and anything else (bookkeeping:
answered ``state=released`` and exit 0). It is not end to end: tests that need a host's
real behaviour use simulated hosts over real SSH.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from releasebook.transport.base import OnLine, Result

_MARKER = re.compile(r"printf '%s %s\\n' '(@@rb-[0-9a-f]+) ([a-z_-]+)' ")


@dataclass
class ScriptedHost:
    """What a host answers: its probe facts (lines such as ``current=...``), whether its
    lock is held by someone else, and which steps fail with which exit status (each one
    once: the same step in a rollback afterwards passes)."""

    name: str
    facts: tuple[str, ...] = ()
    held_by: str | None = None  # the info.json of another run's lock
    fail: dict[str, int] = field(default_factory=dict)
    output: dict[str, str] = field(default_factory=dict)  # what a step prints
    slow: dict[str, float] = field(default_factory=dict)  # seconds a step takes
    scripts: list[str] = field(default_factory=list)
    uploads: list[tuple[Path, str]] = field(default_factory=list)

    # --- the Transport protocol ---------------------------------------------------------

    def run(
        self, script: str, *, timeout: float | None = None, on_line: OnLine | None = None
    ) -> Result:
        self.scripts.append(script)
        if "if mkdir " in script and "state=acquired" in script:
            return self._lock()
        steps = _MARKER.findall(script)
        if steps:
            return self._steps(steps, on_line)
        return Result(0, "state=released\n", "", 0.0)

    def put(self, local: Path, remote: str) -> None:
        self.uploads.append((local, remote))

    def close(self) -> None:
        return None

    # --- answers --------------------------------------------------------------------------

    def _lock(self) -> Result:
        if self.held_by is not None:
            return Result(0, f"state=held\ninfo={self.held_by}\ndigest=x\n", "", 0.0)
        return Result(0, "state=acquired\n" + "".join(f"{f}\n" for f in self.facts), "", 0.0)

    def _steps(self, steps: list[tuple[str, str]], on_line: OnLine | None) -> Result:
        out: list[str] = []
        exited = 0
        for marker, name in steps:
            line = f"{marker} {name} {len(out):.1f}"
            out.append(line)
            if on_line is not None:
                on_line(line)
            if name in self.slow:
                time.sleep(self.slow[name])
            for printed in self.output.get(name, "").splitlines():
                out.append(printed)
                if on_line is not None:
                    on_line(printed)
            if name in self.fail:
                exited = self.fail.pop(name)
                out.append(f"{name} failed here")
                break
            if name == "gate" and name not in self.output:  # a gate with nothing to say
                out.append('{"ok": true, "version": 1, "pending_migrations": [], "results": []}')
        text = "\n".join(out) + "\n"
        return Result(exited, text, "", 0.0)

    # --- what a test asks ---------------------------------------------------------------

    def ran(self, text: str) -> bool:
        """Whether any script it was given holds ``text``."""
        return any(text in script for script in self.scripts)

    def journaled_undo(self) -> list[str]:
        """The steps of the undo scripts it was given, in the order they were framed."""
        undone: list[str] = []
        for script in self.scripts:
            undone += re.findall(r"'undo [^ ]+ ([a-z_]+)' >> ", script)
        return undone
