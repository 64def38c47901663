"""What every task shares: finding the project, loading an inventory, choosing the
reporter, and turning releasebook's errors into one line on stderr and an exit code."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.exceptions import Exit

from releasebook.envsecrets import hide_readable
from releasebook.errors import ReleasebookError, UsageError
from releasebook.inventory import Environment, load_environment
from releasebook.reporting import ConsoleReporter, JsonReporter, Reporter, redact

F = TypeVar("F", bound=Callable[..., Any])


def project_root() -> Path:
    """RELEASEBOOK_ROOT, else the nearest directory upwards holding ``inventories/``."""
    configured = os.environ.get("RELEASEBOOK_ROOT")
    if configured:
        return Path(configured).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "inventories").is_dir():
            return candidate
    raise UsageError(
        f"no inventories/ directory in {here} or above; run from a releasebook project"
    )


def _reporter(as_json: bool) -> Reporter:
    return JsonReporter() if as_json else ConsoleReporter()


def _errors_to_exit(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ReleasebookError as exc:
            raise Exit(f"releasebook: {redact(str(exc))}", code=exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _load(env: str) -> Environment:
    if not env:
        raise UsageError("--env is required (one of the files in inventories/)")
    environment = load_environment(env, project_root())
    hide_readable(environment)  # a release reads them all; others mask what they can
    return environment
