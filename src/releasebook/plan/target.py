"""The Python the wheels are built for: the hosts' interpreter, as their probe reports
it, compared with the controller's on what decides which wheels install (the
implementation, the minor version, the platform and the C library), never the patch
level. When they match, the controller builds the wheelhouse itself (``pip wheel``,
sdists included); when they do not (a macOS laptop, another architecture or Python),
it downloads the wheels made for the hosts (``pip download`` for their platform tags),
and a requirement without such a wheel has to be built on a host.
"""

from __future__ import annotations

import platform
import re
import sys
import sysconfig
from dataclasses import dataclass

# One line, run with the hosts' interpreter: "cpython 3.11.2 linux-x86_64 glibc 2.36".
PROBE_CODE = (
    "import platform, sys, sysconfig; "
    "libc = ' '.join(platform.libc_ver()) or 'none'; "
    "print(sys.implementation.name, platform.python_version(), sysconfig.get_platform(), libc)"
)
_LINE = re.compile(
    r"(?P<impl>[a-z]+) (?P<version>\d+\.\d+(?:\.\d+)?\S*) (?P<platform>\S+)"
    r"(?: (?P<libc>[a-z]+) (?P<libc_version>\d+\.\d+))?(?: none)?"
)
_SHORT = {"cpython": "cp", "pypy": "pp"}


@dataclass(frozen=True)
class PythonTarget:
    implementation: str  # sys.implementation.name
    version: str  # the full version, e.g. 3.11.2
    platform: str  # sysconfig.get_platform(), e.g. linux-x86_64
    libc: str = ""  # "glibc" or "musl" on Linux, "" elsewhere
    libc_version: str = ""

    @classmethod
    def parse(cls, line: str) -> PythonTarget | None:
        match = _LINE.fullmatch(line.strip())
        if match is None:
            return None
        return cls(
            match["impl"],
            match["version"],
            match["platform"],
            match["libc"] or "",
            match["libc_version"] or "",
        )

    @classmethod
    def controller(cls) -> PythonTarget:
        libc, libc_version = platform.libc_ver()
        return cls(
            sys.implementation.name,
            platform.python_version(),
            sysconfig.get_platform(),
            libc,
            libc_version,
        )

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def abi(self) -> str:
        """What preflight compares on each host: "cpython 3.11 linux-x86_64"."""
        return f"{self.implementation} {self.minor} {self.platform}"

    def describe(self) -> str:
        libc = f" {self.libc} {self.libc_version}" if self.libc else ""
        return f"{self.implementation} {self.version} {self.platform}{libc}"

    def runs_wheels_of(self, builder: PythonTarget) -> bool:
        """Whether wheels built by ``builder``'s interpreter install here: the same
        implementation, minor version and platform, and a C library at least as new."""
        if (self.implementation, self.minor, self.platform, self.libc) != (
            builder.implementation,
            builder.minor,
            builder.platform,
            builder.libc,
        ):
            return False
        return _version(self.libc_version) >= _version(builder.libc_version)

    def platform_tags(self) -> list[str]:
        """The wheel platform tags this interpreter accepts, newest first (for pip)."""
        machine = self.platform.split("-", 1)[-1].replace("-", "_").replace(".", "_")
        if self.platform.startswith("linux-") and self.libc in ("glibc", "musl"):
            major, minor = _version(self.libc_version)
            kind = "manylinux" if self.libc == "glibc" else "musllinux"
            first = 5 if kind == "manylinux" else 1
            tags = [f"{kind}_{major}_{m}_{machine}" for m in range(minor, first - 1, -1)]
            if kind == "manylinux":
                legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
                tags += [f"{legacy[m]}_{machine}" for m in legacy if m <= minor]
            return [*tags, f"linux_{machine}"]
        return [self.platform.replace("-", "_").replace(".", "_")]

    def pip_args(self) -> list[str]:
        """``pip download`` options fetching wheels for this interpreter."""
        short = _SHORT.get(self.implementation, self.implementation)
        nodot = self.minor.replace(".", "")
        args = [
            "--only-binary=:all:",
            f"--implementation={short}",
            f"--python-version={self.minor}",
            f"--abi={short}{nodot}",
            "--abi=abi3",
            "--abi=none",
        ]
        return args + [f"--platform={tag}" for tag in self.platform_tags()]


def _version(text: str) -> tuple[int, int]:
    parts = [*(int(p) for p in re.findall(r"\d+", text)[:2]), 0, 0]
    return parts[0], parts[1]


def build_target(targets: dict[str, PythonTarget]) -> PythonTarget | None:
    """The one Python every host reported (the first host's when they differ: preflight
    then names the others), None when none was reported."""
    return next(iter(targets.values()), None)
