"""The controller's side of the gate: each host's JSON -> typed results -> one table.

``parse_gate_output`` turns the stdout of ``.releasebook/gate.py --json`` into a
:class:`HostReport`; ``format_table`` lays every host's results out for a person
(check, host, status, message, time); ``summary`` is the one line that goes with it.
The migration lint's findings and acknowledgements ride along on each report (parsed by
:mod:`releasebook.gate.lint_report`): ``format_migration_findings`` explains them in
full, ``acknowledged_record`` is what the history keeps of the acknowledgements.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from releasebook.errors import GateOutputError, LintReportError
from releasebook.gate.lint_report import (
    AcknowledgedMigration,
    MigrationFinding,
    parse_acknowledged,
    parse_findings,
)
from releasebook.gate.registry import BY_ID, CHECKS, Severity

Status = Literal["pass", "fail", "skip"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "skip")
SEVERITIES: tuple[Severity, ...] = ("error", "warning")
GATE_ROW = "gate"  # the check column of a host whose gate produced no report


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    id: str
    title: str
    severity: Severity
    status: Status
    message: str
    duration_ms: float

    @property
    def blocking(self) -> bool:
        return self.status == "fail" and self.severity == "error"

    @property
    def not_checked(self) -> bool:
        """Not run because what it needs failed (settings did not load): that failure
        is the one to count, not this."""
        return self.status == "fail" and self.message.startswith("not checked")

    @property
    def label(self) -> str:
        if self.not_checked:
            return "not checked"
        if self.status == "fail":
            return "FAIL" if self.severity == "error" else "warn"
        return self.status


@dataclass(frozen=True, kw_only=True)
class HostReport:
    host: str
    ok: bool
    results: tuple[CheckResult, ...] = ()
    pending_migrations: tuple[str, ...] = ()
    acknowledged_migrations: tuple[AcknowledgedMigration, ...] = ()
    migration_findings: tuple[MigrationFinding, ...] = ()
    error: str | None = None  # set when the gate produced no usable report

    @property
    def blocking(self) -> tuple[CheckResult, ...]:
        """The failed error checks; those not checked only when nothing else failed."""
        failed = tuple(r for r in self.results if r.blocking)
        return tuple(r for r in failed if not r.not_checked) or failed

    @property
    def not_checked(self) -> tuple[CheckResult, ...]:
        counted = self.blocking
        return tuple(r for r in self.results if r.not_checked and r not in counted)

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        return tuple(
            r
            for r in self.results
            if r.status == "fail" and r.severity == "warning" and not r.not_checked
        )

    @property
    def skipped(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "skip")


def host_failed(host: str, reason: str) -> HostReport:
    """A host whose gate did not run or printed no report (counts as a failure)."""
    return HostReport(host=host, ok=False, error=reason)


def _field(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise GateOutputError(f"{where}: {key!r} should be {kind.__name__}, got {value!r:.60}")
    return value


def _result(data: Any, where: str) -> CheckResult:
    if not isinstance(data, dict):
        raise GateOutputError(f"{where}: each result should be an object")
    severity = _field(data, "severity", str, where)
    status = _field(data, "status", str, where)
    if severity not in SEVERITIES:
        raise GateOutputError(f"{where}: unknown severity {severity!r}")
    if status not in STATUSES:
        raise GateOutputError(f"{where}: unknown status {status!r}")
    return CheckResult(
        id=_field(data, "id", str, where),
        title=_field(data, "title", str, where),
        severity=cast(Severity, severity),
        status=cast(Status, status),
        message=_field(data, "message", str, where),
        duration_ms=_field(data, "duration_ms", float, where),
    )


def _document(stdout: str) -> Any:
    """The JSON document: the whole output, or else its last line that is an object."""
    try:
        return json.loads(stdout)
    except ValueError:
        pass
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    raise GateOutputError("no JSON report in the gate's output")


def parse_gate_output(host: str, stdout: str) -> HostReport:
    """Parse one host's gate output; GateOutputError (naming the host) when malformed."""
    try:
        data = _document(stdout)
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise GateOutputError("expected an object with a 'results' list")
        results = tuple(_result(item, f"results[{i}]") for i, item in enumerate(data["results"]))
        ok = _field(data, "ok", bool, "report")
        pending = data.get("pending_migrations", [])
        if not isinstance(pending, list) or not all(isinstance(p, str) for p in pending):
            raise GateOutputError("'pending_migrations' should be a list of strings")
        # Both absent from gates older than the migration lint.
        acks = parse_acknowledged(data.get("acknowledged_migrations", []))
        findings = parse_findings(data.get("migration_findings", []))
    except (GateOutputError, LintReportError) as exc:
        raise GateOutputError(f"{host}: gate report: {exc}") from None
    if ok != (not any(r.blocking for r in results)):
        raise GateOutputError(f"{host}: gate report: 'ok' disagrees with its results")
    return HostReport(
        host=host,
        ok=ok,
        results=results,
        pending_migrations=tuple(pending),
        acknowledged_migrations=acks,
        migration_findings=findings,
    )


