"""releasebook as a library in someone else's repository: the shipped Django wheel, the
templates from the package or the project, ``init``, the default environment, and the
runbook's REQ_HASH line computing what a release computes."""

from __future__ import annotations

import ast
import hashlib
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from releasebook import __version__, shipped
from releasebook.cli.init import find_app, init_project
from releasebook.cli.kit import default_env
from releasebook.errors import UsageError
from releasebook.inventory import load_environment
from releasebook.plan.source import find_source, new_release
from releasebook.render.runbook import render_all, render_runbook
from releasebook.render.templating import PACKAGE_TEMPLATES

REPO = Path(__file__).resolve().parents[1]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def app_repo(tmp_path: Path) -> Path:
    """A copy of example/ as its own git repository, made a project by init."""
    root = tmp_path / "shop"
    shutil.copytree(REPO / "example", root, ignore=shutil.ignore_patterns("__pycache__"))
    _git(root.parent, "init", "-q", "-b", "main", str(root))
    init_project(root)
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "app")
    return root


def test_django_wheel_holds_the_django_app_alone() -> None:
    data = shipped.django_wheel()
    assert data == shipped.django_wheel.__wrapped__()  # the same bytes every time
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "releasebook/django/__init__.py" in names
    assert "releasebook/django/management/commands/readiness.py" in names
    # No releasebook/__init__.py: on hosts, releasebook is a namespace package.
    assert not [n for n in names if n.startswith("releasebook/") and "/django/" not in n]
    dist = f"releasebook_django-{__version__}.dist-info"
    meta = zipfile.ZipFile(io.BytesIO(data)).read(f"{dist}/METADATA").decode()
    assert "Name: releasebook-django" in meta
    assert [line for line in meta.splitlines() if line.startswith("Requires-Dist")] == [
        "Requires-Dist: django>=4.2"
    ]


def test_django_app_imports_nothing_of_the_controller() -> None:
    for path in shipped.DJANGO_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                module = node.module
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            else:
                continue
            if module.startswith("releasebook"):
                assert module.startswith("releasebook.django"), f"{path}: imports {module}"


def test_wheel_installs_without_the_controller(tmp_path: Path) -> None:
    wheel = shipped.write_django_wheel(tmp_path / "wheels")
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    done = subprocess.run(
        [
            "python3",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import releasebook.django, "
            "releasebook; print(hasattr(releasebook, '__version__'), "
            "releasebook.django.__file__.startswith(sys.argv[1]))",
            str(target),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert done.stdout.split() == ["False", "True"]  # a namespace package: no controller


@pytest.mark.parametrize(
    "line", ["releasebook[django]", "releasebook==0.1.0", "  releasebook ; python_version>'3'"]
)
def test_requirements_naming_the_controller_are_refused(app_repo: Path, line: str) -> None:
    (app_repo / "requirements.txt").write_text(f"Django==5.2.19\n{line}\n")
    _git(app_repo, "commit", "-qam", "controller")
    env = load_environment("staging", app_repo)
    with pytest.raises(UsageError, match=r"requirements.txt:2: .*releasebook-django=="):
        new_release(env, find_source(env))


def test_requirements_may_name_releasebook_django(app_repo: Path) -> None:
    (app_repo / "requirements.txt").write_text("Django==5.2.19\nreleasebook-django\n")
    _git(app_repo, "commit", "-qam", "django side")
    env = load_environment("staging", app_repo)
    assert new_release(env, find_source(env)).requirements_hash


def test_init_finds_the_app_and_refuses_to_overwrite(app_repo: Path) -> None:
    app = find_app(app_repo)
    assert (app.source, app.settings, app.wsgi, app.celery_app) == (
        ".",
        "config.settings.prod",
        "config.wsgi:application",
        "config",
    )
    assert (app_repo / ".gitignore").read_text().endswith(".releasebook/\n")
    assert "from releasebook.cli import namespace" in (app_repo / "tasks.py").read_text()
    with pytest.raises(UsageError, match=r"not overwriting tasks.py, releasebook.yaml"):
        init_project(app_repo)
    env = load_environment("staging", app_repo)
    assert env.app.source == Path(".")
    assert [h.name for h in env.hosts] == ["staging-web1"]


def test_init_in_a_parent_of_the_app(tmp_path: Path) -> None:
    shutil.copytree(REPO / "example", tmp_path / "site")
    assert find_app(tmp_path).source == "site"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manage.py").write_text("")
    with pytest.raises(UsageError, match=r"several below \(other, site\).*--source"):
        find_app(tmp_path)


def test_default_env(app_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELEASEBOOK_ENV", raising=False)
    assert default_env(app_repo) == "staging"
    monkeypatch.setenv("RELEASEBOOK_ENV", "production")
    assert default_env(app_repo) == "production"
    monkeypatch.delenv("RELEASEBOOK_ENV")
    (app_repo / "releasebook.yaml").write_text("env: [a]\n")
    with pytest.raises(UsageError, match=r"releasebook.yaml: env: expected"):
        default_env(app_repo)


def test_templates_come_from_the_package_unless_overridden(app_repo: Path) -> None:
    env = load_environment("staging", app_repo)
    source = find_source(env)
    # A Django project's own templates/ is not releasebook's.
    assert (app_repo / "templates" / "404.html").is_file()
    docs = render_all(env, source)
    assert {p.name for p in docs} == {
        "release.md",
        "rollback.md",
        "production-readiness.md",
        "setup.md",
        "operations.md",
        "incident.md",
        "backup-restore.md",
    }
    assert (PACKAGE_TEMPLATES / "release.md.j2").is_file()
    override = app_repo / "releasebook" / "templates"
    override.mkdir(parents=True)
    (override / "rollback.md.j2").write_text("our rollback for {{ env.name }}\n")
    assert render_runbook(env, source, "rollback") == "our rollback for staging\n"
    assert render_runbook(env, source, "release").startswith("# Release runbook: staging")


def test_runbook_build_lines_run_in_the_app_repo(app_repo: Path) -> None:
    """The preamble's GIT_SHA/REQ_HASH lines give the hash a release computes, and the
    build's archive line extracts the app's repository, from the project root."""
    env = load_environment("staging", app_repo)
    source = find_source(env)
    doc = render_runbook(env, source, "release")
    preamble = [
        line
        for line in doc.splitlines()
        if line.startswith(("GIT_SHA=", "PYTHON_VERSION=", "REQ_HASH="))
    ]
    assert len(preamble) == 3
    assert "${RELEASEBOOK_SOURCE}" not in doc
    archive = next(line for line in doc.splitlines() if " archive --format" in line)
    (app_repo / ".venv").symlink_to(Path(sys.prefix))  # the venv releasebook is in
    script = "\n".join(
        [
            "set -euo pipefail",
            *preamble,
            "RELEASE=r1",
            'mkdir -p ".releasebook/build/${RELEASE}"',
            archive,
            'echo "$REQ_HASH"',
        ]
    )
    done = subprocess.run(
        ["bash", "-c", script], cwd=app_repo, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    release = new_release(env, source)
    assert done.stdout.strip() == release.requirements_hash
    assert (app_repo / ".releasebook" / "build" / "r1" / "manage.py").is_file()
    expected = hashlib.sha256(
        (app_repo / "requirements.txt").read_bytes()
        + shipped.wheelhouse_key(source.python_version).encode()
    ).hexdigest()[:16]
    assert release.requirements_hash == expected
