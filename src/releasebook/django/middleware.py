"""Request ids and the access log, and maintenance mode. Put RequestIdMiddleware first in
MIDDLEWARE so every response (redirects and errors included) carries the id and is logged,
and MaintenanceMiddleware right after it."""

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import Resolver404, resolve
from django.utils.encoding import escape_uri_path
from django.utils.html import escape

from .maintenance import in_maintenance, retry_after
from .requestid import HEADER, accept_request_id, get_request_id, set_request_id

access_logger = logging.getLogger("releasebook.access")


class RequestIdMiddleware:
    """Takes a valid incoming X-Request-ID or makes one, returns it on the response, and
    logs one line per request on ``releasebook.access``: method, path (never the query
    string, which can carry tokens), status, duration_ms and user id, with the request id
    as the record's ``request_id`` (put ``%(request_id)s`` in the format). No headers,
    cookies or credentials are logged."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = accept_request_id(request.headers.get(HEADER))
        set_request_id(request_id)  # cleared on request_finished, see requestid.py
        started = time.monotonic()
        status = 500  # if an exception escapes the handler
        try:
            response = self.get_response(request)
            status = response.status_code
            response[HEADER] = request_id
            return response
        finally:
            _log_access(request, status, started, request_id)


def _log_access(request: HttpRequest, status: int, started: float, request_id: str) -> None:
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    # Percent-encoded, so a crafted path cannot break the line or forge another one.
    path = escape_uri_path(request.path)[:1000]
    method = request.method or "-"
    user_id = _user_id(request)
    # The request id is the record's ``request_id`` (as for every record made during a
    # request), for the format's ``%(request_id)s``: not repeated in the message.
    access_logger.info(
        "method=%s path=%s status=%d duration_ms=%.1f user_id=%s",
        method,
        path,
        status,
        duration_ms,
        user_id,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "user_id": user_id,
            "request_id": request_id,
        },
    )


def _user_id(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    try:
        if user is not None and user.is_authenticated:
            return str(user.pk)
    except Exception:  # the session or user store is down; the request is logged anyway
        return "-"
    return "-"


# The probes answer for themselves: /healthz stays live, /readyz says "maintenance".
PROBES = frozenset({"releasebook:healthz", "releasebook:readyz"})
MAINTENANCE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Down for maintenance</title></head>
<body><h1>Down for maintenance</h1>
<p>We are working on the site and will be back shortly. Please try again in a few minutes.</p>
<p><small>request id: {request_id}</small></p></body></html>
"""


class MaintenanceMiddleware:
    """While the maintenance flag file exists (see ``maintenance``), every request except
    the health probes gets a small 503 page with ``Retry-After``."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not in_maintenance() or _is_probe(request):
            return self.get_response(request)
        response = HttpResponse(
            MAINTENANCE_PAGE.format(request_id=escape(get_request_id() or "-")),
            status=503,
            content_type="text/html; charset=utf-8",
        )
        response["Retry-After"] = str(retry_after())
        response["Cache-Control"] = "no-store"
        return response


def _is_probe(request: HttpRequest) -> bool:
    try:
        return resolve(request.path_info).view_name in PROBES
    except Resolver404:
        return False
