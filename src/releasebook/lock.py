"""The environment lock: one release or rollback at a time, on every host.

Each host holds ``<deploy>/.releasebook/lock/``, made with ``mkdir`` (atomic: exactly one
of two racing controllers gets it) and holding ``info.json``: who, from where, what for,
a random token and a lease. The holder renews the lease while it runs. Only the holder
(same token) renews or releases it; a lease that ran out means the holder died, and
``inv unlock`` breaks the lock after a person has checked that.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from releasebook.errors import HostUnreachable, ReleasebookError
from releasebook.inventory import Environment
from releasebook.quoting import quote
from releasebook.runner import LOCK_LOST, run_scripts
from releasebook.state import deploy_dir
from releasebook.transport import Result, Transport

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.5
# A lock directory seen without info.json is usually an acquire between its mkdir and
# its write: give that writer this long (in 0.1 s ticks) before reporting what is there.
_INFO_WAIT_TICKS = 20
_RENEWER_JOIN = 30.0


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LockInfo:
    """What ``info.json`` holds. ``token`` is empty when the directory had no readable
    ``info.json`` (an acquire that was killed half-way): such a lock counts as stale."""

    user: str
    controller: str
    pid: int
    started: str
    command: str
    release: str
    token: str
    lease_until: float

    def stale(self, now: float | None = None) -> bool:
        return self.lease_until < (time.time() if now is None else now)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LockInfo:
        try:
            data = json.loads(text)
            return cls(
                user=str(data["user"]),
                controller=str(data["controller"]),
                pid=int(data["pid"]),
                started=str(data["started"]),
                command=str(data["command"]),
                release=str(data["release"]),
                token=str(data["token"]),
                lease_until=float(data["lease_until"]),
            )
        except (ValueError, TypeError, KeyError):
            return cls("?", "?", 0, "?", "?", "?", "", 0.0)

    def describe(self, now: float | None = None) -> str:
        if not self.token:
            return "an unreadable lock (no valid info.json: an acquire killed half-way?)"
        lease = (
            f"stale since {iso(self.lease_until)}"
            if self.stale(now)
            else f"lease active until {iso(self.lease_until)}"
        )
        return (
            f"{self.user} on {self.controller} (pid {self.pid}) since {self.started}, "
            f"running `{self.command}` of release {self.release or '(none)'}; {lease}"
        )


class LockHeld(ReleasebookError):
    """Exit 4: another run holds the environment lock; nothing was changed."""

    exit_code = 4

    def __init__(
        self, env_name: str, holders: Mapping[str, LockInfo | None], waited: float = 0
    ) -> None:
        self.holders = dict(holders)
        now = time.time()
        lines = [f"environment {env_name} is locked" + (f" (waited {waited:g}s)" if waited else "")]
        for host, info in sorted(self.holders.items()):
            text = info.describe(now) if info else "locked, holder unknown (just released?)"
            lines.append(f"  {host}: {text}")
        if any(info is not None and info.stale(now) for info in self.holders.values()):
            lines.append(
                "A stale lease means its holder stopped renewing it (killed or crashed). "
                f"Check that run is gone, then: inv unlock --env={env_name}"
            )
        else:
            lines.append(
                "Wait for that run to finish. If it is gone, break the lock with "
                f"inv unlock --env={env_name}"
            )
        super().__init__("\n".join(lines))


# --- the scripts run on hosts ------------------------------------------------------


def lock_dir(env: Environment) -> Path:
    return deploy_dir(env) / ".releasebook" / "lock"


def _token_mark(token: str) -> str:
    return json.dumps({"token": token})[1:-1]  # how to_json writes it: "token": "..."


def _write_info(env: Environment, info: LockInfo) -> tuple[str, ...]:
    path = lock_dir(env)
    tmp = path / f"info.json.{info.token}"
    return (
        f"printf '%s\\n' {quote(info.to_json())} > {quote(tmp)}",
        f"mv -f {quote(tmp)} {quote(path / 'info.json')}",
    )


def _show_commands(env: Environment) -> tuple[str, ...]:
    path, info = quote(lock_dir(env)), quote(lock_dir(env) / "info.json")
    return (
        "n=0",
        f'while [ -d {path} ] && [ ! -f {info} ] && [ "$n" -lt {_INFO_WAIT_TICKS} ]; do',
        "  sleep 0.1; n=$((n + 1))",
        "done",
        f"if [ ! -d {path} ]; then echo state=none; exit 0; fi",
        "echo state=held",
        f"if [ -f {info} ]; then printf 'info=%s\\n' \"$(cat {info} 2>/dev/null || true)\"; fi",
    )


def _acquire_commands(
    env: Environment, info: LockInfo, probe: tuple[str, ...] = ()
) -> tuple[str, ...]:
    path = quote(lock_dir(env))
    write = " && ".join(_write_info(env, info))
    # The caller's probe runs in the same round trip, once the lock is ours.
    then = f"( {'; '.join(probe)} ); exit 0" if probe else "exit 0"
    return (
        f"mkdir -p {quote(lock_dir(env).parent)}",
        f"if mkdir {path} 2>/dev/null; then",
        f"  if {write}; then echo state=acquired; {then}; fi",
        f"  rm -rf {path}",
        "  echo 'cannot write the lock info' >&2; exit 1",
        "fi",
        *_show_commands(env),
    )


def _if_ours(env: Environment, token: str, then: tuple[str, ...], done: str) -> tuple[str, ...]:
    info = quote(lock_dir(env) / "info.json")
    return (
        f"if grep -qF {quote(_token_mark(token))} {info} 2>/dev/null; then",
        *(f"  {command}" for command in then),
        f"  echo state={done}",
        "else echo state=lost; fi",
    )


def _remove(env: Environment) -> tuple[str, ...]:
    # Renamed away first, so a renewal racing with the removal cannot write into it.
    gone = f'{quote(str(lock_dir(env)) + ".gone")}."$$"'
    return (f"mv {quote(lock_dir(env))} {gone}", f"rm -rf {gone}")


def release_commands(env: Environment, token: str) -> tuple[str, ...]:
    """Release the lock if ``token`` holds it: for a caller's own last script on a host."""
    return _if_ours(env, token, _remove(env), "released")


