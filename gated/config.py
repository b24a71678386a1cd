"""Loading and checking the daemon's TOML config: all of it valid, or nothing.

The daemon refuses to start on a bad config and never runs half-configured,
so `load_config()` either returns a complete, frozen `Config` or raises one
`ConfigError` whose message is a single line a technician can act on:

    config/example.toml:42: lane[1].relay.pin: expected an integer GPIO pin 0..27, got "17"

Rules kept here (Klipper's configfile is the model):

- every value is read through a typed getter with bounds (`_Section`);
  unknown keys and tables are refused, naming the allowed ones;
- each GPIO pin and each device (serial port, input device, camera) is used
  once in the whole file; a clash names both places;
- a lane has at least one input (scanner, keypad or camera) and the outputs
  its mode needs: a turnstile a relay, a handheld no relay but a light or a
  buzzer to signal the operator; keypad entry is attended only;
- relative paths resolve against the config file's directory; files are
  checked for existence only with `check_files=True` (the daemon does, a
  technician checking a config on a laptop need not);
- `[[lane]]` indexes in messages count from 0, like `Config.lanes`;
- values and keys nest at most `MAX_NESTING` deep (arrays, inline tables,
  dotted keys): tomllib recurses into nested values and would end a deeper
  file with a RecursionError, so the depth is checked on the text first.

tomllib gives no line numbers, so `_Locator` re-reads the source text to map
each table and key to the line that defines it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from gated.errors import ConfigError

__all__ = [
    "AdminSection",
    "BuzzerConfig",
    "CameraConfig",
    "Config",
    "EmergencySection",
    "GateSection",
    "JournalSection",
    "LaneConfig",
    "LightConfig",
    "PassageConfig",
    "PolicySection",
    "RelayConfig",
    "ScannerConfig",
    "UplinkSection",
    "config_check_main",
    "describe",
    "load_config",
]

GPIO_MIN, GPIO_MAX = 0, 27  # BCM numbering, the 40-pin header of every Pi since the B+
UNIX_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
MAX_NESTING = 32  # a gate's config needs 3; tomllib gives up somewhere past 300

DEFAULT_COLORS: Mapping[str, str] = MappingProxyType(
    {"guest": "#87CEEB", "media": "#00008B", "staff": "#FF0000"}
)
DEFAULT_CATEGORY_COLOR = "#FFFFFF"

_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ID_DESC = "1 to 64 characters from A-Z a-z 0-9 _ . -"
_COLOR_RE = re.compile(r"#[0-9A-Fa-f]{6}")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


# --------------------------------------------------------------------------
# The frozen result
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateSection:
    id: str
    key_file: Path
    state_dir: Path
    offline_policy: str  # "strict" | "lenient"
    trust_local_clock: bool
    gpio: str  # "native" | "lgpio" | "rpigpio" | "mock"


@dataclass(frozen=True, slots=True)
class PolicySection:
    skew_steps: int
    debounce_s: float
    rate_burst: int
    rate_per_s: float
    anti_passback: bool
    colors: Mapping[str, str]  # category -> "#RRGGBB" (upper case), defaults merged in
    default_color: str  # for categories not in `colors`
    zones: Mapping[str, int]  # zone -> capacity, 0 = unlimited; empty = no capacities

    def color_for(self, category: str) -> str:
        return self.colors.get(category, self.default_color)


@dataclass(frozen=True, slots=True)
class JournalSection:
    path: Path
    retention_days: int


@dataclass(frozen=True, slots=True)
class UplinkSection:
    target: str  # "host:port", as gRPC takes it
    plaintext: bool
    ca: Path | None  # all three set unless plaintext, all three None if plaintext
    cert: Path | None
    key: Path | None
    reconnect_max_s: float


@dataclass(frozen=True, slots=True)
class AdminSection:
    """Exactly one of `socket` or (`host`, `port`) is set; host is loopback."""

    socket: Path | None
    host: str | None
    port: int | None


@dataclass(frozen=True, slots=True)
class EmergencySection:
    pin: int
    active_high: bool
    pull_up: bool


@dataclass(frozen=True, slots=True)
class ScannerConfig:
    kind: str  # "serial" | "hid" | "keypad"
    max_frame: int
    port: str | None = None  # serial: a device path or a pyserial URL ("loop://")
    baud: int | None = None  # serial
    suffix: str | None = None  # serial: "CR" | "LF" | "CRLF"
    device: Path | None = None  # hid/keypad: an evdev device path...
    name: str | None = None  # ...or the device's name (exactly one of the two)
    layout: str | None = None  # hid/keypad: "us" | "uk" | "de" | "fr"


@dataclass(frozen=True, slots=True)
class CameraConfig:
    source: str | int  # a device path or URL, or a V4L2 index
    width: int
    height: int
    fps: int
    decoder: str  # "zxing" | "opencv" | "pyzbar"


@dataclass(frozen=True, slots=True)
class RelayConfig:
    pin: int
    active_high: bool
    pulse_s: float
    safe_state: str  # "locked" | "open": where the relay goes on stop, crash or watchdog


@dataclass(frozen=True, slots=True)
class LightConfig:
    red: int
    green: int
    blue: int
    active_high: bool
    pwm: bool  # without PWM each channel is on or off, so colors are approximated


@dataclass(frozen=True, slots=True)
class BuzzerConfig:
    pin: int
    active_high: bool


@dataclass(frozen=True, slots=True)
class PassageConfig:
    pin: int
    pull_up: bool
    active_high: bool


@dataclass(frozen=True, slots=True)
class LaneConfig:
    id: str
    zone: str
    direction: str  # "in" | "out"
    mode: str  # "turnstile" | "handheld"
    categories: frozenset[str] | None  # None = every category
    passage_timeout_s: float | None  # set iff the lane has a passage sensor
    scanners: tuple[ScannerConfig, ...]
    camera: CameraConfig | None
    relay: RelayConfig | None  # set iff mode == "turnstile"
    light: LightConfig | None
    buzzer: BuzzerConfig | None
    passage: PassageConfig | None


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    gate: GateSection
    policy: PolicySection
    journal: JournalSection
    uplink: UplinkSection | None  # None = the gate runs offline
    admin: AdminSection
    emergency: EmergencySection | None
    lanes: tuple[LaneConfig, ...]


# --------------------------------------------------------------------------
# Where things are in the source text
# --------------------------------------------------------------------------

# A path names a table or key the way the parsed document nests it:
# ("lane", 1, "relay", "pin") is `pin` in `[lane.relay]` under the 2nd [[lane]].
_Path = tuple[str | int, ...]

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(path: _Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            shown = part if _BARE_KEY_RE.fullmatch(part) else json.dumps(part)
            out += f".{shown}" if out else shown
    return out


class _Locator:
    """Maps table and key paths to the line (1-based) that defines them.

    A line scanner, not a TOML parser: it runs on text tomllib has accepted
    (or, for a syntax error, up to the error), tracks multi-line strings and
    arrays so their contents are never mistaken for keys, and counts
    `[[array]]` headers per parent so `[lane.relay]` after the 2nd `[[lane]]`
    maps to ("lane", 1, "relay"). A key inside an inline table maps to the
    line of the inline table, which is the same line.

    It also finds the first line where values or keys nest deeper than
    `MAX_NESTING` (`too_deep`): it runs before tomllib for that, so it must
    (and does) take any text, one line at a time.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[_Path, int] = {}
        self.duplicate: tuple[_Path, int, int] | None = None  # path, first line, second line
        self._aot_last: dict[_Path, int] = {}
        self._table: _Path = ()
        self._in_string: str | None = None  # the closing delimiter of an open multi-line string
        self._depth = 0  # open brackets of a value spanning lines
        self.too_deep: int | None = None
        self._lineno = 0
        for lineno, line in enumerate(text.split("\n"), start=1):
            self._lineno = lineno
            try:
                self._line(lineno, line)
            except (IndexError, ValueError):
                continue  # unparseable line: only reachable on text tomllib refused
            if self.too_deep is not None:
                break  # the file is refused for that; the rest need not be mapped

    def line_of(self, path: _Path) -> int | None:
        """The line of `path`, or of its nearest enclosing table or key that has one."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def _register(self, path: _Path, lineno: int) -> None:
        first = self.lines.setdefault(path, lineno)
        if first != lineno and self.duplicate is None:
            self.duplicate = (path, first, lineno)

    def _line(self, lineno: int, line: str) -> None:
        pos = 0
        if self._in_string is not None:
            pos = _multiline_string_end(line, 0, self._in_string)
            if pos < 0:
                return
            self._in_string = None
            self._scan_value(line, pos)
            return
        if self._depth > 0:
            self._scan_value(line, 0)
            return
        stripped = line.lstrip()
        pos = len(line) - len(stripped)
        if not stripped or stripped.startswith("#"):
            return
        if stripped.startswith("[["):
            parts, end = _parse_key(line, pos + 2)
            if self._too_deep(len(parts)):
                return
            self._table = self._resolve(parts, append=True)
            self._register(self._table, lineno)
        elif stripped.startswith("["):
            parts, end = _parse_key(line, pos + 1)
            if self._too_deep(len(parts)):
                return
            self._table = self._resolve(parts, append=False)
            self._register(self._table, lineno)
        else:
            parts, end = _parse_key(line, pos)
            if self._too_deep(len(parts)):
                return
            key_path = self._table + tuple(parts)
            self._register(key_path, lineno)
            eq = line.index("=", end)
            self._scan_value(line, eq + 1)

    def _too_deep(self, depth: int) -> bool:
        if depth > MAX_NESTING and self.too_deep is None:
            self.too_deep = self._lineno
        return self.too_deep is not None

    def _resolve(self, parts: list[str], *, append: bool) -> _Path:
        path: _Path = ()
        for i, part in enumerate(parts):
            path += (part,)
            last = i == len(parts) - 1
            if last and append:
                index = self._aot_last.get(path, -1) + 1
                self._aot_last[path] = index
                path += (index,)
            elif path in self._aot_last:
                path += (self._aot_last[path],)
        return path

    def _scan_value(self, line: str, pos: int) -> None:
        """Advance over a value, tracking brackets and strings that continue past this line."""
        n = len(line)
        while pos < n:
            ch = line[pos]
            if ch == "#":
                return
            if ch in "\"'":
                delim = ch * 3
                if line.startswith(delim, pos):
                    pos = _multiline_string_end(line, pos + 3, delim)
                    if pos < 0:
                        self._in_string = delim
                        return
                    continue
                pos = _skip_string(line, pos)
                continue
            if ch in "[{":
                self._depth += 1
                self._too_deep(self._depth)
            elif ch in "]}":
                self._depth = max(0, self._depth - 1)
            pos += 1


def _multiline_string_end(line: str, pos: int, delim: str) -> int:
    """Where a multi-line string that is open at `pos` ends on this line, or -1."""
    while pos < len(line):
        if line[pos] == "\\" and delim == '"""':
            pos += 2
        elif line.startswith(delim, pos):
            end = pos + 3
            while end < len(line) and end < pos + 5 and line[end] == delim[0]:  # up to two quotes end the content
                end += 1
            return end
        else:
            pos += 1
    return -1


