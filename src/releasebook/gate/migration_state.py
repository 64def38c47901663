#!/usr/bin/env python3
"""The migration state of a release's database, and what going back to an older release
would have to unapply.

Self-contained like ``gate.py`` (the standard library and Django only): the build ships
it as ``.releasebook/migration_state.py`` and a host runs it from a release directory
with that release's interpreter, settings and environment::

    cd <release_dir> && <with-env launcher> venv/bin/python .releasebook/migration_state.py \\
        leaves --json
    cd <release_dir> && <with-env launcher> venv/bin/python .releasebook/migration_state.py \\
        migrate --json
    cd <newer release> && <with-env launcher> venv/bin/python .releasebook/migration_state.py \\
        plan-to <older release dir> [--python PATH] --json

``leaves``: the applied leaf migration of every app (what a release records after
``migrate``)::

    {"ok": true, "version": 1, "command": "leaves", "database": "default",
     "leaves": {"app": ["0003_x"], ...}}

``migrate``: Django's ``migrate --noinput`` (its output on stderr), then what ``migrate
--check`` asks (the plan to every leaf migration must be empty) and the ``leaves``
above, in one process so the release boots Django once for all three::

    {"ok": true, "version": 1, "command": "migrate", "database": "default",
     "applied": ["app.0003_x", ...], "leaves": {"app": ["0003_x"], ...}}

``plan-to DIR``: the applied migrations the older release in DIR does not have, in the
order they must be unapplied, each with whether Django could unapply it, and the
``manage.py migrate <app> <target>`` commands that unapply them (run from this, the
newer release, which has their files)::

    {"ok": true, "version": 1, "command": "plan-to", "database": "default",
     "target": DIR, "reversible": bool,
     "newer": [{"migration": "app.0003_x", "app", "name", "reversible": bool,
                "irreversible_operations": [{"operation": 1, "kind": "RunPython",
                                             "description": "..."}]}],
     "commands": [{"app": "app", "target": "0002_y" | "zero",
                   "argv": ["migrate", "app", "0002_y"]}],
     "not_on_disk": ["app.0004_z", ...]}

The older release's migrations are listed by Django's own loader, running with that
release's interpreter (``DIR/venv/bin/python`` unless ``--python``) and code:
``disk`` is that command, and prints ``{"ok": true, ..., "migrations": ["app.0001_a",
...]}`` (replaced migrations included) without touching the database. ``not_on_disk``
names applied migrations of this release's apps that neither release has files for (left
by a newer release whose rollback kept the schema): nothing here can unapply them, so
``reversible`` is false while any remain.

Errors print ``{"ok": false, "version": 1, "command": ..., "error": "..."}`` with
``--json`` (a message on stderr without) and exit 1; bad usage exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote

VERSION = 1
DISK_TIMEOUT = 120.0
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*:)[^@/\s]+@")

Key = tuple[str, str]  # (app label, migration name)


class Problem(Exception):
    """A failure to report as the command's error."""


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)[:500]


def _label(key: Key) -> str:
    return f"{key[0]}.{key[1]}"


def setup_django(project: Path) -> None:
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise Problem("DJANGO_SETTINGS_MODULE is not set (run through the release's env launcher)")
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    import django

    try:
        django.setup()
    except Exception as exc:
        raise Problem(
            f"settings {os.environ['DJANGO_SETTINGS_MODULE']}: {_describe(exc)}"
        ) from None


def irreversible(operation: Any) -> list[str]:
    """Names of the operations Django could not unapply (its executor raises
    IrreversibleError for them), those inside SeparateDatabaseAndState included."""
    from django.db import migrations

    if isinstance(operation, migrations.SeparateDatabaseAndState):
        return [
            f"{type(operation).__name__}/{name}"
            for inner in operation.database_operations
            for name in irreversible(inner)
        ]
    return [] if operation.reversible else [type(operation).__name__]


def _executor(alias: str) -> Any:
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    if alias not in connections:
        raise Problem(f"no database {alias!r} in DATABASES")
    try:
        return MigrationExecutor(connections[alias])
    except Exception as exc:
        raise Problem(f"database {alias}: {_describe(exc)}") from None


def applied_leaves(executor: Any) -> dict[str, list[str]]:
    """Per app, its applied migrations that no applied migration of the app follows."""
    graph = executor.loader.graph
    applied = {k for k in executor.loader.applied_migrations if k in graph.nodes}
    leaves: dict[str, list[str]] = {}
    for key in sorted(applied):
        children = graph.node_map[key].children
        if not any(child[0] == key[0] and child in applied for child in children):
            leaves.setdefault(key[0], []).append(key[1])
    return leaves


