"""Migration-aware rollback, end to end on a simulated SSH host with real PostgreSQL:
releases of the example app that add a column, an irreversible data migration, and a
broken release after a migration; what each rollback does to the schema, checked in the
database itself."""

from __future__ import annotations

import json
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from e2e_project import Project, history, make_project, readyz, released_id, ssh_inventory
from services import fresh_database, started_fleet
from simhosts import SimFleet

pytestmark = pytest.mark.e2e

NOTE = """class Note(models.Model):
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
"""
TAGGED = NOTE + "    tag = models.CharField(max_length=20, null=True, blank=True)\n"
ADD_TAG = """from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [
        migrations.AddField("note", "tag", models.CharField(max_length=20, null=True, blank=True))
    ]
"""
FILL_TAG = """from django.db import migrations


def fill(apps, schema_editor):
    apps.get_model("notes", "Note").objects.filter(tag=None).update(tag="old")


class Migration(migrations.Migration):
    dependencies = [("notes", "0002_note_tag")]
    operations = [migrations.RunPython(fill)]
"""
ACKNOWLEDGE = 'migrations:\n  acknowledge: {notes.0003_fill_tag: "backfill, never undone"}\n'


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    with started_fleet(tmp_path_factory.mktemp("fleet"), ["m1"]) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database("rb_migrations") as url:
        yield url


@pytest.fixture(scope="module")
def project(
    fleet: SimFleet, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    inventory = ssh_inventory(
        fleet, database_url=database, broker_url="redis://127.0.0.1:6379/13", timeout=15
    )
    project = make_project(tmp_path_factory.mktemp("migrations"), inventory + ACKNOWLEDGE)
    done = project.inv("release", "--env=e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    yield project


def _write(project: Project, relative: str, text: str) -> None:
    (project.root / "example" / relative).write_text(text)


def _models(project: Project, body: str) -> None:
    path = project.root / "example" / "notes" / "models.py"
    original = path.read_text()
    start = original.index("class Note(models.Model):")
    end = original.index("    class Meta:")
    path.write_text(original[:start] + body + "\n" + original[end:])


def _columns(database: str) -> set[str]:
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes_note'"
        ).fetchall()
    return {row[0] for row in rows}


def _applied(database: str) -> list[str]:
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT name FROM django_migrations WHERE app = 'notes' ORDER BY id"
        ).fetchall()
    return [row[0] for row in rows]


def _served(fleet: SimFleet) -> str:
    response = readyz(f"{fleet.hosts[0].address}:8000")
    assert response.status_code == 200, response.text
    release: str = response.json()["release"]
    return release


