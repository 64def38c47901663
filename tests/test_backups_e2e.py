"""Backups, restore and the restore drill, end to end on a simulated SSH host with real
PostgreSQL: the database user has a password, delivered as a declared secret, and the
password is searched for in every output, history line, manifest and plan."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from e2e_project import REPO, Project, history, make_project, readyz, ssh_inventory
from services import POSTGRES, started_fleet
from simhosts import SimFleet

pytestmark = pytest.mark.e2e

SECRET_VAR = "RB_BACKUP_E2E_DATABASE_URL"
ADD_TAG = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [
        migrations.AddField("note", "tag", models.CharField(max_length=20, null=True, blank=True))
    ]
"""


@dataclass
class Setup:
    fleet: SimFleet
    project: Project
    url: str  # with the password
    password: str
    outputs: list[str]

    @property
    def srv(self) -> Path:
        return self.fleet.hosts[0].srv

    @property
    def backups(self) -> Path:
        return self.srv / "app" / "shared" / "backups"

    def inv(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.project.inv(*args)
        self.outputs.append(done.stdout + done.stderr)
        return done


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tag = secrets.token_hex(5)
    user, name, password = f"rb_backup_{tag}", f"rb_backup_{tag}", f"pw-{secrets.token_hex(12)}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE ROLE \"{user}\" LOGIN CREATEDB PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{user}"')
    url = f"postgresql://{user}:{password}@127.0.0.1:5432/{name}"
    os.environ[SECRET_VAR] = url
    try:
        with started_fleet(tmp_path_factory.mktemp("fleet"), ["m1"]) as fleet:
            inventory = ssh_inventory(
                fleet, database_url="unused", broker_url="redis://127.0.0.1:6379/12", timeout=20
            )
            inventory = inventory.replace('    DATABASE_URL: "unused"\n', "").replace(
                "hosts:\n",
                f"  secrets:\n    DATABASE_URL: {{from_env: {SECRET_VAR}}}\n"
                "backup:\n  keep: 3\nhosts:\n",
                1,
            )
            project = make_project(tmp_path_factory.mktemp("backups"), inventory)
            state = Setup(fleet, project, url, password, [])
            done = state.inv("release", "--env=e2e")
            assert done.returncode == 0, done.stdout + done.stderr
            yield state
    finally:
        os.environ.pop(SECRET_VAR, None)
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{user}"')


def _notes(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT text FROM notes_note ORDER BY text")]


def _set_notes(url: str, texts: list[str]) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM notes_note")
        for text in texts:
            conn.execute("INSERT INTO notes_note (text, created_at) VALUES (%s, now())", (text,))


def _manifests(setup: Setup) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(setup.backups.glob("*.json"))]


def _ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_first_release_with_migrations_to_apply_took_a_backup_first(setup: Setup) -> None:
    record = history(setup.srv)[-1]
    assert record["outcome"] == "released"
    backup = record["backup"]
    assert backup["label"] == "before-migrate"
    (manifest,) = _manifests(setup)
    assert manifest["name"] == backup["name"]
    assert manifest["migrations"] == []  # taken before the first migration ran
    dump = setup.backups / str(manifest["file"])
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert stat.S_IMODE(setup.backups.stat().st_mode) == 0o700
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == manifest["sha256"]
    checksum = (setup.backups / f"{dump.name}.sha256").read_text()
    assert checksum.split()[0] == manifest["sha256"]
    assert dump.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
    assert str(manifest["name"]).split("-", 1)[1].startswith(record["release"])


def test_a_release_without_migrations_takes_no_backup(setup: Setup) -> None:
    before = _manifests(setup)
    (setup.project.root / "example" / "notes" / "README").write_text("no schema change\n")
    setup.project.commit("docs only")
    _ok(setup.inv("release", "--env=e2e"))
    record = history(setup.srv)[-1]
    assert record["outcome"] == "released"
    # The gate found the plan empty: the helper said so without setting Django up.
    assert record["backup"] == {"skipped": "no migrations to apply (the readiness gate found none)"}
    assert _manifests(setup) == before


def test_a_backup_then_a_restore_brings_the_rows_back(setup: Setup) -> None:
    _set_notes(setup.url, ["alpha", "beta", "gamma"])
    done = setup.inv("backup", "--env=e2e")
    _ok(done)
    record = history(setup.srv)[-1]
    assert record["action"] == "backup"
    assert record["outcome"] == "backed_up"
    name = record["backup"]["name"]
    assert name in done.stdout
    manifest = next(m for m in _manifests(setup) if m["name"] == name)
    assert manifest["label"] == "backup"
    assert "notes.0001_initial" in manifest["migrations"]

    _set_notes(setup.url, ["changed"])
    lock = setup.srv / "app" / ".releasebook" / "lock"

    refused = setup.inv("restore", "--env=e2e", f"--from={name}")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "would overwrite the postgresql database of e2e" in refused.stderr
    assert _notes(setup.url) == ["changed"]
    assert not lock.exists()

    unknown = setup.inv("restore", "--env=e2e", "--from=20200101T000000Z-nope-0000", "--yes")
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "unknown backup '20200101T000000Z-nope-0000'" in unknown.stderr
    assert _notes(setup.url) == ["changed"]

    bad = setup.inv("restore", "--env=e2e", "--from=../../etc/passwd", "--yes")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert _notes(setup.url) == ["changed"]
    assert history(setup.srv)[-1] == record  # nothing was recorded: nothing ran

    restored = setup.inv("restore", "--env=e2e", f"--from={name}", "--yes")
    _ok(restored)
    assert _notes(setup.url) == ["alpha", "beta", "gamma"]
    response = readyz(f"{setup.fleet.hosts[0].address}:8000")
    assert response.status_code == 200, response.text
    assert not (setup.srv / "app" / "shared" / "maintenance").exists()
    assert not lock.exists()
    last = history(setup.srv)[-1]
    assert (last["action"], last["outcome"]) == ("restore", "restored")
    assert last["backup"]["name"] == name
    assert isinstance(last["restore_seconds"], float | int)
    ran = {"check", "maintenance_on", "stop_workers", "restore", "migrate", "start_workers"}
    assert ran | {"maintenance_off", "verify"} <= set(last["steps"])


def test_the_drill_restores_into_a_scratch_database_and_leaves_the_live_one(
    setup: Setup,
) -> None:
    _set_notes(setup.url, ["live", "only", "now", "four"])
    done = setup.inv("restore-drill", "--env=e2e")
    _ok(done)
    assert "restored in" in done.stdout
    assert "notes_note: live 4, backup 3" in done.stdout
    assert _notes(setup.url) == ["four", "live", "now", "only"]
    record = history(setup.srv)[-1]
    assert (record["action"], record["outcome"]) == ("restore_drill", "drill_passed")
    assert isinstance(record["restore_seconds"], float | int)
    assert record["consistent"] is True
    assert {"table": "notes_note", "live": 4, "backup": 3} in record["tables_differ"]
    with psycopg.connect(f"{POSTGRES}/postgres") as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE '%rbdrill%'"
        ).fetchall()
    assert left == []


