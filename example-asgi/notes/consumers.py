"""Live notes: every text a client sends goes to everyone connected, on any worker of
any web host, through the Redis channel layer."""

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from releasebook.django.release import current_release

GROUP = "notes"
MAX_TEXT = 500


class NotesConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        await self.send(text_data=json.dumps({"release": current_release().release_id}))

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data:
            await self.channel_layer.group_send(
                GROUP, {"type": "note.posted", "text": text_data[:MAX_TEXT]}
            )

    async def note_posted(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"note": event["text"]}))
