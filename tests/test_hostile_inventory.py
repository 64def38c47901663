"""Hostile input: every inventory value, release id and flag either is rejected with a clear
error (exit code 2, naming the file and the key) or reaches the shell as one literal word.
It is never executed.

Hypothesis writes inventories whose paths, names, settings, env entries, secrets' sources
and release ids hold spaces, quotes, ``;``, ``$()``, backticks, newlines, NUL and
non-ASCII, each around a call of ``rb_canary``: a program that leaves a file behind when
it runs. An accepted inventory is planned (as for a release, or symbolically as for the
runbook) and every command of the plan, for the hosts and the controller, is run by bash
in a sandbox: ``rb_canary`` and ``mkdir`` are the only programs on PATH, every other one is
a stub that logs its arguments (bash's ``command_not_found_handle``; ``printf`` and
``echo`` log too), and ``cd`` goes nowhere. Each command runs twice, with stubs that
succeed and stubs that fail, so both sides of ``a && b || c`` are reached. The canary must
never run, and every logged argument that holds a hostile value holds all of it: it
arrived as one word.

Hooks are the operator's own shell code and run as written, by design (like a Makefile's
recipes); releasebook does not quote them. What it puts around them, the ``cd`` into the
release directory, is quoted like everything else: the hooks here are ``true``, run in the
sandbox with the rest, and a hostile step name under ``hooks`` is rejected.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from releasebook.errors import InventoryError, ReleasebookError
from releasebook.gate.command import validate_skips
from releasebook.inventory import load_environment, load_inventory
from releasebook.plan import Plan, ReleaseInfo, Run, Source, build_plan
from releasebook.plan.facts import validate_release_id
from releasebook.plan.schedule import parse_batch_size
from releasebook.runbooks.bookkeeping import LockInfo

MAIN = Path(__file__).resolve().parents[1]
INV = Path(sys.executable).with_name("inv")
CANARY = "rb_canary"
RELEASE_ID = "20260101-120000-000"

# --- hostile strings ---------------------------------------------------------------------

# Each way a shell could be made to run the canary, were the value ever evaluated.
ATTACKS = (
    f"$({CANARY})",
    f"`{CANARY}`",
    f"; {CANARY}",
    f"\n{CANARY}\n",
    f"| {CANARY}",
    f"&& {CANARY}",
    f"' ; {CANARY} ; '",
    f'" ; {CANARY} ; "',
    f'"$({CANARY})"',
    f"$'\\n'{CANARY}",
    f"<({CANARY})",
    f"\nRELEASEBOOK_EOF\n{CANARY}\n",
)
AWKWARD = list(" \t\n'\"\\;$`(){}[]*?~!#&|<>-_./=%:@,\0aZ9éü☃日🚀")
filler = st.text(alphabet=st.sampled_from(AWKWARD), max_size=8)
hostile = st.builds(lambda a, attack, b: a + attack + b, filler, st.sampled_from(ATTACKS), filler)


# --- where a value goes ------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Puts a value somewhere in the inventory; ``key`` is the key path errors must name,
    ``word`` what a logged argument holding the value must contain; ``reaches`` says that
    an accepted value is an argument of some command."""

    key: str
    put: Callable[[dict[str, Any], str], None]
    word: Callable[[str, str], str] = lambda value, deploy: value
    reaches: bool = False


def _set(path: str) -> Callable[[dict[str, Any], str], None]:
    def put(data: dict[str, Any], value: str) -> None:
        *parents, last = path.split(".")
        section = data
        for part in parents:
            section = section[part]
        section[last] = value

    return put


def _rename(path: str, old: str) -> Callable[[dict[str, Any], str], None]:
    def put(data: dict[str, Any], value: str) -> None:
        section = data
        for part in path.split("."):
            section = section[part]
        section[value] = section.pop(old)

    return put


def _first_of(path: str) -> Callable[[dict[str, Any], str], None]:
    def put(data: dict[str, Any], value: str) -> None:
        section, last = data, path.split(".")
        for part in last[:-1]:
            section = section[part]
        section[last[-1]] = [value]

    return put


