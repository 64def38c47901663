"""Definitions x environment x host facts -> a plan: for each step, each host, the exact
commands, uploads, verification, undo and time limit, and each host's script frame.

Nothing here touches the network or a host. A run first plans and runs the ``lock`` step
(its commands do not depend on facts); the probe in it returns each host's facts, and
the run is planned again with them, so the plan names what will happen (which hosts get
wheels, which releases cleanup removes) instead of leaving it to the hosts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from releasebook.inventory import Environment, Host
from releasebook.plan.backups import backup_values
from releasebook.plan.facts import HostFacts
from releasebook.plan.model import (
    CONTROLLER,
    Frame,
    HostWork,
    HttpProbe,
    Plan,
    PlanKind,
    PlannedStep,
    PlannedUpload,
    ReleaseInfo,
    Source,
)
from releasebook.plan.source import tools_hash
from releasebook.plan.values import (
    Ids,
    cleanup_releases,
    controller_values,
    gate_options,
    host_values,
    layout_of,
    lock_values,
)
from releasebook.provision.urls import user_base
from releasebook.quoting import Raw, ShellVar, render_command
from releasebook.runbooks import bookkeeping as book
from releasebook.runbooks.backup import BACKUP_RUNBOOK
from releasebook.runbooks.model import Cmd, Runbook, Step
from releasebook.runbooks.release import RELEASE
from releasebook.runbooks.restore import DRILL_RUNBOOK, RESTORE_RUNBOOK
from releasebook.runbooks.rollback import ROLLBACK

RUNBOOKS: Mapping[PlanKind, Runbook] = {
    "release": RELEASE,
    "rollback": ROLLBACK,
    "backup": BACKUP_RUNBOOK,
    "restore": RESTORE_RUNBOOK,
    "restore_drill": DRILL_RUNBOOK,
}
RECORD_PLACEHOLDER = Raw('"${RECORD}"')  # the run's JSON record, filled in when it ends


@dataclass(frozen=True, kw_only=True)
class Run:
    """What makes a plan concrete: the release, this run's tokens, and each host's facts."""

    release: ReleaseInfo
    lock: book.LockInfo
    marker: str  # the random start of every step marker line
    action: str  # what the journal and the history call this run
    facts: Mapping[str, HostFacts] | None = None  # None: a dry run, nothing was read


def lock_hosts(env: Environment) -> list[str]:
    """Every host of the environment (local hosts share this machine, so one of them),
    in the order every run takes their locks: by address, whatever the inventory's."""
    names: list[str] = []
    local = False
    for host in sorted(env.hosts, key=lambda h: (h.address, h.ssh.port, h.name)):
        if host.transport == "local":
            if local:
                continue
            local = True
        names.append(host.name)
    return names


