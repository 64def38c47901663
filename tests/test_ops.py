"""Day-2 operations without hosts: their plans, dry runs, rendered runbooks, the log merge,
the release's maintenance steps, and the maintenance middleware under Django's test client."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from releasebook.deploy.ops import merge_logs, parse_since
from releasebook.deploy.release import UNMAINTAINED_STEPS
from releasebook.errors import UsageError
from releasebook.inventory import load_environment
from releasebook.plan.facts import HostFacts
from releasebook.plan.ops import ops_plan
from releasebook.render.ops import render_ops
from releasebook.runbooks import ops as book
from releasebook.runbooks.release import RELEASE

REPO = Path(__file__).resolve().parents[1]
INV = str(Path(sys.executable).with_name("inv"))
FLAG = "/srv/example/shared/maintenance"


def _inv(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "RELEASEBOOK_ROOT": str(REPO)}
    return subprocess.run(
        [INV, *args], cwd=REPO, env=environ, capture_output=True, text=True, timeout=60
    )


def _facts(current: str) -> HostFacts:
    return HostFacts("h", current=current)


def test_maintenance_plan_targets_every_web_host_only() -> None:
    env = load_environment("production", REPO)
    plan = ops_plan(env, book.MAINTENANCE["on"], facts=None)
    (planned,) = plan.steps
    web = [h.name for h in env.hosts_with("web")]
    assert [w.target for w in planned.work] == web
    for work in planned.work:
        assert f"date -u +%Y-%m-%dT%H:%M:%SZ > {FLAG}" in work.commands
        assert work.undo == (f"rm -f {FLAG}",)
    (off,) = ops_plan(env, book.MAINTENANCE["off"], facts=None).steps
    assert [w.commands for w in off.work] == [(f"rm -f {FLAG}",)] * len(web)


def test_role_narrows_hosts_and_programs_and_an_unknown_role_is_refused() -> None:
    env = load_environment("staging", REPO)
    facts = {h.name: _facts("20260101-000000-000") for h in env.hosts}
    (planned,) = ops_plan(env, book.APP["stop"], facts=facts, role="worker").steps
    assert [w.target for w in planned.work] == ["staging-worker1"]
    assert planned.work[0].commands[0].endswith(" stop worker")
    (everything,) = ops_plan(env, book.APP["stop"], facts=facts).steps
    assert everything.work[0].commands[0].endswith(" stop 'web:*'")
    assert everything.work[1].commands[0].endswith(" stop worker beat")
    with pytest.raises(UsageError, match=r"--role .nope.: not a role"):
        ops_plan(env, book.APP["stop"], facts=facts, role="nope")


def test_restart_reuses_the_release_restart_steps_for_the_live_release() -> None:
    env = load_environment("staging", REPO)
    facts = {h.name: _facts("20260101-000000-000") for h in env.hosts}
    plan = ops_plan(env, book.APP["restart"], facts=facts)
    assert [p.step for p in plan.steps] == [
        RELEASE.step("restart_web"),
        RELEASE.step("restart_workers"),
    ]
    worker = plan.step("restart_workers").work[0]
    assert any("/srv/example/releases/20260101-000000-000" in c for c in worker.verify)


def test_logs_plan_quotes_the_request_id_and_limits_files_by_role() -> None:
    env = load_environment("staging", REPO)
    (planned,) = ops_plan(env, book.LOGS, facts={}, request_id="abc-1", lines=5).steps
    web, worker = planned.work
    assert "for log in /srv/example/shared/log/web_*.log; do" in web.commands[0]
    assert 'grep --line-buffered -F -e abc-1 "$log"' in web.commands[0]
    assert "tail -n 5" in web.commands[0]
    assert (
        "/srv/example/shared/log/worker.log /srv/example/shared/log/beat.log" in worker.commands[0]
    )
    hostile = "x'; rm -rf /; '"
    (planned,) = ops_plan(env, book.LOGS, facts={}, request_id=hostile).steps
    assert "grep --line-buffered -F -e 'x'\"'\"'; rm -rf /; '\"'\"''" in planned.work[0].commands[0]


def test_exec_quotes_each_argument() -> None:
    env = load_environment("staging", REPO)
    facts = {h.name: _facts("20260101-000000-000") for h in env.hosts}
    (planned,) = ops_plan(
        env, book.EXEC, facts=facts, hosts=["staging-web1"], argv=["echo", "a b", "$HOME"]
    ).steps
    (work,) = planned.work
    assert work.commands == (
        "cd /srv/example/releases/20260101-000000-000 && exec "
        "/srv/example/releases/20260101-000000-000/.releasebook/with-env echo 'a b' '$HOME'",
    )


def test_merge_logs_orders_by_time_across_hosts_and_keeps_tracebacks() -> None:
    outputs = {
        "web1": (
            "web_0.log 2026-12-01 10:00:01,500 INFO x 1 request_id=r1 GET /\n"
            "web_0.log 2026-12-01 10:00:03,000 ERROR django.request 1 request_id=r1 boom\n"
            "web_0.log Traceback (most recent call last):\n"
            'web_0.log   File "x.py", line 1\n'
        ),
        "worker1": (
            "worker.log 2026-12-01 10:00:02,250 INFO notes.tasks 9 request_id=r1 counted 3\n"
            "worker.log [2026-12-01 10:00:04 +0000] [9] [INFO] gunicorn-style\n"
        ),
    }
    merged = [line.show() for line in merge_logs(outputs)]
    assert merged == [
        "web1 web_0.log 2026-12-01 10:00:01,500 INFO x 1 request_id=r1 GET /",
        "worker1 worker.log 2026-12-01 10:00:02,250 INFO notes.tasks 9 request_id=r1 counted 3",
        "web1 web_0.log 2026-12-01 10:00:03,000 ERROR django.request 1 request_id=r1 boom",
        "web1 web_0.log Traceback (most recent call last):",
        'web1 web_0.log   File "x.py", line 1',
        "worker1 worker.log [2026-12-01 10:00:04 +0000] [9] [INFO] gunicorn-style",
    ]
    since = datetime(2026, 12, 1, 10, 0, 2, 500000)
    assert [line.host for line in merge_logs(outputs, since=since)] == ["web1"] * 3 + ["worker1"]
    assert len(merge_logs(outputs, lines=2)) == 2


def test_since_forms() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0)
    assert parse_since("10m", now) == datetime(2026, 12, 1, 11, 50, 0)
    assert parse_since("2026-12-01 09:30", now) == datetime(2026, 12, 1, 9, 30)
    assert parse_since("", now) is None
    with pytest.raises(UsageError, match="--since 'yesterday'"):
        parse_since("yesterday", now)


def test_release_runs_migrate_inside_maintenance_only_when_asked() -> None:
    names = RELEASE.step_names
    # Before the backup and migrate, after the gate.
    assert names.index("gate") < names.index("maintenance_on") < names.index("migrate")
    assert names.index("maintenance_off") == names.index("verify") + 1
    assert RELEASE.step("maintenance_on").undo == book.MAINTENANCE["on"].steps[0].undo
    assert "maintenance_on" not in UNMAINTAINED_STEPS
    assert "maintenance_off" not in UNMAINTAINED_STEPS


def test_dry_runs_print_the_commands_and_bad_input_exits_2() -> None:
    done = _inv("maintenance", "on", "--env=staging", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"> {FLAG}" in done.stdout and "nothing was contacted" in done.stdout
    done = _inv("release", "--env=local", "--dry-run", "--maintenance")
    assert done.returncode == 0, done.stderr
    assert "maintenance_on: Maintenance mode on (with --maintenance)" in done.stdout
    done = _inv("doctor", "--env=production", "--dry-run")
    assert done.returncode == 0, done.stderr
    for step in book.DOCTOR.steps:
        assert f": {step.title}\n" in done.stdout
    assert "manage.py readiness --json" in done.stdout
    done = _inv("app.logs", "--env=staging", "--request-id", "r-1", "--dry-run")
    assert done.returncode == 0 and "grep --line-buffered -F -e r-1" in done.stdout
    assert "Follow the app's logs" not in done.stdout
    done = _inv("app.logs", "--env=staging", "--follow", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "Follow the app's logs" in done.stdout and 'tail -n 0 -F --pid="$$"' in done.stdout
    for bad in (
        ("app.status", "--env=staging", "--role", "nope"),
        ("app.restart", "--env=staging", "--role", "nope"),
        ("maintenance", "sideways", "--env=staging"),
        ("app.logs", "--env=staging", "--request-id", "a b", "--dry-run"),
        ("app.exec", "--env=staging", "--dry-run"),
    ):
        done = _inv(*bad)
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert "releasebook:" in done.stderr


def test_every_task_and_flag_has_help() -> None:
    for name in (
        "maintenance",
        "doctor",
        "app.status",
        "app.start",
        "app.stop",
        "app.restart",
        "app.logs",
        "app.manage",
        "app.exec",
    ):
        done = _inv("--help", name)
        assert done.returncode == 0, done.stderr
        assert "Docstring:\n  none" not in done.stdout
        options = done.stdout.split("Options:", 1)[1]
        for line in options.splitlines():
            if line.strip().startswith("-"):
                assert len(line.split("  ")) > 1 and line.strip().split("  ")[-1].strip(), line


def test_incident_runbook_is_rendered_from_the_doctor_definitions() -> None:
    env = load_environment("staging", REPO)
    documents = render_ops(env)
    incident = documents[REPO / "runbooks" / "staging" / "incident.md"]
    for step in book.DOCTOR.steps:
        assert f"### {step.title}\n" in incident
    assert "inv app.logs --env=staging --request-id ID" in incident
    assert "inv maintenance on --env=staging" in incident
    plan = ops_plan(env, book.DOCTOR, facts=None)
    for planned in plan.steps:
        for work in planned.work:
            for command in work.commands:
                assert command in incident
    operations = documents[REPO / "runbooks" / "staging" / "operations.md"]
    assert f"> {FLAG}" in operations and "stop 'web:*'" in operations
    for path, text in documents.items():
        assert path.read_text() == text, f"{path} is stale: inv runbook --render"


MIDDLEWARE_CHECK = textwrap.dedent(
    """
    import json, os, sys
    import django
    from django.conf import settings
    flag = sys.argv[1]
    settings.configure(
        DEBUG=False, SECRET_KEY="x" * 50, ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="urls_for_test", INSTALLED_APPS=["releasebook.django"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        MIDDLEWARE=["releasebook.django.middleware.RequestIdMiddleware",
                    "releasebook.django.middleware.MaintenanceMiddleware"],
        RELEASEBOOK_MAINTENANCE_RETRY_AFTER=45, BASE_DIR=os.getcwd(),
    )
    import types
    from django.http import HttpResponse
    from django.urls import include, path
    urls = types.ModuleType("urls_for_test")
    urls.urlpatterns = [path("", include("releasebook.django.urls")),
                        path("", lambda request: HttpResponse("home"))]
    sys.modules["urls_for_test"] = urls
    os.environ["RELEASEBOOK_MAINTENANCE_FILE"] = flag
    django.setup()
    from django.test import Client
    client = Client()
    def seen():
        home = client.get("/", HTTP_X_REQUEST_ID="rid-7")
        health = client.get("/healthz")
        ready = client.get("/readyz")
        probe = client.get("/readyz", HTTP_X_RELEASEBOOK_PROBE="readiness")
        return {
            "home": [home.status_code, home.get("Retry-After"), home.content.decode()],
            "healthz": health.status_code,
            "readyz": [ready.status_code, json.loads(ready.content)["status"],
                       ready.get("Retry-After")],
            "probe": [probe.status_code, json.loads(probe.content).get("maintenance")],
        }
    before = seen()
    open(flag, "w").close()
    during = seen()
    os.remove(flag)
    after = seen()
    print(json.dumps({"before": before, "during": during, "after": after}))
    """
)


def test_maintenance_middleware_with_the_django_test_client(tmp_path: Path) -> None:
    import json

    done = subprocess.run(
        [sys.executable, "-c", MIDDLEWARE_CHECK, str(tmp_path / "maintenance")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": ""},
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    for state in ("before", "after"):
        assert seen[state]["home"][:2] == [200, None]
        assert seen[state]["healthz"] == 200
        assert seen[state]["readyz"][:2] == [200, "ok"]
    during = seen["during"]
    assert during["home"][0] == 503 and during["home"][1] == "45"
    assert "Down for maintenance" in during["home"][2] and "rid-7" in during["home"][2]
    assert during["healthz"] == 200
    assert during["readyz"] == [503, "maintenance", "45"]
    assert during["probe"] == [200, True]


def test_app_restart_shows_the_websockets_each_hosts_workers_closed() -> None:
    from releasebook.deploy.ops import websocket_rows
    from releasebook.django.asgi_worker import CLOSING
    from releasebook.transport import Result

    rows = websocket_rows(
        {
            "web1": Result(
                0, f"web:web_0: started\n[INFO] {CLOSING % 2}\n[INFO] {CLOSING % 1}\n", "", 1.0
            ),
            "web2": Result(0, "web:web_0: started\n", "", 1.0),  # a WSGI app's: says nothing
            "web3": OSError("unreachable"),
        }
    )
    assert [(r.host, r.check, r.status, r.detail) for r in rows] == [
        ("web1", "websockets", "info", "closed 3 with 1012 (service restart)")
    ]
