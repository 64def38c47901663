"""Plans for the committed staging and production inventories, against golden files.

Each plan (release and rollback; symbolic as in the runbooks, and concrete as in a real
run with a fixed release id) is serialized to text -- per step, per target: uploads,
commands, verify, undo and the HTTP probe -- and compared with ``tests/golden/<name>.txt``.

When a change to the steps is intended, regenerate the golden files and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_plan.py

The serialization replaces the project root with ``<ROOT>`` so the files do not depend
on where the repository is checked out; the Source uses fixed fake paths, its app repository
inside the project root (the symbolic runbook shows it relative to the root, so an outside
path would depend on the checkout's depth).

Structural tests check what must hold whatever the golden files say, and that hostile
inventory values only ever reach the shell quoted.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shlex
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from releasebook.errors import InventoryError
from releasebook.execute.runner import plain_script
from releasebook.inventory import Environment, load_environment, load_inventory
from releasebook.plan import HostWork, Plan, PlanKind, ReleaseInfo, Run, Source, build_plan
from releasebook.plan.facts import HostFacts
from releasebook.plan.schedule import plan_groups
from releasebook.runbooks.bookkeeping import LockInfo
from releasebook.runbooks.release import RELEASE_STEP_NAMES
from releasebook.runbooks.rollback import rollback_steps

MAIN = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"


def _fake_source() -> Source:
    """Fixed fake controller paths, whatever optional fields Source has grown."""
    known: dict[str, Any] = {
        "repo": MAIN / "app-repo",
        "subdir": "example",
        "cache": Path("/cache"),
        "python": "/usr/bin/python3",
        "python_version": "3.11.2",
        "python_abi": "cpython 3.11 linux-x86_64",
    }
    names = {f.name for f in dataclasses.fields(Source)}
    return Source(**{k: v for k, v in known.items() if k in names})


SOURCE = _fake_source()
RELEASE_ID = "20260101-120000-000"
PREVIOUS_ID = "20251231-120000-000"
RELEASE = ReleaseInfo(
    release_id=RELEASE_ID,
    git_sha="0" * 40,
    requirements_hash="abcdef0123456789",
    created_by="ci@test",
    created_at="2026-01-01T12:00:00Z",
)
ROLLBACK_TO = ReleaseInfo(
    release_id=PREVIOUS_ID,
    git_sha="",
    requirements_hash="",
    created_by="ci@test",
    created_at="2026-01-01T12:30:00Z",
)
LOCK = LockInfo("ci", "laptop", 4242, "2026-01-01T12:00:00Z", "release", RELEASE_ID, "7" * 32, 1e9)
MARKER = "0123456789abcdef"
OLDER = tuple(f"202512{day}-120000-000" for day in (30, 29, 28, 27, 26))
ENVIRONMENTS = ("staging", "production")
KINDS: tuple[PlanKind, ...] = ("release", "rollback")
MODES = ("symbolic", "concrete")


def load(name: str) -> Environment:
    return load_environment(name, MAIN)


def previous_of(env: Environment) -> dict[str, str]:
    return {h.name: PREVIOUS_ID for h in env.hosts}


def facts_of(env: Environment) -> dict[str, HostFacts]:
    """Every host serving PREVIOUS_ID, with older releases kept (made in id order)."""
    releases = (*OLDER, PREVIOUS_ID)
    history = tuple(
        {"action": "release", "release": r, "outcome": "released", "previous": p}
        for r, p in zip(releases, (None, *releases[:-1]), strict=True)
    )
    return {
        h.name: HostFacts(h.name, PREVIOUS_ID, tuple(sorted(releases)), history) for h in env.hosts
    }


def make_plan(env: Environment, kind: PlanKind, mode: str) -> Plan:
    if mode == "symbolic":
        return build_plan(env, kind, source=SOURCE, run=None)
    release = RELEASE if kind == "release" else ROLLBACK_TO
    run = Run(release=release, lock=LOCK, marker=MARKER, action=kind, facts=facts_of(env))
    if kind == "release":
        return build_plan(env, kind, source=SOURCE, run=run, previous=previous_of(env))
    return build_plan(env, kind, source=SOURCE, run=run, targets=previous_of(env))


# --- serialization and golden files ----------------------------------------------------------


def _block(label: str, commands: tuple[str, ...]) -> list[str]:
    if not commands:
        return []
    out = [f"  {label}:"]
    for command in commands:
        first, *rest = command.split("\n")
        out.append(f"    $ {first}")
        out.extend(f"      {line}" if line else "" for line in rest)
    return out


def _work(work: HostWork) -> list[str]:
    roles = f" ({', '.join(work.host.roles)})" if work.host else ""
    out = [f"-- {work.target}{roles} time limit {work.timeout:g}s"]
    if work.uploads:
        out.append("  uploads:")
        for upload in work.uploads:
            skip = f"  [skip if: {upload.skip_if}]" if upload.skip_if else ""
            out.append(f"    {upload.local} -> {upload.remote}{skip}")
    out += _block("commands", work.commands)
    out += _block("verify", work.verify)
    out += _block("undo", work.undo)
    if work.probe is not None:
        p = work.probe
        out.append(
            f"  probe: GET {p.url} Host={p.host_header} X-Forwarded-Proto={p.forwarded_proto} "
            f"expect={p.expect_release} deadline={p.deadline:g}s"
        )
    return out


def serialize(plan: Plan) -> str:
    lines = [f"# {plan.kind} plan for {plan.environment.name}, release {plan.release_id}"]
    host, frame = next(iter(plan.frames.items()))
    lines += ["", f"== frame of {host}'s scripts"]
    lines += _block("script", (frame.script([("STEP", ("COMMANDS",), 600)]),))
    for planned in plan.steps:
        step = planned.step
        lines += ["", f"== {planned.number}. {step.name} [{step.where}, {step.phase}]"]
        for work in planned.work:
            lines += _work(work)
    text = "\n".join(lines) + "\n"
    return text.replace(str(plan.environment.root), "<ROOT>")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.is_file():
        pytest.fail(f"{path} is missing; create it with UPDATE_GOLDEN=1", pytrace=False)
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"golden/{name}.txt",
                "built plan",
            )
        )
        pytest.fail(
            f"plan differs from golden/{name}.txt (UPDATE_GOLDEN=1 to accept):\n{diff}",
            pytrace=False,
        )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_plan_matches_golden(name: str, kind: PlanKind, mode: str) -> None:
    env = load(name)
    text = serialize(make_plan(env, kind, mode))
    # nothing machine specific may reach the golden file
    for local in (str(MAIN), str(env.root), os.environ["HOME"], "/tmp/"):
        assert local not in text
    check_golden(f"{name}-{kind}-{mode}", text)


# --- structural facts ------------------------------------------------------------------------


@pytest.fixture(params=[(n, m) for n in ENVIRONMENTS for m in MODES], ids=lambda p: "-".join(p))
def release_plan(request: pytest.FixtureRequest) -> Plan:
    name, mode = request.param
    return make_plan(load(name), "release", mode)


def targets(plan: Plan, step: str) -> list[str]:
    return [w.target for w in plan.step(step).work]


def names_with(env: Environment, *roles: str) -> list[str]:
    return [h.name for h in env.hosts if set(roles) & set(h.roles)]


def all_host_commands(work: HostWork) -> tuple[str, ...]:
    return work.commands + work.verify + work.undo


def test_release_steps_in_order(release_plan: Plan) -> None:
    assert [p.step.name for p in release_plan.steps] == list(RELEASE_STEP_NAMES)
    assert [p.number for p in release_plan.steps] == list(range(1, len(RELEASE_STEP_NAMES) + 1))


def test_migrate_runs_on_exactly_one_host(release_plan: Plan) -> None:
    env = release_plan.environment
    (work,) = release_plan.step("migrate").work
    assert work.host is not None and work.host.has("migrate")
    assert [work.target] == names_with(env, "migrate")
    assert any("migration_state.py migrate --json" in c for c in work.commands)


def test_web_steps_only_on_web_hosts(release_plan: Plan) -> None:
    env = release_plan.environment
    web = names_with(env, "web")
    assert targets(release_plan, "collectstatic") == web
    assert targets(release_plan, "restart_web") == web
    assert len(web) < len(env.hosts)  # the check means something: there are other hosts


def test_worker_restarts_only_where_they_run(release_plan: Plan) -> None:
    env = release_plan.environment
    step = release_plan.step("restart_workers")
    assert [w.target for w in step.work] == names_with(env, "worker", "beat")
    for work in step.work:
        assert work.host is not None
        text = "\n".join(work.commands)
        assert ("--program worker " in text) == work.host.has("worker")
        assert ("--program beat " in text) == work.host.has("beat")


def test_verify_probes_web_hosts_with_host_header_and_release(release_plan: Plan) -> None:
    env = release_plan.environment
    step = release_plan.step("verify")
    assert [w.target for w in step.work] == names_with(env, "web")
    expected = RELEASE_ID if release_plan.release_id == RELEASE_ID else "${RELEASE}"
    for work in step.work:
        assert work.host is not None
        assert work.commands == work.verify == work.undo == ()
        assert work.uploads == ()
        assert work.probe is not None
        assert work.probe.host_header == env.health.host_header
        assert work.probe.expect_release == expected
        assert work.probe.url == f"http://{work.host.bind}{env.health.path}"
        assert work.probe.forwarded_proto == "https"


def test_build_runs_once_on_the_controller(release_plan: Plan) -> None:
    (work,) = release_plan.step("build").work
    assert work.host is None and work.target == "controller"
    assert work.commands and work.undo
    for planned in release_plan.steps:
        if planned.step.name != "build":
            assert all(w.host is not None for w in planned.work), planned.step.name


def test_host_commands_reference_the_deploy_path(release_plan: Plan) -> None:
    env = release_plan.environment
    deploy = str(env.deploy_path)
    for planned in release_plan.steps:
        for work in planned.work:
            if work.host is None or work.probe is not None:
                continue
            commands = all_host_commands(work)
            assert any(deploy in c for c in commands), (planned.step.name, work.target)
            for upload in work.uploads:
                assert str(upload.remote).startswith(f"{deploy}/"), upload
            # the controller's checkout never reaches a host
            assert not any(str(env.root) in c for c in commands), planned.step.name


def test_concrete_plan_uses_ids_symbolic_plan_uses_variables(release_plan: Plan) -> None:
    text = serialize(release_plan)
    if release_plan.release_id == RELEASE_ID:
        assert "${RELEASE}" not in text and "${GIT_SHA}" not in text
        assert f"/srv/example/releases/{RELEASE_ID}" in text
        cleanup = "\n".join(release_plan.step("cleanup").work[0].commands)
        # Decided from the facts, in the order the history says the releases were made
        # (OLDER was made newest id first: a controller clock that went backwards).
        made = [*OLDER, PREVIOUS_ID, RELEASE_ID]
        keep = release_plan.environment.keep_releases
        removed = made[: max(0, len(made) - keep)]
        assert f"for old in {' '.join(removed)}; do" in cleanup
        (build,) = release_plan.step("build").work
        assert any(c.startswith(f"git -C {MAIN / 'app-repo'} archive") for c in build.commands)
        assert any("/cache/wheels/abcdef0123456789" in c for c in build.commands)
    else:
        assert release_plan.release_id == "${RELEASE}"
        assert RELEASE_ID not in text
        assert '"/srv/example/releases/${RELEASE}"' in text


def _upload_names(plan: Plan) -> dict[str, list[str]]:
    return {
        w.target: [str(u.remote).rsplit("/", 1)[-1] for u in w.uploads]
        for w in plan.step("upload").work
    }


def _release_with(env: Environment, **facts: HostFacts) -> Plan:
    known = {**facts_of(env), **facts}
    run = Run(release=RELEASE, lock=LOCK, marker=MARKER, action="release", facts=known)
    return build_plan(env, "release", source=SOURCE, run=run, previous=previous_of(env))


def _tools_archive(plan: Plan) -> str:
    (build,) = plan.step("build").work
    line = next(c for c in build.commands if c.startswith("(cd ") and " tools-" in c)
    return line.split()[3]  # (cd OUT; sha256sum tools-HASH.tar > ...)


def test_tools_archive_goes_only_to_hosts_without_the_tools() -> None:
    """The wheel archive no longer carries supervisor and uv: their own archive is built
    and sent only where the probe found no tools, and the wheels only where the
    virtualenv is missing, whatever the tools."""
    env = load("staging")
    first, second = (h.name for h in env.hosts[:2])
    base = facts_of(env)
    ready = dataclasses.replace(base[first], tools_ready=True)
    plan = _release_with(env, **{first: ready})
    tools = _tools_archive(plan)
    assert tools.startswith("tools-") and tools.endswith(".tar")
    uploads = _upload_names(plan)
    wheels = f"wheels-{RELEASE.requirements_hash}.tar"
    assert tools not in uploads[first] and f"{tools}.sha256" not in uploads[first]
    assert wheels in uploads[first]  # its virtualenv for these requirements is missing
    assert tools in uploads[second] and f"{tools}.sha256" in uploads[second]
    # a host with the virtualenv but not the tools gets the tools alone
    venv_only = dataclasses.replace(base[second], venvs=(RELEASE.requirements_hash,))
    uploads = _upload_names(_release_with(env, **{first: ready, second: venv_only}))
    assert wheels not in uploads[second] and tools in uploads[second]
    # the upload's verify checks the tools' archive where it was sent
    work = plan.step("upload").on(second)
    assert work is not None
    (verify,) = [c for c in work.verify if f"{tools}.sha256" in c]
    assert "sha256sum --quiet -c" in verify and "tools/bin/uv" in verify


def test_no_tools_archive_is_built_or_sent_when_every_host_has_the_tools() -> None:
    env = load("staging")
    every = {
        name: dataclasses.replace(f, tools_ready=True, venvs=(RELEASE.requirements_hash,))
        for name, f in facts_of(env).items()
    }
    plan = _release_with(env, **every)
    (build,) = plan.step("build").work
    assert not any("tools-" in c or "/cache/tools/" in c for c in build.commands)
    for names in _upload_names(plan).values():
        assert not any(n.startswith(("tools-", "wheels-")) for n in names), names
    # the wheelhouse of the app's requirements never carries the tools
    assert not any("uv==" in c for c in build.commands)


def test_symbolic_upload_leaves_the_tools_to_the_host() -> None:
    """Without facts (the runbook, a dry run) the tools' archive is built and each host
    skips its upload when its tools are installed."""
    plan = make_plan(load("staging"), "release", "symbolic")
    for work in plan.step("upload").work:
        (archive, digest) = [u for u in work.uploads if "tools-" in str(u.remote)]
        assert str(archive.remote).endswith("/tools-${TOOLS_HASH}.tar")
        assert archive.skip_if == digest.skip_if
        assert archive.skip_if is not None and "tools/bin/supervisord" in archive.skip_if
    (build,) = plan.step("build").work
    assert any("/cache/tools/${TOOLS_HASH}" in c for c in build.commands)
    install = "\n".join(plan.step("install").work[0].commands)
    # installed from the tools' archive, which goes once they are in
    assert '--find-links "/srv/example/.releasebook/wheels/tools-${TOOLS_HASH}"' in install


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_rollback_switches_each_host_to_its_previous_release(name: str) -> None:
    env = load(name)
    plan = make_plan(env, "rollback", "concrete")
    assert [p.step.name for p in plan.steps] == [
        "lock",
        "schema",
        "maintenance_on",
        "backup",
        "unapply",
        "retire",
        "switch",
        "restart_web",
        "restart_workers",
        "verify",
        "maintenance_off",
        "record",
        "unlock",
    ]
    assert targets(plan, "retire") == []  # every host has a release to go back to
    # the schema is compared on the migrate host, from the live release; nothing to unapply
    assert targets(plan, "schema") == names_with(env, "migrate")
    (schema,) = plan.step("schema").work
    assert schema.commands[0].startswith(f"cd /srv/example/releases/{PREVIOUS_ID} && ")
    assert f"plan-to /srv/example/releases/{PREVIOUS_ID} --json" in schema.commands[0]
    assert all(not w.commands for w in plan.step("unapply").work)
    assert targets(plan, "switch") == [h.name for h in env.hosts]
    for work in plan.step("switch").work:
        assert f"ln -sfn /srv/example/releases/{PREVIOUS_ID} " in work.commands[0]
    for work in plan.step("verify").work:
        assert work.probe is not None and work.probe.expect_release == PREVIOUS_ID
    assert RELEASE_ID not in serialize(plan).replace(f'"release": "{RELEASE_ID}"', "")


@pytest.mark.parametrize(
    ("unapply", "maintenance", "added"),
    [
        (False, False, []),
        (True, False, ["backup", "unapply"]),
        (False, True, ["maintenance_on", "maintenance_off"]),
        (True, True, ["maintenance_on", "backup", "unapply", "maintenance_off"]),
    ],
)
def test_inv_rollback_steps_by_its_flags(
    unapply: bool, maintenance: bool, added: list[str]
) -> None:
    steps = rollback_steps(unapply=unapply, maintenance=maintenance)
    base = ["lock", "schema", "switch", "restart_web", "restart_workers", "verify"]
    assert [s for s in steps if s not in added] == [*base, "record", "unlock"]
    assert [s for s in steps if s in added] == added
    if maintenance:  # on before anything changes, off once verified
        assert steps.index("schema") < steps.index("maintenance_on") < steps.index("switch")
        assert steps.index("verify") < steps.index("maintenance_off") < steps.index("record")
    if unapply:  # the backup before the unapply, both before the switch
        assert steps.index("backup") < steps.index("unapply") < steps.index("switch")
    if unapply and maintenance:
        assert steps.index("maintenance_on") < steps.index("backup")


def _rollback_plan(env: Environment, maintenance: bool = True) -> Plan:
    run = Run(release=ROLLBACK_TO, lock=LOCK, marker=MARKER, action="rollback", facts=facts_of(env))
    return build_plan(
        env,
        "rollback",
        source=SOURCE,
        run=run,
        targets=previous_of(env),
        steps=rollback_steps(unapply=True, maintenance=maintenance),
        unapply=[("notes", "0001_initial")],
    )


@pytest.mark.parametrize(
    ("before_migrate", "expected"),
    [(None, "--when postgresql"), (True, "--when always"), (False, "no backup before")],
)
def test_rollback_migrate_backs_up_once_from_the_live_release_before_unapplying(
    before_migrate: bool | None, expected: str
) -> None:
    env = load("production")
    env = dataclasses.replace(
        env, backup=dataclasses.replace(env.backup, before_migrate=before_migrate)
    )
    plan = _rollback_plan(env)
    assert targets(plan, "backup") == names_with(env, "migrate")[:1]
    (backup,) = plan.step("backup").work
    (command,) = backup.commands
    assert expected in command
    if before_migrate is not False:
        live = f"/srv/example/releases/{PREVIOUS_ID}"
        assert command.startswith(f"cd {live} && {live}/.releasebook/with-env venv/bin/python ")
        assert "db_backup.py dump --dir /srv/example/shared/backups" in command
        assert "--label before-unapply" in command
    # credentials come from the release's env file, never from the command line
    assert "DATABASE_URL" not in command and "PG" not in command
    # maintenance goes on, everywhere, before the backup starts; the unapply follows it
    groups = [[p.step.name for p in g] for g in plan_groups(plan, None, after="lock")]
    assert ["backup", "unapply"] in groups
    assert groups.index(["backup", "unapply"]) > groups.index(["maintenance_on"])


def test_rollback_maintenance_steps_are_the_release_ones_on_every_web_host() -> None:
    env = load("production")
    plan = _rollback_plan(env)
    release = make_plan(env, "release", "concrete")
    for name in ("maintenance_on", "maintenance_off"):
        assert targets(plan, name) == names_with(env, "web")
        ours, theirs = plan.step(name), release.step(name)
        assert [w.commands for w in ours.work] == [w.commands for w in theirs.work]
        assert [w.verify for w in ours.work] == [w.verify for w in theirs.work]
    assert plan.step("maintenance_off").step.phase == "finish"
    assert all(
        w.undo == ("rm -f /srv/example/shared/maintenance",)
        for w in plan.step("maintenance_on").work
    )
    without = _rollback_plan(env, maintenance=False)
    assert not without.has("maintenance_on") and not without.has("maintenance_off")


def test_a_rollback_takes_hosts_without_an_earlier_release_out_of_service() -> None:
    env = load("production")
    first, *others = [h.name for h in env.hosts]
    run = Run(release=ROLLBACK_TO, lock=LOCK, marker=MARKER, action="rollback", facts=facts_of(env))
    plan = build_plan(
        env, "rollback", source=SOURCE, run=run, targets=dict.fromkeys(others, PREVIOUS_ID)
    )
    assert targets(plan, "retire") == [first]
    assert first not in targets(plan, "switch") + targets(plan, "restart_web")
    (retire,) = plan.step("retire").work
    assert "rm -f /srv/example/current" in retire.commands
    assert retire.verify == ("test ! -e /srv/example/current",)


def test_staging_hook_runs_inside_the_release_after_migrate() -> None:
    plan = make_plan(load("staging"), "release", "concrete")
    (work,) = plan.step("migrate").work
    assert work.commands[-1].startswith(f"( cd /srv/example/releases/{RELEASE_ID} && ./venv/bin")


# --- hostile inventory values ---------------------------------------------------------------


HOSTILE_VALUE = "'; rm -rf / #"


def _hostile_project(tmp_path: Path, values: Mapping[str, str], host_extra: str = "") -> Path:
    root = tmp_path / "project"
    (root / "app").mkdir(parents=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("")
    (root / "inventories").mkdir()
    lines = "".join(f"    {k}: {_yaml_str(v)}\n" for k, v in values.items())
    (root / "inventories" / "hostile.yml").write_text(
        "transport: local\n"
        "app: {source: app, settings: config.settings, wsgi: 'config.wsgi:application'}\n"
        f"deploy: {{path: {tmp_path / 'deploy'}}}\n"
        "health: {host_header: example.com}\n"
        f"env:\n  values:\n{lines}"
        f"hosts:\n  web1:\n    roles: [web, migrate, worker, beat]\n{host_extra}"
    )
    return root / "inventories" / "hostile.yml"


def _yaml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "an inventory value was executed"


def _run_steps(plan: Plan, cwd: Path, *steps: str) -> subprocess.CompletedProcess[str]:
    commands = [c for step in steps for c in plan.step(step).work[0].commands]
    return subprocess.run(
        ["bash", "-c", plain_script(commands)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _concrete(env: Environment) -> Plan:
    run = Run(release=RELEASE, lock=LOCK, marker=MARKER, action="release")
    return build_plan(env, "release", source=SOURCE, run=run)


def test_hostile_env_values_reach_the_release_env_file_literally(
    tmp_path: Path, canary: Path
) -> None:
    values = {
        "HOSTILE": HOSTILE_VALUE,
        "SUBST": f"$(touch {canary}) `touch {canary}`",
        "QUOTES": "a \"b\" 'c' \\d $HOME",
        "MULTI": f"one\ntouch {canary}",
        "DEPLOY_REF": "sqlite:///{deploy}/shared/db.sqlite3",
    }
    env = load_inventory(_hostile_project(tmp_path, values), root=tmp_path / "project")
    plan = _concrete(env)
    (configure,) = plan.step("configure").work
    deploy = tmp_path / "deploy"
    literal = {k: v.replace("{deploy}", str(deploy)) for k, v in values.items()}
    lines = {k: f"{k}={shlex.quote(v)}" for k, v in literal.items()}
    # only ever shell-quoted: the command is exactly the template with the line quoted
    release_env = deploy / "releases" / RELEASE_ID / ".releasebook" / "env"
    tmp = shlex.quote(f"{release_env}.tmp")
    for line in lines.values():
        assert f"printf '%s\\n' {shlex.quote(line)} >> {tmp}" in configure.commands
    hostile_commands = [c for c in plan_commands(plan) if HOSTILE_VALUE in c]
    assert hostile_commands and all(shlex.quote(lines["HOSTILE"]) in c for c in hostile_commands)

    for _ in range(2):  # a second run gives the same file
        done = _run_steps(plan, tmp_path, "setup", "configure")
        assert done.returncode == 0, done.stderr
        assert release_env.read_text() == "".join(f"{line}\n" for line in lines.values())
    assert (deploy / "shared" / ".env").read_text() == ""  # the operator's file, untouched
    # and sourcing the env file (as the launcher does) gives back each exact value
    for name, value in literal.items():
        sourced = subprocess.run(
            ["sh", "-c", f'set -a; . {shlex.quote(str(release_env))}; printf "%s" "${name}"'],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert sourced == value


def test_inventory_values_win_over_the_shared_env_file_without_changing_it(
    tmp_path: Path, canary: Path
) -> None:
    env = load_inventory(
        _hostile_project(tmp_path, {"HOSTILE": HOSTILE_VALUE}), root=tmp_path / "project"
    )
    env_file = tmp_path / "deploy" / "shared" / ".env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text("HOSTILE=edited-on-the-host\nOTHER=kept\n")
    assert _run_steps(_concrete(env), tmp_path, "setup", "configure").returncode == 0
    assert env_file.read_text() == "HOSTILE=edited-on-the-host\nOTHER=kept\n"
    assert env_file.stat().st_mode & 0o777 == 0o600
    release_env = tmp_path / "deploy" / "releases" / RELEASE_ID / ".releasebook" / "env"
    assert release_env.read_text() == f"OTHER=kept\nHOSTILE={shlex.quote(HOSTILE_VALUE)}\n"
    assert release_env.stat().st_mode & 0o777 == 0o600


def plan_commands(plan: Plan) -> Iterator[str]:
    for planned in plan.steps:
        for work in planned.work:
            yield from all_host_commands(work)


@pytest.mark.parametrize("key", ["bind", "address"])
def test_hostile_bind_or_address_is_rejected_or_inert(tmp_path: Path, key: str) -> None:
    canary = tmp_path / "pwned"
    value = f"127.0.0.1:1\\nRELEASEBOOK_EOF\\ntouch {canary}\\n#"
    file = _hostile_project(tmp_path, {"A": "1"}, f'    {key}: "{value}"\n')
    try:
        env = load_inventory(file, root=tmp_path / "project")
    except InventoryError:
        return  # rejecting it is a fine answer
    _run_steps(_concrete(env), tmp_path, "setup", "configure")
    assert not canary.exists(), "the inventory value ran as a shell command"


def test_gunicorn_preloads_the_app_unless_the_inventory_says_not() -> None:
    env = load("staging")

    def gunicorn_commands(environment: Environment) -> list[str]:
        plan = make_plan(environment, "release", "concrete")
        text = "\n".join(c for w in plan.step("configure").work for c in w.commands)
        return [line for line in text.splitlines() if "-m gunicorn" in line]

    lines = gunicorn_commands(env)
    assert lines and all(" --preload " in line for line in lines)
    hosts = tuple(
        dataclasses.replace(h, web=dataclasses.replace(h.web, preload=False)) for h in env.hosts
    )
    lines = gunicorn_commands(dataclasses.replace(env, hosts=hosts))
    assert lines and not any("--preload" in line for line in lines)


def test_runbooks_read_the_same_from_any_checkout() -> None:
    """CI checks the committed runbooks from its own clone: nothing in them may name the
    path of the checkout they were rendered in (the local deploy path is relative)."""
    from releasebook.plan.source import find_source
    from releasebook.render.runbook import render_all

    env = load("local")
    documents = render_all(env, find_source(env))
    assert documents
    for path, text in documents.items():
        assert str(MAIN) not in text, path
