"""A Modbus I/O module as a gpiozero pin factory: the relay, light and buzzer
on its coils, the passage beam and emergency contact on its discrete inputs,
for installations where the controller is not at the turnstile (Modbus TCP
modules on the LAN, Modbus RTU modules on RS-485).

The GPIO drivers (`gated.drivers.gpio`: Relay, LaneLight, Buzzer,
PassageSensor, EmergencyInput) work on it unchanged: they are built with
``pin_factory=module`` and pins named ``module.coil(n)`` / ``module.input(n)``
("coil3", "input0"), since coil 3 and input 3 are different points.

Rules kept here:

- **Nothing blocks the caller.** Setting a coil records the wanted state and
  wakes the module's one I/O thread, which does every Modbus request:
  writes first, then a read of the inputs in use, every `poll_s` (Modbus has
  no push). An input that changed fires gpiozero's `when_changed` from that
  thread, as a real backend's edge thread does.
- **The wanted state is the truth.** A pin reads back what was last asked of
  it; the I/O thread makes the module match: after each (re)connection it
  writes every coil's wanted state (a relay whose pulse ended meanwhile goes
  back to its safe state, one still pulsing stays on), and every
  `VERIFY_EVERY_S` it reads the coils back and rewrites any that differ
  (a module that rebooted, or whose watchdog dropped its outputs).
- **Unreachable is a state, not a crash.** A failed request closes the
  connection; `fault` then says why, `module_unreachable` is logged once per
  outage (not once per poll), reconnects back off up to `reconnect_max_s`,
  and `module_reconnected` says how long it lasted. Inputs keep their last
  value meanwhile. The lane reads `fault` and refuses to admit while it is
  set: a turnstile that cannot open must not admit anyone.
- **The module's own watchdog is the last line.** If the controller dies,
  nothing here can drop the relay: real modules must have their
  communication watchdog ("safe value", "WDT", "fail-safe") set so their
  coils fall when the master goes silent. The I/O thread's polling keeps
  that watchdog fed while the gate runs.
- No PWM (coils are on or off), no pull resistors (a module's input circuit
  is fixed), no ticket knowledge.

`pymodbus` keyword names moved between releases (``slave=`` until 3.9,
``device_id=`` since); `_unit_kwarg` picks the one the installed client takes.
"""

from __future__ import annotations

import inspect
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from types import MethodType
from weakref import WeakMethod, ref

import structlog
from gpiozero.exc import (
    GPIOPinInUse,
    PinFixedPull,
    PinInvalidFunction,
    PinInvalidPin,
    PinPWMUnsupported,
    PinSetInput,
)
from gpiozero.pins import Factory
from gpiozero.pins import Pin as GpiozeroPin

from gated.errors import DriverError

_log = structlog.get_logger(__name__)

COIL, INPUT = "coil", "input"
_PIN_NAME = re.compile(r"(coil|input)(\d{1,5})")
MAX_ADDRESS = 65535
MAX_READ_BITS = 2000  # a Modbus read of coils or discrete inputs returns at most 2000 bits

#: How often the coils are read back and any that differ from the wanted state rewritten.
VERIFY_EVERY_S = 0.5


def _unit_kwarg(client: Any, unit: int) -> dict[str, int]:
    params = inspect.signature(client.read_coils).parameters
    return {"device_id": unit} if "device_id" in params else {"slave": unit}


class _Address:
    """What gpiozero's reservations and device reprs need of a pin's info: its name."""

    __slots__ = ("name", "kind", "address")

    def __init__(self, kind: str, address: int) -> None:
        self.kind = kind
        self.address = address
        self.name = f"{kind}{address}"

    def __repr__(self) -> str:
        return self.name


