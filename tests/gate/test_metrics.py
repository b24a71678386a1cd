"""A gate's /metrics at the door: real ptys, a real journal, MockFactory pins, a real HTTP scrape.

What a scrape says is checked against what was scanned: decisions by lane and
reason, the scan-to-relay histogram's count, the journal backlog, the cache,
and the figures a gate without a registry gives (no uplink, never stale).
"""

from __future__ import annotations

import asyncio
import random
import socket
import time

import aiohttp
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from prometheus_client.parser import text_string_to_metric_families

from gated.config import load_config
from gated.errors import ConfigError
from gated.gate.daemon import Gate
from gated.validation import TicketRecord
from gated.validation.token import mint_dynamic, mint_static
from tests.conftest import until
from tests.gatekit import KEY, Pty, make_gate_dir

pytestmark = pytest.mark.timeout(120)

RELAY_IN = 17
CONSECUTIVE = list(range(1000, 1012))
REGISTRATION = [5205320758 + i for i in range(6)]  # 10-digit registration numbers
BLOCKS = [1_000_000 * k + n for k in (1, 2, 3) for n in (1, 2)]
RANDOM_63 = random.Random(14).sample(range(1 << 40, 1 << 63), 6)
PRESENT = CONSECUTIVE + REGISTRATION + BLOCKS + RANDOM_63
ABSENT = [1012, 5205320758 + 100, 1_000_000 * 4 + 1, (1 << 63) - 7]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_metrics(config_path, port: int, extra: str = "") -> None:
    config_path.write_text(config_path.read_text() + f'\n[metrics]\naddress = "127.0.0.1:{port}"\n{extra}\n')


async def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_a_scrape_counts_what_was_scanned_at_each_lane(tmp_path):
    tickets = [TicketRecord(ticket_id=t, category="guest", zones=("hall",)) for t in PRESENT]
    config_path = make_gate_dir(tmp_path, gate_id="door-7", tickets=tickets, passage=False, emergency=False, rate_burst=1000)
    port = free_port()
    with_metrics(config_path, port)
    scan_in, scan_out = Pty(tmp_path / "scanner-in-1"), Pty(tmp_path / "scanner-out-1")
    factory = MockFactory(pin_class=MockPWMPin)

    async def scenario():
        gate = Gate(load_config(config_path, check_files=True), pin_factory=factory)
        await gate.start()
        try:
            await until(gate.inputs_connected)
            now = time.time()
            for n, ticket in enumerate(PRESENT):  # phones and printed badges, each once
                scan_in.send(mint_dynamic(KEY, 1, ticket, now) if n % 2 else mint_static(KEY, 1, ticket, 0))
            for ticket in ABSENT:
                scan_in.send(mint_dynamic(KEY, 1, ticket, now))
            scan_in.send("noise\x00\xff")
            scan_in.send(mint_dynamic(bytes(32), 1, 1000, now))  # forged
            for ticket in CONSECUTIVE[:3]:
                scan_out.send(mint_dynamic(KEY, 1, ticket, now))
            lanes = gate.lanes
            total = len(PRESENT) + len(ABSENT) + 2 + 3
            await until(lambda: sum(lane.counters.decisions for lane in lanes.values()) == total, timeout=20)
            relay_pulses = sum(1 for s in factory.pin(RELAY_IN).states if s.state)

            samples = await scrape(f"http://127.0.0.1:{port}/metrics")
            g = {"gate": "door-7"}
            assert value(samples, "gated_decisions_total", lane="in-1", reason="ok", **g) == len(PRESENT)
            assert value(samples, "gated_decisions_total", lane="in-1", reason="unknown_ticket", **g) == len(ABSENT)
            assert value(samples, "gated_decisions_total", lane="in-1", reason="bad_format", **g) == 1
            assert value(samples, "gated_decisions_total", lane="in-1", reason="bad_signature", **g) == 1
            assert value(samples, "gated_decisions_total", lane="out-1", reason="ok", **g) == 3
            assert value(samples, "gated_passages_total", lane="in-1", **g) == len(PRESENT)
            # one observation per admission the relay opened for (back to back, the pulses merge on the pin)
            assert relay_pulses >= 1
            assert value(samples, "gated_scan_to_relay_seconds_count", lane="in-1", **g) == len(PRESENT)
            assert value(samples, "gated_scan_to_relay_seconds_bucket", lane="in-1", le="+Inf", **g) == len(PRESENT)
            assert 0 < value(samples, "gated_scan_to_relay_seconds_sum", lane="in-1", **g) < len(PRESENT) * 1.0
            # no registry: every record waits, the cache is what was seeded, nothing can go stale
            records = len(gate.journal.tail(10_000))
            assert value(samples, "gated_journal_backlog", **g) == records == gate.status()["journal_backlog"]
            assert value(samples, "gated_cache_version", **g) == 1
            assert value(samples, "gated_cache_tickets", **g) == len(PRESENT)
            assert value(samples, "gated_uplink_configured", **g) == 0
            assert value(samples, "gated_uplink_connected", **g) == 0
            assert value(samples, "gated_cache_stale", **g) == 0
            assert value(samples, "gated_cache_age_seconds", **g) is None  # no registry to confirm it
            assert value(samples, "gated_clock_trusted", **g) == 1  # trust_local_clock = true
            assert value(samples, "gated_lane_faults_total", lane="in-1", **g) == 0
            assert value(samples, "gated_fault", **g) == 0
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as response:
                assert response.status == 404  # /metrics and nothing else
        finally:
            await gate.stop()

    try:
        asyncio.run(scenario())
    finally:
        scan_in.close()
        scan_out.close()


