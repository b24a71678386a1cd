"""The technician's simulator: `gated sim` end to end, its console screen, its virtual devices."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from gated.config import load_config
from gated.drivers.gpio import Relay
from gated.drivers.qr_decode import decode_frame
from gated.validation.token import mint_dynamic, mint_static
from hw_sim.console import KEYS, render, visible_len
from hw_sim.devices import VirtualCamera, VirtualPins, VirtualSerialScanner
from hw_sim.sim import SIM_CONFIG, generate_config, to_toml
from tests.conftest import REPO

ROOT = REPO
GATED = str(Path(sys.executable).with_name("gated"))
KEY = bytes(range(32))


def test_a_short_headless_run_admits_refuses_moves_relays_and_journals_passages(tmp_path):
    run_dir = tmp_path / "sim"
    proc = subprocess.run(
        [GATED, "sim", "--in-process", "--run-dir", str(run_dir), "--duration", "8", "--rate", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "\x1b[" not in out  # not a terminal: plain lines, no screen control
    assert "gated sim: summary after" in out and "Traceback" not in proc.stderr

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["reasons"]["ok"] >= 3
    denials = {reason for reason in summary["reasons"] if reason != "ok"}
    assert len(denials) >= 4, summary["reasons"]  # forged, expired, noise, revoked... each with its own reason
    assert summary["lanes"]["in-1"]["relay_openings"] >= 2
    assert summary["relays_after_stop"] == {"in-1": "locked", "out-1": "locked"}
    assert summary["journal_records"]["passage"] >= 2
    assert summary["journal_records"]["not_passed"] >= 1  # the guest who turned back
    assert summary["journal_records"]["unexpected_passage"] >= 1  # the tailgater
    for reason in summary["reasons"]:
        assert f"{reason} " in out  # the summary line names every reason
    # Now and then someone is scanned at the registration desk, whose screen and badge folder are named at start.
    assert f"badges it prints: {run_dir.resolve() / 'badges'}" in out and "operator screen: http://127.0.0.1:" in out
    assert summary["lanes"]["desk-1"]["decisions"] >= 1 and "at the desk" in out

    stats = subprocess.run([GATED, "journal", "stats", "--config", str(run_dir / "gate.toml")],
                           capture_output=True, text=True, timeout=30)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["records"] == sum(summary["journal_records"].values())


def test_the_sim_config_template_is_checked_and_moves_into_the_run_dir(tmp_path):
    check = subprocess.run([GATED, "config", "check", str(SIM_CONFIG)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    busy_port = __import__("socket").socket()
    busy_port.bind(("127.0.0.1", 0))
    busy_port.listen()
    port = busy_port.getsockname()[1]
    template = tmp_path / "sim.toml"
    template.write_text(SIM_CONFIG.read_text().replace('target = "127.0.0.1:7443"', f'target = "127.0.0.1:{port}"'))
    try:
        data, notes = generate_config(template, tmp_path / "run")
    finally:
        busy_port.close()
    (tmp_path / "gate.toml").write_text(to_toml(data))
    config = load_config(tmp_path / "gate.toml")
    assert config.uplink.target != f"127.0.0.1:{port}" and any(str(port) in note for note in notes)
    assert config.gate.state_dir == tmp_path / "run" / "state"
    assert [lane.scanners[0].port for lane in config.lanes] == [str(tmp_path / "run" / f"scanner-{lane.id}") for lane in config.lanes]
    assert config.lanes[0].camera is not None


def test_the_virtual_camera_shows_the_held_code_to_the_real_decoder_then_the_empty_scene():
    now = [1000.0]
    camera = VirtualCamera(fps=15, clock=lambda: now[0])
    ok, frame = camera.read()
    assert ok and frame.shape == (480, 640) and frame.dtype.name == "uint8"
    assert decode_frame(frame) == []
    for ticket in range(1, 9):  # several presentations, each held a little differently
        code = mint_dynamic(KEY, 1, 100_000 + ticket, 1_763_020_800) if ticket % 2 else mint_static(KEY, 1, 100_000 + ticket, 0)
        camera.hold_up(code)
        now[0] += 0.1
        assert camera.holding == code
        assert decode_frame(camera.frame_now()) == [code], f"presentation {ticket}"
    now[0] += 1.5
    assert camera.holding is None and decode_frame(camera.frame_now()) == []
    camera.close()
    assert camera.read() == (False, None)


def test_the_virtual_camera_paces_frames_at_its_fps():
    camera = VirtualCamera(fps=20)
    started = time.monotonic()
    for _ in range(11):
        assert camera.read()[0]
    assert 0.45 <= time.monotonic() - started < 1.5


def test_pins_read_back_a_pulse_that_ended_between_two_looks_and_drive_the_beam(tmp_path):
    config = load_config(SIM_CONFIG)
    factory = MockFactory(pin_class=MockPWMPin)
    in_lane = config.lanes[0]
    relay = Relay(in_lane.relay.pin, pulse_s=0.1, pin_factory=factory)
    beam = factory.pin(in_lane.passage.pin)
    beam.function = "input"
    beam.pull = "up"  # as the passage sensor configures it: clear reads high
    pins = VirtualPins(factory, config)
    assert pins.sample()["in-1"].relay_open is False
    relay.pulse()
    assert pins.sample()["in-1"].relay_open is True
    time.sleep(0.2)
    relay.pulse()
    time.sleep(0.2)
    looked = pins.sample()["in-1"]
    assert looked.relay_open is False and looked.relay_openings == 1  # the second pulse, seen only in the pin's history
    assert pins.relay_openings()["in-1"] == 2
    pins.set_beam("in-1", True)
    assert beam.state == 0 and pins.sample()["in-1"].beam_broken is True
    pins.set_beam("in-1", False)
    assert beam.state == 1 and pins.sample()["in-1"].beam_broken is False
    relay.close()


def test_a_serial_scan_arrives_on_the_pty_with_its_suffix(tmp_path):
    scanner = VirtualSerialScanner(tmp_path / "scanner")
    try:
        fd = os.open(tmp_path / "scanner", os.O_RDONLY | os.O_NOCTTY)
        import tty
        tty.setraw(fd)
        assert scanner.scan("GT1:ABC")
        assert os.read(fd, 64) == b"GT1:ABC\r"
        os.close(fd)
    finally:
        scanner.close()
    assert not (tmp_path / "scanner").exists()


def _status(emergency=False):
    lane = {"id": "in-1", "zone": "hall-a", "direction": "in", "mode": "turnstile", "decisions": 5, "admitted": 3,
            "denied": 2, "repeats": 0, "passages": 2, "not_passed": 1, "pending_passages": 1, "relay_energized": True}
    return {
        "gate_id": "sim-gate", "uptime_s": 75.0, "emergency": emergency,
        "lanes": [lane, {**lane, "id": "out-1", "direction": "out", "pending_passages": 0}],
        "cache_version": 7, "cache_tickets": 320, "keys": [1],
        "clock": {"offset_s": 0.012, "trusted": True, "age_s": 1.0, "rtt_s": 0.001},
        "journal_backlog": 3, "uplink": {"configured": True, "connected": True, "target": "127.0.0.1:7443"},
    }


def _view(**kw):
    view = {
        "gate": _status(kw.pop("emergency", False)), "clock": "07:02:33", "auto": True, "rate": 30,
        "pins": {"in-1": {"relay_open": True, "light": (135, 206, 235), "buzzer": True, "beam_broken": False},
                 "out-1": {"relay_open": False, "light": (0, 0, 0), "buzzer": False, "beam_broken": True}},
        "recent": {"in-1": [{"time": "07:02:30", "reason": "bad_signature", "ticket": None, "category": None, "name": ""},
                            {"time": "07:02:31", "reason": "ok", "ticket": 100024, "category": "guest", "name": "Wang Fang"}]},
        "events": [{"time": "07:02:3%d" % (i % 10), "lane": "in-1", "text": f"event number {i}", "style": "crowd"} for i in range(40)],
        "registry": "127.0.0.1:7443 v7, 320 tickets, 12 events in", "uplink_target": "127.0.0.1:7443",
        "occupancy": {"zone": "hall-a", "inside": 23, "capacity": 50},
    }
    view.update(kw)
    return view


def test_the_console_screen_shows_the_lanes_as_their_pins_do_and_fits_the_terminal():
    lines = render(_view(), 100, 30)
    assert len(lines) == 30 and all(visible_len(line) == 100 for line in lines)
    screen = "\n".join(lines)
    assert "\x1b[48;2;135;206;235m" in screen  # the guest light blue, straight from the light pins
    assert "#87CEEB" in screen and "OPEN" in screen and "locked" in screen
    assert "BEEP" in screen and "BROKEN" in screen and "expecting 1 passage" in screen
    many = [{"time": f"07:01:{n:02d}", "reason": "ok", "ticket": 100_000 + n, "category": "guest", "name": ""} for n in range(9)]
    rows = render(_view(recent={"in-1": many}), 100, 30)
    assert [n for n in range(9) if any(f"#{100_000 + n}" in row for row in rows)] == [4, 5, 6, 7, 8]  # the newest that fit
    ok_row = next(line for line in lines if "#100024" in line)
    assert "\x1b[32mok" in ok_row and "guest" in ok_row
    assert "\x1b[31mbad_signature" in next(line for line in lines if "bad_signature" in line)
    assert "cache v7 320 tickets" in screen and "clock \x1b[32mtrusted" in screen and "offset +12 ms" in screen
    assert "journal backlog 3" in screen and "connected" in screen and "23/50 inside" in screen
    assert "event number 39" in screen and "event number 20" not in screen  # the newest events, as many as fit
    assert all(f"{key}\x1b[0m {what}" in screen for key, what in KEYS)  # every key is on the help lines
    assert "EMERGENCY" not in screen


def test_the_console_screen_shouts_an_emergency_and_copes_with_other_sizes():
    lines = render(_view(emergency=True, gate={**_status(True), "clock": {"offset_s": None, "trusted": False}}), 100, 30)
    screen = "\n".join(lines)
    assert "EMERGENCY" in lines[1] and "\x1b[1;97;41m" in lines[1]
    assert "NOT trusted" in screen
    for width, height in ((80, 24), (160, 50)):
        lines = render(_view(), width, height)
        assert len(lines) == height and all(visible_len(line) == width for line in lines)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_on_a_terminal_the_console_runs_takes_keys_and_gives_the_terminal_back(tmp_path):
    session = f"gated-sim-test-{os.getpid()}"
    done = tmp_path / "done"
    command = (f"cd {ROOT} && {GATED} sim --in-process --run-dir {tmp_path / 'sim'} --no-registry; "
               f"echo $? > {done}; stty -a > {tmp_path / 'stty'}; sleep 30")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command], check=True)

    def screen():
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    def wait_for(predicate, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.2)
        return False

    try:
        assert wait_for(lambda: "gate sim-gate" in screen() and "q quit" in screen()), screen()
        subprocess.run(["tmux", "send-keys", "-t", session, "a", "f"], check=True)  # auto off, then a forger
        assert wait_for(lambda: "bad_signature" in screen()), screen()
        assert "auto off" in screen()
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        assert wait_for(done.exists)
        time.sleep(0.3)
        assert done.read_text().strip() == "0"
        stty = (tmp_path / "stty").read_text()
        assert " icanon " in f" {stty} " and " echo " in f" {stty} "  # cooked mode again
        assert "gated sim: summary" in screen()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
