"""Invoke tasks for the safety features: ``unlock``, ``history`` and ``hosts``.

Exit codes beyond those of ``releasebook.cli.tasks``: 1 when an unlock is declined,
4 when the environment is locked (``lock.LockHeld``), 5 when a host key CHANGED
(``hostkeys.HostKeyChanged``).
"""

from __future__ import annotations

import getpass
import json as jsonlib
import socket
import sys
import time
from dataclasses import asdict
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task

from releasebook.cli.kit import _errors_to_exit, _load
from releasebook.connection import connect, record
from releasebook.errors import HostUnreachable, UsageError
from releasebook.history import format_history, read_history
from releasebook.lock import LockInfo, break_lock, iso, read_locks
from releasebook.transport import hostkeys
from releasebook.transport.hostkeys import HostKeyChanged, KeyStatus, fingerprint, format_scan


def _ask(question: str) -> bool:
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:  # no terminal to answer from
        print()
        return False


def _holder(info: LockInfo) -> dict[str, Any]:
    return {k: v for k, v in asdict(info).items() if k != "token"}


@task(
    help={
        "env": "inventory whose lock to break: inventories/<env>.yml",
        "yes": "break it without asking (check first that its holder is gone)",
    }
)
@_errors_to_exit
def unlock(c: Context, env: str = "", yes: bool = False) -> None:
    """Show who holds the environment lock on each host, then break it."""
    environment = _load(env)
    with connect(environment) as transports:
        locks = read_locks(environment, transports)
        now = time.time()
        for host, info in locks.items():
            print(f"{host}: " + (info.describe(now) if info else "not locked"))
        if not any(locks.values()):
            print(f"{environment.name} is not locked")
            return
        active = [h for h, info in locks.items() if info and not info.stale(now)]
        if active:
            print(
                f"warning: the lease is active on {', '.join(active)}: that run may still be going"
            )
        if not yes and not _ask("Break the lock on every host?"):
            raise Exit("releasebook: the lock was left in place", code=1)
        broken = break_lock(environment, transports)
        base = {
            "action": "unlock",
            "by": f"{getpass.getuser()}@{socket.gethostname()}",
            "at": iso(now),
            "outcome": "unlocked",
        }
        record(
            environment,
            transports,
            {host: {**base, "holder": _holder(info)} for host, info in broken.items() if info},
        )
    print(f"unlocked {environment.name} on " + ", ".join(h for h, i in broken.items() if i))


@task(
    help={
        "env": "inventory whose history to show: inventories/<env>.yml",
        "limit": "records read from each host (newest)",
        "steps": "show every step's duration under each run, not only the slowest",
        "json": "print each host's records as JSON",
    }
)
@_errors_to_exit
def history(
    c: Context, env: str = "", limit: int = 20, steps: bool = False, json: bool = False
) -> None:
    """Show the releases, rollbacks and unlocks recorded on the hosts, newest first."""
    if limit < 1:
        raise UsageError("--limit: expected a positive number")
    environment = _load(env)
    with connect(environment) as transports:
        histories = read_history(environment, transports, limit=limit)
    if json:
        sys.stdout.write(jsonlib.dumps(histories, indent=2, sort_keys=True) + "\n")
        return
    print(format_history(histories, steps=steps))


@task(
    help={
        "env": "inventory whose hosts to check: inventories/<env>.yml",
        "trust": "offer to add NEW host keys to the inventory's known_hosts file",
        "yes": "with --trust: add every NEW key without asking (changed keys never)",
    }
)
@_errors_to_exit
def hosts(c: Context, env: str = "", trust: bool = False, yes: bool = False) -> None:
    """Check every host's SSH key against known_hosts; with --trust, add NEW ones."""
    if yes and not trust:
        raise UsageError("--yes goes with --trust")
    environment = _load(env)

    def confirm(status: KeyStatus) -> bool:
        assert status.key is not None  # only NEW keys are offered
        return yes or _ask(f"{status.label} ({fingerprint(status.key)}): Trust this key?")

    def review(statuses: list[KeyStatus]) -> None:
        # A round: the hosts and first gateways, then what lies behind gateways trusted.
        print(format_scan(statuses, environment.name))
        if trust:
            for written in hostkeys.trust(environment, statuses, confirm=confirm):
                print(f"added {written.label} ({written.name}) to {written.known_hosts}")

    statuses = hostkeys.scan(environment, review=review)
    if not statuses:
        print(format_scan(statuses, environment.name))
    if not trust and any(s.status == "new" for s in statuses):
        print(f"add NEW keys after checking them: inv hosts --trust --env={environment.name}")
    _fail_on(statuses)


def _fail_on(statuses: list[KeyStatus]) -> None:
    changed = [s.label for s in statuses if s.status == "changed"]
    if changed:
        raise HostKeyChanged("host key CHANGED on " + ", ".join(changed) + "; nothing replaced")
    unreachable = [s.label for s in statuses if s.status == "unreachable"]
    if unreachable:
        raise HostUnreachable("cannot fetch the host key of " + ", ".join(unreachable))


SAFETY_TASKS: tuple[Task[Any], ...] = (unlock, history, hosts)