def build_plan(
    env: Environment,
    kind: PlanKind,
    *,
    source: Source,
    run: Run | None,
    previous: Mapping[str, str] | None = None,
    targets: Mapping[str, str] | None = None,
    gate_skips: Sequence[str] = (),
    steps: Sequence[str] | None = None,
    unapply: Sequence[tuple[str, str]] | None = None,
    backup: str | None = None,
) -> Plan:
    """A plan for a run (``run`` given) or for the runbook (``run`` None).

    ``previous`` maps each host to the release it served before this run. For a
    rollback, ``targets`` maps each host to the release it goes back to; hosts without
    one are taken out of service (``retire``). ``steps`` limits the plan to those steps
    (an automatic rollback runs inside the release's lock and record). ``unapply``: the
    (app, target migration) pairs a rollback with ``--migrate`` migrates back to, as its
    schema step found them. ``backup``: the backup a restore restores (in the runbook,
    the operator's ``"${BACKUP}"``).
    """
    runbook = RUNBOOKS[kind]
    release = run.release if run is not None else None
    facts = run.facts if run is not None else None
    ids = (
        Ids(
            release.release_id,
            "",
            release.git_sha,
            release.requirements_hash,
            run.lock.token,
            f"@@rb-{run.marker}",
            tools_hash(source),
        )
        if release is not None and run is not None
        else Ids.symbolic()
    )
    base = env.root if release is not None else None
    python_abi: object = (
        (source.target.abi if source.target is not None else source.python_abi)
        if release is not None
        else ShellVar("PYTHON_ABI")
    )
    # The tools' archive is built when a host may lack them (without facts, any may).
    tools_build = facts is None or any(
        host.name not in facts or not facts[host.name].tools_ready for host in env.hosts
    )
    controller = controller_values(env, source, ids, release, tools_build=tools_build)
    controller["gate_options"] = Raw(gate_options(env, [*env.gate_skips, *gate_skips]))
    locked = lock_values(
        env, ids.lock_token, run.lock if run is not None else None, concrete=release is not None
    )
    per_host: dict[str, dict[str, object]] = {}
    for host in env.hosts:
        host_ids = ids
        if release is not None:
            host_ids = Ids(
                (targets or {}).get(host.name, ids.release),
                (previous or {}).get(host.name, ""),
                ids.git_sha,
                ids.requirements_hash,
                ids.lock_token,
                ids.marker,
                ids.tools_hash,
            )
        host_facts = facts.get(host.name) if facts is not None else None
        values = {
            **controller,
            **host_values(env, host, host_ids, base=base, python_abi=python_abi, facts=host_facts),
            **locked,
            "record": RECORD_PLACEHOLDER,
            "unapply": _unapply_items(unapply, symbolic=release is None),
            **backup_values(env, layout_of(env, base), backup),
        }
        values["cleanup_releases"] = cleanup_releases(
            env, host_ids, host_facts, layout_of(env, base)
        )
        per_host[host.name] = values
    # Taken out of service: hosts a rollback has no target for (in the runbook, where no
    # host is known to have one, every host is shown the step).
    retired = (
        frozenset(h.name for h in env.hosts if h.name not in targets)
        if kind == "rollback" and targets is not None
        else None
    )
    chosen = [s for s in runbook.steps if steps is None or s.name in steps]
    planned: list[PlannedStep] = []
    for number, step in enumerate(chosen, start=1):
        work: list[HostWork] = []
        if step.where == "controller" and not step.http_check:
            work.append(
                HostWork(
                    host=None,
                    commands=_expand(step.commands, None, controller),
                    uploads=(),
                    verify=_expand(step.verify, None, controller),
                    undo=_expand(step.undo, None, controller),
                    probe=None,
                    timeout=_timeout(env, step, None),
                )
            )
        for host in _targets(step, env, retired):
            values = per_host[host.name]
            work.append(
                HostWork(
                    host=host,
                    commands=_hooks(env, step, values, "before")
                    + _expand(step.commands, host, values)
                    + _hooks(env, step, values, "after"),
                    uploads=_uploads(step, values),
                    verify=_expand(step.verify, host, values),
                    undo=_expand(step.undo, host, values),
                    probe=_probe(env, host, values["release"]) if step.http_check else None,
                    timeout=_timeout(env, step, host),
                )
            )
        planned.append(PlannedStep(step, number, tuple(work)))
    action = run.action if run is not None else kind
    journaled: str | ShellVar = (
        ",".join(sorted(set(targets.values()))) if kind == "rollback" and targets else ids.release
    )
    frames = {
        host.name: _frame(per_host[host.name], action, journaled, ids.marker) for host in env.hosts
    }
    return Plan(
        kind=kind,
        runbook=runbook,
        environment=env,
        release_id=str(journaled),
        steps=tuple(planned),
        frames=frames,
        values=per_host,
    )


def render_step(plan: Plan, step: Step, target: str, **extra: object) -> tuple[str, ...]:
    """``step``'s commands for ``target`` with values known only at run time (the
    history record): the same definition the plan shows, filled in."""
    values = {**plan.values[target], **extra}
    return _expand(step.commands, plan.environment.host(target), values)


def bookkeeping_script(
    env: Environment,
    commands: Sequence[Cmd],
    *,
    token: str = "",
    info: book.LockInfo | None = None,
    **extra: object,
) -> str:
    """A script of bookkeeping commands (the probe, reading, renewing or breaking the
    lock) for any host of ``env``: they depend on its layout, not on a host."""
    values = {**lock_values(env, token, info), **extra}
    return "\n".join(("set -eu", *_expand(commands, None, values))) + "\n"


def runbook_commands(env: Environment, commands: Sequence[Cmd]) -> tuple[str, ...]:
    """Bookkeeping commands as the runbook shows them: the lock's values are the
    operator's shell variables."""
    return _expand(commands, None, lock_values(env, ShellVar("LOCK_TOKEN"), None, concrete=False))