def _deploy_path(data: dict[str, Any], value: str) -> None:
    data["deploy"]["path"] += "/" + value


PLACEMENTS = (
    Placement("deploy.path", _deploy_path),
    Placement("hosts", _rename("hosts", "web1")),
    Placement("hosts.web1.address", _set("hosts.web1.address")),
    Placement("hosts.web1.bind", _set("hosts.web1.bind")),
    Placement("app.settings", _set("app.settings")),
    Placement("app.wsgi", _set("app.wsgi")),
    Placement("app.celery_app", _set("app.celery_app")),
    Placement("app.python", _set("app.python"), reaches=True),
    Placement("app.requirements", _set("app.requirements"), reaches=True),
    Placement("health.path", lambda data, value: _set("health.path")(data, "/" + value)),
    Placement("health.host_header", _set("health.host_header")),
    Placement("env.values", _rename("env.values", "PLAIN")),
    Placement(
        "env.values.PLAIN",
        _set("env.values.PLAIN"),
        lambda value, deploy: "PLAIN=" + shlex.quote(value.replace("{deploy}", deploy)),
        reaches=True,
    ),
    Placement("env.required", _first_of("env.required")),
    Placement("env.generate", _first_of("env.generate")),
    Placement("env.secrets", _rename("env.secrets", "TOKEN")),
    Placement("env.secrets.TOKEN.from_env", _set("env.secrets.TOKEN.from_env")),
    Placement("env.secrets.KEY.from_file", _set("env.secrets.KEY.from_file"), reaches=True),
    Placement("gate.skip.RB-DB-001", _set("gate.skip.RB-DB-001")),
    Placement("hooks.before", _rename("hooks.before", "migrate")),
)


# Free-form values, the ones that reach the shell, are drawn more often than the rest.
ACCEPTED_AS_WRITTEN = tuple(
    p
    for p in PLACEMENTS
    if p.key in ("app.python", "app.requirements", "env.values.PLAIN", "health.path")
    or p.key.endswith("from_file")
)


def _inventory(deploy: Path) -> dict[str, Any]:
    return {
        "transport": "local",
        "app": {
            "source": "app",
            "settings": "config.settings",
            "wsgi": "config.wsgi:application",
            "celery_app": "config",
            "python": "python3",
            "requirements": "requirements.txt",
        },
        "deploy": {"path": str(deploy)},
        "health": {"host_header": "example.test", "path": "/readyz"},
        "env": {
            "required": ["REQUIRED"],
            "generate": ["GENERATED"],
            "values": {"PLAIN": "plain"},
            "secrets": {"TOKEN": {"from_env": "RB_TOKEN"}, "KEY": {"from_file": "key.txt"}},
        },
        "gate": {"skip": {"RB-DB-001": "the test has no database"}},
        "hooks": {"before": {"migrate": ["true"]}, "after": {"install": ["true"]}},
        "hosts": {"web1": {"roles": ["web", "migrate", "worker", "beat"]}},
    }


# --- the sandbox -------------------------------------------------------------------------

STUBS = """\
command_not_found_handle() {
  builtin printf '%s\\0' "$@" >> "$RB_LOG"
  return "$RB_STUB_STATUS"
}
printf() { command_not_found_handle printf "$@"; }
echo() { command_not_found_handle echo "$@"; }
cd() { return "$RB_STUB_STATUS"; }
"""


