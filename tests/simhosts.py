"""Simulated hosts for end-to-end tests: real OpenSSH servers on loopback addresses.

Each simulated host is a real ``sshd`` running in its own mount and UTS namespace::

    unshare --mount --uts --propagation private sh -c \\
        'hostname host1 && mount --bind <root>/srv /srv && mount --rbind <root>/home /root \\
         && exec /usr/sbin/sshd -D -E <root>/sshd.log -f <root>/sshd_config'

so every host has its own hostname, its own ``/srv`` (a directory on the controller, see
``SimHost.srv``) and its own clean ``/root`` (a copy of ``/etc/skel``).  Everything started
over SSH (gunicorn, celery, supervisord, ...) inherits the host's namespaces, which is how
``SimFleet.stop`` finds and stops those processes even after they daemonized away from sshd.

Directories under the controller's ``/root`` that the controller's Python lives in (e.g.
``/root/.pyenv``, where the project venv's interpreter points) stay visible read-only in the
clean ``/root``, so the venv's gunicorn, celery and supervisord also run on the hosts (see
``SimFleet.start(root_shares=...)``).

Hosts share the controller's network namespace, ``/tmp``, ``/run`` and the rest of the
filesystem: services on different hosts must bind to different addresses or ports.

Requires root, ``/usr/sbin/sshd``, ``ssh-keygen`` and ``unshare`` (util-linux).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol, Self

import paramiko

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
UNSHARE = "unshare"
LOCK_DIR = Path("/tmp/releasebook-simhosts")
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_POLL = 0.005
_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Runs inside the new namespaces. Args: name srv home sshd log config [root_share ...]
_NS_SCRIPT = """set -e
hostname "$1"
mount --bind "$2" /srv
home=$3 sshd=$4 log=$5 config=$6
shift 6
for share in "$@"; do
    mount --bind "$share" "$home/${share#/root/}"
    mount -o remount,bind,ro "$home/${share#/root/}"
