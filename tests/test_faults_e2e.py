"""Faults injected into real processes on two hosts: sshd killed in the middle of a step,
an unreachable host, a connection that times out, a failing build, migration and
collectstatic, a /readyz that answers 500 or hangs, a full deploy filesystem, Ctrl-C
during install and during restart, two releases at once, and the lock broken under a
running release.

Every time, the command exits non-zero naming the host and the step; users are served
throughout (a steady load on both web hosts fails no request) and afterwards by the
release that was live; the lock is released; ``shared/`` (env file, an uploaded file) and
the older releases are intact; each host's history records what happened; and a retry
succeeds once the cause is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
from load import Load, LoadReport
from services import fresh_database, started_fleet
from simhosts import SimFleet, SimHost

pytestmark = pytest.mark.e2e

ROLES = {"web1": ["web", "worker", "beat", "migrate"], "web2": ["web"]}
SLOW_HOOKS = """
hooks:
  after:
    install: ["sleep 6"]
"""
UPLOAD = "an uploaded file\n"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    # Each host's /srv is a filesystem of its own, so that one of them can fill up.
    with started_fleet(tmp_path_factory.mktemp("fleet"), list(ROLES), srv_size="1g") as fleet:
        yield fleet


@pytest.fixture(scope="module")
def project(fleet: SimFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with fresh_database("rb_faults") as database:
        inventory = ssh_inventory(
            fleet,
            database_url=database,
            broker_url="redis://127.0.0.1:6379/10",
            timeout=8,
            roles=ROLES,
        )
        project = make_project(tmp_path_factory.mktemp("faults"), inventory)
        (project.root / "inventories" / "slow.yml").write_text(inventory + SLOW_HOOKS)
        done = project.inv("release", "--env=e2e")
        assert done.returncode == 0, done.stdout + done.stderr
        for host in fleet.hosts:
            (_deploy(host) / "shared" / "media" / "upload.txt").write_text(UPLOAD)
        yield project


# --- what must hold after every fault ------------------------------------------------


def _deploy(host: SimHost) -> Path:
    return host.srv / "app"


def _served(host: SimHost) -> str:
    response = readyz(f"{host.address}:8000")
    assert response.status_code == 200, f"{host.name}: {response.text}"
    release: str = response.json()["release"]
    return release


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Before:
    """What was there before the fault."""

    live: str
    releases: dict[str, frozenset[str]]  # by host
    env_files: dict[str, str]  # by host: sha256 of shared/.env
    records: dict[str, int]  # by host: history lines


def _before(fleet: SimFleet) -> Before:
    live = {_served(host) for host in fleet.hosts}
    assert len(live) == 1, f"hosts serve different releases: {live}"
    return Before(
        live=live.pop(),
        releases={h.name: _release_dirs(h) for h in fleet.hosts},
        env_files={h.name: _sha(_deploy(h) / "shared" / ".env") for h in fleet.hosts},
        records={h.name: len(history(h.srv)) for h in fleet.hosts},
    )


def _release_dirs(host: SimHost) -> frozenset[str]:
    return frozenset(p.name for p in (_deploy(host) / "releases").iterdir())


def _survived(fleet: SimFleet, before: Before, users: LoadReport) -> None:
    """Users were and are served by a healthy release, and nothing was lost."""
    assert users.total > 0 and not users.failures, users.failures[:5]
    for host in fleet.hosts:
        deploy = _deploy(host)
        assert _served(host) == before.live, host.name
        assert not (deploy / ".releasebook" / "lock").exists(), f"lock left on {host.name}"
        assert _sha(deploy / "shared" / ".env") == before.env_files[host.name], host.name
        assert (deploy / "shared" / "media" / "upload.txt").read_text() == UPLOAD, host.name
        kept = _release_dirs(host)
        assert before.releases[host.name] <= kept, f"releases lost on {host.name}"
        assert kept == before.releases[host.name], f"half-made release left on {host.name}"
        for release in kept:
            assert (deploy / "releases" / release / "release.json").is_file(), release


def _recorded(fleet: SimFleet, before: Before) -> dict[str, list[dict[str, Any]]]:
    """The history records each host gained since ``before``."""
    return {h.name: history(h.srv)[before.records[h.name] :] for h in fleet.hosts}


def _last(fleet: SimFleet, before: Before) -> dict[str, dict[str, Any]]:
    records = _recorded(fleet, before)
    assert all(records.values()), f"no history recorded: {records}"
    return {host: gained[-1] for host, gained in records.items()}


@contextlib.contextmanager
def _users(fleet: SimFleet) -> Iterator[LoadReport]:
    """A steady load on every web host for the duration of the block."""
    urls = [f"http://{h.address}:8000/healthz" for h in fleet.hosts]
    with Load(urls, HOST_HEADER, threads_per_url=1, rate=10, max_seconds=300) as load:
        yield load.report


def _aborted_before_switch(
    project: Project,
    fleet: SimFleet,
    before: Before,
    users: LoadReport,
    done: subprocess.CompletedProcess[str],
    failed: str,
) -> None:
    """The release failed with ``failed`` ("step 'X' failed on HOSTS") and was undone
    before the switch, as every host's history says; nothing was lost and a retry works."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert failed in done.stderr
    _survived(fleet, before, users)
    step = failed.split("'")[1]
    assert {(r["outcome"], r["step"]) for r in _last(fleet, before).values()} == {("aborted", step)}
    _retry_succeeds(project, fleet, before)