def fence_commands(env: Environment, token: str) -> tuple[str, ...]:
    """Stop a step script (exit ``LOCK_LOST``) unless ``token`` still holds the lock on
    its host: once ``inv unlock`` broke a lock, its run changes nothing more there."""
    info = quote(lock_dir(env) / "info.json")
    lost = quote(
        "the environment lock on this host is no longer this run's: it was broken "
        "(inv unlock) or taken over by another run; stopping before any change"
    )
    return (
        f"if ! grep -qF {quote(_token_mark(token))} {info} 2>/dev/null; then",
        f"  printf '%s\\n' {lost} >&2; exit {LOCK_LOST}",
        "fi",
    )


def _renew_commands(env: Environment, info: LockInfo) -> tuple[str, ...]:
    return _if_ours(env, info.token, _write_info(env, info), "renewed")


def _break_commands(env: Environment) -> tuple[str, ...]:
    return (*_show_commands(env), *_remove(env))


def _parse(result: Result) -> tuple[str, LockInfo | None]:
    state, info = "", None
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "state":
            state = value
        elif key == "info":
            info = LockInfo.from_json(value)
    if state == "held" and info is None:
        info = LockInfo.from_json("")
    return state, info


def _detail(result: Result | Exception) -> str:
    if isinstance(result, Exception):
        return f"{type(result).__name__}: {result}"
    return f"exit {result.exited}: {result.tail()}"


# --- reading and breaking ------------------------------------------------------------


