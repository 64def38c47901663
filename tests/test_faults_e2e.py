"""Faults injected into real processes: Ctrl-C during install and during restart, sshd
killed in the middle of a step, two releases at once, an unreachable host, a connection
that times out, a hanging /readyz, a failing collectstatic, a failing build and a full
deploy filesystem. Each time the command exits non-zero naming
the step or the host, users keep being served by a healthy release, the lock is
released, `shared/` and older releases are intact, the history says what happened, and
a retry succeeds once the cause is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_project import INV, WHEEL_CACHE, Project, history, make_project, readyz, ssh_inventory
from services import fresh_database, started_fleet
from simhosts import SimFleet

pytestmark = pytest.mark.e2e

SLOW_HOOKS = """
hooks:
  after:
    install: ["sleep 6"]
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    # /srv is a filesystem of its own, so that it can fill up.
    with started_fleet(tmp_path_factory.mktemp("fleet"), ["web1"], srv_size="2g") as fleet:
        yield fleet


@pytest.fixture(scope="module")
def project(fleet: SimFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with fresh_database("rb_faults") as database:
        inventory = ssh_inventory(
            fleet, database_url=database, broker_url="redis://127.0.0.1:6379/10", timeout=8
        )
        project = make_project(tmp_path_factory.mktemp("faults"), inventory)
        (project.root / "inventories" / "slow.yml").write_text(inventory + SLOW_HOOKS)
        done = project.inv("release", "--env=e2e")
        assert done.returncode == 0, done.stdout + done.stderr
        yield project


def _served(fleet: SimFleet) -> str:
    response = readyz(f"{fleet.hosts[0].address}:8000")
    assert response.status_code == 200, response.text
    release: str = response.json()["release"]
    return release


def _intact(project: Project, fleet: SimFleet, live: str) -> None:
    """Users are served by `live`, no lock is left, shared/ and the live release exist."""
    assert _served(fleet) == live
    deploy = fleet.hosts[0].srv / "app"
    assert not (deploy / ".releasebook" / "lock").exists(), "lock left behind"
    assert (deploy / "shared" / ".env").is_file()
    assert (deploy / "shared" / "media").is_dir()
    assert (deploy / "releases" / live / "release.json").is_file()


def _release_dirs(fleet: SimFleet) -> set[str]:
    return {p.name for p in (fleet.hosts[0].srv / "app" / "releases").iterdir()}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when(
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
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            fault(process)
            break
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(
        process.args, process.returncode, "".join(lines) + stdout, stderr
    )


def _wait_for_process(fleet: SimFleet, command: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in fleet.processes(fleet.hosts[0]):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip() == (
                    command.encode()
                ):
                    return
        time.sleep(0.05)
    raise AssertionError(f"{command!r} never ran on {fleet.hosts[0].name}")


def _ctrl_c(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)


def test_ctrl_c_during_install_changes_nothing_live(project: Project, fleet: SimFleet) -> None:
    live = _served(fleet)
    before = _release_dirs(fleet)
    done = _interrupt_when(project, "slow", "Install the release", _ctrl_c)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "interrupted (Ctrl-C) during" in done.stderr
    _intact(project, fleet, live)
    assert _release_dirs(fleet) == before
    assert history(fleet.hosts[0].srv)[-1]["outcome"] == "interrupted"
    retry = project.inv("release", "--env=e2e")
    assert retry.returncode == 0, retry.stdout + retry.stderr


def test_ctrl_c_during_restart_rolls_back(project: Project, fleet: SimFleet) -> None:
    live = _served(fleet)
    done = _interrupt_when(project, "e2e", "Restart the web servers", _ctrl_c)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "interrupted (Ctrl-C) during switch" in done.stderr
    assert f"rolled back to {live} and verified" in done.stderr
    _intact(project, fleet, live)
    last = history(fleet.hosts[0].srv)[-1]
    assert (last["outcome"], last["restored"]) == ("rolled_back", live)
    retry = project.inv("release", "--env=e2e")
    assert retry.returncode == 0, retry.stdout + retry.stderr


def test_sshd_killed_mid_step_is_undone_once_it_is_back(project: Project, fleet: SimFleet) -> None:
    live = _served(fleet)
    before = _release_dirs(fleet)
    host = fleet.hosts[0]

    def crash_and_restart(_: subprocess.Popen[str]) -> None:
        _wait_for_process(fleet, "sleep 6")  # the install step's hook is running
        fleet.kill_sshd(host)  # the install script goes on running on the host, orphaned
        fleet.start_sshd(host)  # as the host's service manager would

    done = _interrupt_when(project, "slow", "Install the release", crash_and_restart)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "step 'install' failed on web1" in done.stderr
    assert "connection to web1 lost" in done.stderr
    _intact(project, fleet, live)
    # The undo waited for the orphaned install script instead of racing it.
    assert _release_dirs(fleet) == before
    last = history(host.srv)[-1]
    assert (last["outcome"], last["step"]) == ("aborted", "install")
    # The host's journal knows what the controller could not: the orphaned install
    # finished (its script died at its next output), and nothing after it ran.
    journal = project.status()["web1"]["journal"]
    assert journal["release"] == last["release"]
    assert journal["steps"][-2:] == ["upload", "install"]
    retry = project.inv("release", "--env=e2e")
    assert retry.returncode == 0, retry.stdout + retry.stderr


def test_two_releases_at_once_one_waits_its_turn(project: Project, fleet: SimFleet) -> None:
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def release(name: str) -> None:
        results[name] = project.inv("release", "--env=e2e")

    threads = [threading.Thread(target=release, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    codes = sorted(r.returncode for r in results.values())
    assert codes == [0, 4], {n: r.stderr for n, r in results.items()}
    refused = next(r for r in results.values() if r.returncode == 4)
    assert "lock" in refused.stderr and "web1" in refused.stderr and "since" in refused.stderr
    _intact(project, fleet, _served(fleet))
    assert project.inv("release", "--env=e2e").returncode == 0


def test_unreachable_host_changes_nothing(project: Project, fleet: SimFleet) -> None:
    live = _served(fleet)
    inventory = (project.root / "inventories" / "e2e.yml").read_text()
    ghost = "  ghost:\n    address: 127.0.0.254\n    roles: [web]\n"
    (project.root / "inventories" / "ghost.yml").write_text(inventory + ghost)
    done = project.inv("release", "--env=ghost")
    assert done.returncode == 1
    assert "ghost" in done.stderr and "nothing was changed" in done.stderr
    _intact(project, fleet, live)
    last = history(fleet.hosts[0].srv)[-1]
    assert last["outcome"] == "not_started" and "ghost" in last["reason"]


def test_connection_that_times_out_changes_nothing(project: Project, fleet: SimFleet) -> None:
    live = _served(fleet)
    port = fleet.hosts[0].port
    inventory = (project.root / "inventories" / "e2e.yml").read_text()
    silent = "  silent:\n    address: 127.0.0.253\n    roles: [web]\n"
    (project.root / "inventories" / "silent.yml").write_text(
        inventory.replace("connect_timeout: 5", "connect_timeout: 2") + silent
    )
    # Accepts TCP connections and never says a word, like a host whose sshd hangs.
    with socket.create_server(("127.0.0.253", port), backlog=8) as listener:
        done = project.inv("release", "--env=silent", timeout=120)
        assert listener.fileno() >= 0
    assert done.returncode == 1, done.stdout + done.stderr
    assert "silent" in done.stderr and "nothing was changed" in done.stderr
    assert "timed out" in done.stderr
    _intact(project, fleet, live)
    assert history(fleet.hosts[0].srv)[-1]["outcome"] == "not_started"


def _release_with(
    project: Project, path: Path, extra: str, message: str
) -> subprocess.CompletedProcess[str]:
    original = path.read_text()
    path.write_text(original + extra)
    project.commit(message)
    try:
        return project.inv("release", "--env=e2e")
    finally:
        path.write_text(original)
        project.commit(f"undo: {message}")


def test_hanging_readyz_is_rolled_back(project: Project, fleet: SimFleet) -> None:
    live = _served(fleet)
    urls = project.root / "example" / "config" / "urls.py"
    hang = (
        "\nimport time as _time  # noqa: E402\n"
        "from django.http import HttpResponse as _Late  # noqa: E402\n"
        "urlpatterns.insert(  # noqa: F821\n"
        "    0, path('readyz', lambda r: (_time.sleep(12), _Late())[1])  # noqa: F821\n"
        ")\n"
    )
    done = _release_with(project, urls, hang, "readyz hangs")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "step 'verify' failed on web1" in done.stderr and "rolled back to " + live in done.stderr
    _intact(project, fleet, live)


def test_failing_collectstatic_changes_nothing_live(project: Project, fleet: SimFleet) -> None:
    live = _served(fleet)
    before = _release_dirs(fleet)
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
        done = _release_with(project, settings, manifest, "collectstatic fails")
    finally:
        css.unlink()
        project.commit("drop the broken css")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "step 'collectstatic' failed on web1" in done.stderr
    assert "missing.png" in done.stderr
    _intact(project, fleet, live)
    assert _release_dirs(fleet) == before


def test_failing_build_touches_no_host(project: Project, fleet: SimFleet) -> None:
    live = _served(fleet)
    before = _release_dirs(fleet)
    requirements = project.root / "example" / "requirements.txt"
    done = _release_with(
        project, requirements, "releasebook-no-such-package==0.0.1\n", "unbuildable requirements"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "step 'build' failed on controller" in done.stderr
    _intact(project, fleet, live)
    assert _release_dirs(fleet) == before
    assert history(fleet.hosts[0].srv)[-1]["step"] == "build"
    assert project.inv("release", "--env=e2e").returncode == 0


def test_full_filesystem_changes_nothing_live(project: Project, fleet: SimFleet) -> None:
    live = _served(fleet)
    before = _release_dirs(fleet)
    srv = fleet.hosts[0].srv
    inventory = (project.root / "inventories" / "e2e.yml").read_text()
    unchecked = inventory.replace("app:\n", "disk:\n  min_free_mb: 0\napp:\n", 1)
    (project.root / "inventories" / "nodiskcheck.yml").write_text(unchecked)
    filler = srv / "filler"
    stat = os.statvfs(srv)
    with filler.open("wb") as fill:
        # Room for the lock and the history, not for unpacking the release.
        os.posix_fallocate(fill.fileno(), 0, stat.f_bavail * stat.f_frsize - 48 * 1024)
    try:
        refused = project.inv("release", "--env=e2e")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "step 'preflight' failed on web1" in refused.stderr
        assert "MB free under /srv/app; need 500 MB" in refused.stderr
        _intact(project, fleet, live)
        # Without the preflight check the release runs into the full disk for real.
        full = project.inv("release", "--env=nodiskcheck")
        assert full.returncode == 1, full.stdout + full.stderr
        assert "failed on web1" in full.stderr and "No space left on device" in full.stderr
        _intact(project, fleet, live)
        assert _release_dirs(fleet) == before
        assert history(srv)[-1]["outcome"] == "aborted"
    finally:
        filler.unlink()
    retry = project.inv("release", "--env=nodiskcheck")
    assert retry.returncode == 0, retry.stdout + retry.stderr
