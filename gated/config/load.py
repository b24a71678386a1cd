"""One reader per table of the schema, and the entry points: `load_config`,
and `describe` (what `gated config check` prints)."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from types import MappingProxyType

from gated.config.getters import Context, Section, show
from gated.config.locator import MAX_NESTING, Locator, TomlPath, dotted
from gated.config.schema import (
    BADGE_SIZES,
    BROTHER_QL_MODELS,
    CUPS_QUEUE_RE,
    PRINTER_KINDS,
    ZEBRA_DPIS,
    COLOR_RE,
    DEFAULT_CATEGORY_COLOR,
    HOSTNAME_RE,
    ID_DESC,
    ID_RE,
    MODULE_ADDRESS_MAX,
    MODULE_KINDS,
    UNIX_SOCKET_PATH_MAX,
    AdminSection,
    BuzzerConfig,
    CameraConfig,
    Config,
    EmergencySection,
    GateSection,
    IoModuleConfig,
    JournalSection,
    LaneConfig,
    LightConfig,
    MetricsSection,
    PassageConfig,
    PolicySection,
    PrinterConfig,
    RelayConfig,
    ScannerConfig,
    ScreenConfig,
    UplinkSection,
)
from gated.errors import ConfigError
from gated.validation.policy import DEFAULT_COLORS
from gated.web.security import is_loopback

# --------------------------------------------------------------------------
# The schema, one reader per table
# --------------------------------------------------------------------------

_TOP_TABLES = ("gate", "policy", "journal", "uplink", "admin", "emergency", "lane", "modules", "metrics")


def _read_gate(root: Section) -> GateSection:
    sec = root.section(
        "gate",
        ("id", "key_file", "state_dir", "offline_policy", "trust_local_clock", "gpio"),
        required=True,
    )
    assert sec is not None
    return GateSection(
        # Journal record ids are "<gate id>:<seq>", so the id must not hold a colon.
        id=sec.get_str("id", pattern=ID_RE, what=f"an id of {ID_DESC}"),
        key_file=sec.get_path("key_file", must_exist=True),
        state_dir=sec.get_path("state_dir", "/var/lib/gated"),
        offline_policy=sec.get_str("offline_policy", "strict", choices=("strict", "lenient")),
        trust_local_clock=sec.get_bool("trust_local_clock", False),
        gpio=sec.get_str("gpio", "native", choices=("native", "lgpio", "rpigpio", "mock")),
    )


def _read_color(sec: Section, key: str) -> str:
    return sec.get_str(key, pattern=COLOR_RE, what='a color "#RRGGBB"').upper()


def _read_policy(root: Section) -> PolicySection:
    sec = root.section_or_empty(
        "policy",
        ("skew_steps", "debounce_s", "rate_burst", "rate_per_s", "anti_passback", "colors", "zones", "when_stale"),
    )

    colors = dict(DEFAULT_COLORS)
    default_color = DEFAULT_CATEGORY_COLOR
    color_sec = sec.section("colors", None)
    if color_sec is not None:
        for category in color_sec.data:
            if category == "default":
                default_color = _read_color(color_sec, category)
                continue
            if not ID_RE.fullmatch(category):
                color_sec.fail(category, f"a category name is {ID_DESC}")
            colors[category] = _read_color(color_sec, category)

    zones: dict[str, int] = {}
    zone_sec = sec.section("zones", None)
    if zone_sec is not None:
        for zone in zone_sec.data:
            if not ID_RE.fullmatch(zone):
                zone_sec.fail(zone, f"a zone name is {ID_DESC}")
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
        when_stale=sec.get_str("when_stale", "admit", choices=("admit", "deny_static", "deny")),
    )


def _read_journal(root: Section, gate: GateSection) -> JournalSection:
    sec = root.section_or_empty("journal", ("path", "retention_days"))
    return JournalSection(
        path=sec.get_path("path", gate.state_dir / "journal.db"),
        retention_days=sec.get_int("retention_days", 14, 1, 3650),
    )


def _split_host_port(sec: Section, key: str, value: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; the host is a name or an IP address."""
    expected = f'expected "host:port" (IPv6 as "[::1]:port"), got {show(value)}'
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            sec.fail(key, expected)
    else:
        host, sep, port = value.rpartition(":")
        if not HOSTNAME_RE.fullmatch(host):
            sec.fail(key, expected)
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        sec.fail(key, f"{expected}; the port is 1..65535")
    return host, int(port)


