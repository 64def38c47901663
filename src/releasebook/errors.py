"""The exceptions releasebook raises for users, each with its exit code.

ReleasebookError          (exit 1)
├── UsageError            (exit 2)  bad flags or ids on the command line
├── InventoryError        (exit 2)  bad inventory: names file, line or key, and what was expected
├── HostUnreachable       (exit 1)  a host could not be reached before anything changed
├── ReleaseFailed         (exit 1)  a step failed: nothing live changed, or all rolled back
└── RollbackFailed        (exit 3)  restoring the previous release failed: hosts need attention
"""

from __future__ import annotations


class ReleasebookError(Exception):
    exit_code = 1


class UsageError(ReleasebookError):
    exit_code = 2


class InventoryError(ReleasebookError):
    exit_code = 2


class HostUnreachable(ReleasebookError):
    exit_code = 1


class ReleaseFailed(ReleasebookError):
    exit_code = 1


class RollbackFailed(ReleasebookError):
    exit_code = 3


class TemplateError(ReleasebookError):
    exit_code = 2
