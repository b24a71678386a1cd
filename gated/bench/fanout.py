"""What one gRPC write to a watching gate costs the registry's process, alone.

A `grpc.aio` server with the registry's own `WatchEntitlements` handler
shape (one asyncio queue per watch, the watch's coroutine taking from it and
writing) and `watches` watch streams opened from four client processes
(25 streams to a channel, as `gated bench fleet` opens them). A delta of 40
usage ops (the size a busy group commit hands out) goes to every watch every
`interval_s`; each client counts what it reads. Reported: the server
process's CPU (every thread) per message written, and how late the loop's
own timer ran meanwhile. Three ways of writing, each measured:

- ``message``: the handler yields the message, gRPC serializes it per stream;
- ``bytes``: the handler yields bytes serialized once for every stream;
- ``write``: `context.write` of those bytes instead of yielding them.

Why: at 500 gates the registry's event loop spends most of its time writing
deltas; this says what a write costs without the rest of the registry
(README, "The fleet").

Run standalone: `python -m gated.bench.fanout [--watches 500] [--seconds 10]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from typing import Any

from gated import eventloop

MODES = ("message", "bytes", "write")
_CLIENTS = 4
_PER_CHANNEL = 25
_OPS = 40


def _delta():
    from gated.rpc.v1 import registry_pb2 as pb

    msg = pb.WatchEntitlementsResponse(delta=pb.Delta(base_version=1, version=2))
    for i in range(_OPS):
        op = msg.delta.ops.add()
        op.set_usage.ticket_id = 5_205_320_758 + 7 * i  # 10-digit registration numbers
        op.set_usage.entries_used = 1
    return msg


def _client(port: int, watches: int, read) -> None:
    """One load process: `watches` watch streams, counting the messages they read in `read`
    (a shared value only this process adds to)."""
    import grpc

    from gated.rpc.v1 import registry_pb2 as pb
    from gated.rpc.v1 import registry_pb2_grpc as pb_grpc

    async def run() -> None:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range((watches + _PER_CHANNEL - 1) // _PER_CHANNEL)]

        async def watch(i: int) -> None:
            call = pb_grpc.RegistryServiceStub(channels[i // _PER_CHANNEL]).WatchEntitlements(pb.WatchEntitlementsRequest())
            async for _ in call:
                read.value += 1

        await asyncio.gather(*(watch(i) for i in range(watches)), return_exceptions=True)

    eventloop.run(run())


def _server_handlers(servicer, mode: str):
    """The generated handlers, the watch's serializer passing bytes through in the bytes modes."""
    import grpc

    from gated.rpc.v1 import registry_pb2_grpc as pb_grpc

    class _Capture:
        handlers: dict = {}

        def add_generic_rpc_handlers(self, _handlers) -> None:
            pass

        def add_registered_method_handlers(self, _name, handlers) -> None:
            self.handlers = dict(handlers)

    capture = _Capture()
    pb_grpc.add_RegistryServiceServicer_to_server(servicer, capture)
    handlers = capture.handlers
    if mode != "message":
        handlers["WatchEntitlements"] = handlers["WatchEntitlements"]._replace(
            response_serializer=lambda m: m if type(m) is bytes else m.SerializeToString())
    return grpc.method_handlers_generic_handler("gated.v1.RegistryService", handlers)


async def _measure(mode: str, watches: int, seconds: float, interval_s: float) -> dict[str, Any]:
    import grpc

    from gated.rpc.v1 import registry_pb2_grpc as pb_grpc

    queues: list[asyncio.Queue] = []

    class Watching(pb_grpc.RegistryServiceServicer):
        async def WatchEntitlements(self, request, context):  # noqa: N802 - gRPC's name
            queue: asyncio.Queue = asyncio.Queue()
            queues.append(queue)
            while True:
                item = await queue.get()
                if item is None:  # the measurement is over: the stream ends cleanly
                    return
                if mode == "write":
                    await context.write(item)
                else:
                    yield item

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_server_handlers(Watching(), mode),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    spawn = multiprocessing.get_context("spawn")
    counts = [spawn.Value("q", 0, lock=False) for _ in range(_CLIENTS)]
    shares = [watches // _CLIENTS + (i < watches % _CLIENTS) for i in range(_CLIENTS)]
    clients = [spawn.Process(target=_client, args=(port, n, c), daemon=True) for n, c in zip(shares, counts) if n]
    for p in clients:
        p.start()
    try:
        deadline = time.monotonic() + 60
        while len(queues) < watches:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(queues)} of {watches} watches opened in 60 s")
            await asyncio.sleep(0.05)
        delta = _delta()
        item = delta if mode == "message" else delta.SerializeToString()
        await asyncio.sleep(0.5)
        read_before = sum(c.value for c in counts)
        cpu_before, started = time.process_time(), time.perf_counter()
        rounds, late = 0, []
        while time.perf_counter() - started < seconds:
            for queue in queues:
                queue.put_nowait(item)
            rounds += 1
            asked = time.perf_counter()
            await asyncio.sleep(interval_s)
            late.append(time.perf_counter() - asked - interval_s)
        await asyncio.sleep(0.5)  # the last round read
        cpu = time.process_time() - cpu_before
        wall = time.perf_counter() - started
        written = rounds * watches
        read = sum(c.value for c in counts) - read_before
    finally:
        for queue in queues:
            queue.put_nowait(None)
        await asyncio.sleep(0.2)
        for p in clients:
            p.kill()
        await server.stop(0.5)
    return {
        "mode": mode, "watches": watches, "rounds": rounds, "messages_written": written, "messages_read": read,
        "message_bytes": delta.ByteSize(),
        "cpu_us_per_write": round(cpu / written * 1e6, 1),
        "server_cpu_percent": round(cpu / wall * 100, 1),
        "loop_late_p50_ms": round(statistics.median(late) * 1000, 2),
    }


def measure(watches: int = 500, seconds: float = 10.0, interval_s: float = 0.05,
            modes: tuple[str, ...] = MODES) -> list[dict[str, Any]]:
    """Each mode in turn, on a fresh server and fresh clients."""
    return [eventloop.run(_measure(mode, watches, seconds, interval_s)) for mode in modes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gated.bench.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--watches", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between rounds (default 0.05)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.watches, args.seconds, args.interval), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
