"""The runner on this machine: a group's steps as one framed script, split back into
per-step outcomes by the run's marker (which a step cannot forge), the host's step lock,
the journal, the fence that stops a script before its first step, and each step's time
limit enforced on the host."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from releasebook.execute.outcome import NOT_RUN, Outcome
from releasebook.execute.runner import LOCK_LOST, TIMED_OUT, run_group
from releasebook.inventory import Host, SshSettings, WebSettings, WorkerSettings
from releasebook.plan import Frame, HostWork, PlannedStep
from releasebook.runbooks import bookkeeping as book
from releasebook.runbooks.model import Step
from releasebook.transport import LocalTransport, Transport

TARGET = "web1"
HOST = Host(
    TARGET,
    "127.0.0.1",
    ("web",),
    "local",
    SshSettings("u", 22, None, Path("/dev/null"), 5),
    WebSettings(8000, 1, 30),
    WorkerSettings(1, 10),
    "127.0.0.1:8000",
)


class _Quiet:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool, float]] = []

    def plan_started(self, plan: Any) -> None: ...

    def step_started(self, planned: PlannedStep) -> None: ...

    def host_finished(self, planned: PlannedStep, outcome: Outcome) -> None:
        self.seen.append((outcome.step, outcome.ok, time.monotonic()))

    def message(self, text: str, **data: Any) -> None: ...

    def finished(self, ok: bool, summary: str) -> None: ...


def _step(number: int, name: str, *commands: str, timeout: float = 60) -> PlannedStep:
    work = HostWork(HOST, commands, (), (), (), None, timeout)
    return PlannedStep(Step(name=name, title=name, why=name), number, (work,))


def _frame(tmp: Path, fence: tuple[str, ...] = (), marker: str = "@@rb-0123abcd") -> Frame:
    values = {
        "state": tmp,
        "steps_lock": tmp / "steps.lock",
        "journal": tmp / "journal",
        "busy_message": book.BUSY_MESSAGE,
    }
    return Frame(values=values, fence=fence, action="release", release="R1", marker=marker)


def _run(
    tmp: Path, group: list[PlannedStep], frame: Frame, reporter: _Quiet | None = None
) -> dict[str, Outcome]:
    transports: dict[str, Transport] = {TARGET: LocalTransport(TARGET, tmp)}
    results = run_group(group, transports, reporter or _Quiet(), 2, {TARGET: frame})
    return {outcomes[0].step: outcomes[0] for outcomes in results}


def test_fused_steps_split_back_and_stop_at_the_first_failure(tmp_path: Path) -> None:
    group = [
        _step(1, "one", "echo first"),
        _step(2, "two", "echo second; echo broke >&2; exit 7"),
        _step(3, "three", "touch three-ran"),
    ]
    outcomes = _run(tmp_path, group, _frame(tmp_path))
    assert (outcomes["one"].ok, outcomes["one"].stdout) == (True, "first\n")
    assert (outcomes["two"].ok, outcomes["two"].exited) == (False, 7)
    assert "broke" in outcomes["two"].tail and "first" not in outcomes["two"].tail
    assert outcomes["three"].exited == NOT_RUN
    assert not (tmp_path / "three-ran").exists()
    # The journal holds the steps that completed, and only those.
    journal = (tmp_path / "journal").read_text().splitlines()
    assert [line.split()[1:] for line in journal] == [["release", "R1", "one"]]


def test_a_fence_stops_the_script_before_its_first_step(tmp_path: Path) -> None:
    fence = ("if [ ! -e allowed ]; then echo 'fenced out' >&2; exit 76; fi",)
    group = [_step(1, "one", "touch one-ran"), _step(2, "two", "touch two-ran")]
    outcomes = _run(tmp_path, group, _frame(tmp_path, fence))
    assert (outcomes["one"].exited, outcomes["one"].tail) == (LOCK_LOST, "fenced out")
    assert outcomes["two"].exited == NOT_RUN
    assert not list(tmp_path.glob("*-ran"))
    assert not (tmp_path / "journal").exists()

    (tmp_path / "allowed").touch()
    outcomes = _run(tmp_path, group, _frame(tmp_path, fence))
    assert outcomes["one"].ok and outcomes["two"].ok
    assert sorted(p.name for p in tmp_path.glob("*-ran")) == ["one-ran", "two-ran"]


def test_a_step_that_prints_a_marker_cannot_pass_for_the_next_step(tmp_path: Path) -> None:
    """A migration or hook that prints what looks like the runner's marker line and then
    fails is still the failing step: the real marker carries a token it cannot know."""
    group = [
        _step(1, "migrate", "printf '@@releasebook-step collectstatic\\n'", "exit 3"),
        _step(2, "collectstatic", "touch collected"),
    ]
    outcomes = _run(tmp_path, group, _frame(tmp_path))
    assert (outcomes["migrate"].ok, outcomes["migrate"].exited) == (False, 3)
    assert outcomes["collectstatic"].exited == NOT_RUN
    assert not (tmp_path / "collected").exists()


def test_a_step_over_its_time_limit_is_stopped_on_the_host(tmp_path: Path) -> None:
    group = [_step(1, "hangs", "sleep 30 && touch woke", timeout=1)]
    started = time.monotonic()
    outcomes = _run(tmp_path, group, _frame(tmp_path))
    assert time.monotonic() - started < 15
    assert outcomes["hangs"].exited == TIMED_OUT
    assert "timed out after 1s" in outcomes["hangs"].tail
    assert not (tmp_path / "woke").exists()


def test_each_step_is_reported_as_soon_as_it_ends(tmp_path: Path) -> None:
    reporter = _Quiet()
    group = [_step(1, "quick", "true"), _step(2, "slow", "sleep 1.5")]
    _run(tmp_path, group, _frame(tmp_path), reporter)
    (quick, quick_ok, quick_at), (slow, slow_ok, slow_at) = reporter.seen
    assert (quick, quick_ok, slow, slow_ok) == ("quick", True, "slow", True)
    assert slow_at - quick_at > 1.0  # quick was reported while slow still ran