done
mount --rbind "$home" /root
exec "$sshd" -D -E "$log" -f "$config"
"""


class SimHostError(RuntimeError):
    """A simulated host could not be started or stopped."""


@dataclass(frozen=True)
class SimHost:
    """One simulated host. All paths are controller-side paths."""

    name: str
    address: str
    port: int
    root: Path  # the host's own directory: sshd_config, host key, log, srv/, home/
    srv: Path  # what the host sees as /srv
    home: Path  # what the host sees as /root
    log_path: Path  # sshd log (LogLevel VERBOSE)
    host_key_line: str  # known_hosts line: "[127.0.0.11]:2222 ssh-ed25519 AAAA..."
    user: str = "root"

    @property
    def known_hosts_name(self) -> str:
        """The host's name as written in known_hosts (``[addr]:port`` unless port 22)."""
        return _known_hosts_name(self.address, self.port)

    def session_count(self) -> int:
        """Number of SSH sessions (exec/shell/subsystem channels) sshd started so far."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if "Starting session" in line)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class SimFleetFactory(Protocol):
    """Type of the ``sim_fleet_factory`` fixture."""

    def __call__(self, n: int = 1, *, names: Sequence[str] | None = None) -> SimFleet: ...


@dataclass
class _Running:
    """Controller-side runtime state of one host."""

    proc: subprocess.Popen[bytes]
    lock: IO[str]
    mnt_ns: str = ""  # "mnt:[inode]", recorded once sshd is ready
    ns_fd: int = -1  # keeps that namespace (and so its inode number) alive until stop()


class SimFleet:
    """N simulated hosts. Create with ``SimFleet.start``; stop with ``stop()`` or ``with``."""

    def __init__(
        self, base_dir: Path, hosts: tuple[SimHost, ...], client_key: Path, known_hosts: Path
    ) -> None:
        self.base_dir = base_dir
        self.hosts = hosts
        self.client_key = client_key
        self.known_hosts = known_hosts
        self.ssh_config = base_dir / "ssh_config"
        self.root_shares: tuple[Path, ...] = ()
        self.srv_mounts: tuple[Path, ...] = ()  # tmpfs mounts to unmount at stop
        self._running: dict[str, _Running] = {}
        self._stopped = False

    # ------------------------------------------------------------------ start

    @classmethod
    def start(
        cls,
        n: int,
        base_dir: Path | str,
        *,
        names: Sequence[str] | None = None,
        first_octet: int = 11,
        port: int = 2222,
        ready_timeout: float = READY_TIMEOUT,
        root_shares: Sequence[Path | str] | None = None,
        srv_size: str | None = None,
    ) -> SimFleet:
        """Start ``n`` hosts under ``base_dir`` and wait until every sshd sends its banner.

        Hosts get the first free loopback addresses ``127.0.0.<first_octet>``, ``.+1``, ...
        (free: not locked by another fleet on this machine and ``address:port`` bindable).
        Names default to ``host1..hostN``. ``root_shares``: directories directly under
        ``/root`` to keep visible (read-only) in every host's clean ``/root``; default: those
        the controller's Python interpreter lives in (``default_root_shares()``).
        ``srv_size`` (e.g. ``"512m"``): each host's /srv is a filesystem of its own of
        that size (tmpfs), so it can fill up like a real disk.
        """
        names = [f"host{i}" for i in range(1, n + 1)] if names is None else list(names)
        if n < 1 or len(names) != n:
            raise ValueError(f"need n >= 1 and exactly n names, got n={n}, names={names}")
        for name in names:
            if not _HOSTNAME_RE.match(name):
                raise ValueError(f"not a valid host name: {name!r}")
        if len(set(names)) != n:
            raise ValueError(f"duplicate host names: {names}")
        base = Path(base_dir).resolve()
        if any(c in str(base) for c in '"%\n'):
            raise ValueError(f"base_dir must not contain '\"', '%' or newlines: {base}")
        shares = default_root_shares() if root_shares is None else tuple(map(Path, root_shares))
        for share in shares:
            if share.parent != Path("/root") or not share.is_dir():
                raise ValueError(f"root_shares must be directories directly under /root: {share}")
        _check_prerequisites()
        base.mkdir(parents=True, exist_ok=True)
        for d in (Path("/run/sshd"), Path("/srv")):
            d.mkdir(parents=True, exist_ok=True)

        leases = _allocate_addresses(n, first_octet, port)
        try:
            fleet = cls._launch(base, names, leases, port, ready_timeout, shares, srv_size)
        except BaseException:
            for _, lock in leases:
                _release_lock(lock)
            raise
        return fleet

    @classmethod
    def _launch(
        cls,
        base: Path,
        names: list[str],
        leases: list[tuple[str, IO[str]]],
        port: int,
        ready_timeout: float,
        shares: tuple[Path, ...],
        srv_size: str | None,
    ) -> SimFleet:
        client_key = base / "client_ed25519"
        roots = [base / name for name in names]
        for root in roots:
            (root / "srv").mkdir(parents=True, exist_ok=True)
            if srv_size is not None:
                _mount_tmpfs(root / "srv", srv_size)
        # All key generation runs concurrently.
        _keygen([client_key, *(root / "ssh_host_ed25519_key" for root in roots)])
        client_pub = (base / "client_ed25519.pub").read_text()

        hosts: list[SimHost] = []
        for name, root, (address, _lock) in zip(names, roots, leases, strict=True):
            host_pub = (root / "ssh_host_ed25519_key.pub").read_text().split()
            host = SimHost(
                name=name,
                address=address,
                port=port,
                root=root,
                srv=root / "srv",
                home=root / "home",
                log_path=root / "sshd.log",
                host_key_line=f"{_known_hosts_name(address, port)} {host_pub[0]} {host_pub[1]}",
            )
            _make_home(host.home, client_pub, shares)
            (root / "sshd_config").write_text(_sshd_config(host))
            hosts.append(host)

        known_hosts = base / "known_hosts"
        known_hosts.write_text("".join(h.host_key_line + "\n" for h in hosts))
        fleet = cls(base, tuple(hosts), client_key, known_hosts)
        fleet.root_shares = shares
        fleet.srv_mounts = tuple(h.srv for h in hosts) if srv_size is not None else ()
        fleet.ssh_config.write_text(fleet._ssh_config_text())
        atexit.register(fleet.stop)
        try:
            for host, (_, lock) in zip(hosts, leases, strict=True):
                fleet._running[host.name] = _Running(proc=_spawn(host, shares), lock=lock)
            fleet._wait_ready(ready_timeout)
        except BaseException:
            try:
                fleet.stop()
            finally:
                for _, lock in leases:  # the locks of hosts never spawned
                    _release_lock(lock)
            raise
        return fleet

    def _wait_ready(self, timeout: float) -> None:
        own_ns = _own_mnt_ns()
        deadline = time.monotonic() + timeout
        pending = list(self.hosts)
        while pending:
            for host in list(pending):
                run = self._running[host.name]
                if run.proc.poll() is not None:
                    raise SimHostError(
                        f"sshd for {host.name} ({host.address}:{host.port}) exited with "
                        f"status {run.proc.returncode} during start-up; log {host.log_path}:\n"
                        f"{host.log_tail()}"
                    )
                # Ours is the listener (not some other sshd) once our log says so.
                listening = f"Server listening on {host.address} port {host.port}."
                if listening in host.log_tail(1000) and _banner_ready(
                    host.address, host.port, deadline
                ):
                    held = _hold_ns(run.proc.pid)
                    if held is None or held[0] == own_ns:
                        if held is not None:
                            os.close(held[1])
                        raise SimHostError(f"sshd for {host.name} is not in its own namespace")
                    ns, run.ns_fd = held
                    run.mnt_ns = ns
                    _write_lock(run.lock, host, run.proc.pid, ns)
                    pending.remove(host)
            if pending and time.monotonic() >= deadline:
                tails = "\n".join(
                    f"--- {h.name} ({h.address}:{h.port}) log {h.log_path}:\n{h.log_tail()}"
                    for h in pending
                )
                raise SimHostError(
                    f"sshd not ready after {timeout:.1f}s on {len(pending)} host(s):\n{tails}"
                )
            if pending:
                time.sleep(_POLL)

    # ------------------------------------------------------------ inspection

    def __getitem__(self, name: str) -> SimHost:
        return self.host(name)

    def host(self, name: str) -> SimHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def _host(self, host: SimHost | str) -> SimHost:
        return self.host(host if isinstance(host, str) else host.name)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def mount_namespace(self, host: SimHost | str) -> str:
        """``mnt:[inode]`` of the host, recorded when its sshd became ready."""
        return self._running[self._host(host).name].mnt_ns

    def sshd_pid(self, host: SimHost | str) -> int:
        return self._running[self._host(host).name].proc.pid

    def processes(self, host: SimHost | str) -> list[int]:
        """PIDs of every live process in the host's mount namespace (sshd included)."""
        ns = self.mount_namespace(host)
        return sorted(_pids_in({ns})) if ns and not self._stopped else []

    # ---------------------------------------------------------------- access

    def connect(
        self, host: SimHost | str, *, known_hosts: Path | None = None, timeout: float = 10.0
    ) -> paramiko.SSHClient:
        """A paramiko client as root, verifying the host key against ``known_hosts``."""
        h = self._host(host)
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts or self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                h.address,
                port=h.port,
                username=h.user,
                key_filename=str(self.client_key),
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except BaseException:
            client.close()
            raise
        return client

    def run(self, host: SimHost | str, command: str, *, timeout: float = 60.0) -> CommandResult:
        """Run ``command`` on the host over a fresh SSH connection."""
        with self.connect(host, timeout=timeout) as client:
            _, stdout, stderr = client.exec_command(command, timeout=timeout)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            status = stdout.channel.recv_exit_status()
        return CommandResult(status, out, err)

    def fabric_connect_kwargs(self, host: SimHost | str) -> dict[str, object]:
        """Keyword arguments for ``fabric.Connection(**kwargs)`` to reach the host."""
        h = self._host(host)
        return {
            "host": h.address,
            "port": h.port,
            "user": h.user,
            "connect_kwargs": {
                "key_filename": str(self.client_key),
                "look_for_keys": False,
                "allow_agent": False,
            },
        }

    def _ssh_config_text(self) -> str:
        blocks = [
            f"Host {h.name}\n"
            f"    HostName {h.address}\n"
            f"    Port {h.port}\n"
            f"    User {h.user}\n"
            f'    IdentityFile "{self.client_key}"\n'
            f"    IdentitiesOnly yes\n"
            f"    IdentityAgent none\n"
            f'    UserKnownHostsFile "{self.known_hosts}"\n'
            f"    GlobalKnownHostsFile /dev/null\n"
            f"    StrictHostKeyChecking yes\n"
            for h in self.hosts
        ]
        return "\n".join(blocks)

    # ---------------------------------------------------------------- faults

    def kill_sshd(self, host: SimHost | str) -> None:
        """SIGKILL the host's sshd, the listener and every connection's process, as a
        crash would. What the sessions started keeps running, as on a real host."""
        h = self._host(host)
        run = self._running[h.name]
        for pid in _pids_in({run.mnt_ns}):
            if _comm(pid).startswith("sshd"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        run.proc.wait(timeout=STOP_TIMEOUT)

    def start_sshd(self, host: SimHost | str, timeout: float = READY_TIMEOUT) -> None:
        """Start the host's sshd again after :meth:`kill_sshd`, in the host's namespaces."""
        h = self._host(host)
        run = self._running[h.name]
        if run.proc.poll() is None:
            raise SimHostError(f"sshd of {h.name} is still running")
        enter = [f"--mount=/proc/{os.getpid()}/fd/{run.ns_fd}"]
        # The host's name lives in its UTS namespace, kept by any process still running.
        enter += [f"--uts=/proc/{pid}/ns/uts" for pid in sorted(_pids_in({run.mnt_ns}))[:1]]
        command = ["nsenter", *enter, str(SSHD), "-D", "-E", str(h.log_path)]
        run.proc = subprocess.Popen(
            [*command, "-f", str(h.root / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(run.ns_fd,),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _banner_ready(h.address, h.port, deadline):
            if time.monotonic() >= deadline or run.proc.poll() is not None:
                raise SimHostError(f"sshd of {h.name} did not come back:\n{h.log_tail()}")
            time.sleep(_POLL)

    # ------------------------------------------------------------- stop/reset

    def reset(self, host: SimHost | str, *, clean_home: bool = True) -> None:
        """Stop every process of the host except sshd itself, and empty its /srv.

        sshd's per-connection processes survive, the commands they run do not. With
        ``clean_home`` the host's /root is restored to a fresh copy of /etc/skel.
        """
        h = self._host(host)
        run = self._running[h.name]
        if self._stopped or not run.mnt_ns:
            raise SimHostError(f"{h.name} is not running")
        listener = run.proc.pid
        left = _terminate({run.mnt_ns}, STOP_TIMEOUT, keep=lambda pid: _is_sshd(pid, listener))
        if left:
            raise SimHostError(f"processes on {h.name} survived SIGKILL: {left}")
        _empty_dir(h.srv)
        if clean_home:
            authorized = (h.home / ".ssh" / "authorized_keys").read_text()
            # Share mount points stay: deleting them would unmount them inside the host.
            _empty_dir(h.home, keep={share.name for share in self.root_shares})
            _make_home(h.home, authorized, self.root_shares)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every process in every host's namespaces (TERM, wait, then KILL).

        Idempotent. Leaves all files in place for inspection.
        """
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        procs = [run.proc for run in self._running.values()]
        namespaces = {run.mnt_ns for run in self._running.values() if run.mnt_ns}
        own = _own_mnt_ns()
        namespaces.discard(own)  # never, ever signal the controller's own namespace

        def reap() -> None:
            for proc in procs:
                proc.poll()

        # sshds whose namespace was never recorded (start-up failed) are stopped directly.
        for run in self._running.values():
            if not run.mnt_ns and run.proc.poll() is None:
                held = _hold_ns(run.proc.pid)
                if held is not None:
                    run.ns_fd = held[1]
                if held is not None and held[0] != own:
                    namespaces.add(held[0])
                else:
                    with contextlib.suppress(ProcessLookupError):
                        run.proc.kill()
        left: list[int] = []
        if namespaces:
            # Sessions and services first, so each sshd listener reaps its own children
            # (no orphaned sshd zombies), then the listeners themselves.
            listeners = {proc.pid for proc in procs}
            first = _terminate(namespaces, timeout, keep=listeners.__contains__, reap=reap)
            _wait_childless(listeners, 0.5)
            left = sorted({*first, *_terminate(namespaces, timeout, reap=reap)})
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
        for run in self._running.values():
            _release_lock(run.lock)
            if run.ns_fd >= 0:
                os.close(run.ns_fd)
                run.ns_fd = -1
        for mount in self.srv_mounts:
            subprocess.run(["umount", "--lazy", str(mount)], capture_output=True, check=False)
        if left:
            raise SimHostError(f"processes survived SIGKILL: {left}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        hosts = ", ".join(f"{h.name}={h.address}:{h.port}" for h in self.hosts)
        return f"<SimFleet {hosts}{' stopped' if self._stopped else ''}>"


# ---------------------------------------------------------------------- helpers


def missing_prerequisites() -> list[str]:
    """Reasons this machine cannot run simulated hosts (empty list: it can)."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("simulated hosts need root (mount namespaces, sshd)")
    if not SSHD.is_file():
        problems.append(f"{SSHD} is missing (install openssh-server)")
    for tool in (SSH_KEYGEN, UNSHARE):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not on PATH")
    if not problems and not _can_unshare():
        problems.append("cannot create mount/UTS namespaces (unshare -m -u failed)")
    return problems


@functools.cache
def _can_unshare() -> bool:
    result = subprocess.run(
        [UNSHARE, "--mount", "--uts", "--propagation", "private", "true"],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def default_root_shares() -> tuple[Path, ...]:
    """Directories directly under /root holding the controller's Python (e.g. /root/.pyenv)."""
    found: set[Path] = set()
    for p in (sys.executable, sys.base_prefix, sys.base_exec_prefix):
        real = Path(p).resolve()
        if real.is_relative_to("/root") and len(real.parts) > 2:
            found.add(Path("/root", real.parts[2]))
    return tuple(sorted(d for d in found if d.is_dir()))


def _check_prerequisites() -> None:
    problems = missing_prerequisites()
    if problems:
        raise SimHostError("; ".join(problems))


@functools.cache
def _sshd_version() -> tuple[int, int]:
    out = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True, check=False)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _sshd_config(host: SimHost) -> str:
    lines = [
        f"ListenAddress {host.address}",
        f"Port {host.port}",
        f'HostKey "{host.root / "ssh_host_ed25519_key"}"',
        f'PidFile "{host.root / "sshd.pid"}"',
        "AuthorizedKeysFile .ssh/authorized_keys",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "LogLevel VERBOSE",
        "MaxStartups 100",
        "MaxSessions 100",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "Subsystem sftp internal-sftp",
    ]
    if _sshd_version() >= (9, 8):
        lines.append("PerSourcePenalties no")
    return "\n".join(lines) + "\n"


def _keygen(keys: Iterable[Path]) -> None:
    procs: list[tuple[Path, subprocess.Popen[bytes]]] = []
    for key in keys:
        for p in (key, key.with_name(key.name + ".pub")):
            p.unlink(missing_ok=True)
        cmd = [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        procs.append((key, proc))
    for key, proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SimHostError(f"ssh-keygen failed for {key}: {out.decode(errors='replace')}")


def _make_home(home: Path, authorized_keys: str, shares: Iterable[Path]) -> None:
    skel = Path("/etc/skel")
    if skel.is_dir():
        shutil.copytree(skel, home, symlinks=True, dirs_exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    auth = ssh_dir / "authorized_keys"
    auth.write_text(authorized_keys)
    auth.chmod(0o600)
    for share in shares:
        (home / share.name).mkdir(exist_ok=True)  # mount point


def _mount_tmpfs(path: Path, size: str) -> None:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SimHostError(f"cannot mount a {size} tmpfs on {path}: {done.stderr.strip()}")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _empty_dir(path: Path, keep: Collection[str] = ()) -> None:
    for child in path.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _spawn(host: SimHost, shares: Iterable[Path]) -> subprocess.Popen[bytes]:
    with host.log_path.open("wb") as log:  # a fresh log per start
        return subprocess.Popen(
            [
                UNSHARE,
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "sh",
                "-c",
                _NS_SCRIPT,
                "simhost",
                host.name,
                str(host.srv),
                str(host.home),
                str(SSHD),
                str(host.log_path),
                str(host.root / "sshd_config"),
                *map(str, shares),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
            start_new_session=True,  # Ctrl-C in a terminal goes to us, not to the sshds
        )


def _banner_ready(address: str, port: int, deadline: float) -> bool:
    """True once ``address:port`` accepts a connection and sends an SSH banner."""
    try:
        with socket.create_connection((address, port), timeout=1.0) as sock:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            data = b""
            while b"\n" not in data and len(data) < 1024:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                data += chunk
            return data.startswith(b"SSH-")
    except OSError:
        return False


# -------------------------------------------------------------- address leases


def _allocate_addresses(n: int, first_octet: int, port: int) -> list[tuple[str, IO[str]]]:
    """Lease ``n`` free loopback addresses, each held by an flock for the fleet's lifetime.

    The flock is released when the fleet stops or its process dies, so concurrent test runs
    on one machine never share an address; leftovers of a crashed run are reaped.
    """
    if not 1 <= first_octet <= 254:
        raise ValueError(f"first_octet must be in 1..254, got {first_octet}")
    LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    leases: list[tuple[str, IO[str]]] = []
    try:
        for octet in range(first_octet, 255):
            if len(leases) == n:
                break
            address = f"127.0.0.{octet}"
            lock = _try_lock(LOCK_DIR / f"{address}_{port}.lock")
            if lock is None:
                continue
            _reap_stale(lock)
            if _bindable(address, port):
                leases.append((address, lock))
            else:
                _release_lock(lock)
    except BaseException:
        for _, lock in leases:
            _release_lock(lock)
        raise
    if len(leases) < n:
        for _, lock in leases:
            _release_lock(lock)
        raise SimHostError(
            f"only {len(leases)} of {n} loopback addresses 127.0.0.{first_octet}..254 "
            f"are free on port {port}"
        )
    return leases


def _try_lock(path: Path) -> IO[str] | None:
    f = path.open("a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.close()
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return f


def _write_lock(lock: IO[str], host: SimHost, sshd_pid: int, mnt_ns: str) -> None:
    record = {"srv": str(host.srv), "sshd_pid": sshd_pid, "mnt_ns": mnt_ns, "owner": os.getpid()}
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps(record))
    lock.flush()


def _release_lock(lock: IO[str]) -> None:
    if lock.closed:
        return
    with contextlib.suppress(OSError):
        lock.seek(0)
        lock.truncate()
    lock.close()


def _reap_stale(lock: IO[str]) -> None:
    """Stop what a crashed previous owner of this lease left running."""
    lock.seek(0)
    try:
        record = json.loads(lock.read() or "{}")
        ns, srv = str(record["mnt_ns"]), str(record["srv"])
    except (ValueError, KeyError, TypeError):
        return
    if ns == _own_mnt_ns():
        return
    # Only a namespace that still has our /srv bind mount is the one we created.
    for pid in _pids_in({ns}):
        held = _hold_ns(pid) if _has_srv_mount(pid, srv) else None
        if held is None:
            continue
        try:
            if held[0] == ns:
                _terminate({ns}, STOP_TIMEOUT)
        finally:
            os.close(held[1])
        break
    lock.seek(0)
    lock.truncate()


def _has_srv_mount(pid: int, srv: str) -> bool:
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == "/srv" and srv.endswith(fields[3]):
                    return True
    except OSError:
        pass
    return False


def _bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as sshd does
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


# ------------------------------------------------------------ process handling


def _own_mnt_ns() -> str:
    return os.readlink("/proc/self/ns/mnt")


def _mnt_ns(pid: int) -> str | None:
    """``mnt:[inode]`` of a live process; None if gone (or a zombie)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _hold_ns(pid: int) -> tuple[str, int] | None:
    """Open the mount namespace of ``pid``: ``("mnt:[inode]", fd)``; None if pid is gone.

    While the fd is open the namespace cannot be freed, so its inode number cannot be reused
    by a namespace someone else creates: comparing ``readlink(/proc/*/ns/mnt)`` stays exact.
    """
    try:
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    return f"mnt:[{os.fstat(fd).st_ino}]", fd


def _pids_in(namespaces: Collection[str]) -> set[int]:
    own = os.getpid()
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid != own and _mnt_ns(pid) in namespaces:
            found.add(pid)
    return found


def _is_sshd(pid: int, listener: int) -> bool:
    if pid == listener:
        return True
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return Path(exe).name.startswith("sshd")


def _children(pid: int) -> set[int]:
    try:
        return {
            int(child)
            for task in os.scandir(f"/proc/{pid}/task")
            for child in Path(task.path, "children").read_text().split()
        }
    except OSError:
        return set()


def _wait_childless(pids: Collection[int], timeout: float) -> None:
    """Poll until none of ``pids`` has children left (zombies included), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while any(_children(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(_POLL)


def _signal(pid: int, sig: signal.Signals, namespaces: Collection[str]) -> None:
    """Signal ``pid`` only if it is still in one of ``namespaces`` (pidfd: no pid-reuse race)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if _mnt_ns(pid) in namespaces:
            signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def _terminate(
    namespaces: Collection[str],
    timeout: float,
    *,
    keep: Callable[[int], bool] | None = None,
    reap: Callable[[], None] | None = None,
) -> list[int]:
    """SIGTERM every process in ``namespaces`` (except ``keep``), poll until gone or
    ``timeout``, then SIGKILL the rest. Returns PIDs that survived even SIGKILL."""
    if _own_mnt_ns() in namespaces:
        raise SimHostError("refusing to signal processes in the controller's own namespace")

    def alive() -> list[int]:
        if reap is not None:
            reap()
        return sorted(p for p in _pids_in(namespaces) if keep is None or not keep(p))

    signalled: set[int] = set()
    deadline = time.monotonic() + timeout
    pids = alive()
    while pids and time.monotonic() < deadline:
        for pid in pids:
            if pid not in signalled:  # includes children forked during shutdown
                _signal(pid, signal.SIGTERM, namespaces)
                signalled.add(pid)
        time.sleep(_POLL)
        pids = alive()
    deadline = time.monotonic() + 2.0
    while pids and time.monotonic() < deadline:
        for pid in pids:
            _signal(pid, signal.SIGKILL, namespaces)
        time.sleep(_POLL)
        pids = alive()
    return pids
