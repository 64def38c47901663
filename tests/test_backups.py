"""Backups, restore and the drill: the inventory keys, the plans and dry runs, and the
host-side helper on SQLite (the example app, migrated into a temporary database)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from releasebook.deploy.backups import normalized_name
from releasebook.errors import InventoryError, UsageError
from releasebook.inventory import load_environment
from releasebook.inventory.load import load_inventory
from releasebook.plan.build import build_plan
from releasebook.plan.model import Plan, PlanKind
from releasebook.plan.source import find_source

REPO = Path(__file__).resolve().parents[1]
INV = Path(sys.executable).parent / "inv"
HELPER = REPO / "src" / "releasebook" / "gate" / "db_backup.py"


def _plan(kind: PlanKind, env_name: str = "staging", backup: str | None = None) -> Plan:
    env = load_environment(env_name, REPO)
    return build_plan(env, kind, source=find_source(env), run=None, backup=backup)


def _commands(plan: Plan) -> list[str]:
    return [c for p in plan.steps for w in p.work for c in (*w.commands, *w.verify, *w.undo)]


def _inventory(tmp_path: Path, extra: str) -> Path:
    text = (REPO / "inventories" / "staging.yml").read_text() + extra
    path = tmp_path / "inventories" / "staging.yml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    (tmp_path / "inventories" / "staging.known_hosts").write_text("")
    return path


# --- the inventory ----------------------------------------------------------------


def test_backup_settings_default() -> None:
    env = load_environment("staging", REPO)
    assert (env.backup.dir, env.backup.keep, env.backup.before_migrate) == (
        "shared/backups",
        7,
        None,
    )


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("backup: {keep: 0}\n", "backup.keep"),
        ("backup: {keep: true}\n", "backup.keep"),
        ("backup: {dir: '../etc'}\n", "backup.dir"),
        ("backup: {dir: 'a b'}\n", "backup.dir"),
        ("backup: {before_migrate: 'yes'}\n", "backup.before_migrate"),
        ("backup: {retention: 3}\n", "backup.retention"),
    ],
)
def test_bad_backup_settings_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(InventoryError, match=key.replace(".", r"\.")):
        load_inventory(_inventory(tmp_path, extra), root=REPO)


# --- the plans ----------------------------------------------------------------------


def test_the_release_backs_up_once_on_the_migrate_host_between_gate_and_migrate() -> None:
    plan = _plan("release")
    names = [p.step.name for p in plan.steps]
    # After the gate and maintenance (when asked), right before migrate.
    assert names.index("gate") < names.index("backup") == names.index("migrate") - 1
    backup = plan.step("backup")
    assert [w.target for w in backup.work] == ["staging-web1"]  # the migrate host
    (command,) = backup.work[0].commands
    assert 'with-env" venv/bin/python .releasebook/db_backup.py dump' in command
    assert "--dir /srv/example/shared/backups --keep 7" in command
    assert "--when pending-postgresql" in command
    assert backup.work[0].undo == ()  # a backup is kept


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("true", "--when pending"), ("false", "backup.before_migrate is false")],
)
def test_backup_before_migrate_is_switchable(tmp_path: Path, setting: str, expected: str) -> None:
    env = load_inventory(
        _inventory(tmp_path, f"backup: {{before_migrate: {setting}, dir: /var/bk}}\n"), root=REPO
    )
    plan = build_plan(env, "release", source=find_source(env), run=None)
    (command,) = plan.step("backup").work[0].commands
    assert expected in command
    if setting == "true":
        assert "--dir /var/bk " in command and "pending-postgresql" not in command
    else:
        assert "db_backup.py" not in command


def test_the_restore_plan_in_order() -> None:
    plan = _plan("restore", backup="20260101T000000Z-r-s")
    assert [p.step.name for p in plan.steps] == [
        "lock",
        "check",
        "maintenance_on",
        "stop_workers",
        "restore",
        "migrate",
        "start_workers",
        "maintenance_off",
        "verify",
        "record",
        "unlock",
    ]
    on = plan.step("maintenance_on")
    assert [w.target for w in on.work] == ["staging-web1"]
    assert "> /srv/example/shared/maintenance" in on.work[0].commands[-1]
    assert [w.target for w in plan.step("stop_workers").work] == ["staging-worker1"]
    (restore,) = plan.step("restore").work
    assert restore.target == "staging-web1"
    assert restore.commands[0].startswith(
        "cd /srv/example/current && /srv/example/current/.releasebook/with-env venv/bin/python"
    )
    assert (
        "restore --dir /srv/example/shared/backups --name 20260101T000000Z-r-s"
        in (restore.commands[0])
    )
    (migrate,) = plan.step("migrate").work
    assert "manage.py migrate --noinput" in migrate.commands[0]


def test_the_runbook_restores_the_operators_backup_variable() -> None:
    (restore,) = _plan("restore").step("restore").work
    assert '--name "${BACKUP}"' in restore.commands[0]


def test_the_drill_and_the_backup_run_once_from_the_live_release() -> None:
    (drill,) = _plan("restore_drill").step("drill").work
    assert drill.target == "staging-web1"
    assert "db_backup.py drill --dir /srv/example/shared/backups" in drill.commands[0]
    (backup,) = _plan("backup").step("backup").work
    assert "cd /srv/example/current && " in backup.commands[0]
    assert "--label backup" in backup.commands[0]


def test_no_plan_names_a_database_url() -> None:
    kinds: tuple[PlanKind, ...] = ("release", "backup", "restore", "restore_drill")
    for kind in kinds:
        for command in _commands(_plan(kind)):
            assert "postgresql://" not in command
            assert "PGPASSWORD" not in command


@pytest.mark.parametrize("name", ["x", "20260101T000000Z-a/..", "20260101T000000Z-a;rm", ""])
def test_a_bad_backup_name_is_refused(name: str) -> None:
    with pytest.raises(UsageError, match="expected a backup's name"):
        normalized_name(name)


def test_a_backup_name_may_be_given_as_its_file() -> None:
    assert normalized_name("shared/backups/20260101T000000Z-r-s.dump") == "20260101T000000Z-r-s"


def test_the_dry_runs_show_the_steps_and_bad_input_exits_2() -> None:
    env = {**os.environ, "RELEASEBOOK_ROOT": str(REPO)}
    for args, step in (
        (("backup", "--env=local", "--dry-run"), "## 2. backup: Back up the database"),
        (("restore-drill", "--env=local", "--dry-run"), "## 2. drill:"),
        (
            ("restore", "--env=local", "--from=20260101T000000Z-r-s", "--dry-run"),
            "## 5. restore: Restore the database from the backup",
        ),
    ):
        done = subprocess.run(
            [str(INV), *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert step in done.stdout
        assert "nothing was contacted or changed" in done.stdout
    bad = subprocess.run(
        [str(INV), "restore", "--env=local", "--from=nope", "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "--from 'nope'" in bad.stderr


# --- the helper, on SQLite ------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The example app with a migrated SQLite database and a release manifest."""
    tmp = tmp_path_factory.mktemp("helper")
    release = tmp / "release"
    subprocess.run(
        ["cp", "-r", str(REPO / "example"), str(release)], check=True, capture_output=True
    )
    (release / "release.json").write_text(
        json.dumps({"release_id": "20260101-000000-000", "git_sha": "abcdef0123456789"})
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DATABASE_URL": f"sqlite:///{tmp / 'live.sqlite3'}",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=release,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return release, env


def _helper(app: tuple[Path, dict[str, str]], *args: str) -> tuple[int, dict[str, Any]]:
    release, env = app
    done = subprocess.run(
        [sys.executable, str(HELPER), *args],
        cwd=release,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    return done.returncode, json.loads(lines[0])


def _live(app: tuple[Path, dict[str, str]]) -> sqlite3.Connection:
    return sqlite3.connect(app[1]["DATABASE_URL"].removeprefix("sqlite:///"))


def test_the_helper_backs_up_restores_and_drills_sqlite(
    app: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    directory = tmp_path / "backups"
    with _live(app) as db:
        db.execute("INSERT INTO notes_note (text, created_at) VALUES ('kept', '2026-01-01')")
    skipped = _helper(app, "dump", "--dir", str(directory), "--when", "pending-postgresql")
    assert skipped == (0, {**skipped[1], "ok": True, "skipped": skipped[1]["skipped"]})
    assert "sqlite" in str(skipped[1]["skipped"])
    assert not directory.exists()
    code, none_pending = _helper(app, "dump", "--dir", str(directory), "--when", "pending")
    assert (code, none_pending["skipped"]) == (0, "no migrations to apply")
    # a rollback's backup before unapplying: the engine alone decides, never "pending"
    code, not_postgresql = _helper(app, "dump", "--dir", str(directory), "--when", "postgresql")
    assert (code, "sqlite" in str(not_postgresql["skipped"])) == (0, True)
    assert not directory.exists()

    names = []
    for _ in range(3):
        code, report = _helper(app, "dump", "--dir", str(directory), "--keep", "2")
        assert code == 0, report
        backup = report["backup"]
        assert isinstance(backup, dict)
        names.append(backup["name"])
        assert backup["engine"] == "sqlite"
        assert "-20260101-000000-000-abcdef012345" in str(backup["name"])
        assert "notes.0001_initial" in backup["migrations"]
        file = directory / str(backup["file"])
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert (
            subprocess.run(
                ["sha256sum", "--quiet", "-c", f"{file.name}.sha256"], cwd=directory, check=False
            ).returncode
            == 0
        )
    assert report["removed"] == [names[0]]  # backup.keep
    assert len(list(directory.glob("*.json"))) == 2

    with _live(app) as db:
        db.execute("DELETE FROM notes_note")
        db.execute("INSERT INTO notes_note (text, created_at) VALUES ('new', '2026-01-02')")
    code, drill = _helper(app, "drill", "--dir", str(directory))
    assert code == 0, drill
    assert drill["migrations"] == {
        "consistent": True,
        "same_as_live": True,
        "to_apply": [],
        "unknown_to_live_release": [],
    }
    assert {"table": "notes_note", "live": 1, "backup": 1} in drill["tables"]
    with _live(app) as db:
        assert db.execute("SELECT text FROM notes_note").fetchall() == [("new",)]

    code, unknown = _helper(app, "restore", "--dir", str(directory), "--name", "20200101T000000Z-x")
    assert code == 1 and "unknown backup" in str(unknown["error"])
    code, restored = _helper(app, "restore", "--dir", str(directory), "--name", names[-1])
    assert code == 0, restored
    with _live(app) as db:
        assert db.execute("SELECT text FROM notes_note").fetchall() == [("kept",)]

    (directory / f"{names[-1]}.sqlite3").write_bytes(b"tampered")
    code, tampered = _helper(app, "verify", "--dir", str(directory), "--name", names[-1])
    assert code == 1 and "checksum" in str(tampered["error"])


def test_an_empty_plan_recorded_by_the_gate_skips_the_backup_without_setting_django_up(
    app: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    release, env = app
    shipped = release / ".releasebook"
    shipped.mkdir(exist_ok=True)
    helper = shipped / "db_backup.py"
    helper.write_bytes(HELPER.read_bytes())
    record = shipped / "pending-migrations"
    directory = tmp_path / "backups"
    no_django = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}

    def dump(when: str, environ: dict[str, str]) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, str(helper), "dump", "--dir", str(directory), "--when", when],
            cwd=release,
            env=environ,
            capture_output=True,
            text=True,
            check=False,
        )
        return dict(json.loads(done.stdout))

    try:
        record.write_text("")
        for when in ("pending", "pending-postgresql"):
            skipped = dump(when, no_django)  # Django could not even be set up
            assert skipped["skipped"] == "no migrations to apply (the readiness gate found none)"
        # Pending migrations, or another kind of backup: Django is asked.
        record.write_text("notes.0002_x\n")
        assert dump("pending", no_django)["ok"] is False
        assert dump("pending", env)["skipped"] == "no migrations to apply"
        record.write_text("")
        taken = dump("always", env)
        assert taken["ok"] is True and "backup" in taken, taken
    finally:
        record.unlink(missing_ok=True)
        helper.unlink()


def test_the_backup_and_migrate_share_one_script_on_the_migrate_host() -> None:
    from releasebook.plan.schedule import plan_groups

    names = [[p.step.name for p in g] for g in plan_groups(_plan("release"), None)]
    assert ["backup", "migrate"] in names
    restore = [[p.step.name for p in g] for g in plan_groups(_plan("restore"), None)]
    assert ["restore", "migrate"] in restore
    assert ["maintenance_on", "stop_workers"] in restore


def test_the_history_names_backups_and_restore_times() -> None:
    from releasebook.deploy.history import format_history

    records: list[dict[str, Any]] = [
        {
            "at": "2026-01-01T00:00:00Z",
            "action": "backup",
            "release": "r1",
            "outcome": "backed_up",
            "backup": {"name": "20260101T000000Z-r1-abc"},
        },
        {
            "at": "2026-01-01T00:01:00Z",
            "action": "restore_drill",
            "release": "r1",
            "outcome": "drill_passed",
            "restore_seconds": 2.5,
        },
        {
            "at": "2026-01-01T00:02:00Z",
            "action": "release",
            "release": "r2",
            "outcome": "released",
            "backup": {"skipped": "no migrations to apply"},
        },
    ]
    text = format_history({"web1": records})
    assert "backup: 20260101T000000Z-r1-abc" in text
    assert "restore took 2.5s" in text
    assert "no backup: no migrations to apply" in text


def test_retention_orders_two_backups_of_one_second_by_when_they_were_taken(
    tmp_path: Path,
) -> None:
    from releasebook.gate.db_backup import manifests

    base = "20261202T014455Z-20260101-000000-000-abcdef012345"
    for name in (f"{base}.1", base, f"{base}.2", "20261202T014454Z-r-0123456789ab"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"name": name}))
    assert [m["name"] for m in manifests(tmp_path)] == [
        "20261202T014454Z-r-0123456789ab",
        base,
        f"{base}.1",
        f"{base}.2",
    ]
