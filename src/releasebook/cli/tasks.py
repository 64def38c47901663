"""The Invoke collection: parse flags, call the library, turn errors into exit codes.

Exit codes: 0 ok; 1 the release failed (nothing live changed, or every host was rolled
back and verified) or a host was unreachable; 2 bad input (inventory, flags, ids);
3 a rollback failed and hosts need attention; 4 the environment is locked by another
run; 5 a host's SSH key changed; 130 interrupted (Ctrl-C, SIGTERM, SIGHUP) outside a run.
"""

from __future__ import annotations

import json as jsonlib
import secrets

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from releasebook.cli.backups import BACKUP_TASKS
from releasebook.cli.init import init
from releasebook.cli.kit import environments, project_root, session
from releasebook.cli.limits import HOSTS_HELP, ROLES_HELP, LimitedTask, limit_hosts
from releasebook.cli.local_checks import local_checks
from releasebook.cli.ops import OPS_TASKS, app
from releasebook.cli.plan_print import print_plan
from releasebook.cli.provision import provision
from releasebook.cli.safety import SAFETY_TASKS
from releasebook.deploy.ops import status as ops_status
from releasebook.deploy.release import PREFLIGHT_STEPS, UNMAINTAINED_STEPS
from releasebook.deploy.release import release as release_run
from releasebook.deploy.rollback import rollback as rollback_run
from releasebook.deploy.running import lock_info_for
from releasebook.errors import UsageError
from releasebook.gate.command import validate_skips
from releasebook.inventory import Environment, load_environment
from releasebook.inventory.secrets import read_secrets
from releasebook.plan.build import Run, build_plan
from releasebook.plan.facts import HostFacts, validate_release_id
from releasebook.plan.model import Plan
from releasebook.plan.schedule import parse_batch_size
from releasebook.plan.source import find_source, new_release
from releasebook.render.ansible import render_playbooks
from releasebook.render.runbook import render_all
from releasebook.runbooks.rollback import rollback_steps


def _skips(skip: list[str], reason: str) -> dict[str, str]:
    ids = validate_skips(skip)
    if ids and not reason.strip():
        raise UsageError("--skip needs --reason: say why, it is recorded in the history")
    return dict.fromkeys(ids, reason.strip())


def _lock_wait(seconds: float) -> float:
    if seconds < 0:
        raise UsageError(f"--wait {seconds:g}: expected seconds to wait, 0 or more")
    return seconds


def _dry_plan(
    env: Environment, command: str, steps: tuple[str, ...] | None, ref: str = "HEAD"
) -> Plan:
    source = find_source(env)
    info = new_release(env, source, ref=ref)
    run = Run(
        release=info,
        lock=lock_info_for(command, info.release_id),
        marker=secrets.token_hex(8),
        action=command,
    )
    return build_plan(env, "release", source=source, run=run, steps=steps)


def _dry_rollback(env: Environment, to: str, *, migrate: bool, maintenance: bool) -> Plan:
    """The rollback's plan before any host is read: what the hosts decide (the release
    to go back to, the live one, the migrations to unapply) are the runbook's variables."""
    steps = rollback_steps(unapply=migrate, maintenance=maintenance)
    return build_plan(env, "rollback", source=find_source(env), run=None, steps=steps)


def _dry_rollback_notes(to: str, migrate: bool) -> list[str]:
    going = f"--to {to}" if to else "the release live before the current one, on each host"
    notes = [
        "Read from the hosts when it runs, shown here as variables:",
        f"  RELEASE: the release to go back to ({going})",
        "  LIVE: the release live now",
    ]
    if migrate:
        notes.append(
            "  APP, TARGET: one unapply line per app the schema step lists; the backup and "
            "the unapply run only when it lists migrations to unapply"
        )
    return notes


SKIP_HELP = "readiness check id to skip (repeatable); needs --reason"
WAIT_HELP = "if another run holds the lock, wait up to this many seconds for it"
REASON_HELP = "why the checks given with --skip are skipped (recorded with your name)"
BATCH_HELP = "restart and verify web hosts N at a time, or N% of them (e.g. 25%)"
JSON_HELP = "machine-readable events, one JSON object per line"
VERBOSE_HELP = "show each command and its output (the run's log always has them)"
REF_HELP = "the git ref (commit, tag, branch) to release; default HEAD"