def _uplink_targets(sec: Section) -> tuple[str, ...]:
    """`target` ("host:port", or several comma-separated) or `targets` (an array): the registry
    instances a gate may use, in the order it tries them."""
    if "target" in sec and "targets" in sec:
        sec.fail("targets", "give target or targets, not both")
    if "targets" in sec:
        key, targets = "targets", sec.get_str_list("targets", what='"host:port" of a registry instance')
    else:
        key = "target"
        text = sec.get_str("target", what='"host:port" of the registry (several: comma-separated, or targets = [...])')
        targets = tuple(part.strip() for part in text.split(","))
    for target in targets:
        _split_host_port(sec, key, target)
    if len(set(targets)) != len(targets):
        sec.fail(key, f"an address is listed twice: {', '.join(targets)}")
    return targets


def _read_uplink(root: Section) -> UplinkSection | None:
    sec = root.section("uplink", ("target", "targets", "plaintext", "ca", "cert", "key", "reconnect_max_s", "catchup_wait_s",
                                  "stale_after_s"))
    if sec is None:
        return None
    targets = _uplink_targets(sec)
    target = targets[0]
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
        targets=targets,
        plaintext=plaintext,
        ca=ca,
        cert=cert,
        key=key_path,
        reconnect_max_s=sec.get_float("reconnect_max_s", 30.0, 1.0, 3600.0),
        catchup_wait_s=sec.get_float("catchup_wait_s", 3.0, 0.0, 60.0),
        stale_after_s=sec.get_float("stale_after_s", 300.0, 1.0, 7 * 86400.0),
    )


def _read_admin(root: Section) -> AdminSection:
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
    if not is_loopback(host):
        # The admin service has no authentication: only this machine may reach it.
        sec.fail(
            "address",
            f"must be a loopback address (127.0.0.1, [::1] or localhost), got {show(address)}; "
            "the admin service has no authentication",
        )
    return AdminSection(socket=None, host=host, port=port)


def _read_metrics(root: Section) -> MetricsSection | None:
    """`[metrics] address`: loopback, or any address with `allow_remote = true`. The figures
    hold no secrets but show the traffic at the door, so leaving the machine is a choice said
    out loud (a venue's Prometheus on the staff network), never a default."""
    sec = root.section("metrics", ("address", "allow_remote"))
    if sec is None:
        return None
    address = sec.get_str("address", what='"host:port" (loopback unless allow_remote = true)')
    host, port = _split_host_port(sec, "address", address)
    allow_remote = sec.get_bool("allow_remote", False)
    if not allow_remote and not is_loopback(host):
        sec.fail(
            "address",
            f"must be a loopback address (127.0.0.1, [::1] or localhost), got {show(address)}; "
            "set allow_remote = true to let another machine scrape the gate's traffic figures",
        )
    return MetricsSection(host=host, port=port, allow_remote=allow_remote)


def _read_emergency(root: Section, modules: dict[str, IoModuleConfig]) -> EmergencySection | None:
    sec = root.section("emergency", ("pin", "active_high", "pull_up", "io"))
    if sec is None:
        return None
    io = _read_io(sec, modules)
    if io is not None:
        # A module's discrete input reads 1 while its contact is closed; its input circuit is fixed.
        _refuse_pull_up(sec, io)
        return EmergencySection(pin=_read_pin(sec, "pin", io, "input"), active_high=sec.get_bool("active_high", True),
                                pull_up=False, io=io)
    return EmergencySection(
        pin=sec.get_pin("pin"),
        active_high=sec.get_bool("active_high", False),
        pull_up=sec.get_bool("pull_up", True),
    )


