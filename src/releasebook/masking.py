"""What reaches a person or a file from releasebook: secrets masked, host text made safe.

A :class:`Masker` knows the secret values of a run (the inventory's declared secrets) and
masks them in every form releasebook itself writes them: as is, JSON-escaped,
shell-quoted (as in an env file), and the password part of a URL. Values are masked as
whole tokens, so a secret never mangles a word that merely contains it; secrets shorter
than :data:`MIN_SECRET_LENGTH` are refused where they are declared, because no such rule
could mask them safely. Secrets generated on a host (``env.generate``) never reach the
controller; they start with :data:`GENERATED_PREFIX`, so wherever one shows up in output
it is recognised and masked too.

Text read from a host (command output, history, a lock holder) is untrusted: ``screen``
also strips control characters, so escape sequences cannot drive the terminal.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

MASK = "***"
MIN_SECRET_LENGTH = 8
GENERATED_PREFIX = "rbgen-"
_GENERATED = re.compile(re.escape(GENERATED_PREFIX) + r"[A-Za-z0-9_-]{16,}")
# C0 and C1 control characters, DEL; tab and newline stay.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_WORD = re.compile(r"[A-Za-z0-9]")


def forms(value: str) -> set[str]:
    """The forms in which releasebook may write ``value``."""
    found = {value, json.dumps(value)[1:-1], shlex.quote(value)}
    try:
        password = urlsplit(value).password
    except ValueError:
        password = None
    if password:
        found.update(p for p in (password, unquote(password)) if len(p) >= MIN_SECRET_LENGTH)
    return {form for form in found if form}


def _token(form: str) -> str:
    """``form`` as a regular expression that matches it only as a whole token."""
    before = r"(?<![A-Za-z0-9])" if _WORD.match(form[0]) else ""
    after = r"(?![A-Za-z0-9])" if _WORD.match(form[-1]) else ""
    return before + re.escape(form) + after


def strip_controls(text: str) -> str:
    return _CONTROL.sub("", text)


class Masker:
    """Masks a run's secrets; one is made per command and handed to everything that
    prints or records."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        for value in values:
            if value:
                self._forms |= forms(value)
        ordered = sorted(self._forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(_token(f) for f in ordered)) if ordered else None

    def mask(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return _GENERATED.sub(MASK, text)

    def screen(self, text: str) -> str:
        """For output: control characters stripped, secrets masked."""
        return self.mask(strip_controls(text))
