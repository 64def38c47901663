"""Fresh Debian hosts for provisioning tests: each its own Debian 12 root filesystem.

The simulated hosts of ``simhosts.py`` share this machine's root filesystem, which is fine
for releases and wrong for provisioning (``apt-get install`` there would change this
machine). A Debian host here is::

    unshare --mount --uts --pid --fork --kill-child sh -c '
        hostname web1
        mount -t overlay -o lowerdir=<image>,upperdir=<host>/upper,... <host>/root
        mount proc, /dev, a tmpfs /run in it
        exec chroot <host>/root /usr/sbin/sshd -D'

``<image>`` is the root filesystem ``scripts/debian-rootfs`` makes with debootstrap (a
minimal Debian 12 with systemd, OpenSSH and python3, cached under /var/cache/releasebook
and rebuilt when missing); each host writes only to its own ``upper`` directory, so a
host starts fresh and keeps its changes across a simulated reboot. sshd is the host's
PID 1: killing it stops every process of the host, as a power cut would.

Hosts share this machine's network: each listens on its own loopback address from
127.0.0.100 (port 2222 for SSH), clear of simhosts' 127.0.0.11 and up.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE = Path(
    os.environ.get("RELEASEBOOK_DEBIAN_ROOTFS", "/var/cache/releasebook/debian-bookworm-2")
)
PORT = 2222
FIRST_OCTET = 100
READY_TIMEOUT = 20.0

_NS_SCRIPT = """set -e
hostname "$1"
root=$2
mount -t overlay overlay -o "lowerdir=$3,upperdir=$4,workdir=$5" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=755 tmpfs "$root/run"
mkdir -p "$root/run/sshd"
shift 5
for share in "$@"; do
    mount --bind "$share" "$root$share"
    mount -o remount,bind,ro "$root$share"
done
exec chroot "$root" /usr/sbin/sshd -D -E /var/log/sshd-test.log
"""


def missing_prerequisites() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root")
    for tool in ("unshare", "chroot", "ssh-keygen", "ssh"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            problems.append(f"{tool} not found")
    return problems


def ensure_image() -> Path:
    """The cached Debian root filesystem, built by the project's script when missing."""
    if not (IMAGE / ".complete").is_file():
        subprocess.run([str(REPO / "scripts" / "debian-rootfs"), str(IMAGE)], check=True)
    return IMAGE


@dataclass
class DebianHost:
    name: str
    address: str
    base: Path  # controller-side directory: upper/, work/, root/
    host_key_line: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def upper(self) -> Path:
        """What the host wrote on its disk (the overlay's upper layer)."""
        return self.base / "upper"

    def pid1(self) -> int:
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def pid_namespace(self) -> str:
        return os.readlink(f"/proc/{self.pid1()}/ns/pid")


