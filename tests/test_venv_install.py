"""The install step's virtualenv command, run as a host runs it (``sh``, the real uv the
hosts get, offline from a wheel directory): a new virtualenv starts as a hard-linked copy
of the live one when that was made the same way, installs only what differs, and never
changes a file the live release uses.

The wheels are written here: ``alpha`` (with a console script) and ``beta`` in two
versions, and a ``releasebook-django`` of one version with two contents (the build adds
it to every release; its version does not change when releasebook's code does).
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from releasebook.quoting import Raw, quote, render_command
from releasebook.runbooks.release import INSTALL
from releasebook.shipped import DJANGO_DIST, TOOLS_REQUIREMENTS

UV = Path(sys.executable).parent / "uv"
SITE = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
VENV_COMMAND = next(c.template for c in INSTALL.commands if "{venv_ready}" in c.template)


def _wheel(out: Path, name: str, version: str, module: str, script: bool = False) -> None:
    """A pure-Python wheel of one module ``name`` whose ``VALUE`` is ``module``."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}.py": f"VALUE = {module!r}\ndef main():\n    import sys; print(sys.prefix)\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    if script:
        files[f"{info}/entry_points.txt"] = f"[console_scripts]\n{name} = {dist}:main\n"
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    with zipfile.ZipFile(out / f"{dist}-{version}-py3-none-any.whl", "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")


class Host:
    """A deploy directory with releases whose virtualenvs the install command makes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "venvs").mkdir()
        (root / "releases").mkdir()

    def release(self, name: str, requirements: str, wheels: list[tuple[str, str, str]]) -> Path:
        """Install release ``name`` (its venv named after it) and make it live."""
        release = self.root / "releases" / name
        release.mkdir()
        (release / "requirements.txt").write_text(requirements)
        built = self.root / f"built-{name}"
        built.mkdir()
        for dist, version, module in wheels:
            _wheel(built, dist, version, module, script=dist == "alpha")
        archive = self.root / f"wheels-{name}.tar"
        with tarfile.open(archive, "w") as tar:
            for wheel in sorted(built.iterdir()):
                tar.add(wheel, arcname=wheel.name)
        venv = self.root / "venvs" / name
        values = {
            "venv_ready": Raw(f"test -f {quote(venv / '.complete')}"),
            "wheel_dir": self.root / f"unpacked-{name}",
            "wheels": archive,
            "venv": venv,
            "uv": UV,
            "python": sys.executable,
            "django_requirement": f"{DJANGO_DIST}==0.1.0",
            "release_dir": release,
            "requirements": "requirements.txt",
            "current": self.root / "current",
        }
        done = subprocess.run(
            ["sh", "-ec", render_command(VENV_COMMAND, values)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        (release / "venv").symlink_to(venv)
        current = self.root / "current"
        current.unlink(missing_ok=True)
        current.symlink_to(release)
        self.said = done.stdout
        # Python trusts a .pyc whose source has the recorded size and mtime in whole
        # seconds; a live virtualenv is always installed seconds before the next one,
        # and the next release here must not start within the same second either.
        started = int(time.time())
        while int(time.time()) == started:
            time.sleep(0.02)
        return venv


def _value(venv: Path, module: str) -> str:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import {module}; print({module}.VALUE)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() if done.returncode == 0 else f"missing: {done.stderr[-200:]}"


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_the_hosts_uv_is_the_one_tested() -> None:
    assert f"uv=={subprocess.check_output([str(UV), '--version'], text=True).split()[1]}" in (
        TOOLS_REQUIREMENTS
    )


def test_a_new_virtualenv_starts_from_the_live_one_and_installs_only_what_differs(
    host: Host,
) -> None:
    first = host.release(
        "one",
        "alpha\nbeta==1.0\n",
        [("alpha", "1.0", "alpha 1"), ("beta", "1.0", "beta 1"), (DJANGO_DIST, "0.1.0", "rb 1")],
    )
    assert "starting from the live virtualenv" not in host.said  # nothing was live
    assert (first / ".complete").read_text().split() == [
        "alpha==1.0",
        "beta==1.0",
        f"{DJANGO_DIST}==0.1.0",
    ]
    # alpha is no longer required, beta is upgraded, releasebook's app has new code.
    second = host.release(
        "two",
        "beta==2.0\n",
        [("alpha", "1.0", "alpha 1"), ("beta", "2.0", "beta 2"), (DJANGO_DIST, "0.1.0", "rb 2")],
    )
    assert "starting from the live virtualenv one (hard links)" in host.said
    assert (_value(second, "beta"), _value(second, "releasebook_django")) == ("beta 2", "rb 2")
    assert _value(second, "alpha").startswith("missing")
    assert not (second / "bin" / "alpha").exists()
    # The live virtualenv is exactly as it was.
    assert [_value(first, m) for m in ("alpha", "beta", "releasebook_django")] == [
        "alpha 1",
        "beta 1",
        "rb 1",
    ]
    alpha_script = subprocess.run(
        [str(first / "bin" / "alpha")], capture_output=True, text=True, timeout=60
    )
    assert alpha_script.stdout.strip() == str(first)
    # What did not change is shared, not copied: the interpreter's own files, hard-linked.
    same = first / "pyvenv.cfg", second / "pyvenv.cfg"
    assert same[0].stat().st_ino == same[1].stat().st_ino


def test_an_unchanged_package_set_installs_nothing_and_its_scripts_run_from_the_new_venv(
    host: Host,
) -> None:
    wheels = [("alpha", "1.0", "alpha 1"), (DJANGO_DIST, "0.1.0", "rb 1")]
    first = host.release("one", "alpha==1.0\n", wheels)
    second = host.release("two", "alpha==1.0  # a comment changes the requirements hash\n", wheels)
    assert "starting from the live virtualenv one (hard links)" in host.said
    module = Path(SITE) / "alpha.py"
    assert (first / module).stat().st_ino == (second / module).stat().st_ino
    script = subprocess.run(
        [str(second / "bin" / "alpha")], capture_output=True, text=True, timeout=60
    )
    assert script.stdout.strip() == str(second)  # its own interpreter, not the live one's
    assert (second / ".complete").read_text() == (first / ".complete").read_text()


def test_a_live_virtualenv_made_otherwise_is_not_a_start(host: Host) -> None:
    wheels = [("alpha", "1.0", "alpha 1"), (DJANGO_DIST, "0.1.0", "rb 1")]
    first = host.release("one", "alpha==1.0\n", wheels)
    config = first / "pyvenv.cfg"
    config.write_text(config.read_text().replace("relocatable = true\n", ""))
    second = host.release("two", "alpha==1.0 # changed\n", wheels)
    assert "starting from the live virtualenv" not in host.said
    module = Path(SITE) / "alpha.py"
    assert (first / module).stat().st_ino != (second / module).stat().st_ino
    assert _value(second, "alpha") == "alpha 1"
