"""Several registry instances on one PostgreSQL: how long usage counted at one takes to reach a gate on the other.

`measure_cross_instance(url, samples)` starts two `gated registry serve`
processes on the database `url` (plaintext, loopback), gate A's uplink on
instance A and gate B's on instance B, and admits one ticket at a time at
gate A (decide, commit, journal, wake): the time until gate B's cache holds
that ticket inside. The same run repeats with both gates on instance A, the
one-instance path, for comparison. Tickets are 10-digit registration
numbers, consecutive.

Run standalone: `python -m gated.bench.instances --db postgresql://... [--samples N]`
prints one JSON object. The database should be empty (a fresh one per run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from gated import eventloop
from gated.bench.rpc import _KEY, _percentile, admit_and_wait, registry_serve
from gated.config import UplinkSection
from gated.validation import TicketRecord

__all__ = ["measure_cross_instance"]

FIRST = 5205320758
_SERVE = ("--plaintext", "--http", "off")
_READY_TIMEOUT_S = 120.0


def _plaintext(port: int) -> UplinkSection:
    return UplinkSection(f"127.0.0.1:{port}", True, None, None, None, 1.0)


def _figures(delays: list[float]) -> dict[str, Any]:
    return {
        "samples": len(delays),
        "median_ms": round(statistics.median(delays) * 1000, 2),
        "p99_ms": round(_percentile(delays, 99) * 1000, 2),
        "max_ms": round(max(delays) * 1000, 2),
    }


def measure_cross_instance(url: str, samples: int = 200, interval_s: float = 0.02) -> dict[str, Any]:
    from gated.registry.store import RegistryStore

    ids = [FIRST + i for i in range(2 * samples)]
    with RegistryStore(url) as store:
        if store.ticket_count():
            raise RuntimeError("measure_cross_instance needs an empty registry database")
        store.put_tickets([(TicketRecord(ticket_id=t, category="guest", zones=("hall-a",)), "") for t in ids],
                          record_changes=False)
        store.add_key(1, _KEY)
    with tempfile.TemporaryDirectory(prefix="gated-instances-") as tmp:
        tmp = Path(tmp)
        with registry_serve(url, _SERVE, tmp / "a.log", _READY_TIMEOUT_S) as a, \
                registry_serve(url, _SERVE, tmp / "b.log", _READY_TIMEOUT_S) as b:
            across = eventloop.run(admit_and_wait(tmp, {"gate-a": _plaintext(a.port), "gate-b": _plaintext(b.port)},
                                                  ids[:samples], interval_s))
            same = eventloop.run(admit_and_wait(tmp, {"gate-a": _plaintext(a.port), "gate-b": _plaintext(a.port)},
                                                ids[samples:], interval_s))
    return {
        "across_instances": _figures(across),
        "one_instance": _figures(same),
        "ids": f"10-digit registration numbers, consecutive from {FIRST}",
        "path": "gate A journal (fsync) -> uplink -> instance A (PostgreSQL commit, change log, NOTIFY) "
                "-> instance B follows -> delta -> gate B cache",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gated.bench.instances", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="postgresql://... (an empty database)")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)
    print(json.dumps(measure_cross_instance(args.db, args.samples), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