def test_a_release_with_a_pending_migration_backs_up_before_migrating(setup: Setup) -> None:
    models = setup.project.root / "example" / "notes" / "models.py"
    models.write_text(
        models.read_text().replace(
            "    created_at = models.DateTimeField(auto_now_add=True)\n",
            "    created_at = models.DateTimeField(auto_now_add=True)\n"
            "    tag = models.CharField(max_length=20, null=True, blank=True)\n",
        )
    )
    (setup.project.root / "example" / "notes" / "migrations" / "0002_note_tag.py").write_text(
        ADD_TAG
    )
    setup.project.commit("notes get a tag")
    _ok(setup.inv("release", "--env=e2e"))
    record = history(setup.srv)[-1]
    assert record["outcome"] == "released"
    assert record["backup"]["label"] == "before-migrate"
    manifest = next(m for m in _manifests(setup) if m["name"] == record["backup"]["name"])
    assert "notes.0002_note_tag" not in manifest["migrations"]  # taken before migrate
    assert record["migrations"]["applied"] == ["notes.0002_note_tag"]
    assert len(_manifests(setup)) <= 3  # backup.keep


def test_restoring_a_backup_from_before_a_migration_brings_the_schema_forward(
    setup: Setup,
) -> None:
    name = history(setup.srv)[-1]["backup"]["name"]  # taken before 0002
    _ok(setup.inv("restore", "--env=e2e", f"--from={name}", "--yes"))
    with psycopg.connect(setup.url) as conn:
        applied = [
            r[0] for r in conn.execute("SELECT name FROM django_migrations WHERE app = 'notes'")
        ]
    assert "0002_note_tag" in applied  # migrated to what the live release expects
    assert readyz(f"{setup.fleet.hosts[0].address}:8000").status_code == 200


def test_a_tampered_backup_fails_its_check_and_changes_nothing(setup: Setup) -> None:
    oldest = _manifests(setup)[0]
    dump = setup.backups / str(oldest["file"])
    dump.write_bytes(dump.read_bytes() + b"tampered")
    before = _notes(setup.url)
    done = setup.inv("restore", "--env=e2e", f"--from={oldest['name']}", "--yes")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"backup {oldest['name']} failed its check" in done.stderr
    assert "checksum" in done.stdout + done.stderr
    assert _notes(setup.url) == before
    assert not (setup.srv / "app" / "shared" / "maintenance").exists()
    record = history(setup.srv)[-1]
    assert (record["action"], record["outcome"]) == ("restore", "failed")
    assert "maintenance_on" not in record["steps"]


def test_restore_without_from_lists_the_backups(setup: Setup) -> None:
    done = setup.inv("restore", "--env=e2e")
    assert done.returncode == 2, done.stdout + done.stderr
    for manifest in _manifests(setup):
        assert str(manifest["name"]) in done.stdout
    assert "--from BACKUP is required" in done.stderr


def test_no_database_password_in_any_output_history_or_plan(setup: Setup) -> None:
    for args in (
        ("backup", "--env=e2e", "--dry-run"),
        ("restore", "--env=e2e", "--from=20200101T000000Z-x-y", "--dry-run"),
        ("restore-drill", "--env=e2e", "--dry-run"),
        ("release", "--env=e2e", "--dry-run"),
        ("history", "--env=e2e", "--steps", "--json"),
    ):
        setup.inv(*args)
    shutil.copytree(REPO / "templates", setup.project.root / "templates", dirs_exist_ok=True)
    rendered = setup.inv("runbook", "--render", "--env=e2e")
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    runbooks = sorted((setup.project.root / "runbooks" / "e2e").glob("*.md"))
    assert {p.name for p in runbooks} >= {"backup-restore.md", "release.md", "rollback.md"}
    for runbook in runbooks:
        text = runbook.read_text()
        assert setup.password not in text and "postgresql://" not in text, runbook
    assert len(setup.outputs) > 10
    for output in setup.outputs:
        assert setup.password not in output
    state = setup.srv / "app"
    searched = [
        state / ".releasebook" / "history.jsonl",
        state / ".releasebook" / "journal",
        *setup.backups.glob("*.json"),
        *setup.backups.glob("*.sha256"),
    ]
    for path in searched:
        if path.is_file():
            assert setup.password not in path.read_text(), path
