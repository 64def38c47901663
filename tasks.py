"""`inv` entry point: releasebook's task collection (see `inv --list`)."""

from releasebook.cli import namespace

__all__ = ["namespace"]
