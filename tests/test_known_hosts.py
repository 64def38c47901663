"""known_hosts read as OpenSSH reads it: markers, wildcards, negation, hashed names."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess

import paramiko
import pytest

from releasebook.transport.known_hosts import KnownHosts

KEYS: dict[str, paramiko.PKey] = {}


@pytest.fixture(scope="module", autouse=True)
def keys(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two real ed25519 keys, made with ssh-keygen."""
    base = tmp_path_factory.mktemp("keys")
    for name in ("a", "b"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True
        )
        KEYS[name] = paramiko.Ed25519Key.from_private_key_file(str(base / name))


def _line(patterns: str, key: str, marker: str = "") -> str:
    k = KEYS[key]
    return f"{marker} {patterns} {k.get_name()} {k.get_base64()}".strip() + "\n"


def test_plain_wildcard_and_port_entries() -> None:
    known = KnownHosts.parse(
        _line("web1.example.com,10.0.0.1", "a") + _line("*.internal", "b") + _line("[h]:2222", "a")
    )
    assert known.lookup("web1.example.com").keys == (KEYS["a"],)
    assert known.lookup("10.0.0.1").keys == (KEYS["a"],)
    assert known.lookup("db.internal").keys == (KEYS["b"],)
    assert known.lookup("[h]:2222").keys == (KEYS["a"],)
    assert known.lookup("h").keys == ()
    assert known.lookup("other").keys == ()


def test_a_negated_pattern_takes_the_line_away_from_that_host() -> None:
    """``web1,!web1`` and ``*,!web1`` do not apply to web1, as OpenSSH decides (paramiko
    matched the first pattern and trusted the key)."""
    known = KnownHosts.parse(_line("web1,!web1", "a") + _line("*,!web2", "b"))
    assert known.lookup("web1").keys == (KEYS["b"],)
    assert known.lookup("web2").keys == ()
    assert known.lookup("web3").keys == (KEYS["b"],)


def test_a_revoked_key_is_never_pinned() -> None:
    known = KnownHosts.parse(_line("web1", "a") + _line("*", "a", "@revoked"))
    lookup = known.lookup("web1")
    assert lookup.keys == ()
    assert lookup.is_revoked(KEYS["a"]) and not lookup.is_revoked(KEYS["b"])


def test_a_certificate_authority_is_reported_not_trusted() -> None:
    known = KnownHosts.parse(_line("*.example.com", "b", "@cert-authority"))
    lookup = known.lookup("web1.example.com")
    assert lookup.keys == () and lookup.authorities == (KEYS["b"],)


def test_hashed_names_and_unreadable_lines() -> None:
    salt = b"0123456789abcdef0123"
    digest = hmac.new(salt, b"web1", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    text = (
        "# a comment\n\n"
        + _line(hashed, "a")
        + "@unknown-marker web1 ssh-ed25519 AAAA\n"
        + "web1 ssh-ed25519 not-base64!!\n"
        + "garbage\n"
    )
    known = KnownHosts.parse(text)
    assert known.lookup("web1").keys == (KEYS["a"],)
    assert known.lookup("web2").keys == ()
