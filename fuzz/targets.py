"""The fuzz targets: `TARGETS[name](data: bytes)` raises only on a real defect.

Each target catches exactly the errors its surface documents for bad input
(gated/errors.py: a `GatedError` subclass that is also a ValueError or
RuntimeError) and lets everything else escape, which atheris reports as a
crash with the input that caused it.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

from google.protobuf.message import DecodeError

from gated.config import load_config
from gated.drivers.base import Framer
from gated.drivers.hid_scanner import LAYOUTS, KeyTranslator
from gated.errors import ConfigError, DeltaRefused, SnapshotError
from gated.rpc import convert
from gated.rpc.v1 import registry_pb2 as pb
from gated.validation import EntitlementCache, TicketRecord, encode_snapshot
from gated.validation.token import Reason, decode_body, mint_dynamic, mint_static, verify_code, verify_manual

KEYS = {1: bytes(range(32)), 7: bytes(range(32, 64))}
NOW = 1_790_000_000.0
SUFFIXES = ("CR", "LF", "CRLF")


class PropertyFailed(AssertionError):
    """A target's stated property does not hold for this input."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PropertyFailed(message)


# --------------------------------------------------------------- token.py


def token(data: bytes) -> None:
    """verify_code never raises, and a code minted from the input's numbers verifies to those numbers."""
    text = data.decode("latin-1")
    result = verify_code(text, KEYS, NOW)
    _check(isinstance(result.reason, Reason), "verify_code returned no reason")
    _check((result.reason == Reason.OK) == (result.ticket_id is not None and result.reason == Reason.OK), "ok without ticket")
    decode_body(text)
    if len(data) >= 11:
        kid = 1 if data[0] & 1 else 7
        ticket = int.from_bytes(data[1:9], "big")
        serial = int.from_bytes(data[9:11], "big")
        badge = verify_code(mint_static(KEYS[kid], kid, ticket, serial), KEYS, NOW)
        _check((badge.reason, badge.ticket_id, badge.serial, badge.kid) == (Reason.OK, ticket, serial, kid), f"static round trip {ticket}")
        phone = verify_code(mint_dynamic(KEYS[kid], kid, ticket, NOW), KEYS, NOW)
        _check((phone.reason, phone.ticket_id) == (Reason.OK, ticket), f"dynamic round trip {ticket}")
    if len(data) >= 16:
        verify_manual(int.from_bytes(data[:8], "big"), data[8:16].decode("latin-1"), KEYS, NOW)


# --------------------------------------------------------------- drivers/base.py Framer


def framer(data: bytes) -> None:
    """Frames never exceed max_frame, and are the same however the bytes are split."""
    if len(data) < 2:
        return
    suffix = SUFFIXES[data[0] % 3]
    max_frame = 1 + data[1] % 64
    stream = data[2:]
    whole = Framer(suffix, max_frame).feed(stream)
    for frame, _ in whole:
        _check(0 < len(frame) <= max_frame, f"frame of {len(frame)} bytes with max_frame {max_frame}")
    bytewise_framer = Framer(suffix, max_frame)
    bytewise = [f for i in range(len(stream)) for f in bytewise_framer.feed(stream[i:i + 1])]
    _check(whole == bytewise, f"Framer({suffix!r}, {max_frame}) fed {stream!r}: at once {whole!r}, byte by byte {bytewise!r}")


# --------------------------------------------------------------- drivers/hid_scanner.py KeyTranslator


def hid_keys(data: bytes) -> None:
    """Any key event sequence gives codes of at most max_frame chars, the same on a second run."""
    if len(data) < 2:
        return
    layout = LAYOUTS[data[0] % len(LAYOUTS)]
    max_frame = 1 + data[1] % 64
    events = [((data[i] | (data[i + 1] & 1) << 8), (data[i + 1] >> 1) % 3) for i in range(2, len(data) - 1, 2)]

    def run() -> list:
        t = KeyTranslator(layout, max_frame)
        return [out for code, value in events if (out := t.feed(code, value)) is not None]

    first = run()
    for code, _ in first:
        _check(0 < len(code) <= max_frame and isinstance(code, str), f"code {code!r} with max_frame {max_frame}")
    _check(first == run(), "KeyTranslator is not deterministic")


