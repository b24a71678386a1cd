"""The simulator's live console: the gate on one terminal screen, and its keys.

Two parts:

- `render(view, width, height)`: pure. A view (a dict built by the
  simulator from `gate.status()`, the pins, the journal and the crowd) in,
  the screen's lines out, each exactly `width` columns wide (ANSI colour
  codes aside). Tested without a terminal.
- `Terminal`: the tty around it. Full screen on the alternate screen,
  cbreak mode (keys arrive one by one, Ctrl-C still interrupts), redrawn in
  place (cursor home, each line cleared to its end, the rest of the screen
  cleared) so nothing flickers; the terminal is restored on every way out
  (quit, Ctrl-C, SIGTERM, an exception).

Plain ANSI escape codes: 24-bit colour for the lane light (the colour the
light's pins show), no curses.
"""

from __future__ import annotations

import os
import re
import sys
import termios
import tty
from collections.abc import Sequence
from typing import Any

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
DIM = "\x1b[2m"
REVERSE = "\x1b[7m"
GREEN = "\x1b[32m"
RED = "\x1b[31m"
YELLOW = "\x1b[33m"
CYAN = "\x1b[36m"
WHITE_ON_RED = "\x1b[1;97;41m"
BLACK_ON_GREEN = "\x1b[1;30;42m"

ALT_SCREEN_ON, ALT_SCREEN_OFF = "\x1b[?1049h", "\x1b[?1049l"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
HOME, CLEAR_EOL, CLEAR_EOS = "\x1b[H", "\x1b[K", "\x1b[J"

MIN_WIDTH, MIN_HEIGHT = 60, 16  # below this the screen says so instead of drawing

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

#: The keys, in the order the help line shows them (key, what).
KEYS: tuple[tuple[str, str], ...] = (
    ("g", "guest"), ("b", "badge"), ("m", "media"), ("s", "staff"), ("x", "leave"), ("f", "forged"),
    ("t", "expired"), ("n", "noise"), ("r", "revoked"), ("p", "tailgater"), ("e", "emergency"),
    ("o", "open"), ("a", "auto"), ("q", "quit"),
)


# --------------------------------------------------------------------------
# Text that knows its width on screen


def visible_len(text: str) -> int:
    return len(_ANSI_RE.sub("", text))


def fit(text: str, width: int) -> str:
    """`text` cut (with an ellipsis) or padded to exactly `width` visible columns; colours reset at the end."""
    if width <= 0:
        return ""
    overflow = visible_len(text) > width
    limit = width - 1 if overflow else width
    out: list[str] = []
    shown, pos, styled = 0, 0, False
    for match in _ANSI_RE.finditer(text):
        take = text[pos:match.start()][: max(0, limit - shown)]
        out.append(take)
        shown += len(take)
        out.append(match.group())  # zero width: kept even past the cut, so styles stay balanced
        styled = True
        pos = match.end()
    take = text[pos:][: max(0, limit - shown)]
    out.append(take)
    shown += len(take)
    if overflow:
        out.append("…")
        shown += 1
    return "".join(out) + (RESET if styled else "") + " " * (width - shown)


def rgb_block(rgb: Sequence[int] | None, width: int = 6) -> str:
    if rgb is None:
        return DIM + "(none)".ljust(width) + RESET
    r, g, b = (max(0, min(255, int(c))) for c in rgb)
    return f"\x1b[48;2;{r};{g};{b}m" + " " * width + RESET


def hex_color(rgb: Sequence[int] | None) -> str:
    if rgb is None:
        return "-"
    if not any(rgb):
        return "off    "
    return "#%02X%02X%02X" % tuple(int(c) for c in rgb)


def _reason(reason: str, width: int = 18) -> str:
    colour = GREEN if reason == "ok" else RED
    return colour + reason.ljust(width) + RESET


# --------------------------------------------------------------------------
# The screen


