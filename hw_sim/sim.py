"""`gated sim`: the whole gate on a laptop, with its live console and reference registry.

What runs, all in this process, on one event loop:

- the real `Gate` (gated.gate.daemon) with the config generated from
  hw_sim/sim.toml into the run directory, gpiozero's MockFactory for pins;
- virtual devices feeding its real drivers (`hw_sim.devices`): a pty per
  serial scanner, a frame source for the in-lane camera, the mock pins read
  back and driven;
- the reference registry (`gated.registry.server`) on loopback without TLS,
  seeded from the demo attendee list through its CSV import;
- a scripted crowd (`hw_sim.traffic`), and the console (`hw_sim.console`):
  full screen with keys on a terminal, plain log lines otherwise.

The run directory (default run/sim) is the simulator's own: each start
clears what the last run left (state, journal, registry database) and keeps
only the key file, so every run starts with the doors just opened. The
gate's structured log goes to <run dir>/gated.log, the attendee list to
attendees.csv, and the end-of-run figures to summary.json.

Stopping (q, Ctrl-C, SIGTERM, or the end of --duration) is the daemon's
clean stop: inputs closed, decisions in flight finished, relays to their
safe state, cache saved, journal closed; exit status 0.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, TextIO

import structlog

from gated import eventloop
from gated.config import load_config
from gated.errors import GatedError, KeyFileError
from gated.keyfile import load_keyfile, new_key, save_keyfile
from gated.gate.state import StateStore
from gated.validation import KeyRing, TicketState, encode_snapshot
from hw_sim import attendees as demo
from hw_sim.console import CLEAR_EOS, HOME, MIN_HEIGHT, MIN_WIDTH, Terminal, frame, render
from hw_sim.defaults import DEFAULT_RATE_PER_MIN, DEFAULT_RUN_DIR
from hw_sim.devices import LanePins, VirtualCamera, VirtualPins, VirtualSerialScanner
from hw_sim.traffic import Crowd

log = structlog.get_logger("hw_sim.sim")


SIM_CONFIG = Path(__file__).resolve().parent / "sim.toml"
#: The registry's staff pages in the simulator: loopback only, a real desk account whose password is
#: made afresh at each start and printed with the address.
STAFF_PAGES_PORT = 8090
DEMO_USER, DEMO_ROLE = "demo", "desk"
MARKER = ".gated-sim"
REDRAW_S = 0.25
SAMPLE_S = 0.05
BUZZER_SHOW_S = 0.3  # a 120 ms beep stays visible at least this long
KEPT = {"keys.json", MARKER}


class SimError(GatedError):
    """The simulator cannot start (a busy or foreign run directory, a bad template)."""


# --------------------------------------------------------------------------
# The generated config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise SimError(f"cannot write {value!r} to TOML")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """TOML for what tomllib read from a config (tables, arrays of tables, scalars, lists)."""
    out: list[str] = []
    tables, arrays = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            out.append(f"{key} = {_toml_value(value)}")
    for key, value in tables:
        name = f"{prefix}{key}"
        out.append(f"\n[{name}]")
        out.append(to_toml(value, name + ".").rstrip("\n"))
    for key, items in arrays:
        name = f"{prefix}{key}"
        for item in items:
            out.append(f"\n[[{name}]]")
            out.append(to_toml(item, name + ".").rstrip("\n"))
    return "\n".join(line for line in out if line != "") + "\n"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: a closed server's TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def run_key(run_dir: Path) -> tuple[int, bytes]:
    """The run directory's event key (the one file a new run keeps): made on the first run."""
    path = run_dir / "keys.json"
    try:
        ring = load_keyfile(path)
    except KeyFileError:
        ring = KeyRing({1: new_key()})
        save_keyfile(path, ring, overwrite=True)
    kid = ring.kids()[0]
    return kid, ring.get(kid)


