"""The program the restart steps run on a host: one process that tells supervisord what
the whole step needs, over supervisord's XML-RPC socket, with the standard library only.

Each ``supervisorctl`` imports most of supervisor and costs ~0.2 CPU-seconds on a host;
a restart step used seven of them per host. This text is the step's command (it is
sent in a heredoc and shown in the runbook); releasebook never imports it to run it.

    python - --conf C --socket S --supervisord P [--ensure]
             [--web NAME LOG]... [--wait-stopped] [--program NAME LOG]...

``--ensure`` starts supervisord if it is not running and applies its configuration as
``supervisorctl update`` does. The ``--web`` masters share supervisord's socket, and one
of them serves between restarts: the restart boots an idle one from ``current`` beside
it and stops the one that served (TERM: it drains) only once the new one has forked its
first worker (its app is loaded) and is RUNNING. The one that served then finishes its
requests while the step ends; with ``--wait-stopped`` (an ASGI app) the step waits for
its exit and prints the lines its log gained that count closed WebSockets. A restart
that finds the idle master still draining waits for it. A master that does not start
is stopped and the one serving goes on serving. Each ``--program`` is restarted, and must
then reach RUNNING. A process that does not start has the end of its own log printed,
and the exit code is 1.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RUNNING = "RUNNING"
STARTING = "STARTING"
STOPPING = "STOPPING"
# A master in these states holds the socket and accepts (or is about to).
SERVING = frozenset({RUNNING, STARTING})
# supervisord's fault codes (supervisor.xmlrpc.Faults).
NOT_RUNNING = 70
ALREADY_STARTED = 60
CLOSING_MARK = b"releasebook: closing"
FORK_WAIT_S = 120.0
RUNNING_WAIT_S = 60.0
# A master left draining by the restart before: supervisord kills it after stopwaitsecs.
STOPPING_WAIT_S = 600.0
POLL_S = 0.1
LOG_LINES = 15
TAIL_BYTES = 65536


class Failed(Exception):
    """A process did not start or stop; the message says which, and why."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self.path)


def connect(socket_path: str) -> Any:
    """supervisord's ``supervisor`` namespace (its methods are XML-RPC calls)."""
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(socket_path))
    return proxy.supervisor


def _answers(rpc: Any) -> bool:
    try:
        rpc.getPID()
    except (OSError, xmlrpc.client.Fault):
        return False
    return True


def ensure(rpc: Any, supervisord: str, conf: str) -> set[str]:
    """Start supervisord if it does not answer, then add, change and remove the process
    groups its configuration now defines (what ``supervisorctl update`` does). The groups
    it added or changed: their programs have just started, from ``current``."""
    started = not _answers(rpc)
    if started:
        code = subprocess.run([supervisord, "-c", conf], check=False).returncode
        if code != 0:  # it printed why (a port in use, a bad configuration)
            raise Failed(f"supervisord -c {conf} did not start (exit {code}): see its error above")
        deadline = time.monotonic() + 10
        while not _answers(rpc):
            if time.monotonic() > deadline:
                raise Failed(f"supervisord did not answer on its socket 10 s after {conf}")
            time.sleep(POLL_S)
    added, changed, removed = rpc.reloadConfig()[0]
    for group in removed:
        rpc.stopProcessGroup(group)
        _wait_group_stopped(rpc, group)
        rpc.removeProcessGroup(group)
        print(f"{group}: removed process group")
    for group in changed:
        rpc.stopProcessGroup(group)
        _wait_group_stopped(rpc, group)
        rpc.removeProcessGroup(group)
        rpc.addProcessGroup(group)
        print(f"{group}: updated process group")
    for group in added:
        rpc.addProcessGroup(group)
        print(f"{group}: added process group")
    if started:
        return {str(info["group"]) for info in rpc.getAllProcessInfo()}
    return {*added, *changed}


