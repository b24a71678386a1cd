"""The registry's Prometheus figures: one `CollectorRegistry` per `RegistryService`.

Counted where they happen, with prometheus_client's cheap `inc()`/`observe()`
(events stored, duplicates dropped, event conflicts, fan-out latency,
snapshot builds, redemptions); read when scraped (connected gates, the
entitlement version, tickets, the conflicts the store recorded). Served at
`/metrics` by the registry's HTTP application (`gated.registry.http`, a
viewer's session or API token) and, for a registry without pages, by
`gated registry serve --metrics HOST:PORT` (`gated.metrics.MetricsServer`).

Names (every one a dashboard panel may use is in `NAMES`):

    gated_registry_events_stored_total          events stored (each (gate, epoch, seq) once)
    gated_registry_duplicates_dropped_total     events received again and not stored again
    gated_registry_event_conflicts_total        batches refused: a known (gate, epoch, seq), other content
    gated_registry_conflicts_total{kind}        conflicts the store holds (over-entry, over-redemption, ...)
    gated_registry_connected_gates              gates watching entitlements now
    gated_registry_fanout_seconds               a batch received -> its delta handed to every watcher
    gated_registry_snapshot_builds_total, gated_registry_snapshot_build_seconds
    gated_registry_redeem_total{outcome}        Redeem answers (ok: granted), replays excluded
    gated_registry_entitlement_version, gated_registry_tickets
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

#: event received -> delta handed out: 1 ms .. 1 s
FANOUT_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

NAMES = (
    "gated_registry_events_stored_total", "gated_registry_duplicates_dropped_total",
    "gated_registry_event_conflicts_total", "gated_registry_conflicts_total", "gated_registry_connected_gates",
    "gated_registry_fanout_seconds", "gated_registry_snapshot_builds_total", "gated_registry_snapshot_build_seconds",
    "gated_registry_redeem_total", "gated_registry_entitlement_version", "gated_registry_tickets",
)


class RegistryMetrics:
    """The figures of one registry service; `await exposition()` is the text a scrape gets."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_stored = Counter("gated_registry_events_stored", "Events stored, each (gate, epoch, seq) once", registry=r)
        self.duplicates = Counter("gated_registry_duplicates_dropped", "Events received again and not stored again", registry=r)
        self.event_conflicts = Counter("gated_registry_event_conflicts",
                                       "Batches refused: a known (gate, epoch, seq) with other content", registry=r)
        self.fanout = Histogram("gated_registry_fanout_seconds", "An event batch received to its delta handed to the watchers",
                                buckets=FANOUT_BUCKETS, registry=r)
        self.snapshot_builds = Counter("gated_registry_snapshot_builds", "Entitlement snapshots built", registry=r)
        self.snapshot_seconds = Histogram("gated_registry_snapshot_build_seconds", "Time to build one snapshot",
                                          buckets=SNAPSHOT_BUCKETS, registry=r)
        self.redeem = Counter("gated_registry_redeem", "Redeem answers by outcome (ok: granted); replays excluded",
                              ["outcome"], registry=r)
        self._conflict_counts: dict[str, int] = {}
        r.register(_Live(self))

    async def exposition(self) -> bytes:
        """The Prometheus text; the store's conflict counts are read off the loop first."""
        try:
            self._conflict_counts = await self.service.conflict_counts()
        except Exception:  # a busy file: last scrape's counts
            pass
        return generate_latest(self.registry)


class _Live:
    """What is read at scrape time (on the loop): watchers, version, tickets, conflicts."""

    def __init__(self, metrics: RegistryMetrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        service = self.metrics.service
        yield GaugeMetricFamily("gated_registry_connected_gates", "Gates watching entitlements now",
                                value=len(service.watching_gates()))
        yield GaugeMetricFamily("gated_registry_entitlement_version", "The registry's entitlement version",
                                value=service.cache.version)
        yield GaugeMetricFamily("gated_registry_tickets", "Tickets in the registry's mirror", value=len(service.cache))
        conflicts = CounterMetricFamily("gated_registry_conflicts", "Conflicts the registry holds, by kind", labels=["kind"])
        for kind, count in sorted(self.metrics._conflict_counts.items()):
            conflicts.add_metric([kind], count)
        yield conflicts