@dataclass(frozen=True)
class Sandbox:
    root: Path

    @property
    def canary(self) -> Path:
        return self.root / "canary-ran"

    @property
    def log(self) -> Path:
        return self.root / "calls"

    def run(self, commands: list[str]) -> None:
        """Every command in its own subshell, once with succeeding stubs, once failing."""
        body = "".join(f"(\n{command}\n)\n" for command in commands)
        script = STUBS + f"for RB_STUB_STATUS in 0 1; do\n{body}done\n"
        parsed = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
        assert parsed.returncode == 0, parsed.stderr
        self.log.write_bytes(b"")
        self.canary.unlink(missing_ok=True)
        subprocess.run(
            ["/bin/bash", "-c", script],
            cwd=self.root / "work",
            env={
                "PATH": str(self.root / "bin"),
                "RB_LOG": str(self.log),
                "RB_CANARY_FILE": str(self.canary),
                "HOME": str(self.root / "work"),
            },
            capture_output=True,
            timeout=60,
            check=False,
        )

    def arguments(self) -> Iterator[str]:
        """Every argument of every stubbed call (each ends with a NUL, which none holds)."""
        for argument in self.log.read_bytes().split(b"\0"):
            yield argument.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    root = tmp_path_factory.mktemp("sandbox")
    (root / "bin").mkdir()
    (root / "work").mkdir()
    canary = root / "bin" / CANARY
    canary.write_text('#!/bin/sh\n: > "$RB_CANARY_FILE"\n')
    canary.chmod(0o755)
    # The real mkdir, so that redirections into the deploy tree find their directory.
    (root / "bin" / "mkdir").symlink_to(shutil.which("mkdir") or "/bin/mkdir")
    return Sandbox(root)


def test_the_sandbox_would_notice_an_executed_value(sandbox: Sandbox) -> None:
    sandbox.run([f"x=$({CANARY})", "tar -x 'a b'", "printf '%s\\n' \"$(rm x)\""])
    assert sandbox.canary.exists()
    sandbox.canary.unlink()
    assert list(sandbox.arguments())[:3] == ["tar", "-x", "a b"]


# --- the property --------------------------------------------------------------------------


SOURCE = Source(
    repo=Path("/nonexistent/repo"),
    subdir="app",
    cache=Path("/nonexistent/cache"),
    python="controller-python",
    python_version="3.11.2",
    python_abi="cpython 3.11",
)
LOCK = LockInfo("t", "c", 1, "2026-01-01T12:00:00Z", "release", RELEASE_ID, "a" * 32, 1e9)
RELEASE = ReleaseInfo(
    release_id=RELEASE_ID,
    git_sha="0" * 40,
    requirements_hash="abcdef0123456789",
    created_by="t@t",
    created_at="2026-01-01T12:00:00Z",
)


def _project(root: Path, data: dict[str, Any]) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    (root / "app").mkdir(parents=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("")
    name = str(data["app"]["requirements"])
    if "/" not in name and name not in (".", ".."):
        # a hostile requirements file name, where the file system allows it
        with contextlib.suppress(OSError, ValueError):
            (root / "app" / name).write_text("")
    (root / "inventories").mkdir()
    file = root / "inventories" / "hostile.yml"
    file.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return file


def _all_commands(plan: Plan) -> list[str]:
    """Every command of the plan, and each host's script frame around all its steps."""
    commands = [
        command
        for planned in plan.steps
        for work in planned.work
        for command in (*work.commands, *work.verify, *work.undo)
    ]
    for host, frame in plan.frames.items():
        parts = [
            (p.step.name, w.commands + w.verify, w.timeout)
            for p in plan.steps
            if (w := p.on(host)) is not None
        ]
        commands.append(frame.script(parts))
    return commands


def _plan(file: Path, symbolic: bool, previous: str) -> Plan | None:
    """The plan, or None when the inventory was rejected with a clear error."""
    try:
        env = load_inventory(file, root=file.parent.parent)
    except InventoryError as exc:
        _assert_clear(exc, file)
        return None
    if symbolic:
        return build_plan(env, "release", source=SOURCE, run=None)
    return build_plan(
        env,
        "release",
        source=SOURCE,
        run=Run(release=RELEASE, lock=LOCK, marker="0123abcd", action="release"),
        previous={h.name: previous for h in env.hosts},
    )


def _assert_clear(exc: InventoryError, file: Path) -> None:
    assert exc.exit_code == 2
    assert str(exc).startswith(str(file)), exc


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    placement=st.sampled_from(ACCEPTED_AS_WRITTEN * 3 + PLACEMENTS),
    value=hostile,
    symbolic=st.booleans(),
    previous=st.one_of(st.just(RELEASE_ID), hostile.filter(lambda v: "\0" not in v)),
)
def test_hostile_inventory_values_are_rejected_or_literal(
    sandbox: Sandbox, placement: Placement, value: str, symbolic: bool, previous: str
) -> None:
    data = copy.deepcopy(_inventory(sandbox.root / "srv"))
    placement.put(data, value)
    file = _project(sandbox.root / "project", data)
    try:
        plan = _plan(file, symbolic, previous)
    except InventoryError as exc:  # from the key it was put under: message must name it
        raise AssertionError(f"{placement.key}: {exc}") from None
    if plan is None:
        event("rejected")
        return
    event("accepted: ran in the sandbox")
    sandbox.run(_all_commands(plan))
    assert not sandbox.canary.exists(), f"{placement.key}={value!r} was executed"
    word = placement.word(value, str(sandbox.root / "srv"))
    holding = [a for a in sandbox.arguments() if CANARY in a]
    for argument in holding:  # each holds a whole hostile value: the inventory's or the host's
        assert value in argument or word in argument or previous in argument, (
            placement.key,
            value,
            argument,
        )
    if placement.reaches and not symbolic:
        assert holding, f"{placement.key}: the value reached no command"


