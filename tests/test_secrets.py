"""Inventory-declared secrets (``env.secrets``) and the masking of secret values.

The build's own command writes them to a 0600 file on the controller, naming only where
each value comes from; the upload puts that file in a private directory on the host, and
configuring the release merges it into the release's own env file (0600) and removes it;
``shared/.env`` is never written. The plan's commands are run here for real, in bash, as
the runner runs them; the values never appear in any command text, so never in a process
listing.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import uuid
from io import StringIO
from pathlib import Path

import pytest

from releasebook.cli.kit import session
from releasebook.cli.output import ConsoleReporter, JsonReporter
from releasebook.deploy.connection import record_script
from releasebook.deploy.running import lock_info_for
from releasebook.errors import InventoryError, ReleaseFailed, UsageError
from releasebook.execute.runner import plain_script
from releasebook.inventory import Environment, SecretSource, load_environment, load_inventory
from releasebook.inventory.secrets import env_file_text, read_secrets, readable_values
from releasebook.masking import Masker
from releasebook.plan import Plan, ReleaseInfo, Run, Source, build_plan

MAIN = Path(__file__).resolve().parents[1]
INV = Path(sys.executable).with_name("inv")
RELEASE_ID = "20260101-120000-000"
# Quotes, $(), backticks, spaces, a backslash and non-ASCII: the value must arrive as is.
HOSTILE = "p4ss 'w\"rd' $(touch pwned) `touch pwned` \\ naïve ☃"


def _project(tmp_path: Path, secrets: str, extra_env: str = "") -> Path:
    root = tmp_path / "project"
    (root / "app").mkdir(parents=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("")
    (root / "inventories").mkdir()
    (root / "inventories" / "sec.yml").write_text(
        "transport: local\n"
        "app: {source: app, settings: config.settings, wsgi: 'config.wsgi:application'}\n"
        f"deploy: {{path: {tmp_path / 'deploy'}}}\n"
        "health: {host_header: example.com}\n"
        f"env:\n  required: [API_TOKEN, KEPT]\n{extra_env}  secrets:\n{secrets}"
        "hosts:\n  web1:\n    roles: [web, migrate]\n"
    )
    return root


SECRETS = (
    "    API_TOKEN: {from_env: RB_TEST_API_TOKEN}\n    SIGNING_KEY: {from_file: signing.key}\n"
)


def _load(tmp_path: Path, secrets: str = SECRETS, extra_env: str = "") -> Environment:
    root = _project(tmp_path, secrets, extra_env)
    return load_inventory(root / "inventories" / "sec.yml", root=root)


def _plan(env: Environment) -> Plan:
    source = Source(
        repo=env.root,
        subdir="app",
        cache=env.root / "cache",
        python=sys.executable,
        python_version="3.11.2",
        python_abi="cpython 3.11",
    )
    release = ReleaseInfo(
        release_id=RELEASE_ID,
        git_sha="0" * 40,
        requirements_hash="abcdef0123456789",
        created_by="t@t",
        created_at="2026-01-01T12:00:00Z",
    )
    run = Run(
        release=release, lock=lock_info_for("release", RELEASE_ID), marker="m", action="release"
    )
    return build_plan(env, "release", source=source, run=run)


def _plan_text(plan: Plan) -> str:
    return "\n".join(
        str(item)
        for planned in plan.steps
        for work in planned.work
        for item in (*work.commands, *work.verify, *work.undo, *work.uploads)
    )


# --- the inventory --------------------------------------------------------------------------


def test_secrets_are_declared_by_source_never_by_value(tmp_path: Path) -> None:
    env = _load(tmp_path)
    assert env.env_file.secrets == {
        "API_TOKEN": SecretSource("env", "RB_TEST_API_TOKEN"),
        "SIGNING_KEY": SecretSource("file", "signing.key"),
    }


@pytest.mark.parametrize(
    ("secrets", "key", "expected"),
    [
        ("    A: {from_env: X, from_file: y}\n", "env.secrets.A", "expected one of from_env"),
        ("    A: {}\n", "env.secrets.A", "expected one of from_env"),
        ("    A: $X\n", "env.secrets.A", "expected a mapping"),
        ("    A: {from_env: 'X; rm -rf /'}\n", "env.secrets.A.from_env", "not an environment"),
        ("    A: {from_vault: x}\n", "env.secrets.A.from_vault", "unknown key"),
        ("    'A B': {from_env: X}\n", "env.secrets", "not an environment variable name"),
        ("    KEPT: {from_env: X}\n", "env.secrets.KEPT", "also in env.values"),
    ],
)
def test_bad_secret_declarations_are_rejected(
    tmp_path: Path, secrets: str, key: str, expected: str
) -> None:
    with pytest.raises(InventoryError) as caught:
        _load(tmp_path, secrets, extra_env="  values: {KEPT: plain}\n")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'project' / 'inventories' / 'sec.yml'}:")
    assert key in message and expected in message
    assert caught.value.exit_code == 2


# --- reading them on the controller ---------------------------------------------------------


def test_unreadable_secrets_are_named_with_their_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _load(tmp_path)
    monkeypatch.delenv("RB_TEST_API_TOKEN", raising=False)
    with pytest.raises(UsageError) as caught:
        read_secrets(env.env_file.secrets, env.root)
    message = str(caught.value)
    assert "env.secrets.API_TOKEN ($RB_TEST_API_TOKEN): not set" in message
    assert "env.secrets.SIGNING_KEY (file signing.key): cannot read it" in message
    assert caught.value.exit_code == 2


def test_file_secrets_lose_one_trailing_newline_and_reject_line_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _load(tmp_path)
    monkeypatch.setenv("RB_TEST_API_TOKEN", "token-value")
    (env.root / "signing.key").write_text(HOSTILE + "\n")
    assert read_secrets(env.env_file.secrets, env.root) == {
        "API_TOKEN": "token-value",
        "SIGNING_KEY": HOSTILE,
    }
    (env.root / "signing.key").write_text("line one\nline two with the secret\n")
    with pytest.raises(UsageError) as caught:
        read_secrets(env.env_file.secrets, env.root)
    assert "holds a line break" in str(caught.value)
    assert "the secret" not in str(caught.value)


# --- the plan and its commands, run ---------------------------------------------------------


def test_the_plan_names_sources_and_never_holds_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RB_TEST_API_TOKEN", HOSTILE)
    plan = _plan(_load(tmp_path))
    (build,) = plan.step("build").work
    assert build.commands[-1].endswith(
        ".secrets API_TOKEN=env:RB_TEST_API_TOKEN SIGNING_KEY=file:signing.key"
    )
    (upload,) = plan.step("upload").work
    assert str(upload.uploads[-1].remote).endswith(f"/.releasebook/secrets/{RELEASE_ID}.env")
    (preflight,) = plan.step("preflight").work
    assert "KEPT" in "\n".join(preflight.commands)  # still checked on the host
    assert "API_TOKEN" not in "\n".join(preflight.commands)  # checked on the controller
    assert HOSTILE not in _plan_text(plan)


def _bash(script: str, cwd: Path) -> None:
    done = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _deliver(plan: Plan, token: str) -> Path:
    """Build, upload and configure as a release does; returns the release's env file."""
    env = plan.environment
    (setup,) = plan.step("setup").work
    (build,) = plan.step("build").work
    (upload,) = plan.step("upload").work
    (configure,) = plan.step("configure").work
    _bash(plain_script(setup.commands), env.root)
    environ = {**os.environ, "RB_TEST_API_TOKEN": token}
    done = subprocess.run(
        ["bash", "-c", plain_script(build.commands[-1:])],
        cwd=env.root,
        env=environ,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    local, remote = Path(str(upload.uploads[-1].local)), Path(str(upload.uploads[-1].remote))
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    assert stat.S_IMODE(remote.parent.stat().st_mode) == 0o700
    shutil.copyfile(local, remote)  # what the transport's put does
    shared = env.root.parent / "deploy" / "shared" / ".env"
    before = shared.read_bytes()
    _bash(plain_script(configure.commands), env.root)
    assert not remote.exists(), "the uploaded copy is removed once merged"
    assert shared.read_bytes() == before, "shared/.env is never written by a release"
    return env.root.parent / "deploy" / "releases" / RELEASE_ID / ".releasebook" / "env"


def _sourced(env_file: Path, name: str) -> str:
    return subprocess.run(
        ["sh", "-c", f'set -a; . {shlex.quote(str(env_file))}; printf "%s" "${name}"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_secrets_reach_the_release_env_file_literally_over_the_shared_one(
    tmp_path: Path,
) -> None:
    plan = _plan(_load(tmp_path, extra_env="  values: {KEPT: plain}\n"))
    (plan.environment.root / "signing.key").write_text("signing-" + uuid.uuid4().hex + "\n")
    shared = tmp_path / "deploy" / "shared" / ".env"
    shared.parent.mkdir(parents=True)
    shared.write_text("API_TOKEN=stale-value-set-by-hand\nKEPT=edited\n")
    env_file = _deliver(plan, HOSTILE)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert _sourced(env_file, "API_TOKEN") == HOSTILE
    assert _sourced(env_file, "KEPT") == "plain"  # the inventory's value wins
    assert "stale-value" not in env_file.read_text()
    assert not (tmp_path / "pwned").exists() and not (plan.environment.root / "pwned").exists()
    # the next release brings the controller's current value, and what the operator added
    shared.write_text(shared.read_text() + "EDITED_ON_HOST=yes\n")
    env_file = _deliver(plan, "rotated-" + uuid.uuid4().hex)
    assert _sourced(env_file, "API_TOKEN").startswith("rotated-")
    assert _sourced(env_file, "EDITED_ON_HOST") == "yes"
    assert env_file.read_text().count("API_TOKEN=") == 1
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_env_file_text_is_shell_quoted() -> None:
    assert env_file_text({"A": "it's"}) == "A='it'\"'\"'s'\n"


# --- masking: output, JSON events, history, error messages ----------------------------------


def test_known_secrets_are_masked_everywhere_releasebook_writes() -> None:
    secret = 'tok"en-' + uuid.uuid4().hex + "-ü"
    masker = Masker([secret])
    console, events = StringIO(), StringIO()
    ConsoleReporter(masker, console).message(f"a hook printed {secret}")
    JsonReporter(masker, events).message(f"a hook printed {secret}", detail={"tail": secret})
    assert secret not in console.getvalue() and "a hook printed ***" in console.getvalue()
    assert json.loads(events.getvalue())["text"] == "a hook printed ***"
    assert json.dumps(secret)[1:-1] not in events.getvalue()
    history = record_script(_any_env(), masker, {"reason": f"failed: {secret}"})
    assert secret not in history and json.dumps(secret)[1:-1] not in history

    with pytest.raises(BaseException) as caught, session() as s:
        s.masker.add([secret])
        raise ReleaseFailed(f"step 'migrate' failed:\n    {secret}")
    assert secret not in str(caught.value) and "***" in str(caught.value)


def test_commands_that_deliver_no_secrets_mask_those_they_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _load(tmp_path)  # SIGNING_KEY's file does not exist: skipped, no error
    token = "rollback-" + uuid.uuid4().hex
    monkeypatch.setenv("RB_TEST_API_TOKEN", token)
    console = StringIO()
    ConsoleReporter(Masker(readable_values(env)), console).message(f"restart printed {token}")
    assert console.getvalue().endswith("restart printed ***\n")


def _any_env() -> Environment:
    return load_environment("staging", MAIN)


# --- through the CLI: a missing secret stops the release before any host -------------------


def _git_project(tmp_path: Path) -> Path:
    root = _project(tmp_path, SECRETS)
    shutil.copyfile(MAIN / "tasks.py", root / "tasks.py")
    git = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "app"], check=True)
    return root


