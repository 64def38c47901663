"""Reading and formatting the hosts' history.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from releasebook.deploy.history import format_history, read_history
from releasebook.inventory import load_environment
from releasebook.plan.facts import parse_probe
from releasebook.transport import LocalTransport

RELEASED: dict[str, Any] = {
    "action": "release",
    "release": "20240501-120000-000",
    "git_sha": "0123456789abcdef0123456789abcdef01234567",
    "by": "alice@laptop",
    "at": "2024-05-01T12:00:00Z",
    "outcome": "released",
    "duration": 125.4,
    "steps": {"build": 61.0, "upload": 3.5, "migrate": 12.25, "verify": 4.0, "switch": 0.1},
}
FAILED: dict[str, Any] = {
    **RELEASED,
    "release": "20240502-090000-000",
    "git_sha": "fedcba9876543210fedcba9876543210fedcba98",
    "at": "2024-05-02T09:00:00Z",
    "outcome": "rolled_back",
    "duration": 40,
    "reason": "step 'verify' failed on web2\n--- web2 (exit 1):\n    timeout",
}
UNLOCK: dict[str, Any] = {
    "action": "unlock",
    "by": "bob@ci",
    "at": "2024-05-03T08:00:00Z",
    "outcome": "unlocked",
    "holder": {
        "user": "alice",
        "controller": "laptop",
        "pid": 4242,
        "command": "release",
        "release": "20240502-090000-000",
        "started": "2024-05-02T09:00:00Z",
    },
}
HISTORIES = {
    "web1": [RELEASED, {**FAILED, "outcome": "aborted"}, UNLOCK],
    "web2": [RELEASED, FAILED],
}


def test_merged_one_row_per_run_newest_first() -> None:
    text = format_history(HISTORIES)
    lines = text.splitlines()
    assert lines[0].split() == [
        "when",
        "who",
        "action",
        "release",
        "sha",
        "result",
        "duration",
        "slowest",
        "steps",
        "hosts",
    ]
    rows = [line for line in lines[1:] if not line.startswith("    ")]
    assert [row.split()[0] for row in rows] == [
        "2024-05-03T08:00:00Z",
        "2024-05-02T09:00:00Z",
        "2024-05-01T12:00:00Z",
    ]
    unlock, failed, released = rows
    assert "unlock" in unlock and "unlocked" in unlock and unlock.endswith("web1")
    assert "web1 aborted, web2 rolled_back" in failed and "fedcba9876 " in failed
    assert "40.0s" in failed
    assert "0123456789 " in released and "0123456789a" not in released
    assert "2m05s" in released and released.endswith("all")
    assert "build 1m01s, migrate 12.2s, verify 4.0s" in released
    assert "    reason: step 'verify' failed on web2" in lines
    assert (
        "    broke the lock of alice on laptop (pid 4242, `release` of 20240502-090000-000, "
        "since 2024-05-02T09:00:00Z)"
    ) in lines


def test_per_host_tables() -> None:
    text = format_history(HISTORIES, merged=False, slowest=1)
    web1, web2 = text.split("\n\n")
    assert web1.startswith("web1:\nwhen") and web2.startswith("web2:\nwhen")
    assert "aborted" in web1 and "rolled_back" not in web1
    assert "rolled_back" in web2 and "unlock" not in web2
    assert "build 1m01s" in web2 and "migrate" not in web2
    assert format_history({"web1": []}) == "no history yet"


def test_every_step_in_the_runbook_order() -> None:
    assert "steps:" not in format_history(HISTORIES)
    lines = format_history(HISTORIES, steps=True).splitlines()
    released = lines.index(next(line for line in lines if line.startswith("2024-05-01")))
    assert lines[released + 1] == (
        "    steps: build 1m01s, upload 3.5s, migrate 12.2s, switch 0.1s, verify 4.0s"
    )
    assert not any("steps:" in line for line in lines if "unlock" in line)


def test_read_history_tails_each_host(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "app").mkdir(parents=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("")
    inventory = root / "inventories" / "here.yml"
    inventory.parent.mkdir()
    inventory.write_text(
        "transport: local\n"
        'app: {source: app, settings: config.settings, wsgi: "config.wsgi:application"}\n'
        "deploy: {path: var/app}\n"
        "health: {host_header: localhost}\n"
        "hosts: {local: {roles: [web, migrate]}}\n"
    )
    env = load_environment("here", root)
    transports = {"local": LocalTransport("local", root)}
    assert read_history(env, transports) == {"local": []}

    path = root / "var" / "app" / ".releasebook" / "history.jsonl"
    path.parent.mkdir(parents=True)
    lines = [json.dumps(RELEASED), "not json", json.dumps(FAILED), json.dumps(UNLOCK)]
    path.write_text("\n".join(lines) + "\n")
    assert read_history(env, transports, limit=3) == {"local": [FAILED, UNLOCK]}
    assert read_history(env, transports) == {"local": [RELEASED, FAILED, UNLOCK]}


def test_journal_gives_the_steps_of_the_newest_run() -> None:
    probe = "\n".join(
        [
            "current=20240501-120000-000",
            "journal=2024-05-01T12:00:05Z release 20240501-120000-000 cleanup",
            "journal=2024-05-02T09:00:01Z release 20240502-090000-000 setup",
            "journal=2024-05-02T09:00:02Z release 20240502-090000-000 preflight",
            "journal=2024-05-02T09:00:09Z release 20240502-090000-000 upload",
            "journal=garbled",
        ]
    )
    state = parse_probe("web1", probe)
    assert state.last_steps() == {
        "action": "release",
        "release": "20240502-090000-000",
        "steps": ["setup", "preflight", "upload"],
        "at": "2024-05-02T09:00:09Z",
    }
    assert parse_probe("web1", "current=20240501-120000-000").last_steps() is None


def test_the_rollback_target_comes_from_the_history_not_the_ids() -> None:
    """Releases made A, B, C, with a controller clock that put C's id before B's; a
    rollback from C goes to the release that was live before it: B."""
    a, c, b = "20240501-120000-000", "20240502-090000-000", "20240503-090000-000"
    records = [
        {"action": "release", "release": a, "outcome": "released", "previous": None},
        {"action": "release", "release": b, "outcome": "released", "previous": a},
        {"action": "release", "release": c, "outcome": "released", "previous": b},
    ]
    probe = "\n".join(
        [f"current={c}", *(f"release={r}" for r in (a, b, c))]
        + [f"history={json.dumps(r)}" for r in records]
    )
    facts = parse_probe("web1", probe)
    assert facts.rollback_target() == b  # by ids it would be a
    assert facts.made_order() == [a, b, c]
    # once rolled back to b, the next rollback goes to what was live before b: a
    rolled = parse_probe("web1", probe.replace(f"current={c}", f"current={b}"))
    assert rolled.rollback_target() == a


def test_a_failed_release_is_never_a_rollback_target() -> None:
    a, b, c = "20240501-120000-000", "20240502-090000-000", "20240503-090000-000"
    records = [
        {"action": "release", "release": a, "outcome": "released", "previous": None},
        {"action": "release", "release": b, "outcome": "released", "previous": a},
        {"action": "release", "release": c, "outcome": "rolled_back", "previous": b},
        {"action": "release", "release": c, "outcome": "released", "previous": b},
    ]
    history = "\n".join(f"history={json.dumps(r)}" for r in records)
    facts = parse_probe("web1", f"current={c}\nrelease={a}\nrelease={c}\n{history}")
    # b is gone from the host: the target is the one live before it, still kept
    assert facts.rollback_target() == a


def test_host_data_that_is_not_ours_is_left_out_and_named() -> None:
    probe = "\n".join(
        [
            "current=../../etc",
            "release=20240501-120000-000",
            "release=$(reboot)",
            "history={not json",
            'history=["a list"]',
            'history={"action": "release", "release": 7}',
            "lock=\x1b[2J{",
            "venv=zzz",
        ]
    )
    facts = parse_probe("web1", probe)
    assert facts.current is None and facts.releases == ("20240501-120000-000",)
    assert facts.history == () and facts.venvs == ()
    assert facts.lock is not None and facts.lock.token == ""  # held, unreadable: stale
    assert any("3 history line(s)" in p for p in facts.problems)
    assert any("current points at" in p for p in facts.problems)
