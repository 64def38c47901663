"""Every error releasebook reports to a user, each with its exit code, in one tree.

ReleasebookError          (exit 1)
├── UsageError            (exit 2)  bad flags or ids on the command line
├── InventoryError        (exit 2)  bad inventory: names file, line or key, and what was expected
├── TemplateError         (exit 2)  a runbook template or a command template cannot be filled
├── HostUnreachable       (exit 1)  a host could not be reached before anything changed
│   └── HostKeyChanged    (exit 5)  a host offered another key than the one pinned
├── GateOutputError       (exit 1)  the readiness gate's output on a host is not its report
│   └── LintReportError   (exit 1)  ... nor is its migration lint's part
├── MigrationStateError   (exit 1)  migration_state.py failed on a host or said nonsense
├── ReleaseFailed         (exit 1)  a step failed: nothing live changed, or all rolled back
├── OperationFailed       (exit 1)  a day-2 command (maintenance, app, doctor) failed on a host
├── RollbackFailed        (exit 3)  restoring the previous release failed: hosts need attention
└── LockHeld              (exit 4)  another run holds the environment lock; nothing changed

Interrupted (a KeyboardInterrupt) is raised for Ctrl-C, SIGTERM and SIGHUP alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ReleasebookError(Exception):
    exit_code = 1


class UsageError(ReleasebookError):
    exit_code = 2


class InventoryError(ReleasebookError):
    exit_code = 2


class TemplateError(ReleasebookError):
    exit_code = 2


class HostUnreachable(ReleasebookError):
    exit_code = 1


class HostKeyChanged(HostUnreachable):
    """A host offered a key other than the one pinned in known_hosts (a rebuilt host, or
    someone in the middle). Nothing was written."""

    exit_code = 5


class GateOutputError(ReleasebookError):
    """The gate's output on a host is not the JSON document it promises."""


class LintReportError(GateOutputError):
    """The migration lint's part of a gate report is not what it promises."""


class MigrationStateError(ReleasebookError):
    """migration_state.py failed on a host, or printed something other than its JSON."""


class ReleaseFailed(ReleasebookError):
    exit_code = 1


class OperationFailed(ReleasebookError):
    """A day-2 command (maintenance, app, doctor) failed on a host; the message names it."""

    exit_code = 1


class RollbackFailed(ReleasebookError):
    exit_code = 3


class LockHeld(ReleasebookError):
    """Another run holds the environment lock on some host; ``holders`` says who, by host
    (None where the holder could not be read)."""

    exit_code = 4

    def __init__(self, message: str, holders: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.holders = dict(holders)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: the run stops as it does for Ctrl-C."""

    def __init__(self, signal_name: str = "Ctrl-C") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
