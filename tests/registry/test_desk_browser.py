"""The desk pages and the dashboard in a real browser (Debian's headless Chromium via
Selenium), with two gates on real gRPC: a walk-in registered at the desk is admitted
at a gate within a second; a reprint makes the old badge `superseded_badge` at every
gate within a second; the dashboard's hourly chart draws the scans the gates sent,
and follows new ones live. Screenshots go to tests/artifacts/ (gitignored)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gated.bench.screen import browser_missing, chromium

try:
    from selenium.webdriver.support.ui import WebDriverWait
except ModuleNotFoundError:  # the module is skipped below
    WebDriverWait = None
from gated.registry import dashdata
from gated.validation import Lane
from gated.validation.token import mint_static
from tests.conftest import wait_until
from tests.registry.desk_helpers import ENGINES, HALL_OUT, PASSWORD, STAFF, TICKETS, DeskVenue, venue_db
from tests.rpc_helpers import KEY, KID

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture(scope="module", params=ENGINES)
def venue(request, tmp_path_factory):
    """The desk in a browser on each engine: the walk-in, the reprint and the live dashboard read and
    write the registry's database through the same pages (the browser-only tests, test_pages_browser, stay on SQLite)."""
    root = tmp_path_factory.mktemp("desk-browser")
    for db in venue_db(request.param, root):
        with DeskVenue(root, db) as venue:
            yield venue


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium"))
    driver.set_window_size(1400, 2200)
    yield driver
    driver.quit()


def sign_in_as(browser, venue, role: str) -> None:
    """The sign-in form, typed as staff do: the account of this role and its password."""
    from selenium.webdriver.common.by import By

    browser.get(venue.url + "registry/static/registry.css")
    browser.delete_all_cookies()
    browser.get(venue.url + "signin?next=/attendees")
    browser.find_element(By.ID, "username").send_keys(STAFF[role])
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "signin").click()
    WebDriverWait(browser, 5).until(lambda b: b.current_url.endswith("/attendees"))
    # The URL changes when the next page starts loading; its elements come a moment later.
    assert page_text(browser, "who") == f"{STAFF[role]} · {role}"


