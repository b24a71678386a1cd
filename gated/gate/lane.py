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

A check lane (`purpose = "check"`, handheld) journals its decisions too, an
`ok` marked ``"purpose": "check"``, and nothing after them: no entry is
counted, no passage journaled, `inside` untouched; a benefit redeemed there
is a redemption like any other.

So every admitted decision (but a check) is followed, on its lane and ticket, by exactly
one outcome record: "passage" (entry or exit), "redemption" (a benefit) or
"not_passed", whose ``decision_seq`` names the decision's record. A
handheld's redemption is decided by the registry while it can be asked
(`gated.redeem`), between `decide()` and the journal. A power
cut can fall between the two; at the next start, before any lane runs, the
missing outcome is journaled as used (the relay may have opened): see
`gated.gate.outcomes`.

Everything here runs on the daemon's event loop thread: drivers that live on
other threads (camera, GPIO inputs) hand their events over with
`call_soon_threadsafe`. Nothing here knows hardware details: the outputs are
gpiozero-backed drivers or None. A lane is given the few services it needs
(`LaneServices`), the monotonic clock among them, not the gate around it:
a test builds one from a validator, a journal, mock pins and a fake clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from gated.clock import GateClock
from gated.config import LaneConfig
from gated.drivers.base import Read
from gated.drivers.gpio import Buzzer, LaneLight, Relay
from gated.drivers.keypad import ManualEntry, ManualEntryInvalid
from gated.errors import JournalError
from gated.gate.passage import PassageWindow
from gated.redeem import Redeemer, Redemption, settle
from gated.journal import Journal
from gated.validation import Decision, Direction, Mode, Purpose, Validator
from gated.validation import Lane as LaneSpec

log = structlog.get_logger("gated.gate.lane")

SIGNAL_SECONDS = 1.5  # how long the admit colour / deny pattern shows


@dataclass(frozen=True)
class LaneServices:
    """What a lane needs from the gate around it, and nothing more."""

    validator: Validator
    journal: Journal
    clock: GateClock  # the time decisions and records carry, and whether to trust it
    monotonic: Callable[[], float]  # the clock of reads, passages and passage windows
    spawn: Callable[[Coroutine], Any]  # run a coroutine the gate waits for on stop
    on_journal_failure: Callable[[Exception], None]  # a decision could not be journaled
    on_record: Callable[[], None]  # a record reached the journal
    redeem: Redeemer | None = None  # the registry's Redeem through the uplink (None: no uplink)
    hold: Callable[[Decision], Coroutine[Any, Any, Decision]] | None = None  # an admission waits for the catch-up (gated.gate.catchup)
    freshness: Any = None  # `gated.gate.freshness.Freshness`: its `stale` goes into every decision (None: never stale)


@dataclass
class LaneOutputs:
    relay: Relay | None = None
    light: LaneLight | None = None
    buzzer: Buzzer | None = None
    # Why the relay cannot act now (its I/O module unreachable), or None; while set the lane refuses scans.
    fault: Callable[[], str | None] | None = None

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
    refused_fault: int = 0  # scans refused because the lane's outputs could not act
    passages: int = 0
    not_passed: int = 0
    last_reason: str | None = None
    last_ticket: int | None = None
    last_at: float | None = None
    by_reason: dict[str, int] = field(default_factory=dict)
    faults: int = 0  # an output device that failed, a decision the journal refused


