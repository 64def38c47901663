"""What a person reads while a run goes on, against scripted hosts: host lines that name
their step under one header per group of steps, the heartbeat while a step runs long,
``-v``'s commands and output, and the run's log file (path printed on failure)."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from invoke.exceptions import Exit

from releasebook.cli.kit import session
from releasebook.cli.output import ConsoleReporter
from releasebook.deploy.release import release
from releasebook.deploy.rollback import _forward, _leaving
from releasebook.errors import ReleaseFailed
from releasebook.inventory import Environment, Host, load_environment
from releasebook.masking import Masker
from releasebook.plan.model import CONTROLLER
from releasebook.transport import Transport
from releasebook.transport.scripted import ScriptedHost

R1 = "20260101-120000-000"
SECRET = "s3cret-token-value-x"


def make_project(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("")
    (root / "inventories").mkdir()
    (root / "inventories" / "known_hosts").write_text("")
    (root / "inventories" / "flow.yml").write_text(
        "app: {source: app, settings: config.settings, wsgi: 'config.wsgi:application'}\n"
        "deploy: {path: /srv/app}\n"
        "ssh: {known_hosts: inventories/known_hosts}\n"
        "health: {host_header: app.test, timeout: 2}\n"
        "hosts:\n"
        "  web1: {address: 127.0.0.1, roles: [web, migrate], bind: '127.0.0.1:9'}\n"
        "  web2: {address: 127.0.0.2, roles: [web], bind: '127.0.0.2:9'}\n"
    )
    git = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "app"], check=True)
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture
def env(project: Path) -> Environment:
    return load_environment("flow", project)


def facts(current: str) -> tuple[str, ...]:
    record = f'{{"action": "release", "release": "{current}", "outcome": "released"}}'
    return (f"current={current}", f"release={current}", f"history={record}")


@pytest.fixture
def hosts() -> dict[str, ScriptedHost]:
    return {
        CONTROLLER: ScriptedHost(CONTROLLER),
        "web1": ScriptedHost("web1", facts(R1)),
        "web2": ScriptedHost("web2", facts(R1)),
    }


def opener_for(hosts: dict[str, ScriptedHost]) -> Any:
    def opener(env: Environment, host: Host | None) -> Transport:
        return hosts[host.name if host else CONTROLLER]

    return opener


def preflight(env: Environment, hosts: dict[str, ScriptedHost], **reporter: Any) -> str:
    out = io.StringIO()
    console = ConsoleReporter(Masker([SECRET]), out, **reporter)
    try:
        release(env, console, Masker([SECRET]), opener=opener_for(hosts), stop_after="gate")
    finally:
        console.close()
    return out.getvalue()


def test_steps_run_as_one_script_get_one_header_and_each_host_line_names_its_step(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    text = preflight(env, hosts, heartbeat=0)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if "[5-8/10]" in line)
    assert "4 steps in one script per host" in lines[header]
    assert [line.split(":")[0].strip() for line in lines[header + 1 : header + 5]] == [
        "upload",
        "install",
        "configure",
        "gate",
    ]
    # no header of its own for a step of the group: nothing to print host lines under
    assert not re.search(r"\[ ?[5-8]/10\]", text)
    host_lines = [line for line in lines[header + 5 :] if re.search(r"\s(ok|FAILED)\s", line)]
    steps = [line.split()[2] for line in host_lines[:8]]
    assert sorted(steps) == sorted(["upload", "install", "configure", "gate"] * 2)
    assert {line.split()[1] for line in host_lines[:8]} == {"web1", "web2"}
    assert "preflight 2" in lines[0]  # the task names itself, with its own step count
    assert "[ 1/10]" in text and "/17]" not in text


def test_a_long_step_gets_a_heartbeat_naming_it_and_its_host(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web2"].slow = {"install": 0.6}
    text = preflight(env, hosts, heartbeat=0.2)
    beats = [line for line in text.splitlines() if "still running:" in line]
    assert beats, text
    assert all(re.search(r"still running: install on web2 \(\d+s\)$", b) for b in beats), beats


def test_the_heartbeat_says_nothing_before_a_step_has_run_that_long(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    console = ConsoleReporter(Masker(), io.StringIO(), heartbeat=10)
    assert console.still_running(0.0) == ""


def test_verbose_shows_each_command_and_its_output(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web1"].output = {"install": f"Installing collected packages: django\n{SECRET}"}
    quiet = preflight(env, hosts, heartbeat=0)
    assert "Installing collected packages" not in quiet
    hosts["web1"].output = {"install": f"Installing collected packages: django\n{SECRET}"}
    loud = preflight(env, hosts, heartbeat=0, verbose=True)
    assert "| Installing collected packages: django" in loud
    assert SECRET not in loud and "| ***" in loud
    assert "$ mkdir /srv/app/releases/" in loud and "$ tar -xzf /srv/app/" in loud
    assert "$ mkdir /srv/app/releases/" not in quiet


def test_verbose_shows_the_whole_gate_table_and_quiet_only_its_problems(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    quiet = preflight(env, hosts, heartbeat=0)
    assert "readiness gate passed on 2 host(s)" in quiet
    assert "check  host" not in quiet


def test_a_failed_run_prints_where_its_full_log_is(
    project: Path, hosts: dict[str, ScriptedHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    hosts["web2"].fail = {"install": 3}
    hosts["web2"].output = {"install": f"pip: cannot install {SECRET}"}
    with pytest.raises(Exit) as stopped, session("release") as s:
        s.masker.add([SECRET])
        environment = s.load("flow")
        release(environment, s.reporter(False), s.masker, opener=opener_for(hosts))
    message = str(stopped.value.message)
    assert stopped.value.code == 1
    found = re.search(r"full log: (\.releasebook/logs/\d{8}-\d{6}-flow-release\.log)$", message)
    assert found, message
    log = project / found.group(1)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "pip: cannot install ***" in text and SECRET not in text
    assert "$ " in text  # the commands, as verbose shows them
    assert "releasebook: " in text.splitlines()[-1] or "Nothing live changed" in text
    assert os.listdir(project / ".releasebook" / "logs") == [log.name]


def test_a_run_that_fails_is_reported_with_its_step(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web2"].fail = {"configure": 1}
    with pytest.raises(ReleaseFailed):
        preflight(env, hosts, heartbeat=0)


# --- the readiness gate's output ----------------------------------------------------------


def gate_report(*results: tuple[str, str, str, str]) -> str:
    """A host gate's JSON report: (id, severity, status, message) per check."""
    rows = [
        {"id": i, "title": i, "severity": sev, "status": st, "message": m, "duration_ms": 1.0}
        for i, sev, st, m in results
    ]
    ok = not any(r["status"] == "fail" and r["severity"] == "error" for r in rows)
    return json.dumps({"ok": ok, "version": 1, "pending_migrations": [], "results": rows})


