"""``.releasebook/migration_state.py`` on a real PostgreSQL database: the applied leaves a
release records, and what going back to an older release would unapply.

Four releases of the test project share a deploy and a database: v1 has shelf 0001, v2
adds 0002, v3 adds 0003 (a nullable column), v4 adds 0004 (a RunPython without
reverse_code). Each test first brings the database to the state it needs with the
release that has the files, then runs the script as a host would: from a release
directory, through the env launcher, with that release's ``venv/bin/python``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from migrating import STATE_IN_RELEASE, Mig, make_deploy, make_release, manage, with_env
from services import fresh_database

from releasebook.gate import migration_state
from releasebook.gate.migration_report import (
    RollbackPlan,
    UnapplyCommand,
    parse_leaves,
    parse_rollback_plan,
)
from releasebook.quoting import render_command
from releasebook.runbooks.release import MIGRATE
from releasebook.runbooks.rollback import SCHEMA, UNAPPLY

MIGRATIONS = [
    Mig(
        "0001_initial",
        """
        migrations.CreateModel(
            "Book",
            [
                ("id", models.BigAutoField(primary_key=True)),
                ("title", models.CharField(max_length=50)),
            ],
        ),
        """,
    ),
    Mig(
        "0002_add_subtitle",
        'migrations.AddField("book", "subtitle", models.CharField(max_length=50, null=True)),',
    ),
    Mig(
        "0003_add_pages",
        'migrations.AddField("book", "pages", models.IntegerField(null=True)),',
    ),
    Mig(
        "0004_backfill",
        "migrations.RunPython(backfill),",
        header=(
            "def backfill(apps, schema_editor):\n"
            '    apps.get_model("shelf", "Book").objects.update(pages=1)'
        ),
    ),
]
CONTENTTYPES_LEAF = "0002_remove_content_type_name"


def clean_env() -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_")) and k != "PYTHONPATH"
    }
    return inherited | {"PYTHONDONTWRITEBYTECODE": "1"}


class Deploy:
    def __init__(self, root: Path, url: str) -> None:
        self.url = url
        self.root = make_deploy(root, url)
        self.releases = {
            n: make_release(self.root, f"20250101-000000-00{n}", MIGRATIONS[:n])
            for n in (1, 2, 3, 4)
        }

    def migrate(self, target: str) -> None:
        """The database at shelf ``target``, moved there by v4, which has every file.
        0004 only runs Python, so faking it back leaves the schema as 0003 made it."""
        latest, applied = self.releases[4], self.applied()
        if applied and applied[-1] == target:
            return
        if "0004_backfill" in applied:
            manage(
                latest, "migrate", "--noinput", "--fake", "shelf", "0003_add_pages", env=clean_env()
            )
        manage(latest, "migrate", "--noinput", "shelf", target, env=clean_env())

    def state(
        self, version: int, *args: str, code: int = 0
    ) -> tuple[subprocess.CompletedProcess[str], Any]:
        done = subprocess.run(
            [str(with_env(self.root)), "venv/bin/python", STATE_IN_RELEASE, *args, "--json"],
            cwd=self.releases[version],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == code, done.stderr
        return done, json.loads(done.stdout)

    def shell(self, template: str, **values: object) -> subprocess.CompletedProcess[str]:
        """A command template of the runbooks' steps, rendered and run as a step is (the
        release's launcher is, here, the deploy's test launcher)."""
        launcher = with_env(self.root)
        command = render_command(
            template, {"launcher": launcher, "live_launcher": launcher, **values}
        )
        return subprocess.run(
            ["sh", "-c", command], env=clean_env(), capture_output=True, text=True, timeout=120
        )

    def leaves(self, version: int) -> tuple[Any, dict[str, tuple[str, ...]]]:
        done, report = self.state(version, "leaves")
        return report, parse_leaves("web1", done.stdout)

    def migrate_step(self, release: Path) -> subprocess.CompletedProcess[str]:
        """The release's migrate step, as its runbook has it."""
        (command,) = MIGRATE.commands
        return self.shell(command.template, release_dir=release)

    def plan_to(self, version: int, older: Path) -> tuple[Any, RollbackPlan]:
        done = self.shell(
            SCHEMA.commands[0].template, live_dir=self.releases[version], release_dir=older
        )
        assert done.returncode == 0, done.stderr
        report, plan = json.loads(done.stdout), parse_rollback_plan("web1", done.stdout)
        assert plan.reversible is report["reversible"]
        assert [m.migration for m in plan.newer] == [e["migration"] for e in report["newer"]]
        assert [list(c.argv) for c in plan.commands] == [c["argv"] for c in report["commands"]]
        return report, plan

    def unapply(self, version: int, command: UnapplyCommand) -> subprocess.CompletedProcess[str]:
        return self.shell(
            UNAPPLY.commands[0].template,
            live_dir=self.releases[version],
            app=command.app,
            target=command.target,
        )

    def applied(self) -> list[str]:
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT name FROM django_migrations WHERE app = 'shelf' ORDER BY id"
            ).fetchall()
        return [row[0] for row in rows]

    def columns(self) -> set[str]:
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'shelf_book'"
            ).fetchall()
        return {row[0] for row in rows}


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deploy]:
    with fresh_database("rb_migstate") as url:
        deploy = Deploy(tmp_path_factory.mktemp("state"), url)
        manage(deploy.releases[4], "migrate", "--noinput", "contenttypes", env=clean_env())
        yield deploy