def generate_config(template: Path, run_dir: Path, *, uplink: bool = True) -> tuple[dict[str, Any], list[str]]:
    """The template's settings with every file in `run_dir` and busy loopback ports replaced.

    `uplink=False` drops the [uplink] table: the gate runs offline. Returns
    the config data and notes on what was changed (for the log).
    """
    try:
        data = tomllib.loads(template.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SimError(f"{template}: cannot read the simulator config: {exc}") from None
    notes: list[str] = []
    if not uplink and data.pop("uplink", None) is not None:
        notes.append("no registry: the gate runs offline (no [uplink] in its config)")

    def here(value: str) -> str:
        return str(run_dir / Path(value).name)

    gate = data.setdefault("gate", {})
    for key in ("key_file", "state_dir"):
        if key in gate:
            gate[key] = here(gate[key])
    if "path" in data.get("journal", {}):
        data["journal"]["path"] = here(data["journal"]["path"])
    for lane in data.get("lane", []):
        for scanner in lane.get("scanner", []):
            if scanner.get("kind") == "serial" and "://" not in scanner.get("port", "://"):
                scanner["port"] = here(scanner["port"])
        camera = lane.get("camera")
        if camera is not None and isinstance(camera.get("source"), str) and "://" not in camera["source"]:
            camera["source"] = here(camera["source"])
    for lane in data.get("lane", []):
        screen = lane.get("screen")
        if screen is not None:
            host, port = _host_port(screen.get("listen", "127.0.0.1:8081"))
            if not _port_free(host, port):
                new = _free_port(host)
                notes.append(f"lane {lane.get('id')}: screen port {port} is busy, using {new}")
                screen["listen"] = f"{host}:{new}"
        printer = lane.get("printer")
        if printer is not None and printer.get("kind") == "file" and isinstance(printer.get("target"), str):
            printer["target"] = here(printer["target"])
    for section, key in (("uplink", "target"), ("admin", "address")):
        table = data.get(section)
        if not table or key not in table:
            continue
        host, port = _host_port(table[key])
        if not _port_free(host, port):
            new = _free_port(host)
            notes.append(f"{section}: port {port} is busy, using {new}")
            table[key] = f"{host}:{new}"
    return data, notes


# --------------------------------------------------------------------------
# The event feed (what the console's event log and the plain output show)


class Feed:
    def __init__(self, plain: TextIO | None = None) -> None:
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=400)
        self.plain = plain

    def add(self, lane: str, text: str, style: str = "crowd", *, console: bool = True) -> None:
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now))
        if console:
            self.events.append({"time": stamp, "lane": lane, "text": text, "style": style})
        if self.plain is not None:
            millis = f"{now % 1:.3f}"[1:]
            try:
                print(f"{stamp}{millis} {lane or 'sim':<6} {text}", file=self.plain, flush=True)
            except (BrokenPipeError, OSError):
                pass


# --------------------------------------------------------------------------
# The registry's staff pages, in both simulators


async def start_staff_pages(registry: Any, port: int = STAFF_PAGES_PORT) -> tuple[Any, str]:
    """The registry's desk pages and live dashboard on loopback beside a running `RegistryServer`, behind a
    real `demo` account whose password is made afresh here (the run directory, and its registry, is new at
    each start): (the started `RegistryWeb`, the password). `port`, or a free one when it is busy."""
    import secrets

    from gated.registry.accounts import Accounts
    from gated.registry.http import RegistryWeb
    from gated.registry.pages import staff_pages
    from gated.registry.store import RegistryStore
    from gated.web import WebSettings

    password = secrets.token_urlsafe(9)

    def add_demo_account() -> None:
        with RegistryStore(registry.db, create=False) as store:
            Accounts(store).add_user(DEMO_USER, DEMO_ROLE, password)

    await asyncio.to_thread(add_demo_account)
    port = port if port and _port_free("127.0.0.1", port) else _free_port()
    pages = RegistryWeb(registry, WebSettings(host="127.0.0.1", port=port, title="registry (demo)"), pages=staff_pages())
    await pages.start()
    return pages, password


