"""Day-2 tasks: ``inv maintenance on|off``, ``inv app.*`` (status, start, stop, restart,
logs, manage, exec) and ``inv doctor``. Each has ``--dry-run``: the exact commands, from
the same definitions the runbooks ``operations.md`` and ``incident.md`` render."""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import Callable, Sequence

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from releasebook.cli.kit import Session, session
from releasebook.deploy import follow as following
from releasebook.deploy import ops
from releasebook.errors import UsageError
from releasebook.inventory import Environment
from releasebook.plan.model import Plan
from releasebook.plan.ops import DEFAULT_LINES, ops_plan
from releasebook.runbooks import ops as book
from releasebook.runbooks.model import Runbook

ENV_HELP = "inventory of the environment: inventories/<env>.yml"
ROLE_HELP = "only the hosts of this role (web, worker, beat, migrate), and their programs"
DRY_HELP = "print the exact commands for every host and touch nothing"
JSON_HELP = "one JSON object per row"


def print_ops_plan(plan: Plan, out: Callable[[str], None]) -> None:
    """Every step, host and command of a day-2 plan; each runs as a plain script."""
    env = plan.environment
    out(f"# {plan.runbook.name} plan for {env.name} (dry run)")
    out("Each step runs as one script per host (`set -eu`, then its commands), hosts in parallel.")
    for planned in plan.steps:
        out(f"\n## {planned.number}. {planned.step.name}: {planned.step.title}")
        for work in planned.work:
            out(f"### {work.target}  (time limit {work.timeout:g}s)")
            if work.probe is not None:
                p = work.probe
                out(
                    f"GET {p.url}  Host: {p.host_header}  X-Forwarded-Proto: {p.forwarded_proto}"
                    f"  expect the live release"
                )
            for command in work.commands + work.verify:
                out(command)
            if work.undo:
                out("# undo:")
                for command in work.undo:
                    out(command)
    out("\ndry run: nothing was contacted or changed; RELEASE is each host's live release")


def _print_rows(rows: Sequence[ops.Row], as_json: bool, out: Callable[[str], None]) -> None:
    if as_json:
        for row in rows:
            out(jsonlib.dumps(row.to_json(), sort_keys=True))
        return
    if not rows:
        out("(no host to run on)")
        return
    host_w = max(4, *(len(r.host) for r in rows))
    check_w = max(5, *(len(r.check) for r in rows))
    out(f"{'host':<{host_w}}  {'check':<{check_w}}  {'status':<6}  detail")
    for row in rows:
        lines = row.detail.splitlines() or [""]
        out(f"{row.host:<{host_w}}  {row.check:<{check_w}}  {row.status:<6}  {lines[0]}")
        for more in lines[1:]:
            out(f"{'':<{host_w}}  {'':<{check_w}}  {'':<6}  {more}")


def _control(env: str, runbook: Runbook, role: str, dry_run: bool, json: bool, what: str) -> None:
    with session() as s:
        environment = s.load(env)
        if dry_run:
            print_ops_plan(ops_plan(environment, runbook, facts=None, role=role or None), s.print)
            return
        rows = ops.control(environment, runbook, s.masker, role=role or None)
        _print_rows(rows, json, s.print)
        ops.raise_failed(rows, what)


@task(
    help={
        "mode": "on: every web host answers 503 with Retry-After; off: it serves again",
        "env": ENV_HELP,
        "dry_run": DRY_HELP,
        "json": JSON_HELP,
    },
)
def maintenance(
    c: Context, mode: str, env: str = "", dry_run: bool = False, json: bool = False
) -> None:
    """Turn maintenance mode on or off: the flag file shared/maintenance on every web host."""
    if mode not in book.MAINTENANCE:
        raise Exit(f"releasebook: say `inv maintenance on` or `off`, not {mode!r}", code=2)
    _control(env, book.MAINTENANCE[mode], "", dry_run, json, f"maintenance {mode}")


def _app_task(action: str, doc: str) -> object:
    @task(
        name=action,
        help={"env": ENV_HELP, "role": ROLE_HELP, "dry_run": DRY_HELP, "json": JSON_HELP},
    )
    def app_action(
        c: Context, env: str = "", role: str = "", dry_run: bool = False, json: bool = False
    ) -> None:
        _control(env, book.APP[action], role, dry_run, json, f"app {action}")

    app_action.__doc__ = doc
    app_action.body.__doc__ = doc
    return app_action


status = _app_task("status", "Show the app's processes under supervisord on every host.")
start = _app_task("start", "Start the app's processes (and supervisord) on every host.")
stop = _app_task("stop", "Stop the app's processes on every host (graceful: TERM, then wait).")
restart = _app_task(
    "restart",
    "Restart the app's processes: a web master boots beside the serving one (no request is lost).",
)