def _lane_column(lane: dict[str, Any], pins: dict[str, Any], recent: list[dict[str, Any]], rows: int, width: int) -> list[str]:
    lines = [
        f"{BOLD}{lane['id']}{RESET}  {lane['direction'].upper():<3} {lane['zone']}  {DIM}{lane['mode']}{RESET}",
    ]
    light = pins.get("light")
    relay = pins.get("relay_open")
    if relay is None:
        relay_text = DIM + "no relay" + RESET
    elif relay:
        relay_text = BLACK_ON_GREEN + " OPEN " + RESET
    else:
        relay_text = DIM + "locked" + RESET
    lines.append(f"light {rgb_block(light)} {hex_color(light)}   relay {relay_text}")
    buzzer = pins.get("buzzer")
    buzzer_text = DIM + "-" + RESET if buzzer is None else (YELLOW + BOLD + "BEEP" + RESET if buzzer else DIM + "quiet" + RESET)
    beam = pins.get("beam_broken")
    beam_text = DIM + "-" + RESET if beam is None else (YELLOW + BOLD + "BROKEN" + RESET if beam else DIM + "clear" + RESET)
    waiting = lane.get("pending_passages", 0)
    waiting_text = f"   {YELLOW}expecting {waiting} passage{'s' if waiting > 1 else ''}{RESET}" if waiting else ""
    lines.append(f"buzzer {buzzer_text}  beam {beam_text}{waiting_text}")
    lines.append(
        f"{GREEN}ok {lane['admitted']}{RESET}  {RED}denied {lane['denied']}{RESET}  "
        f"passed {lane['passages']}  not passed {lane['not_passed']}"
    )
    lines.append(DIM + "last decisions" + RESET)
    for d in reversed(recent):
        if len(lines) >= rows:
            break
        ticket = "-" if d.get("ticket") is None else f"#{d['ticket']}"
        name = d.get("name") or "" if width >= 60 else ""
        lines.append(f"{d['time']} {_reason(d['reason'])} {ticket:<7} {(d.get('category') or ''):<9} {name}".rstrip())
    while len(lines) < rows:
        lines.append("")
    return [fit(line, width) for line in lines[:rows]]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _gate_lines(view: dict[str, Any]) -> list[str]:
    gate = view["gate"]
    clock, uplink = gate["clock"], gate["uplink"]
    offset = clock.get("offset_s")
    offset_text = "no registry offset yet" if offset is None else f"offset {offset * 1000:+.0f} ms"
    clock_text = (GREEN + "trusted" + RESET) if clock.get("trusted") else (RED + BOLD + "NOT trusted" + RESET)
    backlog = gate.get("journal_backlog") or 0
    backlog_colour = "" if backlog < 1000 else YELLOW
    keys = ",".join(str(k) for k in gate.get("keys", [])) or RED + "none" + RESET
    line1 = (
        f"cache v{gate['cache_version']} {gate['cache_tickets']:,} tickets   keys {keys}   clock {clock_text} ({offset_text})   "
        f"journal backlog {backlog_colour}{backlog:,}{RESET}"
    )
    target = view.get("uplink_target") or "-"
    if uplink.get("connected"):
        up = GREEN + "connected" + RESET
    elif uplink.get("configured", True):
        up = YELLOW + "not connected" + RESET
    else:
        up = DIM + "not configured" + RESET
    registry = view.get("registry")
    registry_text = f"registry {registry}" if registry else DIM + "no registry" + RESET
    line2 = f"uplink {target} {up}   {registry_text}"
    return [line1, line2]


def _occupancy(occupancy: dict[str, Any] | None, bar_w: int = 12) -> str:
    if not occupancy:
        return ""
    inside, capacity = occupancy["inside"], occupancy["capacity"]
    filled = 0 if not capacity else min(bar_w, round(bar_w * inside / capacity))
    colour = RED if capacity and inside >= capacity else GREEN
    bar = colour + "█" * filled + RESET + DIM + "░" * (bar_w - filled) + RESET
    cap = f"/{capacity}" if capacity else ""
    return f"{occupancy['zone']} {bar} {inside}{cap} inside"


def _event_line(event: dict[str, Any]) -> str:
    style = {"ok": GREEN, "deny": RED, "warn": YELLOW, "alarm": WHITE_ON_RED, "crowd": "", "info": CYAN}.get(event.get("style", ""), "")
    lane = (event.get("lane") or "").ljust(6)
    text = event["text"]
    return f"{DIM}{event['time']}{RESET} {lane}{style}{text}{RESET if style else ''}"


def help_lines(width: int) -> list[str]:
    """The keys, packed into as few lines of `width` as they need."""
    lines: list[str] = []
    current, used = "", 0
    for key, what in KEYS:
        item_w = len(key) + 1 + len(what)
        if current and used + 2 + item_w > width:
            lines.append(current)
            current, used = "", 0
        if current:
            current += "  "
            used += 2
        current += f"{REVERSE}{BOLD}{key}{RESET} {what}"
        used += item_w
    lines.append(current)
    return lines


