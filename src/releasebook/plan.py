"""Steps x environment -> a plan: for each step, each host, the exact commands.

The runner runs exactly these commands, ``--dry-run`` prints them and the renderer
documents them. A plan is built either for a real run (concrete release id, git sha)
or symbolically for the runbook, where run-specific values are shell variables the
operator sets (``"${RELEASE}"``) and controller paths are relative to the repository.
Nothing here touches the network or a host.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from releasebook.envsecrets import BUILD_OUT, source_args
from releasebook.errors import InventoryError
from releasebook.gate.command import GATE_IN_RELEASE, GATE_SOURCE, validate_skips
from releasebook.inventory import Environment, Host
from releasebook.inventory.migrations import acknowledge_args
from releasebook.quoting import Raw, ShellVar, quote, render_command
from releasebook.runbooks.model import Cmd, Step
from releasebook.runbooks.release import RELEASE_STEPS, ROLLBACK_STEPS
from releasebook.state import RELEASE_ID
from releasebook.supervisor import WEB_PROCESSES, launcher_text, supervisor_conf_text

# Installed on each host in <deploy>/.releasebook/tools from the wheelhouse: the process
# manager, and uv, which builds the app's virtualenvs offline at a fraction of pip's CPU.
TOOLS_REQUIREMENTS = ("supervisor==4.3.0", "uv==0.13.9")
PlanKind = Literal["release", "rollback"]
PathLike = Path | ShellVar
Id = str | ShellVar


@dataclass(frozen=True, kw_only=True)
class ReleaseInfo:
    """What identifies one release; written to its ``release.json`` manifest."""

    release_id: str
    git_sha: str
    requirements_hash: str
    created_by: str
    created_at: str

    def manifest(self) -> dict[str, str]:
        return {
            "release_id": self.release_id,
            "git_sha": self.git_sha,
            "requirements_hash": self.requirements_hash,
            "created_by": self.created_by,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where the app's code comes from on the controller."""

    repo: Path  # git top level
    subdir: str  # the app's directory inside the repo
    cache: Path  # wheelhouse cache, shared by every build with the same requirements
    python: str  # the controller's interpreter, used to build wheels
    python_version: str  # its full version: hosts must match it (environment markers)
    tool_source: Path  # releasebook's own source tree; its wheel joins the wheelhouse


@dataclass(frozen=True)
class PlannedUpload:
    local: PathLike
    remote: PathLike
    skip_if: str | None


@dataclass(frozen=True)
class HttpProbe:
    url: str
    host_header: str
    forwarded_proto: str
    expect_release: str
    deadline: float


@dataclass(frozen=True)
class HostWork:
    host: Host | None  # None: the controller
    commands: tuple[str, ...]
    uploads: tuple[PlannedUpload, ...]
    verify: tuple[str, ...]
    undo: tuple[str, ...]
    probe: HttpProbe | None

    @property
    def target(self) -> str:
        return self.host.name if self.host else "controller"


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    number: int
    work: tuple[HostWork, ...]


@dataclass(frozen=True)
class Plan:
    kind: PlanKind
    environment: Environment
    release_id: str
    steps: tuple[PlannedStep, ...]

    def step(self, name: str) -> PlannedStep:
        for planned in self.steps:
            if planned.step.name == name:
                return planned
        raise KeyError(name)


# --- variables -----------------------------------------------------------------


def _keyed(base: Path, key: Id, suffix: str = "", prefix: str = "") -> PathLike:
    """``<base>/<prefix><key><suffix>``, where key may be a shell variable."""
    if isinstance(key, ShellVar):
        return ShellVar(key.name, suffix, prefix=f"{base}/{prefix}")
    return base / f"{prefix}{key}{suffix}"


def _name(key: Id, suffix: str = "", prefix: str = "") -> Id:
    if isinstance(key, ShellVar):
        return ShellVar(key.name, suffix, prefix=prefix)
    return f"{prefix}{key}{suffix}"


def _plus(value: PathLike, suffix: str) -> PathLike:
    if isinstance(value, ShellVar):
        return value.with_suffix(suffix)
    return Path(f"{value}{suffix}")


@dataclass(frozen=True)
class _Ids:
    release: Id
    previous: Id
    git_sha: Id
    requirements_hash: Id


