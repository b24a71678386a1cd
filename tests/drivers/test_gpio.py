"""GPIO drivers on gpiozero's MockFactory: what the pins do at the door.

Outputs are checked by reading the mock pins back (state and the recorded
history of changes with their durations). Inputs are driven with
`drive_low()` / `drive_high()`. Timed behaviour runs in real time with
short durations; every wait is bounded.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from gated.drivers.gpio import (
    AMBER,
    RED,
    Buzzer,
    EmergencyInput,
    LaneLight,
    PassageSensor,
    Relay,
    make_pin_factory,
    parse_color,
)
from gated.errors import DriverError
from tests import conftest

RELAY_PIN, RED_PIN, GREEN_PIN, BLUE_PIN, BUZZER_PIN, BEAM_PIN, EMERGENCY_PIN = (
    17, 5, 6, 13, 18, 23, 24)

# Mock pins time-stamp changes with the real clock on a shared CI box.
TOLERANCE_S = 0.05


@pytest.fixture
def factory():
    return MockFactory()


@pytest.fixture
def pwm_factory():
    return MockFactory(pin_class=MockPWMPin)


def wait_until(condition, timeout=2.0):
    return conftest.wait_until(condition, timeout)


def assert_history(pin, expected):
    """The pin went through exactly these (seconds since previous change,
    state) steps. gpiozero's assert_states_and_times zips, so a missing
    change would go unnoticed without the length check."""
    assert len(pin.states) == len(expected), pin.states
    pin.assert_states_and_times(expected)


def levels(pin):
    return [bool(change.state) for change in pin.states]


class FakeClock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


# --------------------------------------------------------------------------
# Relay


def test_an_admitted_guest_gets_one_pulse_of_the_configured_length(factory):
    with Relay(RELAY_PIN, pulse_s=0.2, pin_factory=factory) as relay:
        pin = factory.pin(RELAY_PIN)
        before = time.monotonic()
        assert relay.pulse() is True
        after = time.monotonic()

        assert pin.state and relay.is_energized
        assert before <= relay.last_pulse_started <= after
        wait_until(lambda: not relay.is_energized)
        assert_history(pin, [(0, False), (0, True), (0.2, False)])


def test_a_second_scan_during_the_pulse_extends_it_without_stacking(factory):
    with Relay(RELAY_PIN, pulse_s=0.3, pin_factory=factory) as relay:
        pin = factory.pin(RELAY_PIN)
        relay.pulse()
        first = relay.last_pulse_started
        time.sleep(0.15)
        relay.pulse()
        second = relay.last_pulse_started
        assert second - first >= 0.15

        wait_until(lambda: not relay.is_energized)
        # One opening that ends 0.3 s after the second scan: not 0.3 s after
        # the first (ignored), not 0.6 s after it (stacked).
        assert_history(pin, [(0, False), (0, True), (second - first + 0.3, False)])


def test_a_shorter_pulse_never_cuts_a_running_one_short(factory):
    with Relay(RELAY_PIN, pulse_s=0.3, pin_factory=factory) as relay:
        pin = factory.pin(RELAY_PIN)
        relay.pulse()
        relay.pulse(0.05)
        wait_until(lambda: not relay.is_energized)
        assert_history(pin, [(0, False), (0, True), (0.3, False)])


def test_active_low_relay_board_is_energized_by_driving_the_pin_low(factory):
    with Relay(RELAY_PIN, active_high=False, pulse_s=0.1, pin_factory=factory) as relay:
        pin = factory.pin(RELAY_PIN)
        assert pin.state is True  # at rest, de-energized

        relay.pulse()
        assert not pin.state
        wait_until(lambda: not relay.is_energized)
        assert pin.state


def test_fail_secure_relay_locks_on_close_even_mid_pulse(factory):
    relay = Relay(RELAY_PIN, pulse_s=5, safe_state="locked", pin_factory=factory)
    pin = factory.pin(RELAY_PIN)
    relay.pulse()
    started = time.monotonic()

    relay.close()
    relay.close()

    assert time.monotonic() - started < 1.0, "close must not wait for the pulse"
    assert not relay.is_energized
    assert levels(pin) == [False, True, False]
    assert pin.function == "input", "a locked relay releases its pin"
    with pytest.raises(DriverError, match="closed"):
        relay.pulse()


def test_fail_secure_active_low_relay_locks_on_close(factory):
    relay = Relay(RELAY_PIN, active_high=False, pulse_s=5, pin_factory=factory)
    pin = factory.pin(RELAY_PIN)
    relay.pulse()
    relay.close()
    assert levels(pin)[-1] is True  # high = de-energized on active-low boards


def test_emergency_route_relay_stays_open_after_close(factory):
    relay = Relay(RELAY_PIN, safe_state="open", pin_factory=factory)
    pin = factory.pin(RELAY_PIN)
    assert not pin.state, "in service the lane rests locked like any other"

    relay.close()
    relay.close()

    assert relay.is_energized
    assert pin.function == "output" and pin.state, "the line stays driven open"
    assert not relay_threads(), "the line stays driven, the timer thread does not"


def relay_threads():
    return [thread for thread in threading.enumerate()
            if thread.name == f"relay-{RELAY_PIN}"]


def test_closing_a_relay_stops_its_timer_thread(factory):
    relay = Relay(RELAY_PIN, pin_factory=factory)
    assert len(relay_threads()) == 1
    relay.close()
    assert relay_threads() == []


def test_emergency_route_active_low_relay_stays_open_after_close(factory):
    relay = Relay(RELAY_PIN, active_high=False, safe_state="open", pin_factory=factory)
    pin = factory.pin(RELAY_PIN)
    relay.close()
    assert pin.function == "output" and not pin.state


@pytest.mark.parametrize(("safe_state", "energized_when_stopped"),
                         [("locked", False), ("open", True)])
def test_a_stopped_lane_sits_in_its_safe_state_and_refuses_pulses(
        factory, safe_state, energized_when_stopped):
    with Relay(RELAY_PIN, pulse_s=5, safe_state=safe_state, pin_factory=factory) as relay:
        pin = factory.pin(RELAY_PIN)
        relay.pulse()
        relay.to_safe_state()
        assert relay.is_energized is energized_when_stopped
        assert bool(pin.state) is energized_when_stopped
        assert not relay.in_service

        assert relay.pulse() is False
        assert bool(pin.state) is energized_when_stopped

        relay.resume()
        assert not pin.state
        assert relay.pulse() is True and pin.state


def test_emergency_hold_outlasts_pulses_and_release_locks_again(factory):
    with Relay(RELAY_PIN, pulse_s=0.1, pin_factory=factory) as relay:
        pin = factory.pin(RELAY_PIN)
        relay.hold_open()
        relay.pulse()
        time.sleep(0.25)  # well past the pulse
        assert relay.is_held_open and relay.is_energized and pin.state

        relay.to_safe_state()
        assert pin.state, "stopping a fail-secure lane must not lock an evacuation"

        relay.release()
        assert not relay.is_energized and not pin.state
        assert levels(pin) == [False, True, False]


def test_release_drops_pulses_granted_during_the_hold(factory):
    with Relay(RELAY_PIN, pulse_s=5, pin_factory=factory) as relay:
        relay.hold_open()
        relay.pulse()
        relay.release()
        assert not relay.is_energized


def test_emergency_hold_keeps_a_fail_secure_lane_open_through_close(factory):
    relay = Relay(RELAY_PIN, safe_state="locked", pin_factory=factory)
    relay.hold_open()
    relay.close()
    assert factory.pin(RELAY_PIN).state


def test_on_change_reports_each_output_change_with_its_time(factory):
    changes = []
    with Relay(RELAY_PIN, pulse_s=0.1, pin_factory=factory,
               on_change=lambda active, at: changes.append((active, at))) as relay:
        relay.pulse()
        relay.pulse()  # extends: no change to report
        wait_until(lambda: len(changes) == 2)
    assert [active for active, _ in changes] == [True, False]
    assert changes[1][1] - changes[0][1] == pytest.approx(0.1, abs=TOLERANCE_S)


def test_a_failing_on_change_callback_does_not_leave_the_turnstile_open(factory):
    def broken_callback(active, at):
        raise RuntimeError("observer bug")

    with Relay(RELAY_PIN, pulse_s=0.05, pin_factory=factory,
               on_change=broken_callback) as relay:
        relay.pulse()
        wait_until(lambda: not relay.is_energized)
        assert not factory.pin(RELAY_PIN).state
        relay.pulse()
        assert factory.pin(RELAY_PIN).state


@pytest.mark.parametrize("kwargs", [{"safe_state": "ajar"}, {"pulse_s": 0},
                                    {"pulse_s": float("nan")}, {"pulse_s": True}])
def test_bad_relay_configuration_is_refused(factory, kwargs):
    with pytest.raises(DriverError):
        Relay(RELAY_PIN, pin_factory=factory, **kwargs)


def test_bad_pulse_length_is_refused(factory):
    with Relay(RELAY_PIN, pin_factory=factory) as relay:
        with pytest.raises(ValueError):
            relay.pulse(-1)
        assert not relay.is_energized


def test_a_pin_already_in_use_is_a_driver_error(factory):
    with Relay(RELAY_PIN, pin_factory=factory):
        with pytest.raises(DriverError, match=f"pin {RELAY_PIN}"):
            Buzzer(RELAY_PIN, pin_factory=factory)


# --------------------------------------------------------------------------
# Lane light


def channel_levels(factory):
    return tuple(factory.pin(pin).state for pin in (RED_PIN, GREEN_PIN, BLUE_PIN))


def test_staff_lane_shows_red_on_the_red_pin_only(factory):
    with LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, pin_factory=factory) as light:
        assert channel_levels(factory) == (False, False, False)
        light.show("#FF0000")
        assert channel_levels(factory) == (True, False, False)
        assert light.current_color == (1.0, 0.0, 0.0)


def test_on_off_light_thresholds_each_channel(factory):
    with LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, pin_factory=factory) as light:
        light.show((0.9, 0.6, 0.2))
        assert channel_levels(factory) == (True, True, False)
        # Light blue (guest) and dark blue (media) need PWM: on/off they are
        # white and blue.
        light.show("#ADD8E6")
        assert light.current_color == (1.0, 1.0, 1.0)
        light.show("#00008B")
        assert light.current_color == (0.0, 0.0, 1.0)


def test_pwm_light_tells_light_blue_from_dark_blue(pwm_factory):
    with LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, pwm=True, pin_factory=pwm_factory) as light:
        light.show("#ADD8E6")
        light_blue = channel_levels(pwm_factory)
        light.show("#00008B")
        dark_blue = channel_levels(pwm_factory)
    assert light_blue == pytest.approx((0xAD / 255, 0xD8 / 255, 0xE6 / 255))
    assert dark_blue == pytest.approx((0.0, 0.0, 0x8B / 255))


def test_pwm_light_on_pins_without_pwm_is_a_driver_error(factory):
    with pytest.raises(DriverError, match="lane light"):
        LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, pwm=True, pin_factory=factory)


def test_common_anode_light_drives_lit_channels_low(factory):
    with LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, active_high=False,
                   pin_factory=factory) as light:
        assert channel_levels(factory) == (True, True, True)  # all dark
        light.show("#00FF00")
        assert channel_levels(factory) == (True, False, True)


def test_timed_color_returns_to_the_idle_color(factory):
    with LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, idle_color="#0000FF",
                   pin_factory=factory) as light:
        assert light.current_color == (0.0, 0.0, 1.0)
        green, blue = factory.pin(GREEN_PIN), factory.pin(BLUE_PIN)
        green.clear_states()
        blue.clear_states()

        light.show("#00FF00", seconds=0.2)
        assert light.current_color == (0.0, 1.0, 0.0)
        wait_until(lambda: light.current_color == (0.0, 0.0, 1.0))
        assert_history(green, [(0, False), (0, True), (0.2, False)])
        assert_history(blue, [(0, True), (0, False), (0.2, True)])


def test_deny_blinks_red_and_amber_then_idles(factory):
    with LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, pin_factory=factory) as light:
        red, green = factory.pin(RED_PIN), factory.pin(GREEN_PIN)
        light.deny(seconds=0.6)
        assert light.current_color == RED
        wait_until(lambda: light.current_color == (0.0, 0.0, 0.0))

        # Red steady through the pattern; green (amber's yellow half on an
        # on/off light) toggles: this is not the steady red of a staff lane.
        assert levels(red) == [False, True, False]
        assert levels(green) == [False, True, False, True, False]
        assert red.states[-1].timestamp == pytest.approx(0.6, abs=TOLERANCE_S)


def test_deny_on_a_pwm_light_shows_true_amber(pwm_factory):
    with LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, pwm=True, pin_factory=pwm_factory) as light:
        light.deny(seconds=1.0)
        wait_until(lambda: light.current_color == AMBER)
        assert channel_levels(pwm_factory) == pytest.approx(AMBER)


def test_a_new_command_replaces_a_running_pattern(factory):
    with LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, pin_factory=factory) as light:
        light.deny(seconds=5)
        light.show("#00FF00", seconds=0.1)
        wait_until(lambda: light.current_color == (0.0, 0.0, 0.0))
        time.sleep(0.2)
        assert light.current_color == (0.0, 0.0, 0.0), "the deny blink must not resume"
        light.show("#FFFFFF")
        light.idle()
        assert channel_levels(factory) == (False, False, False)


def test_closing_the_light_turns_it_off_and_releases_the_pins(factory):
    light = LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, pin_factory=factory)
    light.show("#FFFFFF")
    light.close()
    light.close()
    assert channel_levels(factory) == (False, False, False)
    with pytest.raises(DriverError):
        light.idle()
    LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, pin_factory=factory).close()


@pytest.mark.parametrize("bad", ["blue", "#12345", "#GG0000", (1, 0), (1.5, 0, 0),
                                 (math.nan, 0, 0), None])
def test_bad_colors_are_refused(bad):
    with pytest.raises(ValueError):
        parse_color(bad)


def test_bad_idle_color_is_a_configuration_error(factory):
    with pytest.raises(DriverError, match="idle_color"):
        LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, idle_color="#blue", pin_factory=factory)


def test_hex_and_tuple_colors_agree():
    assert parse_color("#FF8000") == pytest.approx((1.0, 128 / 255, 0.0))
    assert parse_color([0, 0.5, 1]) == (0.0, 0.5, 1.0)


# --------------------------------------------------------------------------
# Buzzer


def test_ok_is_one_short_beep(factory):
    with Buzzer(BUZZER_PIN, pin_factory=factory) as buzzer:
        pin = factory.pin(BUZZER_PIN)
        assert buzzer.play("ok") is True
        assert buzzer.is_sounding
        wait_until(lambda: not buzzer.is_sounding)
        time.sleep(0.1)
        assert_history(pin, [(0, False), (0, True), (0.12, False)])


def test_deny_is_three_short_beeps(factory):
    with Buzzer(BUZZER_PIN, active_high=False, pin_factory=factory) as buzzer:
        pin = factory.pin(BUZZER_PIN)
        pin.clear_states()
        buzzer.play("deny")
        wait_until(lambda: len(pin.states) >= 7)
        time.sleep(0.1)
        assert not buzzer.is_sounding
        # Active-low: sounding means low.
        assert_history(pin, [(0, True),
                             (0, False), (0.12, True), (0.1, False),
                             (0.12, True), (0.1, False), (0.12, True)])


def test_alarm_sounds_until_stopped_and_ignores_decision_beeps(factory):
    with Buzzer(BUZZER_PIN, pin_factory=factory) as buzzer:
        pin = factory.pin(BUZZER_PIN)
        buzzer.play("alarm")
        assert buzzer.play("ok") is False
        assert buzzer.play("deny") is False
        time.sleep(0.3)
        assert buzzer.alarm_active and pin.state
        assert levels(pin) == [False, True]

        buzzer.stop()
        assert not pin.state and not buzzer.alarm_active
        assert buzzer.play("ok") is True


def test_stop_cuts_a_deny_pattern_short(factory):
    with Buzzer(BUZZER_PIN, pin_factory=factory) as buzzer:
        pin = factory.pin(BUZZER_PIN)
        buzzer.play("deny")
        buzzer.stop()
        time.sleep(0.4)
        assert levels(pin) == [False, True, False]


def test_unknown_buzzer_pattern_is_refused(factory):
    with Buzzer(BUZZER_PIN, pin_factory=factory) as buzzer:
        with pytest.raises(ValueError, match="expected one of ok, deny, alarm"):
            buzzer.play("fanfare")


def test_closing_the_buzzer_silences_it(factory):
    buzzer = Buzzer(BUZZER_PIN, pin_factory=factory)
    buzzer.play("alarm")
    buzzer.close()
    buzzer.close()
    assert not factory.pin(BUZZER_PIN).state


# --------------------------------------------------------------------------
# Passage sensor


def test_each_person_breaking_the_beam_is_one_passage(factory):
    clock = FakeClock()
    passages = []
    with PassageSensor(BEAM_PIN, pin_factory=factory, on_passage=passages.append,
                       clock=clock) as sensor:
        beam = factory.pin(BEAM_PIN)
        assert beam.state is True and not sensor.beam_broken  # pulled up, beam intact

        beam.drive_low()
        assert sensor.beam_broken
        clock.now += 0.6
        beam.drive_high()
        clock.now += 1.0
        beam.drive_low()
        clock.now += 0.5
        beam.drive_high()

    assert passages == [100.0, 101.6]


def test_chatter_at_either_end_of_a_passage_is_one_passage(factory):
    clock = FakeClock()
    passages = []
    with PassageSensor(BEAM_PIN, bounce_s=0.02, pin_factory=factory,
                       on_passage=passages.append, clock=clock) as sensor:
        beam = factory.pin(BEAM_PIN)
        for step_s, broken in [(0, True), (0.005, False), (0.004, True),   # coat edge in
                               (0.7, False), (0.003, True), (0.006, False),  # coat edge out
                               (0.019, True)]:  # still too soon after clearing
            clock.now += step_s
            beam.drive_low() if broken else beam.drive_high()
        assert passages == [100.0]
        assert sensor.passage_count == 1

        clock.now += 0.5
        beam.drive_high()
        clock.now += 0.025  # clear for longer than bounce_s: the next person
        beam.drive_low()
        assert len(passages) == 2


def preset_input(factory, pin_number, high):
    """Set an input's level before a driver opens it. Only an external pull
    (pull_up=None) keeps it: MockPin drives itself to an internal pull."""
    pin = factory.pin(pin_number)
    pin.function = "input"
    pin.drive_high() if high else pin.drive_low()
    return pin


def test_someone_standing_in_the_beam_at_start_must_walk_through_first(factory):
    beam = preset_input(factory, BEAM_PIN, high=False)
    passages = []
    with PassageSensor(BEAM_PIN, pull_up=None, active_state=False, pin_factory=factory,
                       on_passage=passages.append) as sensor:
        assert sensor.beam_broken
        time.sleep(0.03)
        beam.drive_high()
        time.sleep(0.03)
        beam.drive_low()
    assert len(passages) == 1


def test_sensor_with_external_pull_and_active_high_output(factory):
    passages = []
    with PassageSensor(BEAM_PIN, pull_up=None, active_state=True, pin_factory=factory,
                       on_passage=passages.append):
        beam = factory.pin(BEAM_PIN)
        beam.drive_low()
        beam.drive_high()
    assert len(passages) == 1


def test_sensor_with_no_pull_needs_its_active_state(factory):
    with pytest.raises(DriverError, match="active_state"):
        PassageSensor(BEAM_PIN, pull_up=None, pin_factory=factory)


def test_a_failing_passage_callback_does_not_stop_later_passages(factory):
    clock = FakeClock()
    seen = []

    def on_passage(at):
        seen.append(at)
        raise RuntimeError("lane bug")

    with PassageSensor(BEAM_PIN, pin_factory=factory, on_passage=on_passage, clock=clock):
        beam = factory.pin(BEAM_PIN)
        for _ in range(2):
            beam.drive_low()
            clock.now += 1
            beam.drive_high()
            clock.now += 1
    assert seen == [100.0, 102.0]


# --------------------------------------------------------------------------
# Emergency input


def test_emergency_button_asserts_and_clears(factory):
    clock = FakeClock()
    changes = []
    with EmergencyInput(EMERGENCY_PIN, pin_factory=factory, clock=clock,
                        on_change=lambda active, at: changes.append((active, at))) as emergency:
        contact = factory.pin(EMERGENCY_PIN)
        assert not emergency.is_active and changes == []

        contact.drive_low()  # normally open button closes to ground
        assert emergency.is_active
        clock.now += 300
        contact.drive_high()
        assert not emergency.is_active
    assert changes == [(True, 100.0), (False, 400.0)]


def test_normally_closed_emergency_loop_asserts_when_the_wire_is_cut(factory):
    changes = []
    with EmergencyInput(EMERGENCY_PIN, active_high=True, pull_up=True, pin_factory=factory,
                        on_change=lambda active, at: changes.append(active)) as emergency:
        # Nothing connected yet: an open loop is an emergency, reported at start.
        assert emergency.is_active
        contact = factory.pin(EMERGENCY_PIN)
        contact.drive_low()  # loop closed to ground: all clear
        assert not emergency.is_active
        contact.drive_high()  # wire cut: the pull-up wins
        assert emergency.is_active
    assert changes == [True, False, True]


def test_a_gate_booting_during_an_evacuation_is_told_at_once(factory):
    preset_input(factory, EMERGENCY_PIN, high=False)
    changes = []
    with EmergencyInput(EMERGENCY_PIN, active_high=False, pull_up=None, pin_factory=factory,
                        on_change=lambda active, at: changes.append(active)) as emergency:
        assert emergency.is_active
    assert changes == [True]


def test_emergency_input_with_external_pull_down(factory):
    changes = []
    with EmergencyInput(EMERGENCY_PIN, active_high=True, pull_up=None, pin_factory=factory,
                        on_change=lambda active, at: changes.append(active)):
        contact = factory.pin(EMERGENCY_PIN)
        contact.drive_high()
        contact.drive_low()
    assert changes == [True, False]


# --------------------------------------------------------------------------
# Every device: one life cycle (GpioDevice)

DEVICES = {
    "relay": (lambda f: Relay(RELAY_PIN, pin_factory=f), f"relay on pin {RELAY_PIN}",
              [lambda d: d.pulse(), lambda d: d.hold_open(), lambda d: d.release(),
               lambda d: d.to_safe_state(), lambda d: d.resume()]),
    "lane light": (lambda f: LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, pin_factory=f),
                   f"lane light on pins {(RED_PIN, GREEN_PIN, BLUE_PIN)!r}",
                   [lambda d: d.show("#00FF00"), lambda d: d.deny(), lambda d: d.idle()]),
    "buzzer": (lambda f: Buzzer(BUZZER_PIN, pin_factory=f), f"buzzer on pin {BUZZER_PIN}",
               [lambda d: d.play("ok"), lambda d: d.stop()]),
    "passage sensor": (lambda f: PassageSensor(BEAM_PIN, pin_factory=f),
                       f"passage sensor on pin {BEAM_PIN}", []),
    "emergency input": (lambda f: EmergencyInput(EMERGENCY_PIN, pin_factory=f),
                        f"emergency input on pin {EMERGENCY_PIN}", []),
}


@pytest.mark.parametrize("kind", DEVICES)
def test_every_device_closes_once_as_a_context_manager_and_refuses_commands_after(factory, kind):
    build, name, commands = DEVICES[kind]
    with build(factory) as device:
        assert device.closed is False
    assert device.closed is True
    device.close()
    assert device.closed is True
    for command in commands:
        with pytest.raises(DriverError, match=f"^{re.escape(name)} is closed$"):
            command(device)
    # Its pins are free again: the same device opens on them at once.
    build(factory).close()


@pytest.mark.parametrize("kind", DEVICES)
def test_a_device_closed_by_an_exception_in_its_block_is_closed(factory, kind):
    build, _, _ = DEVICES[kind]
    with pytest.raises(RuntimeError, match="lane bug"):
        with build(factory) as device:
            raise RuntimeError("lane bug")
    assert device.closed


def test_closed_inputs_report_nothing_more(factory):
    passages, changes = [], []
    sensor = PassageSensor(BEAM_PIN, pin_factory=factory, on_passage=passages.append)
    emergency = EmergencyInput(EMERGENCY_PIN, pin_factory=factory,
                               on_change=lambda active, at: changes.append(active))
    sensor.close()
    emergency.close()
    factory.pin(BEAM_PIN).drive_low()
    factory.pin(EMERGENCY_PIN).drive_low()
    assert passages == [] and changes == []


# --------------------------------------------------------------------------
# Pin factory


def test_mock_factory_supports_pwm_lights():
    pin_factory = make_pin_factory("mock")
    assert isinstance(pin_factory, MockFactory)
    with LaneLight(RED_PIN, GREEN_PIN, BLUE_PIN, pwm=True, pin_factory=pin_factory) as light:
        light.show("#808080")
        assert pin_factory.pin(RED_PIN).state == pytest.approx(128 / 255)


def test_unknown_pin_factory_is_refused():
    with pytest.raises(DriverError, match="unknown pin factory 'pigpio'"):
        make_pin_factory("pigpio")


def test_missing_gpio_library_is_a_driver_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", None)
    with pytest.raises(DriverError, match="'lgpio' is unavailable"):
        make_pin_factory("lgpio")


def test_auto_detection_never_falls_back_to_mock_pins(monkeypatch):
    for module in ("gpiozero.pins.lgpio", "gpiozero.pins.rpigpio", "gpiozero.pins.native"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    with pytest.raises(DriverError, match="no GPIO backend"):
        make_pin_factory(None)
