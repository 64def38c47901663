"""What each host's process manager runs: the launcher, the program definitions, and the
host-level supervisord configuration that includes the live release's programs.

Each release carries its own launcher (``.releasebook/with-env``: loads the release's
own env file, exports its settings module) and its own program definitions
(``.releasebook/programs.conf``). The host-level configuration, the same for every
release, only ``[include]``s ``current/.releasebook/programs.conf``: the programs change
when ``current`` does, and a rollback brings the older definitions back with the code.
The definitions name the launcher through ``current`` and run in ``current`` (entered at
each start, so a process runs in its physical release directory for life): their text
stays the same from one release to the next, so ``supervisorctl update`` leaves running
programs alone unless the inventory changed them.

Web restarts drop no request. supervisord owns the listening socket (an ``fcgi-program``)
and hands it to each gunicorn master as fd 0. The group has two masters, and one serves
between restarts: a restart boots the idle one from ``current`` beside it, and the one
that served is stopped (TERM is gunicorn's graceful shutdown: it drains) only once the
new one has forked its workers. supervisord closes the socket only when no process holds
it, so it is never closed during a release, and connections that arrive meanwhile wait
in the kernel's backlog instead of being refused or reset. Both masters autostart with
supervisord (a host's boot); the next restart leaves one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from releasebook.quoting import Raw, quote, render_command

LAUNCHER = """#!/bin/sh
# Written by releasebook for release {release}: run a command with its env file loaded.
set -a
. {release_env}
set +a
export DJANGO_SETTINGS_MODULE={settings_module}
{maintenance_export}exec "$@"
"""

MAIN_CONF = """; Written by releasebook for environment {environment}; changes are overwritten.
; The programs are those of the live release: current/.releasebook/programs.conf.
[unix_http_server]
file={socket}
chmod=0700

[supervisord]
logfile={logs}/supervisord.log
pidfile={pidfile}
directory={deploy}
identifier=releasebook

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{socket}

[include]
files = {programs}
"""

WEB_GROUP = "web"
# An ASGI app runs under gunicorn with uvicorn's worker class, from the uvicorn-worker
# package (uvicorn deprecated its own ``uvicorn.workers`` in 0.30): gunicorn keeps the
# process management and the socket hand-over, each worker runs an asyncio server. On
# TERM a worker stops accepting, closes its WebSockets with 1012 (service restart) and
# finishes its HTTP requests within the graceful timeout. releasebook's subclass (in
# releasebook-django, on every host) also logs how many WebSockets it closes, which the
# restart step reports.
ASGI_WORKER_CLASS = "releasebook.django.asgi_worker.UvicornWorker"
WEB_PROCESSES = ("web:web_0", "web:web_1")
# The restart steps' program (a heredoc of their command, so the runbook shows it).
SUPERVISE_TEXT = Path(__file__).with_name("supervise.py").read_text().rstrip("\n")

# TERM goes to the main process only: it drains its own children (gunicorn workers,
# Celery's pool); signalling the whole group made Celery's warm shutdown hang.
_SETTINGS = """autostart=true
autorestart=true
startsecs=1
stopsignal=TERM
stopwaitsecs={stop_timeout}
stopasgroup=false
killasgroup=true
redirect_stderr=true
"""

_WEB = """
[fcgi-program:web]
socket={socket}
process_name=%(program_name)s_%(process_num)d
numprocs=2
command={command}
directory={current}
{settings}stdout_logfile={logs}/%(program_name)s_%(process_num)d.log
"""

_PROGRAM = """
[program:{name}]
command={command}
directory={current}
{settings}stdout_logfile={logs}/{name}.log
"""

_MAIN_KEYS = ("environment", "socket", "logs", "pidfile", "deploy", "programs")


def _ini(value: object) -> str:
    # supervisord expands %(name)s in its config; a literal % is written %%.
    return str(value).replace("%", "%%")


def launcher_text(values: Mapping[str, object]) -> str:
    """The launcher; it exports the maintenance flag's path (``maintenance_flag``) for the
    releasebook middleware when the values name it."""
    flag = values.get("maintenance_flag")
    export = f"export RELEASEBOOK_MAINTENANCE_FILE={quote(str(flag))}\n" if flag is not None else ""
    return render_command(LAUNCHER, {**values, "maintenance_export": Raw(export)})


def main_conf_text(values: Mapping[str, object]) -> str:
    return MAIN_CONF.format(**{key: _ini(values[key]) for key in _MAIN_KEYS}).rstrip("\n")


def programs_text(values: Mapping[str, object], roles: tuple[str, ...]) -> str:
    """The program definitions for one host. ``values`` are the plan's host variables."""
    # Relative to the working directory, which supervisord enters through `current` and
    # so is the physical release directory: sys.prefix and sys.path then name that
    # release's venv for the life of the process, not whatever `current` points to later.
    python = "venv/bin/python"
    launch = quote(str(values["current_launcher"]))
    programs: list[tuple[str, str, object]] = []
    text = "; Written by releasebook: the programs of this release on this host.\n"
    if "web" in roles:
        # --preload: the app is imported once, in the master, and its workers are forked
        # ready to serve, instead of each importing Django on a CPU the others share.
        preload = "--preload " if values.get("web_preload") is True else ""
        worker_class = f"--worker-class {ASGI_WORKER_CLASS} " if values.get("asgi") else ""
        gunicorn = render_command(
            "-m gunicorn --bind fd://0 "
            + preload
            + "--workers {web_workers} "
            + worker_class
            + "--timeout {web_timeout} "
            "--graceful-timeout {web_graceful_timeout} --no-control-socket {wsgi}",
            values,
        )
        bind = str(values["bind"])
        drain = int(str(values["web_graceful_timeout"]))
        text += _WEB.format(
            settings=_SETTINGS.format(stop_timeout=drain + 10),
            socket=_ini(f"unix://{bind[5:]}" if bind.startswith("unix:") else f"tcp://{bind}"),
            command=_ini(f"{launch} {python} {gunicorn}"),
            current=_ini(values["current"]),
            logs=_ini(values["logs"]),
        )
    celery_app = values.get("celery_app")
    if celery_app and "worker" in roles:
        worker = render_command(
            "-m celery -A {celery_app} worker --loglevel INFO --concurrency {worker_concurrency}",
            values,
        )
        programs.append(("worker", f"{launch} {python} {worker}", values["worker_stop_timeout"]))
    if celery_app and "beat" in roles:
        beat = render_command(
            "-m celery -A {celery_app} beat --loglevel INFO --schedule {beat_schedule}", values
        )
        programs.append(("beat", f"{launch} {python} {beat}", 10))
    for name, command, stop_timeout in programs:
        text += _PROGRAM.format(
            settings=_SETTINGS.format(stop_timeout=stop_timeout),
            name=name,
            command=_ini(command),
            current=_ini(values["current"]),
            logs=_ini(values["logs"]),
        )
    return text.rstrip("\n")
