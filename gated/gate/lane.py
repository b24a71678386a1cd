"""One lane at run time: inputs, decide, journal, outputs, passage.

The path of one scan, in this order and no other:

    read -> decide() -> journal the decision (durable) -> actuate outputs

so nobody passes a turnstile without a record on disk. Then, on a turnstile
with a passage sensor, the entry counts (`Validator.commit`, journaled as a
"passage" record with the new usage) only when the sensor sees the person go
through within `passage_timeout_s`; otherwise a "not_passed" record says the
gate admitted someone who did not walk through. Lanes without a sensor
(handhelds, simple turnstiles) count the entry as soon as the decision is on
disk.

So every admitted decision is followed, on its lane and ticket, by exactly
one outcome record: "passage" (entry or exit), "redemption" (a benefit) or
"not_passed", whose ``decision_seq`` names the decision's record. A power
cut can fall between the two; at the next start, before any lane runs,
`settle_unknown_outcomes` journals the missing outcome as used (the relay
may have opened): a "passage" or "redemption" with ``"outcome": "unknown"``,
counted by the gate's cache and, being an ordinary usage record, by the
registry. An exit whose outcome is unknown counts the person out. It reads
the journal from the `outcomes_settled` mark, which the running gate keeps
moving up to just before the oldest admission still waiting for its
outcome (`advance_settled_mark`), so a start reads seconds of journal.

Everything here runs on the daemon's event loop thread: drivers that live on
other threads (camera, GPIO inputs) hand their events over with
`call_soon_threadsafe`. Nothing here knows hardware details: the outputs are
gpiozero-backed drivers or None.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from gated.config import LaneConfig
from gated.drivers.base import Read
from gated.drivers.gpio import Buzzer, LaneLight, Relay
from gated.drivers.keypad import ManualEntry, ManualEntryInvalid
from gated.errors import JournalError
from gated.gate.passage import PassageWindow
from gated.journal import Journal, Record
from gated.validation import Decision, Direction, EntitlementCache, Mode
from gated.validation import Lane as LaneSpec

if TYPE_CHECKING:
    from gated.gate.daemon import Gate

log = structlog.get_logger("gated.gate.lane")

SIGNAL_SECONDS = 1.5  # how long the admit colour / deny pattern shows


@dataclass
class LaneOutputs:
    relay: Relay | None = None
    light: LaneLight | None = None
    buzzer: Buzzer | None = None

    def close(self) -> None:
        for device in (self.light, self.buzzer, self.relay):
            if device is not None:
                device.close()


@dataclass
class LaneCounters:
    decisions: int = 0
    admitted: int = 0
    denied: int = 0
    repeats: int = 0
    passages: int = 0
    not_passed: int = 0
    last_reason: str | None = None
    last_ticket: int | None = None
    last_at: float | None = None
    by_reason: dict[str, int] = field(default_factory=dict)


class LaneRunner:
    def __init__(self, config: LaneConfig, gate: "Gate", outputs: LaneOutputs):
        self.config = config
        self.id = config.id
        self.gate = gate
        self.outputs = outputs
        self.spec = LaneSpec(config.id, config.zone, Direction(config.direction), Mode(config.mode), config.categories)
        self.window: PassageWindow[tuple[Decision, int]] | None = (
            PassageWindow(config.passage_timeout_s) if config.passage is not None and config.passage_timeout_s else None
        )
        self.counters = LaneCounters()
        self.last_decision: Decision | None = None
        self._expiry_handle: asyncio.TimerHandle | None = None
        self.scan_to_relay: list[float] = []  # seconds, read completed -> relay pulse (bench)

    # ---- inputs (called on the loop thread) ----

    def on_read(self, read: Read) -> None:
        self.gate.spawn(self.handle_read(read))

    def on_manual(self, entry: ManualEntry | ManualEntryInvalid) -> None:
        self.gate.spawn(self.handle_manual(entry))

    def on_passage(self, at: float) -> None:
        self.gate.spawn(self.handle_passage(at))

    # ---- the path of one scan ----

    async def handle_read(self, read: Read, benefit: str | None = None) -> Decision:
        gate = self.gate
        decision = gate.validator.decide(read.text, self.spec, gate.clock.now(), clock_trusted=gate.clock.trusted(), benefit=benefit)
        if decision.repeat:
            self.counters.repeats += 1
            return decision
        await self._record_and_act(decision, read.at, {"source": read.source, "length": len(read.text), "truncated": read.truncated})
        return decision

    async def handle_manual(self, entry: ManualEntry | ManualEntryInvalid, benefit: str | None = None) -> Decision | None:
        gate = self.gate
        if isinstance(entry, ManualEntryInvalid):
            log.info("manual_entry_invalid", lane=self.id, reason=entry.reason)
            self._guarded("light", lambda light: light.deny(SIGNAL_SECONDS))
            self._guarded("buzzer", lambda buzzer: buzzer.play("deny"))
            return None
        decision = gate.validator.decide_manual(entry.ticket_id, entry.digits, self.spec, gate.clock.now(), clock_trusted=gate.clock.trusted(), benefit=benefit)
        await self._record_and_act(decision, entry.at, {"source": entry.source, "typed": True})
        return decision

    async def _record_and_act(self, decision: Decision, read_at: float, extra: dict[str, Any]) -> None:
        gate = self.gate
        payload = {
            "code_kind": decision.kind,
            "category": decision.category,
            "zone": decision.zone,
            "direction": decision.direction,
            "mode": self.spec.mode,
            **extra,
        }
        if decision.benefit is not None:
            payload["benefit"] = decision.benefit
        try:
            record = await gate.journal.append_async(
                "decision", at=decision.at, lane=self.id, ticket_id=decision.ticket_id, reason=decision.reason, payload=payload
            )
        except JournalError as exc:
            # No record, no entry: the turnstile stays shut and the lane shows a fault.
            gate.journal_failed(exc)
            self._guarded("light", lambda light: light.deny(SIGNAL_SECONDS))
            self._guarded("buzzer", lambda buzzer: buzzer.play("deny"))
            return
        if decision.admitted:
            relay = self.outputs.relay
            if relay is not None and self._guarded("relay", lambda r: r.pulse()):
                self.scan_to_relay.append(time.monotonic() - read_at)
                if len(self.scan_to_relay) > 10_000:
                    del self.scan_to_relay[:5_000]
        self._show(decision)
        if decision.admitted:
            if self.window is not None and decision.benefit is None:
                gate.validator.reserve(decision)
                self.window.expect((decision, record.seq), time.monotonic())
                self._schedule_expiry()
            else:
                await self._count(decision, record.seq, confirmed=False)
        self._tally(decision)
        gate.after_record()
        log.info(
            "decision", lane=self.id, reason=str(decision.reason), ticket_id=decision.ticket_id,
            category=decision.category, code_kind=None if decision.kind is None else str(decision.kind),
        )

    def _guarded(self, name: str, action) -> Any:
        """Drive one output; a failing device is logged, never allowed to stop the others."""
        device = getattr(self.outputs, name)
        if device is None:
            return None
        try:
            return action(device)
        except Exception as exc:
            log.error("output_failed", lane=self.id, output=name, error=repr(exc))
            return None

    async def _count(self, decision: Decision, decision_seq: int, *, confirmed: bool) -> None:
        """Journal the outcome of the admission journaled as `decision_seq` (it names it)."""
        usage = self.gate.validator.commit(decision)
        if usage is None:
            # The ticket or its benefit left the cache meanwhile: the person is through all the
            # same, so the outcome is journaled (and counted by the registry), without local values.
            kind = "redemption" if decision.benefit is not None else "passage"
            payload = {"ticket_id": decision.ticket_id, "zone": decision.zone, "direction": decision.direction,
                       "benefit": decision.benefit, "confirmed": confirmed, "counted_locally": False,
                       "decision_seq": decision_seq}
            await self.gate.journal.append_async(kind, at=self.gate.clock.now(), lane=self.id, ticket_id=decision.ticket_id, reason="ok", payload=payload)
            self.gate.after_record()
            return
        kind = "redemption" if usage.benefit is not None else "passage"
        payload = {**usage._asdict(), "confirmed": confirmed, "decision_seq": decision_seq}
        await self.gate.journal.append_async(kind, at=self.gate.clock.now(), lane=self.id, ticket_id=usage.ticket_id, reason="ok", payload=payload)
        self.counters.passages += 1
        self.gate.after_record()

    # ---- passage confirmation ----

    async def handle_passage(self, at: float) -> None:
        if self.window is None:
            return
        admission = self.window.passage(at)
        if admission is None:
            await self.gate.journal.append_async("unexpected_passage", at=self.gate.clock.now(), lane=self.id, payload={"zone": self.spec.zone})
            self.gate.after_record()
            log.warning("unexpected_passage", lane=self.id)
            return
        await self._count(*admission, confirmed=True)
        await self._expire()

    def _schedule_expiry(self) -> None:
        deadline = self.window.next_deadline() if self.window is not None else None
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
        delay = max(0.0, deadline - time.monotonic()) + 0.001
        self._expiry_handle = loop.call_later(delay, lambda: self.gate.spawn(self._expire()))

    async def _expire(self, *, all_pending: bool = False) -> None:
        """Record the admitted entries nobody walked through for (all of them when the gate stops)."""
        if self.window is None:
            return
        now = float("inf") if all_pending else time.monotonic()
        for decision, decision_seq in self.window.expired(now):
            self.counters.not_passed += 1
            self.gate.validator.release(decision)
            await self.gate.journal.append_async(
                "not_passed", at=self.gate.clock.now(), lane=self.id, ticket_id=decision.ticket_id, reason=str(decision.reason),
                payload={"zone": decision.zone, "direction": decision.direction, "decided_at": decision.at,
                         "gate_stopping": all_pending, "decision_seq": decision_seq},
            )
            self.gate.after_record()
        if all_pending:
            if self._expiry_handle is not None:
                self._expiry_handle.cancel()
            return
        self._schedule_expiry()

    async def flush_pending(self) -> None:
        """On stop: entries still waiting for their passage are recorded as not passed."""
        await self._expire(all_pending=True)

    # ---- outputs ----

    def _show(self, decision: Decision) -> None:
        if decision.admitted:
            self._guarded("light", lambda light: light.show(decision.signal.color, SIGNAL_SECONDS))
            self._guarded("buzzer", lambda buzzer: buzzer.play("ok"))
        else:
            self._guarded("light", lambda light: light.deny(SIGNAL_SECONDS))
            self._guarded("buzzer", lambda buzzer: buzzer.play("deny"))

    def _tally(self, decision: Decision) -> None:
        c = self.counters
        c.decisions += 1
        if decision.admitted:
            c.admitted += 1
        else:
            c.denied += 1
        c.last_reason, c.last_ticket, c.last_at = str(decision.reason), decision.ticket_id, decision.at
        c.by_reason[str(decision.reason)] = c.by_reason.get(str(decision.reason), 0) + 1
        self.last_decision = decision

    # ---- commands ----

    def open_once(self) -> bool:
        return bool(self._guarded("relay", lambda relay: relay.pulse()))

    def status(self) -> dict[str, Any]:
        relay = self.outputs.relay
        light = self.outputs.light
        c = self.counters
        return {
            "id": self.id, "zone": self.spec.zone, "direction": str(self.spec.direction), "mode": str(self.spec.mode),
            "decisions": c.decisions, "admitted": c.admitted, "denied": c.denied, "repeats": c.repeats,
            "passages": c.passages, "not_passed": c.not_passed, "last_reason": c.last_reason, "last_ticket": c.last_ticket,
            "by_reason": dict(c.by_reason),
            "relay_energized": None if relay is None else relay.is_energized,
            "light": None if light is None else "#%02X%02X%02X" % tuple(round(x * 255) for x in light.current_color),
            "pending_passages": 0 if self.window is None else len(self.window),
        }


# ---- after a power cut ----

OUTCOME_KINDS = ("passage", "redemption", "not_passed")
SETTLED_MARK = "outcomes_settled"


def _outcome_key(record: Record) -> tuple:
    benefit = record.payload.get("benefit") if record.kind != "not_passed" else None
    return record.lane, record.ticket_id, benefit


class PendingOutcomes:
    """Admitted decisions after `after_seq` whose outcome record the journal does not hold yet.

    Reads the journal forward from where it last stopped (`read`), so a
    running gate pays only for the records written since. An outcome names
    its decision by `decision_seq`; one written before outcomes did (an older
    gated) is paired with the oldest admission on its lane, ticket and
    benefit (the order a lane writes them in).

    `settled_through()` is the highest seq below which every admitted
    decision has its outcome on disk: what the `outcomes_settled` mark may say.
    """

    def __init__(self, after_seq: int):
        self._lock = threading.Lock()  # `read` runs in worker threads, one at a time
        self.read_to = after_seq
        self._waiting: dict[int, Record] = {}  # decision seq -> decision, oldest first
        self._by_key: dict[tuple, list[int]] = {}

    def read(self, journal: Journal) -> "PendingOutcomes":
        with self._lock:
            self._read(journal)
        return self

    def _read(self, journal: Journal) -> None:
        for record in journal.since(self.read_to, kinds=("decision", *OUTCOME_KINDS)):
            self.read_to = record.seq
            if record.kind == "decision":
                if record.reason == "ok" and record.ticket_id is not None:
                    self._waiting[record.seq] = record
                    self._by_key.setdefault(_outcome_key(record), []).append(record.seq)
                continue
            seq = record.payload.get("decision_seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                decision = self._waiting.pop(seq, None)
                if decision is not None:
                    self._by_key[_outcome_key(decision)].remove(seq)
            elif record.ticket_id is not None:
                seqs = self._by_key.get(_outcome_key(record))
                if seqs:
                    del self._waiting[seqs.pop(0)]

    def waiting(self) -> list[Record]:
        return list(self._waiting.values())

    def settled_through(self) -> int:
        return next(iter(self._waiting), self.read_to + 1) - 1


def unknown_outcomes(journal: Journal, after_seq: int) -> list[Record]:
    """Admitted decisions after `after_seq` with no outcome record, oldest first."""
    return PendingOutcomes(after_seq).read(journal).waiting()


def advance_settled_mark(journal: Journal, pending: PendingOutcomes) -> int:
    """Move the `outcomes_settled` mark up to just before the oldest admission still
    waiting for its outcome, so the next start reads only from there. Blocking
    (reads the journal): run it in a worker thread. Returns the mark.

    Safe at any moment, a power cut included: `pending` reads only committed
    records, so the mark never passes an admission whose outcome is not on
    disk, and the mark itself is one durable write (the old or the new value
    survives a cut, both true)."""
    through = pending.read(journal).settled_through()
    if through > journal.mark(SETTLED_MARK):
        journal.set_mark(SETTLED_MARK, through)
    return through


async def settle_unknown_outcomes(journal: Journal, cache: EntitlementCache, now: float) -> list[Record]:
    """At start, before any lane runs: count every admission whose outcome a power cut lost.

    Each gets its outcome record (see the module docstring) and its usage in
    `cache`; returns the records written. Idempotent: a decision settled once
    is paired with its record at the next start, and a journal mark keeps
    later starts from reading what was settled before."""
    settled: list[Record] = []
    for decision in unknown_outcomes(journal, journal.mark(SETTLED_MARK)):
        p = decision.payload
        zone, direction, benefit = p.get("zone"), p.get("direction"), p.get("benefit")
        payload: dict[str, Any] = {"ticket_id": decision.ticket_id, "zone": zone, "direction": direction,
                                   "benefit": benefit, "confirmed": False, "outcome": "unknown",
                                   "decision_seq": decision.seq}
        row = cache.row_of(decision.ticket_id)
        if row >= 0:
            if benefit is not None:
                remaining = cache.redeem(row, benefit)
                if remaining is not None:
                    payload["benefit_remaining"] = remaining
            elif direction == Direction.OUT:
                cache.count_exit(row, zone)
            elif isinstance(zone, str) and zone:
                cache.count_entry(row, zone)
            if benefit is None or "benefit_remaining" in payload:
                table = cache.table
                payload["entries_used"] = table.used[row]
                payload["inside"] = list(table.zones_of(table.inside[row]))
        kind = "redemption" if benefit is not None else "passage"
        record = await journal.append_async(kind, at=now, lane=decision.lane, ticket_id=decision.ticket_id,
                                            reason="ok", payload=payload)
        settled.append(record)
        log.warning("unknown_outcome_counted", lane=decision.lane, ticket_id=decision.ticket_id, kind=kind,
                    decision_seq=decision.seq, note="admitted before a power cut, outcome never recorded: counted as used")
    last = journal.tail(1)
    if last:
        await asyncio.to_thread(journal.set_mark, SETTLED_MARK, last[-1].seq)
    return settled
