"""What a host's history says about the database's schema: the applied leaf migrations
each release left (its ``migrations.leaves``, recorded after ``migrate``), and whether
the schema is still what the live release left.

A plain rollback (no ``--migrate``) only reports which newer migrations stay applied; where
the history shows the live release's schema unchanged since it was recorded and equal to
what the release to go back to left, nothing newer is applied and the schema step need
not boot Django to say so. Anything the history cannot vouch for (a failed run, a
restore, an action it does not know, a record it cannot read) means: ask the database.
History lines come from a host: they are untrusted, and only compared here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from releasebook.plan.facts import Record

Leaves = dict[str, list[str]]
# Actions that never change the schema.
NEUTRAL = ("backup", "restore_drill", "unlock")


def _leaves(record: Record) -> Leaves | None:
    migrations = record.get("migrations")
    if not isinstance(migrations, dict) or "leaves_error" in migrations:
        return None
    leaves = migrations.get("leaves")
    if not isinstance(leaves, dict):
        return None
    for app, names in leaves.items():
        if not isinstance(app, str) or not isinstance(names, list):
            return None
        if not all(isinstance(name, str) for name in names):
            return None
    return {app: list(names) for app, names in leaves.items()}


def left_by(history: Sequence[Record], release: str) -> Leaves | None:
    """The leaves ``release`` left when it was released (its newest such record)."""
    for record in reversed(history):
        if (
            record.get("action") == "release"
            and record.get("release") == release
            and record.get("outcome") == "released"
        ):
            return _leaves(record)
    return None


def _nothing_kept(schema: Any) -> bool:
    """A rollback's ``schema`` record that left the database as the release it went to
    expects: nothing newer kept (or all of it unapplied), nothing unknown applied."""
    return (
        isinstance(schema, dict)
        and schema.get("compared") is True
        and schema.get("not_on_disk") == []
        and (schema.get("kept") == [] or isinstance(schema.get("unapplied"), list))
    )


def schema_now(history: Sequence[Record]) -> tuple[str, Leaves] | None:
    """The release whose schema the database has now, and its leaves, as far as the
    history can tell (newest record first); None where it cannot."""
    for record in reversed(history):
        action = record.get("action")
        if action in NEUTRAL:
            continue
        release = record.get("release")
        if not isinstance(release, str):
            return None
        if action == "release" and record.get("outcome") == "released":
            leaves = _leaves(record)
            return (release, leaves) if leaves is not None else None
        if (
            action == "rollback"
            and record.get("outcome") == "rolled_back_to"
            and _nothing_kept(record.get("schema"))
        ):
            leaves = left_by(history, release)
            return (release, leaves) if leaves is not None else None
        return None
    return None


def unchanged_for(history: Sequence[Record], live: str | None, target: str) -> bool:
    """The history shows the database with the schema ``live`` left, and ``target``
    left the same one: going back to it leaves no newer migration applied."""
    now = schema_now(history)
    if now is None or live is None or now[0] != live:
        return False
    before = left_by(history, target)
    return before is not None and before == now[1]
