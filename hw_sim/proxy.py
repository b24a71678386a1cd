"""A TCP proxy the simulator holds between the gate and the registry: the network cable it can pull.

The gate's config names the proxy's address as its uplink target; the proxy
forwards each connection to the registry, byte for byte (gRPC over HTTP/2
sees nothing but a TCP stream). Two ways to pull the cable:

- `cut("drop")`: every live connection is reset (SO_LINGER 0, an RST as a
  router that lost its route would eventually cause) and new ones are
  refused at once: the listening socket is closed. The gate notices in
  milliseconds and goes offline.
- `cut("blackhole")`: every live connection stops forwarding (bytes are read
  and thrown away, nothing comes back) and new connections are accepted and
  held without forwarding: a cable pulled somewhere past the switch. The
  gate learns only from its own keepalives and deadlines.

`restore()` listens again (on the same port) and forwards new connections;
connections held in a blackhole are closed then, as a TCP peer eventually
gives up on them, so the gate reconnects through the restored path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass

import structlog

log = structlog.get_logger("hw_sim.proxy")

CUT_MODES = ("drop", "blackhole")
_CHUNK = 65536


@dataclass(slots=True, eq=False)  # identity: a set of live links
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None
    tasks: list[asyncio.Task]
    held: bool = False  # a blackholed connection: read and discarded


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with an RST, not a FIN: the peer sees the connection die, not end."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class CuttableProxy:
    """Forward `listen_host:port` to `target`; `cut(mode)` and `restore()` as the simulator's faults."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1", listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host = listen_host
        self.port = listen_port
        self.mode: str | None = None  # None: forwarding; else the cut's mode
        self.cuts = 0
        self.connections = 0  # accepted in total
        self.bytes_up = 0
        self.bytes_down = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def live(self) -> int:
        return sum(1 for link in self._links if not link.held)

    def status(self) -> dict:
        return {"listen": self.address, "target": f"{self.target[0]}:{self.target[1]}", "cut": self.mode,
                "cuts": self.cuts, "connections": self.connections, "live": self.live, "held": len(self._links) - self.live,
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down}

    async def start(self) -> int:
        await self._listen()
        return self.port

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def stop(self) -> None:
        await self._close_listener()
        for link in list(self._links):
            self._end(link, reset=True)
        self._links.clear()

    async def cut(self, mode: str = "drop") -> dict:
        """Pull the cable; `mode` is "drop" (reset and refuse) or "blackhole" (hold, forward nothing)."""
        if mode not in CUT_MODES:
            raise ValueError(f"cut mode must be one of {', '.join(CUT_MODES)}, got {mode!r}")
        if self.mode is None:
            self.cuts += 1
        self.mode = mode
        if mode == "drop":
            await self._close_listener()
            for link in list(self._links):
                self._end(link, reset=True)
        else:
            for link in list(self._links):
                self._hold(link)
        log.warning("network_cut", mode=mode, listen=self.address)
        return self.status()

    async def restore(self) -> dict:
        was = self.mode
        self.mode = None
        for link in [link for link in self._links if link.held]:
            self._end(link, reset=True)
        if self._server is None:
            await self._listen()
        if was is not None:
            log.warning("network_restored", listen=self.address)
        return self.status()

    # ---- connections ----

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(writer, None, [])
        self._links.add(link)
        if self.mode is not None:  # blackholed: accepted, never answered
            self._hold(link, reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._end(link, reset=True)
            return
        if self.mode is not None:  # cut while connecting
            _reset(up_writer)
            self._hold(link, reader)
            return
        link.upstream = up_writer
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer, up=True)),
            asyncio.create_task(self._pump(link, up_reader, writer, up=False)),
        ]

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if link.held:
                    continue
                writer.write(data)
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        if not link.held:
            self._end(link, reset=False)

    def _hold(self, link: _Link, reader: asyncio.StreamReader | None = None) -> None:
        """Forward nothing more: the upstream side goes away, the gate's side hangs."""
        link.held = True
        _reset(link.upstream)
        link.upstream = None
        if reader is not None:
            link.tasks.append(asyncio.create_task(self._discard(reader)))

    async def _discard(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while await reader.read(_CHUNK):
                pass

    def _end(self, link: _Link, *, reset: bool) -> None:
        self._links.discard(link)
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()
        for writer in (link.client, link.upstream):
            if writer is None:
                continue
            if reset:
                _reset(writer)
            else:
                with contextlib.suppress(Exception):
                    writer.close()
