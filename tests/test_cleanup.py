"""The cleanup step, run for real: the plan's own commands, in bash, on a fake deploy tree.

Cleanup never removes the current release, the previous one, or one a running process
still uses (its working directory, its program, an open file or an argument is inside
it); it ignores names that are not release ids and copes with half-made releases, an
empty or missing ``releases/``. Every process started here is stopped again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from releasebook.deploy.running import lock_info_for
from releasebook.execute.runner import plain_script
from releasebook.inventory import load_inventory
from releasebook.plan import ReleaseInfo, Run, Source, build_plan
from releasebook.plan.build import bookkeeping_script
from releasebook.plan.facts import parse_probe
from releasebook.runbooks.bookkeeping import PROBE

IDS = [f"20260101-12000{n}-000" for n in range(1, 7)]  # oldest first
R1, R2, R3, R4, R5, R6 = IDS
NEW, PREVIOUS = R6, R3  # R4 and R5 were rolled back, say: the previous live one is R3
JUNK = ("notes.txt", f"{R1}.partial", ".tmp-extract", "latest")

SOURCE = Source(
    repo=Path("/nonexistent/repo"),
    subdir="app",
    cache=Path("/nonexistent/cache"),
    python="/nonexistent/python3",
    python_version="3.11.2",
    python_abi="cpython 3.11",
)


def _inventory(tmp_path: Path, deploy: Path) -> Path:
    root = tmp_path / "project"
    (root / "app").mkdir(parents=True, exist_ok=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("")
    (root / "inventories").mkdir(exist_ok=True)
    file = root / "inventories" / "cleanup.yml"
    file.write_text(
        "transport: local\n"
        "app: {source: app, settings: config.settings, wsgi: 'config.wsgi:application'}\n"
        f"deploy: {{path: {deploy}, keep_releases: 2}}\n"
        "health: {host_header: example.com}\n"
        "hosts:\n  web1:\n    roles: [web, migrate]\n"
    )
    return file


@pytest.fixture
def deploy(tmp_path: Path) -> Path:
    """A deploy tree with six releases, some half-made, and things that are not releases."""
    deploy = tmp_path / "srv" / "app"
    releases = deploy / "releases"
    artifacts = deploy / ".releasebook" / "artifacts"
    for name in ("keep", "gone", "busy"):
        (deploy / "venvs" / name / "bin").mkdir(parents=True)
    artifacts.mkdir(parents=True)
    venv_of = {R6: "keep", R5: "keep", R3: "keep", R2: "busy", R1: "gone"}  # R4: no venv link
    for release_id in IDS:
        path = releases / release_id
        path.mkdir(parents=True)
        if release_id != R5:  # a half-made release: no manifest
            (path / "release.json").write_text("{}")
        if release_id in venv_of:
            (path / "venv").symlink_to(deploy / "venvs" / venv_of[release_id])
        (artifacts / f"{release_id}.tar.gz").write_text("")
    (releases / "notes.txt").write_text("an operator's note")
    (releases / f"{R1}.partial").mkdir()
    (releases / ".tmp-extract").mkdir()
    (releases / "latest").symlink_to(releases / R6)
    (deploy / "current").symlink_to(releases / NEW)
    (deploy / f".current-{R4}").symlink_to(releases / R4)  # an interrupted switch
    return deploy


def cleanup_script(
    tmp_path: Path, deploy: Path, *, with_verify: bool = True, new: str = NEW
) -> str:
    """The cleanup step as a release plans it: from the facts its probe reads here."""
    env = load_inventory(_inventory(tmp_path, deploy), root=tmp_path / "project")
    release = ReleaseInfo(
        release_id=new,
        git_sha="0" * 40,
        requirements_hash="keep",
        created_by="test@test",
        created_at="2026-01-01T12:00:06Z",
    )
    probe = subprocess.run(
        ["bash", "-c", bookkeeping_script(env, PROBE)], capture_output=True, text=True, check=True
    )
    facts = {"web1": parse_probe("web1", probe.stdout)}
    run = Run(
        release=release,
        lock=lock_info_for("release", new),
        marker="m",
        action="release",
        facts=facts,
    )
    plan = build_plan(env, "release", source=SOURCE, run=run, previous={"web1": PREVIOUS})
    (work,) = plan.step("cleanup").work
    return plain_script(work.commands + (work.verify if with_verify else ()))


def run_cleanup(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def listing(deploy: Path) -> set[str]:
    return {p.name for p in (deploy / "releases").iterdir()}


@contextmanager
def running(argv: list[str], cwd: Path, ready: str | None = None) -> Iterator[None]:
    """A process for the length of the block; stopped (and reaped) afterwards."""
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, text=True)
    try:
        if ready is not None:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == ready
        yield
    finally:
        process.kill()
        process.wait(timeout=10)


def test_keeps_current_previous_newest_and_ignores_what_is_not_a_release(
    tmp_path: Path, deploy: Path
) -> None:
    run_cleanup(cleanup_script(tmp_path, deploy), tmp_path)
    # keep_releases 2: R6 (current) and R5 are the newest, R3 was live before this run
    assert listing(deploy) == {R6, R5, R3, *JUNK}
    artifacts = {p.name for p in (deploy / ".releasebook" / "artifacts").iterdir()}
    assert artifacts == {f"{r}.tar.gz" for r in (R6, R5, R3)}
    assert {p.name for p in (deploy / "venvs").iterdir()} == {"keep"}
    assert not os.path.lexists(deploy / f".current-{R4}")
    assert os.readlink(deploy / "current") == str(deploy / "releases" / NEW)
    # a second run finds nothing more to do
    run_cleanup(cleanup_script(tmp_path, deploy), tmp_path)
    assert listing(deploy) == {R6, R5, R3, *JUNK}


def test_never_removes_what_current_points_at(tmp_path: Path, deploy: Path) -> None:
    (deploy / "current").unlink()
    (deploy / "current").symlink_to(deploy / "releases" / R1)
    run_cleanup(cleanup_script(tmp_path, deploy), tmp_path)
    assert listing(deploy) == {R6, R5, R3, R1, *JUNK}


SLEEP_READY = "import time; print('ready', flush=True); time.sleep(300)"
HOLD_OPEN = "import sys, time; f = open(sys.argv[1]); print('ready', flush=True); time.sleep(300)"


def _process_using(use: str, release: Path, elsewhere: Path) -> tuple[list[str], Path, str | None]:
    """argv, working directory and ready line of a process that uses ``release``."""
    if use == "cwd":
        return ["sleep", "300"], release, None
    if use == "program":
        program = release / "bin" / "sleep"
        program.parent.mkdir()
        shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
        return [str(program), "300"], elsewhere, None
    if use == "open-file":
        (release / "app.log").write_text("")
        return [sys.executable, "-c", HOLD_OPEN, str(release / "app.log")], elsewhere, "ready"
    assert use == "argument"
    return [sys.executable, "-c", SLEEP_READY, str(release / "manage.py")], elsewhere, "ready"


@pytest.mark.parametrize("use", ["cwd", "program", "open-file", "argument"])
def test_a_release_in_use_survives_until_its_process_ends(
    tmp_path: Path, deploy: Path, use: str
) -> None:
    process = _process_using(use, deploy / "releases" / R2, tmp_path)
    script = cleanup_script(tmp_path, deploy)
    with running(*process):
        done = run_cleanup(script, tmp_path)
        assert listing(deploy) == {R6, R5, R3, R2, *JUNK}
        assert f"kept {R2}: a running process still uses it" in done.stdout
        assert (deploy / "venvs" / "busy").is_dir()  # its venv stays with it
    run_cleanup(script, tmp_path)
    assert listing(deploy) == {R6, R5, R3, *JUNK}
    assert not (deploy / "venvs" / "busy").exists()


def test_reached_through_a_symlinked_deploy_path(tmp_path: Path, deploy: Path) -> None:
    """Processes report physical paths; the inventory may name a link to the deploy dir."""
    link = tmp_path / "app-link"
    link.symlink_to(deploy)
    script = cleanup_script(tmp_path, link)
    with running(["sleep", "300"], deploy / "releases" / R2):
        run_cleanup(script, tmp_path)
        assert R2 in listing(deploy)
    run_cleanup(script, tmp_path)
    assert R2 not in listing(deploy)


@pytest.mark.parametrize("state", ["empty", "missing"])
def test_copes_with_an_empty_or_missing_releases_dir(tmp_path: Path, state: str) -> None:
    deploy = tmp_path / "srv" / "app"
    deploy.mkdir(parents=True)
    if state == "empty":
        (deploy / "releases").mkdir()
    run_cleanup(cleanup_script(tmp_path, deploy, with_verify=False), tmp_path)
    assert (deploy / "releases").is_dir() == (state == "empty")


def test_counts_releases_in_the_order_the_history_says_they_were_made(
    tmp_path: Path, deploy: Path
) -> None:
    """A controller with its clock set back names a new release with an older id: the
    history, not the id, says which releases are the newest."""
    history = deploy / ".releasebook" / "history.jsonl"
    made = [R2, R3, R4, R5, R6, R1]  # R1 made last
    history.write_text(
        "".join(
            json.dumps({"action": "release", "release": r, "outcome": "released"}) + "\n"
            for r in made
        )
    )
    (deploy / "current").unlink()
    (deploy / "current").symlink_to(deploy / "releases" / R1)
    run_cleanup(cleanup_script(tmp_path, deploy, new=R1), tmp_path)
    # keep 2 of the made order (R6, R1), and PREVIOUS (R3): by ids, R5 and R4 would stay
    assert listing(deploy) == {R1, R6, R3, *JUNK}
