"""The controller's side of the gate's migration lint: the ``migration_findings`` and
``acknowledged_migrations`` of a gate report, parsed as untrusted input (names checked,
texts made printable). :mod:`releasebook.gate.report` attaches them to each host's
report; an older gate without the lint simply has neither."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from releasebook.errors import LintReportError
from releasebook.gate.migration_report import APP_LABEL, MIGRATION_NAME, printable
from releasebook.gate.registry import BY_ID

ACK_BY = ("inventory", "migration")


@dataclass(frozen=True, kw_only=True)
class AcknowledgedMigration:
    """A migration whose RB-MIG findings passed because it was acknowledged: in the
    inventory (``by`` "inventory") or in its module (``by`` "migration")."""

    migration: str
    by: str
    reason: str
    checks: tuple[str, ...]
    operations: tuple[int, ...]

    def record(self) -> dict[str, Any]:
        """As the history keeps it."""
        return {
            "migration": self.migration,
            "by": self.by,
            "reason": self.reason,
            "checks": list(self.checks),
            "operations": list(self.operations),
        }


@dataclass(frozen=True, kw_only=True)
class MigrationFinding:
    """One unsafe operation of a pending migration, acknowledged or not."""

    check: str
    migration: str
    operation: int  # 1-based position in the migration's operations
    kind: str  # RemoveField, SeparateDatabaseAndState/RemoveField, ...
    description: str
    problem: str
    alternative: str
    acknowledged_by: str | None
    reason: str | None
    note: str  # why an acknowledgement in the migration module did not count

    @property
    def where(self) -> str:
        return f"{self.migration} operation {self.operation} {self.kind} ({self.description})"


def _text(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise LintReportError(f"{where}: {key!r} should be a string")
    return printable(value)


def _migration(data: dict[str, Any], where: str) -> str:
    value = data.get("migration")
    app, _, name = value.partition(".") if isinstance(value, str) else ("", "", "")
    if not (APP_LABEL.fullmatch(app) and MIGRATION_NAME.fullmatch(name)):
        raise LintReportError(f"{where}: 'migration' should be app.migration")
    return f"{app}.{name}"


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_id(data: dict[str, Any], where: str) -> str:
    check = data.get("check")
    if not isinstance(check, str) or check not in BY_ID:
        raise LintReportError(f"{where}: 'check' should be a readiness check id")
    return check


def _acknowledged(data: Any, where: str) -> AcknowledgedMigration:
    if not isinstance(data, dict):
        raise LintReportError(f"{where}: each acknowledged migration should be an object")
    by = data.get("by")
    if by not in ACK_BY:
        raise LintReportError(f"{where}: 'by' should be inventory or migration")
    checks, operations = data.get("checks"), data.get("operations")
    if not isinstance(checks, list) or not all(c in BY_ID for c in checks):
        raise LintReportError(f"{where}: 'checks' should list readiness check ids")
    if not isinstance(operations, list) or not all(_count(n) for n in operations):
        raise LintReportError(f"{where}: 'operations' should list operation numbers")
    return AcknowledgedMigration(
        migration=_migration(data, where),
        by=str(by),
        reason=_text(data, "reason", where),
        checks=tuple(checks),
        operations=tuple(operations),
    )


def _finding(data: Any, where: str) -> MigrationFinding:
    if not isinstance(data, dict):
        raise LintReportError(f"{where}: each finding should be an object")
    ack = data.get("acknowledged")
    if ack is not None and not (isinstance(ack, dict) and ack.get("by") in ACK_BY):
        raise LintReportError(f"{where}: 'acknowledged' should be null or say by whom")
    if not _count(data.get("operation")):
        raise LintReportError(f"{where}: 'operation' should be an operation number")
    return MigrationFinding(
        check=_check_id(data, where),
        migration=_migration(data, where),
        operation=data["operation"],
        kind=_text(data, "kind", where),
        description=_text(data, "description", where),
        problem=_text(data, "problem", where),
        alternative=_text(data, "alternative", where),
        acknowledged_by=str(ack["by"]) if ack else None,
        reason=_text(ack, "reason", where) if ack else None,
        note=_text(data, "note", where) if "note" in data else "",
    )


def parse_acknowledged(items: Any) -> tuple[AcknowledgedMigration, ...]:
    if not isinstance(items, list):
        raise LintReportError("'acknowledged_migrations' should be a list")
    return tuple(
        _acknowledged(item, f"acknowledged_migrations[{i}]") for i, item in enumerate(items)
    )


def parse_findings(items: Any) -> tuple[MigrationFinding, ...]:
    if not isinstance(items, list):
        raise LintReportError("'migration_findings' should be a list")
    return tuple(_finding(item, f"migration_findings[{i}]") for i, item in enumerate(items))