def _skip_string(line: str, pos: int) -> int:
    quote = line[pos]
    pos += 1
    while pos < len(line):
        ch = line[pos]
        if ch == "\\" and quote == '"':
            pos += 2
            continue
        if ch == quote:
            return pos + 1
        pos += 1
    return pos


def _parse_key(line: str, pos: int) -> tuple[list[str], int]:
    """Parse a dotted key at `pos`; returns its parts and the position after it."""
    parts: list[str] = []
    n = len(line)
    while True:
        while pos < n and line[pos] in " \t":
            pos += 1
        if line[pos] in "\"'":
            end = _skip_string(line, pos)
            raw = line[pos + 1 : end - 1]
            if line[pos] == '"':
                try:
                    raw = json.loads(f'"{raw}"')
                except ValueError:
                    pass  # a TOML-only escape (\e, \UXXXXXXXX): the raw text still names it
            parts.append(raw)
            pos = end
        else:
            match = _BARE_KEY_RE.match(line, pos)
            if match is None:
                raise ValueError("no key")
            parts.append(match.group())
            pos = match.end()
        while pos < n and line[pos] in " \t":
            pos += 1
        if pos < n and line[pos] == ".":
            pos += 1
            continue
        return parts, pos


# --------------------------------------------------------------------------
# Typed, bounded reads (Klipper's ConfigWrapper, for nested TOML tables)
# --------------------------------------------------------------------------

