"""Day-2 operations on a running environment: maintenance mode, the app's processes, its
logs, a command with a release's environment, and the incident checks (``doctor``).

Each plans a runbook of :mod:`releasebook.runbooks.ops` for the release every host serves
(read once, by the probe) and runs each step's commands as one plain script per host, in
parallel: the same commands ``--dry-run`` prints and ``operations.md`` / ``incident.md``
show. They take no lock and write no journal line: none of them makes a release; those
that change hosts refuse to run while another run holds the environment lock.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol, runtime_checkable

from releasebook.deploy.connection import Opener, connect, open_real
from releasebook.deploy.websocket_report import websockets_closed
from releasebook.errors import LockHeld, OperationFailed, UsageError
from releasebook.execute.health import check_once
from releasebook.execute.lock import read_facts
from releasebook.execute.parallel import run_parallel
from releasebook.execute.runner import plain_script, run_scripts
from releasebook.inventory import Environment
from releasebook.masking import Masker, strip_controls
from releasebook.plan.facts import HostFacts
from releasebook.plan.model import Plan, PlannedStep
from releasebook.plan.ops import DEFAULT_LINES, check_role, ops_plan
from releasebook.runbooks import ops as book
from releasebook.runbooks.model import Runbook
from releasebook.transport import Result, Transport

DOCTOR_PROBE_DEADLINE = 10.0
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True)
class Row:
    """One finding: a check on a host, whether it is well, and what was seen."""

    host: str
    check: str
    ok: bool
    detail: str
    advisory: bool = False  # shown, never failing

    @property
    def status(self) -> str:
        if self.advisory:
            return "info"
        return "ok" if self.ok else "FAIL"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "check": self.check,
            "ok": self.ok,
            "status": self.status.lower(),
            "detail": self.detail,
        }


def _text(result: Result | Exception) -> str:
    if isinstance(result, Exception):
        return f"{type(result).__name__}: {result}"
    return strip_controls(result.tail(8))


def _ok(result: Result | Exception) -> bool:
    return not isinstance(result, Exception) and result.ok


def run_step(
    env: Environment,
    planned: PlannedStep,
    transports: Mapping[str, Transport],
    *,
    with_verify: bool = True,
) -> dict[str, Result | Exception]:
    """One step's commands (and verification) as one script per host, in parallel."""
    scripts = {
        w.target: plain_script(w.commands + (w.verify if with_verify else ())) for w in planned.work
    }
    timeout = max((w.timeout for w in planned.work), default=60)
    return run_scripts(scripts, transports, env.max_parallel, timeout=timeout)


def _facts(env: Environment, transports: Mapping[str, Transport]) -> dict[str, HostFacts]:
    return read_facts(env, transports)


def _rows(planned: PlannedStep, results: Mapping[str, Result | Exception]) -> list[Row]:
    return [
        Row(target, planned.step.name, _ok(result), _text(result) or "ok")
        for target, result in results.items()
    ]


# --- maintenance and the app's processes ---------------------------------------------------


def control_plan(
    env: Environment,
    runbook: Runbook,
    facts: Mapping[str, HostFacts] | None,
    role: str | None = None,
) -> Plan:
    return ops_plan(env, runbook, facts=facts, role=role)


def control(
    env: Environment,
    runbook: Runbook,
    masker: Masker,
    *,
    role: str | None = None,
    opener: Opener = open_real,
) -> list[Row]:
    """Run ``runbook`` (maintenance on/off, app status/start/stop/restart) on every host
    it targets; each host's row. Raises OperationFailed naming the hosts that failed."""
    check_role(env, role)
    with connect(env, masker, opener=opener) as transports:
        facts = _facts(env, transports)
        if runbook.name not in READ_ONLY:
            refuse_while_locked(env, facts, runbook.title.lower())
        plan = control_plan(env, runbook, facts, role)
        rows: list[Row] = []
        for planned in plan.steps:
            if not planned.work:
                continue
            results = run_step(env, planned, transports)
            rows.extend(_rows(planned, results))
            if planned.step.name == "restart_web":
                rows.extend(websocket_rows(results))
            if not all(_ok(r) for r in results.values()) and runbook.name != "app-status":
                break
    return rows


READ_ONLY = frozenset({"app-status"})