def log_tail(log: Path) -> str:
    """The last lines of ``log``, reading no more than its last 64 KiB."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - TAIL_BYTES))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError as error:
        return f"({log}: {error.strerror})"
    return "\n".join(lines[-LOG_LINES:])


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _has_child(pid: int) -> bool:
    # The kernel's list of the main thread's children (gunicorn forks from it): one read
    # per poll, where scanning every /proc/*/status cost each waiting host milliseconds.
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except FileNotFoundError:
        if not Path(f"/proc/{pid}").exists():
            return False
    except OSError:
        return False
    return _has_child_by_scan(pid)  # a kernel without CONFIG_PROC_CHILDREN


def _has_child_by_scan(pid: int) -> bool:
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("PPid:"):
                if line.split()[1:] == [str(pid)]:
                    return True
                break
    return False


def _stop(rpc: Any, name: str, wait: bool = True) -> None:
    """TERM, and with ``wait`` the exit; without, it drains its requests while the step
    goes on (a later restart that needs it waits for it first)."""
    try:
        rpc.stopProcess(name, wait)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode == NOT_RUNNING:
            return
        raise Failed(f"{name} did not stop: {fault.faultString}") from None
    print(
        f"{name}: stopped"
        if wait
        else f"{name}: stopping (TERM: it finishes its requests, then exits)"
    )


def _wait_stopped(rpc: Any, name: str) -> None:
    """Return once ``name`` is no longer STOPPING."""
    deadline = time.monotonic() + STOPPING_WAIT_S
    while _state(rpc, name) == STOPPING:
        if time.monotonic() > deadline:
            raise Failed(f"{name} is still stopping {STOPPING_WAIT_S:.0f} s later")
        time.sleep(POLL_S)


def _wait_group_stopped(rpc: Any, group: str) -> None:
    for info in rpc.getAllProcessInfo():
        if info["group"] == group:
            _wait_stopped(rpc, f"{group}:{info['name']}")


def _start(rpc: Any, name: str, log: Path) -> int:
    """Start without waiting out ``startsecs``; the pid it runs as."""
    try:
        rpc.startProcess(name, False)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode != ALREADY_STARTED:
            raise Failed(_not_started(name, log, fault.faultString)) from None
    print(f"{name}: started")
    return int(rpc.getProcessInfo(name)["pid"])


def _not_started(name: str, log: Path, why: str) -> str:
    return f"{name} did not start ({why}); the end of its log:\n{log_tail(log)}"


def _log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def closing_lines(log: Path, since: int) -> list[str]:
    """The lines ``log`` gained after byte ``since`` that count closed WebSockets."""
    try:
        with log.open("rb") as handle:
            handle.seek(since)
            gained = handle.read()
    except OSError:
        return []
    return [line.decode("utf-8", "replace") for line in gained.splitlines() if CLOSING_MARK in line]


def _state(rpc: Any, name: str) -> str:
    return str(rpc.getProcessInfo(name)["statename"])


def _wait_serving(rpc: Any, name: str, log: Path, pid: int) -> None:
    """Return once ``name`` (running as ``pid``) has forked its first worker and is
    RUNNING; a master that exits first, or takes too long, fails."""
    deadline = time.monotonic() + FORK_WAIT_S
    while not _has_child(pid):
        if not _alive(pid):
            raise Failed(_not_started(name, log, "it exited before forking a worker"))
        if time.monotonic() > deadline:
            raise Failed(_not_started(name, log, f"no worker {FORK_WAIT_S:.0f} s after start"))
        time.sleep(POLL_S)
    wait_running(rpc, [(name, log)], RUNNING_WAIT_S, quiet=True)


def hand_over_web(
    rpc: Any, masters: Sequence[tuple[str, Path]], fresh: bool, wait_stopped: bool = False
) -> tuple[str, Path]:
    """Serve from one master started from ``current``, stopping the others once it
    serves; the master that serves now. ``fresh``: every master has just started.
    ``wait_stopped``: return only once the others have exited (their logs then hold the
    WebSockets they closed); otherwise they drain while the release goes on."""
    states = {name: _state(rpc, name) for name, _ in masters}
    idle = [master for master in masters if states[master[0]] not in SERVING]
    sizes = {name: _log_size(log) for name, log in masters}
    if fresh:
        new = masters[0]
    elif idle:
        new = idle[0]
        _wait_stopped(rpc, new[0])  # the restart before left it draining
        _stop(rpc, new[0])  # a BACKOFF master is retrying: stop it, then start it once
    else:  # both serve (supervisord started them both): restart one in place
        new = masters[-1]
        _stop(rpc, new[0])
    name, log = new
    try:
        pid = _start(rpc, name, log) if not fresh else int(rpc.getProcessInfo(name)["pid"])
        _wait_serving(rpc, name, log, pid)
    except Failed:
        _stop(rpc, name)  # the master that served goes on serving
        raise
    for old, _ in masters:
        if old != name:
            _stop(rpc, old, wait=wait_stopped)
    for old, old_log in masters:
        for line in closing_lines(old_log, sizes[old]):
            print(line)
    return new


def restart(rpc: Any, name: str, log: Path) -> None:
    _stop(rpc, name)
    _start(rpc, name, log)


def wait_running(
    rpc: Any, processes: Sequence[tuple[str, Path]], wait_s: float, *, quiet: bool = False
) -> None:
    """Each process RUNNING (supervisord's ``startsecs`` passed) within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    for name, log in processes:
        while True:
            info = rpc.getProcessInfo(name)
            if info["statename"] == RUNNING:
                if not quiet:
                    print(f"{name:<33} {RUNNING:<9} {info['description']}")
                break
            if info["statename"] != STARTING or time.monotonic() > deadline:
                raise Failed(_not_started(name, log, f"it is {info['statename']}"))
            time.sleep(POLL_S)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="supervise")
    parser.add_argument("--conf", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--supervisord", required=True)
    parser.add_argument("--ensure", action="store_true")
    parser.add_argument("--web", nargs=2, action="append", default=[], metavar=("NAME", "LOG"))
    parser.add_argument("--program", nargs=2, action="append", default=[], metavar=("NAME", "LOG"))
    parser.add_argument("--wait-stopped", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    rpc = connect(args.socket)
    web = [(name, Path(log)) for name, log in args.web]
    programs = [(name, Path(log)) for name, log in args.program]
    try:
        started: set[str] = set()
        if args.ensure:
            started = ensure(rpc, args.supervisord, args.conf)
        elif not _answers(rpc):
            raise Failed(f"supervisord does not answer on {args.socket}")
        serving: list[tuple[str, Path]] = []
        if web:
            groups = {name.partition(":")[0] for name, _ in web}
            fresh = groups <= started
            serving.append(hand_over_web(rpc, web, fresh, wait_stopped=args.wait_stopped))
        for name, log in programs:
            if name.partition(":")[0] not in started:  # else it has just started
                restart(rpc, name, log)
        wait_running(rpc, [*serving, *programs], RUNNING_WAIT_S)
    except Failed as failure:
        print(failure, file=sys.stderr)
        return 1
    except xmlrpc.client.Fault as fault:
        print(f"supervisord refused: {fault.faultString}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