def _controller_values(
    env: Environment, source: Source, ids: _Ids, manifest: str | Raw, base: Path | None
) -> dict[str, object]:
    """Build-side values. ``base`` None renders paths relative to the repository."""
    root = base if base is not None else Path()
    build_root = root / ".releasebook" / "build"
    out = root / BUILD_OUT
    cache = source.cache if base is not None else Path(".releasebook/cache")
    tree: Id = (
        f"{ids.git_sha}:{source.subdir}"
        if isinstance(ids.git_sha, str)
        else ShellVar(ids.git_sha.name, f":{source.subdir}")
    )
    return {
        "repo": source.repo if base is not None else Path(),
        "git_tree": tree,
        "build_app": _keyed(build_root, ids.release),
        "build_out": out,
        "manifest_json": manifest,
        "wheelhouse": _keyed(cache / "wheels", ids.requirements_hash),
        "controller_python": source.python if base is not None else ".venv/bin/python",
        "tool_source": source.tool_source if base is not None else _relative_tool(source),
        "gate_source": (
            GATE_SOURCE
            if base is not None
            else _relative_tool(source) / "src/releasebook/gate/gate.py"
        ),
        "python_version": source.python_version if base is not None else ShellVar("PYTHON_VERSION"),
        "requirements": env.app.requirements,
        "tools_requirement": Raw(" ".join(quote(r) for r in TOOLS_REQUIREMENTS)),
        "artifact_local": _keyed(out, ids.release, ".tar.gz"),
        "artifact_name": _name(ids.release, ".tar.gz"),
        "wheels_local": _keyed(out, ids.requirements_hash, ".tar", "wheels-"),
        "wheels_name": _name(ids.requirements_hash, ".tar", "wheels-"),
        "secrets_local": _keyed(out, ids.release, ".secrets"),
        "secret_delivery": _secret_delivery(env),
    }


def _secret_delivery(env: Environment) -> list[dict[str, object]]:
    """One item when the inventory declares secrets, so the commands that carry them
    (``each="secret_delivery"``) appear once, or not at all."""
    secrets = env.env_file.secrets
    if not secrets:
        return []
    return [
        {
            "secret_sources": Raw(" ".join(quote(arg) for arg in source_args(secrets))),
            "secret_names_pattern": "^(" + "|".join(secrets) + ")=",
        }
    ]


def _relative_tool(source: Source) -> Path | ShellVar:
    """releasebook's source as the runbook shows it: relative when it is this checkout."""
    try:
        return source.tool_source.relative_to(source.repo)
    except ValueError:
        return ShellVar("RELEASEBOOK_SOURCE")


