"""A gate's Prometheus figures, and the `/metrics` listener the gate and the registry share.

Each gate has its own `CollectorRegistry` (tests and the simulator run
several gates in one process; the global registry would mix them). Nothing
is counted on the decision path that was not counted already: decisions by
reason, repeats, passages and faults are the lanes' own `LaneCounters`, read
when scraped; the one figure a scan adds is the scan-to-relay time, one
`Histogram.observe` (about a microsecond) after the relay fired. Everything
else (backlog, cache, freshness, uplink, clock) is read at scrape time; the
journal's backlog query runs in a worker thread.

Names, all labelled `gate` (a dashboard shows gates side by side):

    gated_decisions_total{lane,reason}       journaled decisions (repeats within debounce excluded)
    gated_repeats_total{lane}                reads of the same code within debounce
    gated_passages_total{lane}, gated_not_passed_total{lane}
    gated_lane_faults_total{lane}            an output device failed, the journal refused a decision
    gated_scan_to_relay_seconds{lane}        a read completed -> its relay pulse (admitted, turnstiles)
    gated_journal_backlog                    records the registry has not acknowledged
    gated_fault                              1: the journal cannot be written, nobody is admitted
    gated_emergency                          1: lanes held open
    gated_cache_version, gated_cache_tickets
    gated_cache_age_seconds                  since the registry last confirmed the cache (absent: never)
    gated_cache_stale, gated_cache_stale_after_seconds
    gated_uplink_configured, gated_uplink_connected, gated_uplink_reconnects_total,
    gated_uplink_refused_updates_total
    gated_clock_offset_seconds (absent until measured), gated_clock_trusted

The listen rule (`[metrics] address`, `gated registry serve --metrics`):
loopback unless `allow_remote = true`. The figures hold no key, code or
name, but they show the traffic at every door (how many came in, when):
letting another machine read them is said out loud in the config, never a
default. The listener serves `/metrics` and nothing else, with aiohttp (the
web stack of every gated page), never prometheus_client's own thread server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gated.errors import GatedError, JournalError
from gated.web.security import is_loopback

log = structlog.get_logger("gated.metrics")

#: scan to relay: a journal fsync on an SD card is a few ms, a busy Pi tens
SCAN_TO_RELAY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 1.0)

NAMES = (
    "gated_decisions_total", "gated_repeats_total", "gated_passages_total", "gated_not_passed_total",
    "gated_lane_faults_total", "gated_scan_to_relay_seconds", "gated_journal_backlog", "gated_fault", "gated_emergency",
    "gated_cache_version", "gated_cache_tickets", "gated_cache_age_seconds", "gated_cache_stale",
    "gated_cache_stale_after_seconds", "gated_uplink_configured", "gated_uplink_connected", "gated_uplink_reconnects_total",
    "gated_uplink_refused_updates_total", "gated_clock_offset_seconds", "gated_clock_trusted",
)


class MetricsError(GatedError, ValueError):
    """`/metrics` cannot be served as asked; the message is one line."""


class GateMetrics:
    """The figures of one running gate (`gated.gate.daemon.Gate`)."""

    def __init__(self, gate: Any) -> None:
        self.gate = gate
        self.registry = CollectorRegistry(auto_describe=True)
        self.scan_to_relay = Histogram(
            "gated_scan_to_relay_seconds", "A read completed to its relay pulse (admitted scans at turnstiles)",
            ["gate", "lane"], buckets=SCAN_TO_RELAY_BUCKETS, registry=self.registry,
        )
        self._backlog: int | None = None
        self.registry.register(_GateCollector(self))

    def attach(self, lanes: dict[str, Any]) -> None:
        """Give each lane its scan-to-relay histogram (one bound `observe` per lane)."""
        for lane_id, lane in lanes.items():
            lane.scan_to_relay = self.scan_to_relay.labels(self.gate.gate_id, lane_id).observe

    async def exposition(self) -> bytes:
        journal = self.gate.journal
        try:
            self._backlog = await asyncio.to_thread(journal.backlog)
        except JournalError:
            self._backlog = None
        return generate_latest(self.registry)


def _gauge(name: str, doc: str, gate_id: str, value: float | None):
    family = GaugeMetricFamily(name, doc, labels=["gate"])
    if value is not None:
        family.add_metric([gate_id], float(value))
    return family


class _GateCollector:
    """Reads the gate when scraped (on the loop thread: the lanes' counters live there)."""

    def __init__(self, metrics: GateMetrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        gate = self.metrics.gate
        gid = gate.gate_id
        decisions = CounterMetricFamily("gated_decisions_total", "Journaled decisions by lane and reason", labels=["gate", "lane", "reason"])
        repeats = CounterMetricFamily("gated_repeats_total", "Reads of the same code within debounce", labels=["gate", "lane"])
        passages = CounterMetricFamily("gated_passages_total", "Entries and exits counted", labels=["gate", "lane"])
        not_passed = CounterMetricFamily("gated_not_passed_total", "Admitted, nobody walked through", labels=["gate", "lane"])
        faults = CounterMetricFamily("gated_lane_faults_total", "Output device failures and decisions the journal refused",
                                     labels=["gate", "lane"])
        for lane_id, lane in list(gate.lanes.items()):
            c = lane.counters
            for reason, count in list(c.by_reason.items()):
                decisions.add_metric([gid, lane_id, reason], count)
            repeats.add_metric([gid, lane_id], c.repeats)
            passages.add_metric([gid, lane_id], c.passages)
            not_passed.add_metric([gid, lane_id], c.not_passed)
            faults.add_metric([gid, lane_id], c.faults)
        yield from (decisions, repeats, passages, not_passed, faults)

        yield _gauge("gated_journal_backlog", "Journal records the registry has not acknowledged", gid, self.metrics._backlog)
        yield _gauge("gated_fault", "1: the journal cannot be written and nobody is admitted", gid, 1 if gate.fault else 0)
        yield _gauge("gated_emergency", "1: every lane is held open", gid, 1 if gate.emergency_active else 0)
        cache = gate.validator.cache
        yield _gauge("gated_cache_version", "The entitlement version this gate holds", gid, cache.version)
        yield _gauge("gated_cache_tickets", "Tickets in this gate's cache", gid, len(cache))
        fresh = gate.freshness
        if fresh is not None:
            fresh.check()
        yield _gauge("gated_cache_age_seconds", "Seconds since the registry last confirmed the cache", gid,
                     None if fresh is None else fresh.age_s())
        yield _gauge("gated_cache_stale", "1: the registry has not confirmed the cache within the limit", gid,
                     0 if fresh is None else int(fresh.stale))
        yield _gauge("gated_cache_stale_after_seconds", "The limit ([uplink] stale_after_s)", gid,
                     None if fresh is None else fresh.stale_after_s)

        uplink = gate.uplink
        yield _gauge("gated_uplink_configured", "1: this gate has a registry", gid, 0 if gate.config.uplink is None else 1)
        yield _gauge("gated_uplink_connected", "1: the session with the registry is up", gid,
                     1 if uplink is not None and uplink.connected else 0)
        reconnects = CounterMetricFamily("gated_uplink_reconnects_total", "Sessions with the registry after the first", labels=["gate"])
        reconnects.add_metric([gid], 0 if uplink is None else max(0, uplink.sessions - 1))
        yield reconnects
        refused = CounterMetricFamily("gated_uplink_refused_updates_total", "Entitlement or key updates refused as malformed",
                                      labels=["gate"])
        refused.add_metric([gid], 0 if uplink is None else uplink._refused_updates)
        yield refused

        clock = gate.clock.status()
        yield _gauge("gated_clock_offset_seconds", "The registry's clock minus this gate's", gid, clock.offset_s)
        yield _gauge("gated_clock_trusted", "1: dynamic codes are checked against this gate's clock", gid, int(clock.trusted))


def listen_problem(host: str, allow_remote: bool) -> str | None:
    """The listen rule of `/metrics` (module docstring), as a one-line refusal or None."""
    if allow_remote or is_loopback(host):
        return None
    return (f"/metrics listens on loopback only (got {host}): the figures show the traffic at the door; "
            "allow another address explicitly (allow_remote = true, --metrics-allow-remote)")


class MetricsServer:
    """`GET /metrics` on one address, from `exposition()` (a gate's or a registry's)."""

    def __init__(self, host: str, port: int, exposition: Callable[[], Awaitable[bytes]], *, allow_remote: bool = False):
        problem = listen_problem(host, allow_remote)
        if problem:
            raise MetricsError(problem)
        self.host, self.port = host, port
        self._exposition = exposition
        self._runner = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def _metrics(self, request):
        from aiohttp import web

        body = await self._exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    async def start(self) -> None:
        from aiohttp import web

        from gated.web.server import serve_app  # aiohttp only when /metrics is served

        app = web.Application(client_max_size=1024)
        app.router.add_get("/metrics", self._metrics)
        try:
            self._runner, self.port = await serve_app(app, self.host, self.port)
        except OSError as exc:
            raise MetricsError(f"/metrics: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        log.info("metrics_listening", url=self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
