"""The generated Ansible playbooks: structure and order against the plan, exact commands,
no secret values, the inventory, the drift check, and Ansible's own checks
(``ansible-playbook --syntax-check``, ``ansible-lint``) where they are installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from releasebook.inventory import load_environment
from releasebook.plan import build_plan
from releasebook.plan.source import find_source
from releasebook.render.ansible import load_playbook, render_playbooks
from releasebook.runbooks.maintenance import RELEASE_MAINTENANCE_STEPS
from releasebook.runbooks.release import RELEASE

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENVS = ("staging", "production")

# The playbooks release as `inv release` does without --maintenance.
UNMAINTAINED = tuple(n for n in RELEASE.step_names if n not in RELEASE_MAINTENANCE_STEPS)


def _rendered(name: str) -> dict[str, Any]:
    env = load_environment(name, REPO)
    files = render_playbooks(env, find_source(env))
    return {path.name: text for path, text in files.items()}


def _tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every task, blocks flattened (block, then rescue), in file order."""
    out: list[dict[str, Any]] = []
    for task in tasks:
        if "block" in task:
            out.extend(_tasks(task["block"]))
            out.extend(_tasks(task.get("rescue", [])))
        else:
            out.append(task)
    return out


def _numbers(tasks: list[dict[str, Any]]) -> list[int]:
    found: list[int] = []
    for task in tasks:
        match = re.match(r"(\d+)\. ", str(task.get("name", "")))
        if match and (not found or found[-1] != int(match.group(1))):
            found.append(int(match.group(1)))
    return found


@pytest.mark.parametrize("name", ENVS)
def test_committed_playbooks_are_up_to_date(name: str) -> None:
    for file, text in _rendered(name).items():
        path = REPO / "playbooks" / name / file
        assert path.read_text(encoding="utf-8") == text, f"{path}: run `inv runbook --render`"


def test_release_plays_follow_the_plan() -> None:
    env = load_environment("staging", REPO)
    plan = build_plan(env, "release", source=find_source(env), run=None, steps=UNMAINTAINED)
    plays = load_playbook(_rendered("staging")["release.yml"])
    assert plays[0]["hosts"] == "localhost"
    values = plays[0]["tasks"][0]["ansible.builtin.command"]["cmd"]
    assert "releasebook.plan.run_values release staging" in values
    prepare, live, back, finish = plays[1:]
    for play in (prepare, live, back, finish):
        assert play["hosts"] == "staging"
        assert play["environment"] == "{{ releasebook_shell }}"
    assert live["serial"] == "{{ releasebook_batch_size | default('100%') }}"

    def numbers(phase: str) -> list[int]:
        return [p.number for p in plan.steps if p.step.phase == phase]

    block, after = prepare["tasks"]
    assert _numbers(block["block"]) == numbers("prepare")
    # A failure on one host stops every host: its rescue raises the flag every task checks,
    # then every host runs the undo.
    assert block["when"] == "not (hostvars['localhost'].releasebook_aborting | default(false))"
    assert block["rescue"][0]["ansible.builtin.set_fact"] == {"releasebook_aborting": True}
    assert after["when"] == "hostvars['localhost'].releasebook_aborting | default(false)"
    assert _numbers(live["tasks"][0]["block"]) == numbers("live")
    assert _numbers(finish["tasks"]) == numbers("finish")
    # An aborted release: the undo of the prepare steps, newest first, then record, unlock.
    undone = [t["name"] for t in after["block"] if t["name"].startswith("Undo ")]
    undo_numbers = [int(re.match(r"Undo (\d+)\.", n).group(1)) for n in undone]  # type: ignore[union-attr]
    assert undo_numbers == sorted(undo_numbers, reverse=True) and 4 in undo_numbers
    rescue_names = [t["name"] for t in after["block"]]
    assert "aborted" in rescue_names[-3] and "Release the environment lock" in rescue_names[-2]
    assert "ansible.builtin.fail" in after["block"][-1]
    # After the switch: the rescue hands over to the rollback play.
    assert "releasebook_rolling_back" in str(live["tasks"][0]["rescue"])
    assert back["tasks"][0]["ansible.builtin.meta"] == "end_play"
    assert back["vars"]["releasebook_shell"].endswith("'RELEASE': releasebook_previous}) }}")


