"""The runbook is the whole truth, on real SSH hosts: what a failed release undoes is the
undo its runbook shows; a fault before the switch leaves the live release, its
configuration and its env file byte for byte as they were; a host with no earlier release
is taken out of service by a rollback, never switched to the failed release; SIGTERM is
Ctrl-C; a step's output cannot forge the runner's markers; a build cut short is never
reused; a hung step is stopped at its time limit.

Two hosts (``u1`` with every role, ``u2`` web) share one module-scoped project, plus a
third (``u3``) that only joins the inventory for the new-host case.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_project import (
    HOST_HEADER,
    INV,
    WHEEL_CACHE,
    Project,
    history,
    make_project,
    readyz,
    released_id,
    ssh_inventory,
)
from services import fresh_database, started_fleet
from simhosts import SimFleet, SimHost

pytestmark = pytest.mark.e2e

ROLES = {"u1": ["web", "worker", "beat", "migrate"], "u2": ["web"]}
TOKEN_VAR = "RB_UNDO_TOKEN"
SECRET = "  secrets:\n    WEBHOOK_TOKEN: {from_env: RB_UNDO_TOKEN}\n"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    with started_fleet(tmp_path_factory.mktemp("fleet"), [*ROLES, "u3"]) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def token() -> Iterator[str]:
    value = "token-" + uuid.uuid4().hex
    before = os.environ.get(TOKEN_VAR)
    os.environ[TOKEN_VAR] = value
    try:
        yield value
    finally:
        if before is None:
            del os.environ[TOKEN_VAR]
        else:
            os.environ[TOKEN_VAR] = before


@pytest.fixture(scope="module")
def project(
    fleet: SimFleet, tmp_path_factory: pytest.TempPathFactory, token: str
) -> Iterator[Project]:
    with fresh_database("rb_undo") as database:
        inventory = ssh_inventory(
            fleet,
            database_url=database,
            broker_url="redis://127.0.0.1:6379/11",
            timeout=15,
            roles=ROLES,
        ).replace("env:\n", "env:\n" + SECRET, 1)
        project = make_project(tmp_path_factory.mktemp("undo"), inventory)
        done = project.inv("release", "--env=e2e")
        assert done.returncode == 0, done.stdout + done.stderr
        yield project


def _hosts(fleet: SimFleet) -> list[SimHost]:
    return [fleet.host(name) for name in ROLES]


def _deploy(host: SimHost) -> Path:
    return host.srv / "app"


def _live(host: SimHost) -> str:
    return os.readlink(_deploy(host) / "current").rsplit("/", 1)[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _live_configuration(host: SimHost) -> dict[str, str]:
    """Every file the live release's processes read at their next start, by digest."""
    deploy = _deploy(host)
    release = deploy / "releases" / _live(host)
    files = [
        deploy / "shared" / ".env",
        deploy / ".releasebook" / "supervisord.conf",
        release / ".releasebook" / "env",
        release / ".releasebook" / "with-env",
        release / ".releasebook" / "programs.conf",
        release / "release.json",
    ]
    state = {str(path.relative_to(deploy)): _sha(path) for path in files}
    state["current"] = os.readlink(deploy / "current")
    state["releases"] = " ".join(sorted(p.name for p in (deploy / "releases").iterdir()))
    state["artifacts"] = " ".join(
        sorted(p.name for p in (deploy / ".releasebook" / "artifacts").glob("2*"))
    )
    state["secrets uploads"] = " ".join(
        p.name for p in (deploy / ".releasebook" / "secrets").iterdir()
    )
    return state


def _served(host: SimHost) -> str:
    response = readyz(f"{host.address}:8000")
    assert response.status_code == 200, f"{host.name}: {response.text}"
    release: str = response.json()["release"]
    return release


def _supervisorctl(fleet: SimFleet, host: SimHost, command: str) -> str:
    done = fleet.run(
        host,
        "/srv/app/.releasebook/tools/bin/supervisorctl -c /srv/app/.releasebook/supervisord.conf "
        + command,
        timeout=120,
    )
    return done.stdout + done.stderr


def _variant(project: Project, name: str, edit: str, extra: str = "") -> str:
    """An inventory ``name`` made from e2e's by replacing ``edit`` (old, new) pairs."""
    text = (project.root / "inventories" / "e2e.yml").read_text()
    for line in edit.splitlines():
        if line.strip():
            old, new = line.split(" => ")
            assert old in text, old
            text = text.replace(old, new)
    (project.root / "inventories" / f"{name}.yml").write_text(text + extra)
    return name