def acknowledged_record(reports: Sequence[HostReport]) -> list[dict[str, Any]]:
    """The acknowledged migrations, each once (every host lints the same plan), as the
    history keeps them next to the gate's ``skipped``."""
    seen: dict[tuple[str, str, str], AcknowledgedMigration] = {}
    for report in reports:
        for ack in report.acknowledged_migrations:
            seen.setdefault((ack.migration, ack.by, ack.reason), ack)
    return [ack.record() for ack in seen.values()]


def format_migration_findings(reports: Sequence[HostReport]) -> str:
    """Each migration finding once, in full (the table cuts long messages): what is
    unsafe, why, and the expand/contract alternative; acknowledged ones in a line each."""
    seen: dict[tuple[str, str, int, str], MigrationFinding] = {}
    for report in reports:
        for finding in report.migration_findings:
            key = (finding.check, finding.migration, finding.operation, finding.kind)
            seen.setdefault(key, finding)
    lines: list[str] = []
    for f in (f for f in seen.values() if f.acknowledged_by is None):
        lines += [f"{f.check} {f.where}", f"  why: {f.problem}", f"  instead: {f.alternative}"]
        lines += [f"  note: {f.note}"] if f.note else []
    lines += [
        f"{f.check} {f.where}: acknowledged ({f.acknowledged_by}: {f.reason})"
        for f in seen.values()
        if f.acknowledged_by is not None
    ]
    return "".join(f"{line}\n" for line in lines)


def gate_passed(reports: Sequence[HostReport]) -> bool:
    return bool(reports) and all(r.ok and r.error is None for r in reports)


def _duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    lines = textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1].rstrip() + "…"
    return lines


def _order(check_id: str) -> int:
    if check_id == GATE_ROW:
        return -1
    return next((i for i, c in enumerate(CHECKS) if c.id == check_id), len(CHECKS))


def format_table(
    reports: Sequence[HostReport],
    *,
    width: int = 100,
    max_lines: int = 3,
    problems_only: bool = False,
) -> str:
    """Columns check, host, status, message, time; messages wrapped to ``width``."""
    rows: list[tuple[int, int, str, str, str, str, str]] = []
    for h, report in enumerate(reports):
        if report.error is not None:
            rows.append((_order(GATE_ROW), h, GATE_ROW, report.host, "FAIL", report.error, ""))
        for r in report.results:
            if problems_only and r.status == "pass":
                continue
            rows.append(
                (_order(r.id), h, r.id, report.host, r.label, r.message, _duration(r.duration_ms))
            )
    rows.sort(key=lambda row: (row[0], row[1]))
    header = ("check", "host", "status", "message", "time")
    check_w = max([len(header[0])] + [len(row[2]) for row in rows])
    host_w = max([len(header[1])] + [len(row[3]) for row in rows])
    status_w = max([len(header[2])] + [len(row[4]) for row in rows])
    time_w = max([len(header[4])] + [len(row[6]) for row in rows])
    message_w = max(20, width - check_w - host_w - status_w - time_w - 8)

    def line(check: str, host: str, status: str, message: str, time: str) -> str:
        text = (
            f"{check:<{check_w}}  {host:<{host_w}}  {status:<{status_w}}  "
            f"{message:<{message_w}}  {time:>{time_w}}"
        )
        return text.rstrip()

    out = [
        line(*header),
        line("-" * check_w, "-" * host_w, "-" * status_w, "-" * message_w, "-" * time_w),
    ]
    for _order_key, _host_index, check, host, status, message, time in rows:
        wrapped = _wrap(message, message_w, max_lines)
        out.append(line(check, host, status, wrapped[0], time))
        out.extend(line("", "", "", more, "") for more in wrapped[1:])
    return "\n".join(out) + "\n"


def summary(reports: Sequence[HostReport]) -> str:
    """One line: passed or failed, naming each blocking check and its hosts."""
    failing: dict[str, list[str]] = {}
    for report in reports:
        if report.error is not None:
            failing.setdefault(GATE_ROW, []).append(report.host)
        for r in report.blocking:
            failing.setdefault(r.id, []).append(report.host)
    warnings = sum(len(r.warnings) for r in reports)
    skipped = sum(len(r.skipped) for r in reports)
    unchecked = sum(len(r.not_checked) for r in reports)
    extra = [f"{warnings} warning(s)"] if warnings else []
    extra += [f"{skipped} skipped"] if skipped else []
    extra += [f"{unchecked} not checked"] if unchecked else []
    tail = f" ({', '.join(extra)})" if extra else ""
    if not reports:
        return "readiness gate: no host reported"
    if not failing:
        return f"readiness gate passed on {len(reports)} host(s){tail}"

    def name(check_id: str) -> str:
        if check_id == GATE_ROW:
            return "no gate report from"
        title = BY_ID[check_id].title if check_id in BY_ID else "unknown check"
        return f"{check_id} ({title}) on"

    named = "; ".join(
        f"{name(check_id)} {', '.join(hosts)}"
        for check_id, hosts in sorted(failing.items(), key=lambda item: _order(item[0]))
    )
    return f"readiness gate failed: {named}{tail}"
