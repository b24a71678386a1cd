"""The operator screen in a real browser (Debian's headless Chromium via Selenium):
a meal hall with two handheld units, each with its page, on one gate.

Scans arrive on the units' serial ptys or are typed into the page; every
check reads the page's DOM as the person at the door sees it, and the
journal as the registry will. Screenshots go to artifacts/ (gitignored).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gated.bench.screen import Pty, ThreadedGate, browser_missing, chromium, free_port, handheld_lane, wait_for
from gated.validation import TicketRecord
from gated.validation.token import manual_code, mint_static
from tests.gate.conftest import text
from tests.gatekit import KEY, make_gate_dir

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

WANG = 5205320758  # a 10-digit registration number
LI = 5205320759  # another, same last four phone digits
BIG = 0x5DEECE66D1234567  # a random 63-bit id
BLOCK = 3_000_042  # ids in blocks of 1,000,000
TICKETS = [
    TicketRecord(ticket_id=WANG, category="guest", ticket_type="3-day pass", zones=("hall",), name="Wang Fang",
                 company="Acme Robotics", benefits=(("lunch_day1", 1), ("dinner", 2)), phone_last4="0758", max_entries=3),
    TicketRecord(ticket_id=LI, category="staff", ticket_type="crew", zones=("hall",), name="Li Lei",
                 company="Venue Crew", benefits=(("lunch_day1", 1),), phone_last4="0758"),
    TicketRecord(ticket_id=BIG, category="media", ticket_type="press", zones=("hall",), name="Zhang Wei",
                 company="Daily News", benefits=(("lunch_day1", 2),), phone_last4="4321"),
    TicketRecord(ticket_id=BLOCK, category="guest", zones=("hall",), name="Chen Jing", company="", phone_last4="1111"),
] + [TicketRecord(ticket_id=1000 + i, category="guest", zones=("hall",)) for i in range(200)]


def badge(ticket_id: int) -> str:
    return mint_static(KEY, 1, ticket_id, 0)


class Hall:
    def __init__(self, root: Path):
        self.ports = {"hand-1": free_port(), "hand-2": free_port()}
        lanes = handheld_lane("hand-1", "scanner-hand-1", f'  listen = "127.0.0.1:{self.ports["hand-1"]}"\n  phone_lookups_per_min = 3',
                              (12, 13, 16))
        lanes += handheld_lane("hand-2", "scanner-hand-2", f'  listen = "127.0.0.1:{self.ports["hand-2"]}"', (19, 20, 21))
        self.config = make_gate_dir(root, extra_lane=lanes, tickets=TICKETS, rate_burst=50)
        self.ptys = {name: Pty(root / f"scanner-{name}") for name in ("in-1", "out-1", "hand-1", "hand-2")}
        self.gate = ThreadedGate(self.config)

    def url(self, lane: str) -> str:
        return self.gate.gate.screens[lane].url

    def records(self, kind: str):
        return [r for r in self.gate.call(self._tail) if r.kind == kind]

    async def _tail(self):
        return self.gate.gate.journal.tail(10_000)


@pytest.fixture(scope="module")
def hall(tmp_path_factory):
    hall = Hall(tmp_path_factory.mktemp("hall"))
    with hall.gate:
        yield hall
    for pty in hall.ptys.values():
        pty.close()


def shown(driver, ticket_id: int, reason: str | None = None, after: int = 0) -> int:
    """Wait until the page draws a decision on `ticket_id` (later than `after`); its number."""
    def drawn():
        d = driver.execute_script("const d = document.getElementById('decision').dataset;"
                                  "return [d.ticket, d.reason, +d.shown];")
        return d[2] if d[0] == str(ticket_id) and d[2] > after and (reason is None or d[1] == reason) else None
    return wait_for(drawn, timeout=5)


def benefit_row(driver, name: str) -> str:
    return driver.execute_script(f"const li = document.querySelector('#benefits li[data-benefit=\"{name}\"]');"
                                 "return li ? li.textContent : null;")


def screenshot(driver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def open_screen(driver, url: str) -> None:
    driver.get(url)
    wait_for(lambda: text(driver, "online") != "…")


def test_a_badge_scanned_at_the_unit_shows_who_it_is_and_what_they_may_still_have(hall, browser):
    open_screen(browser, hall.url("hand-1"))
    assert "hand-1" in text(browser, "lane") and "no registry" in text(browser, "online")
    assert "clock ok" in text(browser, "clock") and "cache v1" in text(browser, "cache")
    hall.ptys["hand-1"].send(badge(WANG))
    shown(browser, WANG, "ok")
    assert text(browser, "words") == "Admitted"
    assert text(browser, "name") == "Wang Fang" and "Acme Robotics" in text(browser, "company")
    assert text(browser, "category") == "guest" and text(browser, "f-ticket") == str(WANG)
    assert text(browser, "f-type") == "3-day pass" and text(browser, "f-zones") == "hall"
    assert text(browser, "f-entries") == "1 / 3" and text(browser, "f-inside") == "inside"
    assert "1 left" in benefit_row(browser, "lunch_day1") and "2 left" in benefit_row(browser, "dinner")
    head = browser.execute_script("return getComputedStyle(document.getElementById('head')).backgroundColor")
    assert head == "rgb(135, 206, 235)"  # the guest colour, light blue
    screenshot(browser, "screen-scan")


def test_redeeming_the_lunch_uses_it_up_and_the_other_unit_sees_it_used(hall, browser, tmp_path):
    open_screen(browser, hall.url("hand-1"))
    hall.ptys["hand-1"].send(badge(LI))
    first = shown(browser, LI)
    browser.find_element("css selector", '#benefits button[data-benefit="lunch_day1"]').click()
    shown(browser, LI, "ok", after=first)
    assert text(browser, "words") == "Redeemed: lunch_day1"
    assert "used up" in benefit_row(browser, "lunch_day1")
    assert browser.find_element("css selector", '#benefits button[data-benefit="lunch_day1"]').get_attribute("disabled")
    redemption = [r for r in hall.records("redemption") if r.ticket_id == LI]
    assert len(redemption) == 1 and redemption[0].payload["benefit_remaining"] == 0
    decision = [r for r in hall.records("decision") if r.ticket_id == LI and r.payload.get("benefit") == "lunch_day1"]
    assert decision[-1].reason == "ok" and decision[-1].payload["source"] == "screen"

    second = chromium(tmp_path / "second-unit")
    try:
        open_screen(second, hall.url("hand-2"))
        hall.ptys["hand-2"].send(badge(LI))
        shown(second, LI)
        assert text(second, "name") == "Li Lei" and "used up" in benefit_row(second, "lunch_day1")
        screenshot(second, "screen-second-unit")
    finally:
        second.quit()

    # The last lunch is gone: asking again is a decision too, benefit_exhausted, journaled.
    answer = browser.execute_script(
        "return fetch('/api/redeem', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        f" body: JSON.stringify({{ticket: '{LI}', benefit: 'lunch_day1'}})}}).then(r => r.json());")
    assert answer["reason"] == "benefit_exhausted"
    assert [r.reason for r in hall.records("decision") if r.ticket_id == LI and r.payload.get("benefit")][-1] == "benefit_exhausted"


def test_a_benefit_is_redeemed_only_for_a_ticket_this_unit_identified(hall, browser):
    open_screen(browser, hall.url("hand-2"))
    answer = browser.execute_script(
        "return fetch('/api/redeem', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        f" body: JSON.stringify({{ticket: '{BIG}', benefit: 'lunch_day1'}})}}).then(r => r.json());")
    assert "scan the badge first" in answer["error"]
    assert hall.gate.gate.validator.cache.get(BIG).benefits == (("lunch_day1", 2),)


def test_phone_digits_list_the_matches_and_the_pick_is_decided_and_journaled(hall, browser):
    open_screen(browser, hall.url("hand-1"))
    browser.find_element("css selector", "#fallbacks summary").click()
    browser.find_element("id", "p-digits").send_keys("0758\n")
    wait_for(lambda: len(browser.find_elements("css selector", "#matches button")) == 2)
    labels = sorted(b.text for b in browser.find_elements("css selector", "#matches button"))
    assert labels == ["Li Lei · Venue Crew · staff", "Wang Fang · Acme Robotics · guest"]
    screenshot(browser, "screen-phone-matches")
    lookup = hall.records("phone_lookup")[-1]
    assert lookup.payload["matches"] == 2 and sorted(lookup.payload["ticket_ids"]) == [WANG, LI]
    assert set(lookup.payload) == {"matches", "ticket_ids"}  # the digits themselves are not kept
    before = int(browser.execute_script("return document.getElementById('decision').dataset.shown"))
    browser.find_element("css selector", f'#matches button[data-ticket="{WANG}"]').click()
    shown(browser, WANG, after=before)
    picked = [r for r in hall.records("decision") if r.payload.get("source") == "phone"][-1]
    assert picked.ticket_id == WANG and picked.payload["lookup_seq"] == lookup.seq
    # An id the search did not offer cannot be picked, and the search has a limit per unit.
    answer = browser.execute_script(
        "return fetch('/api/pick', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        f" body: JSON.stringify({{lookup: {lookup.seq}, ticket: '{BIG}'}})}}).then(r => r.json());")
    assert "not among the matches" in answer["error"]
    for _ in range(3):
        browser.find_element("id", "p-digits").send_keys("4321\n")
        time.sleep(0.1)
    wait_for(lambda: "too many phone searches" in text(browser, "notice"))
    assert hall.records("phone_lookup")[-1].reason == "rate_limited"


def test_the_ticket_number_and_manual_code_are_accepted_inside_the_window_only(hall, browser):
    open_screen(browser, hall.url("hand-2"))
    browser.find_element("css selector", "#fallbacks summary").click()
    stale = manual_code(KEY, BLOCK, time.time() - 120)  # two minutes old: past the one-step skew window
    browser.find_element("id", "m-ticket").send_keys(str(BLOCK))
    browser.find_element("id", "m-code").send_keys(stale + "\n")
    expired = shown(browser, BLOCK, "code_expired")
    assert text(browser, "words").startswith("Code expired")
    browser.find_element("id", "m-ticket").clear()
    browser.find_element("id", "m-code").clear()
    browser.find_element("id", "m-ticket").send_keys(str(BLOCK))
    browser.find_element("id", "m-code").send_keys(manual_code(KEY, BLOCK, time.time()) + "\n")
    shown(browser, BLOCK, "ok", after=expired)
    assert text(browser, "name") == "Chen Jing"
    typed = [r for r in hall.records("decision") if r.payload.get("typed")][-2:]
    assert [r.reason for r in typed] == ["code_expired", "ok"]


def test_the_whole_screen_works_from_the_keyboard_alone(hall, browser):
    from selenium.webdriver.common.keys import Keys

    open_screen(browser, hall.url("hand-2"))
    code = browser.switch_to.active_element
    assert code.get_attribute("id") == "code"  # focused on arrival: a PDA scanner can type at once
    code.send_keys(badge(BIG) + Keys.ENTER)
    first = shown(browser, BIG, "ok")
    assert text(browser, "name") == "Zhang Wei" and "2 left" in benefit_row(browser, "lunch_day1")
    active = browser.switch_to.active_element
    for _ in range(2):  # Check, then the first benefit's button
        active.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
    assert active.get_attribute("data-benefit") == "lunch_day1"
    active.send_keys(Keys.ENTER)
    shown(browser, BIG, "ok", after=first)
    assert "1 left" in benefit_row(browser, "lunch_day1")
    assert browser.switch_to.active_element.get_attribute("data-benefit") == "lunch_day1"  # focus stays put


def test_a_screen_off_loopback_needs_tls_and_the_pin(tmp_path):
    from gated.rpc.certs import make_venue_certs
    from gated.web.security import hash_pin

    certs = make_venue_certs(tmp_path / "certs", ["desk"])
    port = free_port()
    screen = (f'  listen = "0.0.0.0:{port}"\n  tls_cert = "{certs.registry.cert}"\n  tls_key = "{certs.registry.key}"\n'
              f'  pin_hash = "{hash_pin("482916")}"\n  session_minutes = 30')
    config = make_gate_dir(tmp_path, extra_lane=handheld_lane("desk-1", "scanner-desk", screen, (12, 13, 16)), tickets=TICKETS)
    ptys = [Pty(tmp_path / f"scanner-{n}") for n in ("in-1", "out-1", "desk")]
    driver = chromium(tmp_path / "profile", accept_self_signed=True)
    try:
        with ThreadedGate(config) as g:
            url = f"https://127.0.0.1:{port}/"
            assert g.gate.screens["desk-1"].url == f"https://0.0.0.0:{port}/"
            driver.get(url)
            wait_for(lambda: "/signin" in driver.current_url)
            driver.find_element("id", "pin").send_keys("000000\n")
            wait_for(lambda: "Wrong PIN" in driver.page_source)
            driver.find_element("id", "pin").send_keys("482916\n")
            wait_for(lambda: driver.current_url == url)
            wait_for(lambda: text(driver, "online") != "…")
            ptys[2].send(badge(WANG))
            shown(driver, WANG)
            assert text(driver, "name") == "Wang Fang"
            cookie = driver.get_cookies()[0]
            assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            screenshot(driver, "screen-tls-signed-in")
    finally:
        driver.quit()
        for pty in ptys:
            pty.close()
