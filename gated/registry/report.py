"""The check-in report: `gated registry report --db FILE`.

From the passages the gates reported (kind "passage", payload direction
"in" or "out"): entries and exits per hour (UTC) per gate and lane (two
gates may both call a lane "in-1"), unique attendees (tickets with at least
one entry), the attendance rate per category (tickets with an entry /
tickets registered), and the conflicts the registry found (over-entry,
over-redemption, use of a revoked ticket, a late Redeem grant given back),
each with both of its records, and the Redeem grants still waiting for
their unit's journal record (`gated.registry.redeem.unpaired_grants`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gated.journal import u64_from_sqlite
from gated.registry.redeem import Grant, unpaired_grants
from gated.registry.store import Conflict, RegistryStore, UsageRecord


@dataclass(frozen=True, slots=True)
class HourRow:
    hour: str  # "YYYY-MM-DD HH:00" UTC
    gate: str
    lane: str
    entries: int
    exits: int


@dataclass(frozen=True, slots=True)
class CategoryRow:
    category: str
    registered: int
    attended: int

    @property
    def rate(self) -> float:
        return self.attended / self.registered if self.registered else 0.0


@dataclass(frozen=True, slots=True)
class CheckinReport:
    hours: tuple[HourRow, ...]
    unique_attendees: int
    categories: tuple[CategoryRow, ...]
    events: int
    conflicts: tuple[Conflict, ...] = ()
    conflict_counts: tuple[tuple[str, int], ...] = ()  # (kind, count) for every kind
    unpaired_grants: tuple[Grant, ...] = ()  # granted by Redeem, no journal record of the unit yet


_PASSAGES = """
    SELECT ticket_id, gate_id, lane, at, json_extract(payload, '$.direction') AS direction
    FROM events WHERE kind = 'passage' AND json_valid(payload)
"""


# The hour each passage falls in (UTC), in each engine's words (gated.registry.engine).
_HOUR = {"sqlite": "strftime('%Y-%m-%d %H:00', at, 'unixepoch')",
         "postgres": "to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:00')"}


def checkin_report(store: RegistryStore) -> CheckinReport:
    conn = store.conn
    hours = tuple(
        HourRow(hour, gate, lane, entries, exits)
        for hour, gate, lane, entries, exits in conn.execute(
            f"SELECT {_HOUR[store.dialect]} AS hour, gate_id, lane, "
            "sum(CASE WHEN direction = 'in' THEN 1 ELSE 0 END), sum(CASE WHEN direction = 'out' THEN 1 ELSE 0 END) "
            f"FROM ({_PASSAGES}) p WHERE direction IN ('in', 'out') GROUP BY hour, gate_id, lane ORDER BY hour, gate_id, lane"
        )
    )
    attended = {
        u64_from_sqlite(tid)
        for (tid,) in conn.execute(f"SELECT DISTINCT ticket_id FROM ({_PASSAGES}) p WHERE direction = 'in' AND ticket_id IS NOT NULL")
    }
    per_category: dict[str, list[int]] = {}
    for tid, category in conn.execute("SELECT ticket_id, category FROM tickets"):
        counts = per_category.setdefault(category, [0, 0])
        counts[0] += 1
        counts[1] += u64_from_sqlite(tid) in attended
    categories = tuple(CategoryRow(c, n, a) for c, (n, a) in sorted(per_category.items()))
    return CheckinReport(hours, len(attended), categories, store.event_count(),
                         tuple(store.conflicts()), tuple(store.conflict_counts().items()), tuple(unpaired_grants(store)))


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _side(conflict: Conflict, record: UsageRecord) -> str:
    if record.event_id is not None:
        return f"{record.gate_id} {record.lane} at {_utc(record.at)}"
    if conflict.kind == "revoked_use":
        return "revoked (time not kept)" if record.at is None else f"revoked at {_utc(record.at)}"
    return "no stored record"  # usage the registry counted before it kept events


def format_report(report: CheckinReport) -> str:
    lines = ["Check-in report", "", "Entries and exits per hour (UTC) per gate and lane:"]
    if report.hours:
        gate_width = max(4, *(len(r.gate) for r in report.hours))
        lane_width = max(4, *(len(r.lane) for r in report.hours))
        lines.append(f"  {'hour':16}  {'gate':{gate_width}}  {'lane':{lane_width}}  {'in':>6}  {'out':>6}")
        for r in report.hours:
            lines.append(f"  {r.hour:16}  {r.gate:{gate_width}}  {r.lane:{lane_width}}  {r.entries:>6}  {r.exits:>6}")
    else:
        lines.append("  (no passages yet)")
    lines += ["", f"Unique attendees: {report.unique_attendees}", "", "Attendance by category:"]
    if report.categories:
        width = max(8, *(len(c.category) for c in report.categories))
        lines.append(f"  {'category':{width}}  {'registered':>10}  {'attended':>8}  {'rate':>6}")
        for c in report.categories:
            lines.append(f"  {c.category:{width}}  {c.registered:>10}  {c.attended:>8}  {c.rate:>6.1%}")
    else:
        lines.append("  (no tickets registered)")
    lines.append("")
    if report.conflicts:
        counts = ", ".join(f"{kind} {n}" for kind, n in report.conflict_counts)
        lines.append(f"Conflicts: {len(report.conflicts)} ({counts})")
        for c in report.conflicts:
            what = f"ticket {c.ticket_id}" + (f" ({c.benefit})" if c.benefit else "")
            lines.append(f"  {c.kind:15}  {what}: {_side(c, c.first)}, then {_side(c, c.then)}")
    else:
        lines.append("Conflicts: none")
    lines.append("")
    if report.unpaired_grants:
        lines.append(f"Redeem grants not yet reported by their unit: {len(report.unpaired_grants)} "
                     "(taken; given back when the unit's records show nobody received them)")
        for g in report.unpaired_grants:
            lines.append(f"  ticket {g.ticket_id} ({g.benefit}): {g.gate_id} {g.lane} at {_utc(g.at)}")
    else:
        lines.append("Redeem grants not yet reported by their unit: none")
    lines += ["", f"Events stored: {report.events}"]
    return "\n".join(lines) + "\n"
