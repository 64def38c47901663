"""``inv provision`` without hosts: the provision: section is validated (exit 2 naming
file, line and key) before anything is contacted, the generated Ansible inventory pins host
keys, secrets reach ansible-playbook only through a 0600 file that is removed afterwards,
and a failure names the host and the task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from releasebook.errors import InventoryError
from releasebook.inventory import load_environment
from releasebook.masking import Masker
from releasebook.provision import run as run_module
from releasebook.provision.inventory import ansible_inventory, environment_vars, playbook_dir
from releasebook.provision.run import ProvisionFailed, provision
from releasebook.provision.settings import load_provision

MAIN = Path(__file__).resolve().parents[1]
INV = Path(sys.executable).parent / "inv"

INVENTORY = """\
app:
  source: app
  settings: config.settings
  wsgi: config.wsgi:application
deploy:
  path: /srv/app
ssh:
  user: deploy
  port: 2222
  identity_file: keys/id
  known_hosts: inventories/known_hosts
health:
  host_header: app.example.com
env:
  secrets:
    DATABASE_PASSWORD: {from_env: TEST_DB_PASSWORD}
provision:
  nginx:
    client_max_body_size: 20m
    tls:
      certificate: certs/site.crt
      key: certs/site.key
  postgresql: {database: app, user: app, password: DATABASE_PASSWORD}
hosts:
  web1:
    address: 192.0.2.1
    roles: [web, migrate]
  worker1:
    address: 192.0.2.2
    roles: [worker, beat]
    ssh: {gateway: jump@bastion:2200}
