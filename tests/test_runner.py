"""The runner on this machine: fused step scripts split back into per-step outcomes, the
host's step lock, the journal, and a fence that stops a script before its first step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from releasebook.plan import HostWork, PlannedStep
from releasebook.runbooks.model import Step
from releasebook.runner import LOCK_LOST, NOT_RUN, Guard, Outcome, execute_group
from releasebook.transport import LocalTransport, Transport

TARGET = "controller"  # a HostWork without a host; runs through the local transport


class _Quiet:
    def plan_started(self, plan: Any) -> None: ...

    def step_started(self, planned: PlannedStep) -> None: ...

    def host_finished(self, planned: PlannedStep, outcome: Outcome) -> None: ...

    def message(self, text: str, **data: Any) -> None: ...

    def finished(self, ok: bool, summary: str) -> None: ...


def _step(number: int, name: str, *commands: str) -> PlannedStep:
    work = HostWork(None, commands, (), (), (), None)
    return PlannedStep(Step(name=name, title=name, why=name), number, (work,))


def _run(tmp: Path, group: list[PlannedStep], guard: Guard | None) -> dict[str, Outcome]:
    transports: dict[str, Transport] = {TARGET: LocalTransport(TARGET, tmp)}
    results = execute_group(group, transports, _Quiet(), 2, guard)
    return {outcomes[0].step: outcomes[0] for outcomes in results}


def _guard(tmp: Path, fence: tuple[str, ...] = ()) -> Guard:
    return Guard(str(tmp / "steps.lock"), str(tmp / "journal"), "release", "R1", fence)


def test_fused_steps_split_back_and_stop_at_the_first_failure(tmp_path: Path) -> None:
    group = [
        _step(1, "one", "echo first"),
        _step(2, "two", "echo second; echo broke >&2; exit 7"),
        _step(3, "three", "touch three-ran"),
    ]
    outcomes = _run(tmp_path, group, _guard(tmp_path))
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
    outcomes = _run(tmp_path, group, _guard(tmp_path, fence))
    assert (outcomes["one"].exited, outcomes["one"].tail) == (LOCK_LOST, "fenced out")
    assert outcomes["two"].exited == NOT_RUN
    assert not list(tmp_path.glob("*-ran"))
    assert not (tmp_path / "journal").exists()

    (tmp_path / "allowed").touch()
    outcomes = _run(tmp_path, group, _guard(tmp_path, fence))
    assert outcomes["one"].ok and outcomes["two"].ok
    assert sorted(p.name for p in tmp_path.glob("*-ran")) == ["one-ran", "two-ran"]
