"""The daemon: one `Gate` wires config, drivers, lanes, journal and uplink.

Life of a gate:

1. start: the config was checked whole before this; every device opens or
   the gate refuses to start (no half-configured gate ever decides). The key
   ring and entitlement cache come from the state directory, usage journaled
   after the cache was saved is replayed, so a reboot with no network admits
   exactly as before the power cut; then every admission whose outcome the
   cut lost (no passage, redemption or not-passed record) is journaled and
   counted as used (`gated.gate.outcomes`), before any lane runs.
2. run: scans become decisions on the event loop (see `gated.gate.lane`); the
   uplink streams the journal to the registry and applies what it pushes;
   the cache is saved when it changed, at most every `SAVE_EVERY_S`, and the
   mark from which the next start looks for lost outcomes moves up to the
   oldest admission still waiting for its outcome (so a restart after a long
   day reads seconds of journal, not the day).
3. stop (SIGTERM, SIGINT): inputs close first, the decisions in flight finish
   (journaled and acted on), relays go to their safe state, the cache is
   saved, the settled mark moved up, the journal closed; exit status 0.

With systemd (`Type=notify`, `WatchdogSec=`), READY=1 is sent once the
lanes are live, and watchdog pings come from a task on the same event loop
that decides: if the loop stalls, the pings stop and systemd restarts the
gate, whose relays fall to their wired safe state meanwhile.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Coroutine


def _import_structlog_without_rich() -> None:
    """structlog's console renderer and traceback helpers load rich when it is installed (the
    simulator's console brings it): about a tenth of the daemon's imports, for pretty exceptions
    the JSON log lines never use. A daemon that imports structlog first does it without rich."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # "import rich" fails: structlog's fallback
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()

import structlog  # noqa: E402

from gated import eventloop
from gated.clock import GateClock
from gated.config import Config, IoModuleConfig, LaneConfig, load_config
from gated.drivers.gpio import (
    Buzzer,
    EmergencyInput,
    LaneLight,
    PassageSensor,
    Relay,
    make_pin_factory,
)
from gated.errors import GatedError, JournalError
from gated.gate import sdnotify
from gated.gate.catchup import CLEAN_STOP_MARK, CatchUp
from gated.gate.control import GateControl, policy_from_config
from gated.gate.freshness import Freshness
from gated.gate.lane import LaneOutputs, LaneRunner, LaneServices
from gated.gate.outcomes import (
    SETTLED_MARK,
    PendingOutcomes,
    advance_settled_mark,
    settle_unknown_outcomes,
)
from gated.gate.state import CacheSaver, StateStore, rebase_saved_seq
from gated.journal import Journal
from gated.usage import replay_usage
from gated.validation import KeyRing, Validator

log = structlog.get_logger("gated.gate.daemon")

SAVE_EVERY_S = 30.0
STOP_GRACE_S = 5.0


