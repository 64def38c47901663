"""Request ids across Celery: a task sent while a request is handled carries its id, and
the worker's log lines for that task name it, so ``inv app.logs --request-id`` finds one
request on the web and the worker hosts. Connected by the app when Celery is installed."""

from typing import Any

from .requestid import get_request_id, set_request_id

TASK_HEADER = "releasebook_request_id"


def add_request_id(headers: dict[str, Any] | None = None, **_signal: Any) -> None:
    """A ``before_task_publish`` receiver: the current request's id into the message."""
    request_id = get_request_id()
    if headers is not None and request_id and TASK_HEADER not in headers:
        headers[TASK_HEADER] = request_id


def take_request_id(task: Any = None, **_signal: Any) -> None:
    """A ``task_prerun`` receiver: the message's request id for the task's log lines."""
    request = getattr(task, "request", None)
    set_request_id(getattr(request, TASK_HEADER, None) if request is not None else None)


def clear_request_id(**_signal: Any) -> None:
    """A ``task_postrun`` receiver."""
    set_request_id(None)


def connect() -> None:
    try:
        from celery import signals
    except ImportError:  # a project without Celery
        return
    signals.before_task_publish.connect(add_request_id, dispatch_uid="releasebook-rid-send")
    signals.task_prerun.connect(take_request_id, dispatch_uid="releasebook-rid-take")
    signals.task_postrun.connect(clear_request_id, dispatch_uid="releasebook-rid-clear")
