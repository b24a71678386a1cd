"""A gate reboots with damaged state files: it starts empty and says so, never crashes."""

from __future__ import annotations

import struct
import zlib

import pytest
from structlog.testing import capture_logs

from gated.gate.state import StateStore
from gated.validation import TicketRecord, encode_snapshot

GUESTS = [TicketRecord(ticket_id=5_205_320_758 + i, category="guest", zones=("hall-a",), max_entries=1) for i in range(50)]


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "meta",
    [
        '{"journal_seq": ' + deep(1_000) + "}",
        '{"journal_seq": ' + "[" * 100_000,
        deep(100_000),
        "[]",
        '{"journal_seq": [7]}',
        '{"journal_seq": "seven"}',
    ],
    ids=["nested-1000", "unclosed-100000", "nested-100000", "array", "seq-array", "seq-text"],
)
def test_a_damaged_cache_position_file_starts_the_gate_empty_with_one_log_line(tmp_path, meta):
    store = StateStore(tmp_path / "state")
    store.save_cache(encode_snapshot(3, GUESTS), 40)
    assert len(store.load_cache()[0]) == 50
    store.cache_meta_path.write_text(meta)
    with capture_logs() as logs:
        cache, seq = store.load_cache()
    assert (len(cache), cache.version, seq) == (0, 0, 0)
    assert [entry["event"] for entry in logs] == ["cache_file_unusable"]


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_saved_snapshot_whose_header_nests_deep_starts_the_gate_empty(tmp_path, depth):
    store = StateStore(tmp_path / "state")
    header = ("[" * depth).encode()
    body = b"GTSNAP\x00\x01" + struct.pack("<I", len(header)) + header
    store.save_cache(body + struct.pack("<I", zlib.crc32(body)), 40)
    with capture_logs() as logs:
        cache, seq = store.load_cache()
    assert (len(cache), seq) == (0, 0)
    assert logs[0]["event"] == "cache_file_unusable" and "nest" in logs[0]["error"]
