"""The rehearsal's web console in Debian's headless Chromium: a technician's first minute.

The real thing throughout: the gate as its own process (`python -m gated run`),
its lanes' coils on the simulated Modbus I/O module, the registry behind the
cuttable proxy, the console served by the control API and driven by clicks
and keys in Chromium; what the page shows is checked against the I/O
module's coils and the gate's journal.

`python -m tests.sim.test_console docs/console.png` takes the README's
screenshot the same way (after an admission and a fault).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import pytest

from gated.bench.screen import browser_missing, chromium
from hw_sim.control import start_api
from hw_sim.rehearsal import Rehearsal

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")


class RunningRehearsal:
    """A rehearsal and its console on a loop of their own (the browser driver is synchronous)."""

    def __init__(self, run_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rehearsal", daemon=True)
        self.thread.start()
        self.rehearsal = Rehearsal(run_dir, staff_pages_port=0)
        self.api = None
        try:
            self.call(self.rehearsal.start())
            self.api = self.call(start_api(self.rehearsal, 0))
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return self.api.url

    def call(self, coro, timeout_s: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        if self.api is not None:
            self.call(self.api.stop())
        self.call(self.rehearsal.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def coil_colour(hex_colour: str) -> str:
    """A category colour as on/off coils show it (each channel on from half up, the light driver's rule)."""
    channels = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join("FF" if c >= 128 else "00" for c in channels)


def wait_for(driver, script: str, what: str, timeout_s: float = 15.0, *args):
    """Until `script` (a JS expression's body, `return ...`) gives something truthy in the page."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"the console never showed {what} (last: {value!r})")
        time.sleep(0.05)


def stat(driver, element_id: str) -> tuple[str, str]:
    return tuple(driver.execute_script(
        "const e = document.getElementById(arguments[0]); return [e.dataset.state || '', e.querySelector('.v').textContent];",
        element_id))


def decisions(driver, lane: str) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll(`#lane-${arguments[0]} .recent li`)].map(li => ({
            seq: Number(li.dataset.seq), reason: li.dataset.reason, ticket: li.dataset.ticket || null,
            text: li.textContent}));""", lane)


def record_light_colours(driver, lane: str) -> None:
    """Every colour the lane's light takes in the page from now on, however briefly."""
    driver.execute_script("""
        const light = document.querySelector(`#lane-${arguments[0]} .light`);
        window.seenColours = [light.dataset.color];
        new MutationObserver(() => window.seenColours.push(light.dataset.color))
            .observe(light, {attributes: true, attributeFilter: ["data-color"]});""", lane)


def press(driver, element_id: str) -> None:
    """Focus a control and press it from the keyboard, as a technician without a mouse would."""
    from selenium.webdriver.common.keys import Keys

    element = driver.find_element("id", element_id)
    driver.execute_script("arguments[0].focus()", element)
    element.send_keys(Keys.ENTER)


def present(driver, lane: str, kind: str = "valid") -> dict:
    """Pick the kind in the lane's card, press Present, and wait for the decision drawn in the card."""
    from selenium.webdriver.support.ui import Select

    before = max((d["seq"] for d in decisions(driver, lane)), default=0)
    Select(driver.find_element("id", f"kind-{lane}")).select_by_value(kind)
    press(driver, f"present-{lane}")
    wait_for(driver, "return [...document.querySelectorAll(`#lane-${arguments[0]} .recent li`)]"
                     ".some(li => Number(li.dataset.seq) > arguments[1])", f"a new decision at {lane}", 15, lane, before)
    return max(decisions(driver, lane), key=lambda d: d["seq"])


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    run = RunningRehearsal(tmp_path_factory.mktemp("console") / "run")
    yield run
    run.close()