class Gate(GateControl):
    """Everything one controller runs, wired and supervised: lanes, inputs, journal,
    uplink, admin service, housekeeping. Its admin actions (the `GateControl` the
    admin service drives) are in `gated.gate.control`, its files in `gated.gate.state`."""

    def __init__(self, config: Config, *, pin_factory: Any = None, frame_sources: dict[str, Any] | None = None,
                 clock: GateClock | None = None, relay_observer: Callable[[str, bool, float], object] | None = None):
        """`relay_observer(lane_id, energized, at)` hears every relay change (monotonic `at`),
        from the thread that made it: the simulator's console and the benchmark use it."""
        self.config = config
        self.gate_id = config.gate.id
        self._pin_factory = pin_factory
        self._frame_sources = frame_sources or {}
        self._relay_observer = relay_observer
        self.clock = clock or GateClock(trust_local_clock=config.gate.trust_local_clock)
        self.lanes: dict[str, LaneRunner] = {}
        self.emergency_active = False
        self._emergency_sources: set[str] = set()  # "input", "admin": open while any is asserted
        self.fault: str | None = None  # the journal cannot be written: nobody is admitted
        self.started_at = time.time()
        self._tasks: set[asyncio.Task] = set()
        self._inputs: list[Any] = []
        self._input_tasks: list[asyncio.Task] = []
        self._cameras: list[Any] = []
        self._sensors: list[Any] = []
        self._emergency: EmergencyInput | None = None
        self._modules: dict[str, Any] = {}  # [modules.NAME] -> ModbusIoModule (a pin factory)
        self._stop = asyncio.Event()
        self.uplink: Any = None
        self.admin: Any = None
        self.journal: Journal | None = None
        self._service_tasks: list[asyncio.Task] = []
        self.screens: dict[str, Any] = {}  # lane id -> OperatorScreen (handheld lanes with a [lane.screen])
        self.cache_changed_at: float | None = None  # wall time the cache last changed from the registry
        self.catchup: CatchUp | None = None  # after an unclean stop or a registry conflict, until caught up
        self._started_monotonic = 0.0
        self.freshness: Any = None  # `gated.gate.freshness.Freshness` when there is a registry to confirm the cache
        self.metrics: Any = None  # `gated.metrics.GateMetrics` when [metrics] is set
        self._metrics_server: Any = None

    # ---- start ----

    async def start(self) -> None:
        cfg = self.config
        self._started_monotonic = time.monotonic()
        self.loop = asyncio.get_running_loop()
        # gRPC's modules load in a worker thread while this start reads its files (`_start_services` waits).
        self._services_imported = asyncio.ensure_future(asyncio.to_thread(_import_services))
        self.store = StateStore(cfg.gate.state_dir)
        self.keyring = self.store.load_keyring(cfg.gate.key_file)
        cache, saved_seq = self.store.load_cache()
        if self.store.cache_path.exists():
            self.cache_changed_at = self.store.cache_path.stat().st_mtime
        self.journal = Journal(cfg.journal.path, self.gate_id, retention_s=cfg.journal.retention_days * 86400.0)
        clean = self.journal.mark(CLEAN_STOP_MARK, None) == self.journal.high_water  # never stopped cleanly: not clean
        rolled_back = saved_seq > self.journal.high_water
        replayed = replay_usage(self.journal, cache, rebase_saved_seq(self.store, self.journal, saved_seq))
        self.saver = CacheSaver(self.store, self.journal, cache)
        try:
            settled = await settle_unknown_outcomes(self.journal, cache, self.clock.now())
            if cfg.uplink is not None and (rolled_back or not clean):
                self.catchup = await self._begin_catchup("journal_rolled_back" if rolled_back else "unclean_stop")
        except BaseException:
            self.journal.close()
            raise
        self._pending_outcomes = PendingOutcomes(self.journal.mark(SETTLED_MARK))
        self.validator = Validator(self.keyring, cache, policy_from_config(cfg))
        if cfg.uplink is not None:
            # The saved cache was last written after the registry's last change: its age, at most.
            age = None if self.cache_changed_at is None else time.time() - self.cache_changed_at
            self.freshness = Freshness(cfg.uplink.stale_after_s, age_at_start_s=age)
            self.freshness.start(self.loop)
        if self._pin_factory is None:
            self._pin_factory = make_pin_factory(cfg.gate.gpio)
        try:
            await self._open_modules()
            for lane_cfg in cfg.lanes:
                self.lanes[lane_cfg.id] = self._build_lane(lane_cfg)
            if cfg.emergency is not None:
                e = cfg.emergency
                factory, _, on_input = self._pins_on(e.io)
                self._emergency = EmergencyInput(
                    on_input(e.pin), active_high=e.active_high, pull_up=e.pull_up, pin_factory=factory,
                    on_change=lambda active, at: self.loop.call_soon_threadsafe(self._emergency_changed, active),
                )
            self._start_inputs()
            await self._start_services()
        except BaseException:
            await self._abort_start()
            raise
        if self.catchup is not None:
            self._service_task(self.catchup.run(self.uplink, cache, self._started_monotonic), "catch-up")
        self._service_task(self._save_periodically(), "save-cache")
        interval = sdnotify.watchdog_interval()
        if interval:
            self._service_task(sdnotify.watchdog_pinger(interval), "watchdog")
        sdnotify.notify(f"READY=1\nSTATUS=gate {self.gate_id}: {len(self.lanes)} lanes, {len(cache):,} tickets")
        log.info(
            "gate_started", gate_id=self.gate_id, lanes=list(self.lanes), tickets=len(cache), cache_version=cache.version,
            kids=self.keyring.kids(), usage_replayed=replayed, unknown_outcomes_counted=len(settled),
            clock_trusted=self.clock.trusted(),
            catching_up=None if self.catchup is None else self.catchup.reason, event_loop=eventloop.loop_name(),
        )

    async def _open_modules(self) -> None:
        """Connect every [modules.NAME] before the devices on it are built, so inputs start from
        what the module reads; one that does not answer leaves its lanes in fault, not the gate down."""
        from gated.drivers.modbus import ModbusIoModule

        for name, mc in self.config.modules.items():
            if mc.kind == "modbus-tcp":
                module = ModbusIoModule.tcp(name, mc.host, mc.port, unit=mc.unit, poll_ms=mc.poll_ms, timeout_s=mc.timeout_s)
            else:
                module = ModbusIoModule.rtu(name, mc.device, mc.baud, parity=mc.parity, unit=mc.unit,
                                            poll_ms=mc.poll_ms, timeout_s=mc.timeout_s)
            self._modules[name] = module.start()
        for module, mc in zip(self._modules.values(), self.config.modules.values()):
            await asyncio.to_thread(module.wait_connected, 2 * mc.timeout_s + 0.2)

    def _pins_on(self, io: str | None) -> tuple[Any, Callable[[int], Any], Callable[[int], Any]]:
        """The pin factory a table's pins are on, and how its coil and input numbers name pins there."""
        if io is None:
            return self._pin_factory, int, int
        module = self._modules[io]
        return module, module.coil, module.input

    async def _begin_catchup(self, reason: str, ended_session: int | None = None) -> CatchUp:
        """Journal this boot (its record opens the epoch that closes the earlier ones at the
        registry) and hold limited-entry admissions until caught up (`gated.gate.catchup`)."""
        wait_s = self.config.uplink.catchup_wait_s
        record = await self.journal.append_async("boot", at=self.clock.now(), payload={
            "after": reason, "catchup_wait_s": wait_s})
        return CatchUp(record.seq, wait_s, reason=reason, ended_session=ended_session)

    async def _registry_conflict(self, from_seq: int) -> None:
        """The registry holds other records under this gate's seqs from `from_seq` on, which the
        uplink moves to a new epoch next: it may hold admissions the cache lacks, so catch up
        again, unless the one still running covers them (`gated.gate.catchup`)."""
        running = self.catchup
        if running is not None and not running.done:
            running.ended_session = self.uplink.sessions  # the conflict ends this session: no sign of an unreachable registry
            if running.boot_seq >= from_seq:
                return  # its record moves with them: acknowledged after them
        started = time.monotonic()
        catchup = await self._begin_catchup("registry_conflict", ended_session=self.uplink.sessions)
        self.catchup = catchup
        self._service_task(catchup.run(self.uplink, self.validator.cache, started), "catch-up")
        log.warning("catchup_started", after=catchup.reason, from_seq=from_seq, boot_seq=catchup.boot_seq,
                    catchup_wait_s=catchup.wait_s, note="the registry holds other records under this gate's seqs")

    async def _hold(self, decision):
        """An admission while catching up: a limited-entry ticket waits, then is decided again."""
        catchup = self.catchup
        if catchup is None or catchup.done or not self.validator.limited_entry(decision):
            return decision
        while catchup is not None and not catchup.done:  # a conflict may begin another meanwhile
            await catchup.wait()
            catchup = self.catchup
        lane = self.lanes.get(decision.lane_id)
        if lane is None:
            return decision
        return lane.services.validator.decide_again(decision, lane.spec, self.clock.trusted())

    def _build_lane(self, lc: LaneConfig) -> LaneRunner:
        f, coil, on_input = self._pins_on(lc.io)
        outputs = LaneOutputs()
        if lc.io is not None and lc.relay is not None:
            outputs.fault = lambda module=f: module.fault  # a relay that cannot move admits nobody
        try:
            if lc.relay is not None:
                outputs.relay = Relay(
                    coil(lc.relay.pin), active_high=lc.relay.active_high, pulse_s=lc.relay.pulse_s, safe_state=lc.relay.safe_state,
                    pin_factory=f, on_change=lambda energized, at, lane_id=lc.id: self._relay_changed(lane_id, energized, at),
                )
            if lc.light is not None:
                outputs.light = LaneLight(coil(lc.light.red), coil(lc.light.green), coil(lc.light.blue), active_high=lc.light.active_high, pwm=lc.light.pwm, pin_factory=f)
            if lc.buzzer is not None:
                outputs.buzzer = Buzzer(coil(lc.buzzer.pin), active_high=lc.buzzer.active_high, pin_factory=f)
        except BaseException:
            outputs.close()
            raise
        lane = LaneRunner(lc, self._lane_services(), outputs)
        if lc.passage is not None:
            self._sensors.append(PassageSensor(
                on_input(lc.passage.pin), pull_up=lc.passage.pull_up, active_state=lc.passage.active_high, pin_factory=f,
                on_passage=lambda at, lane=lane: self.loop.call_soon_threadsafe(lane.on_passage, at),
            ))
        return lane

    def _lane_services(self) -> LaneServices:
        # time.monotonic: the clock the drivers stamp reads and passages with.
        return LaneServices(
            validator=self.validator, journal=self.journal, clock=self.clock, monotonic=time.monotonic,
            spawn=self.spawn, on_journal_failure=self.journal_failed, on_record=self.after_record,
            # With an uplink a catch-up may begin at any time (a registry conflict); `_hold` costs one await when none runs.
            redeem=self._redeem, hold=None if self.config.uplink is None else self._hold, freshness=self.freshness,
        )

    async def _redeem(self, ask):
        """A handheld's redemption, asked of the registry (the lanes are built before the uplink)."""
        return None if self.uplink is None else await self.uplink.redeem(ask)

    def _relay_changed(self, lane_id: str, energized: bool, at: float) -> None:
        log.info("relay", lane=lane_id, energized=energized, at=at)
        if self._relay_observer is not None:
            self._relay_observer(lane_id, energized, at)

    def _start_inputs(self) -> None:
        """Open every scanner and camera. Driver modules load only when a lane uses them
        (OpenCV alone is tens of MB a gate without a camera need not carry)."""
        from gated.drivers.serial_scanner import SerialScanner

        for lc in self.config.lanes:
            lane = self.lanes[lc.id]
            for n, sc in enumerate(lc.scanners):
                name = f"{lc.id}/{sc.kind}{n}"
                if sc.kind == "serial":
                    scanner = SerialScanner(name, sc.port, sc.baud, sc.suffix, sc.max_frame, on_read=lane.on_read)
                elif sc.kind == "hid":
                    from gated.drivers.hid_scanner import HidScanner

                    scanner = HidScanner(name, str(sc.device) if sc.device else sc.name, sc.layout, sc.max_frame, on_read=lane.on_read)
                else:
                    from gated.drivers.keypad import KeypadScanner

                    scanner = KeypadScanner(name, str(sc.device) if sc.device else sc.name, sc.layout, on_entry=lane.on_manual)
                self._inputs.append(scanner)
                self._input_tasks.append(asyncio.create_task(scanner.run(), name=name))
            if lc.camera is not None:
                from gated.drivers.camera import Camera

                cam = lc.camera
                source = self._frame_sources.get(lc.id, cam.source)
                camera = Camera(f"{lc.id}/camera", source, lane.on_read, decoder=cam.decoder, width=cam.width, height=cam.height, fps=cam.fps, loop=self.loop)
                self._cameras.append(camera.start())

    async def _start_services(self) -> None:
        """The uplink to the registry (if configured) and the local admin service."""
        await self._services_imported
        from gated.rpc.admin import AdminServer
        from gated.rpc.uplink import Uplink

        if self.config.uplink is not None:
            # The daemon owns persistence (`save_cache`), so the uplink only says when the cache changed.
            self.uplink = Uplink(
                self.gate_id, self.journal, self.validator.cache, self.keyring, self.clock, self.config.uplink,
                on_cache_changed=self._mark_cache_dirty, on_keys_changed=self._keys_changed,
                on_confirmed=self.freshness.confirmed, on_conflict=self._registry_conflict,
            )
            self._service_task(self.uplink.run(), "uplink")
        else:
            log.warning("uplink_not_configured", gate_id=self.gate_id)
        admin = self.config.admin
        address = None if admin.socket is not None else f"{admin.host}:{admin.port}"
        self.admin = AdminServer(self, socket_path=admin.socket, address=address)
        await self.admin.start()
        await self._start_metrics()
        await self._start_screens()

    async def _start_metrics(self) -> None:
        """`/metrics` when [metrics] says where (prometheus_client and aiohttp load only then)."""
        m = self.config.metrics
        if m is None:
            return
        from gated.metrics import GateMetrics, MetricsServer

        self.metrics = GateMetrics(self)
        self.metrics.attach(self.lanes)
        self._metrics_server = MetricsServer(m.host, m.port, self.metrics.exposition, allow_remote=m.allow_remote)
        await self._metrics_server.start()

    async def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            await self._metrics_server.stop()

    async def _start_screens(self) -> None:
        """The operator screen of each handheld lane that has one (aiohttp loads only then)."""
        lanes = [lc for lc in self.config.lanes if lc.screen is not None]
        if not lanes:
            return
        from gated.gate.screen import OperatorScreen, unit_status_of

        status = unit_status_of(self)
        for lc in lanes:
            screen = OperatorScreen(self.lanes[lc.id], lc.screen, unit_status=status,
                                    color_for=lambda category: self.config.policy.color_for(category), gate_id=self.gate_id)
            await screen.start()
            self.screens[lc.id] = screen

    async def _stop_screens(self) -> None:
        for screen in self.screens.values():
            await screen.stop()

    def inputs_connected(self) -> bool:
        """Every scanner's device is open (the simulator and tests wait for this)."""
        return all(scanner.connected for scanner in self._inputs)

    # ---- running ----

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        """Run a lane coroutine; the gate waits for these on stop."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, JournalError):
            self.journal_failed(exc)
        elif exc is not None:
            log.error("lane_task_failed", error=repr(exc), exc_info=exc)

    def _service_task(self, coro: Coroutine, name: str) -> None:
        """A task that lives as long as the gate: if it ever ends, the log says so."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._service_done)
        self._service_tasks.append(task)

    @staticmethod
    def _service_done(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("service_task_died", task=task.get_name(), error=repr(task.exception()), exc_info=task.exception())

    def journal_failed(self, exc: Exception) -> None:
        """The journal refused a write: nobody is let in without a record, so say so loudly."""
        self.fault = f"journal: {exc}"
        log.error("journal_write_failed", error=str(exc))
        sdnotify.notify(f"STATUS=FAULT: journal cannot be written; no one is admitted ({exc})")

    def after_record(self) -> None:
        """A record reached the journal: wake the uplink, and the cache may have changed."""
        self.saver.mark_dirty()
        if self.uplink is not None:
            self.uplink.wake()

    def _mark_cache_dirty(self, *, snapshot: bool = False) -> None:
        """A fresh snapshot from the registry is saved at once (a reboot must not
        fetch it again to admit anyone); deltas wait for the periodic save.

        A snapshot is saved with the journal seq its local usage really reaches
        (`Uplink.snapshot_journal_seq`), never a later one: usage journaled
        after it is replayed at boot rather than lost."""
        self.saver.mark_dirty()
        self.cache_changed_at = time.time()
        if snapshot:
            self.spawn(self.saver.save(journal_seq=getattr(self.uplink, "snapshot_journal_seq", None)))

    def _keys_changed(self) -> None:
        self.spawn(self.saver.save_keys(KeyRing(self.keyring.keys)))

    async def _save_periodically(self) -> None:
        """Save the cache when it changed, purge old acknowledged records; never dies of a failure."""
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            try:
                if self.saver.dirty:
                    await self.saver.save()
                await self._advance_settled_mark()
                await asyncio.to_thread(self.journal.purge, time.time())
            except (OSError, GatedError) as exc:
                log.error("housekeeping_failed", error=str(exc))

    async def _advance_settled_mark(self) -> None:
        """Reads the records written since the last call, in a worker thread."""
        await asyncio.to_thread(advance_settled_mark, self.journal, self._pending_outcomes)

    def _emergency_changed(self, active: bool) -> None:
        self.spawn(self.set_emergency(active, source="input"))

    # ---- stop ----

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        sdnotify.notify("STOPPING=1")
        for scanner in self._inputs:
            scanner.close()
        for camera in self._cameras:
            await asyncio.to_thread(camera.close)
        for task in self._input_tasks:
            task.cancel()
        await asyncio.gather(*self._input_tasks, return_exceptions=True)
        await self._stop_screens()
        await self._stop_metrics()
        if self.freshness is not None:
            self.freshness.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_S)
        for lane in self.lanes.values():
            try:
                await lane.flush_pending()
            except GatedError as exc:
                log.error("flush_pending_failed", lane=lane.id, error=str(exc))
        self._close_outputs()
        for task in self._service_tasks:
            task.cancel()
        await asyncio.gather(*self._service_tasks, return_exceptions=True)
        if self.admin is not None:
            await self.admin.stop()
        try:
            await self.saver.save()
        except (OSError, GatedError) as exc:
            log.error("cache_save_failed", error=str(exc))
        try:
            await self._advance_settled_mark()
        except GatedError as exc:
            log.error("settled_mark_failed", error=str(exc))
        try:
            # Last: a start that finds the journal ended here knows nothing after this was lost.
            await asyncio.to_thread(self.journal.set_mark, CLEAN_STOP_MARK, self.journal.high_water)
        except GatedError as exc:
            log.error("clean_stop_mark_failed", error=str(exc))
        self.journal.close()
        log.info("gate_stopped", gate_id=self.gate_id)

    async def _abort_start(self) -> None:
        """Start failed part way: release whatever was opened, relays to their safe state."""
        for scanner in self._inputs:
            scanner.close()
        for camera in self._cameras:
            await asyncio.to_thread(camera.close)
        for task in (*self._input_tasks, *self._service_tasks):
            task.cancel()
        await asyncio.gather(*self._input_tasks, *self._service_tasks, return_exceptions=True)
        await self._stop_screens()
        await self._stop_metrics()
        if self.freshness is not None:
            self.freshness.stop()
        if self.admin is not None:
            await self.admin.stop()
        self._close_outputs()
        self.journal.close()

    def _close_outputs(self) -> None:
        for lane in self.lanes.values():
            if lane.outputs.relay is not None and not lane.outputs.relay.closed:
                lane.outputs.relay.to_safe_state()
            lane.outputs.close()
        for device in (*self._sensors, self._emergency):
            if device is not None:
                device.close()
        for module in self._modules.values():
            module.close()  # after the devices on it: their resting states are written first


def _import_services() -> None:
    """The uplink's and the admin service's modules: gRPC, a tenth of the start on a Pi-class CPU."""
    import gated.rpc.admin  # noqa: F401
    import gated.rpc.uplink  # noqa: F401


async def run_gate(config_path: str | Path) -> int:
    config = load_config(config_path, check_files=True)
    gate = Gate(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gate.request_stop)
    await gate.start()
    try:
        await gate.wait_stopped()
    finally:
        await gate.stop()
    return 0
