"""A scripted crowd at the simulated door.

People arrive at the entry lane with phone e-tickets (dynamic codes) or
printed badges, shown to the camera or to the serial scanner; people leave
through the exit lane; now and then something goes wrong the way it does at
a real door. Everything reaches the gate through the virtual devices (a QR in
front of the camera, bytes on the serial line, the passage beam broken), and
the crowd learns the outcome only by watching the lane, as a person would.

Rules the crowd keeps:

- one person at a time per lane (a turnstile is a queue): each lane has a
  worker taking people from a short queue; when the queue is full a new
  arrival is turned away rather than piling up. The next person steps up
  only when the lane expects no passage any more, so each passage belongs
  to the person the gate admitted (the gate matches passages first come,
  first served, as a real turnstile must);
- whoever is admitted walks through (the beam is broken for a moment),
  unless the scenario says they don't;
- the first people of a run follow `OPENING` (so even a short run shows the
  interesting cases), then scenarios are drawn at random with `WEIGHTS`,
  exits weighted by how full the hall is;
- every `DESK_EVERY`-th arrival, someone also steps up to the registration
  desk (the handheld lane with a badge printer, if the gate has one) and has
  the e-ticket or badge scanned there, so the desk's operator screen shows
  scans; printing the badge is the operator's click on that screen;
- all randomness comes from one seeded `random.Random`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from gated.validation import TicketState
from gated.validation.token import mint_dynamic, mint_static
from hw_sim.attendees import Attendee
from hw_sim.defaults import DEFAULT_RATE_PER_MIN

if TYPE_CHECKING:
    from gated.gate.daemon import Gate
    from hw_sim.devices import VirtualCamera, VirtualPins, VirtualSerialScanner

log = structlog.get_logger("hw_sim.traffic")

QUEUE_LIMIT = 3
WALK_S = 0.35  # how long a person breaks the beam
UNKNOWN_TICKET_ID = 999_999_999
FORGER_KEY = bytes(range(100, 132))
DESK_EVERY = 5  # one arrival in this many also brings someone to the desk


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    direction: str  # "in" | "out" | "desk": which lane the person goes to
    label: str  # for the help line and logs


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("guest_phone", "in", "guest with a phone e-ticket"),
    Scenario("badge_camera", "in", "printed badge shown to the camera"),
    Scenario("media_badge", "in", "media with a printed badge"),
    Scenario("staff_badge", "in", "staff badge on the scanner"),
    Scenario("vip_phone", "in", "VIP with a phone e-ticket"),
    Scenario("leave", "out", "someone leaves"),
    Scenario("forged", "in", "a forged code"),
    Scenario("unknown_key", "in", "a code signed with another event's key"),
    Scenario("noise", "in", "line noise on the serial scanner"),
    Scenario("expired", "in", "a forwarded screenshot of an old code"),
    Scenario("revoked", "in", "a revoked ticket"),
    Scenario("old_badge", "in", "the old badge after a reprint"),
    Scenario("wrong_day", "in", "a day-2 ticket today"),
    Scenario("unknown_ticket", "in", "a genuine-looking code for no ticket"),
    Scenario("passback", "in", "someone inside tries to enter again"),
    Scenario("no_walk", "in", "admitted but never walks through"),
    Scenario("tailgater", "in", "someone slips through behind"),
    Scenario("desk_visit", "desk", "someone at the registration desk"),
)}

OPENING = (
    "guest_phone", "staff_badge", "forged", "badge_camera", "leave", "expired", "noise", "revoked", "no_walk",
    "media_badge", "leave", "tailgater", "old_badge", "passback", "wrong_day", "guest_phone", "unknown_key", "leave",
)

WEIGHTS: dict[str, float] = {
    "guest_phone": 30, "badge_camera": 8, "media_badge": 5, "staff_badge": 5, "vip_phone": 3,
    "forged": 1.5, "unknown_key": 0.5, "noise": 1.5, "expired": 2, "revoked": 1, "old_badge": 1,
    "wrong_day": 1.5, "unknown_ticket": 0.5, "passback": 1.5, "no_walk": 1, "tailgater": 1,
}


class Crowd:
    """People at the gate's lanes, arriving at `rate_per_min` while `auto` is on."""

    def __init__(self, gate: "Gate", people: list[Attendee], *, key: bytes, kid: int,
                 scanners: dict[str, "VirtualSerialScanner"], cameras: dict[str, "VirtualCamera"], pins: "VirtualPins",
                 rate_per_min: float = DEFAULT_RATE_PER_MIN, seed: int = 1,
                 say: Callable[[str, str], object] = lambda lane, text: None) -> None:
        if rate_per_min <= 0:
            raise ValueError(f"rate must be positive, got {rate_per_min} per minute")
        self.gate = gate
        self.people = people
        self.key, self.kid = key, kid
        self.scanners, self.cameras, self.pins = scanners, cameras, pins
        self.rate_per_min = rate_per_min
        self.rng = random.Random(seed)
        self.say = say
        self.auto = True
        self.lane_for = {
            "in": next(lane.id for lane in gate.config.lanes if lane.direction == "in"),
            "out": next(lane.id for lane in gate.config.lanes if lane.direction == "out"),
        }
        self.desk = next((lane.id for lane in gate.config.lanes
                          if lane.mode == "handheld" and lane.printer is not None and lane.id in scanners), None)
        if self.desk is not None:
            self.lane_for["desk"] = self.desk
        self.zone = gate.config.lanes[0].zone
        self._queues: dict[str, asyncio.Queue[str]] = {lane.id: asyncio.Queue(QUEUE_LIMIT) for lane in gate.config.lanes}
        self._busy: dict[str, bool] = {lane_id: False for lane_id in self._queues}
        self._tasks: list[asyncio.Task] = []
        self._opening = list(OPENING)
        self._last_scan: dict[int, float] = {}  # ticket -> monotonic time of its last scan
        self.arrivals = 0
        self.turned_away = 0
        self._ticks = 0

    # ---- control ----

    def start(self) -> None:
        for lane_id in self._queues:
            self._tasks.append(asyncio.create_task(self._lane_worker(lane_id), name=f"crowd-{lane_id}"))
        self._tasks.append(asyncio.create_task(self._arrivals(), name="crowd-arrivals"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def send(self, name: str, *, quiet: bool = False) -> bool:
        """Put one person of scenario `name` in the queue of their lane; False if the queue is full."""
        scenario = SCENARIOS[name]
        lane_id = self.lane_for[scenario.direction]
        try:
            self._queues[lane_id].put_nowait(name)
        except asyncio.QueueFull:
            self.turned_away += 1
            if not quiet:
                self.say(lane_id, f"the queue at {lane_id} is full: {scenario.label} has to wait")
            return False
        return True

    def _queue_full(self, name: str) -> bool:
        return self._queues[self.lane_for[SCENARIOS[name].direction]].full()

    def idle(self) -> bool:
        return all(q.empty() for q in self._queues.values()) and not any(self._busy.values())

    async def drain(self, timeout_s: float) -> bool:
        """Stop new arrivals, let the people in the lanes finish; True if all did within `timeout_s`."""
        self.auto = False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pending = sum(lane.status()["pending_passages"] for lane in self.gate.lanes.values())
            if self.idle() and pending == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    # ---- arrivals ----

    async def _arrivals(self) -> None:
        while True:
            mean_gap = 60.0 / self.rate_per_min
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * mean_gap)
            if not self.auto or self.gate.emergency_active:  # nobody walks in during an evacuation
                continue
            self._ticks += 1
            if self.desk is not None and self._ticks % DESK_EVERY == 0:
                self.send("desk_visit", quiet=True)
            if self._opening:  # the opening plays in order: wait for room rather than skip a case
                if not self._queue_full(self._opening[0]):
                    self.send(self._opening.pop(0))
                continue
            self.send(self.next_scenario(), quiet=True)  # a crowd too big for the lanes just thins out

    def next_scenario(self) -> str:
        """A scenario drawn at random (after the opening)."""
        if self._opening:
            return self._opening.pop(0)
        capacity = self.gate.validator.zone_capacity(self.zone) or 200
        inside = self.gate.validator.cache.occupancy(self.zone)
        # People leave more as the hall fills: about as many leave as arrive when it is half full.
        leave_weight = sum(WEIGHTS.values()) * min(1.5, 2.0 * inside / capacity)
        names = [*WEIGHTS, "leave"]
        weights = [*WEIGHTS.values(), leave_weight]
        return self.rng.choices(names, weights)[0]

    async def _lane_worker(self, lane_id: str) -> None:
        queue = self._queues[lane_id]
        while True:
            name = await queue.get()
            self._busy[lane_id] = True
            try:
                await self._lane_ready(lane_id)
                self.arrivals += 1
                await getattr(self, f"_do_{name}")(lane_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one confused person must not stop the crowd
                log.exception("crowd_scenario_failed", scenario=name)
                self.say(lane_id, f"simulator error in scenario {name}: {exc!r}")
            finally:
                self._busy[lane_id] = False

    async def _lane_ready(self, lane_id: str) -> None:
        """Wait (at most the passage timeout and a bit) until the lane expects no passage and is locked."""
        lane = self.gate.lanes[lane_id]
        deadline = time.monotonic() + (lane.config.passage_timeout_s or 0.0) + 2.0
        while time.monotonic() < deadline:
            status = lane.status()
            if not status["pending_passages"] and (not status["relay_energized"] or self.gate.emergency_active):
                return
            await asyncio.sleep(0.05)

    # ---- who ----

    def _inside(self, person: Attendee) -> bool:
        rec = self.gate.validator.cache.get(person.ticket_id)
        return rec is not None and self.zone in rec.inside

    def _recently_scanned(self, person: Attendee) -> bool:
        """Scanned within the debounce window (and a margin): showing the code again would be a repeat."""
        at = self._last_scan.get(person.ticket_id)
        return at is not None and time.monotonic() - at < self.gate.config.policy.debounce_s + 1.0

    def _pick(self, predicate: Callable[[Attendee], bool]) -> Attendee | None:
        candidates = [p for p in self.people if predicate(p) and not self._recently_scanned(p)]
        return self.rng.choice(candidates) if candidates else None

    def _arriving(self, *categories: str) -> Attendee | None:
        """Someone of these categories, outside, whose ticket is good today."""
        def ok(p: Attendee) -> bool:
            r = p.record
            return (r.category in categories and r.state == TicketState.ACTIVE and not p.note
                    and not self._inside(p))
        return self._pick(ok)

    # ---- how ----

    def _phone_code(self, person: Attendee, at: float | None = None) -> str:
        return mint_dynamic(self.key, self.kid, person.ticket_id, self.gate.clock.now() if at is None else at)

    def _badge_code(self, person: Attendee, serial: int | None = None) -> str:
        return mint_static(self.key, self.kid, person.ticket_id, person.record.badge_serial if serial is None else serial)

    def _can_use_camera(self, lane_id: str) -> bool:
        return lane_id in self.cameras

    async def _present(self, lane_id: str, code: str, via: str) -> Any:
        """Show `code` at the lane ("camera" or "scanner") and wait for the lane's decision (None: none came)."""
        lane = self.gate.lanes[lane_id]
        before = lane.counters.decisions + lane.counters.repeats
        if via == "camera" and lane_id in self.cameras:
            self.cameras[lane_id].hold_up(code)
            timeout = 4.0
        else:
            self.scanners[lane_id].scan(code)
            timeout = 2.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = lane.counters
            if c.decisions + c.repeats != before:
                return lane.last_decision
            await asyncio.sleep(0.02)
        return None

    async def walk(self, lane_id: str) -> None:
        """One person through the turnstile: the beam broken for a moment, then clear."""
        if not self.pins.has_passage_sensor(lane_id):
            return
        self.pins.set_beam(lane_id, True)
        try:
            await asyncio.sleep(WALK_S)
        finally:
            self.pins.set_beam(lane_id, False)

    async def _visit(self, lane_id: str, person: Attendee | None, code: str, how: str, *, via: str, walks: bool = True,
                     who: str | None = None) -> Any:
        who = who or (person.label if person is not None else "someone")
        self.say(lane_id, f"{who}: {how}")
        if person is not None:
            self._last_scan[person.ticket_id] = time.monotonic()
        decision = await self._present(lane_id, code, via)
        if decision is None:
            self.say(lane_id, f"{who}: no decision (the code was not read)")
            return None
        if decision.admitted:
            await asyncio.sleep(self.rng.uniform(0.2, 0.6))
            if walks:
                await self.walk(lane_id)
            else:
                self.say(lane_id, f"{who}: turns back without passing")
        else:
            await asyncio.sleep(self.rng.uniform(0.3, 0.8))  # reads the light, steps aside
        return decision

    def _via(self, lane_id: str, camera_share: float) -> str:
        return "camera" if self._can_use_camera(lane_id) and self.rng.random() < camera_share else "scanner"

    def _nobody(self, lane_id: str, what: str) -> None:
        self.say(lane_id, f"(nobody for this case right now: {what})")

    # ---- scenarios (one person each) ----

    async def _entry(self, lane_id: str, categories: tuple[str, ...], medium: str, what: str) -> None:
        person = self._arriving(*categories)
        if person is None:
            return self._nobody(lane_id, f"no {what} outside")
        if medium == "phone":
            via = self._via(lane_id, 0.6)
            code, how = self._phone_code(person), f"phone e-ticket at the {via}"
        else:
            via = self._via(lane_id, 0.3) if medium == "badge" else "camera"
            code, how = self._badge_code(person), f"printed badge at the {via}"
        await self._visit(lane_id, person, code, how, via=via)

    async def _do_guest_phone(self, lane_id: str) -> None:
        await self._entry(lane_id, ("guest",), "phone", "guest")

    async def _do_vip_phone(self, lane_id: str) -> None:
        await self._entry(lane_id, ("vip",), "phone", "VIP")

    async def _do_badge_camera(self, lane_id: str) -> None:
        await self._entry(lane_id, ("exhibitor", "guest", "vip"), "badge-camera", "badge holder")

    async def _do_media_badge(self, lane_id: str) -> None:
        await self._entry(lane_id, ("media",), "badge", "media")

    async def _do_staff_badge(self, lane_id: str) -> None:
        person = self._arriving("staff")
        if person is None:
            return self._nobody(lane_id, "no staff outside")
        await self._visit(lane_id, person, self._badge_code(person), "staff badge on the scanner", via="scanner")

    async def _do_leave(self, lane_id: str) -> None:
        person = self._pick(self._inside)
        if person is None:
            return self._nobody(lane_id, "no one is inside yet")
        if self.rng.random() < 0.6:
            code, how = self._phone_code(person), "leaves, phone e-ticket on the scanner"
        else:
            code, how = self._badge_code(person), "leaves, badge on the scanner"
        await self._visit(lane_id, person, code, how, via="scanner")

    async def _do_forged(self, lane_id: str) -> None:
        person = self.rng.choice(self.people)
        code = mint_dynamic(FORGER_KEY, self.kid, person.ticket_id, self.gate.clock.now())
        await self._visit(lane_id, None, code, f"a home-made QR for ticket #{person.ticket_id}", via=self._via(lane_id, 0.5),
                          who="a forger")

    async def _do_unknown_key(self, lane_id: str) -> None:
        person = self.rng.choice(self.people)
        code = mint_dynamic(FORGER_KEY, 9, person.ticket_id, self.gate.clock.now())
        await self._visit(lane_id, None, code, "an e-ticket from another event (key id 9)", via="scanner", who="a lost visitor")

    async def _do_noise(self, lane_id: str) -> None:
        noise = "".join(chr(self.rng.randrange(256)) for _ in range(self.rng.randrange(3, 24))).replace("\r", "").replace("\n", "")
        self.say(lane_id, f"line noise on the {lane_id} scanner cable ({len(noise)} bytes)")
        await self._present(lane_id, noise or "\x00", "scanner")

    async def _do_expired(self, lane_id: str) -> None:
        person = self._arriving("guest")
        if person is None:
            return self._nobody(lane_id, "no guest outside")
        code = self._phone_code(person, at=self.gate.clock.now() - 3 * 3600)
        await self._visit(lane_id, person, code, "a screenshot of the e-ticket forwarded this morning", via=self._via(lane_id, 0.7))

    async def _do_revoked(self, lane_id: str) -> None:
        person = self._pick(lambda p: p.record.state == TicketState.REVOKED)
        if person is None:
            return self._nobody(lane_id, "no revoked ticket left")
        await self._visit(lane_id, person, self._phone_code(person), "phone e-ticket of a refunded ticket", via="scanner")

    async def _do_old_badge(self, lane_id: str) -> None:
        person = self._pick(lambda p: p.record.badge_serial > 0 and p.record.state == TicketState.ACTIVE)
        if person is None:
            return self._nobody(lane_id, "no reprinted badge left")
        code = self._badge_code(person, serial=person.record.badge_serial - 1)
        await self._visit(lane_id, person, code, "the old badge (it was reprinted)", via="scanner")

    async def _do_wrong_day(self, lane_id: str) -> None:
        person = self._pick(lambda p: p.note == "day 2 ticket")
        if person is None:
            return self._nobody(lane_id, "no day-2 ticket left")
        await self._visit(lane_id, person, self._phone_code(person), "a day-2 ticket, a day early", via="scanner")

    async def _do_unknown_ticket(self, lane_id: str) -> None:
        code = mint_dynamic(self.key, self.kid, UNKNOWN_TICKET_ID, self.gate.clock.now())
        await self._visit(lane_id, None, code, f"a correctly signed code for ticket #{UNKNOWN_TICKET_ID}, never sold",
                          via="scanner", who="a test code")

    async def _do_passback(self, lane_id: str) -> None:
        person = self._pick(self._inside)
        if person is None:
            return self._nobody(lane_id, "no one is inside yet")
        await self._visit(lane_id, person, self._phone_code(person), "already inside, shows the e-ticket again for a friend",
                          via="scanner")

    async def _do_no_walk(self, lane_id: str) -> None:
        person = self._arriving("guest", "exhibitor")
        if person is None:
            return self._nobody(lane_id, "no guest outside")
        await self._visit(lane_id, person, self._phone_code(person), "phone e-ticket on the scanner", via="scanner", walks=False)

    async def _do_tailgater(self, lane_id: str) -> None:
        person = self._arriving("guest")
        if person is None:
            self.say(lane_id, "someone climbs over the turnstile")
            await self.walk(lane_id)
            return
        decision = await self._visit(lane_id, person, self._phone_code(person), "phone e-ticket on the scanner", via="scanner")
        if decision is not None and decision.admitted:
            await asyncio.sleep(0.1)
            self.say(lane_id, "a tailgater slips through right behind")
            await self.walk(lane_id)

    async def _do_desk_visit(self, lane_id: str) -> None:
        person = self._arriving("guest", "media", "staff", "exhibitor", "vip")
        if person is None:
            return self._nobody(lane_id, "no one outside to register")
        if self.rng.random() < 0.5:
            code, how = self._phone_code(person), "at the desk for a badge, phone e-ticket on the desk scanner"
        else:
            code, how = self._badge_code(person), "at the desk, badge on the desk scanner"
        await self._visit(lane_id, person, code, how, via="scanner")

    async def tailgate(self, lane_id: str) -> None:
        """A passage with nobody admitted (the console's `p` key)."""
        self.say(lane_id, "someone pushes through the turnstile without a scan")
        await self.walk(lane_id)
