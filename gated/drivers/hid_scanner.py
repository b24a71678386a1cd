"""HID keyboard-wedge scanners, read through evdev.

A wedge scanner pretends to be a keyboard: it "types" the code and presses
Enter. Reading it through evdev with an exclusive grab keeps those keystrokes
away from the console and everything else, and gives us raw key codes, so the
keyboard layout the scanner was set up for is ours to interpret:
`KeyTranslator` does that as a pure, table-driven class. `EvdevKeyScanner`
owns the device (find by path or name, grab, reopen after unplug); `HidScanner`
turns its keystrokes into `Read`s. The keypad fallback reuses both.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence

import evdev
import structlog
from evdev import ecodes as e

from gated.drivers.base import DEFAULT_MAX_FRAME, Read, Scanner
from gated.errors import DriverError

log = structlog.get_logger()

ENTER = "\n"
BACKSPACE = "\b"
ESCAPE = "\x1b"

KEY_DOWN, KEY_UP, KEY_REPEAT = 1, 0, 2

# --- Layout tables ------------------------------------------------------------
# Each layout lists, for the four rows of an ISO keyboard, the character each
# key types plain and with Shift (NO_CHAR: the key types nothing), plus its
# AltGr characters. Only characters inside latin-1, to keep `Read.text`'s
# promise; dead keys are taken as the plain character they show.

_NUMBER_ROW = (e.KEY_GRAVE, e.KEY_1, e.KEY_2, e.KEY_3, e.KEY_4, e.KEY_5, e.KEY_6,
               e.KEY_7, e.KEY_8, e.KEY_9, e.KEY_0, e.KEY_MINUS, e.KEY_EQUAL)
_TOP_ROW = (e.KEY_Q, e.KEY_W, e.KEY_E, e.KEY_R, e.KEY_T, e.KEY_Y, e.KEY_U,
            e.KEY_I, e.KEY_O, e.KEY_P, e.KEY_LEFTBRACE, e.KEY_RIGHTBRACE)
_HOME_ROW = (e.KEY_A, e.KEY_S, e.KEY_D, e.KEY_F, e.KEY_G, e.KEY_H, e.KEY_J,
             e.KEY_K, e.KEY_L, e.KEY_SEMICOLON, e.KEY_APOSTROPHE, e.KEY_BACKSLASH)
_BOTTOM_ROW = (e.KEY_102ND, e.KEY_Z, e.KEY_X, e.KEY_C, e.KEY_V, e.KEY_B, e.KEY_N,
               e.KEY_M, e.KEY_COMMA, e.KEY_DOT, e.KEY_SLASH)
_ROWS = (_NUMBER_ROW, _TOP_ROW, _HOME_ROW, _BOTTOM_ROW)

NO_CHAR = "\x00"

_LAYOUT_ROWS: dict[str, tuple[tuple[str, str], ...]] = {
    "us": (
        ("`1234567890-=", "~!@#$%^&*()_+"),
        ("qwertyuiop[]", "QWERTYUIOP{}"),
        ("asdfghjkl;'\\", 'ASDFGHJKL:"|'),
        ("<zxcvbnm,./", ">ZXCVBNM<>?"),
    ),
    "uk": (
        ("`1234567890-=", "¬!\"£$%^&*()_+"),
        ("qwertyuiop[]", "QWERTYUIOP{}"),
        ("asdfghjkl;'#", "ASDFGHJKL:@~"),
        ("\\zxcvbnm,./", "|ZXCVBNM<>?"),
    ),
    "de": (
        ("^1234567890ß´", "°!\"§$%&/()=?`"),
        ("qwertzuiopü+", "QWERTZUIOPÜ*"),
        ("asdfghjklöä#", "ASDFGHJKLÖÄ'"),
        ("<yxcvbnm,.-", ">YXCVBNM;:_"),
    ),
    "fr": (
        ("²&é\"'(-è_çà)=", NO_CHAR + "1234567890°+"),
        ("azertyuiop^$", "AZERTYUIOP¨£"),
        ("qsdfghjklmù*", "QSDFGHJKLM%µ"),
        ("<wxcvbn,;:!", ">WXCVBN?./§"),
    ),
}

_LAYOUT_ALTGR: dict[str, dict[int, str]] = {
    "us": {},
    "uk": {e.KEY_GRAVE: "¦"},
    "de": {e.KEY_Q: "@", e.KEY_2: "²", e.KEY_3: "³", e.KEY_7: "{", e.KEY_8: "[",
           e.KEY_9: "]", e.KEY_0: "}", e.KEY_MINUS: "\\", e.KEY_RIGHTBRACE: "~",
           e.KEY_102ND: "|", e.KEY_M: "µ"},
    "fr": {e.KEY_2: "~", e.KEY_3: "#", e.KEY_4: "{", e.KEY_5: "[", e.KEY_6: "|",
           e.KEY_7: "`", e.KEY_8: "\\", e.KEY_9: "^", e.KEY_0: "@",
           e.KEY_MINUS: "]", e.KEY_EQUAL: "}"},
}

# Keys that type the same thing on every layout, with or without Shift.
_LAYOUT_FREE = {
    e.KEY_SPACE: " ", e.KEY_ENTER: ENTER, e.KEY_KPENTER: ENTER,
    e.KEY_BACKSPACE: BACKSPACE, e.KEY_ESC: ESCAPE,
    e.KEY_KP0: "0", e.KEY_KP1: "1", e.KEY_KP2: "2", e.KEY_KP3: "3", e.KEY_KP4: "4",
    e.KEY_KP5: "5", e.KEY_KP6: "6", e.KEY_KP7: "7", e.KEY_KP8: "8", e.KEY_KP9: "9",
    e.KEY_KPDOT: ".", e.KEY_KPSLASH: "/", e.KEY_KPASTERISK: "*",
    e.KEY_KPMINUS: "-", e.KEY_KPPLUS: "+",
}

_SHIFT_KEYS = frozenset({e.KEY_LEFTSHIFT, e.KEY_RIGHTSHIFT})
_ALTGR_KEY = e.KEY_RIGHTALT


def _build_keymap(layout: str) -> dict[int, tuple[str, str | None]]:
    keymap: dict[int, tuple[str, str | None]] = {}
    for keys, (plain, shifted) in zip(_ROWS, _LAYOUT_ROWS[layout], strict=True):
        for key, plain_char, shifted_char in zip(keys, plain, shifted, strict=True):
            keymap[key] = (plain_char, None if shifted_char == NO_CHAR else shifted_char)
    return keymap


_KEYMAPS = {layout: _build_keymap(layout) for layout in _LAYOUT_ROWS}
LAYOUTS = tuple(_KEYMAPS)


class KeyTranslator:
    """Turns evdev key events into text, the way the scanner's layout means them.

    Pure: feed it `(keycode, value)` pairs from EV_KEY events (value 1 press,
    0 release, 2 autorepeat). Shift and AltGr are tracked from their press and
    release; CapsLock is not (scanners send explicit Shift). Autorepeat is
    ignored: a scanner never holds a key, so a repeat can only duplicate a
    character. Codes are capped at `max_frame` characters with the same rule
    as `Framer`: the head is reported once, truncated, and the rest dropped
    up to Enter.
    """

    def __init__(self, layout: str = "us", max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if layout not in _KEYMAPS:
            raise DriverError(f"keyboard layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        if max_frame < 1:
            raise DriverError(f"max_frame must be at least 1, not {max_frame}")
        self.layout = layout
        self._keymap = _KEYMAPS[layout]
        self._altgr_map = _LAYOUT_ALTGR[layout]
        self._max_frame = max_frame
        self._shift_held: set[int] = set()
        self._altgr_held = False
        self._chars: list[str] = []
        self._discarding = False

    def key_text(self, keycode: int, value: int) -> str | None:
        """The character a key event types (ENTER, BACKSPACE, ESCAPE for those
        keys), or None for releases, modifiers and keys that type nothing."""
        if keycode in _SHIFT_KEYS:
            if value == KEY_DOWN:
                self._shift_held.add(keycode)
            elif value == KEY_UP:
                self._shift_held.discard(keycode)
            return None
        if keycode == _ALTGR_KEY:
            if value != KEY_REPEAT:
                self._altgr_held = value == KEY_DOWN
            return None
        if value != KEY_DOWN:
            return None
        if keycode in _LAYOUT_FREE:
            return _LAYOUT_FREE[keycode]
        if self._altgr_held:
            return self._altgr_map.get(keycode)
        plain, shifted = self._keymap.get(keycode, (None, None))
        return shifted if self._shift_held else plain

    def feed(self, keycode: int, value: int) -> tuple[str, bool] | None:
        """Take one key event; return `(code, truncated)` when it ends one."""
        char = self.key_text(keycode, value)
        if char is None or char in (BACKSPACE, ESCAPE):
            return None
        if char == ENTER:
            code = "".join(self._chars)
            self._chars.clear()
            if self._discarding:
                self._discarding = False
                return None
            return (code, False) if code else None
        if self._discarding:
            return None
        self._chars.append(char)
        if len(self._chars) > self._max_frame:
            head = "".join(self._chars[: self._max_frame])
            self._chars.clear()
            self._discarding = True
            return head, True
        return None

    def lose_track(self) -> None:
        """Events were dropped by the kernel: forget the partial code and the
        modifier state, which can no longer be trusted."""
        self._chars.clear()
        self._discarding = False
        self._shift_held.clear()
        self._altgr_held = False


# --- The device -------------------------------------------------------------


class EvdevKeyScanner(Scanner):
    """A key-typing input device (wedge scanner, keypad) read through evdev.

    `device` is either a path (`/dev/input/by-id/...-event-kbd` is stable
    across replugs) or, when it does not start with "/", a case-insensitive
    part of the device name; among matching devices the first one with an
    Enter key wins, since scanners often also expose a keyless "consumer
    control" device under the same name. The device is grabbed so its
    keystrokes reach no one else. Subclasses handle keys in `_on_key`.
    """

    def __init__(
        self,
        name: str,
        device: str,
        layout: str = "us",
        *,
        clock: Callable[[], float] = time.monotonic,
        reconnect_delay: float = 0.5,
        reconnect_delay_max: float = 5.0,
    ) -> None:
        super().__init__(
            name, clock=clock, reconnect_delay=reconnect_delay, reconnect_delay_max=reconnect_delay_max
        )
        KeyTranslator(layout)  # refuse a bad layout now, not at every reconnect
        self.device_spec = device
        self.layout = layout
        self._device: evdev.InputDevice | None = None

    def _open(self) -> None:
        device = evdev.InputDevice(self._find_path())
        try:
            device.grab()
        except OSError:
            device.close()
            raise
        self._device = device
        self._start_session()

    def _find_path(self) -> str:
        if self.device_spec.startswith("/"):
            return self.device_spec
        wanted = self.device_spec.casefold()
        for path in sorted(evdev.list_devices()):
            try:
                candidate = evdev.InputDevice(path)
            except OSError:
                continue
            try:
                keys = candidate.capabilities().get(e.EV_KEY, [])
                if wanted in candidate.name.casefold() and (e.KEY_ENTER in keys or e.KEY_KPENTER in keys):
                    return path
            finally:
                candidate.close()
        raise DriverError(f"no input device with a name containing {self.device_spec!r} and an Enter key")

    async def _read_chunk(self) -> Sequence[evdev.InputEvent]:
        device = self._device
        if device is None:
            raise EOFError("device closed")
        while True:
            batch = await device.async_read()
            try:
                events = list(batch)  # the read happens here; ENODEV once unplugged
            except BlockingIOError:
                continue
            if events:
                return events

    def _consume(self, events: Sequence[evdev.InputEvent]) -> None:
        for event in events:
            if event.type == e.EV_KEY:
                self._on_key(event.code, event.value)
            elif event.type == e.EV_SYN and event.code == e.SYN_DROPPED:
                log.warning("scanner_events_dropped", source=self.name)
                self._on_events_dropped()

    def _close_device(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            try:
                device.close()  # also releases the grab
            except OSError:
                pass  # an unplugged device can fail to close; it is gone either way

    def _start_session(self) -> None:
        """Reset per-connection state: nothing half-typed survives a replug."""

    @abc.abstractmethod
    def _on_key(self, keycode: int, value: int) -> None: ...

    def _on_events_dropped(self) -> None:
        """The kernel dropped events; partial input can no longer be trusted."""


class HidScanner(EvdevKeyScanner):
    """A keyboard-wedge scanner; calls `on_read(Read)` for each code ended by Enter."""

    def __init__(
        self,
        name: str,
        device: str,
        layout: str = "us",
        max_frame: int = DEFAULT_MAX_FRAME,
        *,
        on_read: Callable[[Read], None],
        clock: Callable[[], float] = time.monotonic,
        reconnect_delay: float = 0.5,
        reconnect_delay_max: float = 5.0,
    ) -> None:
        super().__init__(
            name, device, layout, clock=clock,
            reconnect_delay=reconnect_delay, reconnect_delay_max=reconnect_delay_max,
        )
        self._on_read = on_read
        self._max_frame = max_frame
        self._translator = KeyTranslator(layout, max_frame)

    def _start_session(self) -> None:
        self._translator = KeyTranslator(self.layout, self._max_frame)

    def _on_key(self, keycode: int, value: int) -> None:
        completed = self._translator.feed(keycode, value)
        if completed is not None:
            text, truncated = completed
            self._hand_over(self._on_read, Read(self.name, text, self._now(), truncated))

    def _on_events_dropped(self) -> None:
        self._translator.lose_track()
