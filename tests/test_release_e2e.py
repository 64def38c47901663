"""End to end over real SSH: a simulated host (OpenSSH in its own mount namespace),
real gunicorn and Celery under supervisord, real PostgreSQL and Redis on loopback.

The tests share one host and one database and run in file order, each starting from
whatever release is live: release, release again, roll back; status, history, the
readiness gate, secrets. Faults injected into releases are in ``test_faults_e2e.py``.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from e2e_project import (
    Project,
    history,
    make_project,
    readyz,
    released_id,
    settled_status,
    ssh_inventory,
)
from services import fresh_database, started_fleet
from simhosts import SimFleet

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    with started_fleet(tmp_path_factory.mktemp("fleet"), ["web1"]) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database("rb_e2e") as url:
        yield url


@pytest.fixture(scope="module")
def project(
    fleet: SimFleet, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    inventory = ssh_inventory(
        fleet, database_url=database, broker_url="redis://127.0.0.1:6379/7", timeout=12
    )
    yield make_project(tmp_path_factory.mktemp("e2e"), inventory)


@pytest.fixture(scope="module")
def first_release(project: Project) -> str:
    done = project.inv("release", "--env=e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    return released_id(done)


def _bind(fleet: SimFleet) -> str:
    return f"{fleet.hosts[0].address}:8000"


def _live(project: Project) -> str:
    current: str = project.status()["web1"]["current"]
    return current


def test_release_release_rollback(project: Project, fleet: SimFleet, first_release: str) -> None:
    srv = fleet.hosts[0].srv
    assert readyz(_bind(fleet)).json()["release"] == first_release

    deploy = srv / "app"
    artifacts = deploy / ".releasebook" / "artifacts"
    # The first release to this fresh host sent it the tools' archive and installed
    # from it; the archive went once the tools were in.
    tools_put = "put /srv/app/.releasebook/artifacts/tools-"
    wheels_put = "put /srv/app/.releasebook/artifacts/wheels-"
    (first_log,) = _release_logs(project)
    assert tools_put in first_log and wheels_put in first_log
    assert (deploy / ".releasebook" / "tools" / "bin" / "uv").is_file()
    assert not list(artifacts.glob("tools-*")), list(artifacts.iterdir())
    out = project.root / ".releasebook" / "build" / "out"
    (wheels,) = out.glob("wheels-*.tar")
    (tools,) = out.glob("tools-*.tar")
    with tarfile.open(wheels) as archive:
        names = [Path(n).name for n in archive.getnames()]
    assert not [n for n in names if n.startswith(("uv-", "supervisor-"))], names
    with tarfile.open(tools) as archive:
        tool_names = [Path(n).name for n in archive.getnames()]
    assert any(n.startswith("uv-") for n in tool_names), tool_names
    print(f"wheel archive {wheels.stat().st_size} bytes, tools' archive {tools.stat().st_size}")

    css = project.root / "example" / "notes" / "static" / "notes" / "site.css"
    css.write_text(css.read_text() + "\n/* second release */\n")
    requirements = project.root / "example" / "requirements.txt"
    requirements.write_text(requirements.read_text() + "# second release: new requirements\n")
    sha = project.commit("second release")
    done = project.inv("release", "--env=e2e", "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    second = released_id(done)
    assert f"$ mkdir /srv/app/releases/{second}" in done.stdout  # -v: the commands
    # New requirements: a new wheel archive, but the host has the tools, so no tools.
    assert wheels_put in done.stdout and tools_put not in done.stdout
    assert len(list((deploy / "venvs").iterdir())) == 2
    # The same packages: the new virtualenv is the live one's files, hard-linked.
    # The links name the host's paths (/srv/app/...); the host's files are under srv here.
    first_venv, second_venv = (
        deploy / "venvs" / Path(os.readlink(deploy / "releases" / r / "venv")).name
        for r in (first_release, second)
    )
    assert f"starting from the live virtualenv {first_venv.name} (hard links)" in done.stdout
    (django_init,) = first_venv.glob("lib/python3*/site-packages/django/__init__.py")
    shared = second_venv / django_init.relative_to(first_venv)
    assert shared.stat().st_ino == django_init.stat().st_ino
    assert (second_venv / ".complete").read_text() == (first_venv / ".complete").read_text()
    response = readyz(_bind(fleet))
    assert response.status_code == 200
    assert response.json()["release"] == second
    assert response.json()["git_sha"] == sha

    done = project.inv("rollback", "--env=e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    assert readyz(_bind(fleet)).json()["release"] == first_release

    assert {first_release, second} <= {p.name for p in (deploy / "releases").iterdir()}
    assert os.readlink(deploy / "current") == f"/srv/app/releases/{first_release}"
    env_file = deploy / "shared" / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "DJANGO_SECRET_KEY=" in env_file.read_text()
    assert (deploy / "shared" / "media").is_dir()
    assert os.readlink(deploy / "releases" / second / ".env") == "/srv/app/shared/.env"
    assert (deploy / "releases" / second / "staticfiles" / "notes" / "site.css").is_file()
    # Both releases left the same migrations, and nothing changed the schema since the
    # second's record: the rollback answered from the history, without booting Django.
    assert history(srv)[-1]["schema"] == {
        "compared": True,
        "kept": [],
        "not_on_disk": [],
        "from": "history",
    }
    records = [(r["action"], r["release"], r["outcome"]) for r in history(srv)[-3:]]
    assert records == [
        ("release", first_release, "released"),
        ("release", second, "released"),
        ("rollback", first_release, "rolled_back_to"),
    ]
    # One web master serves between releases, the other waits for the next one to boot.
    workers = settled_status(fleet, "web1")
    assert workers.count("RUNNING") == 3, workers  # a web master, worker, beat
    assert len(re.findall(r"^web:web_[01] +STOPPED", workers, re.M)) == 1, workers


def _release_logs(project: Project) -> list[str]:
    """The verbose logs of the releases run so far, oldest first."""
    logs = project.root / ".releasebook" / "logs"
    return [p.read_text() for p in sorted(logs.glob("*-e2e-release*.log"))]


def test_unknown_host_key_is_refused(project: Project, fleet: SimFleet, first_release: str) -> None:
    inventory = project.root / "inventories" / "e2e.yml"
    stranger = project.root / "empty_known_hosts"
    stranger.write_text("")
    (project.root / "inventories" / "stranger.yml").write_text(
        inventory.read_text().replace(str(fleet.known_hosts), str(stranger))
    )
    live = _live(project)
    done = project.inv("release", "--env=stranger")
    assert done.returncode == 1
    assert "web1" in done.stderr and "known_hosts" in done.stderr
    assert "nothing was changed" in done.stderr
    assert _live(project) == live


def test_status_lists_releases(project: Project, first_release: str) -> None:
    done = project.inv("status", "--env=e2e")
    assert done.returncode == 0, done.stderr
    assert "web1: current " in done.stdout
    assert first_release in done.stdout
    assert "(failed)" in done.stdout or "(live)" in done.stdout


def test_rollback_to_unknown_release_is_refused(project: Project, first_release: str) -> None:
    done = project.inv("rollback", "--env=e2e", "--to", "20000101-000000-000")
    assert done.returncode == 2
    assert "web1: release 20000101-000000-000 is not on this host" in done.stderr
    done = project.inv("rollback", "--env=e2e", "--to", "../../etc")
    assert done.returncode == 2
    assert "expected the form" in done.stderr


def test_history_file_location(fleet: SimFleet, first_release: str) -> None:
    path = Path(fleet.hosts[0].srv) / "app" / ".releasebook" / "history.jsonl"
    assert path.is_file()


def test_failing_gate_changes_nothing_and_names_the_check(
    project: Project, fleet: SimFleet, first_release: str
) -> None:
    live = _live(project)
    releases_dir = fleet.hosts[0].srv / "app" / "releases"
    before = {p.name for p in releases_dir.iterdir()}
    leaked = project.root / "example" / "notes" / "vendor_keys.py"
    # A committed cloud key, assembled here so this test file holds none.
    leaked.write_text('AWS_KEY = "' + "AKIA" + "Z7QX4RB2LM6TNW3K" + '"\n')
    project.commit("a committed secret")
    try:
        done = project.inv("release", "--env=e2e")
    finally:
        leaked.unlink()
        project.commit("secret removed")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "readiness gate failed" in done.stderr
    assert done.stderr.count("readiness gate failed") == 1
    assert "RB-SEC-012" in done.stdout + done.stderr
    assert "Z7QX4RB2LM6TNW3K" not in done.stdout + done.stderr
    # the full log of the run, named on failure: every command and its output, masked
    logged = re.search(r"full log: (\S+-e2e-release\.log)", done.stderr)
    assert logged, done.stderr
    log = project.root / logged.group(1)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "$ " in text and "RB-SEC-012" in text and "Z7QX4RB2LM6TNW3K" not in text
    assert readyz(_bind(fleet)).json()["release"] == live
    assert {p.name for p in releases_dir.iterdir()} == before
    last = history(fleet.hosts[0].srv)[-1]
    assert (last["outcome"], last["step"]) == ("aborted", "gate")
    assert last["gate"]["blocking"] == ["RB-SEC-012"]


def test_preflight_skip_is_recorded(project: Project, fleet: SimFleet, first_release: str) -> None:
    done = project.inv("preflight", "--env=e2e", "--skip", "RB-DB-001", "--reason", "e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RB-DB-001" in done.stdout and "skip" in done.stdout
    last = history(fleet.hosts[0].srv)[-1]
    assert (last["action"], last["outcome"]) == ("preflight", "passed")
    skipped = last["gate"]["skipped"]["RB-DB-001"]
    assert skipped["reason"] == "e2e" and "@" in skipped["by"]
    done = project.inv("preflight", "--env=e2e", "--skip", "RB-DB-001")
    assert done.returncode == 2
    assert "--reason" in done.stderr
    done = project.inv("preflight", "--env=e2e", "--skip", "RB-NOPE-1", "--reason", "x")
    assert done.returncode == 2
    assert "RB-NOPE-1" in done.stderr


# Secrets declared in the inventory, by where the controller reads them; and a hook that
# prints them (sourcing the env file) and fails, so the release fails after they arrived.
DECLARED_SECRETS = """  secrets:
    RB_DECLARED_TOKEN: {from_env: RB_E2E_DECLARED}
    RB_FILE_TOKEN: {from_file: secret-token}
