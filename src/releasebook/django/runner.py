"""Run readiness checks at once, each in a worker thread bounded by its own timeout.

No single client setting bounds connect, query and reply on every database, cache and
broker driver, so a check that does not answer in time is reported as failed and left
behind in its daemon thread. A check whose previous run is still stuck is not started
again, so a hung dependency costs at most one thread per check and process.
"""

import contextvars
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .redact import configured_secrets, redact

MAX_MESSAGE = 300


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; raising an exception means failure."""

    ok: bool = True
    message: str = "ok"
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], Outcome]
    timeout: float


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    duration_ms: float
    message: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def probe_body(self) -> dict[str, Any]:
        """The /readyz shape: ok, duration_ms, any extra keys, and error on failure."""
        body: dict[str, Any] = {"ok": self.ok, "duration_ms": self.duration_ms, **self.extra}
        if not self.ok:
            body["error"] = self.message
        return body

    def report(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "duration_ms": self.duration_ms,
            "message": self.message,
        }


_busy: dict[str, threading.Lock] = {}
_busy_guard = threading.Lock()


def run_checks(checks: Sequence[Check]) -> list[Result]:
    """Every check's result, in order, after at most the largest timeout."""
    secrets = configured_secrets()
    running = [_Running(check, secrets) for check in checks]
    return [run.result() for run in running]


class _Running:
    def __init__(self, check: Check, secrets: set[str]) -> None:
        self.check = check
        self.secrets = secrets
        self.started = time.monotonic()
        self.outcome: Result | None = None
        with _busy_guard:
            self.lock = _busy.setdefault(check.name, threading.Lock())
        self.thread: threading.Thread | None = None
        if self.lock.acquire(blocking=False):
            context = contextvars.copy_context()  # keeps the request id in the thread's logs
            self.thread = threading.Thread(
                target=context.run,
                args=(self._target,),
                name=f"releasebook-check-{check.name}",
                daemon=True,
            )
            self.thread.start()

    def _target(self) -> None:
        try:
            try:
                outcome = self.check.run()
            except Exception as exc:
                outcome = Outcome(ok=False, message=_describe(exc))
            self.outcome = Result(
                name=self.check.name,
                ok=outcome.ok,
                duration_ms=_ms_since(self.started),
                message=redact(outcome.message, self.secrets)[:MAX_MESSAGE],
                extra=outcome.extra,
            )
        finally:
            self.lock.release()

    def result(self) -> Result:
        if self.thread is None:
            return self._failed("an earlier run of this check has not finished yet")
        self.thread.join(max(0.0, self.started + self.check.timeout - time.monotonic()))
        if self.outcome is not None:
            return self.outcome
        return self._failed(f"no answer within {self.check.timeout:g}s")

    def _failed(self, message: str) -> Result:
        return Result(self.check.name, False, _ms_since(self.started), message)


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
