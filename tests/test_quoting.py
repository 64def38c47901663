"""quote / render_command: hostile values reach the shell as one literal word.

Every check runs the rendered command in a real shell and compares what ``printf``
printed with the value, byte for byte; values that would run a command if they were
ever evaluated try to create a canary file, which must never exist.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from releasebook.errors import TemplateError
from releasebook.quoting import Raw, ShellVar, quote, render_command

CANARY = "@CANARY@"  # replaced by the canary file's path

HOSTILE = {
    "empty": "",
    "space": "a b",
    "spaces-only": "   ",
    "tab": "a\tb",
    "single-quote": "it's",
    "single-quotes-only": "''",
    "double-quotes": 'say "hi"',
    "semicolon": "a; touch @CANARY@",
    "and-and": "x && touch @CANARY@",
    "pipe": "x | touch @CANARY@",
    "command-substitution": "$(touch @CANARY@)",
    "backticks": "`touch @CANARY@`",
    "quote-escape": "'; touch @CANARY@ #",
    "double-quote-escape": '"; touch @CANARY@ #',
    "newline": "line1\ntouch @CANARY@",
    "trailing-newline": "x\n",
    "carriage-return": "a\r\nb",
    "non-ascii": "naïve café ☃ 日本語 🚀",
    "leading-dash": "-n",
    "leading-double-dash": "--help",
    "variable": "$HOME ${HOME} $0 $$",
    "backslashes": "\\ \\\\ \\n \\'",
    "globs": "* ? [a-z] ~ ~root",
    "history-and-comment": "!! !x #x",
    "braces": "{} {v} {{v}} ${v}",
    "redirect": "> @CANARY@",
    "process-substitution": "<(touch @CANARY@)",
    "percent": "%s %d %%",
    "equals": "A=1 B=2",
}


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a value was executed by the shell"


def run_shell(command: str, *, shell: str = "bash", env: Mapping[str, str] | None = None) -> bytes:
    done = subprocess.run(
        [shell, "-c", command],
        capture_output=True,
        timeout=10,
        env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def printed(value: str, *, shell: str = "bash") -> bytes:
    return run_shell(render_command("printf '%s' {v}", {"v": value}), shell=shell)


@pytest.mark.parametrize("shell", ["bash", "sh"])
@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_value_is_one_literal_word(value: str, shell: str, canary: Path) -> None:
    value = value.replace(CANARY, str(canary))
    assert printed(value, shell=shell) == value.encode()
    assert not canary.exists()


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_value_is_exactly_one_argument(value: str, canary: Path) -> None:
    value = value.replace(CANARY, str(canary))
    command = render_command("printf '%s\\0' {v} end", {"v": value})
    assert run_shell(command) == value.encode() + b"\0end\0"


@pytest.fixture(scope="module")
def shared_canary() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "pwned"
        yield path
        assert not path.exists(), "a value was executed by the shell"


# Any character a command line can carry: UTF-8 encodable (no lone surrogates), not NUL.
TEXT_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
FRAGMENTS = st.sampled_from(
    ["'", '"', "$(touch {c})", "`touch {c}`", "; touch {c} #", "\n", "\\", "$", "-", " "]
)


@settings(max_examples=200, deadline=None, database=None)
@given(value=st.text(alphabet=TEXT_CHARS))
def test_any_text_prints_literally(value: str) -> None:
    assert printed(value) == value.encode()


@settings(max_examples=200, deadline=None, database=None)
@given(parts=st.lists(st.one_of(FRAGMENTS, st.text(TEXT_CHARS))))
def test_any_mix_of_hostile_fragments_prints_literally(
    parts: list[str], shared_canary: Path
) -> None:
    value = "".join(parts).replace("{c}", str(shared_canary))
    assert printed(value) == value.encode()
    assert not shared_canary.exists()


def test_nul_cannot_be_an_argument() -> None:
    # Documenting why the property tests leave NUL out: argv cannot carry it.
    with pytest.raises(ValueError, match="null byte"):
        subprocess.run(["printf", "%s", "a\0b"], check=False)


# --- quote on non-str values ----------------------------------------------------------------


def test_quote_simple_values_unchanged() -> None:
    assert quote("abc") == "abc"
    assert quote("/srv/app/releases") == "/srv/app/releases"
    assert quote(3) == "3"
    assert quote(2.5) == "2.5"
    assert quote(Path("/srv/app")) == "/srv/app"


def test_quote_paths_and_numbers() -> None:
    assert quote(PurePosixPath("/srv/a b")) == "'/srv/a b'"
    assert quote("") == "''"
    assert run_shell(f"printf '%s' {quote(Path('/tmp/$(x) y'))}") == b"/tmp/$(x) y"


def test_quote_rejects_booleans() -> None:
    with pytest.raises(TypeError, match="booleans"):
        quote(True)


# --- ShellVar -------------------------------------------------------------------------------


def test_shellvar_forms() -> None:
    release = ShellVar("RELEASE")
    assert str(release) == "${RELEASE}"
    assert quote(release) == '"${RELEASE}"'
    in_releases = ShellVar("RELEASE", prefix="/srv/app/releases/")
    assert quote(in_releases) == '"/srv/app/releases/${RELEASE}"'
    assert quote(in_releases / "venv") == '"/srv/app/releases/${RELEASE}/venv"'
    assert quote(in_releases.joinpath("venv", "bin")) == '"/srv/app/releases/${RELEASE}/venv/bin"'
    assert quote(in_releases.with_suffix(".tar.gz")) == '"/srv/app/releases/${RELEASE}.tar.gz"'
    assert render_command("ls {d}", {"d": in_releases}) == 'ls "/srv/app/releases/${RELEASE}"'


def test_shellvar_escapes_prefix_and_suffix() -> None:
    var = ShellVar("R", suffix='$x"`\\', prefix='$HOME"`\\')
    assert quote(var) == '"\\$HOME\\"\\`\\\\${R}\\$x\\"\\`\\\\"'


@pytest.mark.parametrize(
    "release", ["20260101-120000-000", "a b", "$(touch @CANARY@)", "'\"`;\n*", ""]
)
@pytest.mark.parametrize(
    ("prefix", "suffix"),
    [("", ""), ("/srv/app/releases/", "/venv"), ('$(touch @CANARY@) "q" `x` \\', '$y "z"')],
    ids=["bare", "path", "hostile-affixes"],
)
def test_shellvar_expands_once_to_one_word(
    release: str, prefix: str, suffix: str, canary: Path
) -> None:
    release = release.replace(CANARY, str(canary))
    prefix = prefix.replace(CANARY, str(canary))
    var = ShellVar("RELEASE", suffix=suffix, prefix=prefix)
    command = render_command("printf '%s\\0' {v} end", {"v": var})
    out = run_shell(command, env={"RELEASE": release, "x": "X", "y": "Y"})
    assert out == (prefix + release + suffix).encode() + b"\0end\0"


# --- render_command -------------------------------------------------------------------------


def test_render_command_quotes_every_value() -> None:
    rendered = render_command(
        "cp {src} {dst} && echo {n}", {"src": "/a b", "dst": Path("/c'd"), "n": 3}
    )
    assert rendered == "cp '/a b' '/c'\"'\"'d' && echo 3"


def test_raw_passes_through() -> None:
    rendered = render_command("{a} && {b}", {"a": Raw("x | y > z"), "b": "p q"})
    assert rendered == "x | y > z && 'p q'"


def test_doubled_braces_are_literal() -> None:
    assert render_command("awk '{{print $1}}' {f}", {"f": "a b"}) == "awk '{print $1}' 'a b'"


@pytest.mark.parametrize(
    "value",
    [object(), None, b"bytes", ["a"], {"a": 1}, True],
    ids=["object", "none", "bytes", "list", "dict", "bool"],
)
def test_non_str_values_raise_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        render_command("echo {v}", {"v": value})


def test_a_template_naming_an_unknown_value_is_a_clear_error() -> None:
    with pytest.raises(TemplateError, match=r"'echo \{missing\}' names \{missing\}"):
        render_command("echo {missing}", {})