_REQUIRED: Any = object()


def _show(value: Any) -> str:
    """A value as the technician would have written it in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    return f"a {type(value).__name__}"  # dates and times


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def _header(path: _Path, array: bool = False) -> str:
    name = ".".join(str(part) for part in path if isinstance(part, str))
    return f"[[{name}]]" if array else f"[{name}]"


def _num(x: float) -> str:
    return f"{x:g}"


class _Context:
    """What every section of one load shares: the file, its lines, claimed resources."""

    def __init__(self, file: str, locator: _Locator, base_dir: Path, check_files: bool) -> None:
        self.file = file
        self.locator = locator
        self.base_dir = base_dir
        self.check_files = check_files
        self._claims: dict[str, _Path] = {}

    def fail(self, path: _Path, message: str) -> NoReturn:
        line = self.locator.line_of(path) or 1
        raise ConfigError(f"{self.file}:{line}: {_dotted(path)}: {message}")

    def claim(self, resource: str, path: _Path, advice: str) -> None:
        """Record that `path` uses `resource`; refuse a second user, naming the first."""
        first = self._claims.setdefault(resource, path)
        if first != path:
            where = self.locator.line_of(first)
            self.fail(path, f"{resource} is already used by {_dotted(first)} (line {where}); {advice}")

    def resolve(self, raw: str) -> Path:
        path = Path(raw)
        return path if path.is_absolute() else self.base_dir / path


class _Section:
    """One TOML table, read through typed getters that name the key on failure.

    `allowed` lists every key the table may hold; anything else is refused up
    front, before a misspelt key can surface as a confusing "missing" error.
    `allowed=None` is a free-form table (colors, zones) whose keys are data.
    """

    def __init__(
        self, ctx: _Context, path: _Path, data: dict[str, Any], allowed: Iterable[str] | None
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.data = data
        self._allowed = None if allowed is None else tuple(allowed)
        if self._allowed is not None:
            for key in data:
                if key not in self._allowed:
                    kind = "table" if _is_table(data[key]) else "key"
                    self.fail(key, f"unknown {kind}; allowed here: {', '.join(self._allowed)}")

    def fail(self, key: str | None, message: str) -> NoReturn:
        self.ctx.fail(self.path if key is None else self.path + (key,), message)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, default: Any, what: str) -> tuple[Any, bool]:
        if self._allowed is not None and key not in self._allowed:
            raise KeyError(f"{_dotted(self.path + (key,))} is read but not in the allowed keys")
        if key in self.data:
            return self.data[key], True
        if default is _REQUIRED:
            self.fail(key, f"required key is missing: expected {what}")
        return default, False

    def get_int(
        self,
        key: str,
        default: Any = _REQUIRED,
        minval: int | None = None,
        maxval: int | None = None,
        what: str = "an integer",
    ) -> Any:
        if minval is not None and maxval is not None:
            what = f"{what} {minval}..{maxval}"
        elif minval is not None:
            what = f"{what} >= {minval}"
        elif maxval is not None:
            what = f"{what} <= {maxval}"
        value, present = self._get(key, default, what)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected {what}, got {_show(value)}")
        if (minval is not None and value < minval) or (maxval is not None and value > maxval):
            self.fail(key, f"expected {what}, got {_show(value)}")
        return value

    def get_float(
        self,
        key: str,
        default: Any = _REQUIRED,
        minval: float | None = None,
        maxval: float | None = None,
        above: float | None = None,
    ) -> Any:
        bounds = []
        if above is not None:
            bounds.append(f"> {_num(above)}")
        if minval is not None and maxval is not None and above is None:
            what = f"a number {_num(minval)}..{_num(maxval)}"
        else:
            if minval is not None:
                bounds.append(f">= {_num(minval)}")
            if maxval is not None:
                bounds.append(f"<= {_num(maxval)}")
            what = "a number" + (" " + " and ".join(bounds) if bounds else "")
        value, present = self._get(key, default, what)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"expected {what}, got {_show(value)}")
        number = float(value)
        if (
            number != number  # nan
            or (minval is not None and number < minval)
            or (maxval is not None and number > maxval)
            or (above is not None and number <= above)
        ):
            self.fail(key, f"expected {what}, got {_show(value)}")
        return number

    def get_str(
        self,
        key: str,
        default: Any = _REQUIRED,
        choices: Iterable[str] | None = None,
        pattern: re.Pattern[str] | None = None,
        what: str = "a non-empty string",
    ) -> Any:
        if choices is not None:
            choices = tuple(choices)
            what = "one of " + ", ".join(json.dumps(c) for c in choices)
        value, present = self._get(key, default, what)
        if not present:
            return value
        if (
            not isinstance(value, str)
            or not value
            or (choices is not None and value not in choices)
            or (pattern is not None and not pattern.fullmatch(value))
        ):
            self.fail(key, f"expected {what}, got {_show(value)}")
        return value

    def get_bool(self, key: str, default: Any = _REQUIRED) -> Any:
        value, present = self._get(key, default, "true or false")
        if present and not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_show(value)}")
        return value

    def get_path(self, key: str, default: Any = _REQUIRED, must_exist: bool = False) -> Any:
        """A file path, resolved against the config file's directory.

        With `must_exist`, the file is checked only when the load asked for
        `check_files`: the daemon does, a config check on a laptop need not.
        """
        if key not in self.data and default is not _REQUIRED:
            return None if default is None else self.ctx.resolve(str(default))
        path = self.ctx.resolve(self.get_str(key, what="a path"))
        if must_exist and self.ctx.check_files and not path.is_file():
            self.fail(key, f"file not found: {path}")
        return path

    def get_str_list(
        self, key: str, default: Any = _REQUIRED, pattern: re.Pattern[str] | None = None,
        what: str = "a non-empty string",
    ) -> Any:
        full = f"a non-empty array of strings ({what} each)"
        value, present = self._get(key, default, full)
        if not present:
            return value
        if not isinstance(value, list) or not value:
            self.fail(key, f"expected {full}, got {_show(value)}")
        for item in value:
            if not isinstance(item, str) or (pattern is not None and not pattern.fullmatch(item)):
                self.fail(key, f"expected {full}, got {_show(item)} in the array")
        return tuple(value)

    def get_pin(self, key: str, default: Any = _REQUIRED) -> Any:
        pin = self.get_int(key, default, GPIO_MIN, GPIO_MAX, what="an integer GPIO pin")
        if pin is not None:
            self.ctx.claim(f"GPIO {pin}", self.path + (key,), "each pin drives or reads one thing")
        return pin

    def section(self, key: str, allowed: Iterable[str] | None, required: bool = False) -> _Section | None:
        what = f"a table {_header(self.path + (key,))}"
        value, present = self._get(key, None, what)
        if not present:
            if required:
                self.fail(key, f"required table {_header(self.path + (key,))} is missing")
            return None
        if not isinstance(value, dict):
            self.fail(key, f"expected {what}, got {_show(value)}")
        return _Section(self.ctx, self.path + (key,), value, allowed)

    def section_or_empty(self, key: str, allowed: Iterable[str]) -> _Section:
        """A table whose keys all have defaults: absent reads as empty."""
        return self.section(key, allowed) or _Section(self.ctx, self.path + (key,), {}, allowed)

    def sections(self, key: str, allowed: Iterable[str]) -> list[_Section]:
        """An array of tables, `[[key]]`; absent means empty."""
        value, present = self._get(key, None, "")
        if not present:
            return []
        header = _header(self.path + (key,), array=True)
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.fail(key, f"expected an array of tables {header}, got {_show(value)}")
        return [_Section(self.ctx, self.path + (key, i), item, allowed) for i, item in enumerate(value)]


# --------------------------------------------------------------------------
# The schema, one reader per table
# --------------------------------------------------------------------------

_TOP_TABLES = ("gate", "policy", "journal", "uplink", "admin", "emergency", "lane")


def _read_gate(root: _Section) -> GateSection:
    sec = root.section(
        "gate",
        ("id", "key_file", "state_dir", "offline_policy", "trust_local_clock", "gpio"),
        required=True,
    )
    assert sec is not None
    return GateSection(
        # Journal record ids are "<gate id>:<seq>", so the id must not hold a colon.
        id=sec.get_str("id", pattern=_ID_RE, what=f"an id of {_ID_DESC}"),
        key_file=sec.get_path("key_file", must_exist=True),
        state_dir=sec.get_path("state_dir", "/var/lib/gated"),
        offline_policy=sec.get_str("offline_policy", "strict", choices=("strict", "lenient")),
        trust_local_clock=sec.get_bool("trust_local_clock", False),
        gpio=sec.get_str("gpio", "native", choices=("native", "lgpio", "rpigpio", "mock")),
    )


def _read_color(sec: _Section, key: str) -> str:
    return sec.get_str(key, pattern=_COLOR_RE, what='a color "#RRGGBB"').upper()


def _read_policy(root: _Section) -> PolicySection:
    sec = root.section_or_empty(
        "policy",
        ("skew_steps", "debounce_s", "rate_burst", "rate_per_s", "anti_passback", "colors", "zones"),
    )

    colors = dict(DEFAULT_COLORS)
    default_color = DEFAULT_CATEGORY_COLOR
    color_sec = sec.section("colors", None)
    if color_sec is not None:
        for category in color_sec.data:
            if category == "default":
                default_color = _read_color(color_sec, category)
                continue
            if not _ID_RE.fullmatch(category):
                color_sec.fail(category, f"a category name is {_ID_DESC}")
            colors[category] = _read_color(color_sec, category)

    zones: dict[str, int] = {}
    zone_sec = sec.section("zones", None)
    if zone_sec is not None:
        for zone in zone_sec.data:
            if not _ID_RE.fullmatch(zone):
                zone_sec.fail(zone, f"a zone name is {_ID_DESC}")
            zones[zone] = zone_sec.get_int(
                zone, minval=0, maxval=1_000_000, what="a capacity (0 = unlimited)"
            )

    return PolicySection(
        skew_steps=sec.get_int("skew_steps", 1, 0, 10),
        debounce_s=sec.get_float("debounce_s", 2.0, 0.0, 60.0),
        rate_burst=sec.get_int("rate_burst", 10, 1, 1000),
        rate_per_s=sec.get_float("rate_per_s", 5.0, maxval=1000.0, above=0.0),
        anti_passback=sec.get_bool("anti_passback", True),
        colors=MappingProxyType(colors),
        default_color=default_color,
        zones=MappingProxyType(zones),
    )


def _read_journal(root: _Section, gate: GateSection) -> JournalSection:
    sec = root.section_or_empty("journal", ("path", "retention_days"))
    return JournalSection(
        path=sec.get_path("path", gate.state_dir / "journal.db"),
        retention_days=sec.get_int("retention_days", 14, 1, 3650),
    )


def _split_host_port(sec: _Section, key: str, value: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; the host is a name or an IP address."""
    expected = f'expected "host:port" (IPv6 as "[::1]:port"), got {_show(value)}'
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            sec.fail(key, expected)
    else:
        host, sep, port = value.rpartition(":")
        if not _HOSTNAME_RE.fullmatch(host):
            sec.fail(key, expected)
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        sec.fail(key, f"{expected}; the port is 1..65535")
    return host, int(port)


