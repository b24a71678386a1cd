"""Server-sent events: one `Broadcast` per page, many browsers listening.

A browser's `EventSource` reconnects by itself; each (re)connection first
receives what the page needs to draw itself (`initial`), then every event
published after. A browser that falls `QUEUE` events behind is dropped (it
reconnects and redraws) rather than letting its queue grow without bound.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

QUEUE = 256
KEEPALIVE_S = 15.0
_CLOSE = object()


def _frame(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Broadcast:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue] = set()

    def __len__(self) -> int:
        return len(self._queues)

    def publish(self, event: str, data: Any) -> None:
        """Send to every listener; called on the loop thread, never waits."""
        frame = _frame(event, data)
        for queue in list(self._queues):
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                self._queues.discard(queue)
                try:
                    queue.get_nowait()
                    queue.put_nowait(_CLOSE)
                except (asyncio.QueueEmpty, asyncio.QueueFull):
                    pass

    def close(self) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(_CLOSE)
            except asyncio.QueueFull:
                pass
        self._queues.clear()

    async def respond(self, request: web.Request, initial: Callable[[], Iterable[tuple[str, Any]]] = lambda: ()) -> web.StreamResponse:
        """The `text/event-stream` response of one listener, until it goes away."""
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no",
        })
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue(QUEUE)
        self._queues.add(queue)
        try:
            await response.write(b"retry: 1000\n\n" + b"".join(_frame(e, d) for e, d in initial()))
            while True:
                try:
                    frame = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    frame = b": keepalive\n\n"
                if frame is _CLOSE:
                    break
                await response.write(frame)
        except ConnectionResetError:
            pass
        finally:
            self._queues.discard(queue)
        return response
