"""End to end, as a team adopting releasebook would: its wheel installed into a fresh
virtualenv outside the source tree, ``releasebook init`` in a Django project that is
its own git repository (a copy of example/), a release and a rollback to a simulated
host over SSH, the runbooks rendered there, and the rendered build step run by hand.

The hosts run Debian's ``/usr/bin/python3`` while the controller runs this checkout's
(possibly newer) Python: the wheels are built for the hosts' interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_project import CONTROLLER_PYTHON, REPO, readyz, released_id, ssh_inventory
from services import fresh_database, started_fleet
from simhosts import SimFleet

pytestmark = pytest.mark.e2e
HOST_PYTHON = "/usr/bin/python3"
CONTROLLER_LIBRARIES = ("paramiko", "fabric", "invoke", "jinja2", "httpx", "cryptography")


@dataclass
class Adopter:
    """The app's repository and the controller virtualenv releasebook was installed in."""

    repo: Path
    venv: Path

    def run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEBOOK_")}
        environ["PATH"] = f"{self.venv / 'bin'}:{environ['PATH']}"
        environ.pop("VIRTUAL_ENV", None)
        environ.pop("PYTHONPATH", None)
        return subprocess.run(
            [str(self.venv / "bin" / "releasebook"), *args],
            cwd=self.repo,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.repo), "-c", "user.email=t@t", "-c", "user.name=t", *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    with started_fleet(tmp_path_factory.mktemp("fleet"), ["shop1"]) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database("rb_library") as url:
        yield url