def test_tasks_run_the_exact_commands_in_the_frame() -> None:
    env = load_environment("staging", REPO)
    plan = build_plan(env, "release", source=find_source(env), run=None, steps=UNMAINTAINED)
    tasks = _tasks(load_playbook(_rendered("staging")["release.yml"])[1]["tasks"])
    by_name = {t["name"]: t for t in tasks}
    migrate = plan.step("migrate")
    task = by_name[f"{migrate.number}. {migrate.step.title}"]
    script = task["ansible.builtin.shell"]["cmd"]
    work = migrate.work[0]
    assert script == plan.frames[work.target].script(
        [("migrate", work.commands + work.verify, work.timeout)]
    )
    assert task["when"] == "inventory_hostname == 'staging-web1'" and "run_once" not in task
    build = plan.step("build")
    build_task = by_name[f"{build.number}. {build.step.title} (on the controller)"]
    assert build_task["delegate_to"] == "localhost"
    assert build_task["when"] == "inventory_hostname == 'staging-web1'"  # once
    for command in build.work[0].commands:
        assert command in build_task["ansible.builtin.shell"]["cmd"]
    lock = [t for t in tasks if t["name"].startswith("1. ")]
    assert [t["when"] for t in lock] == [
        "inventory_hostname == 'staging-web1'",
        "inventory_hostname != 'staging-web1'",
    ]
    assert all("'state=acquired' not in" in t["failed_when"] for t in lock)
    uploads = [t for t in tasks if "ansible.builtin.copy" in t]
    assert any(t["ansible.builtin.copy"]["dest"].endswith(".env") for t in uploads)
    assert all(t["ansible.builtin.copy"]["mode"] == "0600" for t in uploads)


def test_each_archive_upload_waits_on_its_own_check() -> None:
    """The wheel archive is copied where the virtualenv is missing, the tools' archive
    where the tools are: two checks, each registered under its own name."""
    env = load_environment("staging", REPO)
    plan = build_plan(env, "release", source=find_source(env), run=None, steps=UNMAINTAINED)
    tasks = _tasks(load_playbook(_rendered("staging")["release.yml"])[1]["tasks"])
    checks = {t["register"]: t for t in tasks if "which hosts need" in t["name"]}
    assert sorted(checks) == ["releasebook_tools_ready", "releasebook_wheels_ready"]
    (upload,) = [w for w in plan.step("upload").work if w.target == "staging-web1"]
    skip = {str(u.remote).rsplit("/", 1)[-1].split("-")[0]: u.skip_if for u in upload.uploads}
    for kind in ("wheels", "tools"):
        script = checks[f"releasebook_{kind}_ready"]["ansible.builtin.shell"]["cmd"]
        assert script == f"set -eu\n{skip[kind]}\n"
        copies = [
            t
            for t in tasks
            if "ansible.builtin.copy" in t and f"/{kind}-" in t["ansible.builtin.copy"]["dest"]
        ]
        assert len(copies) == 2  # the archive and its .sha256
        assert all(t["when"] == [f"releasebook_{kind}_ready.rc != 0"] for t in copies)
    assert "TOOLS_HASH" in _rendered("staging")["release.yml"]


def test_verify_is_a_uri_check_of_the_release() -> None:
    plays = load_playbook(_rendered("production")["release.yml"])
    checks = [t for t in _tasks(plays[2]["tasks"]) if "ansible.builtin.uri" in t]
    env = load_environment("production", REPO)
    webs = [h for h in env.hosts if "web" in h.roles]
    assert len(checks) == len(webs)
    for task in checks:
        assert task["ansible.builtin.uri"]["headers"]["X-Forwarded-Proto"] == "https"
        assert "json.release == releasebook_shell.RELEASE" in task["until"]
        assert task["retries"] >= 1 and task["delegate_to"] == "localhost"


def test_no_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGING_DATABASE_URL", "postgres://u:SENTINEL-SECRET@db/x")
    text = "\n".join(_rendered("staging").values())
    assert "SENTINEL-SECRET" not in text
    assert "DATABASE_URL=env:STAGING_DATABASE_URL" in text  # its source, never its value


def test_inventory_groups_and_strict_host_keys() -> None:
    hosts = load_playbook(_rendered("staging")["hosts.yml"])
    group = hosts["all"]["children"]["staging"]
    assert set(group["children"]) == {"web", "migrate", "worker", "beat"}
    assert set(group["children"]["web"]["hosts"]) == {"staging-web1"}
    web1 = group["hosts"]["staging-web1"]
    assert (web1["ansible_host"], web1["ansible_port"], web1["ansible_user"]) == (
        "10.20.0.11",
        22,
        "deploy",
    )
    assert "StrictHostKeyChecking=yes" in web1["ansible_ssh_common_args"]
    assert "inventories/staging.known_hosts" in web1["ansible_ssh_common_args"]
    assert web1["ansible_ssh_private_key_file"] == "~/.ssh/id_ed25519"


