"""Reaching an environment's hosts: one transport per host, the environment lock held
over them with their state read in the same round trip, and the history records written
to them. Shared by every task that touches hosts."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

from releasebook.errors import HostUnreachable
from releasebook.inventory import Environment
from releasebook.lock import LockInfo, environment_lock
from releasebook.parallel import run_parallel
from releasebook.runner import run_scripts
from releasebook.state import HostState, history_commands, parse_probe, probe_commands
from releasebook.transport import LocalTransport, Transport, open_transport

CONTROLLER = "controller"


def attempt(action: str, release: str) -> dict[str, Any]:
    """The start of a history record: what is attempted, by whom, when."""
    return {
        "action": action,
        "release": release,
        "by": f"{getpass.getuser()}@{socket.gethostname()}",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@contextmanager
def connect(
    env: Environment, attempt_record: dict[str, Any] | None = None
) -> Iterator[dict[str, Transport]]:
    """Open one transport per host (concurrently, capped) plus the controller. When a
    host cannot be reached, the hosts that could be get ``attempt_record`` in their
    history, so that the next operator sees the attempt and why it never started."""
    transports: dict[str, Transport] = {CONTROLLER: LocalTransport(CONTROLLER, env.root)}
    errors: list[str] = []

    def open_one(host_name: str) -> None:
        try:
            transports[host_name] = open_transport(env.host(host_name), env.root)
        except HostUnreachable as exc:
            errors.append(str(exc))

    try:
        run_parallel([partial(open_one, h.name) for h in env.hosts], env.max_parallel)
        if errors:
            unreachable = "\n  ".join(sorted(errors))
            reason = (
                f"cannot reach every host, so no step ran and nothing was changed:\n  {unreachable}"
            )
            if attempt_record is not None:
                failed = {**attempt_record, "outcome": "not_started", "reason": reason}
                reached = [h.name for h in env.hosts if h.name in transports]
                record(env, transports, dict.fromkeys(reached, failed))
            raise HostUnreachable(reason)
        yield transports
    finally:
        for transport in transports.values():
            transport.close()


def read_states(
    env: Environment, transports: Mapping[str, Transport], hosts: list[str] | None = None
) -> dict[str, HostState]:
    names = hosts if hosts is not None else [h.name for h in env.hosts]
    results = run_scripts(dict.fromkeys(names, probe_commands(env)), transports, env.max_parallel)
    states: dict[str, HostState] = {}
    for name, result in results.items():
        if isinstance(result, Exception) or not result.ok:
            detail = result if isinstance(result, Exception) else result.tail()
            raise HostUnreachable(f"{name}: cannot read the deploy state: {detail}")
        states[name] = parse_probe(name, result.stdout)
    return states


@contextmanager
def locked(
    env: Environment,
    transports: Mapping[str, Transport],
    command: str,
    release_id: str,
    wait: float,
) -> Iterator[tuple[dict[str, HostState], LockInfo, set[str]]]:
    """Hold the environment lock; the hosts' state is read in the same round trip.

    Yields the states, the lock, and a set to which the caller adds the hosts whose lock
    it released in its own last script."""
    probed: dict[str, str] = {}
    released: set[str] = set()
    with environment_lock(
        env,
        transports,
        command=command,
        release_id=release_id,
        wait=wait,
        probe=probe_commands(env),
        probed=probed,
        released=released,
    ) as lock:
        states = {name: parse_probe(name, output) for name, output in probed.items()}
        missing = [h.name for h in env.hosts if h.name not in states]
        if missing:  # local hosts sharing this machine share one lock
            states.update(read_states(env, transports, missing))
        yield states, lock, released


def record(
    env: Environment,
    transports: Mapping[str, Transport],
    records: Mapping[str, dict[str, Any]],
) -> None:
    """Append each host's record to its history."""
    scripts = {host: history_commands(env, entry) for host, entry in records.items()}
    run_scripts(scripts, transports, env.max_parallel)


def record_everywhere(
    env: Environment, transports: Mapping[str, Transport], entry: dict[str, Any]
) -> None:
    """Append the same record to every host's history."""
    record(env, transports, dict.fromkeys((h.name for h in env.hosts), entry))
