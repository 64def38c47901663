"""The values that fill the definitions' command templates: for the controller, for each
host, for the lock and the script frame. Concrete for a run, symbolic for the runbook
(``ShellVar``: ``"${RELEASE}"`` and friends, set by the operator in their shell).

Every path comes from :class:`~releasebook.runbooks.layout.HostLayout`; every value is
quoted when a template is filled (``releasebook.quoting``), except ``Raw`` fragments that
are assembled here from already-quoted parts.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from releasebook.errors import InventoryError
from releasebook.gate.command import GATE_IN_RELEASE, validate_skips
from releasebook.inventory import Environment, Host
from releasebook.inventory.migrations import acknowledge_args
from releasebook.inventory.secrets import BUILD_OUT, source_args
from releasebook.plan.facts import RELEASE_ID, HostFacts
from releasebook.plan.model import PathLike, ReleaseInfo, Source
from releasebook.plan.target import PROBE_CODE
from releasebook.quoting import Raw, ShellVar, quote
from releasebook.runbooks import bookkeeping as book
from releasebook.runbooks import layout as paths
from releasebook.runbooks.layout import HostLayout, keyed
from releasebook.runbooks.processes import (
    SUPERVISE_TEXT,
    WEB_PROCESSES,
    launcher_text,
    main_conf_text,
    programs_text,
)
from releasebook.shipped import TOOLS_REQUIREMENTS, django_requirement

HEREDOC_END = "RELEASEBOOK_EOF"
# Wheels built on a host for requirements that have none for the hosts' platform.
HOST_WHEELS = Path("releasebook") / "wheels"
Id = str | ShellVar
TOOLS_HASH = ShellVar("TOOLS_HASH")  # the runbook's: the preamble computes it


@dataclass(frozen=True)
class Ids:
    """What names this run's files: concrete, or shell variables for the runbook."""

    release: Id
    previous: Id
    git_sha: Id
    requirements_hash: Id
    lock_token: Id
    marker: Id
    tools_hash: Id = TOOLS_HASH  # keys the tools' wheelhouse (supervisor, uv)

    @classmethod
    def symbolic(cls) -> Ids:
        return cls(
            ShellVar("RELEASE"),
            ShellVar("PREVIOUS"),
            ShellVar("GIT_SHA"),
            ShellVar("REQ_HASH"),
            ShellVar("LOCK_TOKEN"),
            ShellVar("MARK", prefix="@@rb-"),
            TOOLS_HASH,
        )

    @property
    def concrete(self) -> bool:
        return isinstance(self.release, str)


def _name(key: Id, suffix: str = "", prefix: str = "") -> Id:
    if isinstance(key, ShellVar):
        return ShellVar(key.name, suffix, prefix=prefix)
    return f"{prefix}{key}{suffix}"


def _plus(value: PathLike, suffix: str) -> PathLike:
    if isinstance(value, ShellVar):
        return value.with_suffix(suffix)
    return Path(f"{value}{suffix}")


def deploy_dir(env: Environment, base: Path | None = None) -> Path:
    """The deploy path; a relative one (local transport) is under the project root, or,
    in the runbook (``base`` None), shown relative to it."""
    if env.deploy_path.is_absolute() or base is None:
        return env.deploy_path
    return base / env.deploy_path


def layout_of(env: Environment, base: Path | None = None) -> HostLayout:
    return HostLayout(deploy_dir(env, base))


# --- the controller -----------------------------------------------------------------


