"""The GPIO drivers on a Modbus I/O module: the real pymodbus client in gated, the simulator's real
pymodbus server on loopback; coils and inputs read back from the module itself."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gated.drivers.gpio import EmergencyInput, LaneLight, PassageSensor, Relay
from gated.drivers.modbus import ModbusIoModule
from gated.errors import DriverError
from hw_sim.iomodule import SimulatedIoModule
from tests.conftest import wait_until


class ModuleOnItsOwnLoop:
    """The simulated module served from a thread of its own, as the simulator serves it beside the gate."""

    def __init__(self, port: int = 0, watchdog_s: float = 1.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.changes: list[tuple[int, bool, float]] = []
        self.module = self._start(port, watchdog_s)

    def _start(self, port: int, watchdog_s: float) -> SimulatedIoModule:
        module = SimulatedIoModule(port=port, watchdog_s=watchdog_s)
        module.on_coil_change(lambda addr, value, at: self.changes.append((addr, value, at)))
        self.call(module.start())
        return module

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def kill(self) -> None:
        self.call(self.module.stop())

    def restart(self) -> None:
        self.module = self._start(self.module.port, self.module.watchdog_s)

    def close(self) -> None:
        self.call(self.module.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def sim():
    served = ModuleOnItsOwnLoop()
    yield served
    served.close()


@pytest.fixture
def module(sim):
    io = ModbusIoModule.tcp("door-a", "127.0.0.1", sim.module.port, poll_ms=10, timeout_s=0.5, reconnect_max_s=0.2)
    io.start()
    assert io.wait_connected(5) and io.fault is None
    yield io
    io.close()


def test_a_relay_pulse_is_the_coil_going_on_then_off_for_the_pulse_length(sim, module):
    relay = Relay(module.coil(0), pulse_s=0.3, pin_factory=module)
    try:
        assert not sim.module.coil(0)
        relay.pulse()
        wait_until(lambda: sim.module.coil(0), 3, "the relay coil on")
        wait_until(lambda: not sim.module.coil(0), 3, "the relay coil off again")
        on = [at for addr, value, at in sim.changes if addr == 0 and value]
        off = [at for addr, value, at in sim.changes if addr == 0 and not value]
        assert len(on) == len(off) == 1
        assert 0.2 <= off[0] - on[0] < 1.5, off[0] - on[0]  # the pulse, as the module saw it
    finally:
        relay.close()


def test_the_lane_light_is_three_coils_on_or_off(sim, module):
    with pytest.raises(DriverError, match="no PWM"):
        LaneLight(module.coil(1), module.coil(2), module.coil(3), pwm=True, pin_factory=module)
    light = LaneLight(module.coil(1), module.coil(2), module.coil(3), pwm=False, pin_factory=module)
    try:
        for color, coils in (("#FF0000", [True, False, False]),  # staff red
                             ("#1E3A8A", [False, False, True]),  # media dark blue: blue only
                             ("#87CEEB", [True, True, True]),  # guest light blue comes out white without PWM
                             ("#0000FF", [False, False, True])):
            light.show(color)
            wait_until(lambda: sim.module.coils()[1:4] == coils, 3, f"{color} on coils 1-3")
        light.deny(0.5)
        wait_until(lambda: sim.module.coils()[1:4] == [True, False, False], 3, "deny: red")
        wait_until(lambda: sim.module.coils()[1:4] == [True, True, False], 3, "deny: amber")
        wait_until(lambda: sim.module.coils()[1:4] == [False, False, False], 3, "back to idle (off)")
    finally:
        light.close()


def test_the_passage_beam_and_the_emergency_contact_are_discrete_inputs(sim, module):
    passages: list[float] = []
    emergency: list[bool] = []
    beam = PassageSensor(module.input(0), pull_up=False, active_state=True, bounce_s=0.0,
                         pin_factory=module, on_passage=passages.append)
    contact = EmergencyInput(module.input(5), active_high=True, pull_up=False, pin_factory=module,
                             on_change=lambda active, at: emergency.append(active))
    try:
        for person in range(3):
            sim.module.set_input(0, True)
            wait_until(lambda: beam.beam_broken, 3, "the beam broken")
            sim.module.set_input(0, False)
            wait_until(lambda: not beam.beam_broken, 3, "the beam clear")
        assert len(passages) == beam.passage_count == 3
        assert emergency == []
        sim.module.set_input(5, True)
        wait_until(lambda: emergency == [True], 3, "emergency asserted")
        assert contact.is_active
        sim.module.set_input(5, False)
        wait_until(lambda: emergency == [True, False], 3, "emergency cleared")
    finally:
        beam.close()
        contact.close()


def test_a_module_killed_and_restarted_is_reconnected_and_its_coils_rewritten(sim, module):
    relay = Relay(module.coil(0), pulse_s=0.2, pin_factory=module)
    light = LaneLight(module.coil(1), module.coil(2), module.coil(3), pwm=False, pin_factory=module)
    try:
        light.show("#00FF00")  # held until the next command
        wait_until(lambda: sim.module.coils()[:4] == [False, False, True, False], 3, "green")

        sim.kill()  # the module loses power: its coils drop
        assert sim.module.coils()[:4] == [False] * 4
        wait_until(lambda: module.fault is not None, 3, "the driver to see the module gone")
        assert "door-a" in module.fault and "unreachable" in module.fault
        relay.pulse()  # asked while unreachable: ends before the module is back
        wait_until(lambda: not relay.is_energized, 3, "the pulse to end")

        sim.restart()
        wait_until(lambda: module.fault is None, 5, "the driver to reconnect")
        wait_until(lambda: sim.module.coils()[:4] == [False, False, True, False], 3, "green rewritten")
        assert not any(value for addr, value, _ in sim.changes if addr == 0)  # the relay never went on
        assert module.outages == 1
    finally:
        relay.close()
        light.close()


def test_coils_dropped_by_the_module_itself_are_rewritten():
    served = ModuleOnItsOwnLoop(watchdog_s=0.2)
    io = ModbusIoModule.tcp("door-b", "127.0.0.1", served.module.port, poll_ms=500, reconnect_max_s=0.2)
    relay = Relay(io.coil(7), safe_state="open", pin_factory=io)
    try:
        io.start()
        relay.to_safe_state()  # an emergency route: the relay rests energized
        wait_until(lambda: served.module.coil(7), 3, "the relay held open")
        # The master polls only every 500 ms, longer than the module's watchdog: the module drops
        # the relay between polls, and the driver puts it back when it reads the coils back.
        wait_until(lambda: served.module.watchdog_trips >= 1, 5, "the module's watchdog")
        wait_until(lambda: served.module.coil(7), 5, "the relay rewritten")
    finally:
        relay.close()
        io.close()
        served.close()


def test_a_module_never_reachable_is_a_fault_not_a_crash_and_close_returns():
    io = ModbusIoModule.tcp("nowhere", "127.0.0.1", 1, poll_ms=10, timeout_s=0.2, reconnect_max_s=0.1)
    relay = Relay(io.coil(0), pin_factory=io)
    io.start()
    try:
        assert not io.wait_connected(0.5)
        assert io.fault is not None and "nowhere" in io.fault and "127.0.0.1:1" in io.fault
        relay.pulse()  # recorded, never sent
        assert io.coil_wanted(0) is True
    finally:
        relay.close()
        io.close()
    assert not [t for t in threading.enumerate() if t.name == "modbus-nowhere"]


def test_pins_are_named_coil_or_input_and_each_serves_one_device(module):
    with pytest.raises(DriverError, match="'coil<n>' or 'input<n>'"):
        Relay(4, pin_factory=module)
    with pytest.raises(DriverError, match="input"):
        Relay(module.input(0), pin_factory=module)  # an input cannot drive a relay
    relay = Relay(module.coil(4), pin_factory=module)
    try:
        with pytest.raises(DriverError, match="already in use"):
            Relay(module.coil(4), pin_factory=module)
        with PassageSensor(module.input(4), pull_up=False, active_state=True, pin_factory=module):
            pass  # input 4 is not coil 4
    finally:
        relay.close()