@task(
    help={
        "env": ENV_HELP,
        "role": ROLE_HELP,
        "request_id": "only the lines of this request id, on every host (web and worker)",
        "since": "only lines since then: 30s, 10m, 2h, 1d, or a time like '2026-01-31 14:05'",
        "lines": f"at most this many lines per log file and in all (default {DEFAULT_LINES})",
        "follow": "then print each new line as it is written, until Ctrl-C",
        "dry_run": DRY_HELP,
    }
)
def logs(
    c: Context,
    env: str = "",
    role: str = "",
    request_id: str = "",
    since: str = "",
    lines: int = DEFAULT_LINES,
    follow: bool = False,
    dry_run: bool = False,
) -> None:
    """Every host's process logs under shared/log, merged by time (--follow: and new ones)."""
    with session() as s:
        environment = s.load(env)
        if dry_run:
            ops.check_request_id(request_id)
            plan = ops_plan(
                environment,
                book.LOGS_FOLLOW if follow else book.LOGS,
                facts=None,
                role=role or None,
                request_id=request_id or None,
                lines=lines,
            )
            print_ops_plan(plan, s.print)
            return
        if follow:
            following.follow(
                environment,
                s.masker,
                lambda text: print(text, flush=True),  # a pipe sees each line as it comes
                lambda text: print(text, file=sys.stderr, flush=True),
                role=role or None,
                request_id=request_id,
                since=since,
                lines=lines,
            )
            return
        for line in ops.logs(
            environment,
            s.masker,
            role=role or None,
            request_id=request_id,
            since=since,
            lines=lines,
        ):
            s.print(line.show())


def _remainder() -> list[str]:
    """The words after ``--`` on the command line, as typed (each one argument)."""
    argv = sys.argv
    return argv[argv.index("--") + 1 :] if "--" in argv else []


def _run_in_release(
    environment: Environment, argv: list[str], role: str, host: str, dry_run: bool, s: Session
) -> None:
    if dry_run:
        print_ops_plan(
            ops.exec_plan(environment, argv, None, role=role or None, host=host), s.print
        )
        return
    code = ops.execute(
        environment,
        s.masker,
        argv,
        role=role or None,
        host=host,
        interactive=sys.stdin.isatty() and sys.stdout.isatty(),
        out=s.print,
    )
    if code != 0:
        raise Exit(code=code)


EXEC_HELP = {
    "env": ENV_HELP,
    "role": "run on the first host of this role (default: the first web host)",
    "host": "run on this host",
    "dry_run": DRY_HELP,
}


@task(help=EXEC_HELP)
def manage(
    c: Context, env: str = "", role: str = "", host: str = "", dry_run: bool = False
) -> None:
    """Run `manage.py ARGS` (after `--`) on one host with the live release's environment;
    interactive on a terminal (e.g. `inv app.manage --env=ENV -- createsuperuser`)."""
    with session() as s:
        environment = s.load(env)
        words = _remainder()
        if not words:
            raise UsageError("say the manage.py command after `--`, e.g. -- createsuperuser")
        _run_in_release(
            environment, ["venv/bin/python", "manage.py", *words], role, host, dry_run, s
        )


@task(name="exec", help=EXEC_HELP)
def exec_(c: Context, env: str = "", role: str = "", host: str = "", dry_run: bool = False) -> None:
    """Run a command (after `--`) on one host in the live release's directory, with its
    environment; interactive on a terminal (e.g. `inv app.exec --env=ENV -- bash`)."""
    with session() as s:
        environment = s.load(env)
        _run_in_release(environment, _remainder(), role, host, dry_run, s)


@task(help={"env": ENV_HELP, "json": JSON_HELP, "dry_run": DRY_HELP})
def doctor(c: Context, env: str = "", json: bool = False, dry_run: bool = False) -> None:
    """Check every host: processes RUNNING, /readyz, worker ping, one beat, database and
    broker reachable, free disk, maintenance, newest errors. Exit 0 only when all is well."""
    with session() as s:
        environment = s.load(env)
        if dry_run:
            print_ops_plan(ops.doctor_plan(environment, None), s.print)
            return
        rows = ops.doctor(environment, s.masker)
        _print_rows(rows, json, s.print)
        failed = ops.failed_rows(rows)
        if failed:
            names = ", ".join(f"{r.host} {r.check}" for r in failed)
            if not json:
                s.print(f"\nFAIL: {len(failed)} check(s) failed: {names}")
            raise Exit(code=1)
        if not json:
            s.print("\nOK: every check passed")


app = Collection("app", status, start, stop, restart, logs, manage, exec_)
OPS_TASKS = (maintenance, doctor)
