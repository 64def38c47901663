"""Invoke tasks for the safety features: ``unlock``, ``history`` and ``hosts``.

Exit codes beyond those of ``releasebook.cli.tasks``: 1 when an unlock is declined,
4 when the environment is locked (``lock.LockHeld``), 5 when a host key CHANGED
(``hostkeys.HostKeyChanged``).
"""

from __future__ import annotations

import getpass
import socket
import time
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task

from releasebook.cli.kit import session
from releasebook.cli.limits import ROLES_HELP, LimitedTask, limit_hosts
from releasebook.deploy.connection import connect, record
from releasebook.deploy.history import format_history, json_lines, read_history
from releasebook.errors import HostKeyChanged, HostUnreachable, UsageError
from releasebook.execute import hostkeys
from releasebook.execute.hostkeys import KeyStatus, fingerprint, format_scan
from releasebook.execute.lock import break_locks, read_lock_digests
from releasebook.runbooks.bookkeeping import iso


def _ask(question: str) -> bool:
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:  # no terminal to answer from
        print()
        return False


@task(
    klass=LimitedTask,
    help={
        "env": "inventory whose lock to break: inventories/<env>.yml",
        "yes": "break it without asking (check first that its holder is gone)",
        "hosts": "only on these hosts (comma-separated names), e.g. when another is gone",
        "roles": ROLES_HELP,
    },
)
def unlock(c: Context, env: str = "", yes: bool = False, hosts: str = "", roles: str = "") -> None:
    """Show who holds the environment lock on each host, then break that lock.

    Only the lock shown is broken: a lock taken since is left alone."""
    with session() as s:
        environment, _ = limit_hosts(s.load(env), hosts, roles)
        with connect(environment, s.masker) as transports:
            shown = read_lock_digests(environment, transports)
            now = time.time()
            for host, (info, _) in shown.items():
                s.print(f"{host}: " + (info.describe(now) if info else "not locked"))
            held = {h: digest for h, (info, digest) in shown.items() if info is not None}
            if not held:
                s.print(f"{environment.name} is not locked")
                return
            active = [h for h, (info, _) in shown.items() if info and not info.stale(now)]
            if active:
                s.print(
                    "warning: the lease is active on "
                    + ", ".join(active)
                    + ": that run may still be going"
                )
            if not yes and not _ask("Break the lock shown on every host?"):
                raise Exit("releasebook: the lock was left in place", code=1)
            results = break_locks(environment, transports, held)
            broken = [h for h, (state, _) in results.items() if state == "broken"]
            changed = {h: info for h, (state, info) in results.items() if state == "changed"}
            base = {
                "action": "unlock",
                "by": f"{getpass.getuser()}@{socket.gethostname()}",
                "at": iso(now),
                "outcome": "unlocked",
            }
            holders = {h: info for h, (info, _) in shown.items() if info is not None}
            record(
                environment,
                transports,
                s.masker,
                {h: {**base, "holder": holders[h].holder()} for h in broken},
            )
        for host, info in changed.items():
            s.print(
                f"{host}: the lock changed since it was shown and was left alone: "
                + (info.describe() if info else "holder unknown")
            )
        if broken:
            s.print(f"unlocked {environment.name} on " + ", ".join(broken))
        if changed:
            raise Exit(
                "releasebook: some locks changed since they were shown; run inv unlock again",
                code=1,
            )


@task(
    help={
        "env": "inventory whose history to show: inventories/<env>.yml",
        "limit": "records read from each host (newest)",
        "steps": "show every step's duration under each run, not only the slowest",
        "json": "one JSON object per line: each record, newest first, with its host",
        "hosts": "only these hosts' records (comma-separated names)",
        "roles": "only the records of hosts with one of these roles (comma-separated)",
    },
    klass=LimitedTask,
)
def history(
    c: Context,
    env: str = "",
    limit: int = 20,
    steps: bool = False,
    json: bool = False,
    hosts: str = "",
    roles: str = "",
) -> None:
    """Show the releases, rollbacks and unlocks recorded on the hosts, newest first."""
    with session() as s:
        if limit < 1:
            raise UsageError("--limit: expected a positive number")
        environment, _ = limit_hosts(s.load(env), hosts, roles)
        with connect(environment, s.masker) as transports:
            histories = read_history(environment, transports, limit=limit)
        if json:
            for line in json_lines(histories):
                s.print(line)
            return
        s.print(format_history(histories, steps=steps))


@task(
    help={
        "env": "inventory whose hosts to check: inventories/<env>.yml",
        "trust": "offer to add NEW host keys to the inventory's known_hosts file",
        "yes": "with --trust: add every NEW key without asking (changed keys never)",
        "hosts": "only these hosts (comma-separated names), e.g. a server just added",
        "roles": ROLES_HELP,
    },
    klass=LimitedTask,
)
def hosts(
    c: Context,
    env: str = "",
    trust: bool = False,
    yes: bool = False,
    hosts: str = "",
    roles: str = "",
) -> None:
    """Check every host's SSH key against known_hosts; with --trust, add NEW ones."""
    with session() as s:
        if yes and not trust:
            raise UsageError("--yes goes with --trust")
        environment, _ = limit_hosts(s.load(env), hosts, roles)

        def confirm(status: KeyStatus) -> bool:
            assert status.key is not None  # only NEW keys are offered
            return yes or _ask(f"{status.label} ({fingerprint(status.key)}): Trust this key?")

        def review(statuses: list[KeyStatus]) -> None:
            # A round: the hosts and first gateways, then what lies behind gateways trusted.
            s.print(format_scan(statuses, environment.name))
            if trust:
                for written in hostkeys.trust(environment, statuses, confirm=confirm):
                    s.print(f"added {written.label} ({written.name}) to {written.known_hosts}")

        statuses = hostkeys.scan(environment, review=review)
        if not statuses:
            s.print(format_scan(statuses, environment.name))
        if not trust and any(st.status == "new" for st in statuses):
            s.print(f"add NEW keys after checking them: inv hosts --trust --env={environment.name}")
        _fail_on(statuses)


def _fail_on(statuses: list[KeyStatus]) -> None:
    changed = [s.label for s in statuses if s.status == "changed"]
    if changed:
        raise HostKeyChanged("host key CHANGED on " + ", ".join(changed) + "; nothing replaced")
    unreachable = [s.label for s in statuses if s.status == "unreachable"]
    if unreachable:
        raise HostUnreachable("cannot fetch the host key of " + ", ".join(unreachable))


SAFETY_TASKS: tuple[Task[Any], ...] = (unlock, history, hosts)