def _never_started(
    project: Project,
    fleet: SimFleet,
    before: Before,
    users: LoadReport,
    done: subprocess.CompletedProcess[str],
    unreachable: str,
) -> None:
    """The release stopped at connecting, naming the host it could not reach; the hosts
    it reached recorded the attempt; nothing was lost and a retry without it works."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{unreachable} (root@" in done.stderr, done.stderr
    assert "no step ran and nothing was changed" in done.stderr
    _survived(fleet, before, users)
    for host_record in _last(fleet, before).values():
        assert host_record["outcome"] == "not_started" and unreachable in host_record["reason"]
    _retry_succeeds(project, fleet, before)


def _rolled_back_after_switch(
    project: Project,
    fleet: SimFleet,
    before: Before,
    users: LoadReport,
    done: subprocess.CompletedProcess[str],
) -> None:
    """The release went live, failed, and every host was rolled back to the release it
    served and verified, as every host's history says. Users were served by one of the
    two; the failed release stays on the hosts (marked bad, never a rollback target);
    nothing else changed, and a retry works."""
    assert done.returncode == 1, done.stdout + done.stderr
    for host in fleet.hosts:
        assert f"  {host.name}: serves {before.live}, verified" in done.stderr, done.stderr
    last = _last(fleet, before)
    assert {(r["outcome"], r["restored"]) for r in last.values()} == {("rolled_back", before.live)}
    (failed,) = {str(r["release"]) for r in last.values()}
    assert users.releases() <= {before.live, failed}
    for host in fleet.hosts:
        assert failed in _release_dirs(host), f"{failed} missing on {host.name}"
    kept = {name: releases | {failed} for name, releases in before.releases.items()}
    _survived(fleet, replace(before, releases=kept), users)
    _retry_succeeds(project, fleet, before)


def _retry_succeeds(project: Project, fleet: SimFleet, before: Before) -> None:
    done = project.inv("release", "--env=e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    new = released_id(done)
    assert new != before.live
    assert {_served(host) for host in fleet.hosts} == {new}


# --- injecting faults ------------------------------------------------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _inject_when(
    project: Project, env: str, marker: str, fault: Callable[[subprocess.Popen[str]], None]
) -> subprocess.CompletedProcess[str]:
    """Start a release, and inject ``fault`` once its output shows ``marker``."""
    environ = {
        **os.environ,
        "RELEASEBOOK_ROOT": str(project.root),
        "RELEASEBOOK_CACHE": str(WHEEL_CACHE),
    }
    process = subprocess.Popen(
        [INV, "release", f"--env={env}"],
        cwd=project.root,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A background job (as CI may run us) starts with SIGINT ignored, and children
        # inherit that; the release must see Ctrl-C as a person's terminal delivers it.
        preexec_fn=_default_sigint,
    )
    assert process.stdout is not None and process.stderr is not None
    stderr: list[str] = []
    errors = process.stderr
    drain = threading.Thread(target=lambda: stderr.append(errors.read()), daemon=True)
    drain.start()
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            fault(process)
            break
    # The same reader as above: what it has read ahead belongs to the output too.
    lines.append(process.stdout.read())
    process.wait(timeout=300)
    drain.join(timeout=30)
    return subprocess.CompletedProcess(
        process.args, process.returncode, "".join(lines), "".join(stderr)
    )


def _wait_for_process(fleet: SimFleet, host: SimHost, command: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in fleet.processes(host):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip() == (
                    command.encode()
                ):
                    return
        time.sleep(0.05)
    raise AssertionError(f"{command!r} never ran on {host.name}")


def _ctrl_c(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)


def _release_with(
    project: Project, path: Path, extra: str, message: str
) -> subprocess.CompletedProcess[str]:
    """Release a commit that appends ``extra`` to ``path``; the change is undone after."""
    original = path.read_text()
    path.write_text(original + extra)
    project.commit(message)
    try:
        return project.inv("release", "--env=e2e")
    finally:
        path.write_text(original)
        project.commit(f"undo: {message}")


# --- the faults --------------------------------------------------------------------------


def test_sshd_killed_mid_step_is_undone_once_it_is_back(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    web2 = fleet.host("web2")

    def crash_and_restart(_: subprocess.Popen[str]) -> None:
        _wait_for_process(fleet, web2, "sleep 6")  # the install step's hook is running
        fleet.kill_sshd(web2)  # the install script goes on running on the host, orphaned
        fleet.start_sshd(web2)  # as the host's service manager would

    with _users(fleet) as users:
        done = _inject_when(project, "slow", "Install the release", crash_and_restart)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "step 'install' failed on web2" in done.stderr
    assert "connection to web2 lost" in done.stderr
    # The undo waited for the orphaned install script instead of racing it.
    _survived(fleet, before, users)
    last = _last(fleet, before)
    assert {(r["outcome"], r["step"]) for r in last.values()} == {("aborted", "install")}
    # The host's journal knows what the controller could not: the orphaned install
    # finished (its script died at its next output), and nothing after it ran.
    journal = project.status()["web2"]["journal"]
    assert journal["release"] == last["web2"]["release"]
    assert journal["steps"][-2:] == ["upload", "install"]
    _retry_succeeds(project, fleet, before)


def test_unreachable_host_changes_nothing(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    inventory = (project.root / "inventories" / "e2e.yml").read_text()
    ghost = "  ghost:\n    address: 127.0.0.254\n    roles: [web]\n"
    (project.root / "inventories" / "ghost.yml").write_text(inventory + ghost)
    with _users(fleet) as users:
        done = project.inv("release", "--env=ghost")
    _never_started(project, fleet, before, users, done, "ghost")


def test_connection_that_times_out_changes_nothing(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    port = fleet.hosts[0].port
    inventory = (project.root / "inventories" / "e2e.yml").read_text()
    silent = "  silent:\n    address: 127.0.0.253\n    roles: [web]\n"
    (project.root / "inventories" / "silent.yml").write_text(
        inventory.replace("connect_timeout: 5", "connect_timeout: 2") + silent
    )
    # Accepts TCP connections and never says a word, like a host whose sshd hangs.
    with socket.create_server(("127.0.0.253", port), backlog=8) as listener, _users(fleet) as users:
        done = project.inv("release", "--env=silent", timeout=120)
        assert listener.fileno() >= 0
    assert "timed out" in done.stderr
    _never_started(project, fleet, before, users, done, "silent")


def test_failing_build_touches_no_host(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    requirements = project.root / "example" / "requirements.txt"
    with _users(fleet) as users:
        done = _release_with(
            project, requirements, "releasebook-no-such-package==0.0.1\n", "unbuildable"
        )
    assert "releasebook-no-such-package" in done.stderr
    _aborted_before_switch(project, fleet, before, users, done, "step 'build' failed on controller")


def test_failing_migration_changes_nothing_live(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    migration = project.root / "example" / "notes" / "migrations" / "0002_explode.py"
    migration.write_text(
        "from django.db import migrations\n\n\n"
        "def explode(apps, schema_editor):\n"
        "    raise RuntimeError('this migration always fails')\n\n\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('notes', '0001_initial')]\n"
        "    operations = [migrations.RunPython(explode, migrations.RunPython.noop)]\n"
    )
    project.commit("a failing migration")
    try:
        with _users(fleet) as users:
            done = project.inv("release", "--env=e2e")
    finally:
        migration.unlink()
        project.commit("drop the failing migration")
    assert "this migration always fails" in done.stderr
    _aborted_before_switch(project, fleet, before, users, done, "step 'migrate' failed on web1")


def test_failing_collectstatic_changes_nothing_live(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    settings = project.root / "example" / "config" / "settings" / "prod.py"
    css = project.root / "example" / "notes" / "static" / "notes" / "broken.css"
    css.write_text("body { background: url('missing.png'); }\n")
    manifest = (
        "\nSTORAGES = {\n"
        "    'default': {'BACKEND': 'django.core.files.storage.FileSystemStorage'},\n"
        "    'staticfiles': {\n"
        "        'BACKEND': 'django.contrib.staticfiles.storage.ManifestStaticFilesStorage'\n"
        "    },\n"
        "}\n"
    )
    try:
        with _users(fleet) as users:
            done = _release_with(project, settings, manifest, "collectstatic fails")
    finally:
        css.unlink()
        project.commit("drop the broken css")
    assert "missing.png" in done.stderr
    failed = "step 'collectstatic' failed on web1, web2"
    _aborted_before_switch(project, fleet, before, users, done, failed)


def test_readyz_answering_500_is_rolled_back(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    urls = project.root / "example" / "config" / "urls.py"
    fail = (
        "\nfrom django.http import HttpResponse as _Fail  # noqa: E402\n"
        'urlpatterns.insert(0, path("readyz", lambda request: _Fail(status=500)))  # noqa: F821\n'
    )
    with _users(fleet) as users:
        done = _release_with(project, urls, fail, "readyz answers 500")
    assert "step 'verify' failed on web1, web2" in done.stderr and "HTTP 500" in done.stderr
    _rolled_back_after_switch(project, fleet, before, users, done)


def test_hanging_readyz_is_rolled_back(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    urls = project.root / "example" / "config" / "urls.py"
    hang = (
        "\nimport time as _time  # noqa: E402\n"
        "from django.http import HttpResponse as _Late  # noqa: E402\n"
        "urlpatterns.insert(  # noqa: F821\n"
        "    0, path('readyz', lambda r: (_time.sleep(12), _Late())[1])  # noqa: F821\n"
        ")\n"
    )
    with _users(fleet) as users:
        done = _release_with(project, urls, hang, "readyz hangs")
    assert "step 'verify' failed on web1, web2" in done.stderr
    _rolled_back_after_switch(project, fleet, before, users, done)


def test_full_filesystem_on_one_host_changes_nothing_live(
    project: Project, fleet: SimFleet
) -> None:
    before = _before(fleet)
    srv = fleet.host("web2").srv
    inventory = (project.root / "inventories" / "e2e.yml").read_text()
    unchecked = inventory.replace("app:\n", "disk:\n  min_free_mb: 0\napp:\n", 1)
    (project.root / "inventories" / "nodiskcheck.yml").write_text(unchecked)
    filler = srv / "filler"
    stat = os.statvfs(srv)
    with filler.open("wb") as fill:
        # Room for the upload (a ~36 KB artifact), the lock and the history, not for
        # unpacking the release (~230 KB).
        os.posix_fallocate(fill.fileno(), 0, stat.f_bavail * stat.f_frsize - 96 * 1024)
    try:
        with _users(fleet) as users:
            refused = project.inv("release", "--env=e2e")
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "step 'preflight' failed on web2" in refused.stderr
            assert "MB free under /srv/app; need 500 MB" in refused.stderr
            # Without the preflight check the release runs into the full disk for real.
            full = project.inv("release", "--env=nodiskcheck")
        assert full.returncode == 1, full.stdout + full.stderr
        assert "failed on web2" in full.stderr and "No space left on device" in full.stderr
        _survived(fleet, before, users)
        records = _recorded(fleet, before)
        assert [r["step"] for r in records["web2"]] == ["preflight", full_step(full)]
        assert {r["outcome"] for gained in records.values() for r in gained} == {"aborted"}
    finally:
        filler.unlink()
    _retry_succeeds(project, fleet, before)


def full_step(done: subprocess.CompletedProcess[str]) -> str:
    """The step that ran into the full disk, as the error names it."""
    marker = "step '"
    start = done.stderr.index(marker) + len(marker)
    return done.stderr[start : done.stderr.index("'", start)]


def test_ctrl_c_during_install_changes_nothing_live(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    with _users(fleet) as users:
        done = _inject_when(project, "slow", "Install the release", _ctrl_c)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "interrupted (Ctrl-C) during" in done.stderr and "install" in done.stderr
    assert "on web1, web2" in done.stderr
    _survived(fleet, before, users)
    assert {r["outcome"] for r in _last(fleet, before).values()} == {"interrupted"}
    _retry_succeeds(project, fleet, before)


def test_ctrl_c_during_restart_rolls_back(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    with _users(fleet) as users:
        done = _inject_when(project, "e2e", "Restart the web servers", _ctrl_c)
    assert "interrupted (Ctrl-C) during switch" in done.stderr and "on web1, web2" in done.stderr
    _rolled_back_after_switch(project, fleet, before, users, done)


def test_two_releases_at_once_one_waits_its_turn(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def release(name: str) -> None:
        results[name] = project.inv("release", "--env=e2e")

    threads = [threading.Thread(target=release, args=(n,)) for n in ("a", "b")]
    with _users(fleet) as users:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
    codes = sorted(r.returncode for r in results.values())
    assert codes == [0, 4], {n: r.stderr for n, r in results.items()}
    refused = next(r for r in results.values() if r.returncode == 4)
    assert "is locked" in refused.stderr and "since" in refused.stderr
    assert "web1:" in refused.stderr or "web2:" in refused.stderr
    winner = released_id(next(r for r in results.values() if r.returncode == 0))
    assert users.releases() <= {before.live, winner}
    # The refused run changed nothing: one release more on each host, and its record.
    for host in fleet.hosts:
        assert _release_dirs(host) - before.releases[host.name] == {winner}
        assert not (_deploy(host) / ".releasebook" / "lock").exists()
    assert [r["release"] for r in _last(fleet, before).values()] == [winner, winner]
    assert not users.failures
    _retry_succeeds(project, fleet, _before(fleet))


def test_lock_broken_during_a_release_stops_it(project: Project, fleet: SimFleet) -> None:
    before = _before(fleet)
    web1 = fleet.host("web1")
    unlocked: list[subprocess.CompletedProcess[str]] = []

    def unlock(_: subprocess.Popen[str]) -> None:
        _wait_for_process(fleet, web1, "sleep 6")  # the release is busy installing
        unlocked.append(project.inv("unlock", "--env=e2e", "--yes"))

    with _users(fleet) as users:
        done = _inject_when(project, "slow", "Install the release", unlock)
    assert unlocked[0].returncode == 0, unlocked[0].stdout + unlocked[0].stderr
    assert "lease active" in unlocked[0].stdout  # it was told the run may still be going
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the environment lock was broken (inv unlock)" in done.stderr
    assert "refused on web1" in done.stderr
    _survived(fleet, before, users)
    for gained in _recorded(fleet, before).values():
        assert [(r["action"], r["outcome"]) for r in gained] == [
            ("unlock", "unlocked"),
            ("release", "lock_lost"),
        ]
    _retry_succeeds(project, fleet, before)
