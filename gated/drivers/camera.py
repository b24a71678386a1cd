"""The camera input driver: frames in, one `Read` per QR code shown.

Rules this driver keeps:

- **Newest frame wins.** A capture thread blocks on the camera and puts each
  frame in a one-slot handoff; if the decoder has not taken the previous one
  yet, that one is dropped (and counted), never queued. A slow decoder thus
  decodes what the camera sees *now*, memory stays at a couple of frames,
  and nothing is left to work through when the camera stops.
- **One read per presentation.** A code is reported when it first appears,
  then not again while it stays in view; it is reported anew only once it
  has gone unseen for `repeat_after_s` of frame time (someone walked off and
  came back, or the same phone is held up again). Frames it is missing
  from for less than that (blur, a hand passing) do not count as leaving.
  Times are the capture times of frames, from the clock the driver is given,
  so tests and the simulator can run a fake clock.
- **Unplugged is a state, not a crash.** A failed open or read is logged
  once (`camera_disconnected`), then retried with a capped exponential
  backoff; `camera_reconnected` is logged when frames flow again. A video
  file that ends counts the same way, so the simulator's clips loop.
- **Bad frames are skipped.** A frame that is not an 8-bit image, or that
  the decoder chokes on, is counted and skipped; it never stops the driver.

`source` is either what `cv2.VideoCapture` opens (a device index, a device
path, a video file or URL; the driver opens, configures and reopens it) or
any object with `read() -> (ok, frame)` (the simulator's virtual camera, a
test's scripted frames, an already opened VideoCapture). Such an object is
used as is: the driver never reopens or releases it, and owns each frame it
returns. Nothing here knows what a ticket is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import structlog

from gated.drivers.base import Read
from gated.drivers.qr_decode import DEFAULT_DECODER, QrDecoder, make_decoder, to_gray
from gated.errors import DriverError

_log = structlog.get_logger()


class FrameSource(Protocol):
    """What the driver reads frames from: cv2.VideoCapture's read() shape."""

    def read(self) -> tuple[bool, Any]: ...


@dataclass(frozen=True, slots=True)
class CameraStats:
    """Counters since start(); `last_decode_ms` is None until a frame was decoded."""

    frames_captured: int
    frames_decoded: int
    frames_dropped: int
    frames_rejected: int
    codes_reported: int
    last_decode_ms: float | None
    connected: bool