def controller_values(
    env: Environment,
    source: Source,
    ids: Ids,
    release: ReleaseInfo | None,
    *,
    tools_build: bool = True,
) -> dict[str, object]:
    """Build-side values. Without ``release`` (the runbook), paths are relative to the
    repository and run-specific values are shell variables. ``tools_build``: a host may
    lack the tools, so their archive is built (the facts say whether one does)."""
    concrete = release is not None
    root = env.root if concrete else Path()
    build_root = root / ".releasebook" / "build"
    out = root / BUILD_OUT
    cache = source.cache if concrete else Path(".releasebook/cache")
    tree: Id = (
        f"{ids.git_sha}:{source.subdir}"
        if isinstance(ids.git_sha, str)
        else ShellVar(ids.git_sha.name, f":{source.subdir}")
    )
    wheelhouse = keyed(cache / "wheels", ids.requirements_hash)
    artifact = keyed(out, ids.release, ".tar.gz")
    wheels = keyed(out, ids.requirements_hash, ".tar", "wheels-")
    tools_wheelhouse = keyed(cache / "tools", ids.tools_hash)
    tools = keyed(out, ids.tools_hash, ".tar", "tools-")
    secrets = env.env_file.secrets
    return {
        "repo": source.repo if concrete else _relative(source.repo, env.root),
        "git_tree": tree,
        "build_app": keyed(build_root, ids.release),
        "build_out": out,
        "manifest_json": json.dumps(release.manifest(), sort_keys=True)
        if release is not None
        else _symbolic_json(
            {
                "created_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
                "created_by": "$(whoami)",
                "git_sha": "${GIT_SHA}",
                "release_id": "${RELEASE}",
                "requirements_hash": "${REQ_HASH}",
            }
        ),
        "wheelhouse": wheelhouse,
        "wheelhouse_tmp": _plus(wheelhouse, ".tmp"),
        "controller_python": source.python if concrete else ".venv/bin/python",
        "django_requirement": django_requirement(),
        "markers_version": (source.hosts_version or source.python_version)
        if concrete
        else ShellVar("PYTHON_VERSION"),
        "native_build": source.target is None,
        "cross_build": source.target is not None,
        "target_args": Raw(" ".join(quote(a) for a in source.target.pip_args()))
        if source.target is not None
        else Raw(""),
        "host_wheels": root / HOST_WHEELS,
        "no_wheel_message": _no_wheel_message(source),
        "requirements": env.app.requirements,
        "tools_requirement": Raw(" ".join(quote(r) for r in TOOLS_REQUIREMENTS)),
        "artifact_local": artifact,
        "artifact_local_tmp": _plus(artifact, ".tmp"),
        "artifact_name": _name(ids.release, ".tar.gz"),
        "wheels_local": wheels,
        "wheels_local_tmp": _plus(wheels, ".tmp"),
        "wheels_name": _name(ids.requirements_hash, ".tar", "wheels-"),
        "tools_wheelhouse": tools_wheelhouse,
        "tools_wheelhouse_tmp": _plus(tools_wheelhouse, ".tmp"),
        "tools_local": tools,
        "tools_local_tmp": _plus(tools, ".tmp"),
        "tools_name": _name(ids.tools_hash, ".tar", "tools-"),
        "tools_build": tools_build,
        "native_tools_build": tools_build and source.target is None,
        "cross_tools_build": tools_build and source.target is not None,
        "secrets_local": keyed(out, ids.release, ".secrets"),
        "secret_delivery": bool(secrets),
        "secret_sources": Raw(" ".join(quote(arg) for arg in source_args(secrets))),
    }


def _no_wheel_message(source: Source) -> str:
    if source.target is None:
        return ""
    return (
        f"a requirement above has no wheel for the hosts' Python ({source.target.describe()}):"
        " build it on a host (python3 -m pip wheel --no-deps NAME==VERSION) and put the "
        f"wheel in {HOST_WHEELS}/, or pin a version that has one"
    )


def _relative(path: Path, root: Path) -> Path:
    """``path`` as the runbook shows it: from the project root, where it is followed."""
    return Path(os.path.relpath(path, root))


def _symbolic_json(fields: Mapping[str, str], numbers: Mapping[str, str] | None = None) -> Raw:
    """A JSON object whose values the operator's shell expands: one double-quoted word.
    ``numbers`` are written without JSON quotes."""
    items = {k: f'\\"{v}\\"' for k, v in fields.items()} | dict(numbers or {})
    inner = ", ".join(f'\\"{k}\\": {v}' for k, v in sorted(items.items()))
    return Raw('"{' + inner + '}"')


