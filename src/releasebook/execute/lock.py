"""Holding the environment lock: the plan's ``lock`` step run in lock order, the lease
renewed while the run goes on, and the lock released however the run ends.

The commands are the definitions' (``runbooks.bookkeeping``: the ``lock`` step and its
undo, ``RENEW``, ``READ_LOCK``, ``BREAK_LOCK``); this module only runs them, in the
order that makes two racing runs come out with exactly one winner, and reads their
``state=...`` lines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace

from releasebook.errors import HostUnreachable, LockHeld, ReleasebookError
from releasebook.execute.events import Reporter
from releasebook.execute.outcome import Outcome
from releasebook.execute.runner import plain_script, run_scripts
from releasebook.inventory import Environment
from releasebook.plan.build import bookkeeping_script, lock_hosts
from releasebook.plan.facts import HostFacts, parse_probe
from releasebook.plan.model import Plan
from releasebook.runbooks import bookkeeping as book
from releasebook.transport import Result, Transport

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.5
_RENEWER_JOIN = 30.0


def parse_state(result: Result) -> tuple[str, book.LockInfo | None, str]:
    """``state=``, the holder (``info=``) and its ``digest=`` from a lock script."""
    state, info, digest = "", None, ""
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "state" and not state:
            state = value
        elif key == "info" and info is None:
            info = book.LockInfo.parse(value)
        elif key == "digest" and not digest:
            digest = value
    if state in ("held", "changed") and info is None:
        info = book.UNREADABLE
    return state, info, digest


def detail(result: Result | Exception) -> str:
    if isinstance(result, Exception):
        return f"{type(result).__name__}: {result}"
    return f"exit {result.exited}: {result.tail()}"


def held_message(
    env_name: str, holders: Mapping[str, book.LockInfo | None], waited: float = 0
) -> str:
    now = time.time()
    lines = [f"environment {env_name} is locked" + (f" (waited {waited:g}s)" if waited else "")]
    for host, info in sorted(holders.items()):
        text = info.describe(now) if info else "locked, holder unknown (just released?)"
        lines.append(f"  {host}: {text}")
    if any(info is not None and info.stale(now) for info in holders.values()):
        lines.append(
            "A stale lease means its holder stopped renewing it (killed or crashed). "
            f"Check that run is gone, then: inv unlock --env={env_name}"
        )
    else:
        lines.append(
            "Wait for that run to finish. If it is gone, break the lock with "
            f"inv unlock --env={env_name}"
        )
    return "\n".join(lines)


@dataclass
class HeldLock:
    """The lock a run holds: its info, each host's facts read when it was taken, the
    hosts where it was found lost (broken, taken over) and where the run's own last
    script already released it."""

    info: book.LockInfo
    hosts: list[str]
    facts: dict[str, HostFacts]
    lost: set[str] = field(default_factory=set)
    released: set[str] = field(default_factory=set)


def _scripts(plan: Plan, step: str, hosts: list[str]) -> dict[str, str]:
    planned = plan.step(step)
    scripts: dict[str, str] = {}
    for host in hosts:
        work = planned.on(host)
        if work is not None:
            scripts[host] = plain_script(work.commands)
    return scripts


def _release(plan: Plan, transports: Mapping[str, Transport], hosts: list[str]) -> list[str]:
    """The lock step's undo where this run's token holds the lock; never raises,
    returns the problems."""
    if not hosts:
        return []
    undo = plan.step("lock")
    scripts = {h: plain_script(w.undo) for h in hosts if (w := undo.on(h)) is not None}
    try:
        results = run_scripts(scripts, transports, plan.environment.max_parallel)
    except Exception as exc:
        results = dict.fromkeys(scripts, exc)
    problems = [
        f"{host}: could not release the lock ({detail(result)}); its lease will go stale: "
        f"inv unlock --env={plan.environment.name}"
        for host, result in results.items()
        if isinstance(result, Exception) or not result.ok
    ]
    for problem in problems:
        log.warning("%s", problem)
    return problems


def _try(
    plan: Plan, transports: Mapping[str, Transport], reporter: Reporter
) -> tuple[dict[str, str], dict[str, book.LockInfo | None]]:
    """Take the lock on every host, or on none: the probe output of each host when it
    was taken, else the holders that refused it.

    The first host goes first, alone: of two runs started at once, the one that gets it
    goes on to the others, and the other stops there. Taken all at once, each could win
    some hosts and both would give up."""
    env = plan.environment
    order = [h for h in lock_hosts(env) if plan.step("lock").on(h) is not None]
    got: dict[str, str] = {}
    for batch in (order[:1], order[1:]):
        if not batch:
            continue
        try:
            results = run_scripts(_scripts(plan, "lock", batch), transports, env.max_parallel)
        except BaseException:  # interrupted mid-way: some hosts may have it
            _release(plan, transports, [*got, *batch])
            raise
        held: dict[str, book.LockInfo | None] = {}
        errors: list[str] = []
        planned = plan.step("lock")
        for host, result in results.items():
            if isinstance(result, Exception) or not result.ok:
                errors.append(f"{host}: cannot take the lock: {detail(result)}")
                continue
            state, holder, _ = parse_state(result)
            if state == "acquired":
                got[host] = result.stdout
                reporter.host_finished(planned, Outcome("lock", host, True, 0, "", result.duration))
            else:
                held[host] = holder
        if held or errors:
            _release(plan, transports, list(got))
            if errors:
                raise HostUnreachable("\n".join(errors))
            return {}, held
    return got, {}


def _with_others(
    plan: Plan, transports: Mapping[str, Transport], holders: dict[str, book.LockInfo | None]
) -> dict[str, book.LockInfo | None]:
    """``holders``, and who holds the lock on the hosts not asked (refused on the first
    host, a run asks no other), for the message; best effort."""
    unasked = [h for h in lock_hosts(plan.environment) if h not in holders]
    if not unasked:
        return holders
    with suppress(ReleasebookError):
        found = read_locks(plan.environment, transports, unasked)
        return {**{h: info for h, info in found.items() if info is not None}, **holders}
    return holders


def read_locks(
    env: Environment, transports: Mapping[str, Transport], hosts: list[str] | None = None
) -> dict[str, book.LockInfo | None]:
    """Each host's lock holder, or None where the environment is not locked."""
    return {h: info for h, (info, _) in read_lock_digests(env, transports, hosts).items()}