def dashboard_line(url: str, password: str) -> str:
    """What both simulators print for the staff pages (tests read it back)."""
    return f"registry dashboard: {url}dashboard  (demo account: {DEMO_USER}, password {password}, role {DEMO_ROLE})"


# --------------------------------------------------------------------------
# The simulator


class Simulator:
    def __init__(self, run_dir: str | os.PathLike = DEFAULT_RUN_DIR, *, duration: float | None = None,
                 registry: bool = True, rate: float = DEFAULT_RATE_PER_MIN, template: str | os.PathLike | None = None,
                 interactive: bool | None = None, out: TextIO | None = None) -> None:
        if duration is not None and duration <= 0:
            raise SimError(f"--duration must be positive, got {duration}")
        if rate <= 0:
            raise SimError(f"--rate must be positive, got {rate} per minute")
        self.run_dir = Path(run_dir)
        self.duration = duration
        self.use_registry = registry
        self.rate = rate
        self.template = Path(template) if template is not None else SIM_CONFIG
        self.out = out or sys.stdout
        if interactive is None:
            interactive = self.out.isatty() and sys.stdin.isatty()
        self.interactive = interactive
        self.feed = Feed(None if interactive else self.out)
        self.stop_event = asyncio.Event()
        self.gate: Any = None
        self.registry: Any = None
        self.staff_pages: Any = None
        self.scanners: dict[str, VirtualSerialScanner] = {}
        self.cameras: dict[str, VirtualCamera] = {}
        self.pins: VirtualPins | None = None
        self.crowd: Crowd | None = None
        self.people: list[demo.Attendee] = []
        self.names: dict[int, str] = {}
        self.recent: dict[str, collections.deque] = {}
        self.pins_now: dict[str, LanePins] = {}
        self._buzz_until: dict[str, float] = {}
        self._journal_seq = 0
        self._tasks: list[asyncio.Task] = []
        self._log_file: TextIO | None = None
        self.started = time.monotonic()
        self.notice: str | None = None

    # ---- setting up ----

    def prepare_run_dir(self) -> None:
        d = self.run_dir
        d.mkdir(parents=True, exist_ok=True)
        marker = d / MARKER
        if not marker.exists() and any(d.iterdir()):
            raise SimError(f"{d} is not empty and was not made by gated sim; give another --run-dir")
        marker.write_text("made by gated sim; cleared at each start except keys.json\n")
        for entry in d.iterdir():
            if entry.name in KEPT:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _configure_logging(self) -> None:
        from gated.logs import configure

        self._log_file = open(self.run_dir / "gated.log", "a", encoding="utf-8", buffering=1)
        configure("info", stream=self._log_file)
        logging.captureWarnings(True)

    async def _start_registry(self, config_data: dict[str, Any], kid: int, key: bytes) -> None:
        uplink = config_data.get("uplink")
        if not self.use_registry or not uplink:
            return
        try:
            from gated.registry.server import RegistryServer
            from gated.registry.store import RegistryStore
        except ImportError as exc:
            self.feed.add("", f"reference registry not available ({exc}); the gate runs offline", "warn")
            return
        db = self.run_dir / "registry.db"
        csv_path = self.run_dir / "attendees.csv"
        store = RegistryStore(db)
        try:
            try:
                from gated.registry.importer import import_attendees
            except ImportError:
                store.put_tickets((p.record, p.phone) for p in self.people)
            else:
                import_attendees(store, csv_path)  # the technician's path: the CSV through the real import
            for person in self.people:
                if person.record.state == TicketState.REVOKED:
                    store.revoke(person.ticket_id)
                for _ in range(person.record.badge_serial):
                    store.reissue(person.ticket_id)
            store.add_key(kid, key)
        finally:
            store.close()
        self.registry = RegistryServer(db, uplink["target"])
        await self.registry.start()
        await self._start_staff_pages()

    async def _start_staff_pages(self) -> None:
        """The registry's desk pages and live dashboard on loopback, behind the demo account's sign-in."""
        self.staff_pages, password = await start_staff_pages(self.registry)
        self.feed.add("", dashboard_line(self.staff_pages.url, password), "info")

    async def start(self) -> None:
        self.prepare_run_dir()
        self._configure_logging()
        kid, key = run_key(self.run_dir)
        self.people = demo.population()
        self.names = {p.ticket_id: p.record.name for p in self.people}
        demo.write_csv(self.run_dir / "attendees.csv", self.people)

        data, notes = generate_config(self.template, self.run_dir.resolve(), uplink=self.use_registry)
        for note in notes:
            self.feed.add("", note, "info")
        await self._start_registry(data, kid, key)
        if self.registry is None and data.pop("uplink", None) is not None:
            self.feed.add("", "the gate runs offline (no [uplink] in its config)", "info")
        config_path = self.run_dir / "gate.toml"
        header = f"# Generated by `gated sim` from {self.template}; edit that file, not this one.\n"
        config_path.write_text(header + to_toml(data), encoding="utf-8")
        config = load_config(config_path, check_files=True)
        StateStore(config.gate.state_dir).save_cache(encode_snapshot(1, demo.records(self.people), dict(config.policy.zones)), 0)
        self.config = config

        for lane in config.lanes:
            for scanner in lane.scanners:
                if scanner.kind != "serial" or "://" in (scanner.port or ""):
                    raise SimError(f"{self.template}: lane {lane.id}: the simulator drives serial scanners on a pty only")
                suffix = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}[scanner.suffix or "CR"]
                self.scanners[lane.id] = VirtualSerialScanner(scanner.port, suffix)
            if lane.camera is not None:
                self.cameras[lane.id] = VirtualCamera(lane.camera.fps, width=lane.camera.width, height=lane.camera.height)
            self.recent[lane.id] = collections.deque(maxlen=10)

        from gpiozero.pins.mock import MockFactory, MockPWMPin

        from gated.gate.daemon import Gate

        self.factory = MockFactory(pin_class=MockPWMPin)
        gate = Gate(config, pin_factory=self.factory, frame_sources=dict(self.cameras))
        await gate.start()  # all or nothing: a gate that failed to start holds no devices
        self.gate = gate
        self.pins = VirtualPins(self.factory, config)
        await self._wait_inputs_connected()
        self.crowd = Crowd(
            self.gate, self.people, key=key, kid=kid, scanners=self.scanners, cameras=self.cameras, pins=self.pins,
            rate_per_min=self.rate, say=lambda lane, text: self.feed.add(lane, text),
        )
        self._journal_seq = self.gate.journal.stats()["last_seq"]
        self._tasks.append(asyncio.create_task(self._watch(), name="sim-watch"))
        self.crowd.start()
        registry = f", registry on {self.registry.listen} (plaintext)" if self.registry else ", no registry (offline)"
        lanes = ", ".join(f"{lane.id} ({lane.direction})" for lane in config.lanes)
        self.feed.add("", f"gate {config.gate.id} started: lanes {lanes}; {len(self.people)} attendees{registry}", "info")
        printers = {lane.id: lane.printer for lane in config.lanes if lane.printer is not None}
        for lane_id, screen in self.gate.screens.items():
            printer = printers.get(lane_id)
            badges = f"; badges it prints: {printer.target}" if printer is not None and printer.kind == "file" else ""
            self.feed.add(lane_id, f"operator screen: {screen.url}{badges}", "info")

    async def _wait_inputs_connected(self, timeout_s: float = 3.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.gate.inputs_connected():
                return
            await asyncio.sleep(0.02)
        self.feed.add("", "a scanner input did not connect in 3 s; see gated.log", "warn")

    # ---- watching the gate ----

    def _describe(self, record: Any) -> tuple[str, str] | None:
        """A journal record as an event line and its style; None for kinds not shown."""
        tid = record.ticket_id
        who = "" if tid is None else f"#{tid} {self.names.get(tid, '')}".rstrip()
        p = record.payload or {}
        if record.kind == "decision":
            category = p.get("category") or ""
            if record.reason == "ok":
                return f"✔ ok {category} {who}".replace("  ", " "), "ok"
            return f"✘ {record.reason} {category} {who}".replace("  ", " ").rstrip(), "deny"
        if record.kind == "passage":
            return f"passage counted {who} (inside: {', '.join(p.get('inside') or []) or 'none'})", "info"
        if record.kind == "not_passed":
            return f"admitted {who} but nobody passed: entry not counted", "warn"
        if record.kind == "unexpected_passage":
            return "passage with nobody admitted (tailgater?)", "warn"
        if record.kind == "emergency":
            return ("EMERGENCY: all lanes held open" if p.get("active") else "emergency cleared: lanes back in service"), "alarm"
        if record.kind == "manual_open":
            return "opened once by the operator", "warn"
        if record.kind == "redemption":
            return f"redeemed {p.get('benefit')} {who}", "info"
        return None

    def _journal_news(self) -> None:
        for record in self.gate.journal.since(self._journal_seq):
            self._journal_seq = record.seq
            lane = record.lane or ""
            if record.kind == "decision" and lane in self.recent:
                self.recent[lane].append({
                    "time": time.strftime("%H:%M:%S", time.localtime(record.at)), "reason": record.reason,
                    "ticket": record.ticket_id, "category": (record.payload or {}).get("category"),
                    "name": self.names.get(record.ticket_id or -1, ""),
                })
            described = self._describe(record)
            if described is not None:
                self.feed.add(lane, *described)

    async def _watch(self) -> None:
        """The journal, then the pins, every SAMPLE_S: the order things happen at a lane."""
        while True:
            try:
                self._journal_news()
            except GatedError as exc:
                self.feed.add("", f"cannot read the journal: {exc}", "warn")
            sample = self.pins.sample()
            now = time.monotonic()
            for lane_id, lane_pins in sample.items():
                if lane_pins.buzzer:
                    self._buzz_until[lane_id] = now + BUZZER_SHOW_S
                for _ in range(lane_pins.relay_openings):
                    self.feed.add(lane_id, "relay energized: turnstile released", "info", console=False)
            self.pins_now = sample
            await asyncio.sleep(SAMPLE_S)

    # ---- the console's view ----

    def view(self) -> dict[str, Any]:
        status = self.gate.status()
        now = time.monotonic()
        pins = {}
        for lane_id, lp in self.pins_now.items():
            pins[lane_id] = {
                "relay_open": lp.relay_open, "light": lp.light, "beam_broken": lp.beam_broken,
                "buzzer": None if lp.buzzer is None else (lp.buzzer or now < self._buzz_until.get(lane_id, 0.0)),
            }
        zone = self.config.lanes[0].zone
        cache = self.gate.validator.cache
        registry = None
        if self.registry is not None:
            service = self.registry.service
            registry = f"{self.registry.listen} v{service.cache.version}, {len(service.cache):,} tickets, {service.events_stored:,} events in"
        return {
            "gate": status, "pins": pins, "recent": {k: list(v) for k, v in self.recent.items()},
            "events": list(self.feed.events), "clock": time.strftime("%H:%M:%S"),
            "auto": self.crowd.auto, "rate": self.rate, "registry": registry,
            "uplink_target": self.config.uplink.target if self.config.uplink else None,
            "occupancy": {"zone": zone, "inside": cache.occupancy(zone),
                          "capacity": self.gate.validator.zone_capacity(zone)},
            "notice": self.notice,
        }

    # ---- keys ----

    KEY_SCENARIOS = {
        "g": "guest_phone", "b": "badge_camera", "m": "media_badge", "s": "staff_badge", "x": "leave",
        "f": "forged", "t": "expired", "n": "noise", "r": "revoked",
    }

    def on_key(self, key: str) -> None:
        key = key.lower()
        crowd = self.crowd
        in_lane = crowd.lane_for["in"]
        if key in ("q", "\x03", "\x04"):
            self.stop_event.set()
        elif key in self.KEY_SCENARIOS:
            crowd.send(self.KEY_SCENARIOS[key])
        elif key == "p":
            self.spawn(crowd.tailgate(in_lane))
        elif key == "e":
            asserted = not self.pins.emergency_asserted
            self.feed.add("", f"emergency contact {'pressed' if asserted else 'released'}", "warn")
            self.pins.set_emergency(asserted)
        elif key == "o":
            self.feed.add(in_lane, "operator opens the lane once", "warn")
            self.spawn(self.gate.open_lane(in_lane))
        elif key == "a":
            crowd.auto = not crowd.auto
            self.feed.add("", f"auto traffic {'on' if crowd.auto else 'off'}", "info")

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    # ---- running ----

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop_event.set)
        terminal: Terminal | None = None
        try:
            if self.interactive:
                self._say_plain(f"gated sim: starting in {self.run_dir} ...")
            await self.start()
            if self.interactive:
                terminal = Terminal(out=self.out)
                with terminal, self._stderr_to_log():
                    loop.add_reader(terminal.fd, lambda: [self.on_key(k) for k in terminal.read_keys()])
                    try:
                        await self._console_loop(terminal)
                    finally:
                        loop.remove_reader(terminal.fd)
            else:
                await self._plain_loop()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            summary = await self.shutdown()
        self._print_summary(summary)
        return 0

    @contextlib.contextmanager
    def _stderr_to_log(self):
        """While the screen is ours, stray stderr output (thread tracebacks, C libraries) goes to gated.log."""
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(self._log_file.fileno(), 2)
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)

    async def _until_stopped(self) -> None:
        timeout = self.duration
        try:
            await asyncio.wait_for(self.stop_event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _console_loop(self, terminal: Terminal) -> None:
        deadline = None if self.duration is None else time.monotonic() + self.duration
        while not self.stop_event.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            width, height = terminal.size()
            if width < MIN_WIDTH or height < MIN_HEIGHT:
                terminal.write(HOME + f"terminal too small: {width}x{height}, need {MIN_WIDTH}x{MIN_HEIGHT}"[:width] + CLEAR_EOS)
            else:
                terminal.write(frame(render(self.view(), width, height)))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), REDRAW_S)

    async def _plain_loop(self) -> None:
        if self.duration is not None:
            self.feed.add("", f"scripted traffic at {self.rate:g}/min for {self.duration:g} s", "info")
        else:
            self.feed.add("", f"scripted traffic at {self.rate:g}/min until interrupted (Ctrl-C)", "info")
        await self._until_stopped()
        if not self.stop_event.is_set():  # the duration ran out: let the people in the lanes finish
            timeout = max((lane.passage_timeout_s or 0.0) for lane in self.config.lanes) + 3.0
            self.feed.add("", "doors closing: no new arrivals, waiting for the lanes to finish", "info")
            if not await self.crowd.drain(timeout):
                self.feed.add("", f"lanes still busy after {timeout:g} s; stopping anyway", "warn")
            self._journal_news()

    def _say_plain(self, text: str) -> None:
        with contextlib.suppress(OSError):
            print(text, file=self.out, flush=True)

    async def shutdown(self) -> dict[str, Any]:
        """Stop everything in order; returns the summary."""
        if self.crowd is not None:
            await self.crowd.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        summary: dict[str, Any] = {}
        if self.gate is not None and getattr(self.gate, "journal", None) is not None:
            with contextlib.suppress(GatedError):
                self._journal_news()
            summary = self._summary_before_stop()
            await self.gate.stop()
            summary["relays_after_stop"] = {
                lane.id: ("open" if self.factory.pin(lane.relay.pin).state == lane.relay.active_high else "locked")
                for lane in self.config.lanes if lane.relay is not None
            }
            summary["journal_records"] = self._journal_counts()
        for camera in self.cameras.values():
            camera.close()
        for scanner in self.scanners.values():
            scanner.close()
        if self.staff_pages is not None:
            with contextlib.suppress(Exception):
                await self.staff_pages.stop()
        if self.registry is not None:
            with contextlib.suppress(Exception):
                await self.registry.stop()
        if summary:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        if self._log_file is not None:
            structlog.reset_defaults()
            self._log_file.close()
            self._log_file = None
        return summary

    def _summary_before_stop(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        lanes = {}
        openings = self.pins.relay_openings() if self.pins else {}
        for lane_id, lane in self.gate.lanes.items():
            c = lane.counters
            for reason, count in c.by_reason.items():
                reasons[reason] = reasons.get(reason, 0) + count
            lanes[lane_id] = {
                "decisions": c.decisions, "admitted": c.admitted, "denied": c.denied, "repeats": c.repeats,
                "passages": c.passages, "not_passed": c.not_passed, "relay_openings": openings.get(lane_id, 0),
                "by_reason": dict(c.by_reason),
            }
        zone = self.config.lanes[0].zone
        return {
            "run_dir": str(self.run_dir), "config": str(self.run_dir / "gate.toml"),
            "journal": str(self.config.journal.path), "seconds": round(time.monotonic() - self.started, 1),
            "arrivals": self.crowd.arrivals if self.crowd else 0, "turned_away": self.crowd.turned_away if self.crowd else 0,
            "decisions": sum(reasons.values()), "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "lanes": lanes, "inside": self.gate.validator.cache.occupancy(zone), "zone": zone,
            "registry": None if self.registry is None else self.registry.listen,
            "dashboard": None if self.staff_pages is None else self.staff_pages.url + "dashboard",
            "uplink_connected": bool(self.gate.status()["uplink"].get("connected")),
        }

    def _journal_counts(self) -> dict[str, int]:
        path = Path(self.config.journal.path)
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                return dict(conn.execute("SELECT kind, count(*) FROM records GROUP BY kind ORDER BY kind").fetchall())
        except sqlite3.Error as exc:
            return {"error": str(exc)}  # type: ignore[dict-item]

    def _print_summary(self, s: dict[str, Any]) -> None:
        if not s:
            return
        lines = [f"gated sim: summary after {s['seconds']:g} s ({s['arrivals']} {'person' if s['arrivals'] == 1 else 'people'} at the lanes, {s['turned_away']} turned away)"]
        reasons = ", ".join(f"{r} {n}" for r, n in s["reasons"].items()) or "none"
        lines.append(f"  decisions  {s['decisions']}: {reasons}")
        for lane_id, c in s["lanes"].items():
            lines.append(
                f"  {lane_id:<10} {c['admitted']} admitted, {c['denied']} denied; relay opened {c['relay_openings']}x, "
                f"{c['passages']} passed, {c['not_passed']} not passed; relay now {s['relays_after_stop'].get(lane_id, '-')}"
            )
        kinds = ", ".join(f"{k} {n}" for k, n in s["journal_records"].items())
        lines.append(f"  journal    {kinds}")
        if s["registry"]:
            uplink = f"uplink {'connected' if s['uplink_connected'] else 'not connected'} to the registry on {s['registry']}"
        else:
            uplink = "offline (no registry)"
        lines.append(f"  {s['zone']:<10} {s['inside']} inside; {uplink}")
        lines.append(f"  inspect    gated journal stats --config {s['config']}")
        self._say_plain("\n".join(lines))


def run_sim(run_dir: str | os.PathLike = DEFAULT_RUN_DIR, duration: float | None = None, registry: bool = True,
            rate: float = DEFAULT_RATE_PER_MIN, *, template: str | os.PathLike | None = None,
            interactive: bool | None = None) -> int:
    """Run the simulator until quit, interrupted, or `duration` seconds; 0 on a clean stop."""
    sim = Simulator(run_dir, duration=duration, registry=registry, rate=rate, template=template, interactive=interactive)
    return eventloop.run(sim.run())
