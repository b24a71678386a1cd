"""A technician edits the gate's config: what loads, and what the refusal says.

Broken configs are made by text substitution from config/example.toml, so
each case is one realistic edit; the expected line is found in the edited
text, never hard-coded.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from gated.cli.run import check_config
from gated.config import (
    Config,
    load_config,
)
from gated.errors import ConfigError
from gated.validation.policy import DEFAULT_COLORS
from tests.conftest import REPO

CONFIG_DIR = REPO / "config"
EXAMPLE = (CONFIG_DIR / "example.toml").read_text()


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing `needle`."""
    hits = [i for i, line in enumerate(text.split("\n"), start=1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} occurs {len(hits)} times"
    return hits[nth - 1]


def edit(text: str, old: str, new: str, nth: int = 1) -> str:
    """Replace the nth occurrence of `old` (which must exist) with `new`."""
    start = -1
    for _ in range(nth):
        start = text.index(old, start + 1)
    return text[:start] + new + text[start + len(old) :]


def write(tmp_path: Path, text: str, name: str = "gate.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    return message


# ---------------------------------------------------------------- good files


def test_the_example_gate_loads_as_two_turnstile_lanes():
    config = load_config(CONFIG_DIR / "example.toml")
    assert isinstance(config, Config)
    assert config.gate.id == "hall-a-north"
    assert [(lane.id, lane.direction, lane.mode) for lane in config.lanes] == [
        ("in-1", "in", "turnstile"),
        ("out-1", "out", "turnstile"),
    ]
    in_lane, out_lane = config.lanes
    assert [s.kind for s in in_lane.scanners] == ["serial"]
    assert in_lane.camera is not None and in_lane.camera.source == "/dev/video0"
    assert [s.kind for s in out_lane.scanners] == ["hid"] and out_lane.camera is None
    assert in_lane.relay is not None and in_lane.relay.pin == 17
    assert in_lane.relay.safe_state == "locked"
    assert in_lane.categories == frozenset({"guest", "media", "staff", "vip", "exhibitor"})
    assert out_lane.categories is None
    assert config.policy.color_for("guest") == "#87CEEB"
    assert config.policy.color_for("media") == "#00008B"
    assert config.policy.color_for("staff") == "#FF0000"
    assert config.policy.color_for("someone-new") == "#FFFFFF"
    assert config.uplink is not None and not config.uplink.plaintext
    assert config.uplink.ca == Path("/etc/gated/tls/ca.pem")
    assert config.emergency is not None and config.emergency.pin == 6


def test_the_simulator_config_has_the_same_shape_on_mock_gpio_and_loopback():
    sim = load_config(REPO / "hw_sim" / "sim.toml")
    example = load_config(CONFIG_DIR / "example.toml")
    assert sim.gate.gpio == "mock"
    assert sim.uplink is not None and sim.uplink.plaintext and sim.uplink.target.startswith("127.0.0.1:")
    assert sim.uplink.ca is None and sim.uplink.cert is None and sim.uplink.key is None
    assert (sim.admin.host, sim.admin.port) == ("127.0.0.1", 7001)
    # The example's turnstiles, then the simulator's attended desk with its operator screen on loopback.
    assert [(l.id, l.direction, l.mode) for l in sim.lanes] == [
        (l.id, l.direction, l.mode) for l in example.lanes
    ] + [("desk-1", "in", "handheld")]
    assert (sim.lanes[-1].screen.host, sim.lanes[-1].screen.pin_hash) == ("127.0.0.1", None)
    assert sim.lanes[-1].printer is not None and sim.lanes[-1].printer.kind == "file"  # badges as PNGs in the run dir
    serial = sim.lanes[0].scanners[0]
    # Relative paths land next to the config file, where the simulator creates them.
    assert Path(serial.port).is_absolute()
    assert Path(serial.port) == (REPO / "hw_sim" / "../run/sim/scanner-in-1")
    assert sim.journal.path == sim.gate.state_dir / "journal.db"


def test_a_minimal_handheld_gate_gets_the_documented_defaults(tmp_path):
    path = write(
        tmp_path,
        """
[gate]
id = "desk-1"
key_file = "keys.json"

[[lane]]
id = "desk"
zone = "lobby"
direction = "in"
mode = "handheld"
  [[lane.scanner]]
  kind = "keypad"
  name = "USB Keypad"
  [lane.light]
  red = 2
  green = 3
  blue = 4
""",
    )
    config = load_config(path)
    assert config.gate.key_file == tmp_path / "keys.json"
    assert config.gate.state_dir == Path("/var/lib/gated")
    assert (config.gate.offline_policy, config.gate.gpio, config.gate.trust_local_clock) == (
        "strict", "native", False,
    )
    policy = config.policy
    assert (policy.skew_steps, policy.debounce_s, policy.rate_burst, policy.rate_per_s) == (1, 2.0, 10, 5.0)
    assert policy.anti_passback and dict(policy.colors) == dict(DEFAULT_COLORS)
    assert dict(policy.zones) == {}
    assert config.journal.path == Path("/var/lib/gated/journal.db")
    assert config.journal.retention_days == 14
    assert config.uplink is None and config.emergency is None
    assert config.admin.socket == Path("/run/gated/admin.sock")
    lane = config.lanes[0]
    assert lane.relay is None and lane.passage is None and lane.passage_timeout_s is None
    assert lane.scanners[0].layout == "us" and lane.scanners[0].max_frame == 512


HANDHELD = """
[gate]
id = "desk-1"
key_file = "keys.json"

[[lane]]
id = "desk"
zone = "lobby"
direction = "in"
mode = "handheld"
  [[lane.scanner]]
  kind = "keypad"
  name = "USB Keypad"
  [lane.buzzer]
  pin = 4
"""


def test_a_handheld_needs_something_to_signal_the_operator(tmp_path):
    assert load_config(write(tmp_path, HANDHELD)).lanes[0].buzzer.pin == 4
    message = refusal(tmp_path, edit(HANDHELD, "  [lane.buzzer]\n  pin = 4\n", ""))
    assert message == (
        f"{tmp_path / 'gate.toml'}:{line_of(HANDHELD, '[[lane]]')}: lane[0]: a handheld lane needs "
        "an output to signal the operator: a [lane.light] or a [lane.buzzer]"
    )


def test_a_handheld_has_no_passage_sensor(tmp_path):
    text = HANDHELD + "  [lane.passage]\n  pin = 5\n"
    message = refusal(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'gate.toml'}:{line_of(text, '[lane.passage]')}: lane[0].passage: ")
    assert "handheld lanes have no passage sensor" in message


def test_the_config_cannot_be_changed_after_loading():
    config = load_config(CONFIG_DIR / "example.toml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lanes[0].relay.pin = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.policy.colors["guest"] = "#000000"  # type: ignore[index]


def test_lowercase_colors_are_stored_upper_case(tmp_path):
    config = load_config(write(tmp_path, edit(EXAMPLE, 'vip = "#FFD700"', 'vip = "#ffd700"')))
    assert config.policy.color_for("vip") == "#FFD700"


# ---------------------------------------------------------------- refusals

# (case, old text, new text, key named, needle locating the expected line
#  (nth occurrence) in the edited text, fragments the message must contain,
#  optionally the needle of the line {first} stands for: by default the
#  needle's first occurrence, the first of two clashing definitions)
BROKEN = [
    (
        "unknown key",
        "  pulse_s = 0.8", "  pulse_ms = 800",
        "lane[0].relay.pulse_ms", ("pulse_ms", 1),
        ["unknown key", "allowed here: pin, active_high, pulse_s, safe_state"],
    ),
    (
        "unknown table",
        "[journal]", "[journals]",
        "journals", ("[journals]", 1),
        ["unknown table", "allowed here: gate, policy, journal"],
    ),
    (
        "wrong type",
        "pin = 17", 'pin = "17"',
        "lane[0].relay.pin", ('pin = "17"', 1),
        ['expected an integer GPIO pin 0..27, got "17"'],
    ),
    (
        "boolean where a number belongs",
        "debounce_s = 2.0", "debounce_s = true",
        "policy.debounce_s", ("debounce_s", 1),
        ["expected a number 0..60, got true"],
    ),
    (
        "out of range",
        "rate_burst = 10 ", "rate_burst = 5000 ",
        "policy.rate_burst", ("rate_burst", 1),
        ["expected an integer 1..1000, got 5000"],
    ),
    (
        "pin beyond the header",
        "pin = 27", "pin = 28",
        "lane[1].relay.pin", ("pin = 28", 1),
        ["expected an integer GPIO pin 0..27, got 28"],
    ),
    (
        "zero rate",
        "rate_per_s = 5.0", "rate_per_s = 0",
        "policy.rate_per_s", ("rate_per_s", 1),
        ["expected a number > 0 and <= 1000, got 0"],
    ),
    (
        "not a choice",
        'offline_policy = "strict"', 'offline_policy = "relaxed"',
        "gate.offline_policy", ("offline_policy =", 1),
        ['expected one of "strict", "lenient", got "relaxed"'],
    ),
    (
        "missing required key",
        'id = "hall-a-north"\n', "",
        "gate.id", ("[gate]", 1),
        ["required key is missing"],
    ),
    (
        "missing pin in the second lane",
        "  pin = 27\n", "",
        "lane[1].relay.pin", ("[lane.relay]", 2),
        ["required key is missing", "GPIO pin 0..27"],
    ),
    (
        "gate id with a colon",
        'id = "hall-a-north"', 'id = "hall:a"',
        "gate.id", ('"hall:a"', 1),
        ['got "hall:a"'],
    ),
    (
        "duplicate pin across lanes",
        "pin = 21", "pin = 25",
        "lane[1].buzzer.pin", ("pin = 25", 2),
        ["GPIO 25 is already used by lane[0].buzzer.pin (line {first})"],
    ),
    (
        "emergency pin reused by a relay",
        "pin = 6", "pin = 17",
        "lane[0].relay.pin", ("pin = 17", 2),
        ["GPIO 17 is already used by emergency.pin (line {first})"],
    ),
    (
        "duplicate pin within a light",
        "blue = 20", "blue = 16",
        "lane[1].light.blue", ("blue = 16", 1),
        ["GPIO 16 is already used by lane[1].light.green (line {first})"],
        ("green = 16", 1),
    ),
    (
        "duplicate lane id",
        'id = "out-1"', 'id = "in-1"',
        "lane[1].id", ('id = "in-1"', 2),
        ['lane id "in-1" is already used by lane[0].id (line {first})'],
    ),
    (
        "turnstile without a relay",
        "  [lane.relay]\n  pin = 27\n  active_high = true\n  pulse_s = 0.8\n  safe_state = \"locked\"\n", "",
        "lane[1].relay", ("[[lane]]", 2),
        ["turnstile lanes need a [lane.relay]"],
    ),
    (
        "handheld with a relay",
        'mode = "turnstile"\npassage_timeout_s = 8.0\n\n  [[lane.scanner]]\n  kind = "hid"',
        'mode = "handheld"\n\n  [[lane.scanner]]\n  kind = "hid"',
        "lane[1].relay", ("[lane.relay]", 2),
        ["handheld lanes need no relay; turnstile lanes need one"],
    ),
    (
        "unknown lane table",
        '  [[lane.scanner]]\n  kind = "hid"\n', '  [lane.nothing]\n',
        "lane[1].nothing", ("[lane.nothing]", 1),
        ["unknown table"],
    ),
    (
        "lane without any input",
        '  [[lane.scanner]]\n  kind = "hid"\n'
        '  # A keyboard-wedge scanner; gated grabs the device so its keystrokes never\n'
        '  # reach a console. Or match by name: name = "Honeywell Scanner".\n'
        '  device = "/dev/input/by-id/usb-Honeywell_Imaging_Scanner-event-kbd"\n'
        '  layout = "us"           # the keyboard layout the scanner emulates\n'
        "  max_frame = 512\n",
        "",
        "lane[1]", ("[[lane]]", 2),
        ["a lane needs at least one input"],
    ),
    (
        "keypad at an unattended turnstile",
        'kind = "hid"\n  # A keyboard-wedge', 'kind = "keypad"\n  # A keyboard-wedge',
        "lane[1].scanner[0].kind", ('kind = "keypad"', 1),
        ["keypad entry is attended only"],
    ),
    (
        "serial-only key on an HID scanner",
        '  layout = "us"  ', '  baud = 9600  ',
        "lane[1].scanner[0].baud", ("baud = 9600", 2),
        ["not used by hid scanners"],
    ),
    (
        "bad color",
        'vip = "#FFD700"', 'vip = "gold"',
        "policy.colors.vip", ('vip = "gold"', 1),
        ['expected a color "#RRGGBB", got "gold"'],
    ),
    (
        "short color",
        'default = "#FFFFFF"', 'default = "#FFF"',
        "policy.colors.default", ('default = "#FFF"', 1),
        ['expected a color "#RRGGBB", got "#FFF"'],
    ),
    (
        "admin listening on every interface",
        'socket = "/run/gated/admin.sock"', 'address = "0.0.0.0:7001"',
        "admin.address", ("0.0.0.0", 1),
        ["must be a loopback address", '"0.0.0.0:7001"'],
    ),
    (
        "uplink without certificates and without plaintext",
        'ca = "/etc/gated/tls/ca.pem"\ncert = "/etc/gated/tls/gate.pem"\nkey = "/etc/gated/tls/gate.key"\n', "",
        "uplink.ca", ("[uplink]", 1),
        ["required for TLS", "plaintext = true"],
    ),
    (
        "plaintext uplink that still names certificates",
        "plaintext = false", "plaintext = true",
        "uplink.ca", ('ca = "/etc/gated/tls/ca.pem"', 1),
        ["not used with plaintext = true"],
    ),
    (
        "uplink target without a port",
        'target = "registry.example:7443"', 'target = "registry.example"',
        "uplink.target", ("target =", 1),
        ['expected "host:port"'],
    ),
    (
        "lane in a zone with no capacity entry",
        'zone = "hall-a"\ndirection = "out"', 'zone = "hall-b"\ndirection = "out"',
        "lane[1].zone", ('zone = "hall-b"', 1),
        ['zone "hall-b" is not in [policy.zones]', "known zones: hall-a"],
    ),
    (
        "empty category list",
        'categories = ["guest", "media", "staff", "vip", "exhibitor"]', "categories = []",
        "lane[0].categories", ("categories = []", 1),
        ["expected a non-empty array of strings (a category name each), got an empty array"],
    ),
    (
        "passage timeout without a sensor",
        "  [lane.passage]\n  pin = 19\n  pull_up = true\n", "",
        "lane[1].passage_timeout_s", ("passage_timeout_s", 2),
        ["add the sensor or remove this key"],
    ),
    (
        "TOML syntax error",
        "pulse_s = 0.8", "pulse_s = 0.8.1",
        "toml", ("pulse_s = 0.8.1", 1),
        ["(column "],
    ),
    (
        "key defined twice",
        "  fps = 15\n", "  fps = 15\n  fps = 30\n",
        "lane[0].camera.fps", ("fps = 30", 1),
        ["defined twice (first on line {first})"],
        ("fps = 15", 1),
    ),
]


@pytest.mark.parametrize(
    "old, new, key, locate, fragments, first_at",
    [(case + (None,))[1:7] for case in BROKEN],
    ids=[case[0] for case in BROKEN],
)
def test_a_broken_config_is_refused_naming_file_line_and_key(
    tmp_path, old, new, key, locate, fragments, first_at
):
    text = edit(EXAMPLE, old, new)
    message = refusal(tmp_path, text)
    needle, nth = locate
    expected_line = line_of(text, needle, nth)
    assert message.startswith(f"{tmp_path / 'gate.toml'}:{expected_line}: {key}: "), message
    first = line_of(text, *(first_at or (needle, 1)))
    for fragment in fragments:
        assert fragment.format(first=first) in message, message


def test_clashes_name_the_first_place_with_its_own_line(tmp_path):
    # The first user of the pin is not on the line the needle finds first.
    text = edit(EXAMPLE, "  pin = 25", "  pin = 13")
    text = edit(text, "pin = 19", "pin = 13")
    message = refusal(tmp_path, text)
    assert f"lane[0].buzzer.pin (line {line_of(text, 'pin = 13', 1)})" in message
    assert message.startswith(f"{tmp_path / 'gate.toml'}:{line_of(text, 'pin = 13', 2)}: lane[1].passage.pin:")


def test_a_second_scanner_is_counted_within_its_own_lane(tmp_path):
    second = '  [[lane.scanner]]\n  kind = "serial"\n  port = "/dev/ttyUSB1"\n  baud = 1234\n\n  [lane.camera]'
    text = edit(EXAMPLE, "  [lane.camera]", second)
    message = refusal(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'gate.toml'}:{line_of(text, 'baud = 1234')}: lane[0].scanner[1].baud: ")


def test_two_scanners_on_one_serial_port_are_refused(tmp_path):
    second = '  [[lane.scanner]]\n  kind = "serial"\n  port = "/dev/ttyACM0"\n\n  [lane.camera]'
    text = edit(EXAMPLE, "  [lane.camera]", second)
    message = refusal(tmp_path, text)
    assert f":{line_of(text, 'ttyACM0', 2)}: lane[0].scanner[1].port: " in message
    assert f"already used by lane[0].scanner[0].port (line {line_of(text, 'ttyACM0', 1)})" in message


def test_lines_inside_multiline_arrays_and_strings_do_not_confuse_the_locator(tmp_path):
    tricky = (
        'categories = [\n  "guest",\n  # [[lane]]\n  "vip", # [lane.relay]\n]\n'
        'zone_note_unused = """\n[[lane]]\npin = 99\n"""\n'
    )
    text = edit(EXAMPLE, 'categories = ["guest", "media", "staff", "vip", "exhibitor"]\n', tricky)
    message = refusal(tmp_path, text)
    # The unknown key is reported on its own line, not inside the string.
    assert message.startswith(f"{tmp_path / 'gate.toml'}:{line_of(text, 'zone_note_unused')}: lane[0].zone_note_unused: ")

    text = edit(text, 'zone_note_unused = """\n[[lane]]\npin = 99\n"""\n', "")
    text = edit(text, "pin = 27", 'pin = "27"')
    message = refusal(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'gate.toml'}:{line_of(text, 'pin = ' + chr(34) + '27')}: lane[1].relay.pin: ")


def test_an_unterminated_value_at_the_end_of_the_file_names_the_last_line(tmp_path):
    text = EXAMPLE + 'extra = ["never closed",\n\n'
    message = refusal(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'gate.toml'}:{line_of(text, 'never closed')}: toml: ")
    assert message.endswith("at the end of the file")


# A file that nests deeper than any config needs: a typo'd paste, a generated
# file gone wrong, or someone probing the gate. One line, whatever the depth.
_DEEP = [
    ("arrays on one line", lambda n: "deep = " + "[" * n + "]" * n + "\n"),
    ("arrays one per line", lambda n: "deep = " + "[\n" * n + "]" * n + "\n"),
    ("unclosed arrays", lambda n: "deep = " + "[" * n + "\n"),
    ("inline tables", lambda n: "deep = " + "{a = " * n + "1" + "}" * n + "\n"),
    ("dotted key", lambda n: ".".join(["a"] * n) + " = 1\n"),  # tomllib alone: 400 MB at 10,000
    ("dotted table header", lambda n: "[" + ".".join(["a"] * n) + "]\n"),
]


@pytest.mark.parametrize("depth", [400, 1_000, 100_000])
@pytest.mark.parametrize("shape,nest", _DEEP, ids=[shape for shape, _ in _DEEP])
def test_any_nesting_depth_is_refused_in_one_line_naming_the_line(tmp_path, capsys, shape, nest, depth):
    text = edit(EXAMPLE, "[policy]\n", nest(depth) + "[policy]\n")
    path = write(tmp_path, text)
    assert check_config(path) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    start = line_of(text, "deep =") if shape.startswith(("arrays", "unclosed", "inline")) else line_of(text, "a.a.a")
    too_deep = start + 32 if shape == "arrays one per line" else start  # where the 33rd level opens
    assert err.startswith(f"{path}:{too_deep}: toml: ")
    assert "nest more than 32 deep" in err


def test_nesting_up_to_the_limit_is_parsed_and_brackets_in_strings_do_not_count(tmp_path):
    # 32 deep is allowed (and refused only for being an unknown key); strings,
    # comments and multi-line strings full of brackets and quotes are not nesting.
    noise = "[{" * 40
    text = edit(EXAMPLE, "[policy]\n", (
        f"# {noise}\n"
        f'deep = {"[" * 32}"{noise}\\"{noise}", \'{noise}\', """\n{noise}\n""\\"""", \'\'\'{noise}\'\'\'{"]" * 32} # {noise}\n'
        "[policy]\n"
    ))
    message = refusal(tmp_path, text)
    assert f":{line_of(text, 'deep =')}: gate.deep: unknown key" in message, message

    text = edit(text, "[" * 32, "[" * 33)
    text = edit(text, "]" * 32, "]" * 33)
    message = refusal(tmp_path, text)
    assert message.endswith(f":{line_of(text, 'deep =')}: toml: arrays, inline tables or dotted keys nest more than 32 deep")


def test_a_lane_written_as_a_single_table_is_refused(tmp_path):
    text = (
        '[gate]\nid = "g"\nkey_file = "k"\n\n[lane]\nid = "in-1"\nzone = "z"\ndirection = "in"\n'
    )
    message = refusal(tmp_path, text)
    assert message == (
        f"{tmp_path / 'gate.toml'}:5: lane: expected an array of tables [[lane]], got a table"
    )


def test_a_gate_without_lanes_is_refused(tmp_path):
    message = refusal(tmp_path, '[gate]\nid = "g"\nkey_file = "k"\n')
    assert message == f"{tmp_path / 'gate.toml'}:1: lane: at least one [[lane]] is required"


def test_a_file_without_a_gate_table_is_refused(tmp_path):
    message = refusal(tmp_path, "# nothing yet\n\n[policy]\nskew_steps = 1\n")
    assert message == f"{tmp_path / 'gate.toml'}:1: gate: required table [gate] is missing"


def test_files_are_checked_only_when_asked(tmp_path):
    text = edit(EXAMPLE, 'key_file = "/etc/gated/keys.json"', 'key_file = "keys.json"')
    for name in ("ca.pem", "gate.pem", "gate.key"):
        text = text.replace(f"/etc/gated/tls/{name}", f"tls/{name}")
    path = write(tmp_path, text)
    assert load_config(path).gate.key_file == tmp_path / "keys.json"

    with pytest.raises(ConfigError) as info:
        load_config(path, check_files=True)
    assert str(info.value).startswith(f"{path}:{line_of(text, 'key_file')}: gate.key_file: file not found")

    (tmp_path / "keys.json").write_text("{}")
    with pytest.raises(ConfigError) as info:
        load_config(path, check_files=True)
    assert f":{line_of(text, 'ca = ')}: uplink.ca: file not found" in str(info.value)

    (tmp_path / "tls").mkdir()
    for name in ("ca.pem", "gate.pem", "gate.key"):
        (tmp_path / "tls" / name).write_text("-----")
    assert load_config(path, check_files=True).uplink.key == tmp_path / "tls" / "gate.key"


def test_a_missing_file_is_one_line_too(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: cannot read the config file: No such file or directory"


def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    path = tmp_path / "gate.toml"
    path.write_bytes(EXAMPLE.encode().replace(b'"hall-a-north"', b'"hall-\xe4"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{line_of(EXAMPLE, 'hall-a-north')}: toml: ")


def _variants():
    """Every line of the example deleted, or its value replaced by each wrong kind."""
    lines = EXAMPLE.split("\n")
    for i, line in enumerate(lines):
        yield "\n".join(lines[:i] + lines[i + 1 :])
        if "=" in line and not line.lstrip().startswith("#"):
            key = line.split("=", 1)[0]
            for value in ('"x"', "-1", "99999", "0.5", "true", "[]", "{}", '""', "1979-05-27"):
                yield "\n".join(lines[:i] + [f"{key}= {value}"] + lines[i + 1 :])


def test_no_single_edit_gets_past_the_loader_as_anything_but_a_config_or_a_config_error(tmp_path):
    path = tmp_path / "gate.toml"
    refused = 0
    for text in _variants():
        path.write_text(text)
        try:
            load_config(path)
        except ConfigError as exc:
            refused += 1
            assert "\n" not in str(exc)
            assert re.match(rf"{re.escape(str(path))}:\d+: \S+: ", str(exc)), str(exc)
    assert refused > 100


# ---------------------------------------------------------------- gated config check


def test_config_check_says_ok_with_a_summary(capsys):
    path = CONFIG_DIR / "example.toml"
    assert check_config(path) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"OK: {path}: gate hall-a-north, 2 lanes (in-1: in turnstile, out-1: out turnstile)")
    assert out.count("\n") == 1 and err == ""


def test_config_check_prints_one_line_to_stderr_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, edit(EXAMPLE, "pin = 17", 'pin = "17"'))
    assert check_config(path) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"{path}:") and "lane[0].relay.pin" in err


def test_config_check_on_a_missing_file_exits_2(tmp_path, capsys):
    assert check_config(tmp_path / "nope.toml") == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1


def test_config_check_can_require_the_files_the_daemon_will_open(capsys):
    # On a laptop /etc/gated/keys.json does not exist; the daemon's check says so.
    if Path("/etc/gated/keys.json").exists():
        pytest.skip("this machine has a gated key file")
    assert check_config(CONFIG_DIR / "example.toml", check_files=True) == 2
    assert "gate.key_file: file not found" in capsys.readouterr().err
