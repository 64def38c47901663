"""WebSocket routes (config/asgi.py wraps them in Origin validation)."""

from django.urls import path
from notes.consumers import NotesConsumer

from releasebook.django.websocket import VerifyConsumer

websocket_urlpatterns = [
    # releasebook's verify step opens this one (health.websocket_path).
    path("ws/releasebook/verify/", VerifyConsumer.as_asgi()),
    path("ws/notes/", NotesConsumer.as_asgi()),
]
