"""``inv rollback --migrate --maintenance`` against scripted hosts (``transport.scripted``):
which steps run in which order, what a failure before the switch undoes (maintenance off
again, nothing switched) and what one after it says (the site stays in maintenance), and
what the history records of the backup. Real hosts and PostgreSQL: test_migrations_e2e."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_release_flow import R1, _Quiet, serving  # noqa: F401  (serving: a fixture)

from releasebook.deploy.rollback import rollback
from releasebook.errors import ReleaseFailed, RollbackFailed
from releasebook.inventory import Environment, Host, load_environment
from releasebook.masking import Masker
from releasebook.plan.model import CONTROLLER
from releasebook.transport import Transport
from releasebook.transport.scripted import ScriptedHost

R2 = "20260102-120000-000"  # live; the rollback goes back to R1
FLAG = "/srv/app/shared/maintenance"
PLAN_TO = json.dumps(
    {
        "ok": True,
        "version": 1,
        "command": "plan-to",
        "target": R1,
        "newer": [
            {"app": "notes", "name": "0002_note_tag", "reversible": True,
             "irreversible_operations": []}
        ],
        "commands": [{"app": "notes", "target": "0001_initial"}],
        "not_on_disk": [],
    }
)  # fmt: skip
BACKED_UP = json.dumps(
    {
        "ok": True,
        "command": "dump",
        "backup": {"name": "20260103T000000Z-r2-abc", "file": "x.dump", "sha256": "ab" * 32,
                   "size": 123, "engine": "postgresql", "label": "before-unapply"},
    }
)  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, serving: str) -> Environment:  # noqa: F811
    """Two web hosts, web1 also the migrate host, both answering /readyz with R1."""
    root = tmp_path / "project"
    (root / "app").mkdir(parents=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("")
    (root / "inventories").mkdir()
    (root / "inventories" / "known_hosts").write_text("")
    (root / "inventories" / "flow.yml").write_text(
        "app: {source: app, settings: config.settings, wsgi: 'config.wsgi:application'}\n"
        "deploy: {path: /srv/app}\n"
        "ssh: {known_hosts: inventories/known_hosts}\n"
        "health: {host_header: app.test, timeout: 2}\n"
        "hosts:\n"
        f"  web1: {{address: 127.0.0.1, roles: [web, migrate], bind: '{serving}'}}\n"
        f"  web2: {{address: 127.0.0.2, roles: [web], bind: '{serving}'}}\n"
    )
    git = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "app"], check=True)
    return load_environment("flow", root)


def _facts() -> tuple[str, ...]:
    records = [
        {"action": "release", "release": R1, "outcome": "released"},
        {"action": "release", "release": R2, "outcome": "released", "previous": R1},
    ]
    return (
        f"current={R2}",
        f"release={R1}",
        f"release={R2}",
        *(f"history={json.dumps(r)}" for r in records),
    )


@pytest.fixture
def hosts() -> Iterator[dict[str, ScriptedHost]]:
    yield {
        CONTROLLER: ScriptedHost(CONTROLLER),
        "web1": ScriptedHost("web1", _facts(), output={"schema": PLAN_TO, "backup": BACKED_UP}),
        "web2": ScriptedHost("web2", _facts()),
    }


def _run(env: Environment, hosts: dict[str, ScriptedHost], **kwargs: Any) -> str:
    def opener(env: Environment, host: Host | None) -> Transport:
        return hosts[host.name if host else CONTROLLER]

    return rollback(env, _Quiet(), Masker(), opener=opener, **kwargs)


def _steps(host: ScriptedHost) -> list[str]:
    """The steps of the framed scripts it was sent, in order."""
    found: list[str] = []
    for script in host.scripts:
        found += re.findall(r"printf '%s %s\\n' '@@rb-[0-9a-f]+ ([a-z_]+)' ", script)
    return found


def _records(host: ScriptedHost) -> list[dict[str, Any]]:
    """The history records its scripts append (the record step's JSON line)."""
    out = []
    for script in host.scripts:
        for line in script.splitlines():
            if line.startswith("printf '%s\\n' '{") and line.endswith("history.jsonl"):
                out.append(json.loads(shlex.split(line)[2]))
    return out


def _flag_removed(host: ScriptedHost) -> bool:
    """An undo script (not a framed step) that removes the maintenance flag."""
    return any(f"rm -f {FLAG}" in s and "@@rb-" not in s for s in host.scripts)


def test_migrate_and_maintenance_run_in_order_and_record_the_backup(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    assert _run(env, hosts, migrate=True, maintenance=True) == R1
    assert _steps(hosts["web1"]) == [
        "schema",
        "maintenance_on",
        "backup",
        "unapply",
        "switch",
        "restart_web",
        "maintenance_off",
        "record",
        "unlock",
    ]
    assert [s for s in _steps(hosts["web2"]) if s.startswith("maintenance")] == [
        "maintenance_on",
        "maintenance_off",
    ]
    assert "backup" not in _steps(hosts["web2"])  # once, on the migrate host
    (record,) = [r for r in _records(hosts["web1"]) if r.get("outcome") == "rolled_back_to"]
    assert record["backup"]["name"] == "20260103T000000Z-r2-abc"
    assert record["schema"]["unapplied"] == ["notes.0002_note_tag"]
    # the backup runs from the live release, its credentials from its env file
    assert hosts["web1"].ran(f"cd /srv/app/releases/{R2} && /srv/app/releases/{R2}/.releasebook")
    assert hosts["web1"].ran("--label before-unapply --when postgresql")
    assert not hosts["web1"].ran("DATABASE_URL")


def test_without_flags_there_is_no_backup_and_no_maintenance(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    _run(env, hosts)
    steps = _steps(hosts["web1"])
    assert "switch" in steps
    assert not {"backup", "unapply", "maintenance_on", "maintenance_off"} & set(steps)
    assert not hosts["web1"].ran(FLAG)


def _facts_with_leaves(live: dict[str, list[str]], target: dict[str, list[str]]) -> tuple[str, ...]:
    records = [
        {"action": "release", "release": R1, "outcome": "released",
         "migrations": {"applied": [], "leaves": target}},
        {"action": "backup", "release": "", "outcome": "backed_up"},
        {"action": "release", "release": R2, "outcome": "released", "previous": R1,
         "migrations": {"applied": [], "leaves": live}},
    ]  # fmt: skip
    history = (f"history={json.dumps(r)}" for r in records)
    return (f"current={R2}", f"release={R1}", f"release={R2}", *history)


@pytest.mark.parametrize("migrate", [False, True])
def test_a_plain_rollback_to_the_same_schema_answers_from_the_history(
    env: Environment, migrate: bool
) -> None:
    same = {"notes": ["0001_initial"]}
    hosts = {
        CONTROLLER: ScriptedHost(CONTROLLER),
        "web1": ScriptedHost("web1", _facts_with_leaves(same, same), output={"schema": PLAN_TO}),
        "web2": ScriptedHost("web2", _facts_with_leaves(same, same)),
    }
    if migrate:  # --migrate always asks the database
        _run(env, hosts, migrate=True)
        assert "schema" in _steps(hosts["web1"])
        return
    _run(env, hosts)
    assert "schema" not in _steps(hosts["web1"])
    assert not hosts["web1"].ran("migration_state.py plan-to")
    (record,) = [r for r in _records(hosts["web1"]) if r["action"] == "rollback"]
    assert record["schema"] == {"compared": True, "kept": [], "not_on_disk": [], "from": "history"}


def test_a_rollback_to_another_schema_asks_the_database(env: Environment) -> None:
    live, target = {"notes": ["0002_note_tag"]}, {"notes": ["0001_initial"]}
    hosts = {
        CONTROLLER: ScriptedHost(CONTROLLER),
        "web1": ScriptedHost("web1", _facts_with_leaves(live, target), output={"schema": PLAN_TO}),
        "web2": ScriptedHost("web2", _facts_with_leaves(live, target)),
    }
    _run(env, hosts)
    assert "schema" in _steps(hosts["web1"])
    (record,) = [r for r in _records(hosts["web1"]) if r["action"] == "rollback"]
    assert record["schema"]["kept"] == ["notes.0002_note_tag"]
    assert "from" not in record["schema"]


def test_a_failed_backup_turns_maintenance_off_and_changes_nothing(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web1"].fail = {"backup": 1}
    with pytest.raises(ReleaseFailed) as failed:
        _run(env, hosts, migrate=True, maintenance=True)
    message = str(failed.value)
    assert "step 'backup' failed on web1" in message
    assert "Maintenance mode was turned off again" in message
    for name in ("web1", "web2"):
        assert _flag_removed(hosts[name])
        assert "switch" not in _steps(hosts[name])
    # unapply never began (it followed the backup in the same script), so it is not undone
    assert not hosts["web1"].ran("manage.py migrate --noinput\n")
    (record,) = [r for r in _records(hosts["web1"]) if r.get("outcome") == "failed"]
    assert record["step"] == "backup"


def test_a_failed_unapply_migrates_forward_again_then_turns_maintenance_off(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web1"].fail = {"unapply": 1}
    with pytest.raises(ReleaseFailed) as failed:
        _run(env, hosts, migrate=True, maintenance=True)
    assert "the migrations were applied again" in str(failed.value)
    scripts = hosts["web1"].scripts
    forward = next(i for i, s in enumerate(scripts) if s.endswith("migrate --noinput\n"))
    flag_off = next(i for i, s in enumerate(scripts) if s == f"set -eu\nrm -f {FLAG}\n")
    assert forward < flag_off  # newest first


def test_a_failure_after_the_switch_leaves_maintenance_on_and_says_so(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web2"].fail = {"restart_web": 1}
    with pytest.raises(RollbackFailed) as failed:
        _run(env, hosts, maintenance=True)
    assert "Maintenance mode is still ON on web1, web2" in str(failed.value)
    assert "inv maintenance off --env=flow" in str(failed.value)
    for name in ("web1", "web2"):
        assert not _flag_removed(hosts[name])
        assert "maintenance_off" not in _steps(hosts[name])
    (record,) = [r for r in _records(hosts["web1"]) if r.get("outcome") == "failed"]
    assert record["maintenance"] == "left_on"


def test_a_failed_maintenance_off_is_a_recorded_warning(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web2"].fail = {"maintenance_off": 1}
    assert _run(env, hosts, maintenance=True) == R1
    (record,) = [r for r in _records(hosts["web1"]) if r.get("outcome") == "rolled_back_to"]
    assert record["warnings"] == [
        "maintenance mode is still on on web2: turning it off failed; "
        "`inv maintenance off --env=flow`"
    ]


def test_the_rollback_says_how_many_websockets_the_web_restart_closed(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    from releasebook.django.asgi_worker import CLOSING

    hosts["web1"].output["restart_web"] = f"[INFO] {CLOSING % 2}\n[INFO] {CLOSING % 1}\n"
    hosts["web2"].output["restart_web"] = f"[INFO] {CLOSING % 4}\n"
    said: list[tuple[str, dict[str, object]]] = []

    class Listening(_Quiet):
        def message(self, text: str, **data: object) -> None:
            said.append((text, data))

    def opener(env: Environment, host: Host | None) -> Transport:
        return hosts[host.name if host else CONTROLLER]

    rollback(env, Listening(), Masker(), opener=opener)
    assert (
        "restart closed 7 WebSocket connection(s) with 1012 (service restart); web1: 3, web2: 4",
        {"websockets_closed": {"web1": 3, "web2": 4}},
    ) in said