def _read_uplink(root: _Section) -> UplinkSection | None:
    sec = root.section("uplink", ("target", "plaintext", "ca", "cert", "key", "reconnect_max_s"))
    if sec is None:
        return None
    target = sec.get_str("target", what='"host:port" of the registry')
    _split_host_port(sec, "target", target)
    plaintext = sec.get_bool("plaintext", False)
    tls_keys = ("ca", "cert", "key")
    if plaintext:
        for key in tls_keys:
            if key in sec:
                sec.fail(key, "not used with plaintext = true; remove it, or set plaintext = false for TLS")
        ca = cert = key_path = None
    else:
        for key in tls_keys:
            if key not in sec:
                sec.fail(
                    key,
                    "required for TLS: set ca, cert and key "
                    "(or plaintext = true to run without TLS, on a trusted network only)",
                )
        ca = sec.get_path("ca", must_exist=True)
        cert = sec.get_path("cert", must_exist=True)
        key_path = sec.get_path("key", must_exist=True)
    return UplinkSection(
        target=target,
        plaintext=plaintext,
        ca=ca,
        cert=cert,
        key=key_path,
        reconnect_max_s=sec.get_float("reconnect_max_s", 30.0, 1.0, 3600.0),
    )


def _read_admin(root: _Section) -> AdminSection:
    sec = root.section("admin", ("socket", "address"))
    if sec is None or ("socket" not in sec and "address" not in sec):
        return AdminSection(socket=Path("/run/gated/admin.sock"), host=None, port=None)
    if "socket" in sec and "address" in sec:
        sec.fail("address", "set socket or address, not both")
    if "socket" in sec:
        socket = sec.get_path("socket")
        if len(str(socket).encode()) > UNIX_SOCKET_PATH_MAX:
            sec.fail(
                "socket",
                f"a unix socket path is at most {UNIX_SOCKET_PATH_MAX} bytes, "
                f"{socket} is {len(str(socket).encode())}",
            )
        return AdminSection(socket=socket, host=None, port=None)
    address = sec.get_str("address", what='"host:port" on loopback')
    host, port = _split_host_port(sec, "address", address)
    if not is_loopback_host(host):
        # The admin service has no authentication: only this machine may reach it.
        sec.fail(
            "address",
            f"must be a loopback address (127.0.0.1, [::1] or localhost), got {_show(address)}; "
            "the admin service has no authentication",
        )
    return AdminSection(socket=None, host=host, port=port)


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback IP address (127.0.0.0/8, ::1): only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_emergency(root: _Section) -> EmergencySection | None:
    sec = root.section("emergency", ("pin", "active_high", "pull_up"))
    if sec is None:
        return None
    return EmergencySection(
        pin=sec.get_pin("pin"),
        active_high=sec.get_bool("active_high", False),
        pull_up=sec.get_bool("pull_up", True),
    )