# --- one host --------------------------------------------------------------------------


def _linked(shared: PathLike, release_dir: PathLike, relative: str) -> dict[str, object]:
    """One linked path: its place under shared/, its link in the release, the link's
    parent directory."""
    link = _plus(release_dir, f"/{relative}")
    parent = relative.rpartition("/")[0]
    return {
        "shared_path": _plus(shared, f"/{relative}"),
        "shared_parent": _plus(shared, f"/{parent}") if parent else shared,
        "link": link,
        # a link in a subdirectory needs that directory in the release
        "link_mkdir": Raw(
            f"mkdir -p {quote(_plus(release_dir, '/' + parent))} && " if parent else ""
        ),
        "missing": f"deploy.linked_files: shared/{relative} is missing on this host; put it "
        "there (it outlives releases)",
    }


def host_values(
    env: Environment,
    host: Host,
    ids: Ids,
    *,
    base: Path | None,
    python_abi: object,
    facts: HostFacts | None = None,
) -> dict[str, object]:
    """A host's values. ``facts`` (a run) decide what the host needs; without them (the
    runbook, a dry run) the commands decide on the host, or are shown as a choice."""
    layout = layout_of(env, base)
    release_dir = layout.release(ids.release)
    venv = layout.venv(ids.requirements_hash)
    # The release live now (a rollback's schema steps run from it): from the facts.
    live: Id = facts.current if facts is not None and facts.current else ShellVar("LIVE")
    tools = layout.tools
    celery_programs = tuple(p for p in ("worker", "beat") if p in host.roles)
    supervisorctl = Raw(f"{quote(layout.tool('supervisorctl'))} -c {quote(layout.supervisor_conf)}")
    env_values = {**env.env_file.values, **host.env_values}  # the host's layers win
    inventory_names = [*env_values, *env.env_file.secrets]
    values: dict[str, object] = {
        "environment": env.name,
        "deploy": layout.deploy,
        "releases": layout.releases,
        "venvs": layout.venvs,
        "current": layout.current,
        "shared": layout.shared,
        "media": layout.media,
        "logs": layout.logs,
        "maintenance_flag": layout.maintenance_flag,
        "env_file": layout.env_file,
        "state": layout.state,
        "artifacts": layout.artifacts,
        "history": layout.history,
        "journal": layout.journal,
        "socket": layout.supervisor_socket,
        "pidfile": layout.supervisor_pid,
        "supervisor_conf": layout.supervisor_conf,
        "tools": tools,
        "supervisord": layout.tool("supervisord"),
        "uv": layout.tool("uv"),
        "supervisorctl": supervisorctl,
        "beat_schedule": layout.beat_schedule,
        "release": ids.release,
        "previous": ids.previous,
        "release_dir": release_dir,
        "release_state": layout.in_release(ids.release, paths.RELEASE_STATE),
        "release_env": layout.in_release(ids.release, paths.RELEASE_ENV),
        "release_env_tmp": layout.in_release(ids.release, paths.RELEASE_ENV + ".tmp"),
        "launcher": layout.in_release(ids.release, paths.LAUNCHER),
        "programs": layout.in_release(ids.release, paths.PROGRAMS),
        "current_launcher": layout.current / paths.LAUNCHER,
        "live_dir": layout.release(live),
        "live_launcher": layout.in_release(live, paths.LAUNCHER),
        "current_link": layout.current_link(ids.release),
        "artifact": layout.artifact(ids.release),
        "wheels": layout.wheels(ids.requirements_hash),
        "wheel_dir": layout.wheel_dir(ids.requirements_hash),
        "tools_archive": layout.tools_archive(ids.tools_hash),
        "tools_dir": layout.tools_wheel_dir(ids.tools_hash),
        "secrets_dir": layout.secrets_dir,
        "secrets_upload": layout.secrets_upload(ids.release),
        "venv": venv,
        "python": env.app.python,
        "python_abi": python_abi,
        "settings_module": env.app.settings_module,
        "wsgi": env.app.server_app,
        "asgi": bool(env.app.asgi),
        "app_option": Raw(app_option(env)),
        "celery_app": env.app.celery_app or "",
        "bind": host.bind,
        "web_workers": host.web.workers,
        "web_timeout": host.web.timeout,
        "web_preload": host.web.preload,
        "web_graceful_timeout": host.web.drain,
        "worker_concurrency": host.worker.concurrency,
        "worker_stop_timeout": host.worker.stop_timeout,
        "min_free_mb": env.min_free_mb,
        "min_free_kb": env.min_free_mb * 1024,
        "release_id_pattern": RELEASE_ID.pattern,
        "venv_ready": Raw(f"test -f {quote(_plus(venv, '/.complete'))}"),
        "tools_ready": Raw(
            f"{{ test -x {quote(layout.tool('supervisord'))} && "
            f"test -x {quote(layout.tool('uv'))}; }}"
        ),
        "facts_known": facts is not None,
        "wheels_needed": facts is None or not facts.venv_ready(str(ids.requirements_hash)),
        "tools_needed": facts is None or not facts.tools_ready,
        "django": Raw(
            f"cd {quote(release_dir)} && "
            f"{quote(layout.in_release(ids.release, paths.LAUNCHER))} "
            f"{quote(_plus(release_dir, '/venv/bin/python'))} manage.py"
        ),
        "inventory_names": bool(inventory_names),
        "no_inventory_names": not inventory_names,
        "inventory_names_pattern": "^(" + "|".join(inventory_names) + ")=",
        "env_values": [
            {"line": f"{name}={shlex.quote(value.replace('{deploy}', str(layout.deploy)))}"}
            for name, value in env_values.items()
        ],
        "env_generate": [{"pattern": f"^{n}=", "name": n} for n in env.env_file.generate],
        "linked_dirs": [_linked(layout.shared, release_dir, d) for d in env.linked_dirs],
        "linked_files": [_linked(layout.shared, release_dir, f) for f in env.linked_files],
        # The restart steps' supervisord client (runbooks/supervise.py) and what it
        # restarts: each program with its own log (supervisord's stdout_logfile).
        "supervise": Raw(
            f"{quote(layout.tool('python'))} - --conf {quote(layout.supervisor_conf)} "
            f"--socket {quote(layout.supervisor_socket)} "
            f"--supervisord {quote(layout.tool('supervisord'))}"
        ),
        "supervise_text": heredoc_body(SUPERVISE_TEXT),
        # An ASGI app's old master is waited for: its log then counts the WebSockets
        # it closed. A WSGI one finishes its requests while the release goes on.
        "web_args": Raw(
            _program_args("--web", WEB_PROCESSES, layout)
            + (" --wait-stopped" if env.app.asgi else "")
        ),
        "celery_args": _program_args("--program", celery_programs, layout),
        # Names the inventory sets arrive with the release; preflight checks the others.
        "env_required": [
            {"pattern": f"^{n}=.", "name": n}
            for n in env.env_file.required
            if n not in env.env_file.secrets
            and n not in env_values
            and n not in env.env_file.generate
        ],
        "secret_delivery": bool(env.env_file.secrets),
    }
    values["launcher_text"] = heredoc_body(launcher_text(values).rstrip("\n"))
    values["programs_text"] = heredoc_body(programs_text(values, host.roles))
    main = {**values, "programs": layout.current / paths.PROGRAMS}
    values["main_conf_text"] = heredoc_body(main_conf_text(main))
    return values


