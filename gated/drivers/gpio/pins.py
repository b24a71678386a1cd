"""The ground every GPIO driver stands on: the pin factory, the one device
base class, and the helpers the drivers share.

Rules kept here, for every driver in this package:

- GPIO goes only through gpiozero devices, each built with the pin factory it
  is given (`make_pin_factory`): gpiozero's MockFactory in tests and in the
  hardware simulator, a real backend on a Pi.
- `GpioDevice` owns the life cycle: `close()` is safe to call twice, `closed`
  says whether it ran, every device is a context manager, and a command on a
  closed device raises `DriverError`. A driver only says how it comes to rest
  (`_park`, under its lock) and what it lets go of (`_release`, without it).
- A callback that raises is logged and swallowed (`_call_safely`): it must
  never kill the thread that ends a relay pulse, nor the pin's event thread.
- Bad constructor arguments (they come from config) and unusable pins raise
  `DriverError` naming the device and pin (`_open_device`); bad arguments to a
  command raise `ValueError`.
"""

from __future__ import annotations

import importlib
import math
import threading
from collections.abc import Callable
from typing import Self

import structlog
from gpiozero.exc import GPIOZeroError
from gpiozero.pins import Factory

from gated.errors import DriverError

_log = structlog.get_logger(__name__)

Pin = int | str


# --------------------------------------------------------------------------
# Pin factory


def make_pin_factory(kind: str | None) -> Factory:
    """Return the gpiozero pin factory every driver of this gate is built on.

    `kind` comes from config:

    - ``"mock"``: gpiozero's MockFactory with PWM-capable mock pins (plain
      MockPin refuses PWM, which a lane light with ``pwm=True`` needs); for
      tests and the hardware simulator.
    - ``"lgpio"``, ``"rpigpio"``, ``"native"``: that backend, on a Pi.
    - ``None``: the first of lgpio, rpigpio, native that loads. Unlike
      gpiozero's own default this never falls back to mock pins and ignores
      ``GPIOZERO_PIN_FACTORY``: a gate whose GPIO library is broken must fail
      to start, not run turnstiles that move nothing.

    Raises `DriverError` if the kind is unknown or its backend cannot be
    loaded (library missing, not a Pi, no access to /dev/gpiochip*).
    """
    if kind is None:
        failures = []
        for candidate in ("lgpio", "rpigpio", "native"):
            try:
                return _load_pin_factory(candidate)
            except DriverError as exc:
                failures.append(str(exc))
        raise DriverError(
            "no GPIO backend could be loaded (set the pin factory to 'mock' to "
            "run without hardware): " + "; ".join(failures)
        )
    return _load_pin_factory(kind)


def _load_pin_factory(kind: str) -> Factory:
    if kind == "mock":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        return MockFactory(pin_class=MockPWMPin)
    loaders = {
        "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
        "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
        "native": ("gpiozero.pins.native", "NativeFactory"),
    }
    if kind not in loaders:
        raise DriverError(
            f"unknown pin factory {kind!r}: expected one of "
            f"'mock', 'lgpio', 'rpigpio', 'native'"
        )
    module_name, class_name = loaders[kind]
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)()
    except (ImportError, OSError, RuntimeError, GPIOZeroError) as exc:
        raise DriverError(f"pin factory {kind!r} is unavailable: {exc}") from exc


def _open_device(what: str, build: Callable[[], object]):
    """Build a gpiozero device, turning gpiozero's errors into a DriverError
    that names the device (pin invalid or in use, PWM unsupported, no factory).
    MockFactory reports a pin reused with another pin class as ValueError."""
    try:
        return build()
    except (GPIOZeroError, ValueError) as exc:
        raise DriverError(f"{what}: {exc}") from exc


# --------------------------------------------------------------------------
# The device base


class GpioDevice:
    """What every GPIO driver shares: close once, report `closed`, work as a
    context manager, refuse commands once closed.

    `what` names the device in errors ("relay on pin 17"). `lock` is the
    driver's own lock (its commands and timer threads hold it too), so a
    close never interleaves with a command.

    `close()` runs `_park()` under the lock, then marks the device closed,
    then runs `_release()` without the lock, so that a timing thread that
    needs the lock to finish can be joined. Each runs at most once.
    """

    def __init__(self, what: str, lock: threading.Lock | threading.RLock) -> None:
        self._what = what
        self._lock = lock
        self._closed = False

    def close(self) -> None:
        """Bring the device to rest and let go of its pins; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._park()
            self._closed = True
        self._release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _park(self) -> None:
        """Bring the outputs to where they stay once closed (lock held)."""

    def _release(self) -> None:
        """Stop threads and let go of pins (lock not held)."""

    def _check_open(self) -> None:
        if self._closed:
            raise DriverError(f"{self._what} is closed")


# --------------------------------------------------------------------------
# Shared helpers


def _seconds(name: str, value: object, *, error: type[Exception] = ValueError,
             allow_zero: bool = False) -> float:
    valid = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not valid:
        wanted = "zero or more" if allow_zero else "a positive number of"
        raise error(f"{name} must be {wanted} seconds, got {value!r}")
    return float(value)


def _call_safely(callback: Callable[..., object] | None, event: str, *args: object) -> None:
    """Run a user callback; log and swallow what it raises (see module rules)."""
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:
        _log.exception("gpio_callback_failed", gpio_event=event)
