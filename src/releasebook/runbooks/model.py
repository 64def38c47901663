"""What a runbook is made of: steps, their command templates, uploads, phases.

A step says why it exists, where it runs, its exact commands (format templates whose
``{names}`` are filled by :mod:`releasebook.plan` and shell-quoted by
:mod:`releasebook.quoting`), how it is verified and how it is undone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Where = Literal["hosts", "controller"]
# prepare: failure aborts and removes the new release; live: failure rolls every host
# back; finish: the release is live and verified, a failure is reported, nothing undone.
Phase = Literal["prepare", "live", "finish"]


@dataclass(frozen=True)
class Cmd:
    """One command template.

    ``roles`` limits it to hosts with one of those roles; ``each`` names a list variable
    and repeats the command once per item, with the item's keys as extra variables.
    """

    template: str
    roles: frozenset[str] = frozenset()
    each: str | None = None


@dataclass(frozen=True)
class Upload:
    """Copy the controller file named by variable ``local`` to ``remote`` (+ ``suffix``)."""

    local: str
    remote: str
    suffix: str = ""
    skip_if: str | None = None  # a test command template; when it succeeds, skip
    when: str | None = None  # a plan variable: planned only when it is not empty


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
    reports: bool = False  # its stdout is a report the caller parses and shows
    barrier: bool = False  # every host finishes the steps before it before it starts
    undo: tuple[Cmd, ...] = ()
    undo_text: str = ""


def cmd(template: str, *roles: str, each: str | None = None) -> Cmd:
    return Cmd(template, frozenset(roles), each)
