"""``inv release --env=<env> --dry-run`` prints the whole plan and touches nothing.

The temporary project is a git repository with a minimal app and two inventories: an
ssh one whose only host is 127.0.0.99 port 1, where nothing listens (any connection
attempt fails the command, which ``test_the_ssh_host_is_really_unreachable`` shows), and
a local one whose deploy path is inside the project.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from releasebook.runbooks.maintenance import RELEASE_MAINTENANCE_STEPS
from releasebook.runbooks.release import RELEASE_STEPS

MAIN = Path(__file__).resolve().parents[1]
INV = Path(sys.executable).parent / "inv"

APP = """\
app:
  source: app
  settings: config.settings
  wsgi: config.wsgi:application
  celery_app: config
health:
  host_header: example.test
"""

SSH_INVENTORY = (
    APP
    + """\
deploy:
  path: {deploy}
ssh:
  port: 1
  known_hosts: inventories/known_hosts
  connect_timeout: 5
hosts:
  web1:
    address: 127.0.0.99
    roles: [web, migrate, worker, beat]
"""
)

LOCAL_INVENTORY = (
    "transport: local\n"
    + APP
    + """\
deploy:
  path: var/local
hosts:
  local:
    roles: [web, migrate, worker, beat]
"""
)

Snapshot = dict[str, tuple[bool, int, int]]


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dry-run").resolve() / "project"
    (root / "app").mkdir(parents=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("django\n")
    (root / "inventories").mkdir()
    (root / "inventories" / "known_hosts").write_text("")
    ssh_deploy = root.parent / "ssh-deploy"
    (root / "inventories" / "ssh.yml").write_text(SSH_INVENTORY.format(deploy=ssh_deploy))
    (root / "inventories" / "local.yml").write_text(LOCAL_INVENTORY)
    shutil.copyfile(MAIN / "tasks.py", root / "tasks.py")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "app")
    return root


def snapshot(root: Path) -> Snapshot:
    """Every path under root (but .git, which git's own reads may refresh), with mtime."""
    out: Snapshot = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if ".git" in relative.parts:
            continue
        stat = path.lstat()
        out[str(relative)] = (path.is_dir(), stat.st_size, stat.st_mtime_ns)
    return out


def run_inv(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEBOOK_")}
    env["RELEASEBOOK_ROOT"] = str(project)
    return subprocess.run(
        [str(INV), *args], cwd=project, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("name", ["ssh", "local"])
def test_dry_run_prints_the_plan_and_touches_nothing(project: Path, name: str) -> None:
    home = Path(os.environ["HOME"])
    before = snapshot(project.parent), snapshot(home)

    done = run_inv(project, "release", f"--env={name}", "--dry-run")

    assert done.returncode == 0, done.stderr
    assert "releasebook:" not in done.stderr
    out = done.stdout
    header = re.match(rf"# release plan for {name}: (\d{{8}}-\d{{6}}-\d{{3}}) \(dry run\)\n", out)
    assert header, out[:200]
    release_id = header[1]

    # every step, in order, with its number
    positions = []
    shown = [s for s in RELEASE_STEPS if s.name not in RELEASE_MAINTENANCE_STEPS]
    for number, step in enumerate(shown, start=1):
        heading = f"\n## {number}. {step.name}: {step.title}\n"
        assert heading in out
        positions.append(out.index(heading))
    assert positions == sorted(positions)

    # the commands themselves, concrete: this run's release id and the committed sha
    deploy = project.parent / "ssh-deploy" if name == "ssh" else project / "var" / "local"
    host = "web1" if name == "ssh" else "local"
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert f"\n### {host}  (time limit 120s)\n" in out
    assert "\n### controller  (time limit 1800s)\n" in out
    # the bookkeeping runs from the plan too: the lock, the frame, the record, the unlock
    for command in (
        f"if mkdir {deploy}/.releasebook/lock 2>/dev/null; then",
        f"flock -o -w 300 -E 75 {deploy}/.releasebook/steps.lock bash -c",
        f">> {deploy}/.releasebook/history.jsonl",
        f"mv {deploy}/.releasebook/lock {deploy}/.releasebook/lock.gone.",
    ):
        assert command in out, command
    assert out.rstrip().endswith("nothing was contacted or changed")
    for command in (
        f"mkdir -p {deploy}/releases {deploy}/venvs",
        f"mkdir {deploy}/releases/{release_id}\n",
        f"tar -xzf {deploy}/.releasebook/artifacts/{release_id}.tar.gz",
        f"mv -T {deploy}/.current-{release_id} {deploy}/current\n",
        f"git -C {project} archive --format=tar {sha}:app",
        f'"git_sha": "{sha}"',
        f"put {project}/.releasebook/build/out/{release_id}.tar.gz -> "
        f"{deploy}/.releasebook/artifacts/{release_id}.tar.gz\n",
        "migration_state.py migrate --json\n",
        f"--program beat {deploy}/shared/log/beat.log <<'RELEASEBOOK_EOF'\n",
    ):
        assert command in out, command
    bind = "127.0.0.99:8000" if name == "ssh" else "127.0.0.1:8000"
    assert (
        f"GET http://{bind}/readyz  Host: example.test  X-Forwarded-Proto: https  "
        f"expect release {release_id} within 60s\n"
    ) in out

    # nothing was built, deployed or written, here or in HOME
    assert not deploy.exists()
    assert not (project / ".releasebook").exists()
    assert not (project / "var").exists()
    assert (snapshot(project.parent), snapshot(home)) == before


def test_the_ssh_host_is_really_unreachable(project: Path) -> None:
    """Without --dry-run the same inventory fails fast: the dry run's exit 0 means it
    never tried to connect."""
    done = run_inv(project, "status", "--env=ssh")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "web1 (deploy@127.0.0.99:1): cannot connect" in done.stderr
    assert not (project.parent / "ssh-deploy").exists()


def test_dry_run_of_a_bad_inventory_builds_nothing(project: Path) -> None:
    before = snapshot(project.parent)
    done = run_inv(project, "release", "--env=missing", "--dry-run")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "releasebook: --env=missing: no inventories/missing.yml; the environments are: local, ssh"
    )
    assert snapshot(project.parent) == before


@pytest.mark.parametrize("task", ["release", "rollback", "preflight"])
def test_a_negative_wait_is_refused_before_any_connection(project: Path, task: str) -> None:
    done = run_inv(project, task, "--env=ssh", "--wait=-5")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == "releasebook: --wait -5: expected seconds to wait, 0 or more"


@pytest.mark.parametrize(
    ("flags", "added"),
    [
        ((), ()),
        (("--migrate",), ("backup", "unapply")),
        (("--maintenance",), ("maintenance_on", "maintenance_off")),
        (
            ("--migrate", "--maintenance"),
            ("maintenance_on", "backup", "unapply", "maintenance_off"),
        ),
    ],
)
def test_rollback_dry_run_shows_the_backup_and_maintenance_its_flags_add(
    project: Path, flags: tuple[str, ...], added: tuple[str, ...]
) -> None:
    before = snapshot(project.parent)
    done = run_inv(project, "rollback", "--env=ssh", "--dry-run", *flags)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    shown = re.findall(r"^## \d+\. ([a-z_]+): ", out, flags=re.MULTILINE)
    base = ["lock", "schema", "switch", "restart_web", "restart_workers", "verify"]
    assert [s for s in shown if s not in added] == [*base, "record", "unlock"]
    assert tuple(s for s in shown if s in added) == added
    deploy = project.parent / "ssh-deploy"
    dump = f"db_backup.py dump --dir {deploy}/shared/backups --keep 7 --json --label before-unapply"
    assert (dump in out) == ("--migrate" in flags)
    assert (f"> {deploy}/shared/maintenance\n" in out) == ("--maintenance" in flags)
    assert out.rstrip().endswith("nothing was contacted or changed")
    assert snapshot(project.parent) == before