# --------------------------------------------------------------------------
# Remote I/O modules: [modules.NAME], and the pins lanes put on them

_MODULE_KEYS: dict[str, tuple[str, ...]] = {
    "modbus-tcp": ("kind", "host", "port", "unit", "poll_ms", "timeout_s"),
    "modbus-rtu": ("kind", "device", "baud", "parity", "unit", "poll_ms", "timeout_s"),
}
_RTU_BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


def _read_modules(root: Section) -> dict[str, IoModuleConfig]:
    tables = root.section("modules", None)
    if tables is None:
        return {}
    modules = {}
    for name in tables.data:
        if not ID_RE.fullmatch(name):
            tables.fail(name, f"a module name is {ID_DESC}")
        sec = tables.section(name, tuple(dict.fromkeys(k for keys in _MODULE_KEYS.values() for k in keys)))
        assert sec is not None
        kind = sec.get_str("kind", choices=MODULE_KINDS)
        for key in sec.data:
            if key not in _MODULE_KEYS[kind]:
                sec.fail(key, f"not used by {kind} modules; they take: {', '.join(_MODULE_KEYS[kind])}")
        common = dict(
            name=name, kind=kind, unit=sec.get_int("unit", 1, 0, 255, what="a Modbus unit id"),
            poll_ms=sec.get_int("poll_ms", 20, 5, 1000, what="milliseconds between input polls"),
            timeout_s=sec.get_float("timeout_s", 0.5, 0.05, 10.0),
        )
        if kind == "modbus-tcp":
            host = sec.get_str("host", pattern=HOSTNAME_RE, what="the module's host name or IPv4 address")
            port = sec.get_int("port", 502, 1, 65535, what="a TCP port")
            sec.ctx.claim(f"io module at {host}:{port} unit {common['unit']}", sec.path + ("host",),
                          "one [modules] table per module")
            modules[name] = IoModuleConfig(**common, host=host, port=port)
        else:
            device = str(sec.ctx.resolve(sec.get_str("device", what="a serial device path (the RS-485 adapter)")))
            baud = sec.get_int("baud", 19200, what="a baud rate")
            if baud not in _RTU_BAUD_RATES:
                sec.fail("baud", f"expected one of {', '.join(map(str, _RTU_BAUD_RATES))}, got {baud}")
            parity = sec.get_str("parity", "N", choices=("N", "E", "O"))
            sec.ctx.claim(f"io module on {device} unit {common['unit']}", sec.path + ("device",),
                          "one [modules] table per module")
            modules[name] = IoModuleConfig(**common, device=device, baud=baud, parity=parity)
    return modules


def _read_io(sec: Section, modules: dict[str, IoModuleConfig]) -> str | None:
    """`io = "NAME"`: the table's pins are on that module (absent: local GPIO)."""
    io = sec.get_str("io", None, pattern=ID_RE, what="the name of a [modules.NAME] table")
    if io is not None and io not in modules:
        known = ", ".join(modules) if modules else "none is defined"
        sec.fail("io", f"no [modules.{io}] table; known modules: {known}")
    return io


def _read_pin(sec: Section, key: str, io: str | None, space: str) -> int:
    """A GPIO pin, or with `io` a coil or discrete input address on that module (`space`)."""
    if io is None:
        return sec.get_pin(key)
    address = sec.get_int(key, minval=0, maxval=MODULE_ADDRESS_MAX, what=f"a {space} address on module {io}")
    sec.ctx.claim(f"module {io} {space} {address}", sec.path + (key,), f"each {space} drives or reads one thing")
    return address


def _refuse_pull_up(sec: Section, io: str) -> None:
    if "pull_up" in sec:
        sec.fail("pull_up", f"module {io}'s inputs have no pull resistor to choose; remove it "
                            "(active_high says which level means asserted)")


