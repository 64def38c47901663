"""`inv` entry point: releasebook's task collection (see `inv --list`)."""

from releasebook.tasks import namespace

__all__ = ["namespace"]