class Camera:
    """One camera: captures frames, decodes QR codes, calls `on_read(Read)` once per code shown.

    `on_read` runs on the decode thread, or, when `loop` (an asyncio event
    loop) is given, on that loop via `call_soon_threadsafe`. `decoder` is a
    name from `gated.drivers.qr_decode.DECODER_NAMES` or a decoder object.
    `width`, `height` and `fps` are requested from a camera the driver opens
    itself (the camera may round them); they are ignored for a frame-source
    object. `retry_initial_s` and `retry_max_s` bound the reconnect backoff.
    """

    def __init__(
        self,
        name: str,
        source: int | str | FrameSource,
        on_read: Callable[[Read], object],
        *,
        decoder: str | QrDecoder = DEFAULT_DECODER,
        width: int = 640,
        height: int = 480,
        fps: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        repeat_after_s: float = 2.0,
        loop: Any = None,
        retry_initial_s: float = 0.25,
        retry_max_s: float = 5.0,
        close_timeout_s: float = 2.0,
    ) -> None:
        if width <= 0 or height <= 0:
            raise DriverError(f"camera {name}: width and height must be positive, got {width}x{height}")
        if fps is not None and fps <= 0:
            raise DriverError(f"camera {name}: fps must be positive, got {fps}")
        if repeat_after_s < 0:
            raise DriverError(f"camera {name}: repeat_after_s must be >= 0, got {repeat_after_s}")
        if not 0 < retry_initial_s <= retry_max_s:
            raise DriverError(
                f"camera {name}: need 0 < retry_initial_s <= retry_max_s, "
                f"got {retry_initial_s} and {retry_max_s}"
            )
        self.name = name
        self._source = source
        self._owns_capture = not hasattr(source, "read")
        self._on_read = on_read
        self._decoder = make_decoder(decoder) if isinstance(decoder, str) else decoder
        self._width = width
        self._height = height
        self._fps = fps
        self._clock = clock
        self._repeat_after_s = repeat_after_s
        self._loop = loop
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._close_timeout_s = close_timeout_s

        self._stopping = threading.Event()
        self._handoff = threading.Condition()
        self._newest: tuple[np.ndarray, float] | None = None  # guarded by _handoff
        self._last_seen: dict[str, float] = {}  # decode thread only
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False
        self._lifecycle = threading.Lock()

        self._captured = self._decoded = self._dropped = self._rejected = self._reported = 0
        self._last_decode_ms: float | None = None
        self._connected = False

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Camera:
        """Start the capture and decode threads; a second call does nothing."""
        with self._lifecycle:
            if self._closed:
                raise DriverError(f"camera {self.name}: start() after close()")
            if self._started:
                return self
            self._started = True
            self._threads = [
                threading.Thread(target=self._capture_loop, name=f"camera-{self.name}-capture", daemon=True),
                threading.Thread(target=self._decode_loop, name=f"camera-{self.name}-decode", daemon=True),
            ]
            for thread in self._threads:
                thread.start()
        return self

    def close(self) -> None:
        """Stop both threads and wait for them; safe to call twice, and from on_read.

        The threads are daemons, so a camera read that hangs in the OS past
        `close_timeout_s` is logged (`camera_thread_stuck`) rather than
        hanging the daemon's shutdown.
        """
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
        self._stopping.set()
        with self._handoff:
            self._handoff.notify_all()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is current:
                continue
            thread.join(self._close_timeout_s)
            if thread.is_alive():
                _log.error(
                    "camera_thread_stuck", source=self.name, thread=thread.name, waited_s=self._close_timeout_s
                )

    def __enter__(self) -> Camera:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> CameraStats:
        """A snapshot of the counters (each read without locking; fine for monitoring)."""
        return CameraStats(
            frames_captured=self._captured,
            frames_decoded=self._decoded,
            frames_dropped=self._dropped,
            frames_rejected=self._rejected,
            codes_reported=self._reported,
            last_decode_ms=self._last_decode_ms,
            connected=self._connected,
        )

    # -- capture thread ----------------------------------------------------

    def _open_capture(self) -> Any:
        capture = cv2.VideoCapture(self._source)
        if not capture.isOpened():
            capture.release()
            raise OSError(f"cv2.VideoCapture could not open {self._source!r}")
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self._width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self._height)
        if self._fps is not None:
            capture.set(cv2.CAP_PROP_FPS, self._fps)
        # Ask the driver not to queue frames either (not every backend obeys).
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture

    def _capture_loop(self) -> None:
        capture: Any = None if self._owns_capture else self._source
        backoff_s = self._retry_initial_s
        outage_started: float | None = None
        try:
            while not self._stopping.is_set():
                try:
                    if capture is None:
                        capture = self._open_capture()
                    ok, frame = capture.read()
                    if not ok or frame is None:
                        raise OSError("read() returned no frame")
                except Exception as exc:  # unplugged, EOF, driver error: all mean "no frames now"
                    if outage_started is None:
                        outage_started = self._clock()
                        self._connected = False
                        _log.warning(
                            "camera_disconnected",
                            source=self.name,
                            device=repr(self._source),
                            error=str(exc) or type(exc).__name__,
                            retry_max_s=self._retry_max_s,
                        )
                    if self._owns_capture and capture is not None:
                        capture.release()
                        capture = None
                    self._stopping.wait(backoff_s)
                    backoff_s = min(backoff_s * 2, self._retry_max_s)
                    continue

                captured_at = self._clock()
                if not self._connected:
                    self._connected = True
                    if outage_started is not None:
                        outage_s = round(captured_at - outage_started, 3)
                        _log.info("camera_reconnected", source=self.name, outage_s=outage_s)
                    outage_started = None
                    backoff_s = self._retry_initial_s
                self._captured += 1
                with self._handoff:
                    if self._newest is not None:
                        self._dropped += 1
                    self._newest = (frame, captured_at)
                    self._handoff.notify()
        finally:
            if self._owns_capture and capture is not None:
                capture.release()

    # -- decode thread -----------------------------------------------------

    def _take_newest(self) -> tuple[np.ndarray, float] | None:
        with self._handoff:
            while self._newest is None and not self._stopping.is_set():
                self._handoff.wait(0.5)
            taken, self._newest = self._newest, None
            return taken

    def _decode_loop(self) -> None:
        rejecting = False  # log a run of bad frames once, not at frame rate
        while not self._stopping.is_set():
            taken = self._take_newest()
            if taken is None or self._stopping.is_set():
                return
            frame, captured_at = taken
            started = time.perf_counter()
            try:
                texts = self._decoder.decode(to_gray(frame))
            except Exception as exc:
                self._rejected += 1
                if not rejecting:
                    rejecting = True
                    _log.warning("camera_frame_rejected", source=self.name, error=str(exc))
                continue
            rejecting = False
            self._last_decode_ms = (time.perf_counter() - started) * 1000.0
            self._decoded += 1
            for text in self._new_presentations(texts, captured_at):
                self._reported += 1
                self._deliver(Read(source=self.name, text=text, at=captured_at))

    def _new_presentations(self, texts: list[str], seen_at: float) -> list[str]:
        """The codes in this frame that count as newly shown; updates the last-seen table."""
        fresh = []
        for text in dict.fromkeys(texts):  # the same code twice in one frame is one read
            last_seen = self._last_seen.get(text)
            if last_seen is None or seen_at - last_seen >= self._repeat_after_s:
                fresh.append(text)
            self._last_seen[text] = seen_at
        # Forget codes gone long enough to count as new next time; keeps the table small.
        for text in [t for t, at in self._last_seen.items() if seen_at - at >= self._repeat_after_s]:
            del self._last_seen[text]
        return fresh

    def _deliver(self, read: Read) -> None:
        try:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_read, read)
            else:
                self._on_read(read)
        except Exception:  # a closed loop or a buggy callback must not make the lane blind
            _log.exception("camera_delivery_failed", source=self.name)
