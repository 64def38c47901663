"""``--ref`` (a chosen git ref, not only HEAD) and ``--hosts``/``--roles`` (a run limited
to some hosts, with the warning that hosts may then serve different releases)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_output import R1, facts, make_project, opener_for, preflight

from releasebook.cli.limits import limit_hosts
from releasebook.cli.output import ConsoleReporter
from releasebook.cli.tasks import _dry_plan
from releasebook.deploy.release import release
from releasebook.errors import InventoryError, UsageError
from releasebook.inventory import Environment, load_environment
from releasebook.masking import Masker
from releasebook.plan.model import CONTROLLER
from releasebook.plan.source import find_source, new_release
from releasebook.transport.scripted import ScriptedHost


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture
def env(project: Path) -> Environment:
    return load_environment("flow", project)


def _git(project: Path, *args: str) -> str:
    git = ["git", "-C", str(project), "-c", "user.email=t@t", "-c", "user.name=t"]
    return subprocess.run([*git, *args], check=True, capture_output=True, text=True).stdout


def test_ref_releases_the_commit_it_names_not_head(project: Path, env: Environment) -> None:
    first = _git(project, "rev-parse", "HEAD").strip()
    _git(project, "tag", "v1")
    (project / "app" / "views.py").write_text("# later\n")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "later")
    head = _git(project, "rev-parse", "HEAD").strip()
    source = find_source(env)
    assert new_release(env, source).git_sha == head
    assert new_release(env, source, ref="v1").git_sha == first
    assert new_release(env, source, ref="HEAD~1").git_sha == first
    plan = _dry_plan(env, "release", None, "v1")
    build = "\n".join(c for p in plan.steps for w in p.work for c in w.commands)
    assert f"archive --format=tar {first}:app" in build
    assert head not in build


def test_ref_that_names_no_commit_is_refused(env: Environment) -> None:
    source = find_source(env)
    with pytest.raises(UsageError, match="--ref nope: no such commit, tag or branch"):
        new_release(env, source, ref="nope")
    with pytest.raises(UsageError, match="expected a git commit"):
        new_release(env, source, ref="--all")


def test_a_release_of_a_ref_builds_that_commit_on_the_controller(
    project: Path, env: Environment
) -> None:
    first = _git(project, "rev-parse", "HEAD").strip()
    (project / "app" / "views.py").write_text("# later\n")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "later")
    hosts = {
        CONTROLLER: ScriptedHost(CONTROLLER),
        "web1": ScriptedHost("web1", facts(R1)),
        "web2": ScriptedHost("web2", facts(R1)),
    }
    release(
        env,
        ConsoleReporter(Masker(), heartbeat=0),
        Masker(),
        opener=opener_for(hosts),
        stop_after="gate",
        ref=first[:10],
    )
    assert hosts[CONTROLLER].ran(f"archive --format=tar {first}:app")


def test_hosts_limits_the_run_and_warns_that_releases_may_differ(env: Environment) -> None:
    limited, warning = limit_hosts(env, hosts="web2")
    assert [h.name for h in limited.hosts] == ["web2"]
    assert warning.startswith("WARNING: limited to web2; web1 are left as they are")
    assert "different releases" in warning and "inv status --env=flow" in warning
    assert "the migrate host (web1) is not in the limit, so no migration is applied" in warning
    plan = _dry_plan(limited, "release", None)
    targets = {w.target for p in plan.steps for w in p.work}
    assert "web1" not in targets and "web2" in targets


def test_roles_keep_the_hosts_with_one_of_them(env: Environment) -> None:
    limited, warning = limit_hosts(env, roles="migrate")
    assert [h.name for h in limited.hosts] == ["web1"]
    assert "migrate host" not in warning
    same, none = limit_hosts(env, roles="web")
    assert same is env and none == ""
    assert limit_hosts(env) == (env, "")


def test_a_limit_naming_nothing_known_is_refused_listing_what_exists(env: Environment) -> None:
    with pytest.raises(UsageError, match="no host web9 in flow; its hosts are: web1, web2"):
        limit_hosts(env, hosts="web9")
    with pytest.raises(UsageError, match="the role worker; its roles are: migrate, web"):
        limit_hosts(env, roles="worker")
    with pytest.raises(UsageError, match="no host of flow is both"):
        limit_hosts(env, hosts="web2", roles="migrate")


def test_a_limited_preflight_contacts_only_its_hosts(env: Environment) -> None:
    hosts = {
        CONTROLLER: ScriptedHost(CONTROLLER),
        "web1": ScriptedHost("web1", facts(R1)),
        "web2": ScriptedHost("web2", facts(R1)),
    }
    limited, _ = limit_hosts(env, hosts="web2")
    text = preflight(limited, hosts, heartbeat=0)
    assert "(web2)" in text.splitlines()[0]
    assert hosts["web1"].scripts == []
    assert hosts["web2"].scripts


# --- env.values layered per role and host -----------------------------------------------


def _layered(project: Path, extra: str) -> Environment:
    inventory = project / "inventories" / "flow.yml"
    text = inventory.read_text().replace(
        "  web2: {address: 127.0.0.2, roles: [web], bind: '127.0.0.2:9'}\n",
        "  web2:\n"
        "    address: 127.0.0.2\n"
        "    roles: [web]\n"
        "    bind: '127.0.0.2:9'\n"
        "    env: {values: {CACHE_URL: 'redis://web2-cache/0'}}\n",
    )
    inventory.write_text(text + extra)
    return load_environment("flow", project)


def _env_lines(env: Environment, host: str) -> list[str]:
    plan = _dry_plan(env, "release", None)
    (configure,) = [w for w in plan.step("configure").work if w.target == host]
    return [c for c in configure.commands if "printf '%s\\n'" in c and "env.tmp" in c]


def test_env_values_are_layered_environment_then_role_then_host(project: Path) -> None:
    env = _layered(
        project,
        "env: {values: {CACHE_URL: 'redis://shared/0', LOG_LEVEL: info, SITE: example}}\n"
        "roles:\n"
        "  migrate: {env: {values: {LOG_LEVEL: debug}}}\n",
    )
    assert env.host("web1").env_values == {"LOG_LEVEL": "debug"}
    assert env.host("web2").env_values == {"CACHE_URL": "redis://web2-cache/0"}
    web1, web2 = "\n".join(_env_lines(env, "web1")), "\n".join(_env_lines(env, "web2"))
    assert "LOG_LEVEL=debug" in web1 and "LOG_LEVEL=info" not in web1
    assert "CACHE_URL=redis://shared/0" in web1
    assert "CACHE_URL=redis://web2-cache/0" in web2 and "redis://shared/0" not in web2
    assert "LOG_LEVEL=info" in web2 and "SITE=example" in web2


def test_a_layered_env_value_that_is_also_a_secret_is_refused(project: Path) -> None:
    with pytest.raises(InventoryError, match=r"hosts.web2: env value CACHE_URL .* env.secrets"):
        _layered(project, "env: {secrets: {CACHE_URL: {from_env: CACHE}}}\n")


def test_a_bad_layered_env_value_names_its_place(project: Path, tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"roles.web.env.values.DEBUG: expected a string"):
        _layered(project, "roles:\n  web: {env: {values: {DEBUG: [1]}}}\n")
    other = make_project(tmp_path / "other")
    with pytest.raises(InventoryError, match=r"roles.web.env.flavour: unknown key"):
        _layered(other, "roles:\n  web: {env: {flavour: 1}}\n")
