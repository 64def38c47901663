"""A known_hosts file, read as OpenSSH reads it (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT").

Each line is ``[marker] patterns keytype key [comment]``. Patterns are comma-separated
host names, ``[host]:port`` for other ports, wildcards (``*``, ``?``), hashed names
(``|1|salt|hash``) and negations (``!pattern``): a line applies to a name when one of its
patterns matches it and none of its negations does. Markers:

- ``@revoked``: the key is refused, whatever else the file says for the host;
- ``@cert-authority``: a CA for host certificates. paramiko does not verify host
  certificates, so a host known only through a CA is refused with a message saying so,
  rather than trusted or silently treated as unknown.

Lines that cannot be read are skipped, as OpenSSH skips them. paramiko's own HostKeys
does none of this: no markers, no wildcards, no negation.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

Marker = Literal["", "revoked", "cert-authority"]


@dataclass(frozen=True)
class Entry:
    patterns: tuple[str, ...]
    key: paramiko.PKey
    marker: Marker = ""

    def applies_to(self, name: str) -> bool:
        matched = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if _matches(pattern[1:] if negated else pattern, name):
                if negated:
                    return False
                matched = True
        return matched


@dataclass(frozen=True)
class Lookup:
    """What a known_hosts file says about one name."""

    keys: tuple[paramiko.PKey, ...] = ()  # pinned, and not revoked
    revoked: tuple[paramiko.PKey, ...] = ()
    authorities: tuple[paramiko.PKey, ...] = ()

    def is_revoked(self, key: paramiko.PKey) -> bool:
        return any(_same(key, r) for r in self.revoked)

    def by_type(self) -> dict[str, paramiko.PKey]:
        return {key.get_name(): key for key in self.keys}


@dataclass(frozen=True)
class KnownHosts:
    entries: tuple[Entry, ...] = field(default=())

    @classmethod
    def load(cls, path: Path) -> KnownHosts:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return cls()
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> KnownHosts:
        entries: list[Entry] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            marker: Marker = ""
            if line.startswith("@"):
                word, _, line = line.partition(" ")
                if word not in ("@revoked", "@cert-authority"):
                    continue  # an unknown marker: OpenSSH ignores the line
                marker = "revoked" if word == "@revoked" else "cert-authority"
            try:
                parsed = HostKeyEntry.from_line(line.strip())
            except (InvalidHostKey, ValueError, IndexError, paramiko.SSHException):
                continue
            if parsed is None or parsed.key is None:
                continue
            entries.append(Entry(tuple(parsed.hostnames), parsed.key, marker))
        return cls(tuple(entries))

    def lookup(self, name: str) -> Lookup:
        keys: list[paramiko.PKey] = []
        revoked: list[paramiko.PKey] = []
        authorities: list[paramiko.PKey] = []
        for entry in self.entries:
            if entry.marker == "revoked":
                revoked.append(entry.key)  # a revoked key is revoked for every host
            elif entry.applies_to(name):
                (authorities if entry.marker == "cert-authority" else keys).append(entry.key)
        pinned = tuple(k for k in keys if not any(_same(k, r) for r in revoked))
        return Lookup(pinned, tuple(revoked), tuple(authorities))


def _same(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        return _hashed(pattern, name)
    # OpenSSH's match_pattern: * and ? only, case-insensitive for host names.
    translated = pattern.replace("[", "[[]") if "[" in pattern else pattern
    return fnmatch.fnmatchcase(name.lower(), translated.lower())


def _hashed(pattern: str, name: str) -> bool:
    try:
        _, _, salt, digest = pattern.split("|")
        key = base64.b64decode(salt)
        expected = base64.b64decode(digest)
    except ValueError:
        return False
    actual = hmac.new(key, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(actual, expected)