# --------------------------------------------------------------- config.py


_CONFIG_DIR = Path(tempfile.mkdtemp(prefix="gated-fuzz-config-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
(_CONFIG_DIR / "keys.json").write_text("{}")


def config(data: bytes) -> None:
    """load_config gives a Config or one ConfigError of one line naming the file."""
    path = _CONFIG_DIR / "gate.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        message = str(exc)
        _check("\n" not in message and message.startswith(str(path)), f"not a one-line error naming the file: {message[:200]!r}")


# --------------------------------------------------------------- validation/cache.py


def _seal(body: bytes) -> bytes:
    """The input with a valid CRC trailer, so the fuzzer reaches the parser behind the checksum."""
    return body + struct.pack("<I", zlib.crc32(body))


_BASE = [TicketRecord(10, "guest", zones=("hall",), max_entries=1),
         TicketRecord(5205320758, "vip", zones=("hall", "lounge"), benefits=(("lunch", 2),), name="Wang Fang", phone_last4="1234"),
         TicketRecord(3_000_017, "staff", zones=("hall",), windows=((1_700_000_000, 1_900_000_000),))]
_BASE_SNAPSHOT = encode_snapshot(5, _BASE)


def snapshot(data: bytes) -> None:
    """load_snapshot takes a snapshot or raises SnapshotError, all or nothing; a loaded one round-trips."""
    cache = EntitlementCache()
    cache.load_snapshot(_BASE_SNAPSHOT)
    try:
        cache.load_snapshot(_seal(data))
    except SnapshotError:
        _check(cache.to_snapshot() == _BASE_SNAPSHOT and cache.version == 5, "a refused snapshot changed the cache")
        return
    again = EntitlementCache()
    again.load_snapshot(cache.to_snapshot())
    _check((again.version, len(again)) == (cache.version, len(cache)), "snapshot round trip changed version or size")
    _check(again.to_snapshot() == cache.to_snapshot(), "snapshot round trip is not stable")


# --------------------------------------------------------------- rpc/convert.py (updates as the gate receives them)


def registry_update(data: bytes) -> None:
    """An update off the wire is applied whole or refused (DeltaRefused/SnapshotError), never half."""
    if not data:
        return
    kind, body = data[0] % 2, data[1:]
    if kind == 1:
        msg = pb.WatchKeysResponse()
        try:
            msg.ParseFromString(body)
        except DecodeError:
            return  # grpc refuses the message before the gate sees it
        try:
            change = convert.key_change_from_proto(msg)
        except DeltaRefused:
            return
        for kid, key in change.add:
            _check(0 <= kid <= 255 and len(key) == 32, f"key change let kid {kid} through")
        return
    cache = EntitlementCache()
    cache.load_snapshot(_BASE_SNAPSHOT)
    before = cache.to_snapshot()
    assembler = convert.SnapshotAssembler()
    updates = []
    # the body is a sequence of length-prefixed WatchEntitlementsResponse messages, as a watch streams them
    pos = 0
    while pos + 2 <= len(body) and len(updates) < 16:
        n = int.from_bytes(body[pos:pos + 2], "little")
        updates.append(body[pos + 2:pos + 2 + n])
        pos += 2 + n
    for raw in updates:
        update = pb.WatchEntitlementsResponse()
        try:
            update.ParseFromString(raw)
        except DecodeError:
            return
        which = update.WhichOneof("update")
        try:
            if which == "snapshot":
                complete = assembler.add(update.snapshot)
                if complete is not None:
                    fresh = EntitlementCache()
                    fresh.load_snapshot(complete[1])
                    cache.table, cache.version = fresh.table, fresh.version
                    before = cache.to_snapshot()
            elif which == "delta":
                if assembler.in_progress:
                    return
                cache.apply(convert.delta_from_proto(update.delta))
                before = cache.to_snapshot()
        except (DeltaRefused, SnapshotError):
            _check(cache.to_snapshot() == before, "a refused update changed the cache")
            return


TARGETS = {
    "token": token,
    "framer": framer,
    "hid_keys": hid_keys,
    "config": config,
    "snapshot": snapshot,
    "registry_update": registry_update,
}