def test_leaves_are_the_applied_leaf_of_every_app(deploy: Deploy) -> None:
    deploy.migrate("0003_add_pages")
    report, leaves = deploy.leaves(3)
    assert report == {
        "ok": True,
        "version": 1,
        "command": "leaves",
        "database": "default",
        "leaves": {"contenttypes": [CONTENTTYPES_LEAF], "shelf": ["0003_add_pages"]},
    }
    assert leaves == {"contenttypes": (CONTENTTYPES_LEAF,), "shelf": ("0003_add_pages",)}
    deploy.migrate("0002_add_subtitle")
    assert deploy.leaves(3)[1]["shelf"] == ("0002_add_subtitle",)


def test_the_migrate_step_applies_checks_and_records_in_one_process(deploy: Deploy) -> None:
    deploy.migrate("0002_add_subtitle")
    done = deploy.migrate_step(deploy.releases[3])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "ok": True,
        "version": 1,
        "command": "migrate",
        "database": "default",
        "applied": ["shelf.0003_add_pages"],
        "leaves": {"contenttypes": [CONTENTTYPES_LEAF], "shelf": ["0003_add_pages"]},
    }
    assert "Applying shelf.0003_add_pages... OK" in done.stderr
    assert "pages" in deploy.columns()
    assert parse_leaves("web1", done.stdout, "migrate")["shelf"] == ("0003_add_pages",)
    again = deploy.migrate_step(deploy.releases[3])
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["applied"] == []


def test_a_failing_migration_fails_the_step_with_its_traceback(deploy: Deploy) -> None:
    deploy.migrate("0003_add_pages")
    failing = Mig(
        "0004_fails",
        "migrations.RunPython(fail),",
        header="def fail(apps, schema_editor):\n    raise ValueError('no pages column today')",
    )
    release = make_release(deploy.root, "20250101-000000-009", [*MIGRATIONS[:3], failing])
    done = deploy.migrate_step(release)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert report["error"] == "migrate: ValueError: no pages column today"
    assert "Traceback (most recent call last)" in done.stderr
    assert deploy.applied() == ["0001_initial", "0002_add_subtitle", "0003_add_pages"]


def test_plan_to_an_older_release_lists_what_it_lacks_and_how_to_unapply_it(
    deploy: Deploy,
) -> None:
    deploy.migrate("0003_add_pages")
    report, plan = deploy.plan_to(3, deploy.releases[2])
    assert report["ok"] is True
    assert report["target"] == str(deploy.releases[2])
    assert report["newer"] == [
        {
            "migration": "shelf.0003_add_pages",
            "app": "shelf",
            "name": "0003_add_pages",
            "reversible": True,
            "irreversible_operations": [],
        }
    ]
    assert report["reversible"] is True
    assert report["not_on_disk"] == []
    assert report["commands"] == [
        {
            "app": "shelf",
            "target": "0002_add_subtitle",
            "argv": ["migrate", "shelf", "0002_add_subtitle"],
        }
    ]
    # The command it names, run from the newer release, unapplies exactly that.
    (command,) = plan.commands
    done = deploy.unapply(3, command)
    assert done.returncode == 0, done.stderr
    assert "pages" not in deploy.columns()
    assert deploy.applied() == ["0001_initial", "0002_add_subtitle"]
    after, plan = deploy.plan_to(3, deploy.releases[2])
    assert (after["newer"], after["commands"], plan.reversible) == ([], [], True)