_SCANNER_KEYS: dict[str, tuple[str, ...]] = {
    "serial": ("kind", "port", "baud", "suffix", "max_frame"),
    "hid": ("kind", "device", "name", "layout", "max_frame"),
    "keypad": ("kind", "device", "name", "layout", "max_frame"),
}
_ALL_SCANNER_KEYS = tuple(dict.fromkeys(k for keys in _SCANNER_KEYS.values() for k in keys))
_BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


def _read_scanner(sec: _Section, mode: str) -> ScannerConfig:
    kind = sec.get_str("kind", choices=tuple(_SCANNER_KEYS))
    for key in sec.data:
        if key not in _SCANNER_KEYS[kind]:
            sec.fail(key, f"not used by {kind} scanners; they take: {', '.join(_SCANNER_KEYS[kind])}")
    max_frame = sec.get_int("max_frame", 512, 16, 65536)
    if kind == "serial":
        port = sec.get_str("port", what='a serial device path or a pyserial URL ("loop://")')
        if "://" not in port:  # URLs (loop://, socket://) are not devices two lanes could share
            port = str(sec.ctx.resolve(port))
            sec.ctx.claim(f"serial port {port}", sec.path + ("port",), "one scanner per port")
        baud = sec.get_int("baud", 9600, what="a baud rate")
        if baud not in _BAUD_RATES:
            sec.fail("baud", f"expected one of {', '.join(map(str, _BAUD_RATES))}, got {baud}")
        return ScannerConfig(
            kind=kind,
            max_frame=max_frame,
            port=port,
            baud=baud,
            suffix=sec.get_str("suffix", "CR", choices=("CR", "LF", "CRLF")),
        )

    if kind == "keypad" and mode != "handheld":
        # Typed ticket numbers are a fallback for an operator who has the
        # attendee in front of them; unattended, anyone could type numbers.
        sec.fail("kind", "keypad entry is attended only; put the keypad on a handheld lane")
    if ("device" in sec) == ("name" in sec):
        sec.fail(
            None if "device" not in sec else "name",
            f'{kind} scanners need device = "/dev/input/by-id/..." or name = "..." (one of them)',
        )
    device = sec.get_path("device", None)
    name = sec.get_str("name", None, what="an input device name")
    which = f"input device {device}" if device is not None else f'input device named "{name}"'
    claimed_by = sec.path + ("device" if device is not None else "name",)
    sec.ctx.claim(which, claimed_by, "one scanner per device")
    return ScannerConfig(
        kind=kind,
        max_frame=max_frame,
        device=device,
        name=name,
        layout=sec.get_str("layout", "us", choices=("us", "uk", "de", "fr")),
    )


