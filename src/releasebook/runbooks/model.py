"""What a runbook is made of: steps, their command templates, uploads, phases.

A step says why it exists, where it runs, its exact commands (format templates whose
``{names}`` are filled by :mod:`releasebook.plan` and shell-quoted by
:mod:`releasebook.quoting`), how it is verified and how it is undone. Nothing here opens
a connection or runs a command: the runner executes these, the renderer documents them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Where = Literal["hosts", "controller"]
# prepare: a failure undoes every step begun, newest first; live: a failure rolls every
# host back; finish: the release is live and verified, a failure is reported only.
Phase = Literal["prepare", "live", "finish"]


@dataclass(frozen=True)
class Cmd:
    """One command template.

    ``roles`` limits it to hosts with one of those roles; ``each`` names a list variable
    and repeats the command once per item, with the item's keys as extra variables;
    ``when`` names a plan variable: the command is planned only where it is true.
    """

    template: str
    roles: frozenset[str] = frozenset()
    each: str | None = None
    when: str | None = None


def cmd(template: str, *roles: str, each: str | None = None, when: str | None = None) -> Cmd:
    return Cmd(template, frozenset(roles), each, when)


@dataclass(frozen=True)
class Upload:
    """Copy the controller file named by variable ``local`` to ``remote`` (+ ``suffix``)."""

    local: str
    remote: str
    suffix: str = ""
    # A test command, shown where the host's state is not known (the runbook, a dry
    # run): the upload is not needed where it succeeds. A real run decides from facts.
    skip_if: str | None = None
    needed: str | None = None  # the plan variable that says, from facts, if it is needed
    when: str | None = None  # a plan variable: planned only where it is true


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    why: str
    where: Where = "hosts"
    roles: frozenset[str] = frozenset()  # empty: every host
    once: bool = False
    phase: Phase = "prepare"
    commands: tuple[Cmd, ...] = ()
    uploads: tuple[Upload, ...] = ()
    http_check: bool = False
    verify: tuple[Cmd, ...] = ()
    verify_text: str = ""
    undo: tuple[Cmd, ...] = ()
    undo_text: str = ""
    reports: bool = False  # its stdout is a report the caller parses and shows
    barrier: bool = False  # every host finishes the steps before it before it starts
    hooks: tuple[str, ...] = ()  # when the inventory's hooks may run: before, after
    timeout: float = 600  # seconds, unless the inventory's `timeouts` says otherwise
    # Runs in the host script frame (step lock, fence, journal); the lock step itself
    # cannot, it takes the lock the frame checks.
    framed: bool = True
    first_alone: bool = False  # the first host (in lock order) runs it before the others
    bookkeeping: bool = False  # releasebook's own state (lock, history), not the app's


@dataclass(frozen=True)
class Runbook:
    """A procedure: its steps in order, and the frame its host scripts run in."""

    name: str
    title: str
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)