PASSING = gate_report(
    ("RB-ENV-001", "error", "pass", "every required name is set"),
    ("RB-ENV-003", "error", "pass", "settings loaded"),
    ("RB-SEC-002", "error", "skip", "skipped by --skip"),
    ("RB-SEC-003", "warning", "fail", "HSTS preload not set"),
)
UNLOADED = gate_report(
    ("RB-ENV-001", "error", "pass", "every required name is set"),
    ("RB-ENV-003", "error", "fail", "ImproperlyConfigured: SECRET_KEY must not be empty"),
    ("RB-SEC-001", "error", "fail", "not checked: RB-ENV-003 failed"),
    ("RB-SEC-003", "warning", "fail", "not checked: RB-ENV-003 failed"),
    ("RB-SEC-004", "error", "fail", "not checked: RB-ENV-003 failed"),
)


def with_inventory_skip(project: Path) -> Environment:
    inventory = project / "inventories" / "flow.yml"
    inventory.write_text(
        inventory.read_text() + "gate: {skip: {RB-SEC-002: 'TLS ends at the load balancer'}}\n"
    )
    return load_environment("flow", project)


def test_a_passing_gate_prints_only_its_warnings_and_skips_saying_who_skipped_and_why(
    project: Path, hosts: dict[str, ScriptedHost]
) -> None:
    env = with_inventory_skip(project)
    for name in ("web1", "web2"):
        hosts[name].output = {"gate": PASSING}
    text = preflight(env, hosts, heartbeat=0)
    assert "readiness gate passed on 2 host(s) (2 warning(s), 2 skipped)" in text
    assert "skipped by the inventory: TLS ends at the load balancer" in text
    assert "skipped by --skip" not in text
    assert "HSTS preload not set" in text
    assert "every required name is set" not in text  # passes only with -v
    for name in ("web1", "web2"):
        hosts[name].output = {"gate": PASSING}
    loud = preflight(env, hosts, heartbeat=0, verbose=True)
    assert "every required name is set" in loud