def _read_camera(lane: _Section) -> CameraConfig | None:
    sec = lane.section("camera", ("source", "width", "height", "fps", "decoder"))
    if sec is None:
        return None
    source: str | int
    raw = sec.data.get("source")
    if isinstance(raw, int) and not isinstance(raw, bool):
        source = sec.get_int("source", minval=0, maxval=63, what="a camera index")
    else:
        source = sec.get_str("source", what="a device path, a URL or a camera index 0..63")
        if "://" not in source:
            source = str(sec.ctx.resolve(source))
    sec.ctx.claim(f"camera {source}", sec.path + ("source",), "one lane per camera")
    return CameraConfig(
        source=source,
        width=sec.get_int("width", 640, 160, 4096),
        height=sec.get_int("height", 480, 120, 4096),
        fps=sec.get_int("fps", 15, 1, 120),
        decoder=sec.get_str("decoder", "zxing", choices=("zxing", "opencv", "pyzbar")),
    )


_LANE_KEYS = (
    "id", "zone", "direction", "mode", "categories", "passage_timeout_s",
    "scanner", "camera", "relay", "light", "buzzer", "passage",
)  # fmt: skip


def _read_lane(sec: _Section) -> LaneConfig:
    lane_id = sec.get_str("id", pattern=_ID_RE, what=f"an id of {_ID_DESC}")
    zone = sec.get_str("zone", pattern=_ID_RE, what=f"a zone name of {_ID_DESC}")
    direction = sec.get_str("direction", choices=("in", "out"))
    mode = sec.get_str("mode", "turnstile", choices=("turnstile", "handheld"))
    categories = sec.get_str_list("categories", None, _ID_RE, "a category name")
    scanners = tuple(_read_scanner(s, mode) for s in sec.sections("scanner", _ALL_SCANNER_KEYS))
    camera = _read_camera(sec)
    if not scanners and camera is None:
        sec.fail(
            None,
            "a lane needs at least one input: a [[lane.scanner]] (serial, hid or keypad) or a [lane.camera]",
        )

    relay = light = buzzer = passage = None
    relay_sec = sec.section("relay", ("pin", "active_high", "pulse_s", "safe_state"))
    if relay_sec is not None:
        if mode == "handheld":
            relay_sec.fail(None, "handheld lanes need no relay; turnstile lanes need one")
        relay = RelayConfig(
            pin=relay_sec.get_pin("pin"),
            active_high=relay_sec.get_bool("active_high", True),
            pulse_s=relay_sec.get_float("pulse_s", 0.8, 0.1, 30.0),
            safe_state=relay_sec.get_str("safe_state", "locked", choices=("locked", "open")),
        )
    elif mode == "turnstile":
        sec.fail(
            "relay",
            "turnstile lanes need a [lane.relay] to release the turnstile; handheld lanes need none",
        )

    light_sec = sec.section("light", ("red", "green", "blue", "active_high", "pwm"))
    if light_sec is not None:
        light = LightConfig(
            red=light_sec.get_pin("red"),
            green=light_sec.get_pin("green"),
            blue=light_sec.get_pin("blue"),
            active_high=light_sec.get_bool("active_high", True),
            pwm=light_sec.get_bool("pwm", True),
        )
    buzzer_sec = sec.section("buzzer", ("pin", "active_high"))
    if buzzer_sec is not None:
        buzzer = BuzzerConfig(
            pin=buzzer_sec.get_pin("pin"), active_high=buzzer_sec.get_bool("active_high", True)
        )
    if mode == "handheld" and light is None and buzzer is None:
        sec.fail(
            None,
            "a handheld lane needs an output to signal the operator: a [lane.light] or a [lane.buzzer]",
        )

    passage_sec = sec.section("passage", ("pin", "pull_up", "active_high"))
    if passage_sec is not None:
        if mode == "handheld":
            passage_sec.fail(None, "handheld lanes have no passage sensor; only turnstile lanes do")
        pull_up = passage_sec.get_bool("pull_up", True)
        passage = PassageConfig(
            pin=passage_sec.get_pin("pin"),
            pull_up=pull_up,
            # gpiozero's convention: a pulled-up input is active low, and the reverse.
            active_high=passage_sec.get_bool("active_high", not pull_up),
        )
    passage_timeout_s = None
    if passage is not None:
        passage_timeout_s = sec.get_float("passage_timeout_s", 8.0, 1.0, 120.0)
    elif "passage_timeout_s" in sec:
        sec.fail(
            "passage_timeout_s",
            "only a turnstile lane with a [lane.passage] sensor waits for a passage; "
            "add the sensor or remove this key",
        )

    return LaneConfig(
        id=lane_id,
        zone=zone,
        direction=direction,
        mode=mode,
        categories=None if categories is None else frozenset(categories),
        passage_timeout_s=passage_timeout_s,
        scanners=scanners,
        camera=camera,
        relay=relay,
        light=light,
        buzzer=buzzer,
        passage=passage,
    )


