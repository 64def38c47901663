"""The readiness gate's migration lint (RB-MIG-001..004) against real migrations.

A small project (``tests/fixtures/migrating``) is released twice into one deploy: once
with a migration per unsafe operation, once with acknowledged and safe ones. Its first
migration is applied to a fresh PostgreSQL database; the gate then runs as the GATE step
runs it: ``GATE_COMMAND`` with the inventory's ``gate_options``, through the env
launcher, with the release's ``venv/bin/python``, and lints what ``migrate`` would apply.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from migrating import PROJECT, SETTINGS, Mig, make_deploy, make_release, manage, with_env
from services import fresh_database

from releasebook.errors import InventoryError
from releasebook.gate import gate
from releasebook.gate.command import GATE_COMMAND
from releasebook.gate.registry import CHECKS
from releasebook.gate.report import (
    acknowledged_record,
    format_migration_findings,
    parse_gate_output,
)
from releasebook.inventory import Environment, load_inventory
from releasebook.plan import gate_options
from releasebook.plan.values import app_option
from releasebook.quoting import Raw, render_command
from releasebook.render.readiness import render_readiness

NAMES, WRITES, REVERSIBLE, LOCKS = ("RB-MIG-001", "RB-MIG-002", "RB-MIG-003", "RB-MIG-004")
MIGRATION_CHECKS = (NAMES, WRITES, REVERSIBLE, LOCKS)
# What the lint needs; every other check is skipped, so the exit status is the lint's.
KEPT = {"RB-ENV-001", "RB-ENV-003", "RB-DB-002", "RB-DB-004", *MIGRATION_CHECKS}
SKIPPED = [c.id for c in CHECKS if c.id not in KEPT]
INVENTORY_REASON = "blurb is unread since release 41"
MODULE_REASON = "the old release reads the title through a view"

INITIAL = Mig(
    "0001_initial",
    """
        migrations.CreateModel(
            "Publisher",
            [
                ("id", models.BigAutoField(primary_key=True)),
                ("name", models.CharField(max_length=50)),
            ],
        ),
        migrations.CreateModel(
            "Author",
            [
                ("id", models.BigAutoField(primary_key=True)),
                ("name", models.CharField(max_length=50)),
            ],
        ),
        migrations.CreateModel(
            "Shelfmark",
            [
                ("id", models.BigAutoField(primary_key=True)),
                ("code", models.CharField(max_length=10)),
            ],
        ),
        migrations.CreateModel(
            "Book",
            [
                ("id", models.BigAutoField(primary_key=True)),
                ("title", models.CharField(max_length=50)),
                ("blurb", models.TextField(null=True)),
                ("isbn", models.CharField(max_length=20, null=True)),
                ("subtitle", models.CharField(max_length=50, null=True)),
                ("rating", models.IntegerField(null=True)),
                ("published", models.DateField(null=True)),
                ("slug", models.CharField(max_length=50, null=True)),
                ("translator", models.BigIntegerField(null=True, db_column="translator_id")),
                ("legacy_a", models.TextField(null=True)),
                ("legacy_b", models.TextField(null=True)),
                ("legacy_c", models.TextField(null=True)),
            ],
        ),