_SCANNER_KEYS: dict[str, tuple[str, ...]] = {
    "serial": ("kind", "port", "baud", "suffix", "max_frame"),
    "hid": ("kind", "device", "name", "layout", "max_frame"),
    "keypad": ("kind", "device", "name", "layout", "max_frame"),
}
_ALL_SCANNER_KEYS = tuple(dict.fromkeys(k for keys in _SCANNER_KEYS.values() for k in keys))
_BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


def _read_scanner(sec: Section, mode: str) -> ScannerConfig:
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


def _read_camera(lane: Section) -> CameraConfig | None:
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
    "id", "zone", "direction", "mode", "purpose", "categories", "passage_timeout_s", "offline_redemption",
    "scanner", "camera", "relay", "light", "buzzer", "passage", "screen", "printer", "io",
)  # fmt: skip

_PRINTER_KEYS = {
    "cups": ("kind", "target", "size"),
    "brother-ql": ("kind", "target", "size", "model"),
    "zpl": ("kind", "target", "size", "dpi"),
    "file": ("kind", "target", "size", "format"),
}
_TCP_TARGET_RE = re.compile(r"tcp://[A-Za-z0-9.-]{1,253}(?::([0-9]{1,5}))?")


def _read_printer(lane: Section, mode: str) -> PrinterConfig | None:
    sec = lane.section("printer", tuple(dict.fromkeys(k for keys in _PRINTER_KEYS.values() for k in keys)))
    if sec is None:
        return None
    if mode != "handheld":
        sec.fail(None, "a badge printer belongs at a desk: only handheld lanes have a [lane.printer]")
    kind = sec.get_str("kind", choices=PRINTER_KINDS)
    for key in sec.data:
        if key not in _PRINTER_KEYS[kind]:
            sec.fail(key, f"not used by {kind} printers; they take: {', '.join(_PRINTER_KEYS[kind])}")
    if kind == "cups":
        target = sec.get_str("target", pattern=CUPS_QUEUE_RE, what="a CUPS queue name (lpstat -p lists them)")
    elif kind == "file":
        target = str(sec.ctx.resolve(sec.get_str("target", what="a folder to write badges into")))
    else:
        target = sec.get_str("target", what="tcp://host[:port] or a device path")
        if target.startswith("tcp://"):
            tcp = _TCP_TARGET_RE.fullmatch(target)
            if tcp is None or not 1 <= int(tcp.group(1) or 9100) <= 65535:
                sec.fail("target", f"expected tcp://host[:port], got {show(target)}")
        elif not (kind == "brother-ql" and target.startswith("usb://")):
            target = str(sec.ctx.resolve(target.removeprefix("file://")))
        sec.ctx.claim(f"printer {target}", sec.path + ("target",), "one lane per printer")
    size = sec.get_str("size", "62mm" if kind == "brother-ql" else "cr80", choices=BADGE_SIZES)
    if kind == "brother-ql" and size != "62mm":
        sec.fail("size", f'Brother QL printers print on 62 mm tape: size = "62mm", not {show(size)}')
    model = sec.get_str("model", "QL-820NWB", choices=BROTHER_QL_MODELS) if kind == "brother-ql" else None
    dpi = None
    if kind == "zpl":
        dpi = sec.get_int("dpi", 203, what="the printer's dots per inch")
        if dpi not in ZEBRA_DPIS:
            sec.fail("dpi", f"expected one of {', '.join(map(str, ZEBRA_DPIS))}, got {dpi}")
    file_format = sec.get_str("format", "png", choices=("png", "pdf", "zpl", "brother-ql")) if kind == "file" else "png"
    return PrinterConfig(kind=kind, target=target, size=size, model=model, dpi=dpi, format=file_format)


