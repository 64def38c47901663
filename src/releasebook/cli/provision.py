"""``inv provision``: prepare an environment's hosts with Ansible (playbooks/provision.yml)."""

from __future__ import annotations

from invoke.context import Context
from invoke.tasks import task

from releasebook.cli.kit import session
from releasebook.provision.run import provision as provision_run
from releasebook.provision.settings import load_provision


@task(
    help={
        "env": "inventory to provision: inventories/<env>.yml (its provision: section)",
        "check": "ansible-playbook --check: report what would change, change nothing",
        "tags": "only these roles or tasks, comma-separated (base, nginx, app, postgresql, "
        "redis, logrotate, firewall)",
    }
)
def provision(c: Context, env: str = "", check: bool = False, tags: str = "") -> None:
    """Take fresh Debian 12 / Ubuntu 24.04 servers to hosts a release can go to: the
    deploy user, nginx, the systemd unit of the process manager and the optional roles of
    the inventory's provision: section. A second run changes nothing."""
    with session() as s:
        environment = s.load(env)
        settings = load_provision(environment)
        result = provision_run(
            environment, settings, masker=s.masker, out=s.print, check=check, tags=tags
        )
        verb = "would change" if check else "changed"
        s.print(
            f"OK: provisioned {environment.name}: {len(result.recap)} hosts, "
            f"{result.changed} tasks {verb}"
        )