""",
)

# name, check, operation kind, operations, in the problem, in the alternative, header
UNSAFE: list[tuple[str, str, str, str, str, str, str]] = [
    (
        "0002_remove_blurb",
        NAMES,
        "RemoveField",
        'migrations.RemoveField("book", "blurb"),',
        "drops column shelf_book.blurb (Book.blurb), which the old release still selects",
        "state_operations",
        "",
    ),
    (
        "0003_delete_shelfmark",
        NAMES,
        "DeleteModel",
        'migrations.DeleteModel("Shelfmark"),',
        "drops table shelf_shelfmark (Shelfmark)",
        "then drop it in a later release",
        "",
    ),
    (
        "0004_rename_title",
        NAMES,
        "RenameField",
        'migrations.RenameField("book", "title", "name"),',
        "renames column shelf_book.title (Book.title) to name",
        "db_column='title'",
        "",
    ),
    (
        "0005_rename_author",
        NAMES,
        "RenameModel",
        'migrations.RenameModel("Author", "Writer"),',
        "renames table shelf_author (Author) to shelf_writer",
        "Meta.db_table='shelf_author'",
        "",
    ),
    (
        "0006_isbn_column",
        NAMES,
        "AlterField",
        'migrations.AlterField("book", "isbn", models.CharField(max_length=20, null=True, '
        'db_column="isbn13")),',
        "renames column shelf_book.isbn (Book.isbn) to isbn13",
        "db_column='isbn'",
        "",
    ),
    (
        "0007_add_pages",
        WRITES,
        "AddField",
        'migrations.AddField("book", "pages", models.IntegerField(default=0)),',
        "adds NOT NULL column shelf_book.pages (Book.pages) without a database default",
        "db_default",
        "",
    ),
    (
        "0008_subtitle_required",
        WRITES,
        "AlterField",
        'migrations.AlterField("book", "subtitle", models.CharField(max_length=50, default="")),',
        "makes shelf_book.subtitle (Book.subtitle) NOT NULL",
        "set NOT NULL in a later release",
        "",
    ),
    (
        "0009_rating_bigint",
        WRITES,
        "AlterField",
        'migrations.AlterField("book", "rating", models.BigIntegerField(null=True)),',
        "changes column shelf_book.rating (Book.rating) from integer to bigint",
        "add a column of the new type",
        "",
    ),
    (
        "0010_backfill",
        REVERSIBLE,
        "RunPython",
        "migrations.RunPython(backfill),",
        "RunPython without reverse_code: a rollback could not unapply this migration",
        "reverse_code=migrations.RunPython.noop",
        "def backfill(apps, schema_editor):\n    pass",
    ),
    (
        "0011_raw_sql",
        REVERSIBLE,
        "RunSQL",
        'migrations.RunSQL("UPDATE shelf_book SET rating = 0 WHERE rating IS NULL"),',
        "RunSQL without reverse_sql",
        "reverse_sql=migrations.RunSQL.noop",
        "",
    ),
    (
        "0012_index_published",
        LOCKS,
        "AddIndex",
        'migrations.AddIndex("book", models.Index(fields=["published"], '
        'name="shelf_book_published_idx")),',
        "creates index shelf_book_published_idx on shelf_book without CONCURRENTLY",
        "AddIndexConcurrently in a migration with atomic = False",
        "",
    ),
    (
        "0013_add_code",
        LOCKS,
        "AddField",
        'migrations.AddField("book", "code", models.CharField(max_length=10, null=True, '
        "db_index=True)),",
        "builds an index on shelf_book.code without CONCURRENTLY",
        "AddIndexConcurrently",
        "",
    ),
    (
        "0014_unique_slug",
        LOCKS,
        "AddConstraint",
        'migrations.AddConstraint("book", models.UniqueConstraint(fields=["slug"], '
        'name="shelf_book_slug_uniq")),',
        "adds unique constraint shelf_book_slug_uniq on shelf_book",
        "CREATE UNIQUE INDEX CONCURRENTLY",
        "",
    ),
    (
        "0015_add_publisher",
        LOCKS,
        "AddField",
        'migrations.AddField("book", "publisher", models.ForeignKey("shelf.publisher", '
        'null=True, on_delete=models.SET_NULL, db_index=False, related_name="books")),',
        "adds a foreign key from shelf_book.publisher_id to shelf_publisher: validating it "
        "scans every row of shelf_book",
        "NOT VALID and VALIDATE CONSTRAINT",
        "",
    ),
    (
        "0016_translator_fk",
        LOCKS,
        "AlterField",
        'migrations.AlterField("book", "translator", models.ForeignKey("shelf.publisher", '
        'null=True, on_delete=models.SET_NULL, db_index=False, db_column="translator_id", '
        'related_name="+")),',
        "adds a foreign key from shelf_book.translator_id to shelf_publisher",
        "db_constraint=False",
        "",
    ),
    (
        "0017_nested_drop",
        NAMES,
        "SeparateDatabaseAndState/RemoveField",
        "migrations.SeparateDatabaseAndState(database_operations=[migrations.RemoveField("
        '"publisher", "name")], state_operations=[migrations.RemoveField("publisher", "name")]),',
        "drops column shelf_publisher.name",
        "no database_operations",
        "",
    ),
    (
        "0018_narrow_slug",
        WRITES,
        "AlterField",
        'migrations.AlterField("book", "slug", models.CharField(max_length=30, null=True)),',
        "changes column shelf_book.slug (Book.slug) from varchar(50) to varchar(30)",
        "write both, backfill",
        "",
    ),
]
PARTIAL_ACK = Mig(
    "0019_drop_legacy",
    'migrations.RemoveField("book", "legacy_a"),\nmigrations.RemoveField("book", "legacy_b"),',
    attributes='releasebook_acknowledge = {"reason": "legacy_a is unread", "operations": [1]}',
)
BAD_ACK = Mig(
    "0020_bad_ack",
    'migrations.RemoveField("book", "legacy_c"),',
    attributes='releasebook_acknowledge = {"operations": [1]}',
)

ACKNOWLEDGED_AND_SAFE = [
    INITIAL,
    Mig("0002_remove_blurb", 'migrations.RemoveField("book", "blurb"),'),
    Mig(
        "0003_rename_title",
        'migrations.RenameField("book", "title", "name"),',
        attributes=f"releasebook_acknowledge = {{'reason': {MODULE_REASON!r}}}",
    ),
    Mig(
        "0004_add_nullable", 'migrations.AddField("book", "pages", models.IntegerField(null=True)),'
    ),
    Mig(
        "0005_add_db_default",
        'migrations.AddField("book", "copies", models.IntegerField(db_default=1)),',
    ),
    Mig(
        "0006_index_concurrently",
        'AddIndexConcurrently("book", models.Index(fields=["published"], '
        'name="shelf_book_published_idx")),',
        header="from django.contrib.postgres.operations import AddIndexConcurrently",
        attributes="atomic = False",
    ),
    Mig(
        "0007_forget_legacy",
        "migrations.SeparateDatabaseAndState(state_operations=["
        'migrations.RemoveField("book", "legacy_a")]),',
    ),
    Mig(
        "0008_backfill",
        "migrations.RunPython(backfill, migrations.RunPython.noop),\n"
        'migrations.RunSQL("UPDATE shelf_book SET rating = 0 WHERE rating IS NULL", '
        "reverse_sql=migrations.RunSQL.noop),",
        header="def backfill(apps, schema_editor):\n    pass",
    ),
    Mig(
        "0009_reviews",
        """
        migrations.CreateModel(
            "Review",
            [
                ("id", models.BigAutoField(primary_key=True)),
                ("book", models.ForeignKey("shelf.book", on_delete=models.CASCADE)),
                ("stars", models.IntegerField()),
            ],
        ),
        migrations.AddIndex(
            "review", models.Index(fields=["stars"], name="shelf_review_stars_idx")
        ),
        migrations.AddField("review", "title", models.CharField(max_length=50, default="")),
        """,
    ),
    Mig(
        "0010_widen_isbn",
        'migrations.AlterField("book", "isbn", models.CharField(max_length=40, null=True)),',
    ),
]


def unsafe_migrations() -> list[Mig]:
    cases = [Mig(name, ops, header=header) for name, _c, _k, ops, _p, _a, header in UNSAFE]
    return [INITIAL, *cases, PARTIAL_ACK, BAD_ACK]


def clean_env() -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_")) and k != "PYTHONPATH"
    }
    return inherited | {"PYTHONDONTWRITEBYTECODE": "1"}


def inventory(root: Path, extra: str = "") -> Path:
    file = root / "inventories" / "shelf.yml"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(
        f"""transport: local
