"""What a host's history says about the schema, for a plain rollback: only what it can
vouch for (records read from a host are untrusted; anything unexpected means ask)."""

from __future__ import annotations

from typing import Any

import pytest

from releasebook.deploy.schema_history import left_by, schema_now, unchanged_for

A, B, C = "20260101-000000-001", "20260101-000000-002", "20260101-000000-003"
OLD = {"notes": ["0001_initial"]}
NEW = {"notes": ["0002_tag"]}


def released(release: str, leaves: Any) -> dict[str, Any]:
    return {
        "action": "release",
        "release": release,
        "outcome": "released",
        "migrations": {"applied": [], "leaves": leaves},
    }


def rolled_back(release: str, schema: Any) -> dict[str, Any]:
    return {"action": "rollback", "release": release, "outcome": "rolled_back_to", "schema": schema}


UNREADABLE = {"leaves": OLD, "leaves_error": "x"}
KEPT_NOTHING = {"compared": True, "kept": [], "not_on_disk": []}


def test_the_live_releases_own_record_is_the_schema_now() -> None:
    history = [released(A, OLD), released(B, OLD)]
    assert schema_now(history) == (B, OLD)
    assert left_by(history, A) == OLD
    assert unchanged_for(history, B, A)


def test_a_rollback_that_kept_nothing_leaves_the_schema_of_the_release_it_went_to() -> None:
    history = [released(A, OLD), released(B, OLD), released(C, OLD), rolled_back(B, KEPT_NOTHING)]
    assert schema_now(history) == (B, OLD)
    assert unchanged_for(history, B, A)
    unapplied = {"compared": True, "unapplied": ["notes.0002_tag"], "not_on_disk": []}
    assert schema_now([released(A, OLD), released(B, NEW), rolled_back(A, unapplied)]) == (A, OLD)


@pytest.mark.parametrize(
    "history",
    [
        # C's migrations stayed applied when it was rolled back: B's record is not the schema.
        [released(A, OLD), released(B, OLD), released(C, NEW),
         rolled_back(B, {"compared": True, "kept": ["notes.0002_tag"], "not_on_disk": []})],
        [released(A, OLD), released(B, OLD), rolled_back(B, {"compared": False, "reason": "x"})],
        [released(A, OLD), released(B, OLD), {**released(C, NEW), "outcome": "rolled_back"}],
        [released(A, OLD), released(B, OLD), {"action": "restore", "release": "", "outcome": "ok"}],
        [released(A, OLD), released(B, {"notes": "0001_initial"})],
        [released(A, OLD), {**released(B, OLD), "migrations": UNREADABLE}],
        [released(A, OLD)],  # B, live, has no record in the lines read
    ],
)  # fmt: skip
def test_what_the_history_cannot_vouch_for_is_asked(history: list[dict[str, Any]]) -> None:
    assert not unchanged_for(history, B, A)


def test_a_different_schema_or_another_live_release_is_asked() -> None:
    assert not unchanged_for([released(A, OLD), released(B, NEW)], B, A)
    assert not unchanged_for([released(A, OLD), released(B, OLD)], C, A)  # C is live
    assert not unchanged_for([released(A, OLD), released(B, OLD)], None, A)
    assert not unchanged_for([released(B, OLD)], B, A)  # A's record is gone


def test_neutral_actions_are_passed_over() -> None:
    history = [
        released(A, OLD),
        released(B, OLD),
        {"action": "backup", "release": "", "outcome": "backed_up"},
        {"action": "unlock", "release": "", "outcome": "unlocked"},
    ]
    assert unchanged_for(history, B, A)
