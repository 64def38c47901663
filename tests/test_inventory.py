"""inventories/<env>.yml -> Environment: every bad input is an InventoryError (exit 2)
naming the file, the line, the key path and what was expected; good inputs layer
defaults -> environment -> roles -> host.

Each bad case writes a small inventory into a temporary project (``inventories/x.yml``
plus a minimal Django app directory, since ``app.source`` is validated).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import releasebook.inventory.load as inventory_module
from releasebook.errors import InventoryError
from releasebook.inventory import load_environment, load_inventory

MAIN = Path(__file__).resolve().parents[1]
INV = Path(sys.executable).parent / "inv"

GOOD = """\
app:
  source: app
  settings: config.settings
  wsgi: config.wsgi:application
deploy:
  path: /srv/app
ssh:
  known_hosts: inventories/known_hosts
health:
  host_header: example.com
hosts:
  web1:
    address: 10.0.0.1
    roles: [web, migrate]
"""

WEB1_ROLES = "    roles: [web, migrate]\n"


def edit(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced once; ``old`` must be there (no silent no-ops)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def add_to_web1(text: str) -> str:
    return edit(GOOD, WEB1_ROLES, WEB1_ROLES + text)


def line_of(text: str, needle: str) -> int:
    """The number of the one line that starts (after indentation) with ``needle``."""
    lines = enumerate(text.splitlines(), start=1)
    found = [n for n, line in lines if line.lstrip().startswith(needle)]
    assert len(found) == 1, f"{needle!r} is on lines {found}"
    return found[0]


def make_project(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "manage.py").write_text("")
    (root / "app" / "requirements.txt").write_text("django\n")
    (root / "inventories").mkdir()
    (root / "inventories" / "known_hosts").write_text("")
    return root


def write_inventory(root: Path, text: str, name: str = "x") -> Path:
    file = root / "inventories" / f"{name}.yml"
    file.write_text(text)
    return file


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def inventory_error(file: Path, root: Path) -> InventoryError:
    with pytest.raises(InventoryError) as info:
        load_inventory(file, root=root)
    assert info.value.exit_code == 2
    return info.value


# --- bad inputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    text: str
    key: str  # the key path the message names ("" when none applies)
    expected: str  # what was expected, as it appears in the message
    line: str | None  # a fragment of the line the message points at; None: no line
    slack: int = 0  # for missing keys: the section's line or up to this many lines below


TWO_HOSTS = GOOD + "  worker1:\n    address: 10.0.0.2\n    roles: [worker, beat]\n"

BAD: dict[str, Bad] = {
    "unknown-top-level-key": Bad(
        GOOD + "colour: blue\n",
        "colour",
        "unknown key; expected one of app, deploy, transport",
        "colour: blue",
    ),
    "unknown-nested-key": Bad(
        add_to_web1("    ssh:\n      prot: 22\n"),
        "hosts.web1.ssh.prot",
        "unknown key; expected one of user, port, identity_file, known_hosts",
        "prot: 22",
    ),
    "unknown-key-in-role": Bad(
        GOOD + "roles:\n  worker:\n    worker:\n      concurency: 8\n",
        "roles.worker.worker.concurency",
        "unknown key; expected one of concurrency, stop_timeout",
        "concurency: 8",
    ),
    "unknown-key-in-deploy": Bad(
        edit(GOOD, "  path: /srv/app\n", "  path: /srv/app\n  keep: 3\n"),
        "deploy.keep",
        "unknown key; expected one of path, keep_releases",
        "keep: 3",
    ),
    "port-as-string": Bad(
        add_to_web1("    ssh:\n      port: '22'\n"),
        "hosts.web1.ssh.port",
        "expected an integer, got a string",
        "port: '22'",
    ),
    "port-as-boolean": Bad(
        add_to_web1("    web:\n      port: yes\n"),
        "hosts.web1.web.port",
        "expected an integer, got a boolean",
        "port: yes",
    ),
    "port-out-of-range": Bad(
        add_to_web1("    ssh:\n      port: 70000\n"),
        "hosts.web1.ssh.port",
        "expected a port number between 1 and 65535",
        "port: 70000",
    ),
    "roles-not-a-list": Bad(
        edit(GOOD, "roles: [web, migrate]", "roles: web"),
        "hosts.web1.roles",
        "expected a list of strings",
        "roles: web",
    ),
    "hosts-not-a-mapping": Bad(
        GOOD.split("hosts:\n")[0] + "hosts: [web1]\n",
        "hosts",
        "expected a mapping, got a list",
        "hosts: [web1]",
    ),
    "missing-app-settings": Bad(
        edit(GOOD, "  settings: config.settings\n", ""),
        "app.settings",
        "missing; expected a string",
        "app:",
        slack=1,
    ),
    "missing-deploy-path": Bad(
        edit(GOOD, "  path: /srv/app\n", "  keep_releases: 3\n"),
        "deploy.path",
        "missing; expected a string",
        "deploy:",
        slack=1,
    ),
    "missing-health-host-header": Bad(
        edit(GOOD, "  host_header: example.com\n", "  path: /readyz\n"),
        "health.host_header",
        "missing; expected a string",
        "health:",
        slack=1,
    ),
    "missing-ssh-known-hosts": Bad(
        edit(GOOD, "ssh:\n  known_hosts: inventories/known_hosts\n", ""),
        "hosts.web1.ssh.known_hosts",
        "missing; expected the known_hosts file that pins this host's key",
        "web1:",
        slack=1,
    ),
    "unknown-role": Bad(
        edit(GOOD, "[web, migrate]", "[web, migrate, cron]"),
        "hosts.web1.roles",
        "unknown role 'cron'; expected one of web, worker, beat, migrate",
        "roles: [web, migrate, cron]",
    ),
    "no-migrate-host": Bad(
        edit(GOOD, "[web, migrate]", "[web]"),
        "hosts",
        "no host has role 'migrate'; expected exactly one",
        "hosts:",
        slack=1,
    ),
    "two-beat-hosts": Bad(
        edit(TWO_HOSTS, "[web, migrate]", "[web, migrate, beat]"),
        "hosts",
        "role 'beat' must be on exactly one host, found on web1, worker1",
        "hosts:",
        slack=1,
    ),
    "two-migrate-hosts": Bad(
        edit(TWO_HOSTS, "[worker, beat]", "[worker, beat, migrate]"),
        "hosts",
        "role 'migrate' must be on exactly one host, found on web1, worker1",
        "hosts:",
        slack=1,
    ),
    "duplicate-host": Bad(
        GOOD + "  web2:\n    address: 10.0.0.1\n    ssh:\n      port: 22\n    roles: [web]\n",
        "hosts.web2",
        "duplicate host: 10.0.0.1:22 is also hosts.web1",
        "web2:",
        slack=1,
    ),
    "yaml-syntax-error": Bad(
        edit(GOOD, "  path: /srv/app\n", "  path: /srv/app: oops\n"),
        "",
        "YAML syntax error: mapping values are not allowed here",
        "path: /srv/app: oops",
    ),
    "duplicate-yaml-key": Bad(
        GOOD + "deploy :\n  path: /srv/other\n",  # the space makes the 2nd line unique
        "deploy",
        "duplicate key",
        "deploy :",
    ),
    "top-level-not-a-mapping": Bad(
        "- web1\n- web2\n", "", "expected a mapping at the top level", "- web1"
    ),
    "relative-deploy-path-for-ssh": Bad(
        edit(GOOD, "path: /srv/app", "path: srv/app"),
        "deploy.path",
        "expected an absolute path for ssh hosts",
        "path: srv/app",
    ),
    "deploy-path-with-space": Bad(
        edit(GOOD, "path: /srv/app", "path: '/srv/a b'"),
        "deploy.path",
        "expected a path of letters, digits, '.', '_', '-' and '/', got '/srv/a b'",
        "path: '/srv/a b'",
    ),
    "deploy-path-with-command-substitution": Bad(
        edit(GOOD, "path: /srv/app", "path: '/srv/$(x)'"),
        "deploy.path",
        "expected a path of letters, digits, '.', '_', '-' and '/', got '/srv/$(x)'",
        "path: '/srv/$(x)'",
    ),
    "deploy-path-with-dotdot": Bad(
        edit(GOOD, "path: /srv/app", "path: /srv/../etc"),
        "deploy.path",
        "got '/srv/../etc'",
        "path: /srv/../etc",
    ),
    "bad-env-var-name-in-required": Bad(
        GOOD + "env:\n  required: [DJANGO_SECRET_KEY, 1BAD]\n",
        "env.required",
        "'1BAD' is not an environment variable name",
        "required: [DJANGO_SECRET_KEY, 1BAD]",
    ),
    "bad-env-var-name-in-generate": Bad(
        GOOD + "env:\n  generate: [SECRET-KEY]\n",
        "env.generate",
        "'SECRET-KEY' is not an environment variable name",
        "generate: [SECRET-KEY]",
    ),
    "bad-env-var-name-in-values": Bad(
        GOOD + "env:\n  values: {'A B': x}\n",
        "env.values",
        "'A B' is not an environment variable name",
        "values: {'A B': x}",
    ),
    "env-value-not-a-string": Bad(
        GOOD + "env:\n  values:\n    DEBUG: [1]\n",
        "env.values.DEBUG",
        "expected a string",
        "DEBUG: [1]",
    ),
    "hook-for-unknown-step": Bad(
        GOOD + "hooks:\n  after:\n    deploy: [echo hi]\n",
        "hooks.after.deploy",
        "unknown key; expected one of install, configure, gate, migrate",
        "deploy: [echo hi]",
    ),
    "hook-for-a-controller-step": Bad(
        GOOD + "hooks:\n  after:\n    verify: [echo released]\n",
        "hooks.after.verify",
        "verify runs on the controller, where hooks do not run; hooks run after the steps "
        "install, configure, gate",
        "verify: [echo released]",
    ),
    "hook-before-the-release-exists": Bad(
        GOOD + "hooks:\n  before:\n    install: [echo early]\n",
        "hooks.before.install",
        "install runs before the new release's directory exists; hooks run before the "
        "steps configure, gate",
        "install: [echo early]",
    ),
    "hook-on-bookkeeping": Bad(
        GOOD + "hooks:\n  after:\n    unlock: [echo done]\n",
        "hooks.after.unlock",
        "unlock is releasebook's own bookkeeping",
        "unlock: [echo done]",
    ),
    "hook-on-setup": Bad(
        GOOD + "hooks:\n  after:\n    setup: [echo early]\n",
        "hooks.after.setup",
        "setup runs before the new release's directory exists",
        "setup: [echo early]",
    ),
    "timeout-for-an-unknown-step": Bad(
        GOOD + "timeouts:\n  deploy: 30\n",
        "timeouts.deploy",
        "unknown key; expected one of lock, setup, preflight",
        "deploy: 30",
    ),
    "timeout-not-positive": Bad(
        GOOD + "timeouts:\n  migrate: 0\n",
        "timeouts.migrate",
        "expected a positive number",
        "migrate: 0",
    ),
    "yaml-alias-bomb": Bad(
        GOOD
        + "x: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(
            f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, n in zip("abcde", "bcdef", strict=True)
        ),
        "e",
        "values once aliases are expanded",
        "x: &a",
    ),
    "yaml-python-tag-on-a-scalar": Bad(
        GOOD + "x: !!python/name:os.system ''\n",
        "x",
        "could not determine a constructor",
        "x: !!python",
    ),
    "yaml-recursive-alias": Bad(
        GOOD + "x: &loop [1, *loop]\n",
        "x[1]",
        "an alias that contains itself",
        "x: &loop",
    ),
    "yaml-python-tag": Bad(
        GOOD + "x: !!python/object/apply:os.system ['touch pwned']\n",
        "x",
        "YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
        "x: !!python",
    ),
    "hook-at-unknown-time": Bad(
        GOOD + "hooks:\n  during: {migrate: [echo hi]}\n",
        "hooks.during",
        "unknown key; expected one of before, after",
        "during:",
    ),
    "gateway-with-a-space": Bad(
        add_to_web1("    ssh:\n      gateway: 'bastion host'\n"),
        "hosts.web1.ssh.gateway",
        "expected [user@]host[:port], got 'bastion host' (a ~/.ssh/config alias, "
        "comma-separated hops, or none)",
        "gateway: 'bastion host'",
    ),
    "gateway-port-out-of-range-in-role": Bad(
        GOOD + "roles:\n  web:\n    ssh:\n      gateway: deploy@bastion:99999\n",
        "roles.web.ssh.gateway",
        "expected a port number between 1 and 65535 in 'deploy@bastion:99999'",
        "gateway: deploy@bastion:99999",
    ),
    "gateway-not-a-string": Bad(
        edit(GOOD, "ssh:\n", "ssh:\n  gateway: [bastion]\n"),
        "ssh.gateway",
        "expected a string, got a list",
        "gateway: [bastion]",
    ),
    "gateway-shell-metacharacters": Bad(
        add_to_web1("    ssh:\n      gateway: 'bastion;reboot'\n"),
        "hosts.web1.ssh.gateway",
        "expected [user@]host[:port], got 'bastion;reboot'",
        "gateway: 'bastion;reboot'",
    ),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_inventory_names_file_line_key_and_expectation(project: Path, case: Bad) -> None:
    file = write_inventory(project, case.text)
    message = str(inventory_error(file, project))
    if case.line is None:
        assert message.startswith(f"{file}: "), message
    else:
        match = re.match(rf"{re.escape(str(file))}:(\d+): ", message)
        assert match, f"no {file}:LINE: prefix in {message!r}"
        expected_line = line_of(case.text, case.line)
        assert expected_line <= int(match[1]) <= expected_line + case.slack, message
    if case.key:
        assert f" {case.key}: " in message or f": {case.key}: " in message, message
    assert case.expected in message, message


def test_file_not_found(project: Path) -> None:
    file = project / "inventories" / "nope.yml"
    message = str(inventory_error(file, project))
    assert message == f"{file}: inventory file not found"


def test_load_environment_file_not_found(project: Path) -> None:
    with pytest.raises(InventoryError) as info:
        load_environment("nope", project)
    assert str(info.value) == f"{project / 'inventories' / 'nope.yml'}: inventory file not found"
    assert info.value.exit_code == 2


@pytest.mark.parametrize("name", ["../etc/passwd", "a b", "", "-x"])
def test_load_environment_rejects_bad_names(project: Path, name: str) -> None:
    with pytest.raises(InventoryError, match="expected a name made of letters") as info:
        load_environment(name, project)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "text", ["", "\n\n", "# only a comment\n"], ids=["empty", "blank", "comment"]
)
def test_empty_file(project: Path, text: str) -> None:
    file = write_inventory(project, text)
    message = str(inventory_error(file, project))
    assert message == f"{file}: inventory is empty; expected a mapping with 'hosts'"


def test_yaml_syntax_error_line_in_unclosed_flow_list(project: Path) -> None:
    text = edit(GOOD, "roles: [web, migrate]", "roles: [web, migrate\n    address2: x")
    file = write_inventory(project, text)
    message = str(inventory_error(file, project))
    assert message.startswith(f"{file}:"), message
    assert "YAML syntax error" in message
    assert re.match(rf"{re.escape(str(file))}:\d+: ", message), message


def test_missing_app_source_directory(project: Path) -> None:
    file = write_inventory(project, edit(GOOD, "source: app", "source: nowhere"))
    message = str(inventory_error(file, project))
    assert message.startswith(f"{file}:{line_of(GOOD, 'source: app')}: app.source: ")
    assert f"expected a Django project (manage.py) at {project / 'nowhere'}" in message


def test_missing_requirements_file(project: Path) -> None:
    (project / "app" / "requirements.txt").unlink()
    file = write_inventory(project, GOOD)
    message = str(inventory_error(file, project))
    assert f"app.requirements: file not found: {project / 'app' / 'requirements.txt'}" in message


# --- known bugs (see the reply that came with these tests) ------------------------------


@pytest.mark.parametrize(
    ("extra", "key", "needle"),
    [
        ("web:\n  port: '8000'\n", "web.port", "port: '8000'"),
        ("roles:\n  web:\n    web:\n      port: '8000'\n", "roles.web.web.port", "port: '8000'"),
    ],
    ids=["environment-layer", "role-layer"],
)
def test_wrong_type_in_a_shared_layer_names_that_layer(
    project: Path, extra: str, key: str, needle: str
) -> None:
    text = GOOD + extra
    file = write_inventory(project, text)
    message = str(inventory_error(file, project))
    assert message.startswith(f"{file}:{line_of(text, needle)}: {key}: expected an integer")


def test_relative_deploy_path_rejected_for_an_ssh_host_override(project: Path) -> None:
    text = "transport: local\n" + add_to_web1("    transport: ssh\n").replace(
        "path: /srv/app", "path: srv/app"
    )
    file = write_inventory(project, text)
    message = str(inventory_error(file, project))
    assert "deploy.path: expected an absolute path for ssh hosts" in message


def test_unknown_key_with_block_value_points_at_the_key(project: Path) -> None:
    text = add_to_web1("    sshh:\n      port: 22\n")
    file = write_inventory(project, text)
    message = str(inventory_error(file, project))
    assert message.startswith(f"{file}:{line_of(text, 'sshh:')}: hosts.web1.sshh: unknown key")


# --- good inputs -------------------------------------------------------------------------


def test_minimal_inventory_defaults(project: Path) -> None:
    env = load_inventory(write_inventory(project, GOOD), root=project)
    assert env.name == "x"
    assert env.root == project.resolve()
    assert env.deploy_path == Path("/srv/app")
    assert env.keep_releases == 5
    (host,) = env.hosts
    assert host.name == "web1"
    assert host.roles == ("web", "migrate")
    assert host.transport == "ssh"
    assert host.ssh.user == "deploy"
    assert host.ssh.port == 22
    assert host.ssh.known_hosts == project.resolve() / "inventories" / "known_hosts"
    assert host.ssh.identity_file is None
    assert (host.web.port, host.web.workers, host.web.timeout) == (8000, 2, 30)
    assert (host.worker.concurrency, host.worker.stop_timeout) == (2, 60)
    assert env.health.path == "/readyz"
    assert env.health.forwarded_proto == "https"
    assert env.app.requirements == "requirements.txt"
    assert env.app.celery_app is None
    assert env.max_parallel == 10
    assert env.min_free_mb == 500


LAYERED = """\
app:
  source: app
  settings: config.settings
  wsgi: config.wsgi:application