class ModbusPin(GpiozeroPin):
    """One coil (an output) or one discrete input (an input) of a module."""

    def __init__(self, factory: ModbusIoModule, info: _Address) -> None:
        super().__init__()
        self._factory = factory
        self._info = info
        self._state = False  # wanted (coil) or last read (input)
        self._edges = "both"
        self._bounce = None
        self._when_changed: Any = None
        self._closed = False

    @property
    def info(self) -> _Address:
        return self._info

    @property
    def factory(self) -> ModbusIoModule:
        return self._factory

    def __repr__(self) -> str:
        return f"{self._factory.name}:{self._info.name}"

    def close(self) -> None:
        self.when_changed = None
        self._closed = True

    # function: coils are outputs, discrete inputs are inputs; neither can be the other
    def _get_function(self) -> str:
        return "output" if self._info.kind == COIL else "input"

    def _set_function(self, value: str) -> None:
        if value != self._get_function():
            raise PinInvalidFunction(f"{self!r} is a {self._info.kind}: it can only be an {self._get_function()}")

    def _get_state(self) -> bool:
        return self._state

    def _set_state(self, value: float) -> None:
        if self._info.kind != COIL:
            raise PinSetInput(f"cannot set the state of input {self!r}")
        self._state = bool(value)
        self._factory._want(self._info.address, self._state)

    def _get_pull(self) -> str:
        return "floating"

    def _set_pull(self, value: str) -> None:
        # The module's input circuit decides; gpiozero's active level is what matters here.
        if value not in ("floating", "up", "down"):
            raise PinFixedPull(f"{self!r}: pull must be floating, up or down")

    def _get_frequency(self) -> None:
        return None

    def _set_frequency(self, value: float | None) -> None:
        if value is not None:
            raise PinPWMUnsupported(f"{self!r}: a Modbus coil is on or off (no PWM); set pwm = false")

    def _get_bounce(self) -> float | None:
        return self._bounce

    def _set_bounce(self, value: float | None) -> None:
        self._bounce = None if value is None else float(value)  # debounce is the drivers' (see gpio/inputs.py)

    def _get_edges(self) -> str:
        return self._edges

    def _set_edges(self, value: str) -> None:
        self._edges = value

    def _get_when_changed(self) -> Any:
        return None if self._when_changed is None else self._when_changed()

    def _set_when_changed(self, value: Any) -> None:
        if value is None:
            self._when_changed = None
            return
        # As gpiozero's own pins do: no strong reference to the device that listens.
        self._when_changed = WeakMethod(value) if isinstance(value, MethodType) else ref(value)

    def _polled(self, state: bool, ticks: float) -> None:
        """The I/O thread read this input: fire the edge if it changed."""
        if state == self._state:
            return
        self._state = state
        if self._edges == "none" or (self._edges == "rising" and not state) or (self._edges == "falling" and state):
            return
        callback = self._get_when_changed()
        if callback is not None:
            try:
                callback(ticks, state)
            except Exception:
                _log.exception("modbus_edge_callback_failed", pin=repr(self))


