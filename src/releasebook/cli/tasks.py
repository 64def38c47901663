"""The Invoke collection: parse flags, call the library, turn errors into exit codes.

Exit codes: 0 ok; 1 the release failed (nothing live changed, or every host was rolled
back and verified) or a host was unreachable; 2 bad input (inventory, flags, ids);
3 a rollback failed and hosts need attention; 4 the environment is locked by another
run; 5 a host's SSH key changed.
"""

from __future__ import annotations

import json as jsonlib
import sys

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from releasebook import deploy
from releasebook.batches import parse_batch_size
from releasebook.cli.kit import _errors_to_exit, _load, _reporter, project_root
from releasebook.cli.safety import SAFETY_TASKS
from releasebook.errors import UsageError
from releasebook.gate.command import validate_skips
from releasebook.inventory import load_environment
from releasebook.lock import LockInfo
from releasebook.plan import Plan
from releasebook.render.runbook import render_all
from releasebook.source import find_source


def print_plan(plan: Plan) -> None:
    print(f"# {plan.kind} plan for {plan.environment.name}: {plan.release_id} (dry run)")
    for planned in plan.steps:
        print(f"\n## {planned.number}. {planned.step.name}: {planned.step.title}")
        for work in planned.work:
            print(f"### {work.target}")
            if work.probe is not None:
                p = work.probe
                print(
                    f"GET {p.url}  Host: {p.host_header}  X-Forwarded-Proto: {p.forwarded_proto}"
                    f"  expect release {p.expect_release} within {p.deadline:g}s"
                )
            for upload in work.uploads:
                skip = f"  (skipped when: {upload.skip_if})" if upload.skip_if else ""
                print(f"put {upload.local} -> {upload.remote}{skip}")
            for command in work.commands + work.verify:
                print(command)


def _skips(skip: list[str], reason: str) -> dict[str, str]:
    ids = validate_skips(skip)
    if ids and not reason.strip():
        raise UsageError("--skip needs --reason: say why, it is recorded in the history")
    return dict.fromkeys(ids, reason.strip())


def _lock_wait(seconds: float) -> float:
    if seconds < 0:
        raise UsageError(f"--wait {seconds:g}: expected seconds to wait, 0 or more")
    return seconds


SKIP_HELP = "readiness check id to skip (repeatable); needs --reason"
WAIT_HELP = "if another run holds the lock, wait up to this many seconds for it"
REASON_HELP = "why the checks given with --skip are skipped (recorded with your name)"


@task(
    iterable=["skip"],
    help={
        "env": "inventory to release to: inventories/<env>.yml",
        "dry_run": "print the exact plan (steps x hosts x commands) and touch nothing",
        "json": "machine-readable events, one JSON object per line",
        "batch_size": "restart and verify web hosts N at a time, or N% of them (e.g. 25%)",
        "skip": SKIP_HELP,
        "reason": REASON_HELP,
        "wait": WAIT_HELP,
    },
)
@_errors_to_exit
def release(
    c: Context,
    env: str = "",
    dry_run: bool = False,
    json: bool = False,
    batch_size: str = "",
    skip: list[str] | None = None,
    reason: str = "",
    wait: float = 0,
) -> None:
    """Release the app's committed HEAD to every host of an environment, verified."""
    environment = _load(env)
    batch = parse_batch_size(batch_size, len(environment.hosts_with("web")))
    skips = _skips(skip or [], reason)
    reporter = _reporter(json)
    if dry_run:
        print_plan(deploy.plan_only(environment, "release", reporter))
        return
    lock_wait = _lock_wait(wait)
    deploy.release(environment, reporter, batch_size=batch, skips=skips, lock_wait=lock_wait)
    web = environment.hosts_with("web")
    if web and not json:
        print(f"serving at http://{web[0].bind}/ (Host: {environment.health.host_header})")


