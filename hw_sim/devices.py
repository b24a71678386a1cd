"""Virtual devices that feed the gate's real drivers (python-can's VirtualBus lesson).

Nothing here is a test mode inside a driver: the gate runs its production
code and these stand where the hardware would be.

- `VirtualSerialScanner`: a pty pair. The gate's config names a symlink to
  the slave side; the real `SerialScanner` opens it with pyserial like a
  USB-serial scanner. `scan(text)` writes the code and a CR to the master.
- `VirtualCamera`: a frame source (`read() -> (ok, frame)`, the shape of
  `cv2.VideoCapture`) handed to the real `Camera` driver through
  `Gate(frame_sources=...)`. It paces frames at the camera's fps and shows
  either the empty scene or a phone held up with a rendered QR code.
- `VirtualPins`: the gate's gpiozero `MockFactory`, read and driven as a
  technician would with a meter and a jumper wire: relay, light and buzzer
  outputs read back from the pins, the passage beam and the emergency
  contact driven at the levels their config says.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gated.config import Config, LaneConfig
from gated.bench.frames import FRAME_HEIGHT, FRAME_WIDTH, blank_frame, render_code

HOLD_S = 1.5  # how long a phone or badge stays in front of the camera


class VirtualSerialScanner:
    """A serial barcode scanner on a pty; `path` is the symlink the gate's config names."""

    def __init__(self, path: str | os.PathLike, suffix: bytes = b"\r") -> None:
        self.path = Path(path)
        self.suffix = suffix
        self.master, self.slave = os.openpty()
        os.set_blocking(self.master, False)  # a gate that stopped reading must not block the simulator
        self.path.unlink(missing_ok=True)
        self.path.symlink_to(os.ttyname(self.slave))
        self._closed = False

    def scan(self, text: str) -> bool:
        """Send one read (latin-1 bytes, as a scanner sends them) and the suffix; False if dropped."""
        if self._closed:
            return False
        data = text.encode("latin-1", errors="replace") + self.suffix
        try:
            written = os.write(self.master, data)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EIO):
                raise
            written = 0
        return written == len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.path.is_symlink():
            self.path.unlink(missing_ok=True)