def _host_values(env: Environment, host: Host, ids: _Ids, base: Path | None) -> dict[str, object]:
    deploy = env.deploy_path
    if not deploy.is_absolute():
        deploy = (base if base is not None else Path()) / deploy
    state = deploy / ".releasebook"
    artifacts = state / "artifacts"
    tools = state / "tools"
    release_dir = _keyed(deploy / "releases", ids.release)
    venv = _keyed(deploy / "venvs", ids.requirements_hash)
    values: dict[str, object] = {
        "environment": env.name,
        "deploy": deploy,
        "releases": deploy / "releases",
        "venvs": deploy / "venvs",
        "current": deploy / "current",
        "shared": deploy / "shared",
        "media": deploy / "shared" / "media",
        "logs": deploy / "shared" / "log",
        "env_file": deploy / "shared" / ".env",
        "state": state,
        "artifacts": artifacts,
        "socket": state / "supervisor.sock",
        "supervisor_conf": state / "supervisord.conf",
        "with_env": state / "with-env",
        "tools": tools,
        "supervisord": tools / "bin" / "supervisord",
        "uv": tools / "bin" / "uv",
        "supervisorctl": Raw(
            f"{quote(tools / 'bin' / 'supervisorctl')} -c {quote(state / 'supervisord.conf')}"
        ),
        "release": ids.release,
        "previous": ids.previous,
        "release_dir": release_dir,
        "artifact": _keyed(artifacts, ids.release, ".tar.gz"),
        "wheels": _keyed(artifacts, ids.requirements_hash, ".tar", "wheels-"),
        "wheel_dir": _keyed(state / "wheels", ids.requirements_hash),
        "secrets_dir": state / "secrets",
        "secrets_upload": _keyed(state / "secrets", ids.release, ".env"),
        "venv": venv,
        "python": env.app.python,
        "settings_module": env.app.settings_module,
        "wsgi": env.app.wsgi,
        "celery_app": env.app.celery_app or "",
        "bind": host.bind,
        "web_workers": host.web.workers,
        "web_timeout": host.web.timeout,
        "worker_concurrency": host.worker.concurrency,
        "worker_stop_timeout": host.worker.stop_timeout,
        "min_free_mb": env.min_free_mb,
        "min_free_kb": env.min_free_mb * 1024,
        "keep_from": env.keep_releases + 1,
        "release_id_pattern": RELEASE_ID.pattern,
        "venv_ready": Raw(
            f"{{ test -f {quote(_plus(venv, '/.complete'))} && "
            f"test -x {quote(tools / 'bin' / 'supervisord')} && "
            f"test -x {quote(tools / 'bin' / 'uv')}; }}"
        ),
        "django": Raw(
            f"cd {quote(release_dir)} && {quote(state / 'with-env')} "
            f"{quote(_plus(release_dir, '/venv/bin/python'))} manage.py"
        ),
        "env_values": [
            {
                "pattern": f"^{name}=",
                "line": f"{name}={shlex.quote(value.replace('{deploy}', str(deploy)))}",
            }
            for name, value in env.env_file.values.items()
        ],
        "env_generate": [{"pattern": f"^{n}=", "name": n} for n in env.env_file.generate],
        "web_processes": [{"process": name} for name in WEB_PROCESSES],
        # The inventory's secrets are checked on the controller and arrive after preflight.
        "env_required": [
            {"pattern": f"^{n}=.", "name": n}
            for n in env.env_file.required
            if n not in env.env_file.secrets
        ],
    }
    values["with_env_text"] = _heredoc_body(launcher_text(values).rstrip("\n"))
    values["supervisor_conf_text"] = _heredoc_body(supervisor_conf_text(values, host.roles))
    return values


HEREDOC_END = "RELEASEBOOK_EOF"


def _heredoc_body(text: str) -> Raw:
    """File contents written with ``<<'RELEASEBOOK_EOF'``: taken literally unless a line
    ends the heredoc early, which inventory validation should already make impossible."""
    if HEREDOC_END in (line.strip() for line in text.splitlines()):
        raise InventoryError(f"a value would end the {HEREDOC_END} heredoc; refusing to plan")
    return Raw(text)


# --- building plans ---------------------------------------------------------------


def _expand(
    cmds: Sequence[Cmd], host: Host | None, values: Mapping[str, object]
) -> tuple[str, ...]:
    out: list[str] = []
    for cmd in cmds:
        if cmd.roles and (host is None or not cmd.roles.intersection(host.roles)):
            continue
        if cmd.each is None:
            out.append(render_command(cmd.template, values))
            continue
        items = values[cmd.each]
        assert isinstance(items, list)
        out.extend(render_command(cmd.template, {**values, **item}) for item in items)
    return tuple(out)


def _targets(step: Step, env: Environment) -> tuple[Host, ...]:
    hosts = env.hosts
    if step.roles:
        hosts = tuple(h for h in hosts if step.roles.intersection(h.roles))
    return hosts[:1] if step.once else hosts


def _hooks(
    env: Environment, step: Step, values: Mapping[str, object], when: str
) -> tuple[str, ...]:
    # Hooks are the operator's own shell code, run as written inside the release directory.
    cd = render_command("cd {release_dir}", values)
    return tuple(f"( {cd} && {hook} )" for hook in env.hooks.get((when, step.name), ()))


