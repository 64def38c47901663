"""End to end: the generated Ansible playbooks on simulated SSH hosts.

``ansible-playbook`` of ``playbooks/e2e/release.yml`` (rendered by ``inv runbook --render``
for the test project's inventory) releases the example app on two hosts and leaves them
as ``inv release`` does: ``current``, the programs serving ``/readyz`` with the release id,
the history record ``inv status`` and ``inv history`` read. A release whose verify fails
after the switch (/readyz answering 500) rolls every host back; ``rollback.yml`` switches
back and verifies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_project import (
    REPO,
    WHEEL_CACHE,
    Project,
    history,
    make_project,
    readyz,
    settled_status,
    ssh_inventory,
)
from services import fresh_database, started_fleet
from simhosts import SimFleet

from releasebook.inventory import load_environment
from releasebook.plan.source import find_source
from releasebook.render.ansible import render_playbooks

pytestmark = pytest.mark.e2e
PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
HOSTS = {"web1": ["web", "worker", "beat", "migrate"], "web2": ["web"]}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    if not PLAYBOOK.exists():
        pytest.skip("ansible-core is not installed (pip install -e '.[ansible]')")
    with started_fleet(tmp_path_factory.mktemp("fleet"), list(HOSTS)) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database("rb_ansible") as url:
        yield url


@pytest.fixture(scope="module")
def project(
    fleet: SimFleet, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    inventory = ssh_inventory(
        fleet,
        database_url=database,
        broker_url="redis://127.0.0.1:6379/8",
        timeout=12,
        roles=HOSTS,
    )
    project = make_project(tmp_path_factory.mktemp("ansible"), inventory)
    # The playbooks run releasebook from the project's .venv, with the shared wheel cache.
    (project.root / ".venv").symlink_to(REPO / ".venv")
    (project.root / ".releasebook").mkdir()
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    (project.root / ".releasebook" / "cache").symlink_to(WHEEL_CACHE)
    render(project)
    yield project


def render(project: Project) -> None:
    """What `inv runbook --render` writes for the project's inventory: its playbooks."""
    env = load_environment("e2e", project.root)
    for path, text in render_playbooks(env, find_source(env)).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert (project.root / "playbooks" / "e2e" / "release.yml").is_file()


def playbook(project: Project, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    home = project.root / ".ansible-home"
    environ = {
        **os.environ,
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        # Ansible's SSH masters end a second after their last task, not a minute.
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=1s",
    }
    folder = project.root / "playbooks" / "e2e"
    return subprocess.run(
        [str(PLAYBOOK), "-i", str(folder / "hosts.yml"), str(folder / f"{name}.yml"), *extra],
        cwd=project.root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _current(fleet: SimFleet, host: str) -> str:
    return os.readlink(fleet.host(host).srv / "app" / "current").rsplit("/", 1)[-1]


def _serving(fleet: SimFleet) -> dict[str, str]:
    return {h.name: str(readyz(f"{h.address}:8000").json()["release"]) for h in fleet.hosts}


def _release(project: Project, fleet: SimFleet) -> str:
    done = playbook(project, "release")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    release = _current(fleet, "web1")
    assert _current(fleet, "web2") == release
    return release


@pytest.fixture(scope="module")
def first(project: Project, fleet: SimFleet) -> str:
    return _release(project, fleet)


def test_release_playbook_leaves_hosts_as_inv_release(
    project: Project, fleet: SimFleet, first: str
) -> None:
    assert _serving(fleet) == {"web1": first, "web2": first}
    for host in fleet.hosts:
        deploy = host.srv / "app"
        assert os.readlink(deploy / "current") == f"/srv/app/releases/{first}"
        assert (deploy / "releases" / first / "release.json").is_file()
        assert os.readlink(deploy / "releases" / first / ".env") == "/srv/app/shared/.env"
        last = history(host.srv)[-1]
        assert (last["action"], last["release"], last["outcome"]) == ("release", first, "released")
        assert not (deploy / ".releasebook" / "lock").exists()
        journal = (deploy / ".releasebook" / "journal").read_text()
        assert f"release {first} switch" in journal
    assert (fleet.host("web1").srv / "app" / "releases" / first / "staticfiles").is_dir()
    programs = settled_status(fleet, "web1")
    assert programs.count("RUNNING") == 3, programs  # a web master, worker, beat
    assert len(re.findall(r"^web:web_[01] +STOPPED", programs, re.M)) == 1, programs
    status = project.status()
    assert status["web1"]["current"] == first and status["web2"]["current"] == first
    shown = project.inv("history", "--env=e2e")
    assert shown.returncode == 0 and first in shown.stdout, shown.stdout + shown.stderr
    # --hosts limits what is read: web2's records only, and web1 is not contacted.
    limited = project.inv("history", "--env=e2e", "--json", "--hosts=web2")
    records = [json.loads(line) for line in limited.stdout.splitlines() if line.strip()]
    assert records and {r["host"] for r in records} == {"web2"}, limited.stdout
    unlocked = project.inv("unlock", "--env=e2e", "--yes", "--hosts=web1")
    assert unlocked.returncode == 0, unlocked.stdout + unlocked.stderr
    assert "web1: not locked" in unlocked.stdout and "web2" not in unlocked.stdout
    unknown = project.inv("history", "--env=e2e", "--hosts=web9")
    assert unknown.returncode != 0 and "no host web9 in e2e" in unknown.stderr


def test_failure_after_switch_rolls_every_host_back(
    project: Project, fleet: SimFleet, first: str
) -> None:
    urls = project.root / "example" / "config" / "urls.py"
    original = urls.read_text()
    urls.write_text(
        original + "\nfrom django.http import HttpResponse as _Fail  # noqa: E402\n"
        'urlpatterns.insert(0, path("readyz", lambda request: _Fail(status=500)))  # noqa: F821\n'
    )
    project.commit("readyz answers 500")
    try:
        done = playbook(project, "release")
    finally:
        urls.write_text(original)
        project.commit("undo: readyz answers 500")
    assert done.returncode != 0, done.stdout[-4000:]
    assert "every host was rolled back" in done.stdout, done.stdout[-6000:]
    currents = (_current(fleet, "web1"), _current(fleet, "web2"))
    assert currents == (first, first), done.stdout[-6000:]
    assert _serving(fleet) == {"web1": first, "web2": first}
    for host in fleet.hosts:
        last = history(host.srv)[-1]
        assert last["outcome"] == "rolled_back" and last["restored"] == first, last
        assert not (host.srv / "app" / ".releasebook" / "lock").exists()


def test_rollback_playbook_switches_back_and_verifies(
    project: Project, fleet: SimFleet, first: str
) -> None:
    second = _release(project, fleet)
    assert second != first
    assert _serving(fleet) == {"web1": second, "web2": second}
    done = playbook(project, "rollback")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert _current(fleet, "web1") == first and _current(fleet, "web2") == first
    assert _serving(fleet) == {"web1": first, "web2": first}
    for host in fleet.hosts:
        last = history(host.srv)[-1]
        assert (last["action"], last["release"], last["outcome"]) == (
            "rollback",
            first,
            "rolled_back_to",
        )
    assert project.status()["web1"]["current"] == first
    shutil.rmtree(project.root / ".ansible-home", ignore_errors=True)
