"""What releasebook ships to hosts, taken from the installed package (never from a source
tree): the gate's scripts, copied into each artifact, and ``releasebook-django``, a wheel
of the Django integration alone (``releasebook/django/``) so that the production
virtualenv gets Django's side of releasebook without the controller's SSH and
templating libraries.

The wheel is written byte for byte the same from the same files (fixed timestamps and
order), so its digest keys the wheelhouse and the hosts' virtualenvs. On a host,
``releasebook`` is then a namespace package holding only ``releasebook.django``.

``python -m releasebook.shipped wheel DIR`` writes the wheel into DIR, ``gate DIR``
copies the gate's scripts into DIR, ``key VERSION`` prints what, besides the app's
requirements file, keys the wheelhouse, ``tools-key VERSION`` what keys the tools'
wheelhouse, and ``pip VERSION ARGS`` runs pip with the environment markers of the hosts'
Python VERSION: the build step and the runbook run these.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import sys
import zipfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from releasebook import __version__

PACKAGE = Path(__file__).resolve().parent
DJANGO_DIR = PACKAGE / "django"
DJANGO_DIST = "releasebook-django"
DJANGO_REQUIRES = ("django>=4.2",)
# Installed once on each host in <deploy>/.releasebook/tools from their own wheelhouse
# (sent only to hosts without them): the process manager, and uv, which builds the app's
# virtualenvs offline at a fraction of pip's CPU.
TOOLS_REQUIREMENTS = ("supervisor==4.3.0", "uv==0.13.9")
_DIST_INFO = f"releasebook_django-{__version__}.dist-info"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def django_requirement() -> str:
    """The requirement the build adds to the app's: this releasebook's Django app."""
    return f"{DJANGO_DIST}=={__version__}"


def django_wheel_name() -> str:
    return f"releasebook_django-{__version__}-py3-none-any.whl"


def _django_files() -> list[tuple[str, bytes]]:
    files = []
    for path in sorted(DJANGO_DIR.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        name = path.relative_to(PACKAGE.parent).as_posix()
        files.append((name, path.read_bytes()))
    return files


def _metadata() -> bytes:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {DJANGO_DIST}",
        f"Version: {__version__}",
        "Summary: releasebook's Django app (health probes, readiness gate, request ids), "
        "without the controller's libraries",
        "Requires-Python: >=3.11",
        *(f"Requires-Dist: {req}" for req in DJANGO_REQUIRES),
    ]
    return ("\n".join(lines) + "\n").encode()


_WHEEL = b"Wheel-Version: 1.0\nGenerator: releasebook\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


@cache
def django_wheel() -> bytes:
    """The ``releasebook-django`` wheel's bytes, the same for the same files."""
    entries = [
        *_django_files(),
        (f"{_DIST_INFO}/METADATA", _metadata()),
        (f"{_DIST_INFO}/WHEEL", _WHEEL),
    ]
    record = "\n".join([*(_record_line(n, d) for n, d in entries), f"{_DIST_INFO}/RECORD,,"])
    entries.append((f"{_DIST_INFO}/RECORD", (record + "\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def django_digest() -> str:
    return hashlib.sha256(django_wheel()).hexdigest()


def write_django_wheel(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / django_wheel_name()
    target.write_bytes(django_wheel())
    return target


def copy_gate_files(directory: Path) -> list[Path]:
    from releasebook.gate.command import GATE_FILES

    directory.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(path, directory / path.name)) for path in GATE_FILES]


def wheelhouse_key(python_version: str) -> str:
    """What keys the wheelhouse besides the app's requirements file: the Django app's
    wheel and the Python the wheels are for (markers can name its version)."""
    lines = [django_requirement(), django_digest(), python_version]
    return "\n".join(lines) + "\n"


def tools_key(python_version: str, tools: Sequence[str] = TOOLS_REQUIREMENTS) -> str:
    """What keys the tools' wheelhouse: the tools and the Python they are for."""
    return "\n".join([*tools, python_version]) + "\n"


def run_pip(version: str, args: Sequence[str]) -> None:
    """pip, with environment markers evaluated for the hosts' Python ``version``
    (``python_full_version``, ``python_version``): a requirement such as
    ``async-timeout; python_full_version < "3.11.3"`` is then fetched when the hosts need
    it, though the controller's own Python would not. Wheel tags stay pip's business."""
    import platform
    import runpy

    parts = (*version.split("."), "0", "0")[:3]
    patched = {
        "python_version": lambda: version,
        "python_version_tuple": lambda: parts,
    }
    for name, value in patched.items():
        setattr(platform, name, value)
    sys.argv = ["pip", *args]
    runpy.run_module("pip", run_name="__main__", alter_sys=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "pip":
        run_pip(args[1], args[2:])
        return 0
    if len(args) == 2 and args[0] == "wheel":
        print(write_django_wheel(Path(args[1])))
        return 0
    if len(args) == 2 and args[0] == "gate":
        copy_gate_files(Path(args[1]))
        return 0
    if len(args) == 2 and args[0] == "key":
        sys.stdout.write(wheelhouse_key(args[1]))
        return 0
    if len(args) == 2 and args[0] == "tools-key":
        sys.stdout.write(tools_key(args[1]))
        return 0
    print(
        "usage: python -m releasebook.shipped wheel DIR | gate DIR | key PYTHON_VERSION"
        " | tools-key PYTHON_VERSION | pip PYTHON_VERSION PIP_ARGS...",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
