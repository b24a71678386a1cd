"""The uplink's bench figures, at toy sizes: each measurement runs end to end and reports sane numbers."""

from __future__ import annotations

import pytest

from gated.bench.rpc import (
    measure_backlog_replay,
    measure_import,
    measure_propagation,
    measure_snapshot,
)

pytestmark = pytest.mark.timeout(120)


def test_backlog_replay_delivers_every_event_once():
    result = measure_backlog_replay(1500, batch_size=400)
    assert result["stored_once"] and result["journal_backlog_after"] == 0
    assert result["events_per_s"] > 0 and result["seconds"] > 0


def test_propagation_from_gate_a_to_gate_b():
    result = measure_propagation(5, interval_s=0.0)
    assert result["samples"] == 5
    assert 0 < result["median_s"] <= result["p99_s"] <= result["max_s"] < 2.0


def test_snapshot_transfer_and_apply():
    result = measure_snapshot(3000)
    assert result["loaded_tickets"] == 3000 and result["bytes"] > 3000 * 20
    assert result["transfer_s"] > 0 and result["apply_s"] > 0


def test_import_while_a_gate_watches():
    result = measure_import(2000, venue=50)
    assert result["gate_tickets"] == 2050 and result["default_limit_client_converged"] is True
    assert 0 < result["largest_update_bytes"] <= 1 << 20 and result["gettime_samples"] > 0
    assert 0 < result["gettime_median_ms"] <= result["gettime_p99_ms"] <= result["gettime_max_ms"]


def test_a_measured_registry_has_finished_starting(tmp_path):
    """A measurement starts once the registry has started, its pages too (they start by default,
    after it listens): what it times is the registry at work, not its start."""
    import urllib.request

    from gated.bench.rpc import registry_serve

    with registry_serve(tmp_path / "r.db", ["--plaintext", "--http", "127.0.0.1:0"], tmp_path / "explicit.log") as served:
        assert served.pages is not None
    # Looked for every millisecond: the pages start 25 ms and more after "listening".
    with registry_serve(tmp_path / "r.db", ["--plaintext"], tmp_path / "default.log", poll_s=0.001) as served:
        assert served.pages is not None  # not asked for, started all the same: waited for
        with urllib.request.urlopen(served.pages, timeout=10) as reply:  # the sign-in page
            assert reply.status == 200 and b"sign" in reply.read().lower()
    with registry_serve(tmp_path / "r.db", ["--plaintext", "--http", "off"], tmp_path / "off.log") as served:
        assert served.pages is None and "registry pages at" not in (tmp_path / "off.log").read_text()
