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


def test_usage_after_the_card_lost_the_journals_tail_is_replayed_at_every_later_start(tmp_path):
    """The card lost the journal's tail but the saved cache had seen it (its position is past the journal's
    end). Who is admitted after that is still counted after the next restart, and the one after."""
    import dataclasses
    import shutil

    from gated.gate.state import rebase_saved_seq
    from gated.usage import replay_usage
    from gated.journal import Journal

    first, later = GUESTS[0].ticket_id, GUESTS[1].ticket_id
    path = tmp_path / "journal.db"
    store = StateStore(tmp_path / "state")

    def passage(journal, ticket_id):
        journal.append("passage", at=1.0, lane="in-1", ticket_id=ticket_id,
                       payload={"zone": "hall-a", "direction": "in", "entries_used": 1, "inside": ["hall-a"]})

    def start():  # the daemon's start: cache, journal, position, replay
        cache, saved = store.load_cache()
        journal = Journal(path, "gate-a", checkpoint_every_s=None)
        replay_usage(journal, cache, rebase_saved_seq(store, journal, saved))
        return cache, journal

    with Journal(path, "gate-a", checkpoint_every_s=None) as journal:
        passage(journal, first)
    shutil.copyfile(path, tmp_path / "what-the-card-keeps.db")
    while True:  # boots the card will lose; the cache is saved with their position
        with Journal(path, "gate-a", checkpoint_every_s=None) as journal:
            passage(journal, GUESTS[2].ticket_id)
            if journal.high_water > 1 << 33:  # past any seq the next boot can take (a leap is < 2**20 + 2**32)
                store.save_cache(encode_snapshot(3, [dataclasses.replace(GUESTS[0], entries_used=1, inside=("hall-a",)), *GUESTS[1:]]),
                                 journal.high_water)
                break
    for p in tmp_path.glob("journal.db*"):
        p.unlink()
    shutil.copyfile(tmp_path / "what-the-card-keeps.db", path)

    with capture_logs() as logs:
        cache, journal = start()
    assert [e["event"] for e in logs] == ["journal_behind_saved_cache"]
    assert cache.get(first).entries_used == 1 and cache.get(later).entries_used == 0
    passage(journal, later)  # admitted after the rollback
    journal.close()
    for _ in range(2):
        cache, journal = start()
        journal.close()
        assert cache.get(later).entries_used == 1 and cache.get(later).inside == ("hall-a",)
        assert cache.get(first).entries_used == 1