class LaneRunner:
    def __init__(self, config: LaneConfig, services: LaneServices, outputs: LaneOutputs):
        self.config = config
        self.id = config.id
        self.services = services  # replaced whole when the gate reloads its policy
        self.outputs = outputs
        self.spec = LaneSpec(config.id, config.zone, Direction(config.direction), Mode(config.mode), config.categories,
                             Purpose(config.purpose))
        self.window: PassageWindow[tuple[Decision, int]] | None = (
            PassageWindow(config.passage_timeout_s) if config.passage is not None and config.passage_timeout_s else None
        )
        self.counters = LaneCounters()
        self.last_decision: Decision | None = None
        self._expiry_handle: asyncio.TimerHandle | None = None
        self.observers: list[Callable[[Decision], None]] = []  # hear each journaled decision (the operator screen)
        #: hears the seconds from a read to its relay pulse (`gated.metrics`: a histogram's `observe`)
        self.scan_to_relay: Callable[[float], object] | None = None

    # ---- inputs (called on the loop thread) ----

    def on_read(self, read: Read) -> None:
        self.services.spawn(self.handle_read(read))

    def on_manual(self, entry: ManualEntry | ManualEntryInvalid) -> None:
        self.services.spawn(self.handle_manual(entry))

    def on_passage(self, at: float) -> None:
        self.services.spawn(self.handle_passage(at))

    # ---- the path of one scan ----

    async def handle_read(self, read: Read, benefit: str | None = None) -> Decision | None:
        s = self.services
        if (fault := self.fault) is not None:
            # The turnstile cannot open: nobody is admitted, nothing is decided or counted.
            self.counters.refused_fault += 1
            log.warning("scan_refused_lane_fault", lane=self.id, fault=fault, source=read.source)
            self._show_fault()
            return None
        f = s.freshness
        decision = s.validator.decide(read.text, self.spec, s.clock.now(), clock_trusted=s.clock.trusted(), benefit=benefit,
                                      cache_stale=f is not None and f.stale)
        if decision.repeat:
            self.counters.repeats += 1
            return decision
        decision, redemption = await self._settle(decision)
        await self._record_and_act(decision, {"source": read.source, "length": len(read.text), "truncated": read.truncated},
                                   redemption, read_at=read.at)
        return decision

    async def handle_manual(self, entry: ManualEntry | ManualEntryInvalid, benefit: str | None = None) -> Decision | None:
        s = self.services
        if isinstance(entry, ManualEntryInvalid):
            log.info("manual_entry_invalid", lane=self.id, reason=entry.reason)
            self._guarded("light", lambda light: light.deny(SIGNAL_SECONDS))
            self._guarded("buzzer", lambda buzzer: buzzer.play("deny"))
            return None
        f = s.freshness
        decision = s.validator.decide_manual(entry.ticket_id, entry.digits, self.spec, s.clock.now(), clock_trusted=s.clock.trusted(),
                                             benefit=benefit, cache_stale=f is not None and f.stale)
        decision, redemption = await self._settle(decision)
        await self._record_and_act(decision, {"source": entry.source, "typed": True}, redemption)
        return decision

    async def redeem(self, ticket_id: int, benefit: str, *, source: str = "screen") -> Decision:
        """An operator redeems one `benefit` for the holder of `ticket_id` (attended lanes):
        every redemption goes through here, a decision like any other (ok, no_benefit,
        benefit_exhausted...), settled with the registry while it can be asked, journaled, then counted."""
        return await self.decide_identified(ticket_id, source=source, benefit=benefit)

    async def decide_identified(self, ticket_id: int, *, source: str, benefit: str | None = None,
                                extra: dict[str, Any] | None = None) -> Decision:
        """Decide for a ticket an operator identified without a code (`Validator.decide_ticket`):
        journaled with `source` saying how ("screen" for a redemption, "phone" for a pick)."""
        s = self.services
        f = s.freshness
        decision = s.validator.decide_ticket(ticket_id, self.spec, s.clock.now(), clock_trusted=s.clock.trusted(), benefit=benefit,
                                             cache_stale=f is not None and f.stale)
        decision, redemption = await self._settle(decision)
        await self._record_and_act(decision, {"source": source, "identified": True, **(extra or {})}, redemption)
        return decision

    async def _settle(self, decision: Decision) -> tuple[Decision, Redemption | None]:
        """A redemption the cache allows: the registry's answer, or the lane's offline policy."""
        s = self.services
        if s.hold is not None and decision.admitted and not decision.repeat:
            decision = await s.hold(decision)
        return await settle(decision, s.validator, s.redeem, offline_local=self.config.offline_redemption == "local")

    async def _record_and_act(self, decision: Decision, extra: dict[str, Any],
                              redemption: Redemption | None = None, read_at: float | None = None) -> None:
        s = self.services
        payload = {
            "code_kind": decision.kind,
            "category": decision.category,
            "zone": decision.zone,
            "direction": decision.direction,
            "mode": self.spec.mode,
            **extra,
        }
        if decision.check:
            payload["purpose"] = "check"  # an ok that counts nothing: no outcome record follows
        if decision.benefit is not None:
            payload["benefit"] = decision.benefit
        if redemption is not None:
            payload.update(redemption.payload())
        try:
            record = await s.journal.append_async(
                "decision", at=decision.at, lane=self.id, ticket_id=decision.ticket_id, reason=decision.reason, payload=payload
            )
        except JournalError as exc:
            # No record, no entry: the turnstile stays shut and the lane shows a fault.
            self.counters.faults += 1
            s.on_journal_failure(exc)
            self._guarded("light", lambda light: light.deny(SIGNAL_SECONDS))
            self._guarded("buzzer", lambda buzzer: buzzer.play("deny"))
            return
        if decision.admitted and not decision.check:
            relay = self.outputs.relay
            if relay is not None:
                self._guarded("relay", lambda r: r.pulse())
                if read_at is not None and self.scan_to_relay is not None:
                    self.scan_to_relay(s.monotonic() - read_at)
        self._show(decision)
        if decision.admitted and not decision.check:
            if self.window is not None and decision.benefit is None:
                s.validator.reserve(decision)
                self.window.expect((decision, record.seq), s.monotonic())
                self._schedule_expiry()
            else:
                await self._count(decision, record.seq, confirmed=False, redemption=redemption)
        self._tally(decision)
        s.on_record()
        for observer in self.observers:
            try:
                observer(decision)
            except Exception as exc:  # a page must never stop a lane
                log.error("observer_failed", lane=self.id, error=repr(exc))
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
            self.counters.faults += 1
            log.error("output_failed", lane=self.id, output=name, error=repr(exc))
            return None

    async def _count(self, decision: Decision, decision_seq: int, *, confirmed: bool, redemption: Redemption | None = None) -> None:
        """Journal the outcome of the admission journaled as `decision_seq` (it names it)."""
        s = self.services
        usage = s.validator.commit(decision)
        extra = {} if redemption is None else redemption.payload()
        if usage is not None and redemption is not None and 0 < redemption.registry_version <= s.validator.cache.version:
            # The registry's delta for this grant arrived before its answer and took it here already.
            remaining = usage.benefit_remaining + 1
            s.validator.cache.restore_usage(usage.ticket_id, usage.entries_used, usage.inside, usage.benefit, remaining)
            usage = usage._replace(benefit_remaining=remaining)
        if usage is None:
            # The ticket or its benefit left the cache meanwhile: the person is through all the
            # same, so the outcome is journaled (and counted by the registry), without local values.
            kind = "redemption" if decision.benefit is not None else "passage"
            payload = {"ticket_id": decision.ticket_id, "zone": decision.zone, "direction": decision.direction,
                       "benefit": decision.benefit, "confirmed": confirmed, "counted_locally": False,
                       "decision_seq": decision_seq, **extra}
            await s.journal.append_async(kind, at=s.clock.now(), lane=self.id, ticket_id=decision.ticket_id, reason="ok", payload=payload)
            s.on_record()
            return
        kind = "redemption" if usage.benefit is not None else "passage"
        payload = {**usage._asdict(), "confirmed": confirmed, "decision_seq": decision_seq, **extra}
        await s.journal.append_async(kind, at=s.clock.now(), lane=self.id, ticket_id=usage.ticket_id, reason="ok", payload=payload)
        self.counters.passages += 1
        s.on_record()

    # ---- passage confirmation ----

    async def handle_passage(self, at: float) -> None:
        if self.window is None:
            return
        admission = self.window.passage(at)
        if admission is None:
            s = self.services
            await s.journal.append_async("unexpected_passage", at=s.clock.now(), lane=self.id, payload={"zone": self.spec.zone})
            s.on_record()
            log.warning("unexpected_passage", lane=self.id)
            return
        await self._count(*admission, confirmed=True)
        await self.expire_due()

    def _schedule_expiry(self) -> None:
        deadline = self.window.next_deadline() if self.window is not None else None
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
        delay = max(0.0, deadline - self.services.monotonic()) + 0.001
        self._expiry_handle = loop.call_later(delay, lambda: self.services.spawn(self.expire_due()))

    async def expire_due(self, *, all_pending: bool = False) -> None:
        """Record the admitted entries nobody walked through for, by the lane's monotonic
        clock (all of them when the gate stops). A timer calls it at the next deadline."""
        if self.window is None:
            return
        s = self.services
        now = float("inf") if all_pending else s.monotonic()
        for decision, decision_seq in self.window.expired(now):
            self.counters.not_passed += 1
            s.validator.release(decision)
            await s.journal.append_async(
                "not_passed", at=s.clock.now(), lane=self.id, ticket_id=decision.ticket_id, reason=str(decision.reason),
                payload={"zone": decision.zone, "direction": decision.direction, "decided_at": decision.at,
                         "gate_stopping": all_pending, "decision_seq": decision_seq},
            )
            s.on_record()
        if all_pending:
            if self._expiry_handle is not None:
                self._expiry_handle.cancel()
            return
        self._schedule_expiry()

    async def flush_pending(self) -> None:
        """On stop: entries still waiting for their passage are recorded as not passed."""
        await self.expire_due(all_pending=True)

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
        if self.fault is not None:
            return False
        return bool(self._guarded("relay", lambda relay: relay.pulse()))

    @property
    def fault(self) -> str | None:
        """Why the lane cannot act now (its I/O module unreachable), or None."""
        return None if self.outputs.fault is None else self.outputs.fault()

    def _show_fault(self) -> None:
        self._guarded("light", lambda light: light.deny(SIGNAL_SECONDS))
        self._guarded("buzzer", lambda buzzer: buzzer.play("deny"))

    def status(self) -> dict[str, Any]:
        relay = self.outputs.relay
        light = self.outputs.light
        c = self.counters
        return {
            "id": self.id, "zone": self.spec.zone, "direction": str(self.spec.direction), "mode": str(self.spec.mode),
            "purpose": str(self.spec.purpose),
            "decisions": c.decisions, "admitted": c.admitted, "denied": c.denied, "repeats": c.repeats,
            "passages": c.passages, "not_passed": c.not_passed, "faults": c.faults, "last_reason": c.last_reason, "last_ticket": c.last_ticket,
            "by_reason": dict(c.by_reason),
            "relay_energized": None if relay is None else relay.is_energized,
            "light": None if light is None else "#%02X%02X%02X" % tuple(round(x * 255) for x in light.current_color),
            "pending_passages": 0 if self.window is None else len(self.window),
            "fault": self.fault, "refused_fault": c.refused_fault,
        }