def lock_hosts(env: Environment) -> list[str]:
    """Every host of the environment (local hosts share this machine, so one of them),
    in the order every run takes their locks: by address, whatever the inventory's."""
    names: list[str] = []
    local = False
    for host in sorted(env.hosts, key=lambda h: (h.address, h.ssh.port, h.name)):
        if host.transport == "local":
            if local:
                continue
            local = True
        names.append(host.name)
    return names


def _each_host(
    env: Environment,
    transports: Mapping[str, Transport],
    commands: tuple[str, ...],
    what: str,
    hosts: list[str] | None = None,
) -> dict[str, LockInfo | None]:
    names = lock_hosts(env) if hosts is None else hosts
    results = run_scripts(dict.fromkeys(names, commands), transports, env.max_parallel)
    found: dict[str, LockInfo | None] = {}
    for host, result in results.items():
        if isinstance(result, Exception) or not result.ok:
            raise HostUnreachable(f"{host}: cannot {what} the lock: {_detail(result)}")
        found[host] = _parse(result)[1]
    return found


def read_locks(env: Environment, transports: Mapping[str, Transport]) -> dict[str, LockInfo | None]:
    """Each host's lock holder, or None where the environment is not locked."""
    return _each_host(env, transports, _show_commands(env), "read")


def break_lock(env: Environment, transports: Mapping[str, Transport]) -> dict[str, LockInfo | None]:
    """Remove the lock on every host whoever holds it; return what was there."""
    return _each_host(env, transports, _break_commands(env), "break")


# --- holding it ------------------------------------------------------------------------


def _release(
    env: Environment, transports: Mapping[str, Transport], hosts: list[str], token: str
) -> list[str]:
    """Release where ``token`` holds the lock; never raises, returns the problems."""
    if not hosts:
        return []
    problems: list[str] = []
    try:
        results = run_scripts(
            dict.fromkeys(hosts, release_commands(env, token)), transports, env.max_parallel
        )
    except Exception as exc:
        results = dict.fromkeys(hosts, exc)
    for host, result in results.items():
        if isinstance(result, Exception) or not result.ok:
            problems.append(
                f"{host}: could not release the lock ({_detail(result)}); its lease will go "
                f"stale: inv unlock --env={env.name}"
            )
    for problem in problems:
        log.warning("%s", problem)
    return problems


def _try_acquire(
    env: Environment,
    transports: Mapping[str, Transport],
    hosts: list[str],
    info: LockInfo,
    probe: tuple[str, ...] = (),
    probed: dict[str, str] | None = None,
) -> dict[str, LockInfo | None]:
    """Take the lock on every host, or on none: returns the holders that refused it.

    The first host goes first, alone: of two runs started at once, the one that gets it
    goes on to the others, and the other stops there. Taken all at once, each could win
    some hosts and both would give up."""
    first, others = hosts[:1], hosts[1:]
    held = _try_acquire_on(env, transports, first, [], info, probe, probed)
    if held or not others:
        return held
    return _try_acquire_on(env, transports, others, first, info, probe, probed)


def _try_acquire_on(
    env: Environment,
    transports: Mapping[str, Transport],
    hosts: list[str],
    already: list[str],
    info: LockInfo,
    probe: tuple[str, ...],
    probed: dict[str, str] | None,
) -> dict[str, LockInfo | None]:
    """Take the lock on ``hosts``; when any refuses, release it there and on ``already``."""
    try:
        results = run_scripts(
            dict.fromkeys(hosts, _acquire_commands(env, info, probe)), transports, env.max_parallel
        )
    except BaseException:  # interrupted mid-way: some hosts may have it
        _release(env, transports, already + hosts, info.token)
        raise
    got: list[str] = []
    held: dict[str, LockInfo | None] = {}
    errors: list[str] = []
    for host, result in results.items():
        if isinstance(result, Exception) or not result.ok:
            errors.append(f"{host}: cannot take the lock: {_detail(result)}")
            continue
        state, holder = _parse(result)
        if state == "acquired":
            got.append(host)
            if probed is not None:
                probed[host] = result.stdout
        else:
            held[host] = holder
    if (held or errors) and (got or already):
        _release(env, transports, already + got, info.token)
    if errors:
        raise HostUnreachable("\n".join(errors))
    return held


