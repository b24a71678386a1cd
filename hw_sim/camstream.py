"""The lane camera as a network stream, the way IP cameras serve one: MJPEG
over HTTP (`multipart/x-mixed-replace`), at `http://127.0.0.1:PORT/stream.mjpg`.

The simulator sets what the camera sees (`set_frame(image)`, or
`show_code(text)` for a QR code rendered as `gated.bench.frames` renders
them, `show_blank()` for the empty scene); every connected viewer gets the
current frame `fps` times a second, JPEG-encoded with OpenCV once per
`set_frame`, not once per viewer. The gate's camera driver opens the URL with
`cv2.VideoCapture` (its `[lane.camera] source`), exactly as it opens a real
IP camera's stream; stopping the stream drops every viewer, as a camera
losing power or its cable does.
"""

from __future__ import annotations

import asyncio
import threading

import cv2
import numpy as np
from aiohttp import web

from gated.bench.frames import FRAME_HEIGHT, FRAME_WIDTH, blank_frame, render_code
from gated.web.server import serve_app

BOUNDARY = "gatedframe"
PATH = "/stream.mjpg"


class MjpegStream:
    """An MJPEG-over-HTTP camera on loopback (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, fps: float = 15.0, quality: int = 90,
                 width: int = FRAME_WIDTH, height: int = FRAME_HEIGHT) -> None:
        if not 0 < fps <= 120:
            raise ValueError(f"fps must be above 0 and at most 120, got {fps}")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be 1..100, got {quality}")
        self.host = host
        self.port = port
        self.fps = float(fps)
        self.quality = quality
        self.width = width
        self.height = height
        self._lock = threading.Lock()
        self._jpeg = b""
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.viewers = 0  # connections being served now
        self.frames_sent = 0
        self.show_blank()

    # ---- life cycle ----

    async def start(self) -> None:
        """Bind and serve; `port` and `url` are then the bound ones."""
        if self._runner is not None:
            raise RuntimeError("the stream is already running")
        app = web.Application()
        app.router.add_get(PATH, self._stream)
        self._runner, self.port = await serve_app(app, self.host, self.port)
        self._stopping = asyncio.Event()

    async def stop(self) -> None:
        """Close the listener and every viewer's connection."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        await runner.cleanup()

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PATH}"

    # ---- what the camera sees (any thread) ----

    def set_frame(self, image: np.ndarray) -> None:
        """Show `image` (8-bit gray or BGR) from now until the next call."""
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError(f"OpenCV could not encode a frame of shape {getattr(image, 'shape', None)} as JPEG")
        with self._lock:
            self._jpeg = encoded.tobytes()

    def show_code(self, text: str, **pose: float) -> None:
        """Show `text` as a QR code on a phone held up to the camera (`gated.bench.frames.render_code`)."""
        self.set_frame(render_code(text, width=self.width, height=self.height, **pose))

    def show_blank(self, seed: int = 0) -> None:
        """Show the empty scene."""
        self.set_frame(blank_frame(seed=seed, width=self.width, height=self.height))

    # ---- the wire ----

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            "Cache-Control": "no-cache, no-store",
            "Connection": "close",
        })
        await response.prepare(request)
        stopping = self._stopping
        assert stopping is not None
        period = 1.0 / self.fps
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        self.viewers += 1
        try:
            while not stopping.is_set():
                with self._lock:
                    jpeg = self._jpeg
                await response.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg + b"\r\n"
                )
                self.frames_sent += 1
                next_at = max(next_at + period, loop.time())
                try:
                    await asyncio.wait_for(stopping.wait(), next_at - loop.time())
                except TimeoutError:
                    pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.viewers -= 1
        return response
