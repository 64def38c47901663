#!/usr/bin/env python3
"""Backups of a release's database, their restore, and the restore drill, on the host.

Self-contained like ``gate.py`` (the standard library and Django only): the build ships
it as ``.releasebook/db_backup.py`` and a host runs it from a release directory with that
release's interpreter, settings and environment (its ``with-env`` launcher), so the
database's credentials come from the release's env file and never from a command line::

    cd <release_dir> && <launcher> venv/bin/python .releasebook/db_backup.py \\
        dump --dir DIR --keep N --label LABEL [--when always|pending|pending-postgresql|postgresql]
    ... db_backup.py list --dir DIR
    ... db_backup.py verify --dir DIR --name NAME
    ... db_backup.py restore --dir DIR --name NAME
    ... db_backup.py drill --dir DIR [--name NAME]

``dump``: PostgreSQL with ``pg_dump -Fc`` (the connection is passed to it in ``PG*``
environment variables, never as arguments), SQLite with its online backup API. The file
is ``<UTC timestamp>-<release id>-<git sha>.dump`` (``.sqlite3``), mode 0600, with
``<file>.sha256`` (``sha256sum -c`` reads it) and a manifest ``<name>.json``: the
release and git sha it was taken from, the engine, the size, the checksum, the applied
migrations, how long it took. Only the newest ``--keep`` backups are kept. With
``--when pending`` it is taken only when migrations are pending (``pending-postgresql``:
and the database is PostgreSQL), with ``--when postgresql`` only when the database is
PostgreSQL (a rollback's migrations are applied, not pending); otherwise it says why not.
Where the release's readiness gate recorded an empty plan (``.releasebook/pending-migrations``
empty), ``pending`` says so without setting Django up.

``restore``: checks the checksum, then replaces the database's contents with the
backup's (PostgreSQL: tables the backup does not have are dropped, then ``pg_restore
--clean --if-exists --single-transaction``).

``drill``: restores the newest backup (or ``--name``) into a scratch database (a new
PostgreSQL database, or a temporary SQLite file), compares its migrations with this
release's and its tables' row counts with the live database's, drops it, and reports
how long the restore took.

Every command prints one JSON object on stdout (``{"ok": true, "version": 1,
"command": ..., ...}``, or ``"ok": false`` with ``"error"``, exit 1); bad usage exits 2.
Passwords are redacted from every message.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote

VERSION = 1
NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9._-]+$")
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*:)[^@/\s]+@")
TOC_TABLE = re.compile(r"^\d+; \d+ \d+ TABLE (\S+) (\S+) ")
DRILL_ALIAS = "releasebook_drill"
WHEN = ("always", "pending", "pending-postgresql", "postgresql")
# Next to this script: the pending migrations the release's readiness gate found (one per
# line), written only when it computed the plan (gate.PENDING_MIGRATIONS).
PENDING_MIGRATIONS = "pending-migrations"


class Problem(Exception):
    """A failure to report as the command's error."""


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)[:500]


def setup_django() -> None:
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise Problem("DJANGO_SETTINGS_MODULE is not set (run through the release's env launcher)")
    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.insert(0, here)
    import django

    try:
        django.setup()
    except Exception as exc:
        settings = os.environ["DJANGO_SETTINGS_MODULE"]
        raise Problem(f"settings {settings}: {_describe(exc)}") from None


def _database() -> dict[str, Any]:
    from django.db import connections

    return dict(connections["default"].settings_dict)


def engine_of(db: dict[str, Any]) -> str:
    engine = str(db.get("ENGINE", ""))
    if "postgresql" in engine or "postgis" in engine:
        return "postgresql"
    if "sqlite" in engine:
        return "sqlite"
    raise Problem(f"database engine {engine!r}: only PostgreSQL and SQLite can be backed up")