@pytest.fixture(scope="module")
def adopter(tmp_path_factory: pytest.TempPathFactory) -> Adopter:
    """releasebook's built wheel in a fresh virtualenv; a Django repo after ``init``."""
    base = tmp_path_factory.mktemp("adopter")
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("releasebook-*.whl")
    venv = base / "controller"
    subprocess.run([CONTROLLER_PYTHON, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    repo = base / "shop"
    shutil.copytree(
        REPO / "example",
        repo,
        ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "staticfiles", "var"),
    )
    adopter = Adopter(repo, venv)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    adopter.git("add", "-A")
    adopter.git("commit", "-qm", "the shop")
    done = adopter.run("init")
    assert done.returncode == 0, done.stdout + done.stderr
    return adopter


def test_installed_package_has_no_source_tree(adopter: Adopter) -> None:
    code = (
        "import releasebook, releasebook.cli, pathlib; "
        "p = pathlib.Path(releasebook.__file__).parent; "
        "print(p); print((p / 'templates' / 'release.md.j2').is_file()); "
        "print((p / 'playbooks' / 'provision.yml').is_file()); "
        "print((p / 'playbooks' / 'roles' / 'nginx' / 'tasks' / 'main.yml').is_file()); "
        "print((p / 'host_templates' / 'nginx-site.conf.j2').is_file())"
    )
    done = subprocess.run(
        [str(adopter.venv / "bin" / "python"), "-c", code],
        cwd=adopter.venv,
        capture_output=True,
        text=True,
        check=True,
    )
    location, *shipped = done.stdout.split()
    assert "site-packages" in location and not location.startswith(str(REPO))
    # the runbook templates, and what `inv provision` runs: its playbook, roles, templates
    assert shipped == ["True"] * 4
    listed = adopter.run("--list")
    assert listed.returncode == 0, listed.stderr
    assert "init" in listed.stdout and "release" in listed.stdout


def test_init_then_release_render_rollback(
    adopter: Adopter, fleet: SimFleet, database: str
) -> None:
    repo = adopter.repo
    for name in ("tasks.py", "releasebook.yaml", "inventories/staging.known_hosts"):
        assert (repo / name).is_file(), name
    written = (repo / "inventories" / "staging.yml").read_text()
    assert "source: ." in written and "config.settings.prod" in written
    # Filled in as the comments say: the hosts, their keys, what the app reads.
    inventory = ssh_inventory(
        fleet, database_url=database, broker_url="redis://127.0.0.1:6379/11", timeout=30
    )
    inventory = inventory.replace("source: example", "source: .")
    inventory = re.sub(r"python: .*", f"python: {HOST_PYTHON}", inventory)
    (repo / "inventories" / "staging.yml").write_text(inventory)
    (repo / "inventories" / "staging.known_hosts").write_text(fleet.known_hosts.read_text())
    inventory_known = f"known_hosts: {fleet.known_hosts}"
    assert inventory_known in inventory
    (repo / "inventories" / "staging.yml").write_text(
        inventory.replace(inventory_known, "known_hosts: inventories/staging.known_hosts")
    )
    rendered = adopter.run("runbook", "--render")
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    for name in ("release", "rollback", "production-readiness", "setup"):
        assert (repo / "runbooks" / "staging" / f"{name}.md").is_file(), name
    adopter.git("add", "-A")
    adopter.git("commit", "-qm", "deploy with releasebook")

    first = adopter.run("release")  # --env from releasebook.yaml
    assert first.returncode == 0, first.stdout + first.stderr
    first_id = released_id(first)
    bind = f"{fleet.hosts[0].address}:8000"
    assert readyz(bind).json()["release"] == first_id

    # The production virtualenv: releasebook's Django app, none of the controller.
    srv = fleet.hosts[0].srv / "app"
    (site,) = srv.glob("venvs/*/lib/python3*/site-packages")
    assert (site / "releasebook" / "django" / "views.py").is_file()
    assert not (site / "releasebook" / "__init__.py").exists()
    present = [lib for lib in CONTROLLER_LIBRARIES if (site / lib).exists()]
    assert present == []
    # Compiled as installed: even a module the app never imports has its bytecode.
    assert list((site / "django" / "contrib" / "flatpages" / "__pycache__").glob("sitemaps.*.pyc"))
    (cfg,) = srv.glob("venvs/*/pyvenv.cfg")
    assert f"home = {Path(HOST_PYTHON).parent}" in cfg.read_text()  # the hosts' Python
    # The tools came in their own archive, downloaded for the hosts' Python: installed,
    # then the archive removed.
    assert (srv / ".releasebook" / "tools" / "bin" / "uv").is_file()
    assert not list((srv / ".releasebook" / "artifacts").glob("tools-*"))

    views = repo / "notes" / "views.py"
    views.write_text(views.read_text() + "\n# the second release\n")
    adopter.git("commit", "-qam", "second")
    second = adopter.run("release")
    assert second.returncode == 0, second.stdout + second.stderr
    assert readyz(bind).json()["release"] == released_id(second)
    back = adopter.run("rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert readyz(bind).json()["release"] == first_id
    checked = adopter.run("runbook", "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _sh_block_after(text: str, heading: str) -> str:
    start = text.index(heading)
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None
    return block.group(1)


def test_rendered_build_step_runs(adopter: Adopter, fleet: SimFleet) -> None:
    """The release runbook's preamble and build step, pasted into a shell in the app's
    repository, build the artifact and a wheelhouse without releasebook's controller."""
    repo = adopter.repo
    if not (repo / "runbooks" / "staging" / "release.md").is_file():
        pytest.skip("needs the rendered runbook of test_init_then_release_render_rollback")
    text = (repo / "runbooks" / "staging" / "release.md").read_text()
    preamble = [
        line
        for line in _sh_block_after(text, "```sh\nCOMMAND=").splitlines()
        if line.startswith(("RELEASE=", "GIT_SHA=", "PYTHON_VERSION=", "REQ_HASH=", "TOOLS_HASH="))
    ]
    # PYTHON_VERSION is the hosts' (the runbook says to run it there when it differs).
    preamble = [
        line.replace(".venv/bin/python", HOST_PYTHON, 1)
        if line.startswith("PYTHON_VERSION=")
        else line
        for line in preamble
    ]
    build = _sh_block_after(text, ". Build the artifact")
    assert "RELEASEBOOK_SOURCE" not in text
    shutil.rmtree(repo / ".releasebook" / "cache")  # the step builds its own wheelhouse
    (repo / ".venv").symlink_to(adopter.venv)  # where the runbook says releasebook is
    try:
        script = "\n".join(["set -euo pipefail", *preamble, build, 'echo "$RELEASE $REQ_HASH"'])
        done = subprocess.run(
            ["bash", "-c", script], cwd=repo, capture_output=True, text=True, timeout=900
        )
    finally:
        (repo / ".venv").unlink()
    assert done.returncode == 0, done.stdout + done.stderr
    release, req_hash = done.stdout.split()[-2:]
    live = json.loads(fleet.run(fleet.hosts[0], "cat /srv/app/current/release.json").stdout)
    assert req_hash == live["requirements_hash"]  # the runbook's hash is the release's
    out = repo / ".releasebook" / "build" / "out"
    with tarfile.open(out / f"{release}.tar.gz") as artifact:
        names = artifact.getnames()
    assert "./manage.py" in names and "./.releasebook/gate.py" in names
    with tarfile.open(out / f"wheels-{req_hash}.tar") as wheels:
        wheel_names = [Path(n).name for n in wheels.getnames()]
    assert any(n.startswith("releasebook_django-") for n in wheel_names)
    assert any(n.startswith("Django-") or n.startswith("django-") for n in wheel_names)
    assert not [n for n in wheel_names if n.startswith(("releasebook-", "paramiko", "fabric"))]
    # The host tools are in their own archive, downloaded for the hosts' Python too.
    assert not [n for n in wheel_names if n.startswith(("uv-", "supervisor-"))]
    (tools,) = out.glob("tools-*.tar")
    with tarfile.open(tools) as archive:
        tool_names = [Path(n).name for n in archive.getnames()]
    assert any(n.startswith("uv-") for n in tool_names), tool_names
    assert any(n.startswith("supervisor-") for n in tool_names), tool_names
    check = subprocess.run(
        ["sha256sum", "-c", f"{release}.tar.gz.sha256"], cwd=out, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