def test_a_missing_secret_stops_the_release_before_any_host(tmp_path: Path) -> None:
    root = _git_project(tmp_path)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("RELEASEBOOK_", "RB_"))}
    environ["RELEASEBOOK_ROOT"] = str(root)
    done = subprocess.run(
        [str(INV), "release", "--env=sec"], cwd=root, env=environ, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "env.secrets.API_TOKEN ($RB_TEST_API_TOKEN): not set" in done.stderr
    assert not (tmp_path / "deploy").exists()
    # A dry run checks what it can without hosts: the same error, the same exit code.
    dry_run = subprocess.run(
        [str(INV), "release", "--env=sec", "--dry-run"],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
    )
    assert dry_run.returncode == 2, dry_run.stdout + dry_run.stderr
    assert "env.secrets.API_TOKEN ($RB_TEST_API_TOKEN): not set" in dry_run.stderr
    token = "token-" + uuid.uuid4().hex
    (root / "signing.key").write_text("signing-" + uuid.uuid4().hex + "\n")
    dry_run = subprocess.run(
        [str(INV), "release", "--env=sec", "--dry-run"],
        cwd=root,
        env={**environ, "RB_TEST_API_TOKEN": token},
        capture_output=True,
        text=True,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    assert "API_TOKEN=env:RB_TEST_API_TOKEN SIGNING_KEY=file:signing.key" in dry_run.stdout
    assert token not in dry_run.stdout
    assert dry_run.stdout.rstrip().endswith("nothing was contacted or changed")
    assert not (tmp_path / "deploy").exists()


# --- the masker's rules -----------------------------------------------------------------------


def test_secrets_are_masked_in_every_form_releasebook_writes_them() -> None:
    password = "pw-" + uuid.uuid4().hex[:12] + "/+"
    url = f"postgres://app:{password.replace('/', '%2F').replace('+', '%2B')}@db:5432/app"
    quoted = "it's-" + uuid.uuid4().hex
    masker = Masker([url, quoted])
    assert masker.mask(f"DATABASE_URL={url}") == "DATABASE_URL=***"
    assert masker.mask(f"connecting with password {password}") == "connecting with password ***"
    assert masker.mask(f"password={password.replace('/', '%2F').replace('+', '%2B')}") == (
        "password=***"
    )
    assert masker.mask(f"X={shlex.quote(quoted)}") == "X=***"
    assert masker.mask(json.dumps({"v": quoted})) == '{"v": "***"}'
    generated = "rbgen-" + uuid.uuid4().hex + "_-x"
    assert masker.mask(f"DJANGO_SECRET_KEY={generated}") == "DJANGO_SECRET_KEY=***"


def test_masking_takes_whole_tokens_only() -> None:
    masker = Masker(["anchors-db-pw"])
    assert masker.mask("anchors-db-pwx anchors-db-pw.") == "anchors-db-pwx ***."
    assert masker.screen("colour \x1b[31mred\x1b[0m\r\n") == "colour [31mred[0m\n"


def test_a_secret_too_short_to_mask_safely_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _load(tmp_path)
    monkeypatch.setenv("RB_TEST_API_TOKEN", "short")
    (env.root / "signing.key").write_text("long-enough-signing-key\n")
    with pytest.raises(UsageError) as caught:
        read_secrets(env.env_file.secrets, env.root)
    assert "env.secrets.API_TOKEN ($RB_TEST_API_TOKEN): 5 characters" in str(caught.value)
    assert "short" not in str(caught.value).replace("5 characters", "")
