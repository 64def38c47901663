"""Keep secrets out of check errors: they are shown to whoever can reach /readyz."""

import os
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings

_URL_PASSWORD = re.compile(r"(?P<prefix>[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*:)[^@/\s]+@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords and every string of ``secrets`` replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<prefix>***@", text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def configured_secrets() -> set[str]:
    """Passwords in DATABASES, in cache LOCATION URLs and in the broker URL."""
    found: set[str] = set()
    for database in settings.DATABASES.values():
        if database.get("PASSWORD"):
            found.add(str(database["PASSWORD"]))
    for cache in settings.CACHES.values():
        location = cache.get("LOCATION", "")
        for url in [location] if isinstance(location, str) else location:
            found.update(_url_passwords(url))
    broker = getattr(settings, "CELERY_BROKER_URL", None) or os.environ.get("CELERY_BROKER_URL")
    if isinstance(broker, str):
        for url in broker.split(";"):
            found.update(_url_passwords(url))
    return found


def _url_passwords(url: Any) -> Iterator[str]:
    if not isinstance(url, str):
        return
    try:
        password = urlsplit(url.strip()).password
    except ValueError:
        return
    if password:
        yield password
        yield unquote(password)