def _frame(
    values: Mapping[str, object], action: str, release: str | ShellVar, marker: str | ShellVar
) -> Frame:
    fence = tuple(render_command(c.template, values) for c in book.FENCE)
    frame_values = {k: values[k] for k in ("state", "steps_lock", "journal", "busy_message")}
    return Frame(values=frame_values, fence=fence, action=action, release=release, marker=marker)


def _unapply_items(
    unapply: Sequence[tuple[str, str]] | None, *, symbolic: bool
) -> list[dict[str, object]]:
    if unapply is not None:
        return [{"app": app, "target": target} for app, target in unapply]
    if symbolic:  # the runbook: one line per app the schema step lists
        return [{"app": ShellVar("APP"), "target": ShellVar("TARGET")}]
    return []


def _timeout(env: Environment, step: Step, host: Host | None) -> float:
    if step.name in env.timeouts:
        return env.timeouts[step.name]
    if step.http_check:
        return env.health.timeout
    if step.name == "restart_workers" and host is not None:
        # Its warm shutdown may take the whole stop timeout, then the new worker boots.
        return max(step.timeout, host.worker.stop_timeout + 300)
    return step.timeout


def _expand(
    cmds: Sequence[Cmd], host: Host | None, values: Mapping[str, object]
) -> tuple[str, ...]:
    out: list[str] = []
    for cmd in cmds:
        if cmd.roles and (host is None or not cmd.roles.intersection(host.roles)):
            continue
        if cmd.when is not None and not values[cmd.when]:
            continue
        if cmd.each is None:
            out.append(render_command(cmd.template, values))
            continue
        items = values[cmd.each]
        assert isinstance(items, list)
        out.extend(render_command(cmd.template, {**values, **item}) for item in items)
    return tuple(out)


def _targets(step: Step, env: Environment, retired: frozenset[str] | None) -> tuple[Host, ...]:
    if step.where == "controller" and not step.http_check:
        return ()
    if step.first_alone or step.name == "unlock":
        order = lock_hosts(env)
        return tuple(env.host(name) for name in order)
    hosts = env.hosts
    if step.name == "retire":
        return hosts if retired is None else tuple(h for h in hosts if h.name in retired)
    if step.phase == "live" and retired is not None:
        hosts = tuple(h for h in hosts if h.name not in retired)
    if step.roles:
        hosts = tuple(h for h in hosts if step.roles.intersection(h.roles))
    return hosts[:1] if step.once else hosts


def _hooks(
    env: Environment, step: Step, values: Mapping[str, object], when: str
) -> tuple[str, ...]:
    # Hooks are the operator's own shell code, run as written inside the release directory.
    if when not in step.hooks:
        return ()
    cd = render_command("cd {release_dir}", values)
    return tuple(f"( {cd} && {hook} )" for hook in env.hooks.get((when, step.name), ()))


def _uploads(step: Step, values: Mapping[str, object]) -> tuple[PlannedUpload, ...]:
    planned: list[PlannedUpload] = []
    known = not isinstance(values["release"], ShellVar) and values.get("facts_known", False)
    for upload in step.uploads:
        if upload.when is not None and not values[upload.when]:
            continue
        if upload.needed is not None and not values[upload.needed]:
            continue
        skip_if = (
            render_command(upload.skip_if, values)
            if upload.skip_if is not None and not known
            else None
        )
        planned.append(
            PlannedUpload(
                local=_suffixed(values[upload.local], upload.suffix),
                remote=_suffixed(values[upload.remote], upload.suffix),
                skip_if=skip_if,
            )
        )
    return tuple(planned)


def _suffixed(value: object, suffix: str) -> Path | ShellVar:
    if isinstance(value, ShellVar):
        return value.with_suffix(suffix)
    assert isinstance(value, Path)
    return Path(f"{value}{suffix}")


def _probe(env: Environment, host: Host, release: object) -> HttpProbe:
    return HttpProbe(
        url=f"http://{host.bind}{env.health.path}",
        host_header=env.health.host_header,
        forwarded_proto=env.health.forwarded_proto,
        expect_release=str(release),
        deadline=env.health.timeout,
        static_base=user_base(env, host) if env.health.check_static else None,
        websocket_url=f"ws://{host.bind}{env.health.websocket_path}"
        if env.health.websocket_path
        else None,
        origin=f"{env.health.forwarded_proto}://{env.health.host_header}"
        if env.health.websocket_path
        else None,
    )


__all__ = ["CONTROLLER", "Run", "bookkeeping_script", "build_plan", "lock_hosts", "render_step"]
