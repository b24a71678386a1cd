"""GPIO outputs: the turnstile relay, the RGB lane light, the buzzer, and the
timing thread they share.

Each takes plain commands ("pulse the relay", "show this colour", "play the
deny beeps") and knows nothing of tickets: the lane turns decisions into
these commands.

Rules kept here (the pin and life-cycle rules are in `pins.py`):

- Every command returns at once. Timed output (relay pulses, blink patterns,
  beeps) runs on one background thread per device. A new command replaces
  the running pattern (light, buzzer) or extends the running pulse (relay);
  nothing queues behind anything.
- Outputs act in real time and always use the real clock
  (`time.monotonic()`, the daemon's clock), also for the times they report.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, Literal, TypeVar

import structlog
from gpiozero import RGBLED, DigitalOutputDevice
from gpiozero import Buzzer as _GpiozeroBuzzer
from gpiozero.pins import Factory

from gated.drivers.gpio.pins import GpioDevice, Pin, _call_safely, _open_device, _seconds
from gated.errors import DriverError

_log = structlog.get_logger(__name__)

RGB = tuple[float, float, float]
Color = str | Sequence[float]
SafeState = Literal["locked", "open"]

SAFE_STATES: tuple[SafeState, ...] = ("locked", "open")

#: How long close() waits for a device's timing thread before giving up on it.
#: The thread is a daemon thread and its output has already been set, so a
#: thread that does not stop in time cannot hold the process or the pin.
_THREAD_JOIN_TIMEOUT_S = 1.0


# --------------------------------------------------------------------------
# Timing


class _DeadlineTimer:
    """One background thread that calls `on_deadline(deadline)` when a
    movable deadline passes.

    It shares its owner's lock: the owner moves the deadline while holding
    it and `on_deadline` runs under it, so a command and an expiry never
    interleave (a pulse extended a microsecond before it would have ended
    either ends late or not at all, never both).
    """

    def __init__(self, lock: threading.RLock, on_deadline: Callable[[float], None],
                 name: str) -> None:
        self._wakeup = threading.Condition(lock)
        self._on_deadline = on_deadline
        self._deadline: float | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def deadline(self) -> float | None:
        return self._deadline

    def set(self, deadline: float | None) -> None:
        """Move the deadline (None: none). The caller holds the owner's lock."""
        self._deadline = deadline
        self._wakeup.notify()

    def stop(self) -> None:
        """Stop the thread. Call without holding the owner's lock, or the
        join can only time out."""
        with self._wakeup:
            self._stopping = True
            self._deadline = None
            self._wakeup.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(_THREAD_JOIN_TIMEOUT_S)

    def _run(self) -> None:
        with self._wakeup:
            while not self._stopping:
                if self._deadline is None:
                    self._wakeup.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._wakeup.wait(remaining)
                    continue
                passed, self._deadline = self._deadline, None
                try:
                    self._on_deadline(passed)
                except Exception:
                    _log.exception("gpio_timer_failed", thread=self._thread.name)


V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class _Step(Generic[V]):
    """One output value held for `seconds`; None holds it until the next command."""

    value: V
    seconds: float | None


class _StepPlayer(Generic[V]):
    """Plays a sequence of timed steps on one output; `play` replaces whatever
    is running. Steps are pulled lazily, so a long blink costs no memory.
    When the sequence runs out, the last value stays."""

    def __init__(self, lock: threading.RLock, write: Callable[[V], None], name: str) -> None:
        self._lock = lock
        self._write = write
        self._steps: Iterator[_Step[V]] = iter(())
        self._timer = _DeadlineTimer(lock, self._next_step, name)

    def play(self, steps: Iterable[_Step[V]]) -> None:
        with self._lock:
            self._steps = iter(steps)
            self._next_step(time.monotonic())

    def stop(self) -> None:
        self._timer.stop()

    def _next_step(self, started_at: float) -> None:
        # Each step starts when the previous one was due to end, not when the
        # thread woke up, so a blink pattern does not drift.
        step = next(self._steps, None)
        if step is None:
            self._timer.set(None)
            return
        self._write(step.value)
        self._timer.set(None if step.seconds is None else started_at + step.seconds)


# --------------------------------------------------------------------------
# Relay


