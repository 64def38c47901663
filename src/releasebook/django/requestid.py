"""The current request's id, for every log record written while it is handled.

LOGGING: add the filter ``{"()": "releasebook.django.requestid.RequestIdFilter"}`` to
a handler and use ``%(request_id)s`` in its format; it is ``-`` outside a request.
"""

import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

HEADER = "X-Request-ID"
# Ids from a proxy are kept when short and plain enough to log verbatim.
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_current: ContextVar[str | None] = ContextVar("releasebook_request_id", default=None)


def get_request_id() -> str | None:
    return _current.get()


def accept_request_id(incoming: str | None) -> str:
    """``incoming`` when it is a valid id, else a new one (uuid4 hex)."""
    if incoming and _VALID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def set_request_id(request_id: str | None) -> None:
    _current.set(request_id)


def clear_request_id(**_signal: Any) -> None:
    """A ``request_finished`` receiver: the id stays set until then because Django logs
    4xx and 5xx responses (``django.request``) after the middleware has returned."""
    _current.set(None)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (unless the record already has one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.setdefault("request_id", _current.get() or "-")
        return True
