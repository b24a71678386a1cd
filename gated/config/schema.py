"""The frozen result of loading a config: one dataclass per table, and the
limits and patterns the readers check values against."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

GPIO_MIN, GPIO_MAX = 0, 27  # BCM numbering, the 40-pin header of every Pi since the B+
UNIX_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL

DEFAULT_CATEGORY_COLOR = "#FFFFFF"

ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ID_DESC = "1 to 64 characters from A-Z a-z 0-9 _ . -"
COLOR_RE = re.compile(r"#[0-9A-Fa-f]{6}")
HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


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
    # a cache the registry has not confirmed for [uplink] stale_after_s: "admit" | "deny_static" | "deny"
    when_stale: str = "admit"

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
    #: Every registry instance the gate may use, tried in turn when one is unreachable (target is the first).
    targets: tuple[str, ...] = ()
    catchup_wait_s: float = 3.0  # after an unclean stop: how long single-entry admissions wait for the registry
    stale_after_s: float = 300.0  # unconfirmed by the registry this long: the cache is stale


@dataclass(frozen=True, slots=True)
class AdminSection:
    """Exactly one of `socket` or (`host`, `port`) is set; host is loopback."""

    socket: Path | None
    host: str | None
    port: int | None


@dataclass(frozen=True, slots=True)
class MetricsSection:
    """Where `/metrics` (Prometheus text) is served: loopback unless `allow_remote`."""

    host: str
    port: int
    allow_remote: bool


@dataclass(frozen=True, slots=True)
class EmergencySection:
    pin: int  # a GPIO, or a discrete input address on module `io`
    active_high: bool
    pull_up: bool
    io: str | None = None  # a [modules.NAME]; None: local GPIO


MODULE_KINDS = ("modbus-tcp", "modbus-rtu")
MODULE_ADDRESS_MAX = 65535  # Modbus coil and discrete input addresses


@dataclass(frozen=True, slots=True)
class IoModuleConfig:
    """A remote I/O module (`[modules.NAME]`): lanes with `io = "NAME"` have their relay, light and
    buzzer on its coils and their passage sensor on its discrete inputs (pin = address)."""

    name: str
    kind: str  # MODULE_KINDS
    unit: int
    poll_ms: int
    timeout_s: float
    host: str | None = None  # modbus-tcp
    port: int | None = None  # modbus-tcp
    device: str | None = None  # modbus-rtu: the serial device (RS-485 adapter)
    baud: int | None = None  # modbus-rtu
    parity: str | None = None  # modbus-rtu: "N" | "E" | "O"


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


# The badge printer a desk (handheld) lane may have: `gated.badge.printers` sends to it.
PRINTER_KINDS = ("cups", "brother-ql", "zpl", "file")
BADGE_SIZES = ("cr80", "a6", "4x3in", "62mm")  # gated.badge.layout.SIZES
BROTHER_QL_MODELS = (
    "QL-500", "QL-550", "QL-560", "QL-570", "QL-580N", "QL-650TD", "QL-700", "QL-710W",
    "QL-720NW", "QL-800", "QL-810W", "QL-820NWB", "QL-1050", "QL-1060N",
)  # fmt: skip  (brother_ql.models: the config is checked without importing the print extra)
ZEBRA_DPIS = (152, 203, 300, 600)
CUPS_QUEUE_RE = re.compile(r"[A-Za-z0-9_.@-]{1,127}")


@dataclass(frozen=True, slots=True)
class PrinterConfig:
    kind: str  # PRINTER_KINDS
    target: str  # cups: a queue; brother-ql: tcp://host[:port], usb://..., a device; zpl: tcp://host[:port] or a device; file: a folder
    size: str  # BADGE_SIZES ("62mm" for brother-ql)
    model: str | None = None  # brother-ql
    dpi: int | None = None  # zpl
    format: str = "png"  # file: what each badge is written as


@dataclass(frozen=True, slots=True)
class ScreenConfig:
    """The operator screen of a handheld lane (`[lane.screen]`): a web page the gate serves."""

    host: str  # loopback unless tls_cert, tls_key and pin_hash are all set
    port: int
    tls_cert: Path | None
    tls_key: Path | None
    pin_hash: str | None  # from `gated web hash-pin`; set: the page asks for the PIN
    session_minutes: float
    phone_lookups_per_min: int  # the last-4-digits search, per unit


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
    screen: ScreenConfig | None = None  # handheld lanes only
    printer: PrinterConfig | None = None  # handheld (desk) lanes only
    # handheld: a redemption while the registry cannot be asked: "refuse" | "local"
    # (default by [gate] offline_policy: strict refuses, lenient redeems from the local cache)
    offline_redemption: str = "refuse"
    # handheld: what an ok means. "entry" counts an entry (a door's handheld);
    # "check" only shows and redeems (a meal hall): no entry, passage or `inside` change
    purpose: str = "entry"
    io: str | None = None  # a [modules.NAME] the relay, light, buzzer and passage pins are on; None: local GPIO


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
    modules: Mapping[str, IoModuleConfig] = field(default_factory=lambda: MappingProxyType({}))  # [modules.NAME], by name
    metrics: MetricsSection | None = None  # None: no /metrics