@pytest.fixture(scope="module")
def page(running, tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium"))
    exact_viewport(driver)
    driver.get(running.url)
    wait_for(driver, "return document.getElementById('st-gate').dataset.state === 'running'", "the gate running")
    yield driver
    driver.quit()


def test_a_valid_code_turns_the_lane_the_category_colour_and_the_decision_appears(running, page):
    r = running.rehearsal
    assert page.title.startswith("gated rehearsal")
    assert [c.get_attribute("data-lane") for c in page.find_elements("css selector", ".lane")] == ["in-1", "out-1", "desk-1"]
    # Idle: the light off at the module, the relay locked, as the page says.
    relay = r.coil_of[("in-1", "relay")]
    assert page.execute_script("return document.querySelector('#lane-in-1 .light').dataset.color") == "#000000"
    assert page.execute_script("return document.querySelector('#lane-in-1 .io-relay dd').textContent") == "locked"

    record_light_colours(page, "in-1")
    decision = present(page, "in-1", "valid")
    assert decision["reason"] == "ok" and decision["ticket"] is not None
    person = r.by_id[int(decision["ticket"])]
    expected = coil_colour(r.config.policy.colors.get(person.record.category, r.config.policy.default_color))
    wait_for(page, "return window.seenColours.includes(arguments[0])", f"the light {expected}", 5, expected)
    assert person.record.category in decision["text"] and "✔" in decision["text"]
    # The gate journaled it and the I/O module saw the relay rise for it: what the page drew is what happened.
    assert any(rec["kind"] == "decision" and rec["ticket"] == person.ticket_id and rec["reason"] == "ok" for rec in r.records)
    assert any(lane == "in-1" for lane, _ in r.openings)

    # A forged code: denied with its reason, the light red (the deny pattern) at the module.
    record_light_colours(page, "in-1")
    forged = present(page, "in-1", "forged")
    assert forged["reason"] == "bad_signature" and "✘" in forged["text"]
    wait_for(page, "return window.seenColours.includes('#FF0000')", "the deny colour", 5)


def test_the_network_cut_turns_the_uplink_red_and_the_backlog_drains_when_restored(running, page):
    r = running.rehearsal
    press(page, "net-drop")
    wait_for(page, "return document.getElementById('st-uplink').dataset.state === 'down'", "the uplink down (red)")
    assert stat(page, "st-uplink") == ("down", "DOWN")
    assert page.execute_script("return document.getElementById('net-state').dataset.cut") == "drop"
    assert r.proxy.mode == "drop"

    # Offline is normal: the gate still admits, and the record waits in its journal.
    assert present(page, "in-1", "valid")["reason"] == "ok"
    backlog = wait_for(page, "const v = Number(document.querySelector('#st-backlog .v').textContent); return v > 0 && v",
                       "a backlog", 10)
    assert backlog >= 1
    assert page.execute_script("return [...document.querySelectorAll('#faults li .what')].map(e => e.textContent)")[0] == "network cut"

    press(page, "net-restore")
    wait_for(page, "return document.getElementById('st-uplink').dataset.state === 'up'", "the uplink back", 20)
    wait_for(page, "return document.querySelector('#st-backlog .v').textContent === '0'", "the backlog drained to 0", 20)
    assert r.status.get("journal_backlog") == 0


def test_a_power_cut_shows_the_gate_off_then_back_and_deciding_again(running, page):
    r = running.rehearsal
    pid = r.gate.pid
    field = page.find_element("id", "off-s")
    field.clear()
    field.send_keys("1")
    press(page, "power-cut")
    wait_for(page, "return document.getElementById('st-gate').dataset.state === 'off'", "the gate powered off")
    assert "powered off" in stat(page, "st-gate")[1]
    assert page.execute_script("return document.getElementById('lane-in-1').dataset.down") == "true"
    wait_for(page, "return document.getElementById('st-gate').dataset.state === 'running'", "the gate back", 30)
    assert r.gate.pid != pid and r.gate.boots == 2
    assert f"pid {r.gate.pid}" in stat(page, "st-gate")[1]
    again = present(page, "in-1", "valid")
    assert again["reason"] == "ok"
    assert {"power cut", "power restore"} <= set(
        page.execute_script("return [...document.querySelectorAll('#faults li .what')].map(e => e.textContent)"))


def test_a_bad_request_from_the_console_gets_one_line_and_changes_nothing(running, page):
    r = running.rehearsal
    version = r.status.get("cache_version")
    ticket = page.find_element("id", "ticket")
    ticket.clear()
    ticket.send_keys("5205320758")  # a 10-digit registration number nobody holds here
    press(page, "revoke")
    notice = wait_for(page, "const n = document.getElementById('notice'); return n.dataset.kind === 'error' && n.textContent",
                      "the refusal")
    assert "no attendee with ticket 5205320758" in notice and "\n" not in notice and "Traceback" not in notice
    assert 5205320758 not in r.revoked and r.status.get("cache_version") == version


def exact_viewport(driver, width: int = 1400, height: int = 900) -> None:
    """The page's viewport itself at width x height (a window's size includes what surrounds it)."""
    driver.set_window_size(width, height)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def screenshot(path: Path) -> None:
    """The README's picture: the console mid-run, after admissions and a network cut."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run = RunningRehearsal(Path(tmp) / "run")
        driver = chromium(Path(tmp) / "chromium")
        try:
            exact_viewport(driver)
            driver.get(run.url)
            wait_for(driver, "return document.getElementById('st-gate').dataset.state === 'running'", "the gate running")
            for kind in ("valid", "badge", "expired", "valid"):
                present(driver, "in-1", kind)
                time.sleep(0.3)
            present(driver, "out-1", "valid")
            time.sleep(0.3)
            present(driver, "desk-1", "badge")
            press(driver, "net-drop")
            wait_for(driver, "return document.getElementById('st-uplink').dataset.state === 'down'", "the uplink down")
            present(driver, "in-1", "forged")
            time.sleep(0.3)
            record_light_colours(driver, "in-1")
            present(driver, "in-1", "valid")
            time.sleep(0.5)  # the gate's own status (4 a second) catches up with the coils, the light still lit
            driver.save_screenshot(str(path))
        finally:
            driver.quit()
            run.close()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console.png"))