@settings(max_examples=60, deadline=None)
@given(placement=st.sampled_from(PLACEMENTS), value=hostile)
def test_rejections_name_the_key(
    tmp_path_factory: pytest.TempPathFactory, placement: Placement, value: str
) -> None:
    root = tmp_path_factory.mktemp("reject")
    data = _inventory(root / "srv")
    placement.put(data, value)
    file = _project(root / "project", data)
    try:
        load_inventory(file, root=root / "project")
    except InventoryError as exc:
        _assert_clear(exc, file)
        assert _names(placement.key, str(exc)), (placement.key, str(exc))


def _names(key: str, message: str) -> bool:
    """The message names the key (or, for a renamed key, its section)."""
    return key in message or key.rsplit(".", 1)[0] in message


# --- ids and flags ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(value=st.one_of(hostile, st.text(max_size=30)))
def test_user_supplied_ids_are_validated(value: str) -> None:
    for check, strict in (
        (validate_release_id, re.compile(r"[0-9]{8}-[0-9]{6}-[0-9]{3}")),
        (lambda v: validate_skips([v])[0], re.compile(r"RB-[A-Z]+-[0-9]{3}")),
        (lambda v: str(parse_batch_size(v, 4)), re.compile(r"[0-9]+|None")),
    ):
        try:
            accepted = check(value)
        except ReleasebookError as exc:
            assert exc.exit_code == 2
            continue
        assert strict.fullmatch(accepted), (value, accepted)
    try:
        load_environment(value, MAIN)
    except ReleasebookError as exc:
        assert exc.exit_code == 2


def _cli_project(root: Path) -> Path:
    file = _project(root, _inventory(root.parent / "srv"))
    shutil.copyfile(MAIN / "tasks.py", root / "tasks.py")
    git = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "app"], check=True)
    return file


ATTACK = f"x'; {CANARY} #\n$({CANARY})`{CANARY}`☃"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["rollback", "--env=hostile", "--to", ATTACK], "expected the form YYYYMMDD-HHMMSS-mmm"),
        (["rollback", "--env=hostile", "--to", RELEASE_ID + "\n"], "expected the form"),
        (["preflight", "--env=hostile", "--skip", ATTACK, "--reason", "x"], "unknown readiness"),
        (["release", "--env=hostile", "--batch-size", ATTACK], "--batch-size"),
        (["release", f"--env={ATTACK}", "--dry-run"], "expected a name made of letters"),
    ],
    ids=["to", "to-newline", "skip", "batch-size", "env"],
)
def test_hostile_flags_are_rejected_by_the_cli(
    tmp_path: Path, sandbox: Sandbox, args: list[str], expected: str
) -> None:
    root = _cli_project(tmp_path / "project").parent.parent
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEBOOK_")}
    environ |= {
        "RELEASEBOOK_ROOT": str(root),
        "PATH": f"{sandbox.root / 'bin'}:{environ['PATH']}",
        "RB_CANARY_FILE": str(sandbox.canary),
    }
    done = subprocess.run(
        [str(INV), *args], cwd=root, env=environ, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr
    assert not sandbox.canary.exists()
    assert not (tmp_path / "srv").exists()
