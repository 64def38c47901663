"""Real services for end-to-end tests: a fresh PostgreSQL database, simulated hosts."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from simhosts import SimFleet, missing_prerequisites

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the local PostgreSQL; its URL; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def started_fleet(
    base: Path, names: Sequence[str], *, srv_size: str | None = None
) -> Iterator[SimFleet]:
    """Simulated hosts with these names, stopped afterwards. Skips where the machine
    cannot run them, except under CI, where that is a failure. ``srv_size``: each host's
    /srv is a filesystem of that size."""
    problems = missing_prerequisites()
    if problems:
        reason = "simulated hosts unavailable: " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set)")
        pytest.skip(reason)
    fleet = SimFleet.start(len(names), base, names=list(names), srv_size=srv_size)
    try:
        yield fleet
    finally:
        fleet.stop()
