"""GET /events: the caller's live updates as server-sent events (the fan-out is procwatch_api.live).

Frames: `retry: <ms>` first, then `id:` / `event:` / `data:` per update (`sample`, `alert`, `server`,
or `reset`: reload your data), and a `: keep-alive` comment after live_heartbeat_s of silence.
Resume: the browser's EventSource sends `Last-Event-ID` by itself when it reconnects; a client that
cannot set headers may pass `?last_event_id=`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from procwatch_api.errors import TooManyStreams
from procwatch_api.live import LiveClient, retry_frame
from procwatch_api.web.sessions import session_or_token_user

router = APIRouter()

# The caller of a stream: a bearer token (as every route) or the dashboard's session cookie
# (a browser's EventSource cannot send a header).
StreamUser = Annotated[int, Depends(session_or_token_user)]


class EventStreamResponse(StreamingResponse):
    """A StreamingResponse that runs `on_close` however the stream ends (client gone, dropped, shutdown)."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={
            "Cache-Control": "no-cache, no-transform",
            # nginx buffers proxied responses unless told not to: updates would arrive in bursts.
            "X-Accel-Buffering": "no",
        })
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def _frames(client: LiveClient, retry_ms: int) -> AsyncIterator[bytes]:
    yield retry_frame(retry_ms)
    while (chunk := await client.next_chunk()) is not None:
        yield chunk


@router.get(
    "/events",
    summary="Live updates (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`sample`, `alert`, `server` and `reset` events (docs/dashboard.md)"}},
)
async def events(request: Request, user_id: StreamUser) -> EventStreamResponse:
    state = request.app.state
    settings = state.settings
    hub = state.live
    last_event_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    client = hub.connect(user_id, last_event_id)
    if client is None:
        raise TooManyStreams(hub.max_clients_per_user)
    return EventStreamResponse(_frames(client, settings.live_retry_ms),
                               on_close=lambda: hub.disconnect(user_id, client))
