"""``deploy.linked_dirs`` (default ``[media]``) and ``deploy.linked_files``: paths of each
release linked to the same path under ``shared/``, run as the setup and configure steps'
commands in a shell (the release directory made as install would)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_plan import _concrete, _hostile_project, _run_steps

from releasebook.errors import InventoryError
from releasebook.inventory import load_inventory

RELEASE_ID = "20260101-120000-000"


def _project(tmp_path: Path, deploy: str) -> Path:
    inventory = _hostile_project(tmp_path, {"A": "1"})
    text = inventory.read_text()
    inventory.write_text(
        text.replace(f"deploy: {{path: {tmp_path / 'deploy'}}}", "deploy: " + deploy)
    )
    return inventory


def test_linked_dirs_and_files_link_into_shared_and_a_missing_file_stops_configure(
    tmp_path: Path,
) -> None:
    deploy = tmp_path / "deploy"
    inventory = _project(
        tmp_path,
        f"{{path: {deploy}, linked_dirs: [media, public/uploads], "
        "linked_files: [config/local.ini]}",
    )
    env = load_inventory(inventory, root=tmp_path / "project")
    assert env.linked_dirs == ("media", "public/uploads")
    plan = _concrete(env)
    release = deploy / "releases" / RELEASE_ID
    release.mkdir(parents=True)
    (release / "media").mkdir()  # a directory shipped in the release is replaced
    missing = _run_steps(plan, tmp_path, "setup", "configure")
    assert missing.returncode == 1
    assert "deploy.linked_files: shared/config/local.ini is missing on this host" in (
        missing.stderr
    )
    (deploy / "shared" / "config" / "local.ini").write_text("[x]\n")
    done = _run_steps(plan, tmp_path, "setup", "configure")
    assert done.returncode == 0, done.stderr
    for relative in ("media", "public/uploads", "config/local.ini"):
        link = release / relative
        assert link.is_symlink(), relative
        assert link.resolve() == (deploy / "shared" / relative).resolve()
    assert (deploy / "shared" / "public" / "uploads").is_dir()
    assert (release / "config" / "local.ini").read_text() == "[x]\n"


def test_media_is_linked_by_default_and_an_empty_list_links_nothing(tmp_path: Path) -> None:
    inventory = _project(tmp_path, f"{{path: {tmp_path / 'deploy'}}}")
    env = load_inventory(inventory, root=tmp_path / "project")
    assert (env.linked_dirs, env.linked_files) == (("media",), ())
    inventory.write_text(
        inventory.read_text().replace(
            f"{{path: {tmp_path / 'deploy'}}}", f"{{path: {tmp_path / 'deploy'}, linked_dirs: []}}"
        )
    )
    bare = load_inventory(inventory, root=tmp_path / "project")
    assert bare.linked_dirs == ()
    (configure,) = _concrete(bare).step("configure").work
    assert not any("/media" in c for c in configure.commands)


@pytest.mark.parametrize(
    ("linked", "message"),
    [
        ("linked_dirs: [../etc]", "without '..'"),
        ("linked_dirs: [/etc]", "expected a relative path"),
        ("linked_dirs: ['a b']", "expected a relative path"),
        ("linked_files: [venv/x]", "releasebook manages venv"),
        ("linked_dirs: [media], linked_files: [media]", "'media' is also in deploy.linked_dirs"),
        ("linked_files: media", "expected a list of paths"),
    ],
)
def test_bad_linked_paths_are_refused_naming_the_key(
    tmp_path: Path, linked: str, message: str
) -> None:
    inventory = _project(tmp_path, f"{{path: {tmp_path / 'deploy'}, {linked}}}")
    with pytest.raises(InventoryError, match=r"deploy\.linked_") as refused:
        load_inventory(inventory, root=tmp_path / "project")
    assert message in str(refused.value)