def _release(project: Project) -> str:
    done = project.inv("release", "--env=e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    return released_id(done)


def test_a_rollback_keeps_an_added_column_and_says_so(
    project: Project, fleet: SimFleet, database: str
) -> None:
    first = _served(fleet)
    _models(project, TAGGED)
    _write(project, "notes/migrations/0002_note_tag.py", ADD_TAG)
    project.commit("notes get a tag")
    _release(project)
    assert "tag" in _columns(database)

    done = project.inv("rollback", "--env=e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _served(fleet) == first
    assert "notes.0002_note_tag stay applied" in done.stdout
    assert "tag" in _columns(database)  # kept: the older code tolerates it
    assert history(fleet.hosts[0].srv)[-1]["schema"]["kept"] == ["notes.0002_note_tag"]


def _watching(
    path: Path, run: Callable[[], subprocess.CompletedProcess[str]]
) -> tuple[subprocess.CompletedProcess[str], bool]:
    """``run()`` in a thread while this one polls for ``path``: what it returned, and
    whether the file existed at some moment while it ran."""
    result: list[subprocess.CompletedProcess[str]] = []
    worker = threading.Thread(target=lambda: result.append(run()))
    worker.start()
    seen = False
    stopped = threading.Event()
    while worker.is_alive():
        seen = seen or path.exists()
        stopped.wait(0.01)
    worker.join()
    return result[0], seen


def test_rollback_with_migrate_unapplies_a_reversible_migration(
    project: Project, fleet: SimFleet, database: str
) -> None:
    first = _served(fleet)
    tagged = _release(project)  # the tag release again: 0002 is already applied
    release = history(fleet.hosts[0].srv)[-1]
    assert release["migrations"]["leaves"]["notes"] == ["0002_note_tag"]
    flag = fleet.hosts[0].srv / "app" / "shared" / "maintenance"
    assert not flag.exists()

    done, flagged = _watching(
        flag, lambda: project.inv("rollback", "--env=e2e", "--migrate", "--maintenance", "-v")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"from {tagged} to {first}" in done.stdout
    assert "unapplied notes.0002_note_tag" in done.stdout
    assert _served(fleet) == first
    assert "tag" not in _columns(database)
    assert _applied(database) == ["0001_initial"]
    # in maintenance while it ran, open again afterwards
    assert flagged
    assert not flag.exists()
    # the backup it took before unapplying: 0600, its manifest holding the dropped column's
    # migration, named by the rollback's history record
    record = history(fleet.hosts[0].srv)[-1]
    assert record["action"] == "rollback" and record["outcome"] == "rolled_back_to"
    backups = fleet.hosts[0].srv / "app" / "shared" / "backups"
    name = record["backup"]["name"]
    assert f"backup {name} on m1" in done.stdout
    dump = backups / f"{name}.dump"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert dump.stat().st_size > 0
    manifest = json.loads((backups / f"{name}.json").read_text())
    assert manifest["label"] == "before-unapply"
    assert manifest["release_id"] == tagged
    assert "notes.0002_note_tag" in manifest["migrations"]
    # -v shows every command: the backup's among them, the database's URL in none
    assert "db_backup.py dump --dir /srv/app/shared/backups" in done.stdout
    assert database not in done.stdout + done.stderr


def test_migrate_over_an_irreversible_migration_is_refused_and_changes_nothing(
    project: Project, fleet: SimFleet, database: str
) -> None:
    _write(project, "notes/migrations/0003_fill_tag.py", FILL_TAG)
    project.commit("fill the tags")
    filled = _release(project)
    assert _applied(database) == ["0001_initial", "0002_note_tag", "0003_fill_tag"]

    done = project.inv("rollback", "--env=e2e", "--migrate")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "notes.0003_fill_tag cannot be unapplied" in done.stderr
    assert "inv restore --env=e2e --from BACKUP" in done.stderr
    assert _served(fleet) == filled
    assert _applied(database) == ["0001_initial", "0002_note_tag", "0003_fill_tag"]
    assert not (fleet.hosts[0].srv / "app" / ".releasebook" / "lock").exists()


def test_a_failed_verify_after_a_migration_rolls_back_the_code_and_keeps_the_schema(
    project: Project, fleet: SimFleet, database: str
) -> None:
    live = _served(fleet)
    _models(project, TAGGED + "    done = models.BooleanField(null=True)\n")
    _write(
        project,
        "notes/migrations/0004_note_done.py",
        "from django.db import migrations, models\n\n\n"
        "class Migration(migrations.Migration):\n"
        '    dependencies = [("notes", "0003_fill_tag")]\n'
        '    operations = [migrations.AddField("note", "done", '
        "models.BooleanField(null=True))]\n",
    )
    urls: Path = project.root / "example" / "config" / "urls.py"
    original = urls.read_text()
    urls.write_text(
        original + "\nfrom django.http import HttpResponseServerError as _Fail  # noqa: E402\n"
        'urlpatterns.insert(0, path("readyz", lambda request: _Fail(status=500)))  # noqa: F821\n'
    )
    project.commit("a column, and a broken readyz")
    try:
        done = project.inv("release", "--env=e2e")
    finally:
        urls.write_text(original)
        project.commit("readyz fixed")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"m1: serves {live}, verified" in done.stderr
    assert "The schema is kept: notes.0004_note_done stay applied" in done.stderr
    assert _served(fleet) == live
    assert "done" in _columns(database)
