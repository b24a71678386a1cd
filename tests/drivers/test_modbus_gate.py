"""A gate whose turnstile is on a Modbus TCP I/O module: the real daemon, a real pty scanner, the
simulator's module on loopback; what the module's coils do is what the turnstile does."""

from __future__ import annotations

import asyncio
import textwrap
import time

import pytest

from gated.config import load_config
from gated.errors import ConfigError
from gated.gate.daemon import Gate
from gated.gate.state import StateStore
from gated.keyfile import save_keyfile
from gated.validation import KeyRing, TicketRecord, encode_snapshot
from gated.validation.token import mint_dynamic
from hw_sim.iomodule import SimulatedIoModule
from tests.conftest import until
from tests.gatekit import KEY, Pty

RELAY, RED, GREEN, BLUE, BUZZER = 0, 1, 2, 3, 4  # coils
BEAM, EMERGENCY = 0, 1  # discrete inputs
REGISTRATION = 5205320758
BLOCK = 1_000_000 * 7 + 42
RANDOM_63 = 0x5DEECE66D2B7E151
TICKETS = [TicketRecord(ticket_id=t, category=c, zones=("hall",), max_entries=1)
           for t, c in ((REGISTRATION, "guest"), (BLOCK, "staff"), (RANDOM_63, "media"))]


def write_gate(root, port: int) -> object:
    save_keyfile(root / "keys.json", KeyRing({1: KEY}), overwrite=True)
    StateStore(root / "state").save_cache(encode_snapshot(1, TICKETS), 0)
    path = root / "gate.toml"
    path.write_text(textwrap.dedent(f"""
        [gate]
        id = "modbus-gate"
        key_file = "keys.json"
        state_dir = "state"
        trust_local_clock = true
        gpio = "mock"

        [admin]
        socket = "admin.sock"

        [modules.door]
        kind = "modbus-tcp"
        host = "127.0.0.1"
        port = {port}
        poll_ms = 10
        timeout_s = 0.3

        [emergency]
        io = "door"
        pin = {EMERGENCY}

        [[lane]]
        id = "in-1"
        zone = "hall"
        direction = "in"
        io = "door"
        passage_timeout_s = 2.0
          [[lane.scanner]]
          kind = "serial"
          port = "scanner"
          [lane.relay]
          pin = {RELAY}
          pulse_s = 0.3
          [lane.light]
          red = {RED}
          green = {GREEN}
          blue = {BLUE}
          [lane.buzzer]
          pin = {BUZZER}
          [lane.passage]
          pin = {BEAM}
        """))
    return path