def test_a_skip_given_on_the_command_line_names_who_skipped_it(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    for name in ("web1", "web2"):
        hosts[name].output = {"gate": PASSING}
    out = io.StringIO()
    release(
        env,
        ConsoleReporter(Masker(), out, heartbeat=0),
        Masker(),
        opener=opener_for(hosts),
        stop_after="gate",
        skips={"RB-SEC-002": "no TLS on staging"},
    )
    assert re.search(r"skipped by --skip \(\S+@\S+\): no TLS on staging", out.getvalue())


def test_checks_not_run_because_settings_did_not_load_are_not_counted_as_failures(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    for name in ("web1", "web2"):
        hosts[name].output = {"gate": UNLOADED}
    out = io.StringIO()
    with pytest.raises(ReleaseFailed) as failed:
        release(
            env,
            ConsoleReporter(Masker(), out, heartbeat=0),
            Masker(),
            opener=opener_for(hosts),
            stop_after="gate",
        )
    message = str(failed.value)
    assert message.startswith(
        "readiness gate failed: RB-ENV-003 (Settings load) on web1, web2 (6 not checked)"
    )
    assert message.count("readiness gate failed") == 1
    text = out.getvalue()
    assert "not checked" in text and "RB-SEC-001" in text
    assert "SECRET_KEY must not be empty" in text


# --- what a failure after the switch and a rollback say -------------------------------


class _Serving(BaseHTTPRequestHandler):
    """/readyz of a host serving R1."""

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "release": R1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def serving_env(project: Path) -> Iterator[Environment]:
    """Both web hosts' binds answer as hosts serving R1 (the release to go back to)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Serving)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    bind = f"127.0.0.1:{server.server_address[1]}"
    inventory = project / "inventories" / "flow.yml"
    text = inventory.read_text().replace("'127.0.0.1:9'", f"'{bind}'")
    inventory.write_text(text.replace("'127.0.0.2:9'", f"'{bind}'"))
    try:
        yield load_environment("flow", project)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def records(host: ScriptedHost) -> list[dict[str, Any]]:
    """The history records the host was given (the record step's JSON lines)."""
    found = []
    for script in host.scripts:
        for line in script.splitlines():
            words = shlex.split(line) if line.startswith("printf '%s\\n' ") else []
            if len(words) == 5 and words[3] == ">>" and words[2].startswith("{"):
                found.append(json.loads(words[2]))
    return found


def test_a_failure_after_the_switch_reports_both_runs_apart_and_records_the_rollback(
    serving_env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    hosts["web1"].fail = {"restart_web": 1}
    out = io.StringIO()
    with pytest.raises(ReleaseFailed) as failed:
        release(
            serving_env,
            ConsoleReporter(Masker(), out, heartbeat=0),
            Masker(),
            opener=opener_for(hosts),
        )
    text = out.getvalue()
    new = re.search(r"^release (\S+) to flow", text, re.M)
    assert new is not None
    assert f"rolling back from {new.group(1)} (failed): web1 to {R1}, web2 to {R1}" in text
    assert f"rollback to {R1} on flow (web1, web2)" in text
    after = text[text.index("rolling back from") :]
    assert "/17]" not in after.split("\n\n")[0]  # the rollback counts its own steps
    assert "[ 1/5]" in after
    release_table = text[text.index(f"release {new.group(1)}:") :]
    release_rows = release_table[: release_table.index("\n\n")]
    assert re.search(r"restart_web\s+2 failed: web1", release_rows)
    assert re.search(r"switch\s+2 ok", release_rows)
    assert f"rollback to {R1}:" in text
    assert "Rolled back; each host now:" in str(failed.value)
    for name in ("web1", "web2"):
        kept = records(hosts[name])
        automatic = [r for r in kept if r.get("automatic") is True]
        assert len(automatic) == 1, kept
        assert automatic[0]["action"] == "rollback"
        assert automatic[0]["release"] == R1
        assert automatic[0]["from"] == new.group(1)
        assert automatic[0]["outcome"] == "rolled_back_to"
        assert any(r["action"] == "release" and r["outcome"] == "rolled_back" for r in kept)


def test_a_first_release_failing_after_the_switch_says_so_with_the_choices(
    env: Environment, hosts: dict[str, ScriptedHost]
) -> None:
    for name in ("web1", "web2"):
        hosts[name].facts = ()
    hosts["web2"].fail = {"restart_web": 1}
    out = io.StringIO()
    with pytest.raises(ReleaseFailed) as failed:
        release(
            env, ConsoleReporter(Masker(), out, heartbeat=0), Masker(), opener=opener_for(hosts)
        )
    message = str(failed.value)
    assert "was the first release of flow and it failed after going live" in message
    assert "Nothing is served now." in message
    assert "Choices: fix the cause and release again (`inv release --env=flow`)" in message
    assert "first release" in out.getvalue().splitlines()[-1]
    automatic = [r for r in records(hosts["web1"]) if r.get("automatic")]
    assert [r["outcome"] for r in automatic] == ["retired"]


def test_a_rollback_says_which_release_it_leaves_and_when_it_moves_forward() -> None:
    older, newer = "20260101-120000-000", "20260102-120000-000"
    assert _leaving({"web1": newer, "web2": newer}, older) == (
        f"leaving {newer} (live on web1, web2) for {older}"
    )
    forward = _leaving({"web1": older}, newer)
    assert (
        forward
        == f"leaving {older} (live on web1) for {newer}, a NEWER release: this moves forward"
    )
    assert _forward({"web1": older}, newer) and not _forward({"web1": newer}, older)