def cleanup_releases(
    env: Environment, ids: Ids, facts: HostFacts | None, layout: HostLayout
) -> Raw:
    """What cleanup removes: decided from facts in a run; in the runbook, the shell
    expression that finds the same (all but the newest ``keep_releases``, never the new,
    the previous or the live one)."""
    if facts is not None and isinstance(ids.release, str):
        protect = [r for r in (ids.release, ids.previous, facts.current) if r]
        removed = facts.cleanup(ids.release, env.keep_releases, [str(p) for p in protect])
        return Raw(" ".join(quote(r) for r in removed))
    return Raw(
        f"$(ls -1 {quote(layout.releases)} | grep -E {quote(RELEASE_ID.pattern)} | sort -r "
        f"| tail -n +{env.keep_releases + 1} "
        f"| grep -vx -e {quote(ids.release)} -e {quote(ids.previous)} "
        f'-e "$(basename "$(readlink {quote(layout.current)})")")'
    )


def _program_args(option: str, names: tuple[str, ...], layout: HostLayout) -> Raw:
    # web:web_0 logs to web_0.log, worker to worker.log.
    return Raw(
        " ".join(
            f"{option} {quote(name)} "
            + quote(layout.logs / f"{name.partition(':')[2] or name}.log")
            for name in names
        )
    )


