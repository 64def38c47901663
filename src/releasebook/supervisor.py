"""What each host's process manager runs: supervisord's config and the env launcher.

Programs start from ``<deploy>/current`` through the launcher, which loads the env file
at every start: the new release's code and virtualenv after each switch, and no secret
ever written into the process manager's configuration.

Web restarts drop no request. supervisord owns the listening socket (an ``fcgi-program``)
and hands it to each gunicorn master as fd 0; two masters share it and are restarted one
at a time. supervisord closes the socket only when no process holds it, so it is never
closed during a release: while one master drains (TERM is gunicorn's graceful shutdown)
the other accepts, and connections that arrive while workers boot wait in the kernel's
backlog instead of being refused or reset. Each new master starts from ``current``, so it
runs the new release's code with the new release's virtualenv.
"""

from __future__ import annotations

from collections.abc import Mapping

from releasebook.quoting import quote, render_command

LAUNCHER = """#!/bin/sh
# Written by releasebook: run a command with the deploy's env file loaded.
set -a
. {env_file}
set +a
export DJANGO_SETTINGS_MODULE={settings_module}
exec "$@"
"""

_HEADER = """; Written by releasebook for environment {environment}; changes are overwritten.
[unix_http_server]
file={socket}
chmod=0700

[supervisord]
logfile={logs}/supervisord.log
pidfile={state}/supervisord.pid
directory={deploy}
identifier=releasebook

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{socket}
"""

WEB_PROCESSES = ("web:web_0", "web:web_1")

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

_WEB_GROUP = """
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


def launcher_text(values: Mapping[str, object]) -> str:
    return render_command(LAUNCHER, values)


def supervisor_conf_text(values: Mapping[str, object], roles: tuple[str, ...]) -> str:
    """The supervisord config for one host. ``values`` are the plan's host variables."""

    def ini(value: object) -> str:
        # supervisord expands %(name)s in its config; a literal % is written %%.
        return str(value).replace("%", "%%")

    # Relative to the working directory, which supervisord enters through `current` and
    # so is the physical release directory: sys.prefix and sys.path then name that
    # release's venv for the life of the process, not whatever `current` points to later.
    python = "venv/bin/python"
    launch = quote(str(values["with_env"]))
    programs: list[tuple[str, str, object]] = []
    text = _HEADER.format(**{k: ini(values[k]) for k in _HEADER_KEYS})
    if "web" in roles:
        gunicorn = render_command(
            "-m gunicorn --bind fd://0 --workers {web_workers} --timeout {web_timeout} "
            "--graceful-timeout {web_timeout} --no-control-socket {wsgi}",
            values,
        )
        bind = str(values["bind"])
        text += _WEB_GROUP.format(
            settings=_SETTINGS.format(stop_timeout=int(str(values["web_timeout"])) + 10),
            socket=ini(f"unix://{bind[5:]}" if bind.startswith("unix:") else f"tcp://{bind}"),
            command=ini(f"{launch} {python} {gunicorn}"),
            current=ini(values["current"]),
            logs=ini(values["logs"]),
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
            "-m celery -A {celery_app} beat --loglevel INFO --schedule {state}/celerybeat-schedule",
            values,
        )
        programs.append(("beat", f"{launch} {python} {beat}", 10))
    for name, command, stop_timeout in programs:
        text += _PROGRAM.format(
            settings=_SETTINGS.format(stop_timeout=stop_timeout),
            name=name,
            command=ini(command),
            current=ini(values["current"]),
            logs=ini(values["logs"]),
        )
    return text.rstrip("\n")


_HEADER_KEYS = ("environment", "socket", "logs", "state", "deploy")