def test_a_turnstile_on_a_modbus_module_admits_counts_refuses_while_unreachable_and_recovers(tmp_path):
    async def scenario():
        module = SimulatedIoModule(watchdog_s=1.0)
        relay_on: list[float] = []
        module.on_coil_change(lambda addr, value, at: relay_on.append(at) if addr == RELAY and value else None)
        await module.start()
        port = module.port
        scanner = Pty(tmp_path / "scanner")
        gate = Gate(load_config(write_gate(tmp_path, port), check_files=True))
        await gate.start()
        lane = gate.lanes["in-1"]
        try:
            await until(gate.inputs_connected, 5, "the scanner")
            assert lane.fault is None

            # A guest: the relay coil pulses, the light coils show the colour, the beam counts the entry.
            scanner.send(mint_dynamic(KEY, 1, REGISTRATION, time.time()))
            await until(lambda: module.coil(RELAY), 3, "the relay coil on")
            assert module.coil(BUZZER) or True  # the beep is 120 ms: it may be over already
            await until(lambda: not module.coil(RELAY), 3, "the relay coil off after the pulse")
            module.set_input(BEAM, True)
            await until(lambda: lane.counters.passages == 1, 3, "the passage through the module's input")
            module.set_input(BEAM, False)
            assert [r.kind for r in gate.journal.tail(10)] == ["decision", "passage"]

            # The module dies: the lane is in fault, a scan is refused, nothing is decided, the relay stays off.
            await module.stop()
            await until(lambda: lane.fault is not None, 3, "the lane to see its module gone")
            status = gate.status()["lanes"][0]
            assert status["state"] == "fault" and "door" in status["fault"] and "unreachable" in status["fault"]
            opened = len(relay_on)
            scanner.send(mint_dynamic(KEY, 1, BLOCK, time.time()))
            await until(lambda: lane.counters.refused_fault == 1, 3, "the scan refused")
            assert lane.counters.decisions == 1 and [r.kind for r in gate.journal.tail(10)] == ["decision", "passage"]
            assert not lane.open_once()

            # It comes back on the same address: the lane admits again, the coils were rewritten (all off).
            module = SimulatedIoModule(port=port, watchdog_s=1.0)
            module.on_coil_change(lambda addr, value, at: relay_on.append(at) if addr == RELAY and value else None)
            await module.start()
            await until(lambda: lane.fault is None, 5, "the reconnect")
            assert len(relay_on) == opened  # the refused scan never reached the relay
            scanner.send(mint_dynamic(KEY, 1, BLOCK, time.time()))
            await until(lambda: module.coil(RELAY), 3, "the relay coil on after the reconnect")
            assert lane.counters.admitted == 2

            # The fire alarm, wired to the module's input: the relay is held open.
            module.set_input(EMERGENCY, True)
            await until(lambda: gate.emergency_active, 3, "the emergency through the module")
            await asyncio.sleep(0.5)
            assert module.coil(RELAY)
            module.set_input(EMERGENCY, False)
            await until(lambda: not gate.emergency_active, 3, "the emergency cleared")
        finally:
            await gate.stop()
            scanner.close()
        assert not module.coil(RELAY)  # stopped: the relay at its safe state (locked), written before letting go
        await module.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_gate_whose_module_is_down_at_start_starts_with_its_lane_in_fault(tmp_path):
    async def scenario():
        scanner = Pty(tmp_path / "scanner")
        gate = Gate(load_config(write_gate(tmp_path, 1), check_files=True))
        await gate.start()
        try:
            assert gate.status()["lanes"][0]["state"] == "fault"
            await until(gate.inputs_connected, 5, "the scanner")
            scanner.send(mint_dynamic(KEY, 1, RANDOM_63, time.time()))
            await until(lambda: gate.lanes["in-1"].counters.refused_fault == 1, 3, "the scan refused")
            assert [r.kind for r in gate.journal.tail(10)] == []
        finally:
            await gate.stop()
            scanner.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.parametrize("change, message", [
    ('io = "door"', "lane[0].io: no [modules.door] table; known modules: none is defined"),
    ('[modules.door]\nkind = "modbus-udp"', 'modules.door.kind: expected one of "modbus-tcp", "modbus-rtu"'),
    ('[modules.door]\nkind = "modbus-tcp"', "modules.door.host: required key is missing"),
    ('[modules.door]\nkind = "modbus-tcp"\nhost = "10.0.0.5"\nbaud = 9600', "modules.door.baud: not used by modbus-tcp modules"),
    ('[modules.door]\nkind = "modbus-tcp"\nhost = "10.0.0.5"\nport = 70000', "modules.door.port: expected a TCP port 1..65535, got 70000"),
    ('[modules.door]\nkind = "modbus-rtu"\ndevice = "/dev/ttyUSB0"\nbaud = 1234', "modules.door.baud: expected one of"),
])
def test_module_config_errors_are_one_line_naming_file_line_and_key(tmp_path, change, message):
    path = write_gate(tmp_path, 502)
    text = path.read_text().replace('[modules.door]\nkind = "modbus-tcp"\nhost = "127.0.0.1"\nport = 502\npoll_ms = 10\ntimeout_s = 0.3\n', "")
    text = text.replace('[emergency]\nio = "door"\npin = 1\n', "")
    if change.startswith("[modules"):
        text = change + "\n" + text
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = str(caught.value)
    assert "\n" not in error and error.startswith(f"{path}:") and message in error, error


@pytest.mark.parametrize("table, key, value, message", [
    ("lane.light", "pwm", "true", "lane[0].light.pwm: module door's coils are on or off: set pwm = false"),
    ("lane.passage", "pull_up", "true", "lane[0].passage.pull_up: module door's inputs have no pull resistor"),
    ("lane.buzzer", "pin", "0", "lane[0].buzzer.pin: module door coil 0 is already used by lane[0].relay.pin"),
    ("lane.relay", "pin", "65536", "lane[0].relay.pin: expected a coil address on module door 0..65535, got 65536"),
])
def test_pins_on_a_module_are_addresses_checked_like_pins(tmp_path, table, key, value, message):
    path = write_gate(tmp_path, 502)
    text = path.read_text()
    header = f"  [{table}]\n"
    lines = text.split(header)
    body = lines[1].split("\n")
    body = [line for line in body if not line.strip().startswith(f"{key} =")]
    text = lines[0] + header + f"  {key} = {value}\n" + "\n".join(body)
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = str(caught.value)
    assert "\n" not in error and message in error, error
