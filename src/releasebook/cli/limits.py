"""``--hosts`` and ``--roles``: a run limited to some of an environment's hosts (as
Capistrano's ``HOSTS=`` and ``ROLES=``), e.g. to bring a replaced server to the live
release alone. The hosts left out are not contacted, so the run warns that the
environment may serve different releases until they match (``inv status`` shows it)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from invoke.tasks import Task

from releasebook.errors import UsageError
from releasebook.inventory import Environment

HOSTS_HELP = "only these hosts (comma-separated names); the others are left as they are"
ROLES_HELP = "only the hosts with one of these roles (comma-separated: web, worker, ...)"


class LimitedTask(Task[Any]):
    """A task whose automatic short flags leave ``-h`` to help (``--hosts`` would
    otherwise take it)."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names | {"h"})
        return opts


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def limit_hosts(env: Environment, hosts: str = "", roles: str = "") -> tuple[Environment, str]:
    """The environment with only the hosts asked for, and the warning to give ("" when
    every host is in)."""
    if not hosts.strip() and not roles.strip():
        return env, ""
    known = [h.name for h in env.hosts]
    wanted = _names(hosts)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise UsageError(
            f"--hosts: no host {', '.join(unknown)} in {env.name}; its hosts are: "
            + ", ".join(known)
        )
    all_roles = sorted({r for h in env.hosts for r in h.roles})
    asked_roles = _names(roles)
    missing = [r for r in asked_roles if r not in all_roles]
    if missing:
        raise UsageError(
            f"--roles: no host of {env.name} has the role {', '.join(missing)}; its roles "
            "are: " + ", ".join(all_roles)
        )
    kept = tuple(
        h
        for h in env.hosts
        if (not wanted or h.name in wanted)
        and (not asked_roles or any(h.has(r) for r in asked_roles))
    )
    if not kept:
        raise UsageError(f"--hosts {hosts!r} --roles {roles!r}: no host of {env.name} is both")
    if len(kept) == len(env.hosts):
        return env, ""
    left = [h.name for h in env.hosts if h not in kept]
    warning = (
        f"WARNING: limited to {', '.join(h.name for h in kept)}; "
        f"{', '.join(left)} are left as they are and not contacted, so the hosts may serve "
        f"different releases until they match (`inv status --env={env.name}` shows them)"
    )
    migrating = [h.name for h in env.hosts_with("migrate")]
    if migrating and not any(h.has("migrate") for h in kept):
        warning += (
            f"; the migrate host ({', '.join(migrating)}) is not in the limit, so no "
            "migration is applied"
        )
    return replace(env, hosts=kept), warning
