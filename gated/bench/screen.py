"""`gated bench --sections screen`, and the kit its tests share: a gate with
handheld lanes and their operator screens, run on a thread of its own (a
browser driver is synchronous), serial scanners on ptys, and Debian's
headless Chromium driven by Selenium.

Scan to screen: from the last byte of a frame written to the lane's pty to
the decision drawn in the page's DOM. The page's MutationObserver stamps
each drawn decision with `performance.timeOrigin + performance.now()`
(wall-clock ms); the bench writes each frame at a `time.time()` it records.
The two clocks are the same machine's, aligned by round trips: the offset
of the browser's clock is the one measured by the shortest of 20
`execute_script` round trips (its uncertainty, half that round trip, is
reported beside the figures).

Where the time goes, per scan (`legs`): the last byte on the pty to
`decide()` (the decision's own time), `decide()` to the decision journaled
and published on the page's event stream (a lane observer beside the
screen's), and from there to the DOM (SSE, Chromium's network and renderer
processes). The bench waits for each drawing with one script that a
MutationObserver resolves in the page: polling the renderer every 2 ms, as
it did, was load of its own on the process it measures.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1024,900",
                  # A kiosk's page is the one in front: never treated as a background tab whose
                  # renderer and timers Chromium may deprioritise.
                  "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
                  "--disable-backgrounding-occluded-windows")
KEY = bytes(range(32))


def browser_missing() -> str | None:
    """Why no browser can be driven here, or None."""
    try:
        import selenium  # noqa: F401
    except ModuleNotFoundError:
        return "selenium is not installed (pip install 'gated[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.path.exists(path):
            return f"{path} is missing (apt-get install {package})"
    return None


def chromium(user_data_dir: str | os.PathLike, *, accept_self_signed: bool = False):
    """Debian's headless Chromium through its chromedriver, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    if accept_self_signed:
        options.add_argument("--ignore-certificate-errors")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def handheld_lane(lane_id: str, port: str, screen: str, pins: tuple[int, int, int], zone: str = "hall") -> str:
    """A [[lane]] table: a handheld lane with a serial scanner on `port`, a light, and `screen`."""
    red, green, blue = pins
    return f"""
[[lane]]
id = "{lane_id}"
zone = "{zone}"
direction = "in"
mode = "handheld"
offline_redemption = "local"   # no registry here: the unit redeems from its own cache
  [[lane.scanner]]
  kind = "serial"
  port = "{port}"
  [lane.light]
  red = {red}
  green = {green}
  blue = {blue}
  [lane.screen]
{screen}
"""