def pg_environ(db: dict[str, Any], name: str | None = None) -> dict[str, str]:
    """The connection for libpq's tools, in its environment variables: no argument carries
    a credential (``ps`` shows arguments to every user)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    options = db.get("OPTIONS") or {}
    pairs = {
        "PGHOST": db.get("HOST"),
        "PGPORT": db.get("PORT"),
        "PGUSER": db.get("USER"),
        "PGPASSWORD": db.get("PASSWORD"),
        "PGDATABASE": name or db.get("NAME"),
        "PGSSLMODE": options.get("sslmode"),
        "PGAPPNAME": "releasebook-backup",
    }
    env.update({k: str(v) for k, v in pairs.items() if v not in (None, "")})
    return env


def _run(argv: list[str], env: dict[str, str]) -> None:
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        hint = "install the PostgreSQL client tools"
        raise Problem(f"{argv[0]}: {_describe(exc)} ({hint})") from None
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise Problem(f"{argv[0]} exited {done.returncode}: {tail}")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _release() -> dict[str, str]:
    try:
        data = json.loads(Path("release.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    return {
        "release_id": str(data.get("release_id") or "unknown"),
        "git_sha": str(data.get("git_sha") or "unknown"),
    }


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def applied(alias: str = "default") -> list[str]:
    from django.db import connections
    from django.db.migrations.recorder import MigrationRecorder

    recorder = MigrationRecorder(connections[alias])
    if not recorder.has_table():
        return []
    return sorted(f"{app}.{name}" for app, name in recorder.applied_migrations())


def pending() -> list[str]:
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections["default"])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{m.app_label}.{m.name}" for m, backwards in plan if not backwards]


def manifests(directory: Path) -> list[dict[str, Any]]:
    """The backups in ``directory``, oldest first (names start with their UTC time)."""
    found: list[dict[str, Any]] = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("name") == path.stem and NAME.fullmatch(path.stem):
            found.append(data)
    return sorted(found, key=lambda data: _taken_order(str(data["name"])))


def _taken_order(name: str) -> tuple[str, int]:
    """A second backup in the same second is ``<name>.1``: newer than ``<name>``, though
    it sorts before it as text."""
    base, dot, counter = name.rpartition(".")
    return (base, int(counter)) if dot and counter.isdigit() else (name, 0)


def find(directory: Path, name: str | None) -> dict[str, Any]:
    known = manifests(directory)
    if name is None:
        if not known:
            raise Problem(f"no backup in {directory}")
        return known[-1]
    wanted = Path(name).name
    for suffix in (".json", ".sha256", ".dump", ".sqlite3"):
        wanted = wanted.removesuffix(suffix)
    for data in known:
        if data["name"] == wanted:
            return data
    raise Problem(f"unknown backup {name!r}: not in {directory}")


def verified(directory: Path, manifest: dict[str, Any]) -> Path:
    path = directory / str(manifest["file"])
    if not path.is_file():
        raise Problem(f"backup {manifest['name']}: {path.name} is missing")
    if sha256(path) != manifest.get("sha256"):
        raise Problem(f"backup {manifest['name']}: the checksum of {path.name} does not match")
    return path


# --- dump ------------------------------------------------------------------------


def gate_found_nothing_pending() -> bool:
    """The readiness gate of this release computed the migration plan against the
    database and found it empty (it runs under the same environment lock, just before)."""
    try:
        return (Path(__file__).resolve().parent / PENDING_MIGRATIONS).read_text() == ""
    except OSError:
        return False


def command_dump(args: argparse.Namespace) -> dict[str, Any]:
    if args.when in ("pending", "pending-postgresql") and gate_found_nothing_pending():
        return {"skipped": "no migrations to apply (the readiness gate found none)"}
    setup_django()
    db = _database()
    engine = engine_of(db)
    if args.when in ("pending-postgresql", "postgresql") and engine != "postgresql":
        return {"skipped": f"the database is {engine}; backup.before_migrate is not set"}
    if args.when in ("pending", "pending-postgresql"):
        todo = pending()
        if not todo:
            return {"skipped": "no migrations to apply"}
    directory: Path = args.dir
    os.umask(0o077)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    release = _release()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{stamp}-{_safe(release['release_id'])}-{_safe(release['git_sha'][:12])}"
    name, n = base, 0
    while (directory / f"{name}.json").exists():  # two in one second: never overwrite
        n += 1
        name = f"{base}.{n}"
    file = directory / (name + (".dump" if engine == "postgresql" else ".sqlite3"))
    tmp = file.with_name(file.name + ".tmp")
    started = time.monotonic()
    migrations = applied()
    try:
        if engine == "postgresql":
            _run(["pg_dump", "-Fc", "--no-owner", "-f", str(tmp)], pg_environ(db))
        else:
            source = sqlite3.connect(f"file:{db['NAME']}?mode=ro", uri=True)
            target = sqlite3.connect(tmp)
            try:
                source.backup(target)
            finally:
                target.close()
                source.close()
        tmp.chmod(0o600)
        tmp.rename(file)
    finally:
        tmp.unlink(missing_ok=True)
    digest = sha256(file)
    (directory / f"{file.name}.sha256").write_text(f"{digest}  {file.name}\n", encoding="utf-8")
    manifest = {
        "name": name,
        "file": file.name,
        "sha256": digest,
        "size": file.stat().st_size,
        "engine": engine,
        **release,
        "label": args.label,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.monotonic() - started, 3),
        "migrations": migrations,
    }
    json_tmp = directory / f"{name}.json.tmp"
    json_tmp.write_text(json.dumps(manifest, sort_keys=True) + "\n", encoding="utf-8")
    json_tmp.rename(directory / f"{name}.json")
    return {"backup": manifest, "removed": _retain(directory, args.keep)}


def _retain(directory: Path, keep: int) -> list[str]:
    old = manifests(directory)[:-keep] if keep > 0 else []
    for data in old:
        for suffix in ("", ".sha256"):
            (directory / f"{data['file']}{suffix}").unlink(missing_ok=True)
        (directory / f"{data['name']}.json").unlink(missing_ok=True)
    return [str(d["name"]) for d in old]


# --- list, verify ------------------------------------------------------------------


def command_list(args: argparse.Namespace) -> dict[str, Any]:
    return {"backups": manifests(args.dir)}


def command_verify(args: argparse.Namespace) -> dict[str, Any]:
    manifest = find(args.dir, args.name)
    verified(args.dir, manifest)
    return {"backup": manifest}


# --- restore -------------------------------------------------------------------------


def _tables(alias: str) -> list[str]:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        return sorted(connections[alias].introspection.table_names(cursor))


def _pg_restore(db: dict[str, Any], path: Path, name: str, *, clean: bool) -> None:
    argv = ["pg_restore", "--no-owner", "--no-privileges", "--single-transaction"]
    argv += ["--exit-on-error", *(["--clean", "--if-exists"] if clean else [])]
    _run([*argv, "-d", name, str(path)], pg_environ(db, name))


def _dump_tables(db: dict[str, Any], path: Path) -> set[str]:
    env = pg_environ(db)
    done = subprocess.run(
        ["pg_restore", "-l", str(path)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise Problem(f"pg_restore -l exited {done.returncode}: {done.stderr.strip()[:300]}")
    return {m.group(2) for line in done.stdout.splitlines() if (m := TOC_TABLE.match(line))}


def command_restore(args: argparse.Namespace) -> dict[str, Any]:
    setup_django()
    db = _database()
    manifest = find(args.dir, args.name)
    path = verified(args.dir, manifest)
    engine = engine_of(db)
    if manifest.get("engine") != engine:
        raise Problem(f"backup {manifest['name']} is of {manifest.get('engine')}, not {engine}")
    started = time.monotonic()
    dropped: list[str] = []
    if engine == "postgresql":
        from django.db import connections

        keep = _dump_tables(db, path)
        dropped = [t for t in _tables("default") if t not in keep]
        if dropped:
            quote = connections["default"].ops.quote_name
            with connections["default"].cursor() as cursor:
                cursor.execute(
                    "DROP TABLE IF EXISTS " + ", ".join(quote(t) for t in dropped) + " CASCADE"
                )
        connections["default"].close()
        _pg_restore(db, path, str(db["NAME"]), clean=True)
    else:
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        target = sqlite3.connect(db["NAME"])
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
    return {
        "backup": manifest,
        "dropped": dropped,
        "seconds": round(time.monotonic() - started, 3),
    }


# --- the drill ------------------------------------------------------------------------


def _count(alias: str, table: str) -> int:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        quoted = connections[alias].ops.quote_name(table)  # an introspected table name
        cursor.execute(f"SELECT COUNT(*) FROM {quoted}")  # noqa: S608
        return int(cursor.fetchone()[0])


def _on_disk() -> set[str]:
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    known = {f"{a}.{n}" for a, n in loader.disk_migrations}
    for migration in loader.disk_migrations.values():
        known.update(f"{a}.{n}" for a, n in getattr(migration, "replaces", []) or [])
    return known


def command_drill(args: argparse.Namespace) -> dict[str, Any]:
    setup_django()
    from django.db import connections

    db = _database()
    engine = engine_of(db)
    manifest = find(args.dir, args.name)
    path = verified(args.dir, manifest)
    scratch_dir: str | None = None
    scratch = ""
    created = False
    try:
        started = time.monotonic()
        if engine == "postgresql":
            scratch = f"{str(db['NAME'])[:40]}_rbdrill_{os.getpid()}"
            quote = connections["default"].ops.quote_name
            with connections["default"].cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {quote(scratch)}")
            created = True
            _pg_restore(db, path, scratch, clean=False)
        else:
            scratch_dir = tempfile.mkdtemp(prefix="rbdrill-")
            scratch = str(Path(scratch_dir) / "drill.sqlite3")
            shutil.copyfile(path, scratch)
            sqlite3.connect(scratch).execute("PRAGMA integrity_check").fetchall()
        seconds = round(time.monotonic() - started, 3)
        settings = copy.deepcopy(connections.settings["default"])
        settings["NAME"] = scratch
        connections.settings[DRILL_ALIAS] = settings
        restored = set(applied(DRILL_ALIAS))
        live = set(applied())
        disk = _on_disk()
        tables = []
        live_tables = set(_tables("default"))
        restored_tables = set(_tables(DRILL_ALIAS))
        for table in sorted(live_tables | restored_tables):
            tables.append(
                {
                    "table": table,
                    "live": _count("default", table) if table in live_tables else None,
                    "backup": _count(DRILL_ALIAS, table) if table in restored_tables else None,
                }
            )
        connections[DRILL_ALIAS].close()
        unknown = sorted(restored - disk)
        return {
            "backup": manifest,
            "restore_seconds": seconds,
            "migrations": {
                "consistent": not unknown,
                "unknown_to_live_release": unknown,
                "to_apply": sorted(disk & (live - restored)),
                "same_as_live": restored == live,
            },
            "tables": tables,
            "missing_tables": sorted(live_tables - restored_tables),
        }
    finally:
        if DRILL_ALIAS in connections.settings:
            connections[DRILL_ALIAS].close()
        if created:
            quote = connections["default"].ops.quote_name
            with connections["default"].cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {quote(scratch)}")
        if scratch_dir is not None:
            shutil.rmtree(scratch_dir, ignore_errors=True)


COMMANDS = {
    "dump": command_dump,
    "list": command_list,
    "verify": command_verify,
    "restore": command_restore,
    "drill": command_drill,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="db_backup.py", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = sub.add_parser(name)
        command.add_argument("--dir", type=Path, required=True)
        command.add_argument("--json", action="store_true")
        if name == "dump":
            command.add_argument("--keep", type=int, default=10)
            command.add_argument("--label", default="backup")
            command.add_argument("--when", choices=WHEN, default="always")
        if name in ("verify", "restore"):
            command.add_argument("--name", required=True)
        if name == "drill":
            command.add_argument("--name")
    return parser.parse_args(argv)


def _redact(text: str) -> str:
    text = URL_PASSWORD.sub(r"\g<head>***@", text)
    secrets: set[str] = set()
    if "django.conf" in sys.modules:
        from django.conf import settings

        if settings.configured:
            for database in (getattr(settings, "DATABASES", {}) or {}).values():
                if database.get("PASSWORD"):
                    secrets.add(str(database["PASSWORD"]))
    for value in os.environ.values():
        secrets.update(unquote(m) for m in re.findall(r"://[^:@/\s]*:([^@/\s]+)@", value))
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _claim_stdout() -> TextIO:
    """Keep fd 1 for the report; anything else written to stdout goes to stderr."""
    sys.stdout.flush()
    report = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.dont_write_bytecode = True
    out = _claim_stdout()
    head: dict[str, Any] = {"version": VERSION, "command": args.command}
    try:
        report = {"ok": True, **head, **COMMANDS[args.command](args)}
    except Problem as exc:
        report = {"ok": False, **head, "error": _redact(str(exc))}
    except Exception as exc:
        report = {"ok": False, **head, "error": _redact(_describe(exc))}
    out.write(json.dumps(report, sort_keys=True) + "\n")
    if not report["ok"]:
        sys.stderr.write(f"db_backup.py {args.command}: {report['error']}\n")
    out.flush()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
