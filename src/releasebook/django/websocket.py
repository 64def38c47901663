"""A WebSocket consumer for releasebook's verify step (needs Channels).

Route it in the project's ASGI application, inside its Origin validation::

    from releasebook.django.websocket import VerifyConsumer

    websocket_urlpatterns = [path("ws/releasebook/verify/", VerifyConsumer.as_asgi())]

and name the path in the inventory as ``health.websocket_path``. Each text message is
answered with ``{"echo": <the message>, "release": <this process's release id>}``, so
verify knows the upgrade works through the server and which release answered. It uses
no channel layer and no database; messages are cut at 200 characters.
"""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import WebsocketConsumer

from .release import current_release

MAX_ECHO = 200


class VerifyConsumer(WebsocketConsumer):  # type: ignore[misc]
    def connect(self) -> None:
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            self.close(code=1003)  # unsupported data: text only
            return
        answer: dict[str, Any] = {
            "echo": text_data[:MAX_ECHO],
            "release": current_release().release_id,
        }
        self.send(text_data=json.dumps(answer))
