"""The Ansible inventory and variables ``inv provision`` hands to ``ansible-playbook``,
generated from ``inventories/<env>.yml`` so there is one inventory, never two.

Hosts keep their inventory names; the releasebook roles (web, worker, beat, migrate) are
Ansible groups, and so are ``postgresql`` and ``redis`` when the ``provision:`` section
puts them on a host. SSH is releasebook's: the host's address, port, key and gateway, its
known_hosts file with ``StrictHostKeyChecking=yes`` (an unknown or changed key stops the
run; nothing is ever added), as the ``provision.user`` a fresh server has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from releasebook.inventory.hops import parse_hops
from releasebook.inventory.model import Environment, Host
from releasebook.provision.settings import ProvisionSettings
from releasebook.quoting import quote
from releasebook.runbooks.layout import STATIC, HostLayout

# releasebook's own provisioning sources, installed with it (see pyproject.toml).
PACKAGE = Path(__file__).resolve().parents[1]

ROLE_GROUPS = ("web", "worker", "beat", "migrate")


def ssh_args(host: Host) -> str:
    """The ``ssh`` options for one host: pinned host keys, its gateway, its timeout."""
    args = [
        "-o StrictHostKeyChecking=yes",
        f"-o UserKnownHostsFile={quote(str(host.ssh.known_hosts))}",
        "-o GlobalKnownHostsFile=/dev/null",
        f"-o ConnectTimeout={max(1, int(host.ssh.connect_timeout))}",
    ]
    if host.ssh.gateway is not None:
        hops = parse_hops(host.ssh.gateway)
        jump = ",".join(
            (f"{h.user}@" if h.user else "") + h.host + (f":{h.port}" if h.port else "")
            for h in hops
        )
        args.append(f"-o ProxyJump={jump or 'none'}")
    return " ".join(args)


def host_vars(env: Environment, settings: ProvisionSettings, host: Host) -> dict[str, Any]:
    identity = settings.identity_file or host.ssh.identity_file
    values: dict[str, Any] = {
        "ansible_host": host.address,
        "ansible_port": host.ssh.port,
        "ansible_user": settings.user,
        "ansible_ssh_common_args": ssh_args(host),
        "releasebook_deploy_user": host.ssh.user,
        "releasebook_app_bind": host.bind,
        "releasebook_stop_timeout": max(host.worker.stop_timeout, host.web.timeout + 10),
        "releasebook_nginx_listen": host.address if settings.nginx.listen == "address" else "",
    }
    if identity is not None:
        values["ansible_ssh_private_key_file"] = str(identity)
    return values


def environment_vars(
    env: Environment, settings: ProvisionSettings, *, read_keys: bool = True
) -> dict[str, Any]:
    """Variables every host shares (none of them secret). ``read_keys=False``: the public
    keys are named, not read (for the setup runbook)."""
    layout = HostLayout(env.deploy_path)
    nginx = settings.nginx
    tls = nginx.tls
    postgres = settings.postgresql
    return {
        "releasebook_env": env.name,
        "releasebook_deploy_path": str(layout.deploy),
        "releasebook_python": env.app.python,
        "releasebook_authorized_keys": [
            key.read_text(encoding="utf-8").strip() if read_keys else f"(the key in {key})"
            for key in settings.authorized_keys
        ],
        "releasebook_paths": {
            "current": str(layout.current),
            "static": str(layout.current / STATIC),
            "shared": str(layout.shared),
            "media": str(layout.media),
            "logs": str(layout.logs),
            "state": str(layout.state),
            "maintenance_flag": str(layout.maintenance_flag),
            "supervisord": str(layout.tool("supervisord")),
            "supervisorctl": str(layout.tool("supervisorctl")),
            "supervisor_conf": str(layout.supervisor_conf),
        },
        "releasebook_unit": unit_name(env),
        "releasebook_nginx": {
            "server_name": nginx.server_name,
            "http_port": nginx.http_port,
            "https_port": nginx.https_port,
            "client_max_body_size": str(nginx.client_max_body_size),
            "tls": tls is not None,
            "certificate": str(tls.certificate) if tls else "",
            "key": str(tls.key) if tls else "",
            "hsts_max_age": tls.hsts_max_age if tls else 0,
        },
        "releasebook_postgresql": (
            {"database": postgres.database, "user": postgres.user} if postgres else {}
        ),
        "releasebook_logrotate": settings.logrotate,
        "releasebook_firewall": settings.firewall,
        "releasebook_firewall_ports": _firewall_ports(env, settings),
    }


def unit_name(env: Environment) -> str:
    """The systemd unit that runs the environment's process manager on a host."""
    return f"releasebook-{env.name}.service"


def _firewall_ports(env: Environment, settings: ProvisionSettings) -> list[int]:
    ports = {h.ssh.port for h in env.hosts} | {settings.nginx.http_port}
    if settings.nginx.tls is not None:
        ports.add(settings.nginx.https_port)
    return sorted(ports)


def ansible_inventory(env: Environment, settings: ProvisionSettings) -> dict[str, Any]:
    """The inventory as Ansible's YAML/JSON inventory format."""
    ssh_hosts = [h for h in env.hosts if h.transport == "ssh"]
    groups: dict[str, Any] = {}
    for role in ROLE_GROUPS:
        members = [h.name for h in ssh_hosts if h.has(role)]
        if members:
            groups[role] = {"hosts": {name: {} for name in members}}
    if settings.postgresql is not None:
        groups["postgresql"] = {"hosts": {settings.postgresql.host: {}}}
    if settings.redis_host is not None:
        groups["redis"] = {"hosts": {settings.redis_host: {}}}
    return {
        "all": {
            "hosts": {h.name: host_vars(env, settings, h) for h in ssh_hosts},
            "vars": {"ansible_python_interpreter": "/usr/bin/python3"},
            "children": groups,
        }
    }


def playbook_dir(root: Path) -> Path:
    """The project's own ``playbooks/`` when it has ``provision.yml``, else releasebook's
    (installed with the package)."""
    own = root / "playbooks"
    if (own / "provision.yml").is_file():
        return own
    return PACKAGE / "playbooks"


def templates_dir(root: Path) -> Path:
    """Where the nginx site and systemd unit templates are: the project's, else ours."""
    own = root / "templates"
    if (own / "nginx-site.conf.j2").is_file():
        return own
    return PACKAGE / "host_templates"
