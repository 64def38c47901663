"""The controller's parsing of what the host-side migration scripts print: the gate's
acknowledged migrations and migration_state.py's reports, taken as untrusted input."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from releasebook.errors import GateOutputError, MigrationStateError
from releasebook.gate.migration_report import (
    UnapplyCommand,
    parse_leaves,
    parse_rollback_plan,
)
from releasebook.gate.report import (
    acknowledged_record,
    format_migration_findings,
    parse_gate_output,
)


def plan_doc(**changes: Any) -> str:
    doc: dict[str, Any] = {
        "ok": True,
        "version": 1,
        "command": "plan-to",
        "database": "default",
        "target": "/srv/app/releases/20250101-000000-001",
        "reversible": True,
        "newer": [
            {
                "migration": "shop.0003_x",
                "app": "shop",
                "name": "0003_x",
                "reversible": True,
                "irreversible_operations": [],
            }
        ],
        "commands": [{"app": "shop", "target": "0002_y", "argv": ["migrate", "shop", "0002_y"]}],
        "not_on_disk": [],
    }
    return "noise from the launcher\n" + json.dumps(doc | changes) + "\n"


def test_a_rollback_plan_is_rebuilt_from_validated_names() -> None:
    plan = parse_rollback_plan("web1", plan_doc())
    assert plan.reversible
    assert [m.migration for m in plan.newer] == ["shop.0003_x"]
    assert plan.commands == (UnapplyCommand(app="shop", target="0002_y"),)
    # argv comes from the validated app and target, never from the host's own argv
    hostile = plan_doc(
        commands=[{"app": "shop", "target": "0002_y", "argv": ["migrate", "$(reboot)"]}]
    )
    assert parse_rollback_plan("web1", hostile).commands[0].argv == ("migrate", "shop", "0002_y")


def test_an_operation_listed_as_irreversible_wins_over_the_flag() -> None:
    newer = [
        {
            "migration": "shop.0004_z",
            "app": "shop",
            "name": "0004_z",
            "reversible": True,
            "irreversible_operations": [
                {"operation": 2, "kind": "RunSQL", "description": "Raw SQL\x1b[2J operation"}
            ],
        }
    ]
    plan = parse_rollback_plan("web1", plan_doc(newer=newer))
    assert not plan.reversible
    assert plan.irreversible[0].irreversible_operations == ("2 RunSQL (Raw SQL?[2J operation)",)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"ok": False, "error": "database default: \x1b[31mrefused"},
            "database default: ?[31mrefused",
        ),
        ({"command": "leaves"}, "not its report"),
        ({"newer": "all of them"}, "expected 'target', 'newer'"),
        (
            {"commands": [{"app": "shop; rm -rf /", "target": "0002_y"}]},
            "commands[0]: expected an app label",
        ),
        ({"commands": [{"app": "shop", "target": "../0002"}]}, "a migration name or zero"),
        ({"commands": []}, "do not cover the newer migrations' apps"),
        ({"not_on_disk": ["shop/0004"]}, "not_on_disk: expected app.migration"),
    ],
)
def test_bad_plans_are_refused_naming_the_host(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(
        MigrationStateError, match=f"^web1: migration_state.py plan-to: .*{re.escape(problem)}"
    ):
        parse_rollback_plan("web1", plan_doc(**changes))


def test_leaves_are_parsed_and_checked() -> None:
    doc = {
        "ok": True,
        "version": 1,
        "command": "leaves",
        "leaves": {"shop": ["0003_x"], "auth": ["0012_y"]},
    }
    assert parse_leaves("web1", json.dumps(doc)) == {"auth": ("0012_y",), "shop": ("0003_x",)}
    with pytest.raises(MigrationStateError, match="expected a migration name"):
        parse_leaves("web1", json.dumps(doc | {"leaves": {"shop": ["0003 x"]}}))
    with pytest.raises(MigrationStateError, match="no JSON report"):
        parse_leaves("web1", "Traceback (most recent call last):\n")


def gate_doc(acknowledged: Any) -> str:
    return json.dumps(
        {"ok": True, "version": 1, "results": [], "acknowledged_migrations": acknowledged}
    )


def test_acknowledged_migrations_in_gate_reports() -> None:
    ack = {
        "migration": "shop.0003_x",
        "by": "inventory",
        "reason": "unread\x07 since 41",
        "checks": ["RB-MIG-001"],
        "operations": [1],
    }
    first = parse_gate_output("web1", gate_doc([ack]))
    second = parse_gate_output("web2", gate_doc([ack]))
    assert first.acknowledged_migrations[0].reason == "unread? since 41"
    assert acknowledged_record([first, second]) == [ack | {"reason": "unread? since 41"}]
    assert (
        parse_gate_output("web1", json.dumps({"ok": True, "results": []})).acknowledged_migrations
        == ()
    )
    for bad, problem in (
        (ack | {"by": "someone"}, "'by' should be inventory or migration"),
        (ack | {"checks": ["RB-NOPE-001"]}, "'checks' should list readiness check ids"),
        (ack | {"migration": "shop/0003"}, "'migration' should be app.migration"),
        (ack | {"operations": [0]}, "'operations' should list operation numbers"),
    ):
        with pytest.raises(GateOutputError, match=re.escape(problem)):
            parse_gate_output("web1", gate_doc([bad]))


def test_findings_from_a_host_are_checked_and_made_printable() -> None:
    finding = {
        "check": "RB-MIG-001",
        "migration": "shop.0003_x",
        "app": "shop",
        "name": "0003_x",
        "operation": 2,
        "kind": "RemoveField",
        "description": "Remove field sku from item",
        "problem": "drops column shop_item.sku\x1b]0;owned\x07",
        "alternative": "keep it one more release",
        "acknowledged": None,
        "note": "",
    }
    doc = json.dumps({"ok": True, "results": [], "migration_findings": [finding]})
    (parsed,) = parse_gate_output("web1", doc).migration_findings
    assert parsed.problem == "drops column shop_item.sku?]0;owned?"
    assert format_migration_findings([parse_gate_output("web1", doc)]) == (
        "RB-MIG-001 shop.0003_x operation 2 RemoveField (Remove field sku from item)\n"
        "  why: drops column shop_item.sku?]0;owned?\n"
        "  instead: keep it one more release\n"
    )
    for bad, problem in (
        (finding | {"check": "RB-NOPE-001"}, "'check' should be a readiness check id"),
        (finding | {"operation": "2"}, "'operation' should be an operation number"),
        (finding | {"acknowledged": {"by": "me"}}, "'acknowledged' should be null or say by whom"),
        (finding | {"problem": None}, "'problem' should be a string"),
    ):
        with pytest.raises(GateOutputError, match=re.escape(problem)):
            parse_gate_output(
                "web1", json.dumps({"ok": True, "results": [], "migration_findings": [bad]})
            )