@task(
    klass=LimitedTask,
    iterable=["skip"],
    help={
        "env": "inventory to release to: inventories/<env>.yml",
        "dry_run": "print the exact plan (steps x hosts x commands) and touch nothing",
        "ref": REF_HELP,
        "hosts": HOSTS_HELP,
        "roles": ROLES_HELP,
        "json": JSON_HELP,
        "verbose": VERBOSE_HELP,
        "batch_size": BATCH_HELP,
        "skip": SKIP_HELP,
        "reason": REASON_HELP,
        "wait": WAIT_HELP,
        "maintenance": "run the migrations in maintenance mode: web hosts answer 503 from "
        "before migrate until the new release is verified",
    },
)
def release(
    c: Context,
    env: str = "",
    dry_run: bool = False,
    json: bool = False,
    verbose: bool = False,
    batch_size: str = "",
    skip: list[str] | None = None,
    reason: str = "",
    wait: float = 0,
    maintenance: bool = False,
    ref: str = "",
    hosts: str = "",
    roles: str = "",
) -> None:
    """Release the app's committed HEAD (or --ref) to an environment's hosts, verified."""
    with session("release") as s:
        environment, limited = limit_hosts(s.load(env), hosts, roles)
        batch = parse_batch_size(batch_size, len(environment.hosts_with("web")))
        skips = _skips(skip or [], reason)
        if dry_run:
            checked = local_checks(environment)
            s.masker.add(read_secrets(environment.env_file.secrets, environment.root).values())
            if limited:
                s.print(limited)
            steps = None if maintenance else UNMAINTAINED_STEPS
            print_plan(_dry_plan(environment, "release", steps, ref or "HEAD"), s.print, checked)
            return
        lock_wait = _lock_wait(wait)
        reporter = s.reporter(json, verbose=verbose)
        if limited:
            reporter.message(limited)
        release_run(
            environment,
            reporter,
            s.masker,
            batch_size=batch,
            skips=skips,
            lock_wait=lock_wait,
            maintenance=maintenance,
            ref=ref or "HEAD",
        )
        web = environment.hosts_with("web")
        if web and not json:
            s.print(f"serving at http://{web[0].bind}/ (Host: {environment.health.host_header})")


@task(
    klass=LimitedTask,
    iterable=["skip"],
    help={
        "env": "inventory to check: inventories/<env>.yml",
        "dry_run": "print the exact plan and touch nothing",
        "ref": REF_HELP,
        "hosts": HOSTS_HELP,
        "roles": ROLES_HELP,
        "json": JSON_HELP,
        "verbose": VERBOSE_HELP,
        "skip": SKIP_HELP,
        "reason": REASON_HELP,
        "wait": WAIT_HELP,
    },
)
def preflight(
    c: Context,
    env: str = "",
    dry_run: bool = False,
    json: bool = False,
    verbose: bool = False,
    skip: list[str] | None = None,
    reason: str = "",
    wait: float = 0,
    ref: str = "",
    hosts: str = "",
    roles: str = "",
) -> None:
    """Run the readiness gate on every host against a candidate release, then remove it."""
    with session("preflight") as s:
        environment, limited = limit_hosts(s.load(env), hosts, roles)
        skips = _skips(skip or [], reason)
        if dry_run:
            checked = local_checks(environment)
            s.masker.add(read_secrets(environment.env_file.secrets, environment.root).values())
            plan = _dry_plan(environment, "preflight", PREFLIGHT_STEPS, ref or "HEAD")
            print_plan(plan, s.print, checked)
            return
        lock_wait = _lock_wait(wait)
        reporter = s.reporter(json, verbose=verbose)
        if limited:
            reporter.message(limited)
        release_run(
            environment,
            reporter,
            s.masker,
            skips=skips,
            stop_after="gate",
            lock_wait=lock_wait,
            ref=ref or "HEAD",
        )


@task(
    klass=LimitedTask,
    help={
        "env": "inventory to roll back: inventories/<env>.yml",
        "to": "release id to go back to (default: the release live before the current one)",
        "migrate": "also unapply the migrations that release does not have (reversible "
        "only), after a database backup where the inventory takes them (backup.before_migrate)",
        "maintenance": "web hosts answer 503 from before the backup, unapply and switch until "
        "the release gone back to is verified",
        "dry_run": "print the plan (steps x hosts x commands) and touch nothing",
        "hosts": HOSTS_HELP,
        "roles": ROLES_HELP,
        "json": JSON_HELP,
        "verbose": VERBOSE_HELP,
        "batch_size": BATCH_HELP,
        "wait": WAIT_HELP,
    },
)
def rollback(
    c: Context,
    env: str = "",
    to: str = "",
    migrate: bool = False,
    maintenance: bool = False,
    dry_run: bool = False,
    json: bool = False,
    verbose: bool = False,
    batch_size: str = "",
    wait: float = 0,
    hosts: str = "",
    roles: str = "",
) -> None:
    """Switch every host back to an earlier release, restart and verify.

    With --migrate, first back up the database and unapply the migrations the older
    release does not have; with --maintenance, in maintenance mode until verified."""
    with session("rollback") as s:
        environment, limited = limit_hosts(s.load(env), hosts, roles)
        batch = parse_batch_size(batch_size, len(environment.hosts_with("web")))
        if to:
            validate_release_id(to)
        if dry_run:
            if limited:
                s.print(limited)
            plan = _dry_rollback(environment, to, migrate=migrate, maintenance=maintenance)
            for line in _dry_rollback_notes(to, migrate):
                s.print(line)
            print_plan(plan, s.print)
            return
        lock_wait = _lock_wait(wait)
        reporter = s.reporter(json, verbose=verbose)
        if limited:
            reporter.message(limited)
        rollback_run(
            environment,
            reporter,
            s.masker,
            to=to or None,
            migrate=migrate,
            maintenance=maintenance,
            batch_size=batch,
            lock_wait=lock_wait,
        )