def test_two_gates_in_one_process_keep_their_own_figures(tmp_path):
    """Per-gate registries: a scan at one gate is never counted at the other."""
    ports, gates, ptys = [], [], []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        path = make_gate_dir(root, gate_id=f"gate-{name}", passage=False, emergency=False)
        ports.append(free_port())
        with_metrics(path, ports[-1])
        ptys += [Pty(root / "scanner-in-1"), Pty(root / "scanner-out-1")]
        gates.append(path)

    async def scenario():
        running = [Gate(load_config(p, check_files=True), pin_factory=MockFactory(pin_class=MockPWMPin)) for p in gates]
        for gate in running:
            await gate.start()
        try:
            await until(lambda: all(g.inputs_connected() for g in running))
            ptys[0].send(mint_dynamic(KEY, 1, 1000, time.time()))
            await until(lambda: running[0].lanes["in-1"].counters.decisions == 1)
            a, b = await scrape(f"http://127.0.0.1:{ports[0]}/metrics"), await scrape(f"http://127.0.0.1:{ports[1]}/metrics")
            assert value(a, "gated_decisions_total", gate="gate-a", lane="in-1", reason="ok") == 1
            assert not [k for k in b if k[0] == "gated_decisions_total"]
            assert value(b, "gated_scan_to_relay_seconds_count", gate="gate-b", lane="in-1") == 0
        finally:
            for gate in running:
                await gate.stop()

    try:
        asyncio.run(scenario())
    finally:
        for pty in ptys:
            pty.close()


def test_metrics_beyond_loopback_only_when_the_config_says_so(tmp_path):
    path = make_gate_dir(tmp_path)
    with_metrics(path, 9108)
    text = path.read_text()
    path.write_text(text.replace('address = "127.0.0.1:9108"', 'address = "0.0.0.0:9108"'))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert "\n" not in message and "gate.toml:" in message and "address" in message and "allow_remote = true" in message
    path.write_text(path.read_text() + "allow_remote = true\n")
    metrics = load_config(path).metrics
    assert (metrics.host, metrics.port, metrics.allow_remote) == ("0.0.0.0", 9108, True)
    path.write_text(text.replace('address = "127.0.0.1:9108"', 'address = "127.0.0.1:0"'))
    with pytest.raises(ConfigError):
        load_config(path)


def test_freshness_turns_stale_past_the_limit_and_back_on_confirmation():
    """The clock is an input: a fake monotonic clock walks a gate through a night with no registry."""
    from gated.gate.freshness import Freshness

    now = [1000.0]
    fresh = Freshness(300.0, age_at_start_s=120.0, monotonic=lambda: now[0])  # the saved cache: 2 min old
    assert not fresh.stale and fresh.age_s() == 120.0
    now[0] += 179.0
    assert not fresh.check() and fresh.status() == {"stale": False, "age_s": 299.0, "stale_after_s": 300.0}
    now[0] += 2.0
    assert fresh.check() and fresh.stale and fresh.transitions == 1
    assert fresh.check() and fresh.transitions == 1  # said once, not at every look
    fresh.confirmed()  # a heartbeat: "you are current"
    assert not fresh.stale and fresh.age_s() == 0.0 and fresh.transitions == 2
    never = Freshness(300.0, age_at_start_s=None, monotonic=lambda: now[0])  # no saved cache at all
    assert never.stale and never.age_s() is None and never.status()["age_s"] is None