class Relay(GpioDevice):
    """The turnstile relay: energized means the turnstile is released (open).

    Wiring is the same for every lane: energizing the relay releases the
    turnstile arm or door. In service the relay rests de-energized (locked)
    and `pulse()` energizes it for `pulse_s` (one person's passage).

    `safe_state` says where the relay goes when the lane stops
    (`to_safe_state()`, `close()`, daemon stop, watchdog):

    - ``"locked"`` (fail-secure, the usual turnstile): de-energized.
    - ``"open"`` (fail-safe, a lane on an emergency route): energized, so
      the lane stays open while the gate is not deciding.

    Software can hold a state only while the process runs. After the process
    exits or the Pi loses power the relay drops, so an emergency route must
    also be fail-safe in its wiring or lock hardware.

    Three demands decide the output, strongest first:

    1. the emergency hold (`hold_open()` until `release()`): energized,
       whatever else happens (pulses ending, `to_safe_state()`, `close()`);
    2. out of service (after `to_safe_state()` until `resume()`): the safe
       state; pulses are refused;
    3. in service: energized while a pulse runs, de-energized otherwise.

    A pulse while one runs extends it to end `seconds` from now if that is
    later (it never stacks durations, never shortens). `last_pulse_started`
    is the monotonic time the latest accepted pulse took effect, for
    scan-to-relay latency. `on_change(energized, at)` is called on every
    change of the output, under the relay's lock, from the thread that
    caused it (the caller's, or the relay's timer thread when a pulse ends):
    keep it short, and do not call `close()` from it.
    """

    def __init__(self, pin: Pin, *, active_high: bool = True, pulse_s: float = 0.8,
                 safe_state: SafeState = "locked", pin_factory: Factory | None = None,
                 on_change: Callable[[bool, float], object] | None = None) -> None:
        if safe_state not in SAFE_STATES:
            raise DriverError(
                f"relay on pin {pin!r}: safe_state must be 'locked' or 'open', got {safe_state!r}"
            )
        self.pulse_s = _seconds("relay pulse_s", pulse_s, error=DriverError)
        super().__init__(f"relay on pin {pin!r}", threading.RLock())
        self.safe_state: SafeState = safe_state
        self.pin = pin
        self.last_pulse_started: float | None = None
        self._on_change = on_change
        self._energized = False
        self._held_open = False
        self._in_service = True
        self._device = _open_device(
            f"relay on pin {pin!r}",
            lambda: DigitalOutputDevice(pin, active_high=active_high, initial_value=False,
                                        pin_factory=pin_factory),
        )
        self._pulse_timer = _DeadlineTimer(self._lock, self._pulse_ended, f"relay-{pin}")

    # Commands

    def pulse(self, seconds: float | None = None) -> bool:
        """Release the turnstile for `seconds` (default `pulse_s`), then lock.

        Returns at once. Returns False, and changes nothing, when the relay
        is out of service (after `to_safe_state()`); the caller must then not
        count an entry.
        """
        duration = self.pulse_s if seconds is None else _seconds("pulse seconds", seconds)
        with self._lock:
            self._check_open()
            if not self._in_service:
                _log.warning("relay_pulse_refused", pin=self.pin, reason="out_of_service")
                return False
            until = time.monotonic() + duration
            running_until = self._pulse_timer.deadline
            if running_until is None or until > running_until:
                self._pulse_timer.set(until)
            self._apply()
            self.last_pulse_started = time.monotonic()
            return True

    def hold_open(self) -> None:
        """Emergency: energize and stay energized until `release()`."""
        with self._lock:
            self._check_open()
            if not self._held_open:
                _log.warning("relay_held_open", pin=self.pin)
            self._held_open = True
            self._apply()

    def release(self) -> None:
        """End the emergency hold. Pulses granted during the hold are dropped,
        so the relay returns straight to rest (or to the safe state when out
        of service)."""
        with self._lock:
            self._check_open()
            if self._held_open:
                _log.info("relay_released", pin=self.pin)
            self._held_open = False
            self._pulse_timer.set(None)
            self._apply()

    def to_safe_state(self) -> None:
        """Take the lane out of service: cancel any pulse, go to the safe
        state, refuse pulses until `resume()`. An emergency hold stays."""
        with self._lock:
            self._check_open()
            self._in_service = False
            self._pulse_timer.set(None)
            self._apply()

    def resume(self) -> None:
        """Put the lane back in service after `to_safe_state()`: rest (locked)
        until the next pulse, unless held open."""
        with self._lock:
            self._check_open()
            self._in_service = True
            self._apply()

    # Closing: stop in the safe state

    def _park(self) -> None:
        self._in_service = False
        self._pulse_timer.set(None)
        self._apply()

    def _release(self) -> None:
        """A relay that must stay energized (safe_state "open", or an
        emergency hold) keeps its line claimed and driven until the process
        exits: releasing it would hand the relay to the pin's pull resistor,
        i.e. lock the lane. Any other relay is de-energized and its pin
        released."""
        self._pulse_timer.stop()
        # Closed, the relay takes no command and its timer has no deadline
        # left, so `_energized` is what `_park` left.
        if not self._energized:
            self._device.close()

    # State

    @property
    def is_energized(self) -> bool:
        """True while the relay is energized (turnstile released)."""
        return self._energized

    @property
    def is_held_open(self) -> bool:
        return self._held_open

    @property
    def in_service(self) -> bool:
        return self._in_service

    # Internals (the lock is held)

    def _wanted_energized(self) -> bool:
        if self._held_open:
            return True
        if not self._in_service:
            return self.safe_state == "open"
        return self._pulse_timer.deadline is not None

    def _apply(self) -> None:
        wanted = self._wanted_energized()
        if wanted == self._energized:
            return
        if wanted:
            self._device.on()
        else:
            self._device.off()
        self._energized = wanted
        _call_safely(self._on_change, "relay_change", wanted, time.monotonic())

    def _pulse_ended(self, _deadline: float) -> None:
        self._apply()