class VirtualCamera:
    """A lane camera: the empty scene, or a code held up for `hold_s`, at `fps` frames a second.

    `hold_up(text)` may be called from any thread; the frame is rendered on
    the camera driver's capture thread (a render takes tens of ms), once per
    presentation, with a slightly different pose each time so the decoder
    sees a hand-held phone rather than a perfect test pattern.
    """

    def __init__(self, fps: float = 15.0, *, hold_s: float = HOLD_S, width: int = FRAME_WIDTH,
                 height: int = FRAME_HEIGHT, clock: Callable[[], float] = time.monotonic) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self.hold_s = hold_s
        self.width = width
        self.height = height
        self._clock = clock
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._blank = [blank_frame(seed=n, width=width, height=height) for n in range(4)]
        self._frame_no = 0
        self._next_at: float | None = None
        self._held: tuple[str, float] | None = None  # text, until
        self._rendered: tuple[str, int, np.ndarray] | None = None  # text, presentation, frame
        self._presentation = 0
        self.frames = 0

    def hold_up(self, text: str, seconds: float | None = None) -> None:
        """Show `text` as a QR code from now for `seconds` (default `hold_s`)."""
        with self._lock:
            self._presentation += 1
            self._held = (text, self._clock() + (self.hold_s if seconds is None else seconds))

    @property
    def holding(self) -> str | None:
        """The code in view now, or None."""
        with self._lock:
            held = self._held
        return held[0] if held is not None and self._clock() < held[1] else None

    def frame_now(self) -> np.ndarray:
        """The frame the camera sees now (no pacing): a fresh array the caller owns."""
        with self._lock:
            held, presentation = self._held, self._presentation
        if held is None or self._clock() >= held[1]:
            self._frame_no += 1
            return self._blank[self._frame_no % len(self._blank)].copy()
        text = held[0]
        cached = self._rendered
        if cached is None or cached[0] != text or cached[1] != presentation:
            cached = (text, presentation, self._render(text, presentation))
            self._rendered = cached
        return cached[2].copy()

    def _render(self, text: str, presentation: int) -> np.ndarray:
        # A deterministic, mild pose per presentation: well inside what the
        # decoder reads (see the standard set's limits), never a coin toss.
        rng = np.random.default_rng(presentation)
        return render_code(
            text,
            module_px=float(rng.uniform(4.5, 6.5)),
            angle_deg=float(rng.uniform(-20.0, 20.0)),
            tilt_deg=float(rng.uniform(0.0, 15.0)),
            tilt_axis_deg=float(rng.uniform(0.0, 180.0)),
            center=(self.width / 2 + float(rng.uniform(-40, 40)), self.height / 2 + float(rng.uniform(-20, 20))),
            blur_sigma=float(rng.uniform(0.0, 0.6)),
            noise_sigma=3.0,
            seed=presentation,
            width=self.width,
            height=self.height,
        )

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The next frame, paced at `fps`; (False, None) once closed."""
        if self._stopping.is_set():
            return False, None
        period = 1.0 / self.fps
        now = self._clock()
        if self._next_at is None or now - self._next_at > period:
            self._next_at = now  # late (or first): restart the cadence rather than burst
        wait = self._next_at - now
        if wait > 0 and self._stopping.wait(wait):
            return False, None
        self._next_at += period
        self.frames += 1
        return True, self.frame_now()

    def close(self) -> None:
        self._stopping.set()


# --------------------------------------------------------------------------
# Pins


@dataclass
class LanePins:
    """What the pins of one lane show now, and what happened since the last look."""

    lane: str
    relay_open: bool | None = None  # None: the lane has no relay
    light: tuple[int, int, int] | None = None  # 0..255 per channel, None: no light
    buzzer: bool | None = None  # sounding now or since the last look
    beam_broken: bool | None = None  # None: no passage sensor
    relay_openings: int = 0  # rising edges seen since the last look


@dataclass
class _Watched:
    pin: Any
    active_high: bool
    seen: int = 0  # how many entries of pin.states were looked at
    active: bool = False  # as of the last entry looked at


@dataclass
class _LaneWiring:
    config: LaneConfig
    relay_openings: int = 0
    watched: dict[str, _Watched] = field(default_factory=dict)


class VirtualPins:
    """The gate's MockFactory, read back and driven at the levels the config names.

    Build it after the gate started (the gate's drivers claim the pins).
    `sample()` returns a `LanePins` per lane; it reads each pin's recorded
    history, so a 120 ms beep or a short relay pulse between two looks is
    still seen. Driving inputs calls the drivers' callbacks synchronously,
    as a real edge would.
    """

    HISTORY_LIMIT = 5000  # MockPin.states grows forever; trimmed past this

    def __init__(self, factory: Any, config: Config) -> None:
        self.factory = factory
        self.config = config
        self._lock = threading.Lock()
        self._lanes: dict[str, _LaneWiring] = {}
        for lane in config.lanes:
            wiring = _LaneWiring(lane)
            if lane.relay is not None:
                wiring.watched["relay"] = self._watch(lane.relay.pin, lane.relay.active_high)
            if lane.buzzer is not None:
                wiring.watched["buzzer"] = self._watch(lane.buzzer.pin, lane.buzzer.active_high)
            self._lanes[lane.id] = wiring

    def _watch(self, pin_no: int, active_high: bool) -> _Watched:
        pin = self.factory.pin(pin_no)
        return _Watched(pin, active_high, seen=len(pin.states), active=bool(pin.state) == active_high)

    # ---- reading outputs ----

    def _level(self, pin_no: int, active_high: bool) -> float:
        value = float(self.factory.pin(pin_no).state)
        return value if active_high else 1.0 - value

    def _news(self, watched: _Watched, active_high: bool) -> tuple[int, bool]:
        """(rising edges, active at any point) since the last look, from the pin's history."""
        pin = watched.pin
        if len(pin.states) > self.HISTORY_LIMIT:
            pin.clear_states()  # starts a new history with the current state
            watched.seen = 0
        states = pin.states
        new = states[watched.seen:]
        watched.seen = len(states)
        rising, any_active = 0, False
        for entry in new:
            active = bool(entry.state) == active_high
            if active and not watched.active:
                rising += 1
            watched.active = active
            any_active = any_active or active
        return rising, any_active

    def sample(self) -> dict[str, LanePins]:
        out: dict[str, LanePins] = {}
        with self._lock:
            for lane_id, wiring in self._lanes.items():
                lc = wiring.config
                pins = LanePins(lane_id)
                if lc.relay is not None:
                    rising, _ = self._news(wiring.watched["relay"], lc.relay.active_high)
                    wiring.relay_openings += rising
                    pins.relay_openings = rising
                    pins.relay_open = self._level(lc.relay.pin, lc.relay.active_high) >= 0.5
                if lc.light is not None:
                    ah = lc.light.active_high
                    pins.light = tuple(  # type: ignore[assignment]
                        round(max(0.0, min(1.0, self._level(p, ah))) * 255) for p in (lc.light.red, lc.light.green, lc.light.blue)
                    )
                if lc.buzzer is not None:
                    _, sounded = self._news(wiring.watched["buzzer"], lc.buzzer.active_high)
                    pins.buzzer = sounded or self._level(lc.buzzer.pin, lc.buzzer.active_high) >= 0.5
                if lc.passage is not None:
                    pins.beam_broken = (self._level(lc.passage.pin, True) >= 0.5) == lc.passage.active_high
                out[lane_id] = pins
        return out

    def relay_openings(self) -> dict[str, int]:
        """Relay openings per lane since start (counted from the pin history at each `sample()`)."""
        self.sample()
        with self._lock:
            return {lane_id: w.relay_openings for lane_id, w in self._lanes.items() if w.config.relay is not None}

    # ---- driving inputs ----

    def _drive(self, pin_no: int, high: bool) -> None:
        pin = self.factory.pin(pin_no)
        pin.drive_high() if high else pin.drive_low()

    def set_beam(self, lane_id: str, broken: bool) -> None:
        """Break (a person in the turnstile) or clear the lane's passage beam."""
        passage = self._lanes[lane_id].config.passage
        if passage is None:
            raise ValueError(f"lane {lane_id} has no passage sensor")
        self._drive(passage.pin, broken == passage.active_high)

    def has_passage_sensor(self, lane_id: str) -> bool:
        return self._lanes[lane_id].config.passage is not None

    def set_emergency(self, asserted: bool) -> None:
        """Press (or release) the emergency contact."""
        e = self.config.emergency
        if e is None:
            raise ValueError("the config has no [emergency] input")
        self._drive(e.pin, asserted == e.active_high)

    @property
    def emergency_asserted(self) -> bool | None:
        e = self.config.emergency
        if e is None:
            return None
        return (self.factory.pin(e.pin).state >= 0.5) == e.active_high
