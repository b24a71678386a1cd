"""What every input driver produces: a `Read`, plain text with no meaning.

Drivers turn hardware into `Read`s (scanners, camera, keypad) or obey plain
commands (GPIO). None of them knows what a ticket is: deciding happens in
`gated.validation`, wiring in `gated.gate.lane`.

Also here, shared by the scanner drivers: `Framer`, which cuts a byte stream
into bounded frames, and `Scanner`, the base class that owns the run loop,
the reconnects and the logging, so each backend only opens and reads its
device.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gated.errors import DriverError

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Read:
    """One complete frame read from an input device.

    `text` is the frame decoded byte-for-byte as latin-1 (so any byte string
    maps to a string and nothing raises), terminator removed. `at` is the
    monotonic time the frame completed, from the clock the driver was given.
    `truncated` is set when the frame exceeded the driver's length cap and was
    cut: the text is then only its head, and the decision will say bad_format.
    """

    source: str
    text: str
    at: float
    truncated: bool = False


# --- Framing: bytes in, frames out (pure) -----------------------------------


TERMINATORS = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}
DEFAULT_MAX_FRAME = 512


class Framer:
    """Cuts a byte stream into frames at a configured terminator.

    Rules it keeps, whatever the input:
    - a frame is what lies between terminators, terminator removed; empty
      frames (blank lines, a CRLF seen by a CR framer) are dropped;
    - in CR and LF modes the other line-end byte is stray, not data: scanners
      configured for CRLF are common, so it is stripped from both ends of a
      frame (CR mode: the LF that starts the next frame; LF mode: the CR that
      ends this one);
    - a frame longer than `max_frame` is reported once, as soon as it
      overflows, by its first `max_frame` bytes with truncated=True; the rest
      is discarded up to the next terminator. So the buffer never holds more
      than `max_frame` plus one partial terminator, and an endless line does
      not stall the lane waiting for a terminator that never comes;
    - the frames and their flags are the same however the bytes are split
      across `feed()` calls: stray bytes at the end of an unterminated frame
      count towards its length only once data follows them.
    """

    def __init__(self, suffix: str = "CR", max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if suffix not in TERMINATORS:
            raise DriverError(f"frame suffix {suffix!r} is not one of {', '.join(TERMINATORS)}")
        if max_frame < 1:
            raise DriverError(f"max_frame must be at least 1, not {max_frame}")
        self._terminator = TERMINATORS[suffix]
        self._stray = {"CR": b"\n", "LF": b"\r", "CRLF": b""}[suffix]
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes held for the frame in progress (bounded by max_frame + 1)."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget the frame in progress (the device was reopened)."""
        self._buffer.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Take the next bytes of the stream; return the frames they complete."""
        frames: list[tuple[bytes, bool]] = []
        self._buffer += data
        while True:
            if not self._discarding and self._stray:
                self._drop_leading_stray()
            end = self._buffer.find(self._terminator)
            if end < 0:
                break
            frame = bytes(self._buffer[:end])
            del self._buffer[: end + len(self._terminator)]
            if self._discarding:
                self._discarding = False
                continue
            if self._stray:
                frame = frame.strip(self._stray)
            if len(frame) > self._max_frame:
                frames.append((frame[: self._max_frame], True))
            elif frame:
                frames.append((frame, False))
        self._bound_unterminated(frames)
        return frames

    def _drop_leading_stray(self) -> None:
        start = 0
        while start < len(self._buffer) and self._buffer[start] == self._stray[0]:
            start += 1
        del self._buffer[:start]

    def _bound_unterminated(self, frames: list[tuple[bytes, bool]]) -> None:
        """Keep at most max_frame bytes of an unterminated frame (see class rules)."""
        # The last byte may be the first half of a CRLF, so it is not yet data.
        partial_terminator = (
            1 if len(self._terminator) == 2 and self._buffer.endswith(self._terminator[:1]) else 0
        )
        content = len(self._buffer) - partial_terminator
        if self._discarding:
            del self._buffer[:content]
            return
        # Stray bytes at the end are the frame's line end if the terminator
        # comes next, or data if anything else does: until then the frame is
        # only known to be as long as what precedes them.
        known = content - self._trailing_stray()
        if known > self._max_frame:
            frames.append((bytes(self._buffer[: self._max_frame]), True))
            self._discarding = True
            del self._buffer[:content]
        elif content > self._max_frame:
            # Strays past max_frame change neither outcome (the head, or a
            # frame ending before them), so one is as good as a thousand.
            del self._buffer[self._max_frame : content]

    def _trailing_stray(self) -> int:
        if not self._stray:
            return 0
        return len(self._buffer) - len(self._buffer.rstrip(self._stray))


# --- Scanner: the run loop every input driver shares ------------------------


class Scanner(abc.ABC):
    """An input device kept open for the life of the daemon.

    The base class owns the public behaviour (python-can style): `run()` opens
    the device, reads until it goes away, says so once in the log, and retries
    with a capped backoff until cancelled or closed. A backend only knows its
    device:

    - `_open()` opens it, or raises OSError / DriverError if it is absent;
    - `await _read_chunk()` returns the next batch of data, waiting without
      polling; raises OSError (SerialException is one) or EOFError when the
      device is gone;
    - `_consume(chunk)` turns a batch into the backend's events and hands
      each to its consumer with `_hand_over` (`on_read(Read)` for scanners);
    - `_close_device()` releases it, safe to call when nothing is open.

    Times handed out come from the injected `clock` (monotonic by default) so
    the daemon and tests decide what time it is. Asyncio is single-threaded:
    call `close()` from the event loop's thread.
    """

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        reconnect_delay: float = 0.5,
        reconnect_delay_max: float = 5.0,
    ) -> None:
        if not 0 < reconnect_delay <= reconnect_delay_max:
            raise DriverError(
                f"scanner {name!r}: need 0 < reconnect_delay <= reconnect_delay_max, "
                f"got {reconnect_delay} and {reconnect_delay_max}"
            )
        self.name = name
        self._clock = clock
        self._reconnect_delay = reconnect_delay
        self._reconnect_delay_max = reconnect_delay_max
        self._connected = False
        self._closed = False
        self._run_task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """True while the device is open and being read."""
        return self._connected

    async def run(self) -> None:
        """Read the device until cancelled or closed, reopening it when it goes away.

        Each outage is logged once (`scanner_unavailable` when the device is
        missing at start, `scanner_disconnected` when it goes away), then
        `scanner_reconnected` when it is back. Retries wait `reconnect_delay`,
        doubling up to `reconnect_delay_max`; the delay only starts over once
        a connection has delivered data, so a device that opens and fails at
        once is retried ever more slowly instead of in a tight loop.
        """
        if self._run_task is not None:
            raise DriverError(f"scanner {self.name!r} is already running")
        self._run_task = asyncio.current_task()
        delay = self._reconnect_delay
        ever_connected = False
        outage_reported = False
        try:
            while not self._closed:
                try:
                    self._open()
                except (OSError, DriverError) as error:
                    if not outage_reported:
                        log.warning("scanner_unavailable", source=self.name, error=str(error))
                        outage_reported = True
                else:
                    self._connected = True
                    event = "scanner_reconnected" if ever_connected else "scanner_connected"
                    log.info(event, source=self.name)
                    ever_connected = True
                    try:
                        delivered = await self._read_until_gone()
                    finally:
                        self._connected = False
                        self._close_device()
                    outage_reported = True
                    if delivered:
                        delay = self._reconnect_delay
                if self._closed:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._reconnect_delay_max)
        except asyncio.CancelledError:
            if not self._closed:
                raise
        finally:
            self._run_task = None

    async def _read_until_gone(self) -> bool:
        """Consume chunks until the device goes away; say whether any arrived."""
        delivered = False
        try:
            while not self._closed:
                chunk = await self._read_chunk()
                delivered = True
                self._consume(chunk)
        except (OSError, EOFError) as error:
            if not self._closed:
                reason = str(error) or type(error).__name__
                log.warning("scanner_disconnected", source=self.name, error=reason)
        return delivered

    def _hand_over(self, callback: Callable[[Any], None], event: Any) -> None:
        """Give one event to the consumer. A failing consumer is logged, not
        fatal: otherwise one bug downstream would leave the lane deaf."""
        try:
            callback(event)
        except Exception:
            log.exception("scanner_consumer_failed", source=self.name)

    def close(self) -> None:
        """Stop `run()` and release the device. Safe to call twice."""
        self._closed = True
        task = self._run_task
        if task is not None and not task.done() and task is not _current_task():
            task.cancel()
        self._close_device()

    def __enter__(self) -> Scanner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _now(self) -> float:
        return self._clock()

    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    async def _read_chunk(self) -> Any: ...

    @abc.abstractmethod
    def _consume(self, chunk: Any) -> None: ...

    @abc.abstractmethod
    def _close_device(self) -> None: ...


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: close() called from plain code
        return None