class DebianFleet:
    """Fresh Debian hosts, reachable as root with ``client_key``, pinned in ``known_hosts``."""

    def __init__(self, base: Path, names: list[str], *, shares: tuple[Path, ...] = ()) -> None:
        """``shares``: controller directories every host sees at the same path, read-only."""
        self.base = base
        self.shares = shares
        self.image = ensure_image()
        self.client_key = base / "id_ed25519"
        self.known_hosts = base / "known_hosts"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)],
            check=True,
        )
        self.hosts: dict[str, DebianHost] = {}
        octet = FIRST_OCTET
        for name in names:
            while not _bindable(f"127.0.0.{octet}", PORT):
                octet += 1
            self.hosts[name] = self._prepare(name, f"127.0.0.{octet}")
            octet += 1
        self.known_hosts.write_text("".join(h.host_key_line + "\n" for h in self.hosts.values()))
        for host in self.hosts.values():
            self.start(host)

    def _prepare(self, name: str, address: str) -> DebianHost:
        base = self.base / name
        upper = base / "upper"
        dirs = [upper / "etc/ssh/sshd_config.d", upper / "root/.ssh", base / "work", base / "root"]
        dirs += [upper / share.relative_to("/") for share in self.shares]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        key = upper / "etc/ssh/ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (upper / "etc/ssh/sshd_config.d/00-test-host.conf").write_text(
            f"# The test host's own address; the first value of each keyword wins.\n"
            f"ListenAddress {address}\nPort {PORT}\n"
            f"HostKey /etc/ssh/ssh_host_ed25519_key\nUsePAM no\n"
        )
        authorized = upper / "root/.ssh/authorized_keys"
        authorized.write_text(Path(f"{self.client_key}.pub").read_text())
        authorized.chmod(0o600)
        (upper / "root/.ssh").chmod(0o700)
        public = Path(f"{key}.pub").read_text().split()
        line = f"[{address}]:{PORT} {public[0]} {public[1]}"
        return DebianHost(name, address, base, line)

    def start(self, host: DebianHost) -> None:
        """Boot the host's sshd (its PID 1) and wait for its banner."""
        args = [
            "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child=SIGKILL",
            "--propagation", "private", "sh", "-c", _NS_SCRIPT, "sh", host.name,
            str(host.base / "root"), str(self.image), str(host.upper), str(host.base / "work"),
            *map(str, self.shares),
        ]  # fmt: skip
        log = (host.base / "unshare.log").open("ab")
        host.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if host.proc.poll() is not None:
                raise RuntimeError(
                    f"{host.name} did not start: {(host.base / 'unshare.log').read_text()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((host.address, PORT), timeout=1) as conn,
            ):
                if conn.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{host.name}: sshd not ready within {READY_TIMEOUT}s")

    def stop(self, host: DebianHost) -> None:
        """Stop every process of the host at once (kill its PID 1) and wait until gone."""
        if host.proc is None or host.proc.poll() is not None:
            host.proc = None
            return
        try:
            namespace = host.pid_namespace()
            os.kill(host.pid1(), signal.SIGKILL)
        except (FileNotFoundError, IndexError, ProcessLookupError):
            namespace = ""
        host.proc.wait(timeout=30)
        host.proc = None
        deadline = time.monotonic() + 30
        while namespace and time.monotonic() < deadline and _in_namespace(namespace):
            time.sleep(0.05)

    def stop_all(self) -> None:
        for host in self.hosts.values():
            self.stop(host)

    def ssh(
        self, host: DebianHost, script: str, *, user: str = "root", timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "ssh",
                "-F",
                "none",
                "-i",
                str(self.client_key),
                "-p",
                str(PORT),
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "BatchMode=yes",
                f"{user}@{host.address}",
                script,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def boot_units(self, host: DebianHost, units: list[str]) -> None:
        """Start ``units`` as systemd would at boot: each must be enabled (wanted by
        multi-user.target); its conditions are checked, then its ExecStartPre and
        ExecStart run as its User in its WorkingDirectory, in the background unless
        Type=forking."""
        for unit in units:
            wants = f"/etc/systemd/system/multi-user.target.wants/{unit}"
            text = self.ssh(host, f"cat {shlex.quote(wants)}").stdout
            assert text, f"{host.name}: {unit} is not enabled (no {wants})"
            service = _service_section(text)
            for path in service.get("ConditionPathExists", []):
                done = self.ssh(host, f"test -e {shlex.quote(path)}")
                assert done.returncode == 0, f"{host.name}: {unit}: {path} is missing"
            user = (service.get("User") or ["root"])[0]
            cwd = (service.get("WorkingDirectory") or ["/"])[0]
            forking = (service.get("Type") or ["simple"])[0] == "forking"
            as_user = f"runuser -u {shlex.quote(user)} -- " if user != "root" else ""
            # `;`, not `&&`: the background job is then that one command, with its own
            # redirections, and nothing else holds the SSH session's output open.
            home = f"HOME=~{user} " if user != "root" else ""
            prefix = f"cd {shlex.quote(cwd)} || exit 1; {home}"
            for command in service.get("ExecStartPre", []):
                done = self.ssh(host, f"{prefix}{as_user}{command.lstrip('-')}")
                assert done.returncode == 0 or command.startswith("-"), done.stderr
            for command in service.get("ExecStart", []):
                if forking:
                    done = self.ssh(host, f"{prefix}{as_user}{command}")
                else:
                    log = f"/var/log/boot-{unit}.log"
                    done = self.ssh(
                        host,
                        f"{prefix}setsid {as_user}{command} </dev/null >>{log} 2>&1 &",
                    )
                assert done.returncode == 0, f"{host.name}: {unit}: {done.stderr}"


def _service_section(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section in ("[Service]", "[Unit]"):
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _in_namespace(namespace: str) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns/pid") == namespace:
                    return True
    return False
