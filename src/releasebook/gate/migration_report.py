"""The controller's side of ``.releasebook/migration_state.py``: its JSON -> typed values.

``parse_leaves`` gives each app's applied leaf migrations (what a release records in its
history after ``migrate``); ``parse_rollback_plan`` what going back to an older release
would unapply, in order, and whether it can. Output read from a host is untrusted: every
name must look like a Django app label or migration name, texts lose their control
characters, and the ``migrate`` commands are rebuilt from the validated names rather
than taken from the host.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from releasebook.errors import MigrationStateError

APP_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MIGRATION_NAME = re.compile(r"^[A-Za-z0-9_]+$")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_TEXT = 300


@dataclass(frozen=True, kw_only=True)
class NewerMigration:
    """An applied migration the older release does not have."""

    app: str
    name: str
    reversible: bool
    irreversible_operations: tuple[str, ...]  # "1 RunPython (Raw Python operation)"

    @property
    def migration(self) -> str:
        return f"{self.app}.{self.name}"


@dataclass(frozen=True, kw_only=True)
class UnapplyCommand:
    """``manage.py migrate <app> <target>``, run from the newer release."""

    app: str
    target: str  # a migration name of the app, or "zero"

    @property
    def argv(self) -> tuple[str, str, str]:
        return ("migrate", self.app, self.target)


@dataclass(frozen=True, kw_only=True)
class RollbackPlan:
    target: str  # the older release's directory, as the host printed it
    newer: tuple[NewerMigration, ...]  # in the order they must be unapplied
    commands: tuple[UnapplyCommand, ...]
    not_on_disk: tuple[str, ...]  # applied; neither release has their files

    @property
    def reversible(self) -> bool:
        return all(m.reversible for m in self.newer) and not self.not_on_disk

    @property
    def irreversible(self) -> tuple[NewerMigration, ...]:
        return tuple(m for m in self.newer if not m.reversible)


def printable(text: str) -> str:
    """Text from a host, safe to print: no control characters, bounded length."""
    cleaned = CONTROL.sub("?", text)
    return cleaned if len(cleaned) <= MAX_TEXT else cleaned[: MAX_TEXT - 1] + "…"


def _document(host: str, stdout: str, command: str) -> dict[str, Any]:
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    try:
        data = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise MigrationStateError(
            f"{host}: migration_state.py {command}: no JSON report in its output"
        ) from None
    if not isinstance(data, dict) or data.get("command") != command:
        raise MigrationStateError(f"{host}: migration_state.py {command}: not its report")
    if data.get("ok") is not True:
        error = data.get("error")
        reason = printable(error) if isinstance(error, str) else "failed without a reason"
        raise MigrationStateError(f"{host}: migration_state.py {command}: {reason}")
    return data


def _name(value: Any, pattern: re.Pattern[str], what: str, where: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise MigrationStateError(f"{where}: expected {what}, got {printable(repr(value))}")
    return value


def _migration(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise MigrationStateError(f"{where}: expected app.migration")
    app, _, name = value.partition(".")
    _name(app, APP_LABEL, "app.migration", where)
    return f"{app}.{_name(name, MIGRATION_NAME, 'app.migration', where)}"


def parse_leaves(host: str, stdout: str, command: str = "leaves") -> dict[str, tuple[str, ...]]:
    """``leaves --json`` (or ``migrate --json``) -> each app's applied leaf migration(s),
    apps sorted."""
    where = f"{host}: migration_state.py {command}"
    leaves = _document(host, stdout, command).get("leaves")
    if not isinstance(leaves, dict):
        raise MigrationStateError(f"{where}: 'leaves' should map apps to migration names")
    out: dict[str, tuple[str, ...]] = {}
    for app in sorted(leaves):
        names = leaves[app]
        _name(app, APP_LABEL, "an app label", where)
        if not isinstance(names, list) or not names:
            raise MigrationStateError(f"{where}: {app}: expected a list of migration names")
        out[app] = tuple(_name(n, MIGRATION_NAME, "a migration name", where) for n in names)
    return out


def _newer(data: Any, where: str) -> NewerMigration:
    if not isinstance(data, dict):
        raise MigrationStateError(f"{where}: each newer migration should be an object")
    app = _name(data.get("app"), APP_LABEL, "an app label", where)
    name = _name(data.get("name"), MIGRATION_NAME, "a migration name", where)
    operations = data.get("irreversible_operations")
    reversible = data.get("reversible")
    if not isinstance(operations, list) or not isinstance(reversible, bool):
        raise MigrationStateError(f"{where}: expected 'reversible' and 'irreversible_operations'")
    described = []
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("operation"), int):
            raise MigrationStateError(f"{where}: each irreversible operation should be an object")
        kind, text = op.get("kind"), op.get("description")
        described.append(
            printable(f"{op['operation']} {kind if isinstance(kind, str) else '?'}")
            + (f" ({printable(text)})" if isinstance(text, str) else "")
        )
    return NewerMigration(
        app=app,
        name=name,
        # Irreversible when either side says so.
        reversible=reversible and not described,
        irreversible_operations=tuple(described),
    )


def parse_rollback_plan(host: str, stdout: str) -> RollbackPlan:
    """``plan-to DIR --json`` -> what going back to the release in DIR would unapply."""
    where = f"{host}: migration_state.py plan-to"
    data = _document(host, stdout, "plan-to")
    newer, commands, missing = data.get("newer"), data.get("commands"), data.get("not_on_disk")
    target = data.get("target")
    if not (
        isinstance(newer, list)
        and isinstance(commands, list)
        and isinstance(missing, list)
        and isinstance(target, str)
    ):
        raise MigrationStateError(
            f"{where}: expected 'target', 'newer', 'commands' and 'not_on_disk'"
        )
    migrations = tuple(_newer(item, f"{where}: newer[{i}]") for i, item in enumerate(newer))
    unapply = []
    for i, item in enumerate(commands):
        here = f"{where}: commands[{i}]"
        if not isinstance(item, dict):
            raise MigrationStateError(f"{here}: expected an object")
        app = _name(item.get("app"), APP_LABEL, "an app label", here)
        unapply.append(
            UnapplyCommand(
                app=app,
                target=_name(item.get("target"), MIGRATION_NAME, "a migration name or zero", here),
            )
        )
    apps = {m.app for m in migrations}
    if {c.app for c in unapply} != apps:
        raise MigrationStateError(f"{where}: its commands do not cover the newer migrations' apps")
    return RollbackPlan(
        target=printable(target),
        newer=migrations,
        commands=tuple(unapply),
        not_on_disk=tuple(_migration(m, f"{where}: not_on_disk") for m in missing),
    )