def test_scripts_are_never_templated_by_ansible() -> None:
    lines = _rendered("staging")["release.yml"].splitlines()
    shells = [i for i, line in enumerate(lines) if "ansible.builtin.shell:" in line]
    assert len(shells) > 20
    assert all(lines[i + 1].strip() == "cmd: !unsafe |" for i in shells)


def test_runbook_check_fails_on_a_stale_playbook(tmp_path: Path) -> None:
    root = tmp_path / "project"
    for part in ("inventories", "templates", "example"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    environ = {**os.environ, "RELEASEBOOK_ROOT": str(root)}

    def inv(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "inv"), *args], cwd=root, env=environ, capture_output=True, text=True
        )

    assert inv("runbook", "--render", "--env=staging").returncode == 0
    assert inv("runbook", "--check", "--env=staging").returncode == 0
    playbook = root / "playbooks" / "staging" / "release.yml"
    playbook.write_text(
        playbook.read_text().replace("gather_facts: false", "gather_facts: true", 1)
    )
    done = inv("runbook", "--check", "--env=staging")
    assert done.returncode == 1
    assert "playbooks/staging/release.yml" in done.stderr + done.stdout


ANSIBLE = BIN / "ansible-playbook"


@pytest.mark.skipif(not ANSIBLE.exists(), reason="ansible-core is not installed")
@pytest.mark.parametrize("name", ENVS)
@pytest.mark.parametrize("book", ["release", "rollback"])
def test_syntax_check(name: str, book: str, tmp_path: Path) -> None:
    folder = REPO / "playbooks" / name
    done = subprocess.run(
        [
            str(ANSIBLE),
            "--syntax-check",
            "-i",
            str(folder / "hosts.yml"),
            str(folder / f"{book}.yml"),
        ],
        env={**os.environ, "ANSIBLE_HOME": str(tmp_path), "ANSIBLE_LOCAL_TEMP": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(not (BIN / "ansible-lint").exists(), reason="ansible-lint is not installed")
def test_ansible_lint(tmp_path: Path) -> None:
    books = [str(Path(n) / f"{b}.yml") for n in ENVS for b in ("release", "rollback")]
    done = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "-f", "pep8", *books],
        cwd=REPO / "playbooks",
        env={**os.environ, "ANSIBLE_HOME": str(tmp_path), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(not ANSIBLE.exists(), reason="ansible-core is not installed")
def test_rollback_target_and_live_release_from_the_lock_probe(tmp_path: Path) -> None:
    """The generated expressions, run by Ansible on fake probe output: the live release,
    the releases kept, and the rollback target (the live release's previous one)."""
    plays = load_playbook(_rendered("staging")["rollback.yml"])
    block = plays[1]["tasks"][0]["block"]
    wanted = [t for t in block if "ansible.builtin.set_fact" in t]
    assert len(wanted) == 2
    records = [
        {"action": "release", "release": "20260101-000000-000", "outcome": "released"},
        {
            "action": "release",
            "release": "20260102-000000-000",
            "outcome": "released",
            "previous": "20260101-000000-000",
        },
    ]
    probe = {
        "stdout_lines": [
            "state=acquired",
            "current=20260102-000000-000",
            "release=20260101-000000-000",
            "release=20260102-000000-000",
            *("history=" + json.dumps(r) for r in records),
        ]
    }
    out = tmp_path / "out.json"
    play = {
        "name": "Probe",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {"releasebook_lock_first": probe, "releasebook_lock_rest": {"skipped": True}},
        "tasks": [
            *wanted,
            {
                "name": "Write",
                "ansible.builtin.copy": {
                    "content": "{{ {'live': releasebook_live, 'target': releasebook_target, "
                    "'releases': releasebook_releases} | to_json }}",
                    "dest": str(out),
                    "mode": "0600",
                },
            },
        ],
    }
    book = tmp_path / "probe.yml"
    book.write_text(yaml.safe_dump([play]))
    done = subprocess.run(
        [str(ANSIBLE), "-i", "localhost,", "-c", "local", str(book)],
        env={
            **os.environ,
            "ANSIBLE_HOME": str(tmp_path),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        },
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(out.read_text()) == {
        "live": "20260102-000000-000",
        "target": "20260101-000000-000",
        "releases": ["20260101-000000-000", "20260102-000000-000"],
    }
