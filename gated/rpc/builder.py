"""The builder process: the per-ticket work of a large delta, away from the deciding loop.

A large delta's tickets must each be parsed, converted, checked and packed
into columns: a Python loop over every ticket. In a thread of the gate it
would hold the interpreter lock in long stretches and every lane would wait
for it; here it runs in one child process (`python -m gated.rpc.builder`,
started on first use, kept for the next delta, at a lower CPU priority than
the gate), and the gate gets back a compact block of columns
(`convert.bulk_upserts`) that the cache merges in whole-array steps
(`EntitlementCache.stage_bulk`).

The child speaks over its stdin and stdout: a request is an 8-byte
little-endian length and a serialized `gated.v1.Delta`; an answer is one
byte (`B` columns, `N` not a bulk delta, `R` refused) then a length and the
columns or the refusal's one line. It exits when its stdin closes (the gate
stopped or died).

If the process cannot be started or dies, `bulk_upserts` raises
`BuilderUnavailable` and the uplink converts in a thread as before: slower
for the lanes, never wrong.
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import threading
from typing import BinaryIO

__all__ = ["BuilderUnavailable", "bulk_upserts"]

#: The builder yields the CPU to the gate's own threads (lanes, journal) when both want it.
BUILDER_NICENESS = 10
_LEN = struct.Struct("<Q")


class BuilderUnavailable(RuntimeError):
    """The builder process could not do the work (not started, or died)."""


class _Builder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            proc = self._proc = subprocess.Popen(
                [sys.executable, "-m", "gated.rpc.builder"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                close_fds=True)
        return proc

    def call(self, raw: bytes) -> bytes | str | None:
        """One request, blocking (a worker thread's call: the pipe's reads and writes release the lock)."""
        with self._lock:
            try:
                proc = self._start()
                proc.stdin.write(_LEN.pack(len(raw)))
                proc.stdin.write(raw)
                proc.stdin.flush()
                kind = _read(proc.stdout, 1)
                payload = _read(proc.stdout, _LEN.unpack(_read(proc.stdout, _LEN.size))[0])
            except (OSError, ValueError, EOFError) as exc:
                self._stop()
                raise BuilderUnavailable(f"builder process failed: {exc!r}") from None
        if kind == b"B":
            return payload
        if kind == b"R":
            return payload.decode("utf-8", "replace")
        return None

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()


def _read(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("the builder process closed its output")
    return data


_builder = _Builder()


async def bulk_upserts(raw: bytes) -> bytes | str | None:
    """`convert.bulk_upserts(raw)`, run in the builder process."""
    return await asyncio.to_thread(_builder.call, raw)


def main() -> None:
    """The child: answer requests until stdin closes."""
    from gated.rpc import convert

    try:
        os.nice(BUILDER_NICENESS)
    except OSError:
        pass
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by accident goes to stderr, never into the answers
    while True:
        head = requests.read(_LEN.size)
        if len(head) != _LEN.size:
            return
        raw = _read(requests, _LEN.unpack(head)[0])
        out = convert.bulk_upserts(raw)
        if out is None:
            kind, payload = b"N", b""
        elif isinstance(out, str):
            kind, payload = b"R", out.encode("utf-8")
        else:
            kind, payload = b"B", out
        answers.write(kind + _LEN.pack(len(payload)) + payload)
        answers.flush()


if __name__ == "__main__":
    main()