def test_a_fault_before_the_switch_leaves_the_live_configuration_byte_for_byte(
    project: Project, fleet: SimFleet
) -> None:
    """A release that renames the settings module, rotates a secret and changes a value
    fails in the readiness gate: every file the live processes read is as it was, the
    processes restart fine from it, and preflight with the same changes leaves no trace."""
    before = {h.name: _live_configuration(h) for h in _hosts(fleet)}
    live = {h.name: _live(h) for h in _hosts(fleet)}
    env = _variant(
        project,
        "changed",
        "settings: config.settings.prod => settings: config.settings.renamed\n"
        f'DJANGO_ALLOWED_HOSTS: "{HOST_HEADER}" => DJANGO_ALLOWED_HOSTS: "other.test"',
    )
    rotated = {**os.environ, TOKEN_VAR: "rotated-" + uuid.uuid4().hex}
    for task in ("release", "preflight"):
        done = subprocess.run(
            [INV, task, f"--env={env}"],
            cwd=project.root,
            env={
                **rotated,
                "RELEASEBOOK_ROOT": str(project.root),
                "RELEASEBOOK_CACHE": str(WHEEL_CACHE),
            },
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "readiness gate failed" in done.stderr and "RB-ENV-003" in done.stdout
        assert rotated[TOKEN_VAR] not in done.stdout + done.stderr
        for host in _hosts(fleet):
            assert _live_configuration(host) == before[host.name], (task, host.name)
    for host in _hosts(fleet):
        # The next start of a live process (a crash, a reboot) reads only what was live.
        out = _supervisorctl(fleet, host, "restart all")
        assert "ERROR" not in out, out
        assert _served(host) == live[host.name]
        release_env = _deploy(host) / "releases" / live[host.name] / ".releasebook" / "env"
        assert "rotated-" not in release_env.read_text()
        # The undo ran from the definitions, newest first, as the runbook shows it.
        journal = (_deploy(host) / ".releasebook" / "journal").read_text().splitlines()
        undone = [line.split()[3] for line in journal if line.split()[1] == "undo"]
        assert undone[-3:] == ["install", "upload", "record"]
        assert not list((_deploy(host) / ".releasebook" / "secrets").iterdir())
    assert not list((project.root / ".releasebook" / "build" / "out").glob("*.secrets*"))


FAILING_READYZ = (
    "\nfrom django.http import HttpResponseServerError as _Fail  # noqa: E402\n"
    'urlpatterns.insert(0, path("readyz", lambda request: _Fail(status=500)))  # noqa: F821\n'
)


def test_a_host_without_an_earlier_release_is_taken_out_of_service(
    project: Project, fleet: SimFleet
) -> None:
    """u3 joins the inventory; the release fails after its switch: u1 and u2 go back to
    what they served, verified; u3 is taken out of service, not left on (or rolled back
    to) the failed release; the summary says so, per host."""
    u3 = fleet.host("u3")
    live = {_live(h) for h in _hosts(fleet)}
    assert len(live) == 1
    env = _variant(project, "grown", "", f"  u3:\n    address: {u3.address}\n    roles: [web]\n")
    urls = project.root / "example" / "config" / "urls.py"
    original = urls.read_text()
    urls.write_text(original + FAILING_READYZ)
    project.commit("readyz answers 500")
    try:
        done = project.inv("release", f"--env={env}")
    finally:
        urls.write_text(original)
        project.commit("readyz fixed")
    assert done.returncode == 1, done.stdout + done.stderr
    (previous,) = live
    assert f"u1: serves {previous}, verified" in done.stderr
    assert f"u2: serves {previous}, verified" in done.stderr
    assert "u3: out of service" in done.stderr
    for host in _hosts(fleet):
        assert _served(host) == previous
    assert not os.path.lexists(_deploy(u3) / "current")
    with pytest.raises(httpx.ConnectError):  # nothing listens on u3's web port any more
        readyz(f"{u3.address}:8000")
    record = history(u3.srv)[-1]
    assert (record["outcome"], record["restored"]) == ("rolled_back", None)
    # The next release makes u3 serve like the others.
    done = project.inv("release", f"--env={env}")
    assert done.returncode == 0, done.stdout + done.stderr
    new = released_id(done)
    assert {_served(h) for h in (*_hosts(fleet), u3)} == {new}


def test_sigterm_after_the_switch_rolls_every_host_back(project: Project, fleet: SimFleet) -> None:
    """A cancelled CI job sends SIGTERM: after the switch that is a rollback, recorded,
    the lock released and the controller's copy of the secrets removed."""
    previous = _live(fleet.host("u1"))
    env = _variant(project, "slow-restart", "", "hooks:\n  after:\n    restart_web: [sleep 8]\n")
    process = subprocess.Popen(
        [INV, "release", f"--env={env}"],
        cwd=project.root,
        env={
            **os.environ,
            "RELEASEBOOK_ROOT": str(project.root),
            "RELEASEBOOK_CACHE": str(WHEEL_CACHE),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = _deploy(fleet.host("u2")) / ".releasebook" / "journal"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until u2 journals this run's switch
        if journal.exists() and " switch" in journal.read_text().splitlines()[-1]:
            break
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1, out + err
    assert "interrupted (SIGTERM)" in err
    for host in _hosts(fleet):
        assert _served(host) == previous
        assert not (_deploy(host) / ".releasebook" / "lock").exists()
        record = history(host.srv)[-1]
        assert record["outcome"] == "rolled_back" and "SIGTERM" in record["reason"]
    assert not list((project.root / ".releasebook" / "build" / "out").glob("*.secrets*"))


def test_a_step_printing_a_marker_cannot_pass_for_the_next_step(
    project: Project, fleet: SimFleet
) -> None:
    previous = _live(fleet.host("u1"))
    forged = "printf '@@releasebook-step collectstatic\\n@@rb-0 collectstatic 1\\n'; exit 1"
    env = _variant(project, "forged", "", f'hooks:\n  after:\n    migrate: ["{forged}"]\n')
    done = project.inv("release", f"--env={env}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "step 'migrate' failed on u1" in done.stderr
    assert not re.search(r"\su[12]\s+collectstatic\s+ok", done.stdout), done.stdout
    for host in _hosts(fleet):
        assert _live(host) == previous
        assert history(host.srv)[-1]["step"] == "migrate"


def test_a_build_cut_short_is_never_reused(project: Project, fleet: SimFleet) -> None:
    """The wheel archive's tar is killed half-way: the next release with those
    requirements builds it again instead of shipping the truncated file."""
    previous = _live(fleet.host("u1"))
    requirements = project.root / "example" / "requirements.txt"
    requirements.write_text(requirements.read_text() + f"# cut short {uuid.uuid4().hex}\n")
    project.commit("new requirements")
    fake = project.root.parent / "fakebin"
    fake.mkdir(exist_ok=True)
    real = subprocess.run(["which", "tar"], capture_output=True, text=True, check=True).stdout
    (fake / "tar").write_text(
        "#!/bin/sh\n"
        'case "$*" in *wheels-*.tar*) ;; *) exec ' + real.strip() + ' "$@" ;; esac\n'
        'for arg; do case "$arg" in *.tar|*.tar.tmp) out=$arg ;; esac; done\n'
        'head -c 100000 /dev/urandom > "$out"\n'
        "kill -9 $$\n"
    )
    (fake / "tar").chmod(0o755)
    environ = {
        **os.environ,
        "PATH": f"{fake}:{os.environ['PATH']}",
        "RELEASEBOOK_ROOT": str(project.root),
        "RELEASEBOOK_CACHE": str(WHEEL_CACHE),
    }
    done = subprocess.run(
        [INV, "release", "--env=e2e"],
        cwd=project.root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "step 'build' failed on controller" in done.stderr
    for host in _hosts(fleet):
        assert _live(host) == previous
    done = project.inv("release", "--env=e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    for host in _hosts(fleet):
        assert _served(host) == released_id(done)
    for archive in (project.root / ".releasebook" / "build" / "out").glob("wheels-*.tar"):
        with tarfile.open(archive) as whole:  # a truncated tar raises here
            assert whole.getnames()


def test_a_hung_step_is_stopped_at_its_time_limit(project: Project, fleet: SimFleet) -> None:
    previous = _live(fleet.host("u1"))
    env = _variant(
        project,
        "hung",
        "",
        "timeouts:\n  configure: 5\nhooks:\n  after:\n    configure: [sleep 600]\n",
    )
    started = time.monotonic()
    done = project.inv("release", f"--env={env}")
    assert time.monotonic() - started < 240
    assert done.returncode == 1, done.stdout + done.stderr
    assert "step 'configure' failed on u1, u2" in done.stderr
    assert "timed out after 5s" in done.stderr
    for host in _hosts(fleet):
        assert _live(host) == previous
        assert not (_deploy(host) / ".releasebook" / "lock").exists()
        assert not any("sleep 600" in " ".join(p) for p in _commands(fleet, host))


def _commands(fleet: SimFleet, host: SimHost) -> list[list[str]]:
    out = []
    for pid in fleet.processes(host):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0"))
        except OSError:
            continue
    return out
