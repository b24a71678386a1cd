"""The rehearsal: the gate as its own process, the cable to the registry cut, its power cut, a scripted day.

Everything here is the real thing: `python -m gated run` as a child process,
ptys for its scanners, the reference registry over real gRPC through the
proxy, the gate's SQLite journal read from its file, HTTP to the control API.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import grpc
import pytest

from hw_sim.control import start_api
from hw_sim.proxy import CuttableProxy
from hw_sim.rehearsal import Rehearsal
from hw_sim.scenario import ScenarioError, ScenarioRun, failed, load, parse
from tests.conftest import REPO, until

GATED = str(Path(sys.executable).with_name("gated"))
SCENARIOS = REPO / "scenarios"


# --------------------------------------------------------------------------
# The proxy: a real gRPC stream through it, cut both ways


def _ticker_server() -> grpc.aio.Server:
    """A gRPC server with one server-streaming method: a tick every 20 ms (raw bytes, no protobuf needed)."""
    async def ticks(request: bytes, context):
        n = 0
        while True:
            yield str(n).encode()
            n += 1
            await asyncio.sleep(0.02)

    async def ping(request: bytes, context) -> bytes:
        return b"pong:" + request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Ticker", {
        "Ticks": grpc.unary_stream_rpc_method_handler(ticks),
        "Ping": grpc.unary_unary_rpc_method_handler(ping),
    }),))
    return server


def test_the_proxy_cuts_a_live_grpc_stream_by_drop_and_by_blackhole_and_restores_it():
    async def scene():
        server = _ticker_server()
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        proxy = CuttableProxy("127.0.0.1", port)
        await proxy.start()
        options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 200)]
        channel = grpc.aio.insecure_channel(proxy.address, options=options)
        ticks = channel.unary_stream("/test.Ticker/Ticks")
        ping = channel.unary_unary("/test.Ticker/Ping")
        try:
            assert await ping(b"1", timeout=5) == b"pong:1"
            # A stream flows; "drop" resets it at once and refuses new calls.
            call = ticks(b"")
            got = [await call.read() for _ in range(3)]
            assert got == [b"0", b"1", b"2"]
            started = time.monotonic()
            await proxy.cut("drop")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                while True:
                    await asyncio.wait_for(call.read(), 5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() - started < 2
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ping(b"2", timeout=1)
            assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert proxy.status()["live"] == 0

            await proxy.restore()
            await until(lambda: True)
            deadline = time.monotonic() + 10
            while True:  # the channel reconnects on its own backoff
                try:
                    assert await ping(b"3", timeout=1) == b"pong:3"
                    break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() < deadline, "no reconnect through the restored proxy"
            # "blackhole": the stream just stops (no error, nothing), and a new call hangs until its deadline.
            call = ticks(b"")
            await call.read()
            await proxy.cut("blackhole")
            await asyncio.sleep(0.1)  # ticks already on the wire may still arrive
            before = proxy.bytes_down
            with pytest.raises(asyncio.TimeoutError):
                while True:
                    await asyncio.wait_for(call.read(), 0.5)
            assert proxy.bytes_down == before
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ping(b"4", timeout=0.5)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            call.cancel()

            await proxy.restore()
            deadline = time.monotonic() + 15
            while True:
                try:
                    assert await ping(b"5", timeout=1) == b"pong:5"
                    break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() < deadline, "no reconnect after the blackhole"
            assert proxy.cuts == 2 and proxy.status()["cut"] is None
        finally:
            await channel.close()
            await proxy.stop()
            await server.stop(0)

    asyncio.run(scene())


# --------------------------------------------------------------------------
# Scenarios: every shipped file loads; bad ones are refused in one line


def test_every_shipped_scenario_loads_and_names_lanes_the_simulator_has():
    files = sorted(SCENARIOS.glob("*.toml"))
    assert {f.name for f in files} >= {"quiet-morning.toml", "rush-with-outage.toml", "power-cuts.toml"}
    for path in files:
        s = load(path)
        assert set(s.arrivals_per_min) <= {"in-1", "out-1", "desk-1"}, path
        assert s.real_duration_s <= 150, f"{path}: keep a shipped scenario under a few real minutes"
    assert any(f.kind == "power_cut" for f in load(SCENARIOS / "power-cuts.toml").faults)
    assert any(f.kind == "network_cut" for f in load(SCENARIOS / "rush-with-outage.toml").faults)


@pytest.mark.parametrize("data, says", [
    ({"lanes": {"in-1": {"arrivals_per_min": 5}}}, "duration_s is required"),
    ({"duration_s": 10}, "[lanes.ID] tables"),
    ({"duration_s": 10, "lanes": {"in-1": {"arrivals_per_min": -1}}}, "lanes.in-1.arrivals_per_min must be between"),
    ({"duration_s": 10, "lanes": {"in-1": {"arrivals_per_min": 5}}, "bad": {"forged": 0.7, "noise": 0.6}}, "add up to 1.3"),
    ({"duration_s": 10, "lanes": {"in-1": {"arrivals_per_min": 5}}, "bad": {"smuggled": 0.1}}, "bad.smuggled: unknown kind"),
    ({"duration_s": 10, "lanes": {"in-1": {"arrivals_per_min": 5}}, "fault": [{"at_s": 3, "kind": "earthquake"}]}, "fault 1: kind must be"),
    ({"duration_s": 10, "lanes": {"in-1": {"arrivals_per_min": 5}}, "fault": [{"at_s": 30, "kind": "power_cut"}]}, "fault 1: at_s must be between 0 and 10"),
    ({"duration_s": 10, "lanes": {"in-1": {"arrivals_per_min": 5}}, "fault": [{"at_s": 3, "kind": "network_cut", "mode": "unplug"}]}, "mode must be one of drop, blackhole"),
    ({"duration_s": 10, "lanes": {"in-1": {"arrivals_per_min": 5}}, "fault": [{"at_s": 3, "kind": "tailgate", "lane": "side-9"}]}, "lane must be one of"),
    ({"duration_s": 10, "speed": 0, "lanes": {"in-1": {"arrivals_per_min": 5}}}, "speed must be between"),
    ({"duration_s": 10, "lanes": {"in-1": {"arrivals_per_min": 5}}, "lunch": 1}, "unknown key 'lunch'"),
])
def test_a_bad_scenario_gets_one_line_naming_the_key(data, says):
    with pytest.raises(ScenarioError) as err:
        parse(data, "day.toml")
    message = str(err.value)
    assert says in message and message.startswith("day.toml") and "\n" not in message


def test_gated_sim_with_a_broken_scenario_answers_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("duration_s = 10\n[lanes.in-1]\narrivals_per_min = 'many'\n")
    proc = subprocess.run([GATED, "sim", "--scenario", str(bad), "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "lanes.in-1.arrivals_per_min must be a number" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------
# A short scripted day with a power cut and a network outage


SHORT_DAY = """
name = "short day"
duration_s = 22
seed = 4
[lanes.in-1]
arrivals_per_min = 70
[lanes.out-1]
arrivals_per_min = 15
[bad]
forged = 0.08
expired = 0.08
noise = 0.05
revoked = 0.05
[[fault]]
at_s = 5
kind = "network_cut"
mode = "blackhole"
[[fault]]
at_s = 9
kind = "power_cut"
off_s = 2
[[fault]]
at_s = 15
kind = "network_restore"
"""


def test_a_short_day_with_a_power_cut_and_an_outage_loses_nothing(tmp_path):
    path = tmp_path / "short.toml"
    path.write_text(SHORT_DAY)
    run_dir = tmp_path / "run"
    proc = subprocess.run([GATED, "sim", "--scenario", str(path), "--json", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = json.loads(proc.stdout)  # one JSON object, progress on stderr
    assert "Traceback" not in proc.stderr

    assert s["power_cuts"] == 1 and s["network_cuts"] == 1 and s["boots"] == 2
    assert s["presented"] >= 12, s
    assert s["unanswered"] == 0, s
    assert s["admitted"] + s["denied"] == s["presented"], s
    assert s["admitted"] >= 5 and s["denied"] >= 1, s
    # Every answer is a journaled decision, one per presentation (a scan at a gate without power is scanned
    # again); every record reached the registry once.
    assert s["journal_decisions"] == s["presented"] and s["scans"] >= s["presented"]
    assert s["drained"] and s["registry_events"] == s["journal_records"], s
    assert s["lost"] == 0 and s["duplicated"] == 0 and s["double_admissions"] == 0
    assert s["relay_openings"] == s["admitted_by_lane"]["in-1"] + s["admitted_by_lane"]["out-1"]
    assert s["scan_to_decision_ms"]["n"] == s["presented"] and s["scan_to_decision_ms"]["p50"] > 0
    assert not failed(s)
    assert json.loads((run_dir / "summary.json").read_text())["presented"] == s["presented"]

    # Cross-checked from the files a technician would open: the journal's two epochs, the registry's events.
    import sqlite3
    with sqlite3.connect(run_dir / "state" / "journal.db") as j:
        decisions = j.execute("SELECT count(*) FROM records WHERE kind = 'decision'").fetchone()[0]
        epochs = j.execute("SELECT count(*) FROM epochs").fetchone()[0]
    with sqlite3.connect(run_dir / "registry.db") as r:
        held = r.execute("SELECT count(*) FROM events WHERE kind = 'decision'").fetchone()[0]
        registry_epochs = r.execute("SELECT count(DISTINCT epoch) FROM events").fetchone()[0]
    assert decisions == held == s["journal_decisions"]
    assert epochs >= 2 and registry_epochs >= 2  # the boot after the power cut started a new epoch


# --------------------------------------------------------------------------
# The control API on a running rehearsal


def test_the_control_api_drives_codes_faults_and_the_registry(tmp_path):
    async def scene():
        rehearsal = Rehearsal(tmp_path / "run")
        await rehearsal.start()
        api = await start_api(rehearsal, 0)
        origin = api.url.rstrip("/")
        try:
            async with aiohttp.ClientSession(headers={"Origin": origin}) as http:
                async def post(path, body=None, expect=200):
                    if path == "/api/present":
                        await asyncio.sleep(0.22)  # one person after another: under the lane's rate limit (5/s)
                    async with http.post(origin + path, json=body or {}) as resp:
                        data = await resp.json()
                        assert resp.status == expect, (path, data)
                        return data

                async with http.get(origin + "/api/state") as resp:
                    state = await resp.json()
                assert state["gate"]["state"] == "running" and state["gate"]["serving"]
                assert [lane["id"] for lane in state["lanes"]] == ["in-1", "out-1", "desk-1"]

                # Codes of every kind, each answered with its reason from the gate's journal.
                expect = {"valid": "ok", "badge": "ok", "forged": "bad_signature", "expired": "code_expired",
                          "revoked": "revoked", "old_badge": "superseded_badge", "wrong_day": "outside_validity",
                          "unknown_ticket": "unknown_ticket", "noise": "bad_format"}
                for kind, reason in expect.items():
                    answer = await post("/api/present", {"lane": "in-1", "kind": kind})
                    assert answer["reason"] == reason, (kind, answer)
                # At the camera: the phone held up to the lane's IP camera (MJPEG over HTTP, decoded by the gate).
                shown = await post("/api/present", {"lane": "in-1", "kind": "valid", "via": "camera"})
                assert shown["reason"] == "ok" and shown["via"] == "camera"
                # The answer comes from the journal, written before the relay fires: the coil follows.
                await until(lambda: (rehearsal.presentations[-1].relay_ms or 0) > 0, 5, "the relay coil at the module")
                assert "no camera" in (await post("/api/present", {"lane": "out-1", "via": "camera"}, 400))["error"]
                await rehearsal.turnstile_locked("in-1")
                # A 10-digit-looking ticket nobody sold, and a raw code.
                answer = await post("/api/present", {"lane": "in-1", "kind": "unknown_ticket", "ticket": 5205320758})
                assert answer["reason"] == "unknown_ticket" and answer["ticket"] == 5205320758
                assert (await post("/api/present", {"lane": "in-1", "code": "NOT-A-CODE"}))["reason"] == "bad_format"

                # Bad requests: one line each, nothing done.
                assert "lane" in (await post("/api/present", {"kind": "valid"}, 400))["error"]
                assert "no lane 'side-9'" in (await post("/api/present", {"lane": "side-9"}, 400))["error"]
                assert "unknown kind" in (await post("/api/present", {"lane": "in-1", "kind": "bribe"}, 400))["error"]
                assert "no fault" in (await post("/api/fault/meteor", {}, 404))["error"]
                async with http.post(origin + "/api/present", data="{not json") as resp:
                    assert resp.status == 400 and "not JSON" in (await resp.json())["error"]
            async with aiohttp.ClientSession() as stranger:  # another site's page: no Origin of ours
                async with stranger.post(origin + "/api/fault/power_cut", json={}) as resp:
                    assert resp.status == 403
            assert rehearsal.gate.running

            async with aiohttp.ClientSession(headers={"Origin": origin}) as http:
                async def post(path, body=None, expect=200):
                    if path == "/api/present":
                        await asyncio.sleep(0.22)  # one person after another: under the lane's rate limit (5/s)
                    async with http.post(origin + path, json=body or {}) as resp:
                        data = await resp.json()
                        assert resp.status == expect, (path, data)
                        return data

                # Revoked at the registry: the gate hears it through the proxy and refuses the next scan.
                person = rehearsal.pick("valid")
                await post("/api/registry/revoke", {"ticket": person.ticket_id})
                await until(lambda: (rehearsal.status.get("cache_version") or 0) > 2, 10, "the revocation's delta")
                answer = await post("/api/present", {"lane": "in-1", "kind": "valid", "ticket": person.ticket_id})
                assert answer["reason"] == "revoked"
                # Reprinted: the old badge is superseded, the new one admits.
                other = rehearsal.pick("valid")
                version = rehearsal.status["cache_version"]
                assert (await post("/api/registry/reprint", {"ticket": other.ticket_id}))["badge_serial"] == 1
                await until(lambda: rehearsal.status.get("cache_version", 0) > version, 10, "the reprint's delta")
                assert (await post("/api/present", {"lane": "in-1", "kind": "old_badge", "ticket": other.ticket_id}))["reason"] == "superseded_badge"
                assert (await post("/api/present", {"lane": "in-1", "kind": "badge", "ticket": other.ticket_id}))["reason"] == "ok"

                # The scanner unplugged: nothing reaches the gate; plugged back, it reads again.
                await post("/api/fault/scanner_unplug", {"lane": "out-1"})
                assert not Path(rehearsal.config.lanes[1].scanners[0].port).exists()
                assert (await post("/api/present", {"lane": "out-1", "kind": "valid"}))["decided"] is False
                # The gate has seen it gone (its status is polled: else a stale "connected" passes the wait below).
                await until(lambda: not rehearsal.status.get("inputs_connected"), 10, "the gate to miss the scanner")
                await post("/api/fault/scanner_replug", {"lane": "out-1"})
                await until(lambda: rehearsal.status.get("inputs_connected"), 10, "the scanner reopened by the gate")
                assert (await post("/api/present", {"lane": "out-1", "kind": "valid"}))["reason"] == "ok"

                # The network cut: the uplink goes down, the gate admits offline, the backlog waits, then drains.
                await post("/api/fault/network_cut", {"mode": "drop"})
                await until(lambda: rehearsal.status.get("uplink", {}).get("connected") is False, 10, "the uplink down")
                assert (await post("/api/present", {"lane": "in-1", "kind": "valid"}))["reason"] == "ok"
                await until(lambda: (rehearsal.status.get("journal_backlog") or 0) > 0, 5, "a backlog")
                await post("/api/fault/network_restore")
                await until(lambda: rehearsal.status.get("journal_backlog") == 0, 20, "the backlog drained")

                # Emergency through the contact; line noise; a power cut and the gate back deciding.
                await post("/api/fault/emergency", {"active": True})
                await until(lambda: rehearsal.status.get("emergency") is True, 5, "the emergency")
                await post("/api/fault/emergency", {"active": False})
                noise = await post("/api/fault/line_noise", {"lane": "in-1", "bursts": 3})
                assert noise["reasons"] == ["bad_format"] * 3
                pid = rehearsal.gate.pid
                cut = await post("/api/fault/power_cut", {"off_s": 0.5})
                assert cut["pid"] == pid and not Path(f"/proc/{pid}").exists()
                await rehearsal.gate_up(20)
                assert rehearsal.gate.pid != pid
                assert (await post("/api/present", {"lane": "in-1", "kind": "valid"}))["reason"] == "ok"

                # The SSE stream carries the same state and the records as they are journaled.
                async with http.get(origin + "/api/events") as resp:
                    assert resp.headers["Content-Type"].startswith("text/event-stream")
                    first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)  # retry line
                    frame = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
                    assert frame.startswith(b"event: state\ndata: ")
                    assert json.loads(frame.split(b"data: ", 1)[1])["gate"]["power_cuts"] == 1

            assert await rehearsal.drain(20)
            from hw_sim.scenario import summarize
            s = summarize(rehearsal)
            assert s["lost"] == 0 and s["duplicated"] == 0 and s["registry_events"] == s["journal_records"]
        finally:
            await api.stop()
            await rehearsal.stop()

    asyncio.run(scene())


def test_the_gates_clock_set_two_hours_ahead_runs_under_libfaketime(tmp_path):
    from hw_sim.gateproc import faketime_library

    if faketime_library() is None:
        pytest.skip("faketime is not installed (apt-get install faketime; .ci/run installs it)")

    async def scene():
        rehearsal = Rehearsal(tmp_path / "run")
        await rehearsal.start()
        try:
            await rehearsal.clock_jump(7200)
            assert rehearsal.gate.under_faketime and rehearsal.gate.boots == 2
            # The gate measures the registry's clock through the proxy: two hours behind its own.
            await until(lambda: (rehearsal.status.get("clock") or {}).get("offset_s") is not None, 15, "a clock offset")
            assert abs(rehearsal.status["clock"]["offset_s"] + 7200) < 5
            answer = await rehearsal.present("in-1", kind="valid")  # a phone on true time still gets in
            assert answer.reason == "ok"
            gate_time = json.loads((tmp_path / "run" / "gated.log").read_text().splitlines()[-1]).get("timestamp")
            assert gate_time is not None
        finally:
            await rehearsal.stop()

    asyncio.run(scene())


def test_a_power_cut_is_seen_at_the_io_module_as_the_relay_coil_falling_by_its_watchdog(tmp_path):
    async def scene():
        rehearsal = Rehearsal(tmp_path / "run")
        await rehearsal.start()
        try:
            relay = rehearsal.coil_of[("in-1", "relay")]
            edges = []
            rehearsal.io.on_coil_change(lambda addr, on, at: edges.append((on, at)) if addr == relay else None)
            await until(lambda: rehearsal.io.connected, 5, "the gate polling its I/O module")
            # A guest is admitted: the relay coil rises at the module; the light shows; the guest walks through.
            answer = await rehearsal.present("in-1", kind="valid")
            assert answer.reason == "ok"
            await until(lambda: rehearsal.io.coil(relay), 2, "the relay coil")
            assert answer.relay_ms is not None and answer.relay_ms > 0
            await rehearsal.walk("in-1")
            await until(lambda: any(r["kind"] == "passage" for r in rehearsal.records), 3, "the passage journaled")
            await until(lambda: not rehearsal.io.coil(relay), 3, "the pulse's end")

            # The next guest is admitted, and the power goes while the turnstile is released.
            trips = rehearsal.io.watchdog_trips
            answer = await rehearsal.present("in-1", kind="valid")
            assert answer.reason == "ok"
            await until(lambda: rehearsal.io.coil(relay), 2, "the relay coil")
            await rehearsal.power_cut(off_s=None)
            killed_at = time.monotonic()
            # Nobody writes the coil any more: only the module's watchdog drops it, about a second later.
            await until(lambda: not rehearsal.io.coil(relay), 3, "the relay falling")
            fell_at = edges[-1][1]
            assert edges[-1][0] is False and rehearsal.io.watchdog_trips == trips + 1
            assert fell_at >= killed_at - 0.05 and not rehearsal.io.connected
            assert rehearsal.state()["lanes"][0]["relay_open"] is False

            # Power back: the gate polls again, the relay stays locked, and the admission whose outcome
            # the cut lost counts as used (journaled at boot with "outcome": "unknown").
            await rehearsal.power_restore()
            await until(lambda: rehearsal.io.connected, 5, "the gate back on its module")
            await until(lambda: any(r["kind"] == "passage" and r["payload"].get("outcome") == "unknown"
                                    for r in rehearsal.records), 5, "the unknown outcome counted")
            assert not rehearsal.io.coil(relay)
            assert (await rehearsal.present("in-1", kind="valid")).reason == "ok"
        finally:
            await rehearsal.stop()

    asyncio.run(scene())


# --------------------------------------------------------------------------
# `gated sim` as a technician starts it: a serving API, and nothing left behind


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_gated_sim_serves_its_console_and_api_and_stops_leaving_no_process_or_port(tmp_path):
    import re
    import urllib.parse
    import urllib.request
    from http.cookiejar import CookieJar

    proc = subprocess.Popen([GATED, "sim", "--run-dir", str(tmp_path / "run"), "--api-port", "0", "--rate", "30"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = console = dashboard = None
        deadline = time.monotonic() + 60
        lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("console: "):
                console = line.split()[1]
            found = re.search(r"registry dashboard: (http://127\.0\.0\.1:\d+/)dashboard +\(demo account: demo, password (\S+),", line)
            if found:
                dashboard, password = found.groups()
            if "control API: " in line:
                url = line.split("control API: ", 1)[1].split()[0]
        assert url, "".join(lines) + proc.stderr.read() if proc.poll() is not None else "".join(lines)
        # The console's address is the first line, before the gate starts; then the dashboard with its password.
        assert lines[0] == f"console: {console}\n" and url == console + "api/state", lines
        assert dashboard is not None and dashboard != console, lines

        # The console page, its script and its style, all from the package.
        with urllib.request.urlopen(console, timeout=5) as resp:
            page = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("text/html")
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert 'src="/console/console.js"' in page and 'href="/console/console.css"' in page and "http" not in page.split("<body>")[0]
        for asset, kind in (("console/console.js", "javascript"), ("console/console.css", "text/css")):
            with urllib.request.urlopen(console + asset, timeout=5) as resp:
                assert resp.status == 200 and kind in resp.headers["Content-Type"] and len(resp.read()) > 1000
        with urllib.request.urlopen(console + "api/kinds", timeout=5) as resp:
            kinds = json.loads(resp.read())
        assert kinds["staff_pages"]["dashboard"] == dashboard + "dashboard" and kinds["cameras"] == ["in-1"]

        # The registry's dashboard behind the demo account's sign-in, with the printed password.
        jar = CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with browser.open(dashboard + "dashboard", timeout=10) as resp:
            assert "/signin" in resp.url
        form = urllib.parse.urlencode({"username": "demo", "password": password, "next": "/dashboard"}).encode()
        with browser.open(urllib.request.Request(dashboard + "signin", data=form, headers={"Origin": dashboard.rstrip("/")}),
                          timeout=10) as resp:
            assert resp.status == 200 and resp.url.endswith("/dashboard") and b"chart.umd.js" in resp.read()

        with urllib.request.urlopen(url, timeout=5) as resp:
            state = json.loads(resp.read())
        gate_pid = state["gate"]["pid"]
        assert state["gate"]["state"] == "running" and Path(f"/proc/{gate_pid}").exists()
        ports = [int(url.split(":")[2].split("/")[0]), int(state["network"]["listen"].rsplit(":", 1)[1]),
                 int(state["registry"]["listen"].rsplit(":", 1)[1]), int(dashboard.split(":")[2].strip("/"))]
        assert all(_listening(port) for port in ports)
        assert _children(proc.pid) == [gate_pid]

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, out + err
        assert "Traceback" not in err and "nothing lost" in out
        assert not Path(f"/proc/{gate_pid}").exists()
        assert not any(_listening(port) for port in ports)
        assert not (tmp_path / "run" / "scanner-in-1").exists()  # the ptys' names are gone with them
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