@task(
    help={
        "render": "write runbooks/<env>/*.md and playbooks/<env>/*.yml from the step definitions",
        "env": "only this environment (default: every inventory)",
        "check": "exit 1 naming the files when the committed runbooks are out of date",
    }
)
def runbook(c: Context, render: bool = False, env: str = "", check: bool = False) -> None:
    """Render the runbooks from the definitions, or check they are up to date."""
    with session() as s:
        if not render and not check:
            raise UsageError("say --render to write the runbooks, or --check to compare them")
        root = project_root()
        names = [env] if env else environments(root)
        stale: list[str] = []
        for name in names:
            environment = s.load(name) if env else load_environment(name, root)
            source = find_source(environment)
            documents = {
                **render_all(environment, source),
                **render_playbooks(environment, source),  # playbooks/<env>/: Ansible
            }
            for path, text in documents.items():
                current = path.read_text(encoding="utf-8") if path.is_file() else None
                if current == text:
                    continue
                relative = str(path.relative_to(root))
                if check:
                    stale.append(relative)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                print(f"wrote {relative}")
        if stale:
            raise Exit(
                "releasebook: runbooks out of date (run `inv runbook --render`):\n  "
                + "\n  ".join(stale),
                code=1,
            )
        if check:
            print("runbooks are up to date")


def _state_json(facts: HostFacts) -> dict[str, object]:
    return {
        "current": facts.current,
        "releases": list(facts.releases),
        "last": facts.history[-1] if facts.history else None,
        "lock": facts.lock.holder() if facts.lock else None,
        "journal": facts.last_steps(),
        "rollback_target": facts.rollback_target(),
        "problems": list(facts.problems),
    }


@task(
    klass=LimitedTask,
    help={
        "env": "inventory to inspect: inventories/<env>.yml",
        "json": "print the state as one JSON object",
        "hosts": HOSTS_HELP,
        "roles": ROLES_HELP,
    },
)
def status(c: Context, env: str = "", json: bool = False, hosts: str = "", roles: str = "") -> None:
    """Show each host's live release, the releases kept, a held or stale lock, the last
    outcome and the steps the last run completed, whether its processes are up and its
    /readyz answers; warn when hosts differ."""
    with session() as s:
        environment, _ = limit_hosts(s.load(env), hosts, roles)
        states, up = ops_status(environment, s.masker)
        if json:
            report = {n: _state_json(f) for n, f in states.items()}
            for row in up:
                report[row.host][row.check] = {"ok": row.ok, "detail": row.detail}
            s.print(jsonlib.dumps(report, sort_keys=True))
            return
        live = {state.current for state in states.values()}
        if len(live) > 1:
            s.print(
                "WARNING: hosts are on different releases: "
                + ", ".join(f"{n}={f.current or 'none'}" for n, f in states.items())
            )
        for name, facts in states.items():
            for line in _status_lines(name, facts):
                s.print(line)
            for row in up:
                if row.host == name:
                    state = "up" if row.ok else "DOWN"
                    detail = row.detail.replace("\n", "; ")
                    s.print(f"  {row.check}: {state}: {detail}")


def _status_lines(name: str, facts: HostFacts) -> list[str]:
    lines = [f"{name}: current {facts.current or '(none)'}"]
    if facts.lock is not None:
        lines.append(f"  LOCKED: {facts.lock.describe()}")
    bad = facts.bad_releases()
    for release_id in reversed(facts.made_order()):
        marks = []
        if release_id == facts.current:
            marks.append("live")
        if release_id in bad:
            marks.append("failed")
        lines.append(f"  {release_id}{'  (' + ', '.join(marks) + ')' if marks else ''}")
    if facts.history:
        last = facts.history[-1]
        lines.append(
            f"  last: {last.get('action')} {last.get('release')} {last.get('outcome')} "
            f"at {last.get('at')} by {last.get('by')}"
        )
    journaled = facts.last_steps()
    if journaled:
        lines.append(
            f"  steps completed by the last {journaled['action']} "
            f"({journaled['release']}, until {journaled['at']}): " + ", ".join(journaled["steps"])
        )
        if journaled.get("undone"):
            lines.append("  then undone: " + ", ".join(journaled["undone"]))
    lines.extend(f"  note: {problem}" for problem in facts.problems)
    return lines


namespace = Collection(
    release,
    rollback,
    runbook,
    status,
    preflight,
    provision,
    init,
    *SAFETY_TASKS,
    *OPS_TASKS,
    *BACKUP_TASKS,
)
namespace.add_collection(app)