def render(view: dict[str, Any], width: int = 100, height: int = 30) -> list[str]:
    """The whole screen: `height` lines of exactly `width` visible columns.

    `view` keys: gate (gate.status()), pins ({lane: {relay_open, light,
    buzzer, beam_broken}}), recent ({lane: [{time, reason, ticket,
    category, name}], oldest first}), events ([{time, lane, text, style}],
    oldest first), clock ("HH:MM:SS"), auto (bool), rate (per minute),
    emergency_input (bool), registry (text or None), uplink_target,
    occupancy ({zone, inside, capacity}), notice (text or None).
    """
    width = max(MIN_WIDTH, width)
    height = max(MIN_HEIGHT, height)
    gate = view["gate"]
    lines: list[str] = []

    auto = (GREEN + f"auto {view.get('rate', 0):g}/min" + RESET) if view.get("auto") else (YELLOW + "auto off" + RESET)
    title = f"{REVERSE}{BOLD} gated sim {RESET}{REVERSE} gate {gate['gate_id']}  {view.get('clock', '')}  up {_duration(gate.get('uptime_s', 0))} {RESET}"
    lines.append(fit(f"{title}  {_occupancy(view.get('occupancy'))}   {auto}", width))
    if gate.get("emergency"):
        lines.append(fit(WHITE_ON_RED + " EMERGENCY: every lane is held open. Press e to release the emergency input. ".ljust(width) + RESET, width))
    elif view.get("notice"):
        lines.append(fit(YELLOW + view["notice"] + RESET, width))
    else:
        lines.append(fit(DIM + "emergency input off" + RESET, width))

    lanes = gate["lanes"]
    column_w = (width - 3) // 2
    lane_rows = 10 if height >= 28 else 7
    columns = [
        _lane_column(lane, view.get("pins", {}).get(lane["id"], {}), view.get("recent", {}).get(lane["id"], []), lane_rows, column_w)
        for lane in lanes[:2]
    ]
    while len(columns) < 2:
        columns.append([" " * column_w] * lane_rows)
    lines.append(DIM + "─" * width + RESET)
    for left, right in zip(*columns):
        lines.append(fit(f"{left} {DIM}│{RESET} {right}", width))
    lines.append(DIM + "─" * width + RESET)
    lines.extend(fit(line, width) for line in _gate_lines(view))
    if len(lanes) > 2:
        lines.append(fit(DIM + f"(+{len(lanes) - 2} more lanes not shown: {', '.join(l['id'] for l in lanes[2:])})" + RESET, width))
    lines.append(fit(DIM + "── events " + "─" * (width - 10) + RESET, width))

    keys = help_lines(width)
    room = height - len(lines) - len(keys)
    events = view.get("events", [])[-room:] if room > 0 else []
    lines.extend(fit(_event_line(e), width) for e in events)
    while len(lines) < height - len(keys):
        lines.append(" " * width)
    lines = lines[: height - len(keys)]
    lines.extend(fit(line, width) for line in keys)
    return lines


def frame(lines: list[str]) -> str:
    """The bytes of one redraw: home, each line cleared to its end, the rest cleared."""
    return HOME + "\r\n".join(line + CLEAR_EOL for line in lines) + CLEAR_EOS


# --------------------------------------------------------------------------
# The terminal


class Terminal:
    """The controlling terminal in cbreak mode on the alternate screen; restores it on exit.

    Use as a context manager. `restore()` is idempotent and also safe to
    call from a signal handler or atexit.
    """

    def __init__(self, fd_in: int | None = None, out=None) -> None:
        self.fd = sys.stdin.fileno() if fd_in is None else fd_in
        self.out = out or sys.stdout
        self._saved: list | None = None
        self._active = False

    def __enter__(self) -> Terminal:
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd, termios.TCSANOW)
        self._active = True
        self.write(ALT_SCREEN_ON + HIDE_CURSOR + HOME + CLEAR_EOS)
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        if not self._active:
            return
        self._active = False
        try:
            self.write(RESET + SHOW_CURSOR + ALT_SCREEN_OFF)
        finally:
            if self._saved is not None:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (BrokenPipeError, OSError):
            pass

    def size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.out.fileno())
            return size.columns, size.lines
        except OSError:
            return 100, 30

    def read_keys(self) -> str:
        try:
            data = os.read(self.fd, 64)
        except (BlockingIOError, InterruptedError):
            return ""
        return data.decode("utf-8", errors="ignore")