def test_an_irreversible_migration_is_reported_and_django_agrees(deploy: Deploy) -> None:
    deploy.migrate("0004_backfill")
    report, plan = deploy.plan_to(4, deploy.releases[2])
    assert [(e["migration"], e["reversible"]) for e in report["newer"]] == [
        ("shelf.0004_backfill", False),
        ("shelf.0003_add_pages", True),
    ]
    assert report["newer"][0]["irreversible_operations"] == [
        {"operation": 1, "kind": "RunPython", "description": "Raw Python operation"}
    ]
    assert report["reversible"] is False
    assert [m.migration for m in plan.irreversible] == ["shelf.0004_backfill"]
    assert plan.irreversible[0].irreversible_operations == ("1 RunPython (Raw Python operation)",)
    assert [c.argv for c in plan.commands] == [("migrate", "shelf", "0002_add_subtitle")]
    refused = deploy.unapply(4, plan.commands[0])
    assert refused.returncode != 0
    assert "IrreversibleError" in refused.stderr
    assert deploy.applied() == [
        "0001_initial",
        "0002_add_subtitle",
        "0003_add_pages",
        "0004_backfill",
    ]


def test_applied_migrations_no_release_has_are_named(deploy: Deploy) -> None:
    deploy.migrate("0004_backfill")
    # v2 went live again with the schema kept: neither it nor v1 has 0003 or 0004.
    report, plan = deploy.plan_to(2, deploy.releases[1])
    assert [e["migration"] for e in report["newer"]] == ["shelf.0002_add_subtitle"]
    assert report["not_on_disk"] == ["shelf.0003_add_pages", "shelf.0004_backfill"]
    assert plan.not_on_disk == ("shelf.0003_add_pages", "shelf.0004_backfill")
    assert report["reversible"] is False
    assert [c.argv for c in plan.commands] == [("migrate", "shelf", "0001_initial")]


def test_going_back_to_before_an_app_existed_unapplies_it_to_zero(deploy: Deploy) -> None:
    deploy.migrate("0002_add_subtitle")
    empty = make_release(deploy.root, "20240101-000000-000", [])
    report, plan = deploy.plan_to(2, empty)
    assert [e["migration"] for e in report["newer"]] == [
        "shelf.0002_add_subtitle",
        "shelf.0001_initial",
    ]
    assert report["commands"] == [
        {"app": "shelf", "target": "zero", "argv": ["migrate", "shelf", "zero"]}
    ]
    assert plan.commands == (UnapplyCommand(app="shelf", target="zero"),)


def test_errors_are_one_json_document_and_a_non_zero_exit(deploy: Deploy, tmp_path: Path) -> None:
    done, report = deploy.state(3, "plan-to", str(tmp_path / "nowhere"), code=1)
    assert report == {
        "ok": False,
        "version": 1,
        "command": "plan-to",
        "error": f"{tmp_path / 'nowhere'}: not a directory (expected an older release's directory)",
    }
    assert "not a directory" in done.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    _done, report = deploy.state(3, "plan-to", str(bare), code=1)
    assert report["error"] == (
        f"no interpreter at {bare}/venv/bin/python: "
        "the release's virtualenv is gone (pass --python)"
    )
    broken = make_release(deploy.root, "20240101-000000-001", MIGRATIONS[:1])
    (broken / "migrating_settings.py").write_text("raise RuntimeError('settings are broken')\n")
    _done, report = deploy.state(3, "plan-to", str(broken), code=1)
    assert report["error"].startswith(f"could not list the migrations of {broken} with ")
    assert "settings are broken" in report["error"]
    usage = subprocess.run(
        [str(with_env(deploy.root)), "venv/bin/python", STATE_IN_RELEASE, "sideways"],
        cwd=deploy.releases[3],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 2
    assert "invalid choice: 'sideways'" in usage.stderr


def test_passwords_in_database_urls_are_masked_in_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://app:pw-7c1e%2F5b93@db.internal:5432/shop")
    text = migration_state._redact(
        "OperationalError: postgres://app:pw-7c1e%2F5b93@db.internal:5432/shop refused pw-7c1e/5b93"
    )
    assert text == "OperationalError: postgres://app:***@db.internal:5432/shop refused ***"