def command_leaves(args: argparse.Namespace) -> dict[str, Any]:
    setup_django(args.project_dir)
    return {"database": args.database, "leaves": applied_leaves(_executor(args.database))}


def command_migrate(args: argparse.Namespace) -> dict[str, Any]:
    setup_django(args.project_dir)
    from django.core.management import call_command

    before = _executor(args.database)
    todo = [_label((m.app_label, m.name)) for m, _ in _pending_plan(before)]
    try:
        # The gate ran Django's system checks on this release with these settings.
        call_command("migrate", database=args.database, interactive=False, skip_checks=True)
    except Exception as exc:
        sys.stderr.write(_redact(traceback.format_exc()))
        raise Problem(f"migrate: {_describe(exc)}") from None
    after = _executor(args.database)
    left = [_label((m.app_label, m.name)) for m, _ in _pending_plan(after)]
    if left:
        raise Problem(f"unapplied migrations remain after migrate: {', '.join(left)}")
    return {"database": args.database, "applied": todo, "leaves": applied_leaves(after)}


def _pending_plan(executor: Any) -> list[tuple[Any, bool]]:
    """What ``migrate`` would apply now: the plan to every leaf migration."""
    return list(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def command_disk(args: argparse.Namespace) -> dict[str, Any]:
    setup_django(args.project_dir)
    from django.db.migrations.loader import MigrationLoader

    try:
        loader = MigrationLoader(None, ignore_no_migrations=True)
    except Exception as exc:
        raise Problem(f"migrations could not be loaded: {_describe(exc)}") from None
    known: set[Key] = set(loader.disk_migrations)
    for migration in loader.disk_migrations.values():
        known.update((app, name) for app, name in migration.replaces or ())
    return {"migrations": sorted(_label(k) for k in known)}


class _Listing:
    """The migrations the older release has, listed by its own interpreter and code, in
    a process started before this one sets Django up, so the two boots overlap."""

    def __init__(self, target: Path, python: Path) -> None:
        if not python.is_file():
            raise Problem(
                f"no interpreter at {python}: the release's virtualenv is gone (pass --python)"
            )
        self.target, self.python = target, python
        script = str(Path(__file__).resolve())
        try:
            self.process = subprocess.Popen(
                [str(python), script, "disk", "--json", "--project-dir", str(target)],
                cwd=target,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            raise Problem(f"cannot run {python}: {exc.strerror}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()

    def result(self) -> set[Key]:
        try:
            stdout, stderr = self.process.communicate(timeout=DISK_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.stop()
            raise Problem(
                f"listing the migrations of {self.target} took over {DISK_TIMEOUT:g}s"
            ) from None
        try:
            report = json.loads(stdout.strip().splitlines()[-1])
            names = report["migrations"] if report.get("ok") else None
        except (ValueError, IndexError, KeyError, TypeError, AttributeError):
            report, names = {}, None
        if not isinstance(names, list) or not all(isinstance(n, str) and "." in n for n in names):
            reason = report.get("error") if isinstance(report, dict) else None
            tail = (stderr.strip().splitlines() or ["no output"])[-1]
            raise Problem(
                f"could not list the migrations of {self.target} with {self.python} "
                f"(exit {self.process.returncode}): {reason or tail}"
            )
        return {(app, name) for app, _, name in (n.partition(".") for n in names)}


def _targets(graph: Any, applied: set[Key], newer: set[Key]) -> list[tuple[str, str | None]]:
    """Per app with newer migrations, the applied migration to go back to (None: zero)."""
    targets: list[tuple[str, str | None]] = []
    for app in sorted({k[0] for k in newer}):
        kept = {k for k in applied if k[0] == app and k not in newer}
        leaves = sorted(
            k
            for k in kept
            if not any(c[0] == app and c in kept for c in graph.node_map[k].children)
        )
        if len(leaves) > 1:
            raise Problem(
                f"{app}: the older release's applied migrations end in "
                + ", ".join(_label(k) for k in leaves)
                + "; merge them before unapplying"
            )
        targets.append((app, leaves[0][1] if leaves else None))
    return targets


def _newer_entry(migration: Any) -> dict[str, Any]:
    operations = [
        {"operation": number, "kind": kind, "description": str(operation.describe())}
        for number, operation in enumerate(migration.operations, start=1)
        for kind in irreversible(operation)
    ]
    return {
        "migration": f"{migration.app_label}.{migration.name}",
        "app": migration.app_label,
        "name": migration.name,
        "reversible": not operations,
        "irreversible_operations": operations,
    }


def _order(plan: Iterable[tuple[Any, bool]]) -> list[str]:
    """Apps in the order their first migration is unapplied."""
    return list(dict.fromkeys(migration.app_label for migration, _backwards in plan))


def command_plan_to(args: argparse.Namespace) -> dict[str, Any]:
    target = args.target.absolute()
    if not target.is_dir():
        raise Problem(f"{target}: not a directory (expected an older release's directory)")
    listing = _Listing(target, args.python or target / "venv" / "bin" / "python")
    try:
        setup_django(args.project_dir)
        known = listing.result()
    finally:
        listing.stop()
    executor = _executor(args.database)
    loader = executor.loader
    graph = loader.graph

    def known_to_target(key: Key) -> bool:
        replaces = [tuple(r) for r in graph.nodes[key].replaces or ()]
        return key in known or (bool(replaces) and all(r in known for r in replaces))

    applied = {k for k in loader.applied_migrations if k in graph.nodes}
    newer = {k for k in applied if not known_to_target(k)}
    replaced = {tuple(r) for m in graph.nodes.values() for r in m.replaces or ()}
    not_on_disk = sorted(
        _label(k)
        for k in loader.applied_migrations
        if k not in graph.nodes
        and k not in replaced
        and k not in known
        and k[0] in loader.migrated_apps
    )
    targets = _targets(graph, applied, newer)
    plan = executor.migration_plan(targets) if targets else []
    if any(not backwards for _migration, backwards in plan):
        raise Problem("Django planned to apply migrations on the way back; refusing to plan")
    back_to = dict(targets)
    entries = [_newer_entry(migration) for migration, _backwards in plan]
    return {
        "database": args.database,
        "target": str(target),
        "reversible": all(e["reversible"] for e in entries) and not not_on_disk,
        "newer": entries,
        "commands": [
            {
                "app": app,
                "target": back_to[app] or "zero",
                "argv": ["migrate", app, back_to[app] or "zero"],
            }
            for app in _order(plan)
            if app in back_to
        ],
        "not_on_disk": not_on_disk,
    }


COMMANDS = {
    "leaves": command_leaves,
    "migrate": command_migrate,
    "plan-to": command_plan_to,
    "disk": command_disk,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="migration_state.py",
        description="releasebook: a release's migration state (run inside a release)",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document")
    common.add_argument("--database", default="default", metavar="ALIAS")
    common.add_argument("--project-dir", type=Path, default=Path.cwd(), metavar="PATH")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("leaves", parents=[common], help="the applied leaf migration of each app")
    commands.add_parser(
        "migrate", parents=[common], help="apply the pending migrations, check, print the leaves"
    )
    plan_to = commands.add_parser(
        "plan-to", parents=[common], help="what going back to an older release would unapply"
    )
    plan_to.add_argument("target", type=Path, metavar="RELEASE_DIR")
    plan_to.add_argument(
        "--python", type=Path, metavar="PATH", help="its interpreter (default: its venv's)"
    )
    commands.add_parser("disk", parents=[common], help="the migrations this release has")
    args = parser.parse_args(argv)
    args.project_dir = args.project_dir.absolute()
    return args


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


def _text(report: dict[str, Any]) -> str:
    if not report["ok"]:
        return ""
    if report["command"] in ("leaves", "migrate"):
        return "".join(f"{app} {' '.join(names)}\n" for app, names in report["leaves"].items())
    if report["command"] == "disk":
        return "".join(f"{name}\n" for name in report["migrations"])
    lines = [
        f"{e['migration']} {'reversible' if e['reversible'] else 'IRREVERSIBLE'}"
        for e in report["newer"]
    ]
    lines += [f"not on disk: {name}" for name in report["not_on_disk"]]
    lines += ["manage.py " + " ".join(c["argv"]) for c in report["commands"]]
    return "".join(f"{line}\n" for line in lines or ["nothing newer is applied"])


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
    if args.json:
        out.write(json.dumps(report) + "\n")
    else:
        out.write(_text(report))
    if not report["ok"]:
        sys.stderr.write(f"migration_state.py {args.command}: {report['error']}\n")
    out.flush()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