def read_lock_digests(
    env: Environment, transports: Mapping[str, Transport], hosts: list[str] | None = None
) -> dict[str, tuple[book.LockInfo | None, str]]:
    """Each host's lock holder and the digest of its info.json (what ``break_locks``
    checks before it breaks anything)."""
    names = lock_hosts(env) if hosts is None else hosts
    script = bookkeeping_script(env, book.READ_LOCK)
    results = run_scripts(dict.fromkeys(names, script), transports, env.max_parallel)
    found: dict[str, tuple[book.LockInfo | None, str]] = {}
    for host, result in results.items():
        if isinstance(result, Exception) or not result.ok:
            raise HostUnreachable(f"{host}: cannot read the lock: {detail(result)}")
        state, info, digest = parse_state(result)
        found[host] = (info if state == "held" else None, digest)
    return found


def break_locks(
    env: Environment, transports: Mapping[str, Transport], shown: Mapping[str, str]
) -> dict[str, tuple[str, book.LockInfo | None]]:
    """Break the lock on each host of ``shown`` if it is still the one shown (same
    ``info.json`` digest); by host, ``broken``, ``changed`` (left, with its new holder)
    or ``none``."""
    scripts = {
        h: bookkeeping_script(env, book.BREAK_LOCK, shown_digest=digest)
        for h, digest in shown.items()
    }
    results = run_scripts(scripts, transports, env.max_parallel)
    out: dict[str, tuple[str, book.LockInfo | None]] = {}
    for host, result in results.items():
        if isinstance(result, Exception) or not result.ok:
            raise HostUnreachable(f"{host}: cannot break the lock: {detail(result)}")
        state, info, _ = parse_state(result)
        out[host] = (state, info)
    return out


