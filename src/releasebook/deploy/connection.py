"""Reaching an environment's hosts (one transport per host, opened at once) and writing
history records to them. Shared by every task that touches hosts."""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

from releasebook.errors import HostKeyChanged, HostUnreachable
from releasebook.execute.parallel import run_parallel
from releasebook.execute.runner import run_scripts
from releasebook.inventory import Environment, Host
from releasebook.masking import Masker
from releasebook.plan.build import bookkeeping_script
from releasebook.plan.model import CONTROLLER
from releasebook.runbooks.bookkeeping import RECORD
from releasebook.transport import LocalTransport, Transport, open_transport

Record = dict[str, Any]


def attempt(action: str, release: str) -> Record:
    """The start of a history record: what is attempted, by whom, when."""
    return {
        "action": action,
        "release": release,
        "by": f"{getpass.getuser()}@{socket.gethostname()}",
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def open_real(env: Environment, host: Host | None) -> Transport:
    """The controller (this machine) or a host, as its inventory says to reach it."""
    if host is None:
        return LocalTransport(CONTROLLER, env.root)
    return open_transport(host, env.root)


Opener = Callable[[Environment, Host | None], Transport]


@contextmanager
def connect(
    env: Environment,
    masker: Masker,
    attempt_record: Record | None = None,
    opener: Opener = open_real,
    unreachable: dict[str, str] | None = None,
) -> Iterator[dict[str, Transport]]:
    """Open one transport per host (concurrently, capped) plus the controller. When a
    host cannot be reached, the hosts that could be get ``attempt_record`` in their
    history, so that the next operator sees the attempt and why it never started.
    ``opener`` makes each transport (tests pass scripted ones). A read-only caller that
    reports on every host passes ``unreachable``: it gets each such host's cause there,
    and the transports of the others, instead of the error."""
    transports: dict[str, Transport] = {CONTROLLER: opener(env, None)}
    errors: list[HostUnreachable] = []
    failed_hosts: dict[str, str] = {}

    def open_one(host_name: str) -> None:
        try:
            transports[host_name] = opener(env, env.host(host_name))
        except HostUnreachable as exc:
            errors.append(exc)
            failed_hosts[host_name] = str(exc)

    try:
        run_parallel([partial(open_one, h.name) for h in env.hosts], env.max_parallel)
        if errors and unreachable is not None:
            unreachable.update(failed_hosts)
        elif errors:
            causes = "\n  ".join(sorted(str(e) for e in errors))
            changed = [e for e in errors if isinstance(e, HostKeyChanged)]
            reason = (
                f"a host's SSH key CHANGED, so no step ran and nothing was changed "
                f"(`inv hosts --env={env.name}` shows the fingerprints):\n  {causes}"
                if changed
                else "cannot reach every host, so no step ran and nothing was changed:\n  " + causes
            )
            if attempt_record is not None:
                failed = {**attempt_record, "outcome": "not_started", "reason": reason}
                reached = [h.name for h in env.hosts if h.name in transports]
                record(env, transports, masker, dict.fromkeys(reached, failed))
            if changed:
                raise HostKeyChanged(reason)
            raise HostUnreachable(reason)
        yield transports
    finally:
        for transport in transports.values():
            transport.close()


def record_script(env: Environment, masker: Masker, entry: Record) -> str:
    """The ``record`` step's commands with this record, masked."""
    line = masker.mask(json.dumps(entry, sort_keys=True))
    return bookkeeping_script(env, RECORD.commands, record=line)


def record(
    env: Environment,
    transports: Mapping[str, Transport],
    masker: Masker,
    records: Mapping[str, Record],
) -> list[str]:
    """Append each host's record to its history; the hosts where that failed."""
    scripts = {host: record_script(env, masker, entry) for host, entry in records.items()}
    results = run_scripts(scripts, transports, env.max_parallel)
    return [h for h, r in results.items() if isinstance(r, Exception) or not r.ok]


def record_everywhere(
    env: Environment, transports: Mapping[str, Transport], masker: Masker, entry: Record
) -> list[str]:
    """Append the same record to every host's history."""
    return record(env, transports, masker, dict.fromkeys((h.name for h in env.hosts), entry))