"""
LEAKING_HOOK = (
    "hooks:\n  after:\n    configure:\n"
    '      - \'set -a; . .releasebook/env; printf "the hook saw %s and %s\\n" '
    '"$RB_DECLARED_TOKEN" "$RB_FILE_TOKEN"; exit 3\'\n'
)


def _secretive_inventories(project: Project) -> None:
    text = (project.root / "inventories" / "e2e.yml").read_text()
    declaring = text.replace("env:\n", "env:\n" + DECLARED_SECRETS, 1)
    (project.root / "inventories" / "secretive.yml").write_text(declaring)
    failing = declaring.replace("\nhosts:\n", "\n" + LEAKING_HOOK + "hosts:\n", 1)
    (project.root / "inventories" / "secretive-fail.yml").write_text(failing)


def _sourced(env_file: Path, name: str) -> str:
    done = subprocess.run(
        ["sh", "-c", f'. "$1"; printf %s "${name}"', "sh", str(env_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_secrets_never_leak(
    project: Project, fleet: SimFleet, first_release: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = fleet.hosts[0].srv
    env_file = srv / "app" / "shared" / ".env"
    canary = "canary-" + uuid.uuid4().hex
    env_file.write_text(env_file.read_text() + f"WEBHOOK_PROVIDER_X_SECRET={canary}\n")
    declared = f'declared-{uuid.uuid4().hex} it\'s "quoted" $HOME'
    from_file = "filed-" + uuid.uuid4().hex
    monkeypatch.setenv("RB_E2E_DECLARED", declared)
    (project.root / "secret-token").write_text(from_file + "\n")
    _secretive_inventories(project)
    secrets = [canary, declared, from_file] + [
        line.split("=", 1)[1].strip("'\"")
        for line in env_file.read_text().splitlines()
        if line.startswith("DJANGO_SECRET_KEY=")
    ]
    outputs = {
        "release": project.inv("release", "--env=secretive"),
        "release --json": project.inv("release", "--env=secretive", "--json"),
        "failing release": project.inv("release", "--env=secretive-fail", "--json"),
        "dry run": project.inv("release", "--env=secretive", "--dry-run"),
        "preflight": project.inv("preflight", "--env=secretive"),
        "status": project.inv("status", "--env=secretive"),
        "status --json": project.inv("status", "--env=secretive", "--json"),
        "history --json": project.inv("history", "--env=secretive", "--json"),
        "rollback": project.inv("rollback", "--env=secretive"),
        "runbook": project.inv("runbook", "--render"),
    }
    for name, done in outputs.items():
        expected = 1 if name == "failing release" else 0
        assert done.returncode == expected, name + ":\n" + done.stdout + done.stderr
    captured = "".join(done.stdout + done.stderr for done in outputs.values())
    files = [
        *sorted((srv / "app" / "shared" / "log").glob("*.log")),
        srv / "app" / ".releasebook" / "history.jsonl",
        srv / "app" / ".releasebook" / "journal",
        *sorted((project.root / "runbooks").rglob("*.md")),
        *sorted((project.root / "playbooks").rglob("*.yml")),  # the Ansible playbooks
    ]
    assert len(files) > 4
    for secret in secrets:
        assert len(secret) > 20
        assert secret not in captured
        for path in files:
            assert secret not in path.read_text(errors="replace"), path
    # The failing hook printed both declared values: masked in its output and history.
    failing = outputs["failing release"]
    assert "the hook saw *** and ***" in failing.stdout
    assert "the hook saw *** and ***" in failing.stderr
    aborted = [r for r in history(srv) if r.get("outcome") == "aborted"]
    assert "the hook saw *** and ***" in aborted[-1]["reason"]
    # The plan and the runbook name where each value comes from, never the value.
    assert "RB_DECLARED_TOKEN=env:RB_E2E_DECLARED" in outputs["dry run"].stdout
    runbook = (project.root / "runbooks" / "secretive" / "release.md").read_text()
    assert "RB_FILE_TOKEN=file:secret-token" in runbook
    # Delivered literally into the env file of each release that declared them (0600),
    # never into shared/.env; no copy is left anywhere.
    released = [r["release"] for r in history(srv) if r.get("outcome") == "released"][-1]
    release_env = srv / "app" / "releases" / released / ".releasebook" / "env"
    assert stat.S_IMODE(release_env.stat().st_mode) == 0o600
    assert _sourced(release_env, "RB_DECLARED_TOKEN") == declared
    assert _sourced(release_env, "RB_FILE_TOKEN") == from_file
    assert _sourced(release_env, "WEBHOOK_PROVIDER_X_SECRET") == canary
    assert "RB_DECLARED_TOKEN" not in env_file.read_text()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    uploads = srv / "app" / ".releasebook" / "secrets"
    assert stat.S_IMODE(uploads.stat().st_mode) == 0o700
    assert list(uploads.iterdir()) == []
    assert list((project.root / ".releasebook" / "build" / "out").glob("*.secrets")) == []


def test_a_ref_is_released_with_linked_paths_and_fresh_processes_answer_at_once(
    project: Project, fleet: SimFleet, first_release: str
) -> None:
    inventories = project.root / "inventories"
    text = (inventories / "e2e.yml").read_text()
    linked = (
        "deploy:\n  path: /srv/app\n  linked_dirs: [media, uploads]\n"
        "  linked_files: [conf/extra.ini]\n"
    )
    assert "deploy:\n  path: /srv/app\n" in text
    (inventories / "refs.yml").write_text(text.replace("deploy:\n  path: /srv/app\n", linked))
    project.commit("the refs environment")
    deploy = fleet.hosts[0].srv / "app"
    git = ["git", "-C", str(project.root), "-c", "user.email=e2e@test", "-c", "user.name=e2e"]

    # A linked file missing from shared/ stops the release before anything changes.
    live = _live(project)
    refused = project.inv("release", "--env=refs")
    assert refused.returncode != 0
    assert "conf/extra.ini" in refused.stdout + refused.stderr
    assert _live(project) == live
    fleet.run(
        "web1", "mkdir -p /srv/app/shared/conf && echo 'level = 1' > /srv/app/shared/conf/extra.ini"
    )

    # --ref: a branch's commit, not HEAD, is what is released.
    subprocess.run([*git, "checkout", "-qb", "feature"], check=True)
    css = project.root / "example" / "notes" / "static" / "notes" / "site.css"
    css.write_text(css.read_text() + "\n/* the feature */\n")
    feature = project.commit("the feature")
    subprocess.run([*git, "checkout", "-q", "-"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert head.stdout.strip() != feature
    done = project.inv("release", "--env=refs", "--ref", "feature")
    assert done.returncode == 0, done.stdout + done.stderr
    released = released_id(done)
    assert readyz(_bind(fleet)).json()["git_sha"] == feature
    release_dir = deploy / "releases" / released
    assert "the feature" in (release_dir / "staticfiles" / "notes" / "site.css").read_text()
    assert os.readlink(release_dir / "uploads") == "/srv/app/shared/uploads"
    assert os.readlink(release_dir / "conf" / "extra.ini") == "/srv/app/shared/conf/extra.ini"
    (deploy / "shared" / "uploads" / "kept.txt").write_text("an upload")

    unknown = project.inv("release", "--env=refs", "--ref", "no-such-branch")
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "no-such-branch" in unknown.stderr

    # Fresh processes answer their first requests, all at once, with 200.
    restarted = project.inv("app.restart", "--env=refs")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(lambda _: readyz(_bind(fleet)).status_code, range(32)))
    assert codes == [200] * 32

    again = project.inv("release", "--env=refs")  # HEAD, on main
    assert again.returncode == 0, again.stdout + again.stderr
    assert readyz(_bind(fleet)).json()["git_sha"] == head.stdout.strip()
    # Read on the host: the links name /srv/app/shared, the host's path.
    current = f"/srv/app/releases/{released_id(again)}"
    shown = fleet.run("web1", f"cat {current}/uploads/kept.txt {current}/conf/extra.ini")
    assert shown.stdout == "an uploadlevel = 1\n", shown


LINKED = "| static inputs unchanged since the live release: its staticfiles hard-linked"


def test_static_files_are_linked_from_the_live_release_when_their_inputs_are_unchanged(
    project: Project, fleet: SimFleet, first_release: str
) -> None:
    releases = fleet.hosts[0].srv / "app" / "releases"
    views = project.root / "example" / "notes" / "views.py"
    views.write_text(views.read_text() + "\n# a change without static files\n")
    project.commit("python only")
    base = project.inv("release", "--env=e2e")
    assert base.returncode == 0, base.stdout + base.stderr
    views.write_text(views.read_text() + "# and another\n")
    project.commit("python only, again")

    done = project.inv("release", "--env=e2e", "-v")

    assert done.returncode == 0, done.stdout + done.stderr
    assert LINKED in done.stdout, done.stdout
    css = Path("staticfiles", "notes", "site.css")
    live, before = releases / released_id(done), releases / released_id(base)
    assert (live / css).stat().st_ino == (before / css).stat().st_ino  # the same file
    admin = Path("staticfiles", "admin", "css", "base.css")
    assert (live / admin).stat().st_ino == (before / admin).stat().st_ino
    response = readyz(_bind(fleet))
    assert response.json()["release"] == released_id(done)

    # A changed stylesheet is collected again, into the new release's own files.
    source = project.root / "example" / "notes" / "static" / "notes" / "site.css"
    source.write_text(source.read_text() + "\n/* restyled */\n")
    project.commit("restyled")
    restyled = project.inv("release", "--env=e2e", "-v")
    assert restyled.returncode == 0, restyled.stdout + restyled.stderr
    assert LINKED not in restyled.stdout
    fresh = releases / released_id(restyled)
    assert (fresh / css).stat().st_ino != (live / css).stat().st_ino
    assert "restyled" in (fresh / css).read_text()
    assert "restyled" not in (live / css).read_text()


def test_a_pidfile_in_gunicorns_config_is_refused_by_the_gate(
    project: Project, fleet: SimFleet, first_release: str
) -> None:
    # The master each restart boots beside the serving one would find the serving one's
    # pidfile and exit; the gate names it before anything changes.
    live = _live(project)
    conf = project.root / "example" / "gunicorn.conf.py"
    conf.write_text('pidfile = "/srv/app/shared/gunicorn.pid"\n')
    project.commit("a pidfile")
    try:
        done = project.inv("release", "--env=e2e")
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert "RB-WEB-001" in output and "sets a pidfile" in output, output
        assert _live(project) == live
    finally:
        conf.unlink()
        project.commit("no pidfile")


def test_a_process_that_does_not_start_shows_its_own_log(
    project: Project, fleet: SimFleet, first_release: str
) -> None:
    # The app's own gunicorn.conf.py passes the gate (it loads), but its hook stops the
    # master once it is ready, before it forks a worker.
    live = _live(project)
    serving = _serving_master(fleet)
    conf = project.root / "example" / "gunicorn.conf.py"
    conf.write_text(
        "def when_ready(server):\n    raise SystemExit('this master refuses to serve')\n"
    )
    project.commit("a master that refuses")
    try:
        done = project.inv("release", "--env=e2e")
        output = done.stdout + done.stderr
        assert done.returncode == 1, output  # failed after the switch, rolled back
        assert re.search(
            r"web:web_[01] did not start \(it exited before forking a worker\); "
            "the end of its log:",
            output,
        ), output
        assert "this master refuses to serve" in output, output
        assert _live(project) == live
        assert readyz(_bind(fleet)).json()["release"] == live
        # The rollback's restart booted the other master, the one that had failed, with
        # the live release, and stopped the one that had gone on serving.
        assert _serving_master(fleet)[0] != serving[0]
    finally:
        conf.unlink()
        project.commit("no refusing master")


def _serving_master(fleet: SimFleet) -> tuple[str, str]:
    """(name, pid) of the one web master RUNNING on web1."""
    status = fleet.run(
        "web1",
        "/srv/app/.releasebook/tools/bin/supervisorctl "
        "-c /srv/app/.releasebook/supervisord.conf status 'web:*'",
    ).stdout
    ((name, pid),) = re.findall(r"^(web:web_[01])\s+RUNNING\s+pid (\d+)", status, re.M)
    return str(name), str(pid)
