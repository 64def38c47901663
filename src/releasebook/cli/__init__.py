"""The command line: the Invoke collection (``tasks``, ``safety``) and the ``releasebook``
console command, which runs the same tasks as ``inv`` without a tasks file."""

from __future__ import annotations

from invoke.program import Program

from releasebook import __version__
from releasebook.cli.tasks import namespace

__all__ = ["main", "namespace"]


def main() -> None:
    """``releasebook release --env=staging``: the tasks, without a tasks.py."""
    Program(
        namespace=namespace, name="releasebook", binary="releasebook", version=__version__
    ).run()