def _read_lanes(root: _Section, policy: PolicySection) -> tuple[LaneConfig, ...]:
    lane_secs = root.sections("lane", _LANE_KEYS)
    if not lane_secs:
        root.fail("lane", "at least one [[lane]] is required")
    lanes = []
    seen: dict[str, _Path] = {}
    for sec in lane_secs:
        lane = _read_lane(sec)
        first = seen.setdefault(lane.id, sec.path + ("id",))
        if first != sec.path + ("id",):
            sec.fail(
                "id",
                f'lane id "{lane.id}" is already used by {_dotted(first)} '
                f"(line {root.ctx.locator.line_of(first)}); lane ids must be unique",
            )
        if policy.zones and lane.zone not in policy.zones:
            # With capacities declared, an unlisted zone is almost surely a typo.
            sec.fail(
                "zone",
                f"zone {_show(lane.zone)} is not in [policy.zones]; "
                f"known zones: {', '.join(policy.zones)}",
            )
        lanes.append(lane)
    return tuple(lanes)


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------


def _syntax_error(file: str, text: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    """tomllib's message, "Invalid value (at line 2, column 5)", in the one-line format."""
    message = str(exc)
    if message.startswith(("Cannot overwrite", "Cannot declare")):
        # tomllib does not say which key was defined twice (and for some
        # cases not where); the locator sees both definitions.
        duplicate = _Locator(text).duplicate
        if duplicate is not None:
            dup_path, first, second = duplicate
            return ConfigError(
                f"{file}:{second}: {_dotted(dup_path)}: defined twice (first on line {first})"
            )
    match = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if match:
        line = int(match.group(1))
        detail = f"{message[: match.start()]} (column {match.group(2)})"
    else:
        line = len(text.rstrip().split("\n"))
        detail = message.replace(" (at end of document)", " at the end of the file")
    return ConfigError(f"{file}:{line}: toml: {detail[:1].lower()}{detail[1:]}")


def load_config(path: str | Path, *, check_files: bool = False) -> Config:
    """Read, parse and validate a config file: a complete `Config`, or `ConfigError`.

    `check_files=True` also requires the key file and TLS files to exist; the
    daemon passes it, so does `gated config check` on the gate itself.
    """
    file = str(path)
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{file}:{line}: toml: the file is not valid UTF-8") from None
    locator = _Locator(text)
    if locator.too_deep is not None:
        raise ConfigError(
            f"{file}:{locator.too_deep}: toml: arrays, inline tables or dotted keys nest more than {MAX_NESTING} deep"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(file, text, exc) from None

    ctx = _Context(file, locator, path.resolve().parent, check_files)
    root = _Section(ctx, (), data, _TOP_TABLES)
    gate = _read_gate(root)
    policy = _read_policy(root)
    journal = _read_journal(root, gate)
    uplink = _read_uplink(root)
    admin = _read_admin(root)
    emergency = _read_emergency(root)
    lanes = _read_lanes(root, policy)
    return Config(
        path=path,
        gate=gate,
        policy=policy,
        journal=journal,
        uplink=uplink,
        admin=admin,
        emergency=emergency,
        lanes=lanes,
    )


def describe(config: Config) -> str:
    """One line saying what the config will run: what `gated config check` prints."""
    lanes = ", ".join(f"{lane.id}: {lane.direction} {lane.mode}" for lane in config.lanes)
    count = len(config.lanes)
    if config.uplink is None:
        uplink = "offline (no uplink)"
    else:
        uplink = f"uplink {config.uplink.target} ({'plaintext' if config.uplink.plaintext else 'TLS'})"
    return (
        f"gate {config.gate.id}, {count} lane{'s' if count != 1 else ''} ({lanes}), "
        f"{uplink}, gpio {config.gate.gpio}"
    )


def config_check_main(path: str | Path, *, check_files: bool = False) -> int:
    """`gated config check FILE`: 0 and a summary on stdout, or 2 and one line on stderr."""
    try:
        config = load_config(path, check_files=check_files)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"OK: {path}: {describe(config)}")
    return 0
