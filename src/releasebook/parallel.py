"""Jobs run at once on several hosts, and what Ctrl-C does to them.

A job that has started keeps its host busy (a script running there) whatever happens
on the controller, so Ctrl-C must never leave one running unseen: what undoes a step
next would race with it. While jobs are dispatched and running, Ctrl-C is held back:
jobs not yet started are cancelled, those running are waited for, and only then is
``KeyboardInterrupt`` raised. (Raised at once, it could even land inside the thread
pool's own bookkeeping, leaving a started job unknown to the pool.)
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

POLL = 0.1
T = TypeVar("T")


@contextmanager
def interrupts_held() -> Iterator[threading.Event]:
    """Within the block, Ctrl-C sets the yielded event instead of raising; leaving the
    block raises ``KeyboardInterrupt`` if it was pressed. Only the main thread receives
    signals, and only Python's default handler is replaced (an ignored SIGINT stays
    ignored), so elsewhere this does nothing."""
    pressed = threading.Event()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield pressed
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        if not pressed.is_set():
            sys.stderr.write(
                "Ctrl-C: waiting for the scripts running on hosts to finish, then stopping\n"
            )
        pressed.set()

    signal.signal(signal.SIGINT, hold)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pressed.is_set():
        raise KeyboardInterrupt


def run_parallel(jobs: Sequence[Callable[[], T]], max_parallel: int) -> list[T]:
    """Each job's result, in order, with at most ``max_parallel`` running at once. A job
    that raises makes this raise, once every job has finished."""
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