# --------------------------------------------------------------------------
# Lane light

_HEX_COLOR = re.compile(r"#([0-9A-Fa-f]{2})([0-9A-Fa-f]{2})([0-9A-Fa-f]{2})")

BLACK: RGB = (0.0, 0.0, 0.0)
RED: RGB = (1.0, 0.0, 0.0)
#: #FFBF00. Its green channel stays on when thresholded, so on/off lights
#: show the deny pattern as red/yellow rather than as steady red.
AMBER: RGB = (1.0, 0.75, 0.0)


def parse_color(color: Color) -> RGB:
    """`"#RRGGBB"` or an (r, g, b) sequence of 0..1 floats, as an RGB tuple.

    Raises ValueError naming the bad value.
    """
    expected = "a color is '#RRGGBB' or an (r, g, b) tuple of floats from 0 to 1"
    if isinstance(color, str):
        match = _HEX_COLOR.fullmatch(color.strip())
        if match is None:
            raise ValueError(f"{expected}, got {color!r}")
        red, green, blue = (int(channel, 16) / 255 for channel in match.groups())
        return (red, green, blue)
    try:
        channels = tuple(float(channel) for channel in color)
    except (TypeError, ValueError):
        raise ValueError(f"{expected}, got {color!r}") from None
    if len(channels) != 3 or not all(0.0 <= channel <= 1.0 for channel in channels):
        raise ValueError(f"{expected}, got {color!r}")
    return channels  # type: ignore[return-value]


class LaneLight(GpioDevice):
    """The lane's RGB light (gpiozero RGBLED): category colours, deny, idle.

    `show(color, seconds)` shows a colour, then returns to the idle colour
    after `seconds` (None: until the next command). `deny(seconds)` blinks
    red and amber, so a refusal never looks like the steady red of a staff
    lane. `idle()` shows the idle colour. Each command replaces the one
    running. `current_color` is what the pins show now.

    With ``pwm=False`` each channel is simply on or off (on from 0.5 up), so
    only eight colours exist: light blue (guests) and dark blue (media) differ
    in brightness and come out as white and blue. Lanes that must tell such
    colours apart need ``pwm=True`` (and PWM-capable pins: lgpio on a Pi,
    MockPWMPin in the simulator). ``active_high=False`` is for common-anode
    LEDs.
    """

    #: Half-period of the deny blink: each colour shows this long.
    DENY_BLINK_S = 0.15

    def __init__(self, red: Pin, green: Pin, blue: Pin, *, active_high: bool = True,
                 pwm: bool = False, idle_color: Color = BLACK,
                 pin_factory: Factory | None = None) -> None:
        self.pins = (red, green, blue)
        self.pwm = pwm
        try:
            self.idle_color = self._displayable(parse_color(idle_color))
        except ValueError as exc:
            raise DriverError(f"lane light idle_color: {exc}") from exc
        super().__init__(f"lane light on pins {self.pins!r}", threading.RLock())
        self._current = self.idle_color
        self._led = _open_device(
            f"lane light on pins {red!r}, {green!r}, {blue!r}",
            lambda: RGBLED(red, green, blue, active_high=active_high, pwm=pwm,
                           initial_value=self.idle_color, pin_factory=pin_factory),
        )
        self._player: _StepPlayer[RGB] = _StepPlayer(self._lock, self._write, f"light-{red}")

    def show(self, color: Color, seconds: float | None = None) -> None:
        """Show `color`; after `seconds` (if given) return to idle."""
        rgb = self._displayable(parse_color(color))
        if seconds is None:
            steps: list[_Step[RGB]] = [_Step(rgb, None)]
        else:
            steps = [_Step(rgb, _seconds("show seconds", seconds)), _Step(self.idle_color, None)]
        self._play(steps)

    def deny(self, seconds: float = 1.5) -> None:
        """Blink red/amber for `seconds`, then return to idle."""
        self._play(self._deny_steps(_seconds("deny seconds", seconds)))

    def idle(self) -> None:
        """Show the idle colour until the next command."""
        self._play([_Step(self.idle_color, None)])

    def _release(self) -> None:
        """Closing turns the light off and releases its pins."""
        self._player.stop()
        with self._lock:
            self._write(BLACK)
            self._led.close()

    @property
    def current_color(self) -> RGB:
        """The colour on the pins now (after on/off thresholding)."""
        return self._current

    def _deny_steps(self, seconds: float) -> Iterator[_Step[RGB]]:
        remaining = seconds
        for color in itertools.cycle((RED, AMBER)):
            if remaining <= 1e-9:
                break
            step_s = min(self.DENY_BLINK_S, remaining)
            yield _Step(self._displayable(color), step_s)
            remaining -= step_s
        yield _Step(self.idle_color, None)

    def _play(self, steps: Iterable[_Step[RGB]]) -> None:
        with self._lock:
            self._check_open()
            self._player.play(steps)

    def _displayable(self, rgb: RGB) -> RGB:
        if self.pwm:
            return rgb
        red, green, blue = (1.0 if channel >= 0.5 else 0.0 for channel in rgb)
        return (red, green, blue)

    def _write(self, rgb: RGB) -> None:
        self._led.value = rgb
        self._current = rgb