def page_text(browser, element_id: str, timeout: float = 5.0) -> str:
    """The text of an element of the page the browser shows once it has loaded (a form's POST
    answers with a redirect: the click returns before the next page is there)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By

    def read(b):
        try:
            return b.find_element(By.ID, element_id).text or False
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        except WebDriverException as exc:  # the element went with the old page while Chromium read it
            if "does not belong to the document" not in str(exc):
                raise
            return False

    return WebDriverWait(browser, timeout).until(read)


def shot(browser, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"registry-{name}.png"))


def test_a_walk_in_is_admitted_then_a_reprint_supersedes_the_old_badge(venue, browser):
    from selenium.webdriver.common.by import By

    sign_in_as(browser, venue, "desk")
    browser.get(venue.url + "walkin")
    fields = {"name": "Zhao Min", "company": "Walk-in Ltd", "phone": "+86 139 1234 5678", "category": "exhibitor",
              "ticket_type": "1-day", "zones": "hall", "max_entries": "0", "benefits": "lunch_day1=1"}
    for field, value in fields.items():
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    shot(browser, "walkin-form")
    browser.find_element(By.ID, "register").click()
    registered = time.monotonic()
    ticket_id = int(page_text(browser, "ticket"))
    assert 1_000_000_000 <= ticket_id < 10_000_000_000  # a 10-digit number the registry picked
    assert "Registered" in browser.find_element(By.ID, "notice").text
    assert browser.find_element(By.ID, "state").text == "active"
    assert "registered user:li.desk" in browser.find_element(By.ID, "changes").text  # who registered the walk-in
    gates = list(venue.gates.values())
    wait_until(lambda: all(g.cache.get(ticket_id) is not None for g in gates), 1.0, "the walk-in at every gate")
    took = time.monotonic() - registered
    assert venue.scan("gate-a", mint_static(KEY, KID, ticket_id, 0)).admitted, "the walk-in's badge at gate-a"
    print(f"walk-in registered -> in every gate's cache in {took * 1000:.0f} ms")
    shot(browser, "walkin-registered")

    status, body, kind = venue.get(f"/attendees/{ticket_id}/badge.pdf", role="desk")
    assert status == 200 and kind == "application/pdf" and body.startswith(b"%PDF-")
    assert venue.get(f"/attendees/{ticket_id}/badge.pdf", role="viewer")[0] == 403

    browser.find_element(By.ID, "reprint").click()
    reprinted = time.monotonic()
    WebDriverWait(browser, 5).until(lambda b: page_text(b, "serial") == "serial 1")
    old = mint_static(KEY, KID, ticket_id, 0)
    wait_until(lambda: all(g.cache.get(ticket_id).badge_serial == 1 for g in gates), 1.0, "serial 1 at every gate")
    # A lane that has not seen this code yet (a repeat within the debounce window is no new decision).
    assert [g.decide(old, Lane("in-2", "hall")).reason for g in gates] == ["superseded_badge"] * 2
    print(f"reprint -> old badge superseded at every gate in {(time.monotonic() - reprinted) * 1000:.0f} ms")
    assert venue.scan("gate-b", mint_static(KEY, KID, ticket_id, 1), HALL_OUT).admitted  # the new badge works
    wait_until(lambda: len(dashdata.movements(venue.registry.store.conn, ticket_id)) == 2, 2.0, "the check-out stored")
    browser.refresh()
    moves = browser.find_element(By.ID, "movements").text
    assert "check-in" in moves and "gate-a" in moves and "check-out" in moves and "gate-b" in moves
    shot(browser, "attendee-after-reprint")


def test_the_dashboard_draws_the_scans_and_follows_new_ones(venue, browser):
    from selenium.webdriver.common.by import By

    def stored_in() -> int:
        status, body, _kind = venue.get("/dashboard/data")
        return sum(r["in"] for r in json.loads(body)["hourly"] if r["lane"] == "in-1") if status == 200 else -1

    before = stored_in()  # what earlier tests of this venue admitted (the walk-in, when it ran)
    guests = [t.ticket_id for t in TICKETS if t.category == "guest"]
    for tid in guests[:12]:
        assert venue.scan("gate-a", mint_static(KEY, KID, tid, 0)).admitted
    for tid in guests[12:16]:
        assert venue.scan("gate-b", mint_static(KEY, KID, tid, 0)).admitted
    forged = mint_static(bytes(32), KID, guests[20], 0)  # signed with a key that is not the event's
    assert venue.scan("gate-a", forged).reason == "bad_signature"
    wait_until(lambda: stored_in() >= before + 16, 10.0, "the scans stored")

    sign_in_as(browser, venue, "viewer")
    browser.get(venue.url + "dashboard")

    def drawn() -> dict[str, int]:
        """Each dataset of the hourly chart, as the page holds it: label -> total over the hours."""
        return browser.execute_script(
            "const c = window.gatedCharts && window.gatedCharts.hourly;"
            "if (!c) return {};"
            "return Object.fromEntries(c.data.datasets.map(d => [d.label, d.data.reduce((a, b) => a + b, 0)]));")

    wait_until(lambda: drawn().get("gate-a in-1 in", 0) >= 13, 5.0, "the hourly chart drawn")  # 12 + the walk-in
    first = drawn()
    assert first["gate-a in-1 in"] == 13 and first["gate-b in-1 in"] == 4 and first["gate-b out-1 out"] == 1
    assert browser.find_element(By.ID, "live").text.startswith("live")
    gates_table = browser.find_element(By.ID, "gates").text
    assert "gate-a" in gates_table and "gate-b" in gates_table and "yes" in gates_table
    shot(browser, "dashboard")

    for tid in guests[16:21]:
        assert venue.scan("gate-b", mint_static(KEY, KID, tid, 0)).admitted
    took = wait_until(lambda: drawn().get("gate-b in-1 in", 0) == 9, 6.0, "the new scans drawn live")
    print(f"5 new scans drawn on the open dashboard after {took:.1f} s")
    categories = browser.execute_script(
        "return window.gatedCharts.categories.data.labels;")
    assert any(label.startswith("guest (21/61)") for label in categories), categories
    denials = browser.execute_script(
        "const c = window.gatedCharts.denials; return Object.fromEntries(c.data.labels.map((l, i) => [l, c.data.datasets[0].data[i]]));")
    assert denials == {"forged (bad signature)": 1}, denials
    shot(browser, "dashboard-live")


def test_without_a_sign_in_the_pages_send_you_to_sign_in(venue, browser):
    browser.get(venue.url + "registry/static/registry.css")
    browser.delete_all_cookies()
    browser.get(venue.url + "attendees?q=wang")
    assert "/signin" in browser.current_url
