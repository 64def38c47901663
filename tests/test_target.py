"""The hosts' Python: what the probe reports, what is compared (never the patch level),
and the wheelhouse downloaded for hosts the controller cannot build for, with a clear
message when a requirement has no wheel for them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from releasebook.cli.init import init_project
from releasebook.inventory import load_environment
from releasebook.plan.build import build_plan
from releasebook.plan.facts import parse_probe
from releasebook.plan.source import find_source, for_hosts, new_release
from releasebook.plan.target import PROBE_CODE, PythonTarget
from releasebook.render.runbook import render_runbook

REPO = Path(__file__).resolve().parents[1]
PIP_ARGS = ("wheel", "--quiet", "redis==8.1.0", "--wheel-dir")
DEBIAN = PythonTarget("cpython", "3.11.2", "linux-x86_64", "glibc", "2.36")


def test_probe_line_of_a_real_interpreter() -> None:
    python = shutil.which("python3") or sys.executable
    line = subprocess.run(
        [python, "-c", PROBE_CODE], capture_output=True, text=True, check=True
    ).stdout
    facts = parse_probe("h", f"python={line}current=\n")
    assert facts.python is not None
    assert facts.python.implementation == sys.implementation.name
    assert facts.python.minor.count(".") == 1
    assert parse_probe("h", "python=\n").python is None
    assert PythonTarget.parse("cpython 3.12.1 macosx-14.0-arm64 none") == PythonTarget(
        "cpython", "3.12.1", "macosx-14.0-arm64"
    )


def test_compared_on_what_decides_the_wheels() -> None:
    controller = replace(DEBIAN, version="3.11.7")
    assert DEBIAN.runs_wheels_of(controller)  # patch levels differ: the same wheels
    assert not DEBIAN.runs_wheels_of(replace(controller, version="3.12.1"))
    assert not DEBIAN.runs_wheels_of(replace(controller, platform="linux-aarch64"))
    assert not DEBIAN.runs_wheels_of(replace(controller, libc_version="2.39"))  # newer glibc
    assert DEBIAN.runs_wheels_of(replace(controller, libc_version="2.31"))
    mac = PythonTarget("cpython", "3.11.9", "macosx-14.0-arm64")
    assert not DEBIAN.runs_wheels_of(mac)


def test_platform_tags() -> None:
    tags = DEBIAN.platform_tags()
    assert tags[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert tags[-1] == "linux_x86_64"
    alpine = PythonTarget("cpython", "3.12.3", "linux-aarch64", "musl", "1.2")
    assert alpine.platform_tags() == [
        "musllinux_1_2_aarch64",
        "musllinux_1_1_aarch64",
        "linux_aarch64",
    ]
    args = DEBIAN.pip_args()
    assert "--python-version=3.11" in args and "--abi=cp311" in args
    assert "--only-binary=:all:" in args


@pytest.fixture
def app_repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    shutil.copytree(REPO / "example", root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "requirements.txt").write_text("Django==5.2.19\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    init_project(root)
    git = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "app"], check=True)
    return root


def test_hosts_the_controller_builds_for_change_nothing(app_repo: Path) -> None:
    env = load_environment("staging", app_repo)
    source = find_source(env)
    info = new_release(env, source)
    host = PythonTarget.parse(PythonTarget.controller().describe())
    assert host is not None
    assert for_hosts(env, source, info, {"staging-web1": host}) == (source, info)
    assert for_hosts(env, source, info, {}) == (source, info)


def test_other_hosts_get_wheels_downloaded_for_them(app_repo: Path) -> None:
    env = load_environment("staging", app_repo)
    source = find_source(env)
    info = new_release(env, source)
    arm = replace(DEBIAN, platform="linux-aarch64")
    built, changed = for_hosts(env, source, info, {"staging-web1": arm})
    assert built.target == arm
    assert changed.requirements_hash != info.requirements_hash
    plan = build_plan(env, "release", source=built, run=None)
    build = next(p for p in plan.steps if p.step.name == "build").work[0].commands
    text = "\n".join(build)
    assert " download " in text and "--platform=manylinux_2_36_aarch64" in text
    assert " wheel --quiet" not in text


def _build_script(app_repo: Path, target: PythonTarget) -> str:
    env = load_environment("staging", app_repo)
    source = replace(find_source(env), target=target)
    doc = render_runbook(env, source, "release")
    preamble = [
        line
        for line in doc.splitlines()
        if line.startswith(("RELEASE=", "GIT_SHA=", "PYTHON_VERSION=", "REQ_HASH=", "TOOLS_HASH="))
    ]
    start = doc.index(". Build the artifact")
    block = re.search(r"```sh\n(.*?)```", doc[start:], re.S)
    assert block is not None
    return "\n".join(
        ["set -euo pipefail", *preamble, block.group(1), 'echo "$REQ_HASH $TOOLS_HASH"']
    )


def _run(app_repo: Path, script: str) -> subprocess.CompletedProcess[str]:
    if not (app_repo / ".venv").exists():
        (app_repo / ".venv").symlink_to(Path(sys.prefix))
    return subprocess.run(
        ["bash", "-c", script], cwd=app_repo, capture_output=True, text=True, timeout=600
    )


def test_downloaded_wheelhouse_for_another_python(app_repo: Path) -> None:
    """The build step for hosts on another minor version downloads their wheels."""
    other = replace(DEBIAN, version="3.12.3")
    done = _run(app_repo, _build_script(app_repo, other))
    assert done.returncode == 0, done.stdout + done.stderr
    req_hash, tools_hash = done.stdout.split()[-2:]
    wheels = sorted(p.name for p in (app_repo / ".releasebook/cache/wheels" / req_hash).iterdir())
    assert any(n.startswith(("Django-", "django-")) for n in wheels), wheels
    assert any(n.startswith("releasebook_django-") for n in wheels)
    # The tools have a wheelhouse and archive of their own, downloaded for the hosts too.
    assert not any(n.startswith(("uv-", "supervisor-")) for n in wheels), wheels
    tools = sorted(p.name for p in (app_repo / ".releasebook/cache/tools" / tools_hash).iterdir())
    assert any(n.startswith("uv-") and "manylinux" in n for n in tools), tools
    assert any(n.startswith("supervisor-") for n in tools), tools
    out = app_repo / ".releasebook/build/out"
    assert (out / f"tools-{tools_hash}.tar").is_file()
    assert (out / f"tools-{tools_hash}.tar.sha256").is_file()


def test_no_wheel_for_the_hosts_says_what_to_do(app_repo: Path) -> None:
    unknown = PythonTarget("cpython", "3.11.2", "linux-sparc64", "glibc", "2.36")
    done = _run(app_repo, _build_script(app_repo, unknown))
    assert done.returncode != 0
    assert (
        "has no wheel for the hosts' Python (cpython 3.11.2 linux-sparc64 glibc 2.36): "
        "build it on a host"
    ) in done.stderr
    assert "releasebook/wheels/" in done.stderr


def test_hosts_on_another_patch_level_get_their_markers(app_repo: Path) -> None:
    env = load_environment("staging", app_repo)
    source = replace(find_source(env), python_version="3.11.7")
    info = new_release(env, source)
    host = replace(PythonTarget.controller(), version="3.11.2")
    built, changed = for_hosts(env, source, info, {"staging-web1": host})
    assert built.target is None  # the controller still builds the wheels
    assert built.hosts_version == "3.11.2"
    assert changed.requirements_hash != info.requirements_hash


def test_pip_evaluates_markers_for_the_hosts_version(tmp_path: Path) -> None:
    """redis needs async-timeout below Python 3.11.3 only: fetched for 3.11.2 hosts."""

    def fetched(version: str) -> list[str]:
        out = tmp_path / version
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "releasebook.shipped",
                "pip",
                version,
                "wheel",
                *PIP_ARGS,
                str(out),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return sorted(p.name.split("-")[0] for p in out.iterdir())

    assert {"async_timeout", "redis"} <= set(fetched("3.11.2"))
    assert "async_timeout" not in fetched("3.12.0")