# --------------------------------------------------------------------------
# Buzzer

_BEEP_S = 0.12
_GAP_S = 0.1

_BUZZER_PATTERNS = MappingProxyType({
    "ok": (_Step(True, _BEEP_S), _Step(False, None)),
    "deny": (
        _Step(True, _BEEP_S), _Step(False, _GAP_S),
        _Step(True, _BEEP_S), _Step(False, _GAP_S),
        _Step(True, _BEEP_S), _Step(False, None),
    ),
    "alarm": (_Step(True, None),),
})


class Buzzer(GpioDevice):
    """The lane buzzer: `play("ok")` one short beep, `play("deny")` three
    short beeps, `play("alarm")` a continuous tone until `stop()`.

    A pattern replaces the one running, except that the alarm latches:
    while it sounds, "ok" and "deny" are ignored (play returns False), so a
    scan at the lane cannot silence it. Only `stop()` ends the alarm.
    """

    PATTERNS = tuple(_BUZZER_PATTERNS)

    def __init__(self, pin: Pin, *, active_high: bool = True,
                 pin_factory: Factory | None = None) -> None:
        super().__init__(f"buzzer on pin {pin!r}", threading.RLock())
        self.pin = pin
        self._sounding = False
        self._alarm = False
        self._device = _open_device(
            f"buzzer on pin {pin!r}",
            lambda: _GpiozeroBuzzer(pin, active_high=active_high, initial_value=False,
                                    pin_factory=pin_factory),
        )
        self._player: _StepPlayer[bool] = _StepPlayer(self._lock, self._write, f"buzzer-{pin}")

    def play(self, pattern: str) -> bool:
        """Start `pattern`; False if ignored because the alarm is sounding."""
        if pattern not in _BUZZER_PATTERNS:
            raise ValueError(
                f"unknown buzzer pattern {pattern!r}: expected one of {', '.join(self.PATTERNS)}"
            )
        with self._lock:
            self._check_open()
            if self._alarm and pattern != "alarm":
                return False
            self._alarm = pattern == "alarm"
            self._player.play(_BUZZER_PATTERNS[pattern])
            return True

    def stop(self) -> None:
        """Silence the buzzer, alarm included."""
        with self._lock:
            self._check_open()
            self._alarm = False
            self._player.play([_Step(False, None)])

    @property
    def is_sounding(self) -> bool:
        return self._sounding

    @property
    def alarm_active(self) -> bool:
        return self._alarm

    def _release(self) -> None:
        """Closing silences the buzzer and releases its pin."""
        self._player.stop()
        with self._lock:
            self._write(False)
            self._device.close()

    def _write(self, on: bool) -> None:
        if on:
            self._device.on()
        else:
            self._device.off()
        self._sounding = on
