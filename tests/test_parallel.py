"""Jobs run at once, and Ctrl-C: never raised while a started job is still running."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from releasebook.errors import Interrupted
from releasebook.execute.parallel import run_parallel, stop_signals_interrupt


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """SIGINT raising KeyboardInterrupt, as in an `inv` run from a terminal."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def test_results_in_order_at_most_max_parallel_at_once() -> None:
    running, most = 0, 0
    guard = threading.Lock()

    def job(n: int) -> Callable[[], int]:
        def run() -> int:
            nonlocal running, most
            with guard:
                running += 1
                most = max(most, running)
            time.sleep(0.05)
            with guard:
                running -= 1
            return n * n

        return run

    assert run_parallel([job(n) for n in range(6)], 2) == [0, 1, 4, 9, 16, 25]
    assert most == 2


def test_a_failing_job_raises_once_all_have_finished() -> None:
    finished: list[str] = []

    def fails() -> None:
        raise RuntimeError("boom")

    def slow() -> None:
        time.sleep(0.3)
        finished.append("slow")

    with pytest.raises(RuntimeError, match="boom"):
        run_parallel([fails, slow], 2)
    assert finished == ["slow"]


def test_ctrl_c_waits_for_running_jobs_and_cancels_the_rest(default_sigint: None) -> None:
    started: set[str] = set()
    finished: set[str] = set()

    def job(name: str, seconds: float, press: bool = False) -> Callable[[], None]:
        def run() -> None:
            started.add(name)
            if press:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while jobs run
            time.sleep(seconds)
            finished.add(name)

        return run

    jobs = [job("a", 0.5, press=True), job("b", 0.7), job("c", 0), job("d", 0)]
    with pytest.raises(KeyboardInterrupt):
        run_parallel(jobs, 2)
    assert finished == {"a", "b"}  # both had started: they were waited for
    assert started == {"a", "b"}  # the others were never started
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_sigint_stays_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert run_parallel([lambda: os.kill(os.getpid(), signal.SIGINT)], 1) == [None]
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_run_as_ctrl_c_does(signum: int) -> None:
    """A cancelled CI job (TERM) or a closed terminal (HUP): the running job is waited
    for, the rest never start, and the run stops with Interrupted naming the signal."""
    started: set[str] = set()
    finished: set[str] = set()

    def job(name: str, press: bool = False) -> Callable[[], None]:
        def run() -> None:
            started.add(name)
            if press:
                os.kill(os.getpid(), signum)
            time.sleep(0.3)
            finished.add(name)

        return run

    before = signal.getsignal(signum)
    with pytest.raises(Interrupted) as raised, stop_signals_interrupt():
        run_parallel([job("a", press=True), job("b"), job("c")], 1)
    assert raised.value.signal_name == signal.Signals(signum).name
    assert (started, finished) == ({"a"}, {"a"})
    assert signal.getsignal(signum) is before  # restored afterwards


def test_outside_a_run_sigterm_raises_at_once_within_the_block() -> None:
    with pytest.raises(Interrupted, match="SIGTERM"), stop_signals_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted long before