def _read_lane(sec: Section, offline_policy: str = "strict", modules: dict[str, IoModuleConfig] | None = None) -> LaneConfig:
    lane_id = sec.get_str("id", pattern=ID_RE, what=f"an id of {ID_DESC}")
    zone = sec.get_str("zone", pattern=ID_RE, what=f"a zone name of {ID_DESC}")
    direction = sec.get_str("direction", choices=("in", "out"))
    mode = sec.get_str("mode", "turnstile", choices=("turnstile", "handheld"))
    categories = sec.get_str_list("categories", None, ID_RE, "a category name")
    scanners = tuple(_read_scanner(s, mode) for s in sec.sections("scanner", _ALL_SCANNER_KEYS))
    camera = _read_camera(sec)
    if not scanners and camera is None:
        sec.fail(
            None,
            "a lane needs at least one input: a [[lane.scanner]] (serial, hid or keypad) or a [lane.camera]",
        )

    io = _read_io(sec, modules or {})
    relay = light = buzzer = passage = None
    relay_sec = sec.section("relay", ("pin", "active_high", "pulse_s", "safe_state"))
    if relay_sec is not None:
        if mode == "handheld":
            relay_sec.fail(None, "handheld lanes need no relay; turnstile lanes need one")
        relay = RelayConfig(
            pin=_read_pin(relay_sec, "pin", io, "coil"),
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
            red=_read_pin(light_sec, "red", io, "coil"),
            green=_read_pin(light_sec, "green", io, "coil"),
            blue=_read_pin(light_sec, "blue", io, "coil"),
            active_high=light_sec.get_bool("active_high", True),
            pwm=light_sec.get_bool("pwm", io is None),
        )
        if io is not None and light.pwm:
            light_sec.fail("pwm", f"module {io}'s coils are on or off: set pwm = false (colours are approximated)")
    buzzer_sec = sec.section("buzzer", ("pin", "active_high"))
    if buzzer_sec is not None:
        buzzer = BuzzerConfig(
            pin=_read_pin(buzzer_sec, "pin", io, "coil"), active_high=buzzer_sec.get_bool("active_high", True)
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
        if io is not None:
            _refuse_pull_up(passage_sec, io)
        pull_up = passage_sec.get_bool("pull_up", io is None)  # a module's input reads 1 while the beam is broken
        passage = PassageConfig(
            pin=_read_pin(passage_sec, "pin", io, "input"),
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

    screen = _read_screen(sec, mode)
    printer = _read_printer(sec, mode)
    offline_redemption = "local" if offline_policy == "lenient" else "refuse"
    if "offline_redemption" in sec:
        if mode != "handheld":
            sec.fail("offline_redemption", "only handheld lanes redeem benefits; remove this key from a turnstile lane")
        offline_redemption = sec.get_str("offline_redemption", choices=("refuse", "local"))
    purpose = sec.get_str("purpose", "entry", choices=("entry", "check"))
    if purpose == "check" and mode != "handheld":
        sec.fail("purpose", 'a check lane is attended: set mode = "handheld" (a turnstile always counts an entry)')
    if purpose == "check" and direction != "in":
        sec.fail("purpose", 'a check lane counts neither entries nor exits: set direction = "in"')

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
        screen=screen,
        printer=printer,
        offline_redemption=offline_redemption,
        purpose=purpose,
        io=io,
    )


_SCREEN_KEYS = ("listen", "tls_cert", "tls_key", "pin_hash", "session_minutes", "phone_lookups_per_min")


def _read_screen(lane: Section, mode: str) -> ScreenConfig | None:
    from gated.web.security import listen_problem, pin_hash_problem

    sec = lane.section("screen", _SCREEN_KEYS)
    if sec is None:
        return None
    if mode != "handheld":
        sec.fail(None, "an operator screen belongs to a handheld lane; a turnstile has nobody to read it")
    listen = sec.get_str("listen", "127.0.0.1:8081", what='"host:port" (loopback unless TLS and a PIN are set)')
    host, port = _split_host_port(sec, "listen", listen)
    host = host.strip("[]")
    sec.ctx.claim(f"web port {port}", sec.path + ("listen",), "one page per port")
    if ("tls_cert" in sec) != ("tls_key" in sec):
        sec.fail("tls_cert" if "tls_cert" not in sec else "tls_key", "set both tls_cert and tls_key, or neither")
    tls_cert = sec.get_path("tls_cert", None, must_exist=True)
    tls_key = sec.get_path("tls_key", None, must_exist=True)
    pin_hash = sec.get_str("pin_hash", None, what="a hash from `gated web hash-pin`")
    if pin_hash is not None and (problem := pin_hash_problem(pin_hash)):
        sec.fail("pin_hash", problem)
    if problem := listen_problem(host, tls=tls_cert is not None, sign_in=pin_hash is not None):
        sec.fail("listen", problem)
    return ScreenConfig(
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        pin_hash=pin_hash,
        session_minutes=sec.get_float("session_minutes", 480.0, 1.0, 24 * 60.0),
        phone_lookups_per_min=sec.get_int("phone_lookups_per_min", 6, 1, 600),
    )


def _read_lanes(root: Section, policy: PolicySection, offline_policy: str = "strict",
                modules: dict[str, IoModuleConfig] | None = None) -> tuple[LaneConfig, ...]:
    lane_secs = root.sections("lane", _LANE_KEYS)
    if not lane_secs:
        root.fail("lane", "at least one [[lane]] is required")
    lanes = []
    seen: dict[str, TomlPath] = {}
    for sec in lane_secs:
        lane = _read_lane(sec, offline_policy, modules)
        first = seen.setdefault(lane.id, sec.path + ("id",))
        if first != sec.path + ("id",):
            sec.fail(
                "id",
                f'lane id "{lane.id}" is already used by {dotted(first)} '
                f"(line {root.ctx.locator.line_of(first)}); lane ids must be unique",
            )
        if policy.zones and lane.zone not in policy.zones:
            # With capacities declared, an unlisted zone is almost surely a typo.
            sec.fail(
                "zone",
                f"zone {show(lane.zone)} is not in [policy.zones]; "
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
        duplicate = Locator(text).duplicate
        if duplicate is not None:
            dup_path, first, second = duplicate
            return ConfigError(
                f"{file}:{second}: {dotted(dup_path)}: defined twice (first on line {first})"
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
    locator = Locator(text)
    if locator.too_deep is not None:
        raise ConfigError(
            f"{file}:{locator.too_deep}: toml: arrays, inline tables or dotted keys nest more than {MAX_NESTING} deep"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(file, text, exc) from None

    ctx = Context(file, locator, path.resolve().parent, check_files)
    root = Section(ctx, (), data, _TOP_TABLES)
    gate = _read_gate(root)
    policy = _read_policy(root)
    journal = _read_journal(root, gate)
    uplink = _read_uplink(root)
    admin = _read_admin(root)
    modules = _read_modules(root)
    emergency = _read_emergency(root, modules)
    lanes = _read_lanes(root, policy, gate.offline_policy, modules)
    metrics = _read_metrics(root)
    return Config(
        path=path,
        gate=gate,
        policy=policy,
        journal=journal,
        uplink=uplink,
        admin=admin,
        emergency=emergency,
        lanes=lanes,
        modules=MappingProxyType(modules),
        metrics=metrics,
    )


def describe(config: Config) -> str:
    """One line saying what the config will run: what `gated config check` prints."""
    lanes = ", ".join(f"{lane.id}: {lane.direction} {lane.mode}" for lane in config.lanes)
    count = len(config.lanes)
    if config.uplink is None:
        uplink = "offline (no uplink)"
    else:
        uplink = f"uplink {', '.join(config.uplink.targets or (config.uplink.target,))} ({'plaintext' if config.uplink.plaintext else 'TLS'})"
    return (
        f"gate {config.gate.id}, {count} lane{'s' if count != 1 else ''} ({lanes}), "
        f"{uplink}, gpio {config.gate.gpio}"
    )
