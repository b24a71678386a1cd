"""Scripted days: `gated sim --scenario FILE [--json]`, headless, with a summary that says whether anything was lost.

A scenario is a TOML file (examples in scenarios/):

    name = "rush with an outage"
    duration_s = 120        # scenario seconds of arrivals (then the lanes finish and the journal drains)
    speed = 4.0             # time compression, see below (default 1)
    seed = 7

    [lanes.in-1]
    arrivals_per_min = 40   # scenario minutes
    [lanes.out-1]
    arrivals_per_min = 10

    [bad]                   # share of arrivals presenting each bad kind (the rest: valid codes, a badge now and then)
    forged = 0.04
    expired = 0.03
    noise = 0.02

    [[fault]]
    at_s = 30
    kind = "network_cut"    # network_cut {mode}, network_restore, power_cut {off_s}, power_restore,
    mode = "blackhole"      # scanner_unplug/scanner_replug {lane}, clock_jump {offset_s}, emergency {active},
                            # line_noise {lane, bursts}, tailgate {lane}, revoke/reprint {ticket}

Time compression: the scenario's clock runs `speed` times as fast as the
real one. Arrival rates and fault times are in scenario time and are divided
by `speed` (a 30-per-minute lane at speed 4 sees a person every half second
of real time; a fault at 60 s happens after 15 real seconds). What the gate
does takes real time: its decisions, fsyncs, passage timeouts, reconnects and
reboots are not compressed, so a high speed makes a queue rather than a
shorter day. A power cut's `off_s` is scenario time as well.

Each lane has one queue: a person steps up when the one before has an answer
and, if admitted, has walked through and the turnstile locked again (a
turnstile is a queue; the relay coil at the I/O module says when); while the gate has no power, people wait. A
presentation no decision answers within 3 s is shown again once the gate is
back (a person scans again); only a presentation never answered counts as
`unanswered`.

The summary (`summarize`) is read from outside the gate, after the journal
drained to the registry:

- presented, admitted, denied by reason, unanswered (from the presentations);
- relay openings: the relay coils' rising edges at the I/O module (those
  while the emergency input holds every lane open counted apart);
- events at the registry; lost: an opening the registry holds no record of
  after the drain: an admitted decision (or operator opening) on a relay lane
  the registry lacks, plus openings the I/O module saw beyond what the journal
  accounts for on that lane; duplicated: journal records
  the registry holds more than once (the same seq under two epochs), and
  journal decisions beyond one per presentation (a person who got no answer
  scans again: two scans, one presentation; if the first scan was decided
  after all, that is two decisions for one person, counted here);
- double_admissions: single-entry tickets with more than one counted entry;
- scan-to-relay p50/p99 (ms, real time): from the bytes on the scanner's pty
  to the relay coil rising at the I/O module (the module's own clock of the
  write); scan-to-decision: to the decision read from the journal file
  (polled every 10 ms).

Exit status 1 if lost, duplicated or double_admissions is not 0.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
import statistics
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hw_sim.rehearsal import BAD_KINDS, CUT_MODES, Rehearsal, RehearsalError

FAULT_KINDS = ("network_cut", "network_restore", "power_cut", "power_restore", "scanner_unplug", "scanner_replug",
               "clock_jump", "emergency", "line_noise", "tailgate", "revoke", "reprint")
_FAULT_KEYS = {"at_s", "kind", "mode", "off_s", "lane", "offset_s", "active", "bursts", "ticket", "restart"}
MAX_DURATION_S = 7 * 86400
BADGE_SHARE = 0.2  # of the valid arrivals, how many show a printed badge rather than a phone
RETRY_LIMIT = 3
CAMERA_SHARE = 0.3  # at a lane with a camera, how many hold their code up to it rather than to the scanner


class ScenarioError(ValueError):
    """A scenario file that cannot run: one line naming the file and the key."""


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    kind: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    duration_s: float
    speed: float
    seed: int
    arrivals_per_min: dict[str, float]
    bad: dict[str, float]
    faults: tuple[Fault, ...]
    path: str = ""

    @property
    def real_duration_s(self) -> float:
        return self.duration_s / self.speed


def _number(where: str, key: str, value: Any, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(f"{where}: {key} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ScenarioError(f"{where}: {key} must be between {low:g} and {high:g}, got {value:g}")
    return float(value)


def parse(data: dict[str, Any], where: str = "scenario") -> Scenario:
    """A checked Scenario from what tomllib read; ScenarioError names the key at fault."""
    known = {"name", "duration_s", "speed", "seed", "lanes", "bad", "fault"}
    for key in data:
        if key not in known:
            raise ScenarioError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
    name = data.get("name", Path(where).stem)
    if not isinstance(name, str):
        raise ScenarioError(f"{where}: name must be a string")
    if "duration_s" not in data:
        raise ScenarioError(f"{where}: duration_s is required")
    duration = _number(where, "duration_s", data["duration_s"], low=1, high=MAX_DURATION_S)
    speed = _number(where, "speed", data.get("speed", 1.0), low=0.1, high=1000)
    seed = data.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ScenarioError(f"{where}: seed must be an integer")
    lanes = data.get("lanes")
    if not isinstance(lanes, dict) or not lanes:
        raise ScenarioError(f"{where}: [lanes.ID] tables with arrivals_per_min are required")
    rates = {}
    for lane_id, table in lanes.items():
        if not isinstance(table, dict) or set(table) - {"arrivals_per_min"}:
            raise ScenarioError(f"{where}: lanes.{lane_id}: only arrivals_per_min is known")
        rates[lane_id] = _number(where, f"lanes.{lane_id}.arrivals_per_min", table.get("arrivals_per_min"), low=0, high=600)
    bad = data.get("bad", {})
    if not isinstance(bad, dict):
        raise ScenarioError(f"{where}: [bad] must be a table of shares")
    shares = {}
    for kind, share in bad.items():
        if kind not in BAD_KINDS:
            raise ScenarioError(f"{where}: bad.{kind}: unknown kind (known: {', '.join(BAD_KINDS)})")
        shares[kind] = _number(where, f"bad.{kind}", share, low=0, high=1)
    if sum(shares.values()) > 1:
        raise ScenarioError(f"{where}: the [bad] shares add up to {sum(shares.values()):g}, more than 1")
    faults = []
    raw_faults = data.get("fault", [])
    if not isinstance(raw_faults, list):
        raise ScenarioError(f"{where}: faults are [[fault]] tables")
    for i, f in enumerate(raw_faults, 1):
        at = f"{where}: fault {i}"
        if not isinstance(f, dict):
            raise ScenarioError(f"{at}: must be a table")
        unknown = set(f) - _FAULT_KEYS
        if unknown:
            raise ScenarioError(f"{at}: unknown key {sorted(unknown)[0]!r}")
        kind = f.get("kind")
        if kind not in FAULT_KINDS:
            raise ScenarioError(f"{at}: kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        at_s = _number(at, "at_s", f.get("at_s"), low=0, high=duration)
        args = {k: v for k, v in f.items() if k not in ("at_s", "kind")}
        if kind == "network_cut" and args.get("mode", "drop") not in CUT_MODES:
            raise ScenarioError(f"{at}: mode must be one of {', '.join(CUT_MODES)}")
        if kind == "power_cut" and "off_s" in args:
            _number(at, "off_s", args["off_s"], low=0, high=3600)
        if kind in ("scanner_unplug", "scanner_replug", "line_noise", "tailgate"):
            if args.get("lane") not in rates:
                raise ScenarioError(f"{at}: lane must be one of the scenario's lanes ({', '.join(rates)})")
        if kind == "clock_jump":
            _number(at, "offset_s", args.get("offset_s"), low=-10 * 365 * 86400, high=10 * 365 * 86400)
        if kind in ("revoke", "reprint") and (isinstance(args.get("ticket"), bool) or not isinstance(args.get("ticket"), int)):
            raise ScenarioError(f"{at}: ticket must be a ticket number")
        faults.append(Fault(at_s, kind, args))
    faults.sort(key=lambda f: f.at_s)
    return Scenario(name, duration, speed, seed, rates, shares, tuple(faults), where)


def load(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, str(path))


# --------------------------------------------------------------------------
# Running one


class ScenarioRun:
    """One scenario on a started Rehearsal: arrivals per lane, faults on time, then the drain and the summary."""

    def __init__(self, scenario: Scenario, rehearsal: Rehearsal, say: Callable[[str], object] = lambda text: None) -> None:
        missing = set(scenario.arrivals_per_min) - set(rehearsal.lane_ids())
        if missing:
            raise ScenarioError(f"{scenario.path}: no lane {sorted(missing)[0]!r} in the gate (lanes: {', '.join(rehearsal.lane_ids())})")
        self.s = scenario
        self.r = rehearsal
        self.say = say
        self.rng = random.Random(scenario.seed)
        self.queues: dict[str, int] = collections.Counter()
        self.fault_log: list[dict[str, Any]] = []
        self.power_cuts = 0
        self.drained = False

    def _kind(self) -> str:
        roll = self.rng.random()
        for kind, share in self.s.bad.items():
            if roll < share:
                return kind
            roll -= share
        return "badge" if self.rng.random() < BADGE_SHARE else "valid"

    async def _lane(self, lane_id: str, rate: float, end: float) -> None:
        """Arrivals at `rate` per scenario minute (Poisson), one person at a time at the scanner."""
        if rate <= 0:
            return
        mean_gap = 60.0 / rate / self.s.speed
        next_at = time.monotonic() + self.rng.expovariate(1.0 / mean_gap)
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            kind = self._kind()
            if kind == "old_badge" and not any(s > 0 for s in self.r.serials.values()):
                kind = "valid"
            await self._one(lane_id, kind)
            next_at = max(next_at + self.rng.expovariate(1.0 / mean_gap), time.monotonic())

    async def _one(self, lane_id: str, kind: str) -> None:
        via = "camera" if lane_id in self.r.cameras and kind != "noise" and self.rng.random() < CAMERA_SHARE else "scanner"
        for attempt in range(RETRY_LIMIT):
            try:
                await self.r.gate_up()  # nobody can scan at a dark turnstile: they wait
            except RehearsalError as exc:
                self.say(f"{lane_id}: {exc}; the person goes home")
                return
            try:
                if attempt == 0:
                    p = await self.r.present(lane_id, kind=kind, via=via)
                else:  # the same person scans again: not a new presentation
                    p = await self.r.represent(first)
            except RehearsalError as exc:
                self.say(f"{lane_id}: {exc}")
                return
            first = p
            if p.reason is not None:
                if p.reason == "ok" and self.r.can_walk(lane_id):
                    await asyncio.sleep(0.1)
                    await self.r.walk(lane_id)
                await self.r.turnstile_locked(lane_id, p)
                return

    async def _faults(self, start: float) -> None:
        for fault in self.s.faults:
            await asyncio.sleep(max(0.0, start + fault.at_s / self.s.speed - time.monotonic()))
            args = dict(fault.args)
            try:
                result = await self._do(fault.kind, args)
            except RehearsalError as exc:
                result = {"error": str(exc)}
            self.fault_log.append({"at_s": fault.at_s, "kind": fault.kind, **({"error": result["error"]} if "error" in result else {})})

    async def _do(self, kind: str, a: dict[str, Any]) -> dict[str, Any]:
        r = self.r
        if kind == "network_cut":
            return await r.network_cut(a.get("mode", "drop"))
        if kind == "network_restore":
            return await r.network_restore()
        if kind == "power_cut":
            self.power_cuts += 1
            off = a.get("off_s", 3.0)
            return await r.power_cut(None if off is None else off / self.s.speed)
        if kind == "power_restore":
            return await r.power_restore()
        if kind == "scanner_unplug":
            return await r.scanner_unplug(a["lane"])
        if kind == "scanner_replug":
            return await r.scanner_replug(a["lane"])
        if kind == "clock_jump":
            return await r.clock_jump(float(a["offset_s"]), restart=bool(a.get("restart", True)))
        if kind == "emergency":
            return await r.set_emergency(bool(a.get("active", True)))
        if kind == "line_noise":
            return await r.line_noise(a["lane"], bursts=int(a.get("bursts", 5)))
        if kind == "tailgate":
            return await r.tailgate(a["lane"])
        if kind == "revoke":
            return await r.revoke(int(a["ticket"]))
        if kind == "reprint":
            return await r.reprint(int(a["ticket"]))
        raise RehearsalError(f"unknown fault {kind!r}")

    async def run(self) -> dict[str, Any]:
        start = time.monotonic()
        end = start + self.s.real_duration_s
        self.say(f"scenario {self.s.name!r}: {self.s.duration_s:g} s at speed {self.s.speed:g} ({self.s.real_duration_s:g} s real)")
        faults = asyncio.create_task(self._faults(start))
        lanes = [asyncio.create_task(self._lane(lane, rate, end)) for lane, rate in self.s.arrivals_per_min.items()]
        try:
            await asyncio.gather(*lanes)
            await faults
        finally:
            for task in (*lanes, faults):
                task.cancel()
            await asyncio.gather(*lanes, faults, return_exceptions=True)
        self.say("doors closing: the network back, the gate powered, the journal draining to the registry")
        self.drained = await self.r.drain()
        summary = summarize(self.r, power_cuts=self.power_cuts, drained=self.drained)
        summary.update({"scenario": self.s.name, "duration_s": self.s.duration_s, "speed": self.s.speed,
                        "real_seconds": round(time.monotonic() - start, 1), "faults": self.fault_log})
        return summary


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 2)


def summarize(r: Rehearsal, *, power_cuts: int | None = None, drained: bool = True) -> dict[str, Any]:
    """The figures of a run so far, read from the presentations, the gate's journal and the registry's file."""
    relay_lanes = {lane["id"] for lane in r.lanes if lane["relay"]}
    single_entry = {p.ticket_id for p in r.people if p.record.max_entries == 1}
    presented = r.presentations
    answered = [p for p in presented if p.reason is not None]
    by_reason = collections.Counter(p.reason for p in answered)
    decisions = [rec for rec in r.records if rec["kind"] == "decision"]
    openings = [rec for rec in decisions if rec["reason"] == "ok" and rec["lane"] in relay_lanes]
    manual = [rec for rec in r.records if rec["kind"] == "manual_open"]
    held = collections.Counter(seq for _epoch, seq, *_ in r.registry_events())
    unregistered = [rec["seq"] for rec in openings + manual if rec["seq"] not in held]
    # Openings the I/O module saw that no journal record accounts for: a turnstile released without a record.
    io_openings = collections.Counter(lane for lane, _at in r.openings)
    journaled = collections.Counter(rec["lane"] for rec in openings + manual)
    unrecorded = sum(max(0, n - journaled[lane]) for lane, n in io_openings.items()) if r.io is not None else 0
    scans = sum(p.scans for p in presented)
    duplicated = sum(n - 1 for n in held.values() if n > 1) + max(0, len(decisions) - len(presented))
    entries: collections.Counter = collections.Counter()
    for rec in r.records:
        if rec["kind"] == "passage" and rec["ticket"] in single_entry and rec["payload"].get("direction", "in") == "in":
            entries[rec["ticket"]] += 1
    double = sum(1 for n in entries.values() if n > 1)
    latencies = [p.latency_ms for p in answered if p.latency_ms is not None]
    to_relay = [p.relay_ms for p in answered if p.relay_ms is not None]
    return {
        "presented": len(presented),
        "admitted": by_reason.get("ok", 0),
        "admitted_by_lane": dict(collections.Counter(p.lane for p in answered if p.reason == "ok")),
        "denied": sum(n for reason, n in by_reason.items() if reason != "ok"),
        "denied_by_reason": dict(sorted(((k, v) for k, v in by_reason.items() if k != "ok"), key=lambda kv: -kv[1])),
        "unanswered": len(presented) - len(answered),
        "scans": scans,
        "journal_decisions": len(decisions),
        "relay_openings": len(r.openings) if r.io is not None else len(openings) + len(manual),
        "relay_openings_source": "io_module" if r.io is not None else "journal",
        "journal_openings": len(openings) + len(manual),
        "emergency_openings": r.emergency_openings,
        "watchdog_trips": r.io.watchdog_trips if r.io is not None else None,
        "registry_events": sum(held.values()),
        "journal_records": len(r.records),
        "lost": len(unregistered) + unrecorded,
        "lost_seqs": unregistered[:20],
        "openings_without_record": unrecorded,
        "duplicated": duplicated,
        "double_admissions": double,
        "power_cuts": r.gate.kills if power_cuts is None else power_cuts,
        "network_cuts": r.network_cuts,
        "boots": r.gate.boots,
        "drained": drained,
        "scan_to_decision_ms": {"p50": _percentile(latencies, 0.50), "p99": _percentile(latencies, 0.99),
                                "n": len(latencies), "mean": round(statistics.fmean(latencies), 2) if latencies else None},
        "scan_to_relay_ms": {"p50": _percentile(to_relay, 0.50), "p99": _percentile(to_relay, 0.99), "n": len(to_relay)},
    }


def failed(summary: dict[str, Any]) -> bool:
    return bool(summary["lost"] or summary["duplicated"] or summary["double_admissions"])


def format_summary(s: dict[str, Any]) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in s["denied_by_reason"].items()) or "none"
    lat = s["scan_to_decision_ms"]
    lines = [
        f"gated sim: scenario {s.get('scenario', '')!r} after {s.get('real_seconds', 0):g} s real"
        f" ({s.get('duration_s', 0):g} s scenario time at speed {s.get('speed', 1):g})",
        f"  presented   {s['presented']}: admitted {s['admitted']}, denied {s['denied']} ({reasons}), unanswered {s['unanswered']}",
        f"  relay       {s['relay_openings']} openings seen by the {s['relay_openings_source'].replace('_', ' ')}"
        f" ({s['journal_openings']} in the journal; {s['emergency_openings']} by the emergency; watchdog tripped {s['watchdog_trips']}x)",
        f"  registry    {s['registry_events']} events held of {s['journal_records']} journal records; drained: {'yes' if s['drained'] else 'NO'}",
        f"  faults      {s['power_cuts']} power cuts ({s['boots']} boots), {s['network_cuts']} network cuts",
        f"  latency     scan to decision p50 {lat['p50']} ms, p99 {lat['p99']} ms over {lat['n']} scans; scan to relay"
        f" p50 {s['scan_to_relay_ms']['p50']} ms, p99 {s['scan_to_relay_ms']['p99']} ms over {s['scan_to_relay_ms']['n']} openings",
        f"  lost {s['lost']}, duplicated {s['duplicated']}, double admissions {s['double_admissions']}: "
        + ("FAILED" if failed(s) else "nothing lost"),
    ]
    return "\n".join(lines)


async def run_scenario(path: str | Path, run_dir: str | Path, *, say: Callable[[str], object] = lambda text: None) -> dict[str, Any]:
    scenario = load(path)
    rehearsal = Rehearsal(run_dir, seed=scenario.seed, say=lambda lane, text: say(f"{lane} {text}".strip()))
    await rehearsal.start()
    try:
        return await ScenarioRun(scenario, rehearsal, say).run()
    finally:
        await rehearsal.stop()
