"""Shared fixtures: an isolated environment for every test, and simulated SSH hosts."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pytest
from schedule import expected_seconds
from simhosts import SimFleet, SimFleetFactory, missing_prerequisites

SIM_FIXTURES = frozenset({"simhosts_available", "sim_fleet_factory", "sim_host"})


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use simulated hosts are e2e tests, marked or not. Files run slowest
    first (see schedule.py); a file's tests keep their order (the sort is stable)."""
    for item in items:
        if SIM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: -expected_seconds(item.path.name))


@pytest.fixture(autouse=True)
def isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Hide the developer's environment: fresh HOME (no ~/.ssh/config, known_hosts or
    ~/.fabric.yaml), no SSH agent, no RELEASEBOOK_* settings."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    for name in ("SSH_AUTH_SOCK", "SSH_AGENT_PID"):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("RELEASEBOOK_"):
            monkeypatch.delenv(name)


@pytest.fixture
def simhosts_available() -> None:
    """Skip (locally) or fail (under CI) when this machine cannot run simulated hosts."""
    problems = missing_prerequisites()
    if not problems:
        return
    reason = "simulated hosts unavailable: " + "; ".join(problems)
    if _in_ci():
        pytest.fail(reason + " (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def sim_fleet_factory(
    simhosts_available: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimFleetFactory]:
    """``start(n=1, *, names=None) -> SimFleet``; every fleet is stopped at teardown."""
    fleets: list[SimFleet] = []

    def start(n: int = 1, *, names: Sequence[str] | None = None) -> SimFleet:
        fleet = SimFleet.start(n, tmp_path_factory.mktemp("simfleet"), names=names)
        fleets.append(fleet)
        return fleet

    try:
        yield start
    finally:
        errors: list[BaseException] = []
        for fleet in reversed(fleets):
            try:
                fleet.stop()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture
def sim_host(sim_fleet_factory: SimFleetFactory) -> SimFleet:
    """A fleet of one host (``sim_host.hosts[0]``, named ``host1``)."""
    return sim_fleet_factory(1)