"""


def project(tmp_path: Path, inventory: str = INVENTORY) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "manage.py").write_text("")
    (tmp_path / "app" / "requirements.txt").write_text("django\n")
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "known_hosts").write_text("")
    (tmp_path / "inventories" / "x.yml").write_text(inventory)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id.pub").write_text("ssh-ed25519 AAAAC3Nza test@example\n")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "site.crt").write_text("cert\n")
    (tmp_path / "certs" / "site.key").write_text("key\n")
    (tmp_path / "tasks.py").write_text((MAIN / "tasks.py").read_text())
    return tmp_path


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.strip().startswith(needle))


def test_settings_defaults_and_values(tmp_path: Path) -> None:
    env = load_environment("x", project(tmp_path))
    settings = load_provision(env)
    assert settings.user == "root"
    assert settings.authorized_keys == (tmp_path / "keys" / "id.pub",)
    assert settings.nginx.server_name == "app.example.com"
    assert settings.nginx.client_max_body_size == "20m"
    assert settings.nginx.tls is not None and settings.nginx.tls.hsts_max_age == 31536000
    assert settings.postgresql is not None and settings.postgresql.host == "web1"
    assert settings.logrotate and not settings.firewall


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        (
            "    client_max_body_size: 20m\n",
            "    client_max_body_size: 20m\n    gzip: true\n",
            "gzip:",
            "provision.nginx.gzip: unknown key",
        ),
        ("provision:\n", "provision:\n  colour: red\n", "colour:", "provision.colour: unknown key"),
        (
            "      key: certs/site.key\n",
            "      key: certs/missing.key\n",
            "key: certs/missing",
            "provision.nginx.tls.key: TLS key file not found",
        ),
        (
            "password: DATABASE_PASSWORD}",
            "password: NOPE}",
            "postgresql:",
            "provision.postgresql.password: 'NOPE' is not declared in env.secrets",
        ),
        (
            "    client_max_body_size: 20m\n",
            "    client_max_body_size: lots\n",
            "client_max_body_size:",
            "provision.nginx.client_max_body_size: expected a size",
        ),
    ],
)
def test_bad_provision_sections(
    tmp_path: Path, old: str, new: str, needle: str, message: str
) -> None:
    assert INVENTORY.count(old) == 1
    text = INVENTORY.replace(old, new)
    env = load_environment("x", project(tmp_path, text))
    with pytest.raises(InventoryError) as caught:
        load_provision(env)
    assert str(caught.value).startswith(f"{env.file}:{line_of(text, needle)}: {message}")


def test_inv_provision_refuses_a_bad_section_before_contacting_hosts(tmp_path: Path) -> None:
    text = INVENTORY.replace("    client_max_body_size: 20m\n", "    gzip: true\n")
    root = project(tmp_path, text)
    done = subprocess.run(
        [str(INV), "provision", "--env=x"],
        cwd=root,
        env={**os.environ, "RELEASEBOOK_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    line = line_of(text, "gzip:")
    assert f"inventories/x.yml:{line}: provision.nginx.gzip: unknown key" in done.stderr
    assert "TASK [" not in done.stdout  # ansible-playbook never ran


def test_ansible_inventory_groups_and_strict_host_keys(tmp_path: Path) -> None:
    root = project(tmp_path)
    env = load_environment("x", root)
    inventory = ansible_inventory(env, load_provision(env))["all"]
    assert set(inventory["hosts"]) == {"web1", "worker1"}
    assert set(inventory["children"]["web"]["hosts"]) == {"web1"}
    assert set(inventory["children"]["beat"]["hosts"]) == {"worker1"}
    assert set(inventory["children"]["postgresql"]["hosts"]) == {"web1"}
    web1 = inventory["hosts"]["web1"]
    assert web1["ansible_host"] == "192.0.2.1"
    assert web1["ansible_port"] == 2222
    assert web1["ansible_user"] == "root"
    assert web1["releasebook_deploy_user"] == "deploy"
    assert web1["ansible_ssh_private_key_file"] == str(root / "keys" / "id")
    args = web1["ansible_ssh_common_args"]
    assert "-o StrictHostKeyChecking=yes" in args
    assert f"-o UserKnownHostsFile={root / 'inventories' / 'known_hosts'}" in args
    assert "ProxyJump" not in args
    assert (
        "-o ProxyJump=jump@bastion:2200" in inventory["hosts"]["worker1"]["ansible_ssh_common_args"]
    )


def test_playbook_passes_ansible_syntax_check(tmp_path: Path) -> None:
    root = project(tmp_path)
    env = load_environment("x", root)
    settings = load_provision(env)
    (tmp_path / "inv.json").write_text(json.dumps(ansible_inventory(env, settings)))
    (tmp_path / "vars.json").write_text(json.dumps(environment_vars(env, settings)))
    playbooks = playbook_dir(root)
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "--syntax-check",
            "-i",
            str(tmp_path / "inv.json"),
            "-e",
            f"@{tmp_path / 'vars.json'}",
            str(playbooks / "provision.yml"),
        ],
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(playbooks / "roles")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


FAKE_PLAYBOOK = """#!/bin/sh
# Records its arguments and the secrets file's mode, then prints what Ansible would.
printf '%s\\n' "$@" > {record}/argv
for a in "$@"; do
  case "$a" in @*secrets.json)
    f=${{a#@}}
    stat -c %a "$f" > {record}/mode; cat "$f" > {record}/secrets; echo "$f" > {record}/path;;
  esac
done
echo 'TASK [base : Install python3, venv, util-linux and acl] ***'
echo 'ok: [web1]'
echo 'TASK [nginx : Install the site] ***'
echo 'changed: [web1]'
echo 'fatal: [worker1]: FAILED! => {{"msg": "boom s3cret-password-value"}}'
echo 'PLAY RECAP ***'
echo 'web1                       : ok=2    changed=1    unreachable=0    failed=0'
echo 'worker1                    : ok=1    changed=0    unreachable=0    failed=1'
exit 2
"""


def test_run_hands_secrets_in_a_private_file_and_names_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path)
    record = tmp_path / "record"
    record.mkdir()
    fake = tmp_path / "ansible-playbook"
    fake.write_text(FAKE_PLAYBOOK.format(record=record))
    fake.chmod(0o755)
    monkeypatch.setattr(run_module, "find_ansible_playbook", lambda: str(fake))
    monkeypatch.setenv("TEST_DB_PASSWORD", "s3cret-password-value")
    env = load_environment("x", root)
    printed: list[str] = []
    with pytest.raises(ProvisionFailed) as caught:
        provision(env, load_provision(env), masker=Masker(), out=printed.append)
    assert "host worker1 at task 'nginx : Install the site'" in str(caught.value)
    argv = (record / "argv").read_text()
    assert "s3cret-password-value" not in argv
    assert (record / "mode").read_text().strip() == "600"
    assert json.loads((record / "secrets").read_text()) == {
        "releasebook_postgresql_password": "s3cret-password-value"
    }
    assert not Path((record / "path").read_text().strip()).exists()
    assert "changed: [web1]" in printed
    assert not any("s3cret-password-value" in line for line in printed)


def test_inv_list_shows_provision() -> None:
    done = subprocess.run(
        [str(INV), "--list"], cwd=MAIN, capture_output=True, text=True, timeout=60, check=True
    )
    assert "provision" in done.stdout


def test_setup_runbook_is_rendered_from_the_roles_and_the_inventory(tmp_path: Path) -> None:
    from releasebook.render.setup import render_setup

    root = project(tmp_path)
    text = render_setup(load_environment("x", root))
    assert "## Role `postgresql`" in text and "## Role `redis`" not in text
    assert "client_max_body_size 20m;" in text
    assert "listen 443 ssl http2;" in text and "return 301 https://$host$request_uri;" in text
    assert 'add_header Strict-Transport-Security "max-age=31536000" always;' in text
    assert "apt-get install -y python3 python3-venv util-linux acl" in text
    assert "ExecStart=/srv/app/.releasebook/tools/bin/supervisord --nodaemon" in text
    assert "RELEASEBOOK_DB_PASSWORD=..." in text
    assert "`DATABASE_PASSWORD` | secret, read on the controller from $TEST_DB_PASSWORD" in text
    assert str(root) not in text


def test_verify_fetches_static_files_the_way_users_do(tmp_path: Path) -> None:
    """Through nginx where the inventory provisions it (HTTPS with TLS, else HTTP on its
    port), else from the app's own bind."""
    from releasebook.provision.urls import user_base

    env = load_environment("x", project(_dir(tmp_path / "tls")))
    assert user_base(env, env.host("web1")) == "https://192.0.2.1"
    plain = INVENTORY.replace(
        "    tls:\n      certificate: certs/site.crt\n      key: certs/site.key\n",
        "    http_port: 8080\n",
    )
    env = load_environment("x", project(_dir(tmp_path / "plain"), plain))
    assert user_base(env, env.host("web1")) == "http://192.0.2.1:8080"
    unprovisioned = plain[: plain.index("provision:")] + plain[plain.index("\nhosts:") + 1 :]
    env = load_environment("x", project(_dir(tmp_path / "bare"), unprovisioned))
    assert user_base(env, env.host("web1")) == f"http://{env.host('web1').bind}"


def _dir(path: Path) -> Path:
    path.mkdir()
    return path