class _Renewer:
    """A daemon thread pushing ``lease_until`` forward on every host while the lock is held."""

    def __init__(
        self, plan: Plan, transports: Mapping[str, Transport], held: HeldLock, every: float
    ) -> None:
        self._plan, self._transports, self._held, self._every = plan, transports, held, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="releasebook-lock", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._renew()
            except Exception:
                log.exception("renewing the environment lock failed")

    def _renew(self) -> None:
        info = replace(self._held.info, lease_until=time.time() + book.LEASE)
        hosts = [h for h in self._held.hosts if h not in self._held.lost | self._held.released]
        env = self._plan.environment
        script = bookkeeping_script(env, book.RENEW, token=info.token, info=info)
        results = run_scripts(dict.fromkeys(hosts, script), self._transports, env.max_parallel)
        for host, result in results.items():
            if isinstance(result, Exception) or not result.ok:
                log.warning("%s: could not renew the lock lease: %s", host, detail(result))
            elif parse_state(result)[0] == "lost":
                self._held.lost.add(host)
                log.warning("%s: the environment lock was broken or taken over", host)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(_RENEWER_JOIN)


@contextmanager
def environment_lock(
    plan_with: Callable[[book.LockInfo], Plan],
    info: book.LockInfo,
    transports: Mapping[str, Transport],
    reporter: Reporter,
    *,
    wait: float = 0,
    renew_every: float = book.RENEW_EVERY,
) -> Iterator[HeldLock]:
    """Hold the environment lock on every host for the block, renewing its lease.

    ``plan_with(info)`` is the run's plan (its ``lock`` step takes the lock, with the
    lease of ``info``). Raises :class:`LockHeld` when another run holds it on any host
    (after polling for up to ``wait`` seconds). On leaving the block, however it is
    left, the lock is released where this run still holds it and its own last script
    did not already; problems releasing it are logged, not raised.
    """
    deadline = time.monotonic() + wait
    reporter.step_started((plan := plan_with(info)).step("lock"))
    while True:
        probed, holders = _try(plan, transports, reporter)
        if not holders:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            holders = _with_others(plan, transports, holders)
            raise LockHeld(held_message(plan.environment.name, holders, wait), holders)
        time.sleep(min(POLL_INTERVAL, remaining))
        info = replace(info, lease_until=time.time() + book.LEASE)
        plan = plan_with(info)
    env = plan.environment
    facts = {host: parse_probe(host, output) for host, output in probed.items()}
    held = HeldLock(info=info, hosts=list(probed), facts=facts)
    renewer = _Renewer(plan, transports, held, renew_every)
    try:
        missing = [h.name for h in env.hosts if h.name not in facts]
        if missing:  # local hosts sharing this machine share one lock
            facts.update(read_facts(env, transports, missing))
        renewer.start()
        yield held
    finally:
        renewer.stop()
        _release(plan, transports, [h for h in held.hosts if h not in held.lost | held.released])


def read_facts(
    env: Environment, transports: Mapping[str, Transport], hosts: list[str] | None = None
) -> dict[str, HostFacts]:
    """Each host's facts, read without the lock (a run may be under way)."""
    names = hosts if hosts is not None else [h.name for h in env.hosts]
    script = bookkeeping_script(env, book.PROBE)
    results = run_scripts(dict.fromkeys(names, script), transports, env.max_parallel)
    facts: dict[str, HostFacts] = {}
    for name, result in results.items():
        if isinstance(result, Exception) or not result.ok:
            raise HostUnreachable(f"{name}: cannot read the deploy state: {detail(result)}")
        facts[name] = parse_probe(name, result.stdout)
    return facts
