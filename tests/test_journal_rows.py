"""The journal read as rows for the uplink: what `unacked` holds, in the same order, without a Record each."""

from __future__ import annotations

import json

from gated.journal import Journal

REG_NO = 5205320758
HIGH_U64 = (1 << 64) - 1  # the largest ticket id; SQLite holds it as -1


def test_rows_carry_what_the_records_carry_and_the_acknowledged_ones_only_when_resending(tmp_path):
    with Journal(tmp_path / "j.db", "gate-a", checkpoint_every_s=None) as journal:
        for i, tid in enumerate((100_001, REG_NO, 3_000_017, 0x5DEECE66D3A1B2C9, HIGH_U64, None)):
            journal.append("decision", at=1_764_230_400.0 + i, lane="in-1" if tid else None, ticket_id=tid,
                           reason="ok" if tid else None, payload={"zone": "hall-a", "n": i, "名": "张"})
        journal.mark_acked(2)

        rows = journal.unacked_rows(0, 100)
        records = journal.unacked(0, 100)
        assert [(r.seq, r.at, r.kind, r.lane, r.ticket_id, r.reason, r.payload) for r in records] == \
               [(*row[:6], json.loads(row[6])) for row in rows]
        assert [row[4] for row in rows] == [3_000_017, 0x5DEECE66D3A1B2C9, HIGH_U64, None]
        assert journal.unacked_rows(4, 1) == rows[2:3]  # after seq 4: seq 5

        # after the registry lost what it had acknowledged (no bytes kept: each record as its row)
        resent = [row for _seq, row in journal.wire_since(0, 100)]
        assert [row[0] for row in resent] == [1, 2, 3, 4, 5, 6] and resent[2:] == rows
        assert [row for _seq, row in journal.wire_since(1, 2)] == resent[1:3]
