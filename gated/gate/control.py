"""The admin actions on a running gate: what an operator asks through the
`GateAdmin` service (`gated admin ...`) or the simulator's console.

Open a lane once (journaled first, like every opening), assert or clear an
emergency source (lanes stay open while any source holds, and the admin
cannot clear what the fire-alarm input still asserts), reload a changed
[policy] (anything else needs a restart: said, not half-done), status and
journal statistics. The admin service's contract is `gated.rpc.admin.GateControl`.

`GateControl` is mixed into `gated.gate.daemon.Gate`: the attributes
annotated on the class are what the Gate's wiring provides.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import structlog

from gated.config import Config, load_config
from gated.drivers.gpio import EmergencyInput
from gated.errors import GatedError, JournalError
from gated.clock import GateClock
from gated.gate.lane import LaneRunner
from gated.journal import Journal
from gated.validation import KeyRing, Policy, Validator

log = structlog.get_logger("gated.gate.control")


def policy_from_config(config: Config) -> Policy:
    p = config.policy
    return Policy(
        skew_steps=p.skew_steps,
        debounce_s=p.debounce_s,
        rate_burst=p.rate_burst,
        rate_per_s=p.rate_per_s,
        anti_passback=p.anti_passback,
        admit_static_when_unsynced=config.gate.offline_policy == "lenient",
        colors=dict(p.colors),
        default_color=p.default_color,
        zone_capacity=dict(p.zones),
        when_stale=p.when_stale,
    )


class GateControl:
    """The admin actions (see the module docstring)."""

    config: Config
    gate_id: str
    started_at: float
    lanes: dict[str, LaneRunner]
    journal: Journal
    clock: GateClock
    keyring: KeyRing
    validator: Validator
    uplink: Any
    freshness: Any  # gated.gate.freshness.Freshness, None without an uplink
    fault: str | None
    emergency_active: bool
    _emergency_sources: set[str]  # "input", "admin": open while any is asserted
    _emergency: EmergencyInput | None
    after_record: Callable[[], None]  # a record reached the journal: wake the uplink
    journal_failed: Callable[[Exception], None]  # the journal refused a write: the fault, said loudly

    def status(self) -> dict[str, Any]:
        cache = self.validator.cache
        clock = self.clock.status()
        return {
            "gate_id": self.gate_id,
            "uptime_s": round(time.time() - self.started_at, 1),
            "lanes": [{**lane.status(), "state": self._lane_state(lane)} for lane in self.lanes.values()],
            "emergency": self.emergency_active,
            "emergency_sources": sorted(self._emergency_sources),
            "inputs_connected": self.inputs_connected(),  # every scanner's device open (the simulator waits for it)
            "fault": self.fault,
            "cache_version": cache.version,
            "cache_tickets": len(cache),
            # the registry's confirmation of the cache (and keys): stale past [uplink] stale_after_s
            "cache_freshness": None if self.freshness is None else self.freshness.status(),
            "keys": self.keyring.kids(),
            "clock": dataclasses.asdict(clock),
            "journal_backlog": self._backlog(),
            "uplink": self.uplink.status() if self.uplink is not None else {"configured": self.config.uplink is not None, "connected": False},
        }

    def _lane_state(self, lane: LaneRunner) -> str:
        """One word for the operator: fault, emergency_open, open, expecting_passage or idle."""
        relay = lane.outputs.relay
        if self.fault or lane.fault:
            return "fault"
        if self.emergency_active:
            return "emergency_open"
        if relay is not None and relay.is_energized:
            return "open"
        return "expecting_passage" if lane.window is not None and len(lane.window) else "idle"

    def _backlog(self) -> int | None:
        try:
            return self.journal.backlog()
        except JournalError as exc:
            self.journal_failed(exc)
            return None

    def journal_stats(self) -> dict[str, Any]:
        return self.journal.stats()

    async def open_lane(self, lane_id: str) -> bool:
        """An operator opens a lane once: recorded first, like every opening."""
        lane = self.lanes.get(lane_id)
        if lane is None or lane.outputs.relay is None:
            return False
        await self.journal.append_async("manual_open", at=self.clock.now(), lane=lane_id, payload={"source": "admin"})
        self.after_record()
        opened = lane.open_once()
        log.warning("lane_opened_by_operator", lane=lane_id, opened=opened)
        return opened

    async def set_emergency(self, active: bool, source: str = "admin") -> None:
        """Assert or clear one source of emergency; lanes stay open while any source holds.

        The admin service cannot clear an emergency the fire-alarm input still asserts."""
        if active:
            self._emergency_sources.add(source)
        else:
            self._emergency_sources.discard(source)
        if self._emergency is not None and self._emergency.is_active:
            self._emergency_sources.add("input")
        active = bool(self._emergency_sources)
        if active == self.emergency_active:
            return
        self.emergency_active = active
        for lane in self.lanes.values():
            relay, light = lane.outputs.relay, lane.outputs.light
            if relay is not None:
                relay.hold_open() if active else relay.release()
            if light is not None:
                light.show("#00FF00") if active else light.idle()
        await self.journal.append_async("emergency", at=self.clock.now(), payload={"active": active, "source": source})
        self.after_record()
        log.warning("emergency", active=active, source=source)

    async def reload_config(self) -> tuple[bool, str]:
        """Apply a changed [policy]; anything else needs a restart (said, not half-done)."""
        try:
            new = load_config(self.config.path, check_files=True)
        except GatedError as exc:
            return False, str(exc)
        if dataclasses.replace(new, policy=self.config.policy) != self.config:
            return False, "only [policy] can change while running; restart gated for other changes"
        self.config = new
        validator = Validator(self.keyring, self.validator.cache, policy_from_config(new))
        validator.adopt_lane_memory(self.validator)
        self.validator = validator
        for lane in self.lanes.values():
            lane.services = dataclasses.replace(lane.services, validator=validator)
        log.info("config_reloaded", path=str(new.path))
        return True, "policy reloaded"