@task(
    iterable=["skip"],
    help={
        "env": "inventory to check: inventories/<env>.yml",
        "json": "machine-readable events, one JSON object per line",
        "skip": SKIP_HELP,
        "reason": REASON_HELP,
        "wait": WAIT_HELP,
    },
)
@_errors_to_exit
def preflight(
    c: Context,
    env: str = "",
    json: bool = False,
    skip: list[str] | None = None,
    reason: str = "",
    wait: float = 0,
) -> None:
    """Run the readiness gate on every host against a candidate release, then remove it."""
    environment = _load(env)
    skips = _skips(skip or [], reason)
    lock_wait = _lock_wait(wait)
    deploy.release(
        environment, _reporter(json), skips=skips, stop_after="gate", lock_wait=lock_wait
    )


@task(
    help={
        "env": "inventory to roll back: inventories/<env>.yml",
        "to": "release id to go back to (default: the newest good one before the live one)",
        "json": "machine-readable events, one JSON object per line",
        "batch_size": "restart and verify web hosts N at a time, or N% of them (e.g. 25%)",
        "wait": WAIT_HELP,
    }
)
@_errors_to_exit
def rollback(
    c: Context,
    env: str = "",
    to: str = "",
    json: bool = False,
    batch_size: str = "",
    wait: float = 0,
) -> None:
    """Switch every host back to an earlier release, restart and verify."""
    environment = _load(env)
    batch = parse_batch_size(batch_size, len(environment.hosts_with("web")))
    lock_wait = _lock_wait(wait)
    deploy.rollback(
        environment, _reporter(json), to=to or None, batch_size=batch, lock_wait=lock_wait
    )


@task(
    help={
        "render": "write runbooks/<env>/*.md from the step definitions",
        "env": "only this environment (default: every inventory)",
        "check": "exit 1 naming the files when the committed runbooks are out of date",
    }
)
@_errors_to_exit
def runbook(c: Context, render: bool = False, env: str = "", check: bool = False) -> None:
    """Render the release and rollback runbooks, or check they are up to date."""
    if not render and not check:
        raise UsageError("say --render to write the runbooks, or --check to compare them")
    root = project_root()
    names = [env] if env else sorted(p.stem for p in (root / "inventories").glob("*.yml"))
    stale: list[str] = []
    for name in names:
        environment = load_environment(name, root)
        app_source = find_source(environment)
        for path, text in render_all(environment, app_source).items():
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


@task(
    help={
        "env": "inventory to inspect: inventories/<env>.yml",
        "json": "print the state as JSON",
    }
)
@_errors_to_exit
def status(c: Context, env: str = "", json: bool = False) -> None:
    """Show each host's live release, the releases kept, a held or stale lock, the last
    outcome and the steps the last run completed; warn when hosts serve different releases."""
    states = deploy.status(_load(env))
    if json:
        payload = {
            name: {
                "current": s.current,
                "releases": list(s.releases),
                "last": s.history[-1] if s.history else None,
                "lock": jsonlib.loads(s.lock) if s.lock else None,
                "journal": s.last_steps(),
            }
            for name, s in states.items()
        }
        sys.stdout.write(_json_dumps(payload) + "\n")
        return
    live = {state.current for state in states.values()}
    if len(live) > 1:
        print(
            "WARNING: hosts are on different releases: "
            + ", ".join(f"{n}={s.current or 'none'}" for n, s in states.items())
        )
    for name, state in states.items():
        print(f"{name}: current {state.current or '(none)'}")
        if state.lock is not None:
            print(f"  LOCKED: {LockInfo.from_json(state.lock).describe()}")
        bad = state.bad_releases()
        for release_id in reversed(state.releases):
            marks = []
            if release_id == state.current:
                marks.append("live")
            if release_id in bad:
                marks.append("failed")
            print(f"  {release_id}{'  (' + ', '.join(marks) + ')' if marks else ''}")
        if state.history:
            last = state.history[-1]
            print(
                f"  last: {last.get('action')} {last.get('release')} {last.get('outcome')} "
                f"at {last.get('at')} by {last.get('by')}"
            )
        journaled = state.last_steps()
        if journaled:
            print(
                f"  steps completed by the last {journaled['action']} "
                f"({journaled['release']}, until {journaled['at']}): "
                + ", ".join(journaled["steps"])
            )


def _json_dumps(value: object) -> str:
    return jsonlib.dumps(value, indent=2, sort_keys=True)


namespace = Collection(release, rollback, runbook, status, preflight, *SAFETY_TASKS)
