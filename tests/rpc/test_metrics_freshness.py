"""A registry process and a gate streaming to it, both scraped; then the registry goes away.

Real parts: `gated registry serve` in its own process (gRPC on loopback,
`--metrics` on another port), a gate in this process with ptys, a real
journal and MockFactory pins, its admin service on a unix socket, and HTTP
scrapes parsed with prometheus_client's parser. The registry counts the
gate's events and the gate as connected; the gate says its cache is fresh,
then, kill -9 of the registry and the short limit later, stale (status,
admin service, metrics), refuses printed badges as its `when_stale =
"deny_static"` says while phones still pass, and is fresh again when the
registry is back. Every metric the Grafana dashboard names is in one of the
two scrapes.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import subprocess
import sys
import time

import aiohttp
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from prometheus_client.parser import text_string_to_metric_families

from gated.config import load_config
from gated.gate.daemon import Gate
from gated.gate.screen import unit_status_of
from gated.registry.store import RegistryStore
from gated.rpc.admin import AdminClient, admin_target
from gated.validation import TicketRecord
from gated.validation.token import mint_dynamic, mint_static
from tests.conftest import REPO, until
from tests.gate.test_metrics import free_port
from tests.gatekit import KEY, Pty, make_gate_dir

pytestmark = pytest.mark.timeout(180)

STALE_AFTER_S = 3.0
FIRST = [5205320758 + i for i in range(10)] + [1_000_000 * k + 7 for k in (1, 2, 3)]  # 10-digit numbers, blocks
LATER = list(range(1, 6)) + random.Random(63).sample(range(1 << 40, 1 << 63), 3)  # consecutive, random 63-bit
ABSENT = [5205320758 + 500, (1 << 63) - 3]


class Registry:
    """`gated registry serve --plaintext --http off --metrics ...` in its own process."""

    def __init__(self, db, port: int, metrics_port: int) -> None:
        self.db, self.port, self.metrics_port = db, port, metrics_port
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gated", "registry", "serve", "--db", str(self.db), "--listen", f"127.0.0.1:{self.port}",
             "--plaintext", "--http", "off", "--metrics", f"127.0.0.1:{self.metrics_port}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )

        def ready() -> None:
            for line in self.proc.stdout:
                if line.startswith("registry metrics at"):
                    return
            raise AssertionError("the registry did not start")

        await asyncio.to_thread(ready)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


async def scrape(url: str) -> tuple[dict, set[str]]:
    """(samples by (name, sorted labels), every name the exposition declares or carries)."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        text = await response.text()
    samples, names = {}, set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        for s in family.samples:
            names.add(s.name)
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, names


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads((REPO / "docs" / "grafana" / "gated.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    assert len([p for p in dashboard["panels"] if p["type"] != "row"]) >= 12 and all(exprs)
    return {name for expr in exprs for name in re.findall(r"\bgated_[a-z0-9_]+", expr)}


def test_a_registry_counts_a_streaming_gate_and_the_gate_goes_stale_without_it(tmp_path):
    db, port, registry_metrics, gate_metrics = tmp_path / "registry.db", free_port(), free_port(), free_port()
    with RegistryStore(db) as store:
        store.put_tickets([(TicketRecord(ticket_id=t, category="guest", zones=("hall",)), "") for t in FIRST + LATER],
                          record_changes=False)
        store.add_key(1, KEY)
    config = make_gate_dir(tmp_path, gate_id="north-3", tickets=None, passage=False, emergency=False, rate_burst=1000,
                           uplink=f'target = "127.0.0.1:{port}"\nplaintext = true\nreconnect_max_s = 1\n'
                                  f"stale_after_s = {STALE_AFTER_S}")
    config.write_text(config.read_text().replace("[policy]\n", '[policy]\nwhen_stale = "deny_static"\n', 1)
                      + f'\n[metrics]\naddress = "127.0.0.1:{gate_metrics}"\n')
    scanners = Pty(tmp_path / "scanner-in-1"), Pty(tmp_path / "scanner-out-1")
    registry = Registry(db, port, registry_metrics)
    gate_url, registry_url = f"http://127.0.0.1:{gate_metrics}/metrics", f"http://127.0.0.1:{registry_metrics}/metrics"
    g = {"gate": "north-3"}

    async def scenario():
        await registry.start()
        gate = Gate(load_config(config, check_files=True), pin_factory=MockFactory(pin_class=MockPWMPin))
        await gate.start()
        lane = gate.lanes["in-1"]
        admin = AdminClient(admin_target(socket_path=tmp_path / "admin.sock"))
        try:
            assert gate.freshness.stale  # no cache on disk: nothing the registry ever confirmed
            await until(lambda: len(gate.validator.cache) == len(FIRST + LATER) and not gate.freshness.stale, timeout=20)
            await until(gate.inputs_connected)

            for n, ticket in enumerate(FIRST):  # the morning: phones and badges, then two ids nobody holds
                scanners[0].send(mint_dynamic(KEY, 1, ticket, time.time()) if n % 2 else mint_static(KEY, 1, ticket, 0))
            for ticket in ABSENT:
                scanners[0].send(mint_dynamic(KEY, 1, ticket, time.time()))
            await until(lambda: lane.counters.decisions == len(FIRST) + len(ABSENT), timeout=20)
            await until(lambda: gate.journal.backlog() == 0, timeout=20)

            reg, reg_names = await scrape(registry_url)
            records = len(gate.journal.tail(10_000))  # decisions and passages, all stored by now
            assert value(reg, "gated_registry_events_stored_total") == records
            assert value(reg, "gated_registry_duplicates_dropped_total") == 0
            assert value(reg, "gated_registry_connected_gates") == 1
            assert value(reg, "gated_registry_fanout_seconds_count") >= 1  # the entries went out as usage deltas
            assert value(reg, "gated_registry_snapshot_builds_total") == 1  # the gate had nothing: one snapshot
            version = value(reg, "gated_registry_entitlement_version")
            await until(lambda: gate.validator.cache.version == version, timeout=10)

            mine, gate_names = await scrape(gate_url)
            assert value(mine, "gated_decisions_total", lane="in-1", reason="ok", **g) == len(FIRST)
            assert value(mine, "gated_decisions_total", lane="in-1", reason="unknown_ticket", **g) == len(ABSENT)
            assert value(mine, "gated_uplink_connected", **g) == 1 and value(mine, "gated_cache_stale", **g) == 0
            assert value(mine, "gated_cache_age_seconds", **g) < STALE_AFTER_S
            assert value(mine, "gated_cache_version", **g) == version
            assert value(mine, "gated_journal_backlog", **g) == 0
            assert value(mine, "gated_clock_offset_seconds", **g) is not None
            missing = dashboard_metric_names() - reg_names - gate_names
            assert not missing, f"the dashboard names metrics nobody exports: {sorted(missing)}"

            quiet_since = gate.uplink.confirmations
            await asyncio.sleep(STALE_AFTER_S * 1.5)  # nothing happens: heartbeats keep the cache fresh
            assert not gate.freshness.stale and gate.uplink.confirmations > quiet_since

            registry.kill()  # kill -9: the registry is gone without a word
            stale_in = await until(lambda: gate.freshness.stale, timeout=STALE_AFTER_S + 10)
            assert stale_in < STALE_AFTER_S + 5
            status = await asyncio.to_thread(admin.status)
            assert unit_status_of(gate)()["cache_stale"] is True  # the operator screen's state line
            assert status["cache_freshness"]["stale"] is True and status["cache_freshness"]["age_s"] >= STALE_AFTER_S
            mine, _ = await scrape(gate_url)
            assert value(mine, "gated_cache_stale", **g) == 1 and value(mine, "gated_uplink_connected", **g) == 0
            assert value(mine, "gated_cache_age_seconds", **g) >= STALE_AFTER_S

            # deny_static: a printed badge waits for the registry, a phone's expiring code still passes
            decided = lane.counters.decisions
            scanners[0].send(mint_static(KEY, 1, LATER[0], 0))
            scanners[0].send(mint_dynamic(KEY, 1, LATER[1], time.time()))
            await until(lambda: lane.counters.decisions == decided + 2, timeout=10)
            assert [r.reason for r in gate.journal.tail(10_000) if r.kind == "decision"][-2:] == ["cache_stale", "ok"]
            mine, _ = await scrape(gate_url)
            assert value(mine, "gated_decisions_total", lane="in-1", reason="cache_stale", **g) == 1

            await registry.start()  # back: the watch opens at the current version, heartbeat at once
            await until(lambda: not gate.freshness.stale, timeout=20)
            mine, _ = await scrape(gate_url)
            assert value(mine, "gated_cache_stale", **g) == 0 and value(mine, "gated_uplink_reconnects_total", **g) >= 1
            assert (await asyncio.to_thread(admin.status))["cache_freshness"]["stale"] is False
            assert gate.freshness.transitions == 3  # fresh, stale, fresh: one log line each
            scanners[0].send(mint_static(KEY, 1, LATER[2], 0))
            await until(lambda: lane.counters.decisions == decided + 3, timeout=10)
            assert [r.reason for r in gate.journal.tail(10_000) if r.kind == "decision" and r.ticket_id == LATER[2]] == ["ok"]
        finally:
            admin.close()
            await gate.stop()

    try:
        asyncio.run(scenario())
    finally:
        registry.stop()
        for pty in scanners:
            pty.close()
