"""The day-2 runbooks (``runbooks.ops``) x environment x each host's live release -> a plan.

The same planning as release and rollback (:mod:`releasebook.plan.build`): the host's
values, the step's commands filtered by role and filled in, quoted. Their release is the
one each host serves (from the facts), or ``"${RELEASE}"`` in the rendered runbook.
``role`` narrows a plan to the hosts of one role and, on them, to that role's programs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from releasebook.errors import UsageError
from releasebook.inventory import ROLES, Environment, Host
from releasebook.plan.build import _expand, _probe, _timeout
from releasebook.plan.facts import HostFacts
from releasebook.plan.model import HostWork, Plan, PlannedStep
from releasebook.plan.values import Ids, host_values, layout_of
from releasebook.quoting import Raw, ShellVar, quote
from releasebook.runbooks.model import Runbook
from releasebook.runbooks.ops import ROLE_LOGS, ROLE_PROGRAMS

DEFAULT_LINES = 200


def check_role(env: Environment, role: str | None) -> str | None:
    """``role`` when the environment has hosts with it; a usage error naming the roles."""
    if not role:
        return None
    known = sorted({r for h in env.hosts for r in h.roles})
    if role not in ROLES or role not in known:
        raise UsageError(
            f"--role {role!r}: not a role of environment {env.name} "
            f"({env.file.name}); its roles are: {', '.join(known)}"
        )
    return role


def narrowed(env: Environment, role: str | None) -> Environment:
    """The environment with only the hosts of ``role``, each seen with that role alone."""
    if role is None:
        return env
    hosts = tuple(replace(h, roles=(role,)) for h in env.hosts if role in h.roles)
    return replace(env, hosts=hosts)


def _programs(env: Environment, host: Host) -> list[str]:
    out: list[str] = []
    for role in host.roles:
        if role in ("worker", "beat") and not env.app.celery_app:
            continue
        out.extend(ROLE_PROGRAMS.get(role, ()))
    return out


def _log_files(host: Host, logs: Path | ShellVar) -> Raw:
    patterns = [p for role in host.roles for p in ROLE_LOGS.get(role, ())]
    return Raw(" ".join(f"{quote(logs)}/{pattern}" for pattern in dict.fromkeys(patterns)))


def ops_values(
    env: Environment,
    host: Host,
    release: str | ShellVar,
    *,
    concrete: bool,
    facts: HostFacts | None,
    request_id: str | None = None,
    lines: int = DEFAULT_LINES,
    argv: Sequence[str] = (),
) -> dict[str, object]:
    """One host's values: the release's (``plan.values``) and the operations' own."""
    ids = Ids(
        release,
        "",
        ShellVar("GIT_SHA"),
        ShellVar("REQ_HASH"),
        ShellVar("LOCK_TOKEN"),
        ShellVar("MARK", prefix="@@rb-"),
    )
    values = host_values(
        env,
        host,
        ids,
        base=env.root if concrete else None,
        python_abi=ShellVar("PYTHON_ABI"),
        facts=facts,
    )
    programs = _programs(env, host)
    values.update(
        {
            "role_programs": Raw(" ".join(quote(p) for p in programs)),
            "log_files": _log_files(host, layout_of(env, env.root if concrete else None).logs),
            "log_filter": Raw(
                f"grep --line-buffered -F -e {quote(request_id)}" if request_id else "cat"
            ),
            "lines": lines,
            "celery": bool(env.app.celery_app),
            "argv": Raw(" ".join(quote(a) for a in argv) if argv else '"$@"'),
        }
    )
    return values


def ops_plan(
    env: Environment,
    runbook: Runbook,
    *,
    facts: Mapping[str, HostFacts] | None,
    role: str | None = None,
    hosts: Sequence[str] | None = None,
    request_id: str | None = None,
    lines: int = DEFAULT_LINES,
    argv: Sequence[str] = (),
) -> Plan:
    """A plan of ``runbook`` for a run (``facts`` given: each host's live release) or for
    the rendered runbook (``facts`` None). ``hosts`` limits it to those hosts."""
    scoped = narrowed(env, check_role(env, role))
    if hosts is not None:
        scoped = replace(scoped, hosts=tuple(h for h in scoped.hosts if h.name in hosts))
    concrete = facts is not None
    per_host: dict[str, dict[str, object]] = {}
    for host in scoped.hosts:
        host_facts = facts.get(host.name) if facts is not None else None
        release: str | ShellVar = (
            host_facts.current
            if host_facts is not None and host_facts.current
            else ShellVar("RELEASE")
        )
        per_host[host.name] = ops_values(
            scoped,
            host,
            release,
            concrete=concrete,
            facts=host_facts,
            request_id=request_id,
            lines=lines,
            argv=argv,
        )
    planned: list[PlannedStep] = []
    for number, step in enumerate(runbook.steps, start=1):
        targets = tuple(
            h for h in scoped.hosts if not step.roles or step.roles.intersection(h.roles)
        )
        work: list[HostWork] = []
        for host in targets:
            values = per_host[host.name]
            commands = _expand(step.commands, host, values)
            if not commands and not step.http_check:
                continue
            work.append(
                HostWork(
                    host=host,
                    commands=commands,
                    uploads=(),
                    verify=_expand(step.verify, host, values),
                    undo=_expand(step.undo, host, values),
                    probe=_probe(scoped, host, values["release"]) if step.http_check else None,
                    timeout=_timeout(scoped, step, host),
                )
            )
        planned.append(PlannedStep(step, number, tuple(work)))
    return Plan(
        kind="ops",
        runbook=runbook,
        environment=scoped,
        release_id=runbook.name,
        steps=tuple(planned),
        values=per_host,
    )