class ModbusIoModule(Factory):
    """A gpiozero pin factory whose pins are one Modbus module's coils and discrete inputs.

    Build it with `tcp()` or `rtu()`, hand it to the GPIO drivers as their
    `pin_factory`, then `start()` it (the drivers may be built before or
    after). `close()` after the drivers are closed: it writes their last
    wanted states (the relay's safe state) before letting the module go.
    """

    def __init__(self, name: str, make_client: Callable[[], Any], where: str, *, unit: int = 1,
                 poll_s: float = 0.02, reconnect_max_s: float = 2.0,
                 on_change: Callable[[bool], object] | None = None) -> None:
        super().__init__()
        if not 0 <= unit <= 255:
            raise DriverError(f"io module {name}: unit must be 0..255, got {unit}")
        if not 0.001 <= poll_s <= 10:
            raise DriverError(f"io module {name}: poll interval must be 1 ms to 10 s, got {poll_s}")
        self.name = name
        self.where = where
        self.unit = unit
        self.poll_s = poll_s
        self.reconnect_max_s = reconnect_max_s
        self._make_client = make_client
        self._on_change = on_change
        self._pins: dict[str, ModbusPin] = {}
        self._owners: dict[str, Any] = {}  # pin name -> weakref to the device holding it
        self._wanted: dict[int, bool] = {}  # coil -> state
        self._dirty: set[int] = set()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._connected = False
        self._fault: str | None = f"io module {name} ({where}): not connected yet"
        self._unit: dict[str, int] = {"device_id": unit}
        self.outages = 0
        self.requests = 0

    @classmethod
    def tcp(cls, name: str, host: str, port: int = 502, *, unit: int = 1, poll_ms: int = 20,
            timeout_s: float = 0.5, **kwargs: Any) -> ModbusIoModule:
        """A Modbus TCP module at host:port."""
        from pymodbus.client import ModbusTcpClient

        return cls(name, lambda: ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0),
                   f"modbus-tcp {host}:{port} unit {unit}", unit=unit, poll_s=poll_ms / 1000, **kwargs)

    @classmethod
    def rtu(cls, name: str, device: str, baud: int = 19200, *, parity: str = "N", unit: int = 1,
            poll_ms: int = 20, timeout_s: float = 0.5, **kwargs: Any) -> ModbusIoModule:
        """A Modbus RTU module on a serial line (RS-485), 8 data bits, 1 stop bit."""
        from pymodbus.client import ModbusSerialClient

        return cls(name, lambda: ModbusSerialClient(device, baudrate=baud, parity=parity, bytesize=8, stopbits=1,
                                                    timeout=timeout_s, retries=0),
                   f"modbus-rtu {device} {baud} 8{parity}1 unit {unit}", unit=unit, poll_s=poll_ms / 1000, **kwargs)

    # ---- pin names ----

    @staticmethod
    def coil(address: int) -> str:
        return f"{COIL}{address}"

    @staticmethod
    def input(address: int) -> str:
        return f"{INPUT}{address}"

    # ---- state ----

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def fault(self) -> str | None:
        """Why the module's outputs cannot act now (None: they can)."""
        return self._fault

    def coil_wanted(self, address: int) -> bool | None:
        return self._wanted.get(address)

    # ---- gpiozero's Factory ----

    def pin(self, name: Any) -> ModbusPin:
        match = _PIN_NAME.fullmatch(str(name))
        if match is None or int(match.group(2)) > MAX_ADDRESS:
            raise PinInvalidPin(f"io module {self.name}: a pin is 'coil<n>' or 'input<n>' (n 0..{MAX_ADDRESS}), "
                                f"got {name!r}")
        kind, address = match.group(1), int(match.group(2))
        key = f"{kind}{address}"
        with self._wake:
            pin = self._pins.get(key)
            if pin is None:
                pin = self._pins[key] = ModbusPin(self, _Address(kind, address))
            pin._closed = False
        return pin

    def reserve_pins(self, requester: Any, *names: Any) -> None:
        with self._wake:
            for name in names:
                key = str(name)
                holder = self._owners.get(key)
                device = None if holder is None else holder()
                if device is not None and device is not requester and requester._conflicts_with(device):
                    raise GPIOPinInUse(f"io module {self.name}: {key} is already in use by {device!r}")
                self._owners[key] = ref(requester)

    def release_pins(self, reserver: Any, *names: Any) -> None:
        with self._wake:
            for name in names:
                holder = self._owners.get(str(name))
                if holder is not None and holder() in (reserver, None):
                    del self._owners[str(name)]

    def release_all(self, reserver: Any) -> None:
        self.release_pins(reserver, *list(self._owners))

    @staticmethod
    def ticks() -> float:
        return time.monotonic()

    @staticmethod
    def ticks_diff(later: float, earlier: float) -> float:
        return later - earlier

    def _get_board_info(self) -> None:
        return None

    # ---- life cycle ----

    def start(self) -> ModbusIoModule:
        """Start the I/O thread (it connects, and reconnects for as long as the module runs)."""
        with self._wake:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name=f"modbus-{self.name}", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout_s: float = 2.0) -> None:
        """Write the last wanted states (the drivers closed first: relays at rest), then stop. Safe twice."""
        with self._wake:
            if self._stopping:
                return
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                _log.error("modbus_thread_stuck", module=self.name, waited_s=timeout_s)

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until the first exchange with the module is done (inputs read); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not self._connected and time.monotonic() < deadline:
            time.sleep(0.005)
        return self._connected

    # ---- the I/O thread ----

    def _want(self, address: int, state: bool) -> None:
        with self._wake:
            self._wanted[address] = state
            self._dirty.add(address)
            self._wake.notify_all()

    def _run(self) -> None:
        client: Any = None
        backoff_s = min(0.1, self.reconnect_max_s)
        outage_started: float | None = None
        next_verify = 0.0
        try:
            while True:
                with self._wake:
                    stopping = self._stopping
                if client is None:
                    try:
                        client = self._make_client()
                        if not client.connect():
                            raise ConnectionError("no connection")
                        self._unit = _unit_kwarg(client, self.unit)
                        with self._wake:
                            self._dirty.update(self._wanted)  # every coil, as wanted now
                        self._transfer(client)
                    except Exception as exc:
                        client = self._drop(client)
                        if outage_started is None:
                            outage_started = time.monotonic()
                            self._went_down(exc)
                        if stopping:
                            return
                        with self._wake:
                            self._wake.wait_for(lambda: self._stopping, backoff_s)
                        backoff_s = min(backoff_s * 2, self.reconnect_max_s)
                        continue
                    backoff_s = min(0.1, self.reconnect_max_s)
                    self._came_up(outage_started)
                    outage_started = None
                    next_verify = time.monotonic() + VERIFY_EVERY_S
                if stopping:
                    try:
                        self._transfer(client)  # the drivers closed first: their resting states
                    except Exception as exc:
                        _log.error("module_last_write_failed", module=self.name, error=str(exc) or type(exc).__name__)
                    return
                try:
                    now = time.monotonic()
                    if now >= next_verify:
                        self._verify_coils(client)
                        next_verify = now + VERIFY_EVERY_S
                    with self._wake:
                        if not self._dirty and not self._stopping:
                            self._wake.wait(self.poll_s)
                    self._transfer(client)
                except Exception as exc:
                    client = self._drop(client)
                    outage_started = time.monotonic()
                    self._went_down(exc)
        finally:
            self._drop(client)
            self._connected = False

    def _transfer(self, client: Any) -> None:
        """Write the coils asked for since the last pass, then read the inputs in use."""
        with self._wake:
            dirty, self._dirty = sorted(self._dirty), set()
            wanted = {address: self._wanted[address] for address in dirty}
            inputs = [pin for pin in self._pins.values() if pin.info.kind == INPUT and not pin._closed]
        try:
            for address in dirty:
                self._check(client.write_coil(address, wanted[address], **self._unit), f"write coil {address}")
        except BaseException:
            with self._wake:
                self._dirty.update(dirty)  # still wanted: written after the reconnect
            raise
        if inputs:
            low = min(pin.info.address for pin in inputs)
            high = max(pin.info.address for pin in inputs)
            ticks = self.ticks()
            bits = self._read_bits(client.read_discrete_inputs, low, high, "read inputs")
            for pin in inputs:
                pin._polled(bits[pin.info.address - low], ticks)
        elif not dirty:
            # Nothing to read: still talk, so the module's watchdog knows the master is alive.
            with self._wake:
                coils = sorted(self._wanted)
            if coils:
                self._read_bits(client.read_coils, coils[0], coils[0], "read coil")

    def _verify_coils(self, client: Any) -> None:
        """Read the coils back; rewrite those that differ from what was written (a coil asked
        for since, still to be written, is not a difference)."""
        with self._wake:
            wanted = {address: state for address, state in self._wanted.items() if address not in self._dirty}
        if not wanted:
            return
        low, high = min(wanted), max(wanted)
        bits = self._read_bits(client.read_coils, low, high, "read coils")
        with self._wake:
            differ = [address for address, state in wanted.items()
                      if bits[address - low] != state and self._wanted[address] == state and address not in self._dirty]
            self._dirty.update(differ)
        if differ:
            _log.warning("module_coils_differed", module=self.name, coils=differ)

    def _read_bits(self, read: Callable[..., Any], low: int, high: int, what: str) -> list[bool]:
        bits: list[bool] = []
        for start in range(low, high + 1, MAX_READ_BITS):
            count = min(MAX_READ_BITS, high + 1 - start)
            reply = self._check(read(start, count=count, **self._unit), f"{what} {start}..{start + count - 1}")
            bits.extend(bool(bit) for bit in reply.bits[:count])
        return bits

    def _check(self, reply: Any, what: str) -> Any:
        self.requests += 1
        if reply is None or reply.isError():
            raise ConnectionError(f"the module refused to {what}: {reply}")
        return reply

    def _drop(self, client: Any) -> None:
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
        self._connected = False
        return None

    def _went_down(self, exc: BaseException) -> None:
        self.outages += 1
        error = str(exc) or type(exc).__name__
        self._fault = f"io module {self.name} ({self.where}) unreachable: {error}"
        _log.error("module_unreachable", module=self.name, where=self.where, error=error)
        if self._on_change is not None:
            self._call_on_change(False)

    def _came_up(self, outage_started: float | None) -> None:
        self._connected = True
        self._fault = None
        if outage_started is None:
            _log.info("module_connected", module=self.name, where=self.where)
        else:
            _log.warning("module_reconnected", module=self.name, where=self.where,
                         outage_s=round(time.monotonic() - outage_started, 3))
        if self._on_change is not None:
            self._call_on_change(True)

    def _call_on_change(self, connected: bool) -> None:
        try:
            self._on_change(connected)  # type: ignore[misc]
        except Exception:
            _log.exception("modbus_on_change_failed", module=self.name)
