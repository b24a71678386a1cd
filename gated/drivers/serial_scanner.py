"""Serial barcode/QR scanners (RS-232, USB CDC-ACM, or any pyserial URL).

The port is opened with `serial.serial_for_url`, so a device path, a stable
`/dev/serial/by-id/...` symlink, a pty from the simulator and `loop://` all
take the same path. Bytes are cut into frames by `Framer`; unplugging shows up
as a read error or EOF, and the base class reopens the same name when it
comes back.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable

import serial

from gated.drivers.base import DEFAULT_MAX_FRAME, Framer, Read, Scanner
from gated.errors import DriverError

_READ_SIZE = 4096


class SerialScanner(Scanner):
    """A scanner on a serial port; calls `on_read(Read)` for every frame."""

    def __init__(
        self,
        name: str,
        port: str,
        baud: int = 9600,
        suffix: str = "CR",
        max_frame: int = DEFAULT_MAX_FRAME,
        *,
        on_read: Callable[[Read], None],
        clock: Callable[[], float] = time.monotonic,
        reconnect_delay: float = 0.5,
        reconnect_delay_max: float = 5.0,
    ) -> None:
        super().__init__(
            name, clock=clock, reconnect_delay=reconnect_delay, reconnect_delay_max=reconnect_delay_max
        )
        if baud <= 0:
            raise DriverError(f"scanner {name!r}: baud must be positive, not {baud}")
        self.url = port
        self.baud = baud
        self._on_read = on_read
        self._framer = Framer(suffix, max_frame)
        self._port: serial.SerialBase | None = None
        self._watched: tuple[asyncio.AbstractEventLoop, int] | None = None

    @property
    def port(self) -> serial.SerialBase | None:
        """The open pyserial port, or None while disconnected."""
        return self._port

    def _open(self) -> None:
        # exclusive: a second process on the same scanner would steal half of
        # every frame; refusing to open is the clearer failure.
        port = serial.serial_for_url(self.url, baudrate=self.baud, timeout=0, exclusive=True)
        if _fileno(port) is None:
            # No descriptor to watch (loop://, some URL handlers): a worker
            # thread blocks in read() instead, and close() wakes it.
            port.timeout = None
        self._framer.reset()
        self._port = port

    async def _read_chunk(self) -> bytes:
        port = self._port
        if port is None:
            raise EOFError("port closed")
        fd = _fileno(port)
        if fd is None:
            return await asyncio.get_running_loop().run_in_executor(None, _blocking_read, port)
        while True:
            await self._readable(fd)
            # Raises SerialException (an OSError) when the device is gone:
            # readable but no data, or EIO.
            data = port.read(_READ_SIZE)
            if data:
                return data

    async def _readable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        self._watched = (loop, fd)
        try:
            await ready
        finally:
            self._unwatch()

    def _unwatch(self) -> None:
        # Must happen before the port closes: a recycled fd number would
        # otherwise lose someone else's reader.
        if self._watched is not None:
            loop, fd = self._watched
            self._watched = None
            if not loop.is_closed():
                loop.remove_reader(fd)

    def _consume(self, chunk: bytes) -> None:
        at = self._now()
        for frame, truncated in self._framer.feed(chunk):
            self._hand_over(self._on_read, Read(self.name, frame.decode("latin-1"), at, truncated))

    def _close_device(self) -> None:
        self._unwatch()
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except OSError:  # SerialException is one
                pass  # an unplugged device can fail to close; it is gone either way


def _fileno(port: serial.SerialBase) -> int | None:
    try:
        return port.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return None


def _blocking_read(port: serial.SerialBase) -> bytes:
    first = port.read(1)
    if not first:
        raise EOFError("port closed")
    return first + port.read(port.in_waiting)