def heredoc_body(text: str) -> Raw:
    """File contents written with ``<<'RELEASEBOOK_EOF'``: taken literally unless a line
    ends the heredoc early, which inventory validation should already make impossible."""
    if HEREDOC_END in (line.strip() for line in text.splitlines()):
        raise InventoryError(f"a value would end the {HEREDOC_END} heredoc; refusing to plan")
    return Raw(text)


# --- the lock and the frame -------------------------------------------------------------


def lock_values(
    env: Environment, token: Id, info: book.LockInfo | None, *, concrete: bool = True
) -> dict[str, object]:
    """The values of the bookkeeping commands (lock, probe, history, frame): concrete
    paths, or, in the runbook (``concrete`` False), paths as the runbook shows them and
    the lock's info as the operator's shell fills it in."""
    layout = layout_of(env, env.root if concrete else None)
    info_json: object
    if info is not None:
        info_json = info.to_json()
    else:
        info_json = _symbolic_json(
            {
                "command": "${COMMAND}",
                "controller": "$(hostname)",
                "release": "${RELEASE}",
                "started": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
                "token": "${LOCK_TOKEN}",
                "user": "$(whoami)",
            },
            {"lease_until": "$(($(date +%s) + 300))", "pid": "$$"},
        )
    return {
        "python": env.app.python,
        "python_probe": PROBE_CODE,
        "deploy": layout.deploy,
        "state": layout.state,
        "history": layout.history,
        "journal": layout.journal,
        "supervisord": layout.tool("supervisord"),
        "uv": layout.tool("uv"),
        "lock_dir": layout.lock_dir,
        "lock_info": layout.lock_info,
        "lock_gone": _plus(layout.lock_dir, ".gone"),
        "lock_info_tmp": _name(token, prefix=f"{layout.lock_info}."),
        "lock_token_mark": book.token_mark(token)
        if isinstance(token, str)
        else ShellVar(token.name, '"', prefix='"token": "'),
        "lock_info_json": info_json,
        "lock_lost_message": book.LOCK_LOST_MESSAGE,
        "steps_lock": layout.steps_lock,
        "busy_message": book.BUSY_MESSAGE,
    }


# --- the gate's command line ------------------------------------------------------------


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


def app_option(env: Environment, *, quoted: bool = True) -> str:
    """The gate's ``--wsgi MODULE:CALLABLE`` or ``--asgi MODULE:CALLABLE``."""
    flag = "--asgi" if env.app.asgi else "--wsgi"
    value = env.app.server_app
    return f"{flag} {quote(value) if quoted else value}"


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
        *app_option(env, quoted=False).split(" "),
        "--min-free-mb",
        str(env.min_free_mb),
        "--deploy-path",
        str(deploy_path),
    ]
    for name in env.env_file.required:
        argv += ["--require", name]
    for check_id in validate_skips(skip):
        argv += ["--skip", check_id]
    argv += acknowledge_args(env.migrations)
    return tuple(argv)