app:
  source: {PROJECT.name}
  settings: {SETTINGS}
  wsgi: shelf.wsgi:application
deploy: {{path: /srv/shelf}}
disk: {{min_free_mb: 1}}
health: {{host_header: shelf.test}}
env:
  required: [DATABASE_URL]
hosts:
  web1: {{roles: [web, migrate]}}
{extra}"""
    )
    return file


def load(file: Path) -> Environment:
    return load_inventory(file, root=PROJECT.parent)


def run_gate(env: Environment, release: Path) -> tuple[subprocess.CompletedProcess[str], Any]:
    """The GATE step's command for this release, as the runner runs it."""
    deploy = release.parent.parent
    command = render_command(
        GATE_COMMAND,
        {
            "release_dir": release,
            "launcher": with_env(deploy),
            "settings_module": env.app.settings_module,
            "app_option": Raw(app_option(env)),
            "min_free_mb": env.min_free_mb,
            "deploy": deploy,
            "gate_options": Raw(gate_options(env, skip=SKIPPED)),
        },
    )
    done = subprocess.run(
        ["sh", "-c", command], env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode in (0, 1), done.stderr
    return done, json.loads(done.stdout)


def results(report: Any) -> dict[str, Any]:
    return {r["id"]: r for r in report["results"]}


def findings_of(report: Any, migration: str) -> list[Any]:
    return [f for f in report["migration_findings"] if f["migration"] == f"shelf.{migration}"]


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A deploy whose database has shelf.0001_initial (and contenttypes) applied."""
    with fresh_database("rb_miglint") as url:
        deploy = make_deploy(tmp_path_factory.mktemp("lint"), url)
        release = make_release(deploy, "20250101-000000-001", unsafe_migrations())
        manage(release, "migrate", "--noinput", "contenttypes", env=clean_env())
        manage(release, "migrate", "--noinput", "shelf", "0001_initial", env=clean_env())
        yield deploy


@pytest.fixture(scope="module")
def unsafe_run(
    deploy: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Any]:
    env = load(inventory(tmp_path_factory.mktemp("inventory")))
    return run_gate(env, deploy / "releases" / "20250101-000000-001")


@pytest.fixture(scope="module")
def safe_run(
    deploy: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Any]:
    acknowledge = (
        f'migrations:\n  acknowledge:\n    shelf.0002_remove_blurb: "{INVENTORY_REASON}"\n'
    )
    env = load(inventory(tmp_path_factory.mktemp("inventory"), acknowledge))
    release = make_release(deploy, "20250101-000000-002", ACKNOWLEDGED_AND_SAFE)
    return run_gate(env, release)


# --- each unsafe operation is named and blocks ---------------------------------------


@pytest.mark.parametrize(
    ("name", "check", "kind", "problem", "alternative"),
    [(n, c, k, p, a) for n, c, k, _ops, p, a, _h in UNSAFE],
    ids=[case[0] for case in UNSAFE],
)
def test_unsafe_operation_is_named_and_blocks(
    unsafe_run: tuple[subprocess.CompletedProcess[str], Any],
    name: str,
    check: str,
    kind: str,
    problem: str,
    alternative: str,
) -> None:
    done, report = unsafe_run
    found = findings_of(report, name)
    assert [(f["check"], f["kind"], f["operation"]) for f in found] == [(check, kind, 1)]
    finding = found[0]
    assert (finding["app"], finding["name"]) == ("shelf", name)
    assert problem in finding["problem"]
    assert alternative in finding["alternative"]
    assert finding["acknowledged"] is None
    result = results(report)[check]
    assert (result["status"], result["severity"]) == ("fail", "error")
    assert f"shelf.{name} operation 1 {kind}" in result["message"]
    assert done.returncode == 1
    assert report["ok"] is False
    assert check in {r.id for r in parse_gate_output("web1", done.stdout).blocking}


def test_only_the_unsafe_operations_are_found(
    unsafe_run: tuple[subprocess.CompletedProcess[str], Any],
) -> None:
    _done, report = unsafe_run
    expected = {f"shelf.{case[0]}" for case in UNSAFE} | {
        f"shelf.{PARTIAL_ACK.name}",
        f"shelf.{BAD_ACK.name}",
    }
    assert {f["migration"] for f in report["migration_findings"]} == expected
    assert len(report["pending_migrations"]) == len(unsafe_migrations()) - 1
    assert results(report)["RB-DB-004"]["status"] == "pass"


def test_the_controller_explains_each_finding_once(
    unsafe_run: tuple[subprocess.CompletedProcess[str], Any],
) -> None:
    done, report = unsafe_run
    hosts = [parse_gate_output(host, done.stdout) for host in ("web1", "web2")]
    text = format_migration_findings(hosts)
    for finding in report["migration_findings"]:
        where = (
            f"{finding['check']} {finding['migration']} operation {finding['operation']} "
            f"{finding['kind']} ({finding['description']})"
        )
        if finding["acknowledged"] is None:
            assert text.count(f"{where}\n  why: {finding['problem']}\n") == 1
            assert f"  instead: {finding['alternative']}" in text
        else:
            assert text.count(f"{where}: acknowledged (migration: legacy_a is unread)") == 1
    assert "  note: releasebook_acknowledge ignored" in text


def test_acknowledging_one_operation_leaves_the_other_blocking(
    unsafe_run: tuple[subprocess.CompletedProcess[str], Any],
) -> None:
    _done, report = unsafe_run
    found = {f["operation"]: f for f in findings_of(report, PARTIAL_ACK.name)}
    assert set(found) == {1, 2}
    assert found[1]["acknowledged"] == {"by": "migration", "reason": "legacy_a is unread"}
    assert found[2]["acknowledged"] is None
    message = results(report)[NAMES]["message"]
    assert f"shelf.{PARTIAL_ACK.name} operation 2 RemoveField" in message
    assert "1 acknowledged: shelf.0019_drop_legacy operation 1 RemoveField" in message
    assert {
        "migration": f"shelf.{PARTIAL_ACK.name}",
        "by": "migration",
        "reason": "legacy_a is unread",
        "checks": [NAMES],
        "operations": [1],
    } in report["acknowledged_migrations"]


def test_an_acknowledgement_without_a_reason_does_not_count(
    unsafe_run: tuple[subprocess.CompletedProcess[str], Any],
) -> None:
    _done, report = unsafe_run
    (finding,) = findings_of(report, BAD_ACK.name)
    assert finding["acknowledged"] is None
    assert finding["note"] == (
        "releasebook_acknowledge ignored: expected a dict with a non-empty 'reason'"
    )
    assert "drops column shelf_book.legacy_c" in finding["problem"]
    assert f"shelf.{BAD_ACK.name} operation 1 RemoveField" in results(report)[NAMES]["message"]


# --- acknowledged and safe migrations pass -------------------------------------------


def test_acknowledged_and_safe_migrations_pass_and_are_reported(
    safe_run: tuple[subprocess.CompletedProcess[str], Any],
) -> None:
    done, report = safe_run
    assert done.returncode == 0, [r for r in report["results"] if r["status"] == "fail"]
    assert report["ok"] is True
    for check in MIGRATION_CHECKS:
        assert results(report)[check]["status"] == "pass"
    assert report["acknowledged_migrations"] == [
        {
            "migration": "shelf.0002_remove_blurb",
            "by": "inventory",
            "reason": INVENTORY_REASON,
            "checks": [NAMES],
            "operations": [1],
        },
        {
            "migration": "shelf.0003_rename_title",
            "by": "migration",
            "reason": MODULE_REASON,
            "checks": [NAMES],
            "operations": [1],
        },
    ]
    message = results(report)[NAMES]["message"]
    assert message.startswith("9 migration(s) to apply, nothing the old release uses is dropped")
    assert "2 acknowledged: shelf.0002_remove_blurb operation 1 RemoveField" in message
    assert f"(inventory: {INVENTORY_REASON})" in message
    assert f"(migration: {MODULE_REASON})" in message
    parsed = parse_gate_output("web1", done.stdout)
    assert parsed.ok
    assert acknowledged_record([parsed]) == report["acknowledged_migrations"]


def test_safe_additive_migrations_have_no_findings(
    safe_run: tuple[subprocess.CompletedProcess[str], Any],
) -> None:
    _done, report = safe_run
    safe = [m.name for m in ACKNOWLEDGED_AND_SAFE[3:]]
    assert all(f"shelf.{name}" in report["pending_migrations"] for name in safe)
    assert [f for name in safe for f in findings_of(report, name)] == []
    assert results(report)[LOCKS]["message"].endswith("no index build or validation locks a table")


def test_the_plan_passes_acknowledgements_on_the_gate_command_line(tmp_path: Path) -> None:
    reason = "it's unread; $(nothing) runs"
    env = load(
        inventory(
            tmp_path, f"migrations: {{acknowledge: {{shelf.0002_x: {json.dumps(reason)}}}}}\n"
        )
    )
    assert env.migrations.acknowledge == {"shelf.0002_x": reason}
    assert gate_options(env).endswith(
        " --acknowledge 'shelf.0002_x=it'\"'\"'s unread; $(nothing) runs'"
    )


def test_the_readiness_document_has_the_policy_the_checks_and_the_acknowledgements(
    tmp_path: Path,
) -> None:
    reason = "shelf's blurb | unread"
    env = load(inventory(tmp_path, f"migrations: {{acknowledge: {{shelf.0002_x: {reason!r}}}}}\n"))
    doc = render_readiness(env)
    policy = doc[doc.index("## 3. Migrations") : doc.index("## 4. Health checks")]
    assert "on the migrate host\n`web1`, after the readiness gate" in policy
    for words in ("Expand, then contract", "Long migrations", "releasebook_acknowledge = {"):
        assert words in policy
    assert "Acknowledged in `inventories/shelf.yml`:" in policy
    assert "| `shelf.0002_x` | shelf's blurb \\| unread |" in policy
    for spec in CHECKS:
        if spec.id.startswith("RB-MIG-"):
            assert f"| `{spec.id}` | {spec.title} | 36.8 " in doc


# --- the lint on SQLite -----------------------------------------------------------------


def test_on_sqlite_only_the_postgresql_lock_check_is_not_applicable(tmp_path: Path) -> None:
    deploy = make_deploy(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}")
    release = make_release(deploy, "20250101-000000-003", unsafe_migrations())
    manage(release, "migrate", "--noinput", "shelf", "0001_initial", env=clean_env())
    done, report = run_gate(load(inventory(tmp_path)), release)
    assert results(report)[LOCKS]["status"] == "pass"
    assert results(report)[LOCKS]["message"] == (
        "not applicable: the database is sqlite, not PostgreSQL"
    )
    assert {f["check"] for f in report["migration_findings"]} == {NAMES, WRITES, REVERSIBLE}
    assert results(report)[NAMES]["status"] == "fail"
    assert done.returncode == 1


def test_a_lint_still_running_fails_the_later_checks_at_once(tmp_path: Path) -> None:
    ctx = gate.Ctx(
        project=tmp_path,
        expect_settings=None,
        required=(),
        min_free_mb=0,
        deploy_path=tmp_path,
        wsgi=None,
    )
    ctx.lint_lock.acquire()  # as an abandoned RB-MIG-001 thread holds it
    (passed, message), duration_ms = gate.run_bounded(
        ctx, gate.check_migrations_keep_writes, 30, "RB-MIG-002"
    )
    assert not passed
    assert message.startswith("not checked: the migration lint did not finish")
    assert duration_ms < 5000


# --- inventory errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        (
            "migrations:\n  acknowledge:\n    shelf-0002: why\n",
            3,
            "migrations.acknowledge.shelf-0002: expected <app label>.<migration name>",
        ),
        (
            "migrations:\n  acknowledge:\n    shelf.0002_x: ''\n",
            3,
            "migrations.acknowledge.shelf.0002_x: expected the reason",
        ),
        (
            'migrations:\n  acknowledge:\n    shelf.0002_x: "two\\nlines"\n',
            3,
            "expected a one-line reason",
        ),
        ("migrations:\n  acknowledge: [shelf.0002_x]\n", 2, "expected a mapping of app.migration"),
        ("migrations:\n  acknowlege: {}\n", 2, "migrations.acknowlege: unknown key"),
    ],
)
def test_bad_acknowledgements_name_file_line_and_key(
    tmp_path: Path, section: str, line: int, message: str
) -> None:
    file = inventory(tmp_path, section)
    first = len(file.read_text().splitlines()) - section.count("\n")
    with pytest.raises(InventoryError) as raised:
        load(file)
    assert str(raised.value).startswith(f"{file}:{first + line}: ")
    assert message in str(raised.value)