class Pty:
    """A pty pair standing in for a USB-serial scanner; `path` is a symlink to its slave."""

    def __init__(self, path: Path):
        self.path = path
        self.master, self.slave = os.openpty()
        path.unlink(missing_ok=True)
        path.symlink_to(os.ttyname(self.slave))

    def send(self, text: str, suffix: bytes = b"\r") -> float:
        """Write one frame; the wall time its last byte was written."""
        os.write(self.master, text.encode("latin-1") + suffix)
        return time.time()

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class ThreadedGate:
    """A `Gate` started on its own thread and event loop; `call(fn)` runs `fn()` (a coroutine
    function) there and returns its result. `with ThreadedGate(path) as g:` starts and stops it."""

    def __init__(self, config_path: str | os.PathLike, *, pin_factory: Any = None):
        self.config_path = config_path
        self.pin_factory = pin_factory
        self.gate: Any = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gate", daemon=True)

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def __enter__(self) -> "ThreadedGate":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        from gated.config import load_config
        from gated.gate.daemon import Gate

        self._thread.start()

        async def start():
            gate = Gate(load_config(self.config_path, check_files=True),
                        pin_factory=self.pin_factory or MockFactory(pin_class=MockPWMPin))
            await gate.start()
            deadline = time.monotonic() + 5
            while not gate.inputs_connected() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return gate

        try:
            self.gate = self.call(start)
        except BaseException:
            self._end()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.gate is not None:
                self.call(self.gate.stop, timeout=30)
        finally:
            self._end()

    def _end(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        time.sleep(step)


def clock_offset_ms(driver, rounds: int = 20) -> tuple[float, float]:
    """(browser wall ms - Python wall ms, uncertainty ms), from the shortest round trip."""
    best = None
    for _ in range(rounds):
        before = time.time() * 1000
        page = driver.execute_script("return performance.timeOrigin + performance.now();")
        after = time.time() * 1000
        rtt = after - before
        if best is None or rtt < best[1]:
            best = (page - (before + after) / 2, rtt)
    return best[0], best[1] / 2


def _await_drawn(driver, ticket: str) -> None:
    """Return when the page has drawn a decision on `ticket` (or after the script timeout):
    a promise resolved by a MutationObserver, so the renderer is idle while it waits."""
    try:
        driver.execute_async_script("""
            const [ticket, done] = arguments, d = document.getElementById('decision');
            if (d.dataset.ticket === ticket) { done(true); return; }
            const seen = new MutationObserver(() => {
                if (d.dataset.ticket === ticket) { seen.disconnect(); done(true); }
            });
            seen.observe(d, { attributes: true, attributeFilter: ['data-shown'] });""", ticket)
    except Exception:  # never drawn in time: counted as missing (scans < written)
        pass


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def bench_scan_to_screen(scans: int = 300) -> dict:
    """Scan to screen on a gate holding 100,000 tickets (10-digit registration numbers)."""
    from gated.gate.state import StateStore
    from gated.keyfile import save_keyfile
    from gated.validation import KeyRing, TicketRecord, encode_snapshot
    from gated.validation.token import mint_static

    if (missing := browser_missing()) is not None:
        return {"skipped": missing}
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only, off the timed path
    root = Path(tempfile.mkdtemp(prefix="gated-bench-screen-"))
    try:
        first = 5_205_320_758
        tickets = [TicketRecord(ticket_id=first + 7 * i, category=("guest", "media", "staff")[i % 3], zones=("hall",),
                                name=f"Attendee {i}", company=f"Company {i % 97}", ticket_type="3-day",
                                benefits=(("lunch_day1", 1), ("dinner", 2)), phone_last4=f"{i % 10_000:04d}")
                   for i in range(100_000)]
        save_keyfile(root / "keys.json", KeyRing({1: KEY}), overwrite=True)
        StateStore(root / "state").save_cache(encode_snapshot(1, tickets), 0)
        port = free_port()
        (root / "gate.toml").write_text("""[gate]
id = "bench-screen"
key_file = "keys.json"
state_dir = "state"
trust_local_clock = true
gpio = "mock"
[policy]
rate_burst = 1000
rate_per_s = 1000
[admin]
socket = "admin.sock"
""" + handheld_lane("desk-1", "scan-1", f'  listen = "127.0.0.1:{port}"', (22, 23, 24)))
        pty = Pty(root / "scan-1")
        codes = [(t.ticket_id, mint_static(KEY, 1, t.ticket_id, 0)) for t in tickets[:scans]]
        driver = None
        try:
            with ThreadedGate(root / "gate.toml") as g:
                driver = chromium(root / "profile")
                driver.get(g.gate.screens["desk-1"].url)
                wait_for(lambda: driver.execute_script("return document.getElementById('online').textContent !== '…'"))
                offset, uncertainty = clock_offset_ms(driver)
                driver.set_script_timeout(5)
                written: dict[str, float] = {}
                decided: dict[str, float] = {}
                published: dict[str, float] = {}

                def on_decision(d) -> None:  # beside the screen's own observer, which runs first
                    published[str(d.ticket_id)] = time.time() * 1000
                    decided[str(d.ticket_id)] = d.at * 1000
                g.gate.screens["desk-1"].lane.observers.append(on_decision)
                for ticket_id, code in codes:
                    # One script waits in the page for this ticket's stamp (no polling the renderer meanwhile).
                    waiting = threading.Thread(target=_await_drawn, args=(driver, str(ticket_id)))
                    waiting.start()
                    written[str(ticket_id)] = pty.send(code) * 1000
                    waiting.join()
                    time.sleep(0.005)  # the next person steps up
                stamps = driver.execute_script("return window.gatedStamps;")
                offset_after, _ = clock_offset_ms(driver)
        finally:
            if driver is not None:
                driver.quit()
            pty.close()
        drawn = {s["ticket"]: s["t"] for s in stamps if s["ticket"] in written}
        latencies = [drawn[t] - offset - written[t] for t in written if t in drawn]
        # Where the time goes: pty -> decide(), decide() -> journaled and published on the SSE stream, -> DOM.
        legs = {
            "to_decide": [decided[t] - written[t] for t in written if t in decided],
            "decide_to_published": [published[t] - decided[t] for t in written if t in published],
            "published_to_dom": [drawn[t] - offset - published[t] for t in written if t in drawn and t in published],
        }
        return {
            "scans": len(latencies), "written": len(written), "tickets": len(tickets),
            "median_ms": round(statistics.median(latencies), 2), "p99_ms": round(_percentile(latencies, 0.99), 2),
            "max_ms": round(max(latencies), 2), "clock_uncertainty_ms": round(uncertainty, 2),
            "clock_drift_ms": round(offset_after - offset, 2),
            "legs": {name: {"median_ms": round(statistics.median(v), 2), "p99_ms": round(_percentile(v, 0.99), 2)}
                     for name, v in legs.items() if v},
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
