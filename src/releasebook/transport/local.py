"""This machine as a host, through Invoke: the ``local`` environment, and the controller."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from invoke.context import Context

from releasebook.transport.base import LineStream, OnLine, Result


class LocalTransport:
    """This machine, through Invoke: the ``local`` environment."""

    def __init__(self, name: str, cwd: Path) -> None:
        self.name = name
        self._context = Context()
        self._cwd = cwd

    def run(
        self, script: str, *, timeout: float | None = None, on_line: OnLine | None = None
    ) -> Result:
        started = time.monotonic()
        with self._context.cd(str(self._cwd)):
            # bash, like the login shell of the SSH hosts; the script is the plan's own text.
            result = self._context.run(  # noqa: S604
                script,
                hide=True,
                warn=True,
                in_stream=False,
                timeout=timeout,
                shell="/bin/bash",
                out_stream=LineStream(on_line),
                err_stream=LineStream(),
            )
        assert result is not None  # warn=True always returns a result
        return Result(result.exited, result.stdout, result.stderr, time.monotonic() - started)

    def interact(self, script: str, *, pty: bool) -> int:
        """Run ``script`` attached to this terminal (a pseudo-terminal when ``pty``):
        its exit status."""
        with self._context.cd(str(self._cwd)):
            result = self._context.run(script, warn=True, pty=pty, shell="/bin/bash")  # noqa: S604
        assert result is not None
        return int(result.exited)

    def put(self, local: Path, remote: str) -> None:
        target = Path(remote)
        if not target.is_absolute():
            target = self._cwd / target
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)

    def close(self) -> None:
        return None