def websocket_rows(results: Mapping[str, Result | Exception]) -> list[Row]:
    """An ASGI app's web restart: how many WebSockets each host's stopping workers closed,
    shown (never failing); nothing for a WSGI app, whose workers do not say."""
    closed = {
        target: count
        for target, result in results.items()
        if not isinstance(result, Exception)
        and (count := websockets_closed(result.stdout)) is not None
    }
    return [
        Row(target, "websockets", True, f"closed {count} with 1012 (service restart)", True)
        for target, count in closed.items()
    ]


def refuse_while_locked(env: Environment, facts: Mapping[str, HostFacts], what: str) -> None:
    """A command that changes hosts does not run while a release, rollback, backup or
    restore holds the environment lock (a stale lock, whose holder is gone, does not
    count): it would race that run's restarts and switch. Nothing has been changed."""
    held = {name: f.lock for name, f in facts.items() if f.lock is not None}
    live = {name: lock for name, lock in held.items() if not lock.stale()}
    if live:
        holders = "\n  ".join(f"{name}: {lock.describe()}" for name, lock in live.items())
        raise LockHeld(
            f"{env.name} is locked, so {what} did not run and nothing was changed:\n  "
            f"{holders}\nwait for that run to end, or, once its holder is gone, "
            f"`inv unlock --env={env.name}`",
            live,
        )


def failed_rows(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if not r.ok and not r.advisory]


def raise_failed(rows: Sequence[Row], what: str) -> None:
    failed = failed_rows(rows)
    if failed:
        raise OperationFailed(
            f"{what} failed on " + ", ".join(f"{r.host} ({r.check})" for r in failed)
        )


# --- logs -------------------------------------------------------------------------------------

_STAMP = re.compile(r"^\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[,.](\d{1,6}))?")
_SINCE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, now: datetime | None = None) -> datetime | None:
    """``--since``: ``30s``, ``10m``, ``2h``, ``1d`` ago, or a time ``YYYY-MM-DD[ HH:MM[:SS]]``
    (the hosts' log times, UTC)."""
    if not value:
        return None
    now = now or datetime.now(UTC).replace(tzinfo=None)
    relative = _SINCE.fullmatch(value.strip())
    if relative:
        return now - timedelta(**{_UNITS[relative[2]]: int(relative[1])})
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(value.strip(), form)
        except ValueError:
            continue
    raise UsageError(
        f"--since {value!r}: expected 30s, 10m, 2h, 1d or a time like 2026-01-31 14:05"
    )


