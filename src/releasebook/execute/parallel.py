"""Jobs run at once on several hosts, and what Ctrl-C, SIGTERM and SIGHUP do to them.

A job that has started keeps its host busy (a script running there) whatever happens
on the controller, so a stop signal must never leave one running unseen: what undoes a
step next would race with it. While jobs are dispatched and running, the stop signals
are held back: jobs not yet started are cancelled, those running are waited for, and
only then is :class:`~releasebook.errors.Interrupted` raised. (Raised at once, it could
even land inside the thread pool's own bookkeeping, leaving a started job unknown to the
pool.)

SIGTERM (a cancelled CI job) and SIGHUP (a closed terminal) stop a run as Ctrl-C does,
once :func:`stop_signals_interrupt` is in force (the command line puts it around every
task); elsewhere they keep their usual meaning.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

from releasebook.errors import Interrupted

POLL = 0.1
T = TypeVar("T")
STOP_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_NAMES: dict[int, str] = {
    signal.SIGINT: "Ctrl-C",
    signal.SIGTERM: "SIGTERM",
    signal.SIGHUP: "SIGHUP",
}


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(_NAMES.get(signum, f"signal {signum}"))


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Within the block, Ctrl-C, SIGTERM and SIGHUP raise ``Interrupted`` (in the main
    thread), so every ``finally`` runs: locks released, secrets files removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue  # e.g. nohup: an ignored signal stays ignored
        previous[signum] = signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _ours(handler: Any) -> bool:
    return handler is _raise or handler is signal.default_int_handler


@contextmanager
def interrupts_held() -> Iterator[threading.Event]:
    """Within the block, a stop signal sets the yielded event instead of raising; leaving
    the block raises ``Interrupted`` if one came. Only handlers that would raise are
    replaced (an ignored signal stays ignored), and only the main thread receives
    signals, so elsewhere this does nothing."""
    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return
    names: list[str] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if not pressed.is_set():
            name = _NAMES.get(signum, f"signal {signum}")
            names.append(name)
            sys.stderr.write(
                f"{name}: waiting for the scripts running on hosts to finish, then stopping\n"
            )
        pressed.set()

    previous: dict[int, Any] = {}
    for signum in STOP_SIGNALS:
        if _ours(signal.getsignal(signum)):
            previous[signum] = signal.signal(signum, hold)
    try:
        yield pressed
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if pressed.is_set():
        raise Interrupted(names[0] if names else "Ctrl-C")


def run_parallel(jobs: Sequence[Callable[[], T]], max_parallel: int) -> list[T]:
    """Each job's result, in order, with at most ``max_parallel`` running at once. A job
    that raises makes this raise, once every job has finished."""
    if not jobs:
        return []
    workers = max(1, min(max_parallel, len(jobs)))
    with interrupts_held() as pressed, ThreadPoolExecutor(max_workers=workers) as pool:
        futures: list[Future[T]] = [pool.submit(job) for job in jobs]
        pending = set(futures)
        while pending:
            if pressed.is_set():
                for future in pending:
                    future.cancel()
            _, pending = wait(pending, timeout=POLL)
    return [future.result() for future in futures]
