"""The technician's rehearsal: the real gate as its own process, on virtual hardware outside it.

What runs where:

- the gate: `python -m gated run --config <run dir>/gate.toml`, a child
  process (`hw_sim.gateproc`), so a power cut is a real SIGKILL and its
  clock can be set apart with libfaketime;
- in this process, what stands outside the gate at a venue: a pty per serial
  scanner (`hw_sim.devices.VirtualSerialScanner`; unplugged = the pty closed,
  its symlink gone), a Modbus TCP I/O module (`hw_sim.iomodule`) carrying
  every lane's relay, light and buzzer (coils) and passage beam and the
  emergency contact (discrete inputs), a camera lane's IP camera (an MJPEG
  stream over HTTP, `hw_sim.camstream`), the network between gate and registry
  (`hw_sim.proxy.CuttableProxy`), and the reference registry.

The registry runs in this process, not as a third one: it is not what a
rehearsal cuts (the proxy is the cable, the gate the box that loses power);
in here the simulator revokes and reprints through its store at once, and
reads what it stored for the summary (lost, duplicated) from its file, with
one Python interpreter less on a 2-CPU laptop.

What the simulator knows of the gate it learns as a technician would,
from outside: the gate's journal file (read only; it survives a power cut),
its admin service (`GateAdmin.Status`: lanes, uplink, backlog, cache, clock),
the I/O module's coils (relay, light, buzzer as the turnstile sees them: a
power cut shows as the relay coil falling when the module's watchdog trips)
and the registry.

`Rehearsal` is driven by the control API (`hw_sim.control`), by scripted
days (`hw_sim.scenario`) and by tests; every action returns a JSON-ready dict
and raises `RehearsalError` (one line) for a request it cannot do.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import sqlite3
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import structlog

from gated.errors import GatedError
from gated.gate.state import StateStore
from gated.validation import TicketState, encode_snapshot
from gated.validation.token import mint_dynamic, mint_static
from hw_sim import attendees as demo
from hw_sim.devices import VirtualSerialScanner
from hw_sim.gateproc import GateProcess, GateProcessError
from hw_sim.proxy import CUT_MODES, CuttableProxy
from hw_sim.sim import KEPT, MARKER, SIM_CONFIG, SimError, _free_port, generate_config, run_key, start_staff_pages, to_toml

log = structlog.get_logger("hw_sim.rehearsal")

POLL_S = 0.01  # the journal, read this often: the resolution of scan-to-decision
STATUS_S = 0.25  # the gate's admin status, asked this often
ANSWER_TIMEOUT_S = 3.0
READY_TIMEOUT_S = 30.0
FORGER_KEY = bytes(range(100, 132))
UNKNOWN_TICKET_ID = 999_999_999
RECENT = 12
IO_MODULE = "door"  # the [modules.NAME] of the simulated I/O module in the generated config
IO_WATCHDOG_S = 1.0  # the module drops its coils after this long without a request (set it so on a real one too)
BUZZER_SHOW_S = 0.3
WALK_S = 0.35
SIM_LOG = "sim.log"  # this process's own log (the registry's lines), opened before the run directory is cleared

#: What POST /api/present accepts as `kind`, and what it means.
PRESENT_KINDS = {
    "valid": "a phone e-ticket (dynamic code) of someone allowed in today",
    "badge": "a printed badge (static code), the current serial",
    "forged": "a home-made code signed with the wrong key",
    "unknown_key": "a code from another event (key id 9)",
    "expired": "a screenshot of a code from three hours ago",
    "revoked": "the e-ticket of a revoked ticket",
    "old_badge": "the badge printed before the last reprint",
    "wrong_day": "a day-2 ticket today",
    "unknown_ticket": "a correctly signed code for a ticket never sold",
    "noise": "line noise on the scanner cable",
}
BAD_KINDS = tuple(k for k in PRESENT_KINDS if k not in ("valid", "badge"))
FAULTS = ("network_cut", "network_restore", "power_cut", "power_restore", "scanner_unplug", "scanner_replug",
          "clock_jump", "emergency", "line_noise", "tailgate")


class RehearsalError(GatedError, ValueError):
    """A rehearsal action cannot be done as asked (one line, for the API's answer)."""


@dataclass(slots=True)
class Presentation:
    """One person showing one code at one lane, and what the gate answered."""

    lane: str
    kind: str
    ticket: int | None
    sent_at: float  # monotonic
    code: str = field(default="", repr=False)
    via: str = "scanner"  # or "camera": a phone or badge held up to the lane's camera
    scans: int = 0  # how many times it was shown (a person scans again when no answer came)
    reason: str | None = None
    seq: int | None = None
    latency_ms: float | None = None  # scan to the decision read from the journal
    relay_ms: float | None = None  # scan to the relay coil rising at the I/O module


def _prepare_run_dir(d: Path) -> None:
    """The run directory, cleared but for the key file (the same rule as the in-process simulator)."""
    import shutil

    d.mkdir(parents=True, exist_ok=True)
    marker = d / MARKER
    if not marker.exists() and any(e.name != SIM_LOG for e in d.iterdir()):
        raise RehearsalError(f"{d} is not empty and was not made by gated sim; give another --run-dir")
    marker.write_text("made by gated sim; cleared at each start except keys.json\n")
    for entry in d.iterdir():
        if entry.name in KEPT or entry.name == SIM_LOG:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class Rehearsal:
    """A gate process, its scanners, the cable to the registry and the registry; faults on demand."""

    def __init__(self, run_dir: str | os.PathLike, *, template: str | os.PathLike | None = None,
                 passage_timeout_s: float | None = 2.0, seed: int = 1,
                 say: Callable[[str, str], object] | None = None, staff_pages_port: int | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.template = Path(template) if template is not None else SIM_CONFIG
        self.passage_timeout_s = passage_timeout_s
        self.rng = random.Random(seed)
        self.say = say or (lambda lane, text: None)
        self.listeners: list[Callable[[str, dict], None]] = []  # (event, data): the API's live stream
        self.people: list[demo.Attendee] = []
        self.by_id: dict[int, demo.Attendee] = {}
        self.serials: dict[int, int] = {}
        self.revoked: set[int] = set()
        self.scanners: dict[str, VirtualSerialScanner] = {}
        self.unplugged: set[str] = set()
        self.suffix: dict[str, bytes] = {}
        self.lanes: list[dict[str, Any]] = []
        self.registry: Any = None
        self.staff_pages_port = staff_pages_port  # None: the registry's staff pages are not served (0: any free port)
        self.staff_pages: Any = None  # gated.registry.http.RegistryWeb, behind the demo account
        self.demo_password: str | None = None
        self.proxy: CuttableProxy | None = None
        self.gate: GateProcess | None = None
        self.admin_target: str | None = None
        self.journal_path: Path | None = None
        self.gate_id = ""
        self.key = b""
        self.kid = 0
        self.status: dict[str, Any] = {}
        self.status_at: float | None = None
        self.records: list[dict[str, Any]] = []  # every journal record seen, in seq order
        self.recent: dict[str, collections.deque] = {}
        self.presentations: list[Presentation] = []
        self._waiting: dict[str, list[tuple[Presentation, asyncio.Future]]] = collections.defaultdict(list)
        self._last_seq = 0
        self._journal: sqlite3.Connection | None = None
        self._tasks: list[asyncio.Task] = []
        self._admin_channel: Any = None
        self._admin_stub: Any = None
        self._restart_task: asyncio.Task | None = None
        self.network_cuts = 0
        self.faults: list[dict[str, Any]] = []
        self.emergency = False
        self.inside: set[int] = set()
        self.entered: collections.Counter = collections.Counter()  # counted entries per ticket (passages in)
        self.io: Any = None
        self.cameras: dict[str, Any] = {}  # lane -> MjpegStream
        self.coil_roles: dict[int, tuple[str, str]] = {}  # coil address -> (lane, relay|red|green|blue|buzzer)
        self.coil_of: dict[tuple[str, str], int] = {}
        self.input_of: dict[tuple[str, str], int] = {}  # (lane, "passage") / ("", "emergency") -> input address
        self.openings: list[tuple[str, float]] = []  # relay coil rising edges: (lane, monotonic time)
        self.emergency_openings = 0
        self._buzz_until: dict[str, float] = {}

    # ---- setting up ----

    async def start(self) -> None:
        """Everything up, the gate serving; RehearsalError (one line) if something cannot start."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        from gated.config import load_config
        from gated.registry.importer import import_attendees
        from gated.registry.server import RegistryServer
        from gated.registry.store import RegistryStore

        _prepare_run_dir(self.run_dir)
        self.kid, self.key = run_key(self.run_dir)
        self.people = demo.population()
        self.by_id = {p.ticket_id: p for p in self.people}
        self.serials = {p.ticket_id: p.record.badge_serial for p in self.people}
        self.revoked = {p.ticket_id for p in self.people if p.record.state == TicketState.REVOKED}
        csv_path = demo.write_csv(self.run_dir / "attendees.csv", self.people)

        try:
            data, _notes = generate_config(self.template, self.run_dir)
        except SimError as exc:
            raise RehearsalError(str(exc)) from None
        if "uplink" not in data:
            raise RehearsalError(f"{self.template}: the rehearsal needs an [uplink] table (the registry behind the proxy)")
        # The registry on a free loopback port, the proxy in front of it, the gate told the proxy's address.
        db = self.run_dir / "registry.db"
        store = RegistryStore(db)
        try:
            import_attendees(store, csv_path)
            for person in self.people:
                if person.record.state == TicketState.REVOKED:
                    store.revoke(person.ticket_id)
                for _ in range(person.record.badge_serial):
                    store.reissue(person.ticket_id)
            store.add_key(self.kid, self.key)
        finally:
            store.close()
        self.registry = RegistryServer(db, f"127.0.0.1:{_free_port()}")
        await self.registry.start()
        if self.staff_pages_port is not None:
            self.staff_pages, self.demo_password = await start_staff_pages(self.registry, self.staff_pages_port)
        self.proxy = CuttableProxy("127.0.0.1", self.registry.port)
        await self.proxy.start()
        data["uplink"]["target"] = self.proxy.address
        data["uplink"]["reconnect_max_s"] = min(float(data["uplink"].get("reconnect_max_s", 2)), 2.0)
        data["admin"] = {"address": f"127.0.0.1:{_free_port()}"}
        from hw_sim.camstream import MjpegStream

        for lane in data.get("lane", []):
            camera = lane.get("camera")
            if camera is not None:  # an IP camera: the gate opens its MJPEG stream by URL, as at a venue
                stream = MjpegStream("127.0.0.1", 0, fps=float(camera.get("fps", 15)),
                                     width=int(camera.get("width", 640)), height=int(camera.get("height", 480)))
                await stream.start()
                self.cameras[lane["id"]] = stream
                camera["source"] = stream.url
            screen = lane.get("screen")
            if screen is not None:  # a port of its own, not the usual 8081 another run may take between two boots
                screen["listen"] = f"127.0.0.1:{_free_port()}"
            if self.passage_timeout_s is not None and "passage_timeout_s" in lane:
                lane["passage_timeout_s"] = self.passage_timeout_s
        await self._wire_io_module(data)
        config_path = self.run_dir / "gate.toml"
        header = f"# Generated by `gated sim` (the rehearsal) from {self.template}; edit that file, not this one.\n"
        config_path.write_text(header + to_toml(data), encoding="utf-8")
        try:
            config = load_config(config_path, check_files=True)
        except GatedError as exc:
            raise RehearsalError(str(exc)) from None
        self.config = config
        self.gate_id = config.gate.id
        self.journal_path = Path(config.journal.path)
        self.admin_target = data["admin"]["address"]
        StateStore(config.gate.state_dir).save_cache(encode_snapshot(1, demo.records(self.people), dict(config.policy.zones)), 0)

        for lane in config.lanes:
            self.lanes.append({"id": lane.id, "zone": lane.zone, "direction": str(lane.direction), "mode": str(lane.mode),
                               "relay": lane.relay is not None, "passage": lane.passage is not None})
            self.recent[lane.id] = collections.deque(maxlen=RECENT)
            for scanner in lane.scanners:
                if scanner.kind != "serial" or "://" in (scanner.port or ""):
                    raise RehearsalError(f"{self.template}: lane {lane.id}: the rehearsal drives serial scanners on a pty only")
                self.suffix[lane.id] = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}[scanner.suffix or "CR"]
                self.scanners[lane.id] = VirtualSerialScanner(scanner.port, self.suffix[lane.id])

        import grpc

        from gated.rpc.v1 import admin_pb2_grpc

        self._admin_channel = grpc.aio.insecure_channel(self.admin_target)
        self._admin_stub = admin_pb2_grpc.GateAdminServiceStub(self._admin_channel)
        self.gate = GateProcess(config_path, self.run_dir)
        self.gate.start()
        self._tasks.append(asyncio.create_task(self._watch_journal(), name="rehearsal-journal"))
        self._tasks.append(asyncio.create_task(self._watch_status(), name="rehearsal-status"))
        await self.wait_ready()
        self.say("", f"gate {self.gate_id} running as pid {self.gate.pid}; registry {self.registry.listen} behind the proxy on {self.proxy.address}")

    async def _wire_io_module(self, data: dict[str, Any]) -> None:
        """Every lane's outputs and inputs, and the emergency contact, onto one simulated Modbus TCP module."""
        from hw_sim.iomodule import SimulatedIoModule

        self.io = SimulatedIoModule("127.0.0.1", 0, coils=64, inputs=64, unit=1, watchdog_s=IO_WATCHDOG_S)
        await self.io.start()
        self.io.on_coil_change(self._on_coil)
        data["modules"] = {IO_MODULE: {"kind": "modbus-tcp", "host": "127.0.0.1", "port": self.io.port, "unit": 1,
                                       "poll_ms": 20}}
        coil, inp = 0, 0
        for lane in data.get("lane", []):
            if not any(k in lane for k in ("relay", "light", "buzzer", "passage")):
                continue
            lane["io"] = IO_MODULE
            lane_id = lane["id"]
            for table, roles in (("relay", ("pin",)), ("light", ("red", "green", "blue")), ("buzzer", ("pin",))):
                if table not in lane:
                    continue
                for role in roles:
                    name = table if role == "pin" else role
                    lane[table][role] = coil
                    self.coil_roles[coil] = (lane_id, name)
                    self.coil_of[(lane_id, name)] = coil
                    coil += 1
                if table == "light":
                    lane[table]["pwm"] = False
            if "passage" in lane:
                lane["passage"] = {k: v for k, v in lane["passage"].items() if k not in ("pull_up", "active_high")}
                lane["passage"]["pin"] = inp
                self.input_of[(lane_id, "passage")] = inp
                inp += 1
        if "emergency" in data:
            data["emergency"] = {"io": IO_MODULE, "pin": inp}
            self.input_of[("", "emergency")] = inp

    def _on_coil(self, addr: int, value: bool, at: float) -> None:
        """A coil moved at the I/O module (the gate wrote it, or the watchdog dropped it)."""
        lane, role = self.coil_roles.get(addr, ("", ""))
        if role == "buzzer" and value:
            self._buzz_until[lane] = at + BUZZER_SHOW_S
        if role == "relay":
            if value:
                if self.emergency:
                    self.emergency_openings += 1
                else:
                    self.openings.append((lane, at))
                    # The gate journals before it fires the relay: the decision is in the file now.
                    for record in self.read_journal():
                        self._on_record(record, time.monotonic())
                    for p in reversed(self.presentations[-20:]):
                        if p.lane == lane and p.relay_ms is None and p.sent_at <= at and p.reason == "ok":
                            p.relay_ms = (at - p.sent_at) * 1000.0
                            break
            self.publish("io", {"lane": lane, "role": role, "on": value, "watchdog_trips": self.io.watchdog_trips})

    def _light(self, lane_id: str) -> str | None:
        if (lane_id, "red") not in self.coil_of:
            return None
        bits = [self.io.coil(self.coil_of[(lane_id, c)]) for c in ("red", "green", "blue")]
        return "#" + "".join("FF" if b else "00" for b in bits)

    def io_view(self, lane_id: str) -> dict[str, Any]:
        """The lane's outputs and beam as the I/O module sees them (None: not wired)."""
        relay = self.coil_of.get((lane_id, "relay"))
        buzzer = self.coil_of.get((lane_id, "buzzer"))
        beam = self.input_of.get((lane_id, "passage"))
        return {
            "relay_open": None if relay is None else self.io.coil(relay),
            "light": self._light(lane_id),
            "buzzer": None if buzzer is None else (self.io.coil(buzzer) or time.monotonic() < self._buzz_until.get(lane_id, 0)),
            "beam_broken": None if beam is None else self.io.input(beam),
            "io_source": "io_module",
        }

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the gate answers on its admin service with every scanner open."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.gate is not None and not self.gate.running:
                raise RehearsalError(f"the gate exited with status {self.gate.status()['last_exit']}; see {self.gate.log_path}")
            status = await self._ask_status()
            if status and status.get("inputs_connected", True):
                return
            await asyncio.sleep(0.05)
        raise RehearsalError(f"the gate did not come up in {timeout_s:g} s; see {self.gate.log_path if self.gate else self.run_dir}")

    # ---- watching the gate ----

    def publish(self, event: str, data: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(event, data)

    def _open_journal(self) -> sqlite3.Connection | None:
        if self._journal is None and self.journal_path is not None and self.journal_path.exists():
            self._journal = sqlite3.connect(f"file:{self.journal_path}?mode=ro", uri=True, check_same_thread=False)
        return self._journal

    def read_journal(self) -> list[dict[str, Any]]:
        """The records the gate journaled since the last look (the file survives any power cut)."""
        try:
            conn = self._open_journal()
            if conn is None:
                return []
            rows = conn.execute("SELECT seq, at, kind, lane, ticket_id, reason, payload FROM records WHERE seq > ? ORDER BY seq",
                                (self._last_seq,)).fetchall()
        except sqlite3.Error:
            if self._journal is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._journal.close()
            self._journal = None
            return []
        news = []
        for seq, at, kind, lane, ticket, reason, payload in rows:
            if ticket is not None and ticket < 0:
                ticket += 1 << 64
            record = {"seq": seq, "at": at, "kind": kind, "lane": lane, "ticket": ticket, "reason": reason,
                      "payload": json.loads(payload or "{}")}
            self._last_seq = seq
            news.append(record)
        return news

    def _on_record(self, record: dict[str, Any], now: float) -> None:
        self.records.append(record)
        lane, kind, ticket = record["lane"], record["kind"], record["ticket"]
        if kind == "decision" and lane in self.recent:
            self.recent[lane].append({"seq": record["seq"], "at": record["at"], "reason": record["reason"], "ticket": ticket,
                                      "category": record["payload"].get("category"),
                                      "name": self.by_id[ticket].record.name if ticket in self.by_id else ""})
            waiting = self._waiting.get(lane) or []
            for i, (presentation, future) in enumerate(waiting):
                if presentation.ticket is None or ticket is None or presentation.ticket == ticket:
                    del waiting[i]
                    presentation.reason, presentation.seq = record["reason"], record["seq"]
                    presentation.latency_ms = (now - presentation.sent_at) * 1000.0
                    if not future.done():
                        future.set_result(presentation)
                    break
        elif kind == "passage" and ticket is not None:
            if record["payload"].get("direction") == "out":
                self.inside.discard(ticket)
            else:
                self.inside.add(ticket)
                self.entered[ticket] += 1
        self.publish("record", record)

    async def _watch_journal(self) -> None:
        while True:
            news = self.read_journal()
            now = time.monotonic()
            for record in news:
                self._on_record(record, now)
            await asyncio.sleep(POLL_S)

    async def _ask_status(self) -> dict[str, Any] | None:
        from gated.rpc.v1 import admin_pb2

        try:
            reply = await self._admin_stub.Status(admin_pb2.StatusRequest(), timeout=1.0)
        except Exception:  # grpc.aio.AioRpcError and friends: the gate is down, booting or busy
            self.status = {}
            return None
        self.status = json.loads(reply.details_json) if reply.details_json else {}
        self.status_at = time.time()
        return self.status

    async def _watch_status(self) -> None:
        while True:
            if self.gate is not None and self.gate.running:
                await self._ask_status()
            else:
                self.status = {}
            self.publish("state", self.state())
            await asyncio.sleep(STATUS_S)

    # ---- the state (GET /api/state) ----

    def state(self) -> dict[str, Any]:
        status = self.status or {}
        lanes_status = {lane["id"]: lane for lane in status.get("lanes", ())}
        lanes = []
        for lane in self.lanes:
            s = lanes_status.get(lane["id"], {})
            io = self.io_view(lane["id"]) if self.io is not None else {}
            lanes.append({
                **lane,
                "light": io.get("light"), "relay_open": io.get("relay_open"), "buzzer": io.get("buzzer"),
                "beam_broken": io.get("beam_broken"), "io_source": "io_module",
                "gate_says": {"light": s.get("light"), "relay_open": s.get("relay_energized")},
                "state": s.get("state", "down" if status == {} else None),
                "scanner": "unplugged" if lane["id"] in self.unplugged else "plugged",
                "counters": {k: s.get(k) for k in ("decisions", "admitted", "denied", "passages", "not_passed")},
                "recent": list(self.recent.get(lane["id"], ())),
            })
        uplink = status.get("uplink") or {}
        clock = status.get("clock") or {}
        zones = {}
        for lane in self.lanes:
            zones.setdefault(lane["zone"], {"inside": len(self.inside),
                                            "capacity": self.config.policy.zones.get(lane["zone"]) if hasattr(self, "config") else None})
        return {
            "at": time.time(),
            "gate": {"id": self.gate_id, **(self.gate.status() if self.gate else {"state": "stopped"}),
                     "serving": bool(status), "emergency": status.get("emergency"), "fault": status.get("fault")},
            "lanes": lanes, "zones": zones,
            "uplink": {"connected": uplink.get("connected"), "target": uplink.get("target")},
            "backlog": status.get("journal_backlog"), "cache_version": status.get("cache_version"),
            "cache_tickets": status.get("cache_tickets"),
            "clock": {"offset_s": clock.get("offset_s"), "trusted": clock.get("trusted"),
                      "set_apart_s": self.gate.clock_offset_s if self.gate else 0.0},
            "network": self.proxy.status() if self.proxy else None,
            "io_module": None if self.io is None else {
                "port": self.io.port, "connected": self.io.connected, "watchdog_s": self.io.watchdog_s,
                "watchdog_trips": self.io.watchdog_trips, "relay_openings": len(self.openings),
                "emergency_input": self.io.input(self.input_of[("", "emergency")]) if ("", "emergency") in self.input_of else None},
            "registry": {"listen": self.registry.listen if self.registry else None,
                         "version": self.registry.service.cache.version if self.registry else None,
                         "events": self.registry.service.events_stored if self.registry else None},
            "faults": self.faults[-20:],
            "presented": len(self.presentations),
        }

    # ---- presenting codes ----

    def _code_for(self, kind: str, ticket: int | None) -> tuple[str, int | None]:
        now = time.time()  # the phone's clock, not the gate's: a gate set apart has to cope
        person = self.by_id.get(ticket) if ticket is not None else None
        if ticket is not None and person is None and kind not in ("forged", "unknown_ticket", "noise", "unknown_key"):
            raise RehearsalError(f"no attendee with ticket {ticket}")
        if kind == "noise":
            noise = "".join(chr(self.rng.randrange(32, 256)) for _ in range(self.rng.randrange(3, 24)))
            return noise, None
        if kind == "unknown_ticket":
            return mint_dynamic(self.key, self.kid, ticket or UNKNOWN_TICKET_ID, now), ticket or UNKNOWN_TICKET_ID
        if kind == "forged":
            tid = ticket or self.rng.choice(self.people).ticket_id
            return mint_dynamic(FORGER_KEY, self.kid, tid, now), None
        if kind == "unknown_key":
            tid = ticket or self.rng.choice(self.people).ticket_id
            return mint_dynamic(FORGER_KEY, 9, tid, now), None
        if person is None:
            person = self.pick(kind)
        tid = person.ticket_id
        if kind in ("valid", "revoked", "wrong_day"):
            return mint_dynamic(self.key, self.kid, tid, now), tid
        if kind == "expired":
            return mint_dynamic(self.key, self.kid, tid, now - 3 * 3600), tid
        if kind == "badge":
            return mint_static(self.key, self.kid, tid, self.serials[tid]), tid
        if kind == "old_badge":
            if self.serials[tid] == 0:
                raise RehearsalError(f"ticket {tid} has never been reprinted: no old badge")
            return mint_static(self.key, self.kid, tid, self.serials[tid] - 1), tid
        raise RehearsalError(f"unknown kind {kind!r}; one of {', '.join(PRESENT_KINDS)}")

    def pick(self, kind: str, direction: str = "in") -> demo.Attendee:
        """Someone for `kind`: for a valid entry, an active ticket valid today, not inside, entries left."""
        def valid_today(p: demo.Attendee) -> bool:
            return p.ticket_id not in self.revoked and p.note != "day 2 ticket"

        busy = {p.ticket for presentations in self._waiting.values() for p, _ in presentations}
        if kind == "revoked":
            pool = [p for p in self.people if p.ticket_id in self.revoked]
        elif kind == "old_badge":
            pool = [p for p in self.people if self.serials[p.ticket_id] > 0 and p.ticket_id not in self.revoked]
        elif kind == "wrong_day":
            pool = [p for p in self.people if p.note == "day 2 ticket" and p.ticket_id not in self.revoked]
        elif direction == "out":
            pool = [p for p in self.people if p.ticket_id in self.inside] or [p for p in self.people if valid_today(p)]
        else:
            pool = [p for p in self.people if valid_today(p) and p.ticket_id not in self.inside
                    and not (p.record.max_entries and self.entered[p.ticket_id] >= p.record.max_entries)]
        recent = {p.ticket for p in self.presentations[-40:]}
        pool = [p for p in pool if p.ticket_id not in busy and p.ticket_id not in recent] or [p for p in pool if p.ticket_id not in busy]
        if not pool:
            raise RehearsalError(f"nobody left for {kind!r}")
        return self.rng.choice(pool)

    def lane_ids(self) -> list[str]:
        return [lane["id"] for lane in self.lanes]

    def _lane(self, lane_id: str) -> dict[str, Any]:
        for lane in self.lanes:
            if lane["id"] == lane_id:
                return lane
        raise RehearsalError(f"no lane {lane_id!r}; lanes: {', '.join(self.lane_ids())}")

    async def present(self, lane_id: str, *, kind: str = "valid", ticket: int | None = None, code: str | None = None,
                      via: str = "scanner", timeout_s: float = ANSWER_TIMEOUT_S) -> Presentation:
        """Show a code at a lane's scanner (or camera) and wait for the gate's journaled decision (reason None: none came)."""
        lane = self._lane(lane_id)
        if via not in ("scanner", "camera"):
            raise RehearsalError(f"via must be scanner or camera, got {via!r}")
        if via == "camera" and lane_id not in self.cameras:
            raise RehearsalError(f"lane {lane_id} has no camera; lanes with one: {', '.join(self.cameras) or 'none'}")
        if via == "camera" and kind == "noise":
            raise RehearsalError("line noise is a scanner cable's; a camera shows codes")
        if code is None:
            if kind not in PRESENT_KINDS:
                raise RehearsalError(f"unknown kind {kind!r}; one of {', '.join(PRESENT_KINDS)}")
            direction = lane["direction"] if lane["mode"] == "turnstile" else "in"
            if ticket is None and kind == "valid" and direction == "out":
                ticket = self.pick(kind, "out").ticket_id
            code, expected = self._code_for(kind, ticket)
        else:
            if not isinstance(code, str) or not code or len(code) > 4096:
                raise RehearsalError("code must be a non-empty string of at most 4096 characters")
            kind, expected = "code", ticket
        presentation = Presentation(lane_id, kind, expected, time.monotonic(), code.replace("\r", "").replace("\n", ""), via=via)
        self.presentations.append(presentation)
        return await self._show(presentation, timeout_s)

    async def represent(self, presentation: Presentation, timeout_s: float = ANSWER_TIMEOUT_S) -> Presentation:
        """The same person scans the same code again (no answer came): still one presentation."""
        if presentation.reason is not None:
            return presentation
        presentation.sent_at = time.monotonic()
        return await self._show(presentation, timeout_s)

    async def _show(self, presentation: Presentation, timeout_s: float) -> Presentation:
        lane_id = presentation.lane
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting[lane_id].append((presentation, future))
        if presentation.via == "camera":
            camera = self.cameras[lane_id]
            presentation.sent_at = time.monotonic()  # from the phone held up: the frame's render (tens of ms) counts
            await asyncio.to_thread(camera.show_code, presentation.code)  # off the loop
            presentation.scans += 1
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), timeout_s + 1.0)
            finally:
                camera.show_blank()  # the phone is put away
        else:
            scanner = self.scanners.get(lane_id)
            sent = scanner is not None and lane_id not in self.unplugged and scanner.scan(presentation.code)
            if sent:
                presentation.scans += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), timeout_s)
        waiting = self._waiting[lane_id]
        if (presentation, future) in waiting:
            waiting.remove((presentation, future))
        return presentation

    async def turnstile_locked(self, lane_id: str, admitted: Presentation | None = None, timeout_s: float = 3.0) -> bool:
        """Until the lane's relay coil is off again (the next person steps up to a locked turnstile).

        `admitted`: the person just let in, whose opening is waited for first (the
        gate journals, then fires the relay: the decision can be read before the coil rises)."""
        addr = self.coil_of.get((lane_id, "relay"))
        deadline = time.monotonic() + timeout_s
        if addr is not None and admitted is not None and admitted.reason == "ok":
            while admitted.relay_ms is None and time.monotonic() < deadline - timeout_s / 2 and not self.emergency:
                await asyncio.sleep(0.01)
        while addr is not None and self.io.coil(addr) and not self.emergency:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def can_walk(self, lane_id: str) -> bool:
        """Whether this lane has a beam the simulator can break (its passage sensor on the I/O module)."""
        return (lane_id, "passage") in self.input_of

    async def walk(self, lane_id: str) -> bool:
        """One person through the lane's beam (broken for WALK_S, then clear); False if the lane has none."""
        addr = self.input_of.get((lane_id, "passage"))
        if addr is None:
            return False
        self.io.set_input(addr, True)
        try:
            await asyncio.sleep(WALK_S)
        finally:
            self.io.set_input(addr, False)
        await asyncio.sleep(0.06)  # the gate polls inputs every 20 ms: let it see the beam clear
        return True

    # ---- faults ----

    def _fault(self, kind: str, **detail: Any) -> dict[str, Any]:
        entry = {"fault": kind, "at": time.time(), **detail}
        self.faults.append(entry)
        self.say(detail.get("lane", ""), f"fault: {kind} {json.dumps(detail) if detail else ''}".rstrip())
        self.publish("fault", entry)
        return entry

    async def network_cut(self, mode: str = "drop") -> dict[str, Any]:
        if mode not in CUT_MODES:
            raise RehearsalError(f"mode must be one of {', '.join(CUT_MODES)}, got {mode!r}")
        if self.proxy.mode is None:
            self.network_cuts += 1
        await self.proxy.cut(mode)
        return self._fault("network_cut", mode=mode)

    async def network_restore(self) -> dict[str, Any]:
        await self.proxy.restore()
        return self._fault("network_restore")

    def _flush_scanners(self) -> None:
        """What was on a scanner line when the gate lost power is gone (the scanner lost power with it)."""
        for scanner in self.scanners.values():
            with contextlib.suppress(OSError):
                if not scanner._closed:
                    termios.tcflush(scanner.slave, termios.TCIFLUSH)

    async def power_cut(self, off_s: float | None = 3.0) -> dict[str, Any]:
        """SIGKILL the gate; boot it again after `off_s` seconds (None: stays off until power_restore)."""
        if off_s is not None and not 0 <= off_s <= 3600:
            raise RehearsalError(f"off_s must be between 0 and 3600 seconds, got {off_s}")
        if not self.gate.running:
            raise RehearsalError("the gate has no power already")
        pid = self.gate.pid
        self.gate.kill()
        self._flush_scanners()
        now = time.monotonic()
        for record in self.read_journal():  # what the gate journaled before it died answered its person
            self._on_record(record, now)
        for lane_id, waiting in self._waiting.items():  # nobody will answer them now
            for presentation, future in waiting:
                if not future.done():
                    future.set_result(presentation)  # unanswered: the person scans again once the gate is back
            waiting.clear()
        entry = self._fault("power_cut", pid=pid, off_s=off_s)
        if off_s is not None:
            self._restart_task = asyncio.create_task(self._power_back(off_s))
        return entry

    async def _power_back(self, off_s: float) -> None:
        await asyncio.sleep(off_s)
        for attempt in (1, 2):
            try:
                await self.power_restore()
                return
            except RehearsalError as exc:  # a gate that cannot boot is a finding: said, then tried once more
                self._fault("boot_failed", attempt=attempt, error=str(exc), last_log_line=self.gate.last_log_line())
                await asyncio.sleep(1.0)

    async def power_restore(self) -> dict[str, Any]:
        if self.gate.running:
            raise RehearsalError("the gate is running")
        self._flush_scanners()
        try:
            self.gate.start()
        except GateProcessError as exc:
            raise RehearsalError(str(exc)) from None
        entry = self._fault("power_restore", pid=self.gate.pid)
        await self.wait_ready()
        return entry

    async def gate_up(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until a gate runs and serves (after a power cut's restart)."""
        deadline = time.monotonic() + timeout_s
        while not (self.gate.running and self.status):
            if time.monotonic() > deadline:
                raise RehearsalError(f"the gate is not up after {timeout_s:g} s")
            await asyncio.sleep(0.05)

    async def scanner_unplug(self, lane_id: str) -> dict[str, Any]:
        self._lane(lane_id)
        if lane_id in self.unplugged:
            raise RehearsalError(f"the {lane_id} scanner is unplugged already")
        self.scanners.pop(lane_id).close()
        self.unplugged.add(lane_id)
        return self._fault("scanner_unplug", lane=lane_id)

    async def scanner_replug(self, lane_id: str) -> dict[str, Any]:
        self._lane(lane_id)
        if lane_id not in self.unplugged:
            raise RehearsalError(f"the {lane_id} scanner is plugged in")
        port = next(s.port for lane in self.config.lanes if lane.id == lane_id for s in lane.scanners)
        self.scanners[lane_id] = VirtualSerialScanner(port, self.suffix[lane_id])
        self.unplugged.discard(lane_id)
        return self._fault("scanner_replug", lane=lane_id)

    async def clock_jump(self, offset_s: float, *, restart: bool = True) -> dict[str, Any]:
        """The gate's clock set `offset_s` apart from true time (libfaketime); see hw_sim.gateproc for why a restart."""
        if not -10 * 365 * 86400 <= offset_s <= 10 * 365 * 86400:
            raise RehearsalError("offset_s must be within ten years")
        live = not restart and self.gate.under_faketime
        self.gate.set_clock_offset(offset_s)
        if not live:
            try:
                await asyncio.to_thread(self.gate.stop)
                self.gate.start()
            except GateProcessError as exc:
                raise RehearsalError(str(exc)) from None
            await self.wait_ready()
        return self._fault("clock_jump", offset_s=offset_s, live=live)

    async def set_emergency(self, active: bool) -> dict[str, Any]:
        """The emergency contact closed (or opened again) at the I/O module's input."""
        addr = self.input_of.get(("", "emergency"))
        if addr is None:
            raise RehearsalError("the gate's config has no [emergency] input")
        if active:
            self.emergency = True
        self.io.set_input(addr, active)
        if not active:
            asyncio.get_running_loop().call_later(1.0, self._emergency_over)
        return self._fault("emergency", active=active, via="io_module")

    def _emergency_over(self) -> None:
        if self.io is not None and not self.io.input(self.input_of[("", "emergency")]):
            self.emergency = False

    async def line_noise(self, lane_id: str, *, bursts: int = 5) -> dict[str, Any]:
        if not 1 <= bursts <= 100:
            raise RehearsalError("bursts must be between 1 and 100")
        self._lane(lane_id)
        answers = []
        for _ in range(bursts):
            presentation = await self.present(lane_id, kind="noise")
            answers.append(presentation.reason)
        return self._fault("line_noise", lane=lane_id, bursts=bursts, reasons=answers)

    async def tailgate(self, lane_id: str) -> dict[str, Any]:
        """One admitted person and a second one through the same opening (the beam broken twice)."""
        lane = self._lane(lane_id)
        first = await self.present(lane_id, kind="valid")
        walked = False
        if first.reason == "ok" and lane["passage"]:
            walked = await self.walk(lane_id)
            await asyncio.sleep(0.1)
            walked = await self.walk(lane_id) and walked
        return self._fault("tailgate", lane=lane_id, first=first.reason, beam_broken_twice=walked)

    # ---- the registry ----

    async def revoke(self, ticket: int) -> dict[str, Any]:
        if ticket not in self.by_id:
            raise RehearsalError(f"no attendee with ticket {ticket}")
        record = await asyncio.to_thread(self.registry.store.revoke, ticket)
        self.registry.service.wake()
        self.revoked.add(ticket)
        return self._fault("revoke", ticket=ticket, state=str(record.state))

    async def reprint(self, ticket: int) -> dict[str, Any]:
        if ticket not in self.by_id:
            raise RehearsalError(f"no attendee with ticket {ticket}")
        record = await asyncio.to_thread(self.registry.store.reissue, ticket)
        self.registry.service.wake()
        self.serials[ticket] = record.badge_serial
        return self._fault("reprint", ticket=ticket, badge_serial=record.badge_serial)

    def registry_events(self) -> list[tuple]:
        """What the registry stored from this gate: (epoch, seq, kind, lane, ticket, reason)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.registry.db}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT epoch, seq, kind, lane, ticket_id, reason FROM events WHERE gate_id = ?",
                                (self.gate_id,)).fetchall()

    async def drain(self, timeout_s: float = 20.0) -> bool:
        """Until the gate's backlog is 0 (the network restored first); False if it did not drain."""
        if self.proxy.mode is not None:
            await self.network_restore()
        if not self.gate.running:
            await self.power_restore()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = await self._ask_status()
            if status and status.get("journal_backlog") == 0:
                await asyncio.sleep(POLL_S * 5)
                for record in self.read_journal():
                    self._on_record(record, time.monotonic())
                return True
            await asyncio.sleep(0.1)
        return False

    # ---- stopping ----

    async def stop(self) -> None:
        if self._restart_task is not None:
            self._restart_task.cancel()
            await asyncio.gather(self._restart_task, return_exceptions=True)
        if self.gate is not None:
            await asyncio.to_thread(self.gate.stop)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._admin_channel is not None:
            await self._admin_channel.close()
            self._admin_channel = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        for scanner in self.scanners.values():
            scanner.close()
        self.scanners.clear()
        if self.proxy is not None:
            await self.proxy.stop()
        if self.io is not None:
            await self.io.stop()
        for camera in self.cameras.values():
            with contextlib.suppress(Exception):
                await camera.stop()
        if self.staff_pages is not None:
            with contextlib.suppress(Exception):
                await self.staff_pages.stop()
            self.staff_pages = None
        if self.registry is not None:
            with contextlib.suppress(Exception):
                await self.registry.stop()
            self.registry = None