def stamp_of(text: str) -> datetime | None:
    match = _STAMP.match(text)
    if not match:
        return None
    micros = (match[3] or "0").ljust(6, "0")
    try:
        return datetime.strptime(f"{match[1]} {match[2]}.{micros}", "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        return None


@dataclass(frozen=True)
class LogLine:
    host: str
    file: str
    at: datetime | None
    text: str

    def show(self) -> str:
        return f"{self.host} {self.file} {self.text}"


def merge_logs(
    outputs: Mapping[str, str], *, since: datetime | None = None, lines: int | None = None
) -> list[LogLine]:
    """Every host's ``<file> <line>`` output merged by the lines' timestamps; a line
    without one (a traceback's) keeps the time of the line before it in its file."""
    keyed: list[tuple[datetime, str, str, int, LogLine]] = []
    for host in sorted(outputs):
        last: dict[str, datetime | None] = {}
        for seq, raw in enumerate(outputs[host].splitlines()):
            name, _, text = strip_controls(raw).partition(" ")
            if not name:
                continue
            at = stamp_of(text) or last.get(name)
            last[name] = at
            line = LogLine(host, name, at, text)
            if since is not None and (at is None or at < since):
                continue
            keyed.append((at or datetime.min, host, name, seq, line))
    keyed.sort(key=lambda item: item[:4])
    merged = [item[4] for item in keyed]
    return merged[-lines:] if lines else merged


def check_request_id(value: str) -> str:
    if value and not _REQUEST_ID.fullmatch(value):
        raise UsageError(f"--request-id {value!r}: expected letters, digits and . _ : - only")
    return value


def check_log_args(
    env: Environment, role: str | None, since: str, lines: int, request_id: str
) -> tuple[datetime | None, str]:
    """``app.logs``'s arguments checked before any host is reached: the time ``since``
    names, and the request id."""
    check_role(env, role)
    after = parse_since(since)
    if lines < 1:
        raise UsageError(f"--lines {lines}: expected a number of lines, 1 or more")
    return after, check_request_id(request_id)


def read_logs(
    env: Environment,
    planned: PlannedStep,
    transports: Mapping[str, Transport],
    *,
    since: datetime | None,
    lines: int,
) -> list[LogLine]:
    """Run the ``app_logs`` step on every host: their lines merged by time."""
    results = run_step(env, planned, transports)
    failed = [t for t, r in results.items() if not _ok(r)]
    if failed:
        raise OperationFailed(
            "cannot read the logs on "
            + ", ".join(f"{t}: {_text(results[t])}" for t in sorted(failed))
        )
    outputs = {t: r.stdout for t, r in results.items() if isinstance(r, Result)}
    return merge_logs(outputs, since=since, lines=lines)


def logs(
    env: Environment,
    masker: Masker,
    *,
    role: str | None = None,
    request_id: str = "",
    since: str = "",
    lines: int = DEFAULT_LINES,
    opener: Opener = open_real,
) -> list[LogLine]:
    """The newest lines of every host's process logs (by ``request_id``: its lines on every
    host, web and worker), merged by time."""
    after, request_id = check_log_args(env, role, since, lines, request_id)
    with connect(env, masker, opener=opener) as transports:
        plan = ops_plan(
            env, book.LOGS, facts={}, role=role, request_id=request_id or None, lines=lines
        )
        return read_logs(env, plan.steps[0], transports, since=after, lines=lines)


# --- a command with the release's environment ----------------------------------------------


@runtime_checkable
class Interactive(Protocol):
    def interact(self, script: str, *, pty: bool) -> int: ...


def exec_plan(
    env: Environment,
    argv: Sequence[str],
    facts: Mapping[str, HostFacts] | None,
    *,
    role: str | None = None,
    host: str = "",
) -> Plan:
    """The command on one host: ``host``, else the first of ``role`` (default: a web host,
    else the first host)."""
    check_role(env, role)
    if not argv:
        raise UsageError("say the command after `--`, e.g. `inv app.exec --env=ENV -- ls`")
    if host:
        if host not in {h.name for h in env.hosts}:
            names = ", ".join(h.name for h in env.hosts)
            raise UsageError(f"--host {host!r}: not a host of {env.name}; its hosts: {names}")
        chosen = host
    else:
        wanted = role or ("web" if env.hosts_with("web") else None)
        candidates = env.hosts_with(wanted) if wanted else env.hosts
        chosen = candidates[0].name
    return ops_plan(env, book.EXEC, facts=facts, hosts=[chosen], argv=argv)


def execute(
    env: Environment,
    masker: Masker,
    argv: Sequence[str],
    *,
    role: str | None = None,
    host: str = "",
    interactive: bool = False,
    out: Callable[[str], None] = print,
    opener: Opener = open_real,
) -> int:
    """Run ``argv`` on one host with its live release's environment; its exit status."""
    exec_plan(env, argv, None, role=role, host=host)  # bad input fails before connecting
    with connect(env, masker, opener=opener) as transports:
        facts = _facts(env, transports)
        plan = exec_plan(env, argv, facts, role=role, host=host)
        work = plan.steps[0].work[0]
        if not facts[work.target].current:
            raise OperationFailed(f"{work.target}: no live release to run the command in")
        script = plain_script(work.commands)
        transport = transports[work.target]
        if interactive and isinstance(transport, Interactive):
            return transport.interact(script, pty=True)
        result = transport.run(script, timeout=work.timeout, on_line=lambda line: out(line))
        if result.stderr.strip():
            out(result.stderr.rstrip("\n"))
        return result.exited


# --- the incident checks ---------------------------------------------------------------------


def doctor_plan(env: Environment, facts: Mapping[str, HostFacts] | None) -> Plan:
    return ops_plan(env, book.DOCTOR, facts=facts)


def _probe_rows(planned: PlannedStep) -> list[Row]:
    def probe(target: str) -> Row:
        work = planned.on(target)
        assert work is not None and work.probe is not None
        quick = replace(work.probe, deadline=min(work.probe.deadline, DOCTOR_PROBE_DEADLINE))
        ok, detail = check_once(quick)
        return Row(target, planned.step.name, ok, strip_controls(detail))

    return run_parallel([partial(probe, w.target) for w in planned.work], 8)


def _dependency_rows(target: str, result: Result | Exception) -> list[Row]:
    if isinstance(result, Result):
        for line in reversed(result.stdout.splitlines()):
            if not line.startswith("{"):
                continue
            try:
                report = json.loads(line)
                return [
                    Row(
                        target,
                        str(check["name"]),
                        bool(check["ok"]),
                        strip_controls(str(check.get("message", "")))[:300] or "ok",
                    )
                    for check in report["checks"]
                ]
            except (ValueError, KeyError, TypeError):
                break
    return [Row(target, "dependencies", False, _text(result))]


def _beat_row(results: Mapping[str, Result | Exception]) -> Row:
    running = sorted(
        t for t, r in results.items() if isinstance(r, Result) and "beat RUNNING" in r.stdout
    )
    if len(running) == 1:
        return Row(running[0], "beat", True, "exactly one beat runs")
    detail = (
        "no host runs beat" if not running else "beat runs on " + ", ".join(running) + ": twice"
    )
    return Row(",".join(running) or "-", "beat", False, detail)


def doctor(env: Environment, masker: Masker, *, opener: Opener = open_real) -> list[Row]:
    """Every check of the doctor runbook on every host it applies to: the rows. A host
    that cannot be reached is a failed ``ssh`` row naming the cause; the others are
    checked as usual."""
    unreachable: dict[str, str] = {}
    everyone = env
    with connect(env, masker, opener=opener, unreachable=unreachable) as transports:
        down = [
            Row(name, "ssh", False, strip_controls(masker.mask(cause))[:300])
            for name, cause in unreachable.items()
        ]
        if len(unreachable) == len(env.hosts):
            return _in_inventory_order(everyone, down)
        env = replace(env, hosts=tuple(h for h in env.hosts if h.name not in unreachable))
        rows = down + _doctor_rows(env, transports)
    return _in_inventory_order(everyone, rows)


def _in_inventory_order(env: Environment, rows: list[Row]) -> list[Row]:
    order = {h.name: i for i, h in enumerate(env.hosts)}
    return sorted(rows, key=lambda r: order.get(r.host, len(order)))


def _doctor_rows(env: Environment, transports: Mapping[str, Transport]) -> list[Row]:
    facts = _facts(env, transports)
    plan = doctor_plan(env, facts)
    rows = [
        Row(
            name,
            "release",
            bool(f.current),
            f"current {f.current}" if f.current else "no live release",
        )
        for name, f in facts.items()
    ]
    for planned in plan.steps:
        name = planned.step.name
        if not planned.work:
            continue
        if planned.step.http_check:
            rows.extend(_probe_rows(planned))
            continue
        results = run_step(env, planned, transports, with_verify=False)
        if name == "dependencies":
            for target, result in results.items():
                rows.extend(_dependency_rows(target, result))
        elif name == "beat":
            if env.hosts_with("beat"):
                rows.append(_beat_row(results))
        elif name == "errors":
            for target, result in results.items():
                found = result.stdout.splitlines() if isinstance(result, Result) else []
                rows.extend(
                    Row(target, name, True, strip_controls(line)[:300], advisory=True)
                    for line in found[-5:]
                )
        else:
            advisory = name in book.ADVISORY
            rows.extend(replace(row, advisory=advisory) for row in _rows(planned, results))
    # Checks run from the live release cannot run where there is none.
    bare = {name for name, f in facts.items() if not f.current}
    return [
        replace(r, detail="no live release to run it from")
        if r.host in bare and not r.ok and r.check in ("worker", "dependencies")
        else r
        for r in rows
    ]


def liveness(
    env: Environment, transports: Mapping[str, Transport], facts: Mapping[str, HostFacts]
) -> list[Row]:
    """The doctor's ``processes`` and ``readyz`` rows, for ``inv status``."""
    plan = doctor_plan(env, facts)
    rows: list[Row] = []
    for name in ("processes", "readyz"):
        planned = plan.step(name)
        if not planned.work:
            continue
        if planned.step.http_check:
            rows.extend(_probe_rows(planned))
        else:
            rows.extend(_rows(planned, run_step(env, planned, transports, with_verify=False)))
    return rows


def status(
    env: Environment, masker: Masker, *, opener: Opener = open_real
) -> tuple[dict[str, HostFacts], list[Row]]:
    """Each host's facts (``inv status``) and whether its processes and /readyz are up."""
    with connect(env, masker, opener=opener) as transports:
        facts = _facts(env, transports)
        # A host that serves no release has nothing to be up; its status says so.
        serving = tuple(h for h in env.hosts if facts.get(h.name) and facts[h.name].current)
        if not serving:
            return facts, []
        return facts, liveness(dataclasses.replace(env, hosts=serving), transports, facts)
