"""The command line's promises outside a run's progress: a changed host key exits 5 and
says so, ``history --json`` is one object per line, ``--dry-run`` checks what it can on
this machine and ends with a summary, ``--env`` errors name the environments."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from invoke.exceptions import Exit
from test_output import make_project

from releasebook.cli.kit import session
from releasebook.cli.local_checks import local_checks
from releasebook.cli.plan_print import print_plan
from releasebook.cli.tasks import _dry_plan
from releasebook.deploy import ops
from releasebook.deploy.connection import connect
from releasebook.deploy.history import json_lines
from releasebook.errors import HostKeyChanged, HostUnreachable, LockHeld, UsageError
from releasebook.inventory import Environment, Host, load_environment
from releasebook.masking import Masker
from releasebook.plan.facts import HostFacts
from releasebook.plan.model import CONTROLLER
from releasebook.runbooks.bookkeeping import LockInfo
from releasebook.transport import Transport
from releasebook.transport.scripted import ScriptedHost


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture
def env(project: Path) -> Environment:
    return load_environment("flow", project)


def test_a_changed_host_key_exits_5_and_says_the_key_changed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def opener(env: Environment, host: Host | None) -> Transport:
        if host is None:
            return ScriptedHost(CONTROLLER)
        if host.name == "web2":
            raise HostKeyChanged("web2: host key CHANGED (was SHA256:aaa, now SHA256:bbb)")
        return ScriptedHost(host.name)

    monkeypatch.chdir(project)
    with (
        pytest.raises(Exit) as stopped,
        session("status") as s,
        connect(s.load("flow"), s.masker, opener=opener),
    ):
        pass
    assert stopped.value.code == 5
    message = str(stopped.value.message)
    assert "SSH key CHANGED" in message and "web2: host key CHANGED" in message
    assert "cannot reach every host" not in message


def test_an_unreachable_host_still_exits_1(env: Environment) -> None:
    def opener(env: Environment, host: Host | None) -> Transport:
        if host is not None and host.name == "web1":
            raise HostUnreachable("web1 (deploy@127.0.0.1:22): cannot connect")
        return ScriptedHost(host.name if host else CONTROLLER)

    with pytest.raises(HostUnreachable) as failed, connect(env, Masker(), opener=opener):
        pass
    assert failed.value.exit_code == 1
    assert "cannot reach every host" in str(failed.value)


def test_history_json_is_one_object_per_line_newest_first_naming_its_host() -> None:
    histories = {
        "web1": [{"at": "2026-01-01T10:00:00Z", "action": "release", "release": "a"}],
        "web2": [
            {"at": "2026-01-01T10:00:00Z", "action": "release", "release": "a"},
            {"at": "2026-01-02T10:00:00Z", "action": "rollback", "release": "b"},
        ],
    }
    lines = json_lines(histories)
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert all("\n" not in line for line in lines)
    assert (records[0]["host"], records[0]["release"]) == ("web2", "b")
    assert sorted(r["host"] for r in records) == ["web1", "web2", "web2"]


def test_dry_run_checks_the_files_the_real_run_needs_and_names_what_is_missing(
    project: Path,
) -> None:
    (project / "inventories" / "known_hosts").unlink()
    inventory = project / "inventories" / "flow.yml"
    inventory.write_text(
        inventory.read_text().replace(
            "known_hosts: inventories/known_hosts}",
            "known_hosts: inventories/known_hosts, identity_file: keys/deploy}",
        )
    )
    with pytest.raises(UsageError) as refused:
        local_checks(load_environment("flow", project))
    message = str(refused.value)
    assert "hosts.web1.ssh.identity_file: keys/deploy is missing" in message
    assert "hosts.web1.ssh.known_hosts: inventories/known_hosts is missing" in message


def test_dry_run_refuses_a_secret_it_cannot_read(project: Path) -> None:
    inventory = project / "inventories" / "flow.yml"
    inventory.write_text(
        inventory.read_text() + "env: {secrets: {API_TOKEN: {from_file: secrets/api_token}}}\n"
    )
    with pytest.raises(UsageError, match="API_TOKEN"):
        local_checks(load_environment("flow", project))


def test_dry_run_ends_with_a_summary_of_what_it_checked(env: Environment) -> None:
    lines: list[str] = []
    plan = _dry_plan(env, "release", None)
    print_plan(plan, lines.append, local_checks(env))
    text = "\n".join(lines)
    assert "ok: app/manage.py present" in text
    assert "ok: ssh.known_hosts inventories/known_hosts readable" in text
    last = lines[-1].strip()
    steps = len(plan.steps)
    assert last.startswith(f"dry run: {steps} steps on 2 hosts; 4 local check(s) passed")
    assert last.endswith("nothing was contacted or changed")


def test_a_wrong_env_lists_the_environments_that_exist(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    with pytest.raises(Exit) as stopped, session("release") as s:
        s.load("flwo")
    assert stopped.value.code == 2
    assert str(stopped.value.message) == (
        "releasebook: --env=flwo: no inventories/flwo.yml; the environments are: flow"
    )


def test_doctor_names_an_unreachable_host_and_still_checks_the_others(
    env: Environment,
) -> None:
    reached: list[str] = []

    def opener(env: Environment, host: Host | None) -> Transport:
        if host is not None and host.name == "web1":
            raise HostUnreachable("web1 (deploy@127.0.0.1:22): connection refused")
        scripted = ScriptedHost(host.name if host else CONTROLLER, facts=("current=r1",))
        reached.append(scripted.name)
        return scripted

    rows = ops.doctor(env, Masker(), opener=opener)
    web1 = [r for r in rows if r.host == "web1"]
    assert [(r.check, r.ok) for r in web1] == [("ssh", False)]
    assert "connection refused" in web1[0].detail
    others = {h.name for h in env.hosts} - {"web1"}
    assert others and others <= {r.host for r in rows if r.check == "release"}
    assert "web1" in [r.host for r in ops.failed_rows(rows)]
    # Inventory order: web1's row where web1 stands, not last.
    order = [h.name for h in env.hosts]
    shown = list(dict.fromkeys(r.host for r in rows))
    assert shown == [n for n in order if n in shown]


def test_doctor_with_no_host_reachable_gives_one_ssh_row_per_host(env: Environment) -> None:
    def opener(env: Environment, host: Host | None) -> Transport:
        if host is None:
            return ScriptedHost(CONTROLLER)
        raise HostUnreachable(f"{host.name}: timed out")

    rows = ops.doctor(env, Masker(), opener=opener)
    assert [(r.host, r.check, r.ok) for r in rows] == [(h.name, "ssh", False) for h in env.hosts]


def test_maintenance_and_app_control_refuse_while_a_run_holds_the_lock(env: Environment) -> None:
    def lock(lease_until: float) -> LockInfo:
        return LockInfo(
            "ana", "laptop", 4242, "2026-01-01T12:00:00Z", "release", "r2", "7" * 32, lease_until
        )

    names = [h.name for h in env.hosts]
    held = {n: HostFacts(n, "r1", ("r1",), (), lock=lock(time.time() + 600)) for n in names}
    with pytest.raises(LockHeld) as refused:
        ops.refuse_while_locked(env, held, "maintenance on")
    message = str(refused.value)
    assert refused.value.exit_code == 4
    assert "maintenance on did not run and nothing was changed" in message
    assert "ana" in message and f"inv unlock --env={env.name}" in message
    # A stale lock (its holder gone) and no lock do not stop a day-2 command.
    stale = {n: HostFacts(n, "r1", ("r1",), (), lock=lock(time.time() - 60)) for n in names}
    ops.refuse_while_locked(env, stale, "maintenance on")
    ops.refuse_while_locked(env, {n: HostFacts(n, "r1", ("r1",), ()) for n in names}, "app stop")
