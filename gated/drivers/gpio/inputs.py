"""GPIO inputs: the passage beam and the emergency contact, read at the level
that means "asserted" whichever way they are wired.

Each reports plain events ("the beam was broken at t", "emergency asserted
at t") and knows nothing of tickets or lanes.

Rules kept here (the pin and life-cycle rules are in `pins.py`):

- Times handed to callers are `clock()` seconds: `time.monotonic()`, the
  daemon's clock, unless a test or the simulator passes a fake one.
- Debounce is applied here, one rule per input, never by the pin backend.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import structlog
from gpiozero import DigitalInputDevice
from gpiozero.pins import Factory

from gated.drivers.gpio.pins import GpioDevice, Pin, _call_safely, _open_device, _seconds
from gated.errors import DriverError

_log = structlog.get_logger(__name__)

Clock = Callable[[], float]



class _LevelInput:
    """A gpiozero DigitalInputDevice read as "asserted" at a chosen level.

    gpiozero ties the active level to the pull resistor (pulled up means
    active low) and refuses an explicit active level with a pull. Sensors
    and alarm contacts come wired both ways with internal pulls, so the
    level is interpreted here: `on_edge(asserted)` is called on each change.

    Debounce is not delegated to the pin (`bounce_time`): MockPin ignores
    it and the real backends disagree on its meaning, so each input applies
    its own rule, the same everywhere.
    """

    def __init__(self, what: str, pin: Pin, *, pull_up: bool | None, asserted_high: bool,
                 pin_factory: Factory | None, on_edge: Callable[[bool], None]) -> None:
        self._on_edge = on_edge
        if pull_up is None:
            self._device = _open_device(what, lambda: DigitalInputDevice(
                pin, pull_up=None, active_state=asserted_high, pin_factory=pin_factory))
            self._inverted = False
        else:
            self._device = _open_device(what, lambda: DigitalInputDevice(
                pin, pull_up=pull_up, pin_factory=pin_factory))
            gpiozero_active_high = not pull_up
            self._inverted = gpiozero_active_high != asserted_high
        self._device.when_activated = self._activated
        self._device.when_deactivated = self._deactivated

    @property
    def asserted(self) -> bool:
        return self._device.is_active != self._inverted

    def close(self) -> None:
        self._device.close()

    def _activated(self) -> None:
        self._on_edge(not self._inverted)

    def _deactivated(self) -> None:
        self._on_edge(self._inverted)


class PassageSensor(GpioDevice):
    """The passage beam: calls `on_passage(at)` each time a person breaks it.

    `pull_up` picks the internal resistor (None: external). `active_state`
    is the level that means "beam broken" (True: high); by default the level
    opposite the pull, which suits the usual open-collector receiver pulled
    up that reads low while interrupted. With ``pull_up=None`` it must be
    given.

    Debounce: a break counts as a new passage only when the beam had been
    clear for at least `bounce_s` before it, so the chatter of a coat edge
    at either end of a passage is one passage, not several. A beam already
    broken when the sensor opens must clear first. `at` is `clock()` when
    the break was reported.

    Whether a passage admits anyone is the lane's business (see
    `gated.gate.passage`); the sensor reports every passage.
    """

    def __init__(self, pin: Pin, *, pull_up: bool | None = True, active_state: bool | None = None,
                 bounce_s: float = 0.02, pin_factory: Factory | None = None,
                 on_passage: Callable[[float], object] | None = None,
                 clock: Clock = time.monotonic) -> None:
        what = f"passage sensor on pin {pin!r}"
        if active_state is None:
            if pull_up is None:
                raise DriverError(f"{what}: with no pull resistor (pull_up=None), "
                                  f"active_state must say which level means 'beam broken'")
            active_state = not pull_up
        self.pin = pin
        self.bounce_s = _seconds(f"{what} bounce_s", bounce_s, error=DriverError, allow_zero=True)
        super().__init__(what, threading.Lock())
        self._on_passage = on_passage
        self._clock = clock
        self.passage_count = 0
        self._input = _LevelInput(what, pin, pull_up=pull_up, asserted_high=bool(active_state),
                                  pin_factory=pin_factory, on_edge=self._edge)
        # None while the beam is broken; -inf: clear for as long as we know.
        self._clear_since: float | None = None if self._input.asserted else -math.inf

    @property
    def beam_broken(self) -> bool:
        return self._input.asserted

    def _release(self) -> None:
        self._input.close()

    def _edge(self, broken: bool) -> None:
        now = self._clock()
        with self._lock:
            if not broken:
                self._clear_since = now
                return
            clear_since, self._clear_since = self._clear_since, None
            if clear_since is None or now - clear_since < self.bounce_s:
                return
            self.passage_count += 1
        _call_safely(self._on_passage, "passage", now)


class EmergencyInput(GpioDevice):
    """The emergency (fire alarm / evacuation) contact.

    `on_change(asserted, at)` is called when emergency is asserted or
    cleared; `is_active` reads it now. If the input is already asserted when
    it opens, `on_change(True, at)` is called once from the constructor, so
    a gate that boots during an evacuation opens its lanes without having to
    ask.

    The defaults (``pull_up=True``, ``active_high=False``) suit a normally
    open contact to ground: closing it asserts. There, a cut wire reads as
    "no emergency". Where the emergency feed must itself fail safe, wire a
    normally closed contact and set ``active_high=True``: the pull-up then
    asserts emergency when the contact opens or the wire is cut.
    Each edge is reported as it comes; the lanes act on it immediately.
    """

    def __init__(self, pin: Pin, *, active_high: bool = False, pull_up: bool | None = True,
                 pin_factory: Factory | None = None,
                 on_change: Callable[[bool, float], object] | None = None,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(f"emergency input on pin {pin!r}", threading.Lock())
        self.pin = pin
        self._on_change = on_change
        self._clock = clock
        self._input = _LevelInput(self._what, pin, pull_up=pull_up,
                                  asserted_high=active_high, pin_factory=pin_factory,
                                  on_edge=self._edge)
        if self._input.asserted:
            _log.warning("emergency_asserted_at_start", pin=pin)
            _call_safely(self._on_change, "emergency", True, self._clock())

    @property
    def is_active(self) -> bool:
        return self._input.asserted

    def _release(self) -> None:
        self._input.close()

    def _edge(self, asserted: bool) -> None:
        at = self._clock()
        _log.warning("emergency_asserted" if asserted else "emergency_cleared", pin=self.pin)
        _call_safely(self._on_change, "emergency", asserted, at)