deploy:
  path: /srv/app
ssh:
  known_hosts: inventories/known_hosts
  user: app
web:
  workers: 3
worker:
  concurrency: 4
roles:
  web:
    web:
      workers: 5
      timeout: 45
  worker:
    web:
      workers: 7
    worker:
      concurrency: 8
health:
  host_header: example.com
hosts:
  web1:
    address: 10.0.0.1
    roles: [web, migrate]
  web2:
    address: 10.0.0.2
    roles: [web]
    web:
      port: 9000
  both:
    address: 10.0.0.3
    roles: [web, worker]
  worker1:
    address: 10.0.0.4
    roles: [worker, beat]
  worker2:
    address: 10.0.0.5
    roles: [worker]
    bind: 0.0.0.0:7000
    ssh:
      user: root
    worker:
      concurrency: 6
"""


def test_layering_defaults_environment_roles_host(project: Path) -> None:
    env = load_inventory(write_inventory(project, LAYERED), root=project)
    web1, web2, both, worker1, worker2 = env.hosts
    # role `web` over the environment; defaults where nobody says anything
    assert (web1.web.workers, web1.web.timeout, web1.web.port) == (5, 45, 8000)
    assert (web1.worker.concurrency, web1.worker.stop_timeout) == (4, 60)
    assert web1.ssh.user == "app"
    # roles apply in the order listed: `worker` comes after `web`
    assert both.web.workers == 7
    assert both.web.timeout == 45
    assert both.worker.concurrency == 8
    # role over environment, host over role
    assert worker1.worker.concurrency == 8
    assert worker2.worker.concurrency == 6
    assert worker2.ssh.user == "root"
    assert worker1.web.workers == 7
    # bind defaults to address:web.port, with the host's own web.port
    assert web1.bind == "10.0.0.1:8000"
    assert web2.bind == "10.0.0.2:9000"
    assert worker2.bind == "0.0.0.0:7000"


def test_ssh_gateway_layers_and_explicit_settings_are_recorded(project: Path) -> None:
    text = edit(GOOD, "ssh:\n", "ssh:\n  gateway: deploy@bastion.example.com:2200\n")
    text += "  web2:\n    address: db-alias\n    roles: [web]\n"
    text += "    ssh:\n      gateway: none\n      user: root\n"
    text += "  web3:\n    address: 10.0.0.3\n    roles: [web]\n"
    text += "    ssh:\n      gateway: outer,jump@[fd00::1]:22\n"
    env = load_inventory(write_inventory(project, text), root=project)
    web1, web2, web3 = env.hosts
    assert web1.ssh.gateway == "deploy@bastion.example.com:2200"
    assert web2.ssh.gateway == "none"
    assert web3.ssh.gateway == "outer,jump@[fd00::1]:22"
    # defaults are not "set": ~/.ssh/config may still supply user and port
    assert web1.ssh.explicit == {"known_hosts", "gateway"}
    assert (web1.ssh.user, web1.ssh.port, web1.ssh.connect_timeout) == ("deploy", 22, 10)
    assert web2.ssh.explicit == {"known_hosts", "gateway", "user"}
    assert web2.ssh.user == "root"


def test_same_address_on_another_port_is_not_a_duplicate(project: Path) -> None:
    text = GOOD + "  web2:\n    address: 10.0.0.1\n    roles: [web]\n    ssh:\n      port: 2222\n"
    env = load_inventory(write_inventory(project, text), root=project)
    assert [(h.address, h.ssh.port) for h in env.hosts] == [("10.0.0.1", 22), ("10.0.0.1", 2222)]


def test_local_transport_needs_no_address_or_known_hosts(project: Path) -> None:
    text = "transport: local\n" + edit(
        edit(GOOD, "ssh:\n  known_hosts: inventories/known_hosts\n", ""),
        "    address: 10.0.0.1\n",
        "",
    ).replace("path: /srv/app", "path: var/local")
    env = load_inventory(write_inventory(project, text), root=project)
    (host,) = env.hosts
    assert host.transport == "local"
    assert host.address == "127.0.0.1"
    assert host.bind == "127.0.0.1:8000"
    assert host.ssh.known_hosts == Path("/dev/null")
    assert env.deploy_path == Path("var/local")


def test_production_layering() -> None:
    env = load_environment("production", MAIN)
    web1, web2, worker1 = (env.host(n) for n in ("prod-web1", "prod-web2", "prod-worker1"))
    # worker concurrency: environment 4, role `worker` 8, host 6 -> the host wins
    assert worker1.worker.concurrency == 6
    assert worker1.worker.stop_timeout == 300
    # web hosts have no overrides: environment values
    for web in (web1, web2):
        assert web.worker.concurrency == 4
        assert web.worker.stop_timeout == 300
        assert (web.web.port, web.web.workers, web.web.timeout) == (8000, 4, 30)
        assert web.bind == f"{web.address}:8000"
        assert web.ssh.user == "deploy"
        assert web.ssh.known_hosts == MAIN / "inventories" / "production.known_hosts"
    assert env.hosts_with("migrate") == (web1,)
    assert env.hosts_with("beat") == (worker1,)
    assert env.min_free_mb == 2048
    assert env.health.host_header == "www.example.com"


def test_staging_identity_file_expands_home() -> None:
    env = load_environment("staging", MAIN)
    for host in env.hosts:
        assert host.ssh.identity_file == Path(os.environ["HOME"]) / ".ssh" / "id_ed25519"
    assert env.hooks[("after", "migrate")]


@pytest.mark.parametrize("name", ["local", "staging", "production"])
def test_committed_inventories_load(name: str) -> None:
    env = load_environment(name, MAIN)
    assert env.name == name
    assert env.file == MAIN / "inventories" / f"{name}.yml"
    assert len(env.hosts_with("migrate")) == 1
    assert env.hosts_with("web")
    assert env.lines  # line numbers kept for later error messages


# --- through the CLI -----------------------------------------------------------------------


BROKEN = GOOD + "colour: blue\n"


def run_inv(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEBOOK_")}
    env["RELEASEBOOK_ROOT"] = str(project)
    return subprocess.run(
        [str(INV), *args], cwd=project, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def cli_project(project: Path) -> Path:
    shutil.copyfile(MAIN / "tasks.py", project / "tasks.py")
    write_inventory(project, GOOD, "good")
    write_inventory(project, BROKEN, "broken")
    for args in (["init", "-q"], ["add", "-A"]):
        subprocess.run(["git", *args], cwd=project, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"],
        cwd=project,
        check=True,
    )
    return project


def test_cli_bad_inventory_exits_2_with_one_error_line(cli_project: Path) -> None:
    done = run_inv(cli_project, "release", "--env=broken", "--dry-run")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("releasebook:")]
    file = cli_project.resolve() / "inventories" / "broken.yml"
    assert errors == [
        f"releasebook: {file}:{line_of(BROKEN, 'colour')}: colour: unknown key; expected one of "
        + ", ".join(inventory_module._TOP_KEYS)
    ], done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_cli_good_inventory_dry_run_exits_0(cli_project: Path) -> None:
    done = run_inv(cli_project, "release", "--env=good", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "releasebook:" not in done.stderr
    assert done.stdout.startswith("# release plan for good: ")


def test_web_preload_is_a_boolean(project: Path) -> None:
    assert load_environment(write_inventory(project, GOOD).stem, project).hosts[0].web.preload
    off_file = write_inventory(project, GOOD + "web:\n  preload: false\n")
    off = load_environment(off_file.stem, project)
    assert off.hosts[0].web.preload is False
    file = write_inventory(project, GOOD + "web:\n  preload: 'yes'\n")
    assert "web.preload: expected" in str(inventory_error(file, project))