def build_plan(
    env: Environment,
    kind: PlanKind,
    *,
    source: Source,
    release: ReleaseInfo | None,
    previous: Mapping[str, str] | None = None,
    per_host_release: Mapping[str, str] | None = None,
    gate_skips: Sequence[str] = (),
    ready_hosts: frozenset[str] | None = None,
) -> Plan:
    """A plan for a real run (``release`` given) or for the runbook (``release`` None).

    For a rollback, ``release`` names the release to go back to. ``previous`` maps each
    host to the release that was live before this run (cleanup never removes it).
    ``ready_hosts``, when the hosts' state is known, names those that already have the
    virtualenv for these requirements: they are sent no wheels, the others are.
    """
    steps = RELEASE_STEPS if kind == "release" else ROLLBACK_STEPS
    base: Path | None
    if release is not None:
        base = env.root
        manifest: str | Raw = json.dumps(release.manifest(), sort_keys=True)
        ids = _Ids(release.release_id, "", release.git_sha, release.requirements_hash)
    else:
        base = None
        manifest = Raw(
            '"{\\"created_at\\": \\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\\", '
            '\\"created_by\\": \\"$(whoami)\\", \\"git_sha\\": \\"${GIT_SHA}\\", '
            '\\"release_id\\": \\"${RELEASE}\\", \\"requirements_hash\\": \\"${REQ_HASH}\\"}"'
        )
        ids = _Ids(
            ShellVar("RELEASE"), ShellVar("PREVIOUS"), ShellVar("GIT_SHA"), ShellVar("REQ_HASH")
        )
    controller = _controller_values(env, source, ids, manifest, base)
    controller["gate_options"] = Raw(gate_options(env, [*env.gate_skips, *gate_skips]))
    planned: list[PlannedStep] = []
    for number, step in enumerate(steps, start=1):
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
                )
            )
        for host in _targets(step, env) if step.where == "hosts" or step.http_check else ():
            host_ids = ids
            if release is not None:
                host_ids = _Ids(
                    (per_host_release or {}).get(host.name, ids.release),
                    (previous or {}).get(host.name, ""),
                    ids.git_sha,
                    ids.requirements_hash,
                )
            values = {**controller, **_host_values(env, host, host_ids, base)}
            work.append(
                HostWork(
                    host=host,
                    commands=_hooks(env, step, values, "before")
                    + _expand(step.commands, host, values)
                    + _hooks(env, step, values, "after"),
                    uploads=tuple(
                        PlannedUpload(
                            local=_plus(_path(values[u.local]), u.suffix),
                            remote=_plus(_path(values[u.remote]), u.suffix),
                            # Decided on the host at run time only when its state is unknown.
                            skip_if=(
                                render_command(u.skip_if, values)
                                if u.skip_if and ready_hosts is None
                                else None
                            ),
                        )
                        for u in step.uploads
                        if not (u.skip_if and ready_hosts is not None and host.name in ready_hosts)
                        and (u.when is None or values[u.when])
                    ),
                    verify=_expand(step.verify, host, values),
                    undo=_expand(step.undo, host, values),
                    probe=_probe(env, host, host_ids.release) if step.http_check else None,
                )
            )
        planned.append(PlannedStep(step, number, tuple(work)))
    return Plan(kind, env, str(ids.release), tuple(planned))


def _path(value: object) -> PathLike:
    assert isinstance(value, Path | ShellVar)
    return value


def _probe(env: Environment, host: Host, release: Id) -> HttpProbe:
    return HttpProbe(
        url=f"http://{host.bind}{env.health.path}",
        host_header=env.health.host_header,
        forwarded_proto=env.health.forwarded_proto,
        expect_release=str(release),
        deadline=env.health.timeout,
    )


# --- the gate's command line ------------------------------------------------------


def gate_options(env: Environment, skip: Iterable[str] = ()) -> str:
    """`` --require NAME ... --skip ID ... --acknowledge APP.MIGRATION=REASON ...``,
    shell-quoted, for a ``Raw`` plan value."""
    words: list[str] = []
    for name in env.env_file.required:
        words += ["--require", quote(name)]
    for check_id in validate_skips(skip):
        words += ["--skip", quote(check_id)]
    words += [quote(word) for word in acknowledge_args(env.migrations)]
    return "".join(f" {word}" for word in words)


def gate_argv(
    env: Environment,
    deploy_path: Path,
    *,
    skip: Iterable[str] = (),
    python: str = "venv/bin/python",
) -> tuple[str, ...]:
    """The same command as an argument vector (unquoted), to run from the release directory."""
    argv = [
        python,
        GATE_IN_RELEASE,
        "--json",
        "--expect-settings",
        env.app.settings_module,
        "--wsgi",
        env.app.wsgi,
        "--min-free-mb",
        str(env.min_free_mb),
        "--deploy-path",
        str(deploy_path),
    ]
    for name in env.env_file.required:
        argv += ["--require", name]
    for check_id in validate_skips(skip):
        argv += ["--skip", check_id]
    return tuple(argv)