def _with_others(
    env: Environment, transports: Mapping[str, Transport], holders: dict[str, LockInfo | None]
) -> dict[str, LockInfo | None]:
    """``holders``, and who holds the lock on the hosts not asked (refused on the first
    host, a run asks no other), for the message; best effort."""
    unasked = [h for h in lock_hosts(env) if h not in holders]
    if not unasked:
        return holders
    with suppress(ReleasebookError):
        found = _each_host(env, transports, _show_commands(env), "read", unasked)
        return {**{h: info for h, info in found.items() if info is not None}, **holders}
    return holders


class _Renewer:
    """A daemon thread pushing ``lease_until`` forward on every host while the lock is held."""

    def __init__(
        self,
        env: Environment,
        transports: Mapping[str, Transport],
        hosts: list[str],
        info: LockInfo,
        lease: float,
        every: float,
    ) -> None:
        self._env, self._transports, self._hosts = env, transports, hosts
        self._info, self._lease, self._every = info, lease, every
        self._stop = threading.Event()
        self.lost: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="releasebook-lock", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._renew()
            except Exception:
                log.exception("renewing the environment lock failed")

    def _renew(self) -> None:
        info = replace(self._info, lease_until=time.time() + self._lease)
        hosts = [h for h in self._hosts if h not in self.lost]
        results = run_scripts(
            dict.fromkeys(hosts, _renew_commands(self._env, info)),
            self._transports,
            self._env.max_parallel,
        )
        for host, result in results.items():
            if isinstance(result, Exception) or not result.ok:
                log.warning("%s: could not renew the lock lease: %s", host, _detail(result))
            elif _parse(result)[0] == "lost":
                self.lost.add(host)
                log.warning("%s: the environment lock was broken or taken over", host)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(_RENEWER_JOIN)


@contextmanager
def environment_lock(
    env: Environment,
    transports: Mapping[str, Transport],
    *,
    command: str,
    release_id: str,
    wait: float = 0,
    lease: float = 300,
    renew_every: float = 120,
    probe: tuple[str, ...] = (),
    probed: dict[str, str] | None = None,
    released: set[str] | None = None,
) -> Iterator[LockInfo]:
    """Hold the environment lock on every host for the block, renewing its lease.

    Raises :class:`LockHeld` when another run holds it on any host (after polling for up
    to ``wait`` seconds). On leaving the block, however it is left, the lock is released
    where this run still holds it; problems releasing it are logged, not raised.

    To save round trips, ``probe`` commands run right after the lock is taken, in the
    same script, their output going to ``probed`` by host; and hosts the caller added to
    ``released`` (having run :func:`release_commands` in its own last script) are not
    visited again. The lease outlives a typical release, so most runs never renew it.
    """
    if not 0 < renew_every < lease:
        raise ValueError(f"renew_every ({renew_every}) must be positive and below lease ({lease})")
    hosts = lock_hosts(env)
    token = secrets.token_hex(16)
    deadline = time.monotonic() + wait
    while True:
        now = time.time()
        info = LockInfo(
            user=getpass.getuser(),
            controller=socket.gethostname(),
            pid=os.getpid(),
            started=iso(now),
            command=command,
            release=release_id,
            token=token,
            lease_until=now + lease,
        )
        holders = _try_acquire(env, transports, hosts, info, probe, probed)
        if not holders:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LockHeld(env.name, _with_others(env, transports, holders), waited=wait)
        time.sleep(min(POLL_INTERVAL, remaining))
    renewer = _Renewer(env, transports, hosts, info, lease, renew_every)
    try:
        renewer.start()
        yield info
    finally:
        renewer.stop()
        done = released or set()
        _release(env, transports, [h for h in hosts if h not in renewer.lost | done], token)
