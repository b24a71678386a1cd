"""Signing in to the registry's pages with an account, in a real browser (Debian's headless
Chromium via Selenium), against the registry with two gates on real gRPC: what each role
sees and may do, the seed's three-strikes lock told to the person at the desk with the time
it ends, and an admin making an account from the accounts page that then signs in."""

from __future__ import annotations

import re
import time

import pytest

from gated.bench.screen import browser_missing, chromium
from gated.registry.accounts import LOCK_S, Accounts
from tests.registry.desk_helpers import PASSWORD, STAFF, WANG, DeskVenue

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ModuleNotFoundError:  # the module is skipped below
    By = WebDriverWait = None

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    with DeskVenue(tmp_path_factory.mktemp("pages-browser")) as venue:
        yield venue


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium"))
    driver.set_window_size(1400, 1600)
    yield driver
    driver.quit()


def sign_in(browser, venue, username: str, password: str, then: str = "/attendees") -> str:
    """Type the sign-in form; the text of the page that answers (its alert, when refused)."""
    browser.get(venue.url + "registry/static/registry.css")
    browser.delete_all_cookies()
    browser.get(venue.url + f"signin?next={then}")
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys(password)
    form_page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.ID, "signin").click()
    # Every answer is a new document (the page asked for, or the form again with its message).
    # Not "the URL ends with `then`": the form's own URL, signin?next=/attendees, does, and
    # the body read from the form page while the answer arrives goes stale under the reader.
    WebDriverWait(browser, 10).until(lambda b: _gone(form_page))
    WebDriverWait(browser, 5).until(lambda b: b.execute_script("return document.readyState") == "complete")
    return browser.find_element(By.TAG_NAME, "body").text


def _gone(element) -> bool:
    """`expected_conditions.staleness_of`, also when chromedriver says the node left the document
    in its own words ("Node with given id does not belong to the document", a WebDriverException)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def wait_notice(browser, text: str) -> None:
    """Until the page that answered a form shows `text` in its notice (the old page may still be there)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException

    def says(b) -> bool:
        try:
            return text in b.find_element(By.ID, "notice").text
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        except WebDriverException as exc:  # the element went with the old page while Chromium read it
            if "does not belong to the document" not in str(exc):
                raise
            return False

    WebDriverWait(browser, 5).until(says)


def ids(browser) -> set[str]:
    return set(browser.execute_script("return Array.from(document.querySelectorAll('[id]'), e => e.id)"))


def test_a_viewer_reads_but_finds_no_button_to_change_anything_and_a_post_is_refused(venue, browser):
    sign_in(browser, venue, STAFF["viewer"], PASSWORD)
    assert browser.find_element(By.ID, "who").text == "lead · viewer"
    assert "nav-walkin" not in ids(browser) and "nav-accounts" not in ids(browser)
    browser.get(venue.url + f"attendees/{WANG}")
    assert browser.find_element(By.ID, "name").text.lower().startswith("wang fang")
    assert not ids(browser) & {"reprint", "revoke", "badge", "set-category", "add-benefit"}
    browser.get(venue.url + "walkin")
    assert "register" not in ids(browser) and "needs the desk role" in browser.find_element(By.ID, "notice").text
    before = venue.registry.store.ticket_count()
    walk_in = {"name": "Sun Li", "category": "guest", "zones": "hall", "max_entries": "0"}
    assert venue.post("/walkin", walk_in, role="viewer")[0] == 403
    assert venue.post(f"/attendees/{WANG}/reprint", {}, role="viewer")[0] == 403
    assert venue.registry.store.ticket_count() == before and venue.registry.store.ticket(WANG).badge_serial == 0
    assert venue.post("/walkin", walk_in, role="desk")[0] == 303  # the same form from a desk account

    browser.get(venue.url + "dashboard")
    assert "nav-walkin" not in ids(browser)
    browser.find_element(By.ID, "signout").click()
    WebDriverWait(browser, 5).until(lambda b: "/signin" in b.current_url)
    browser.get(venue.url + "attendees")
    assert "/signin" in browser.current_url  # the session ended with the sign-out


def test_three_wrong_passwords_lock_the_account_and_say_until_when_and_an_admin_unlocks_it(venue, browser):
    venue.run(lambda: Accounts(venue.registry.store).add_user("zhou.desk", "desk", "the right password"))
    for n in range(2):
        assert "Wrong name or password." in sign_in(browser, venue, "zhou.desk", f"a guess {n}")
    before = time.time()
    said = sign_in(browser, venue, "zhou.desk", "a third guess")
    after = time.time()  # the lock began between the two (argon2 and a loaded machine can take seconds)
    match = re.search(r"Wrong password \(3 in a row\): the account is locked for 15 minutes, until (\d\d:\d\d:\d\d)\.", said)
    assert match, said
    assert match.group(1) in {time.strftime("%H:%M:%S", time.localtime(at + LOCK_S))
                              for at in range(int(before) - 1, int(after) + 2)}
    said = sign_in(browser, venue, "zhou.desk", "the right password")  # even the right one, while locked
    assert f"locked after 3 wrong passwords, until {match.group(1)}: try again in 15 minutes or ask an admin" in said, said

    sign_in(browser, venue, STAFF["admin"], PASSWORD, then="/accounts")
    assert browser.find_element(By.CSS_SELECTOR, "#account-zhou\\.desk .state").text == f"locked until {match.group(1)}"
    browser.find_element(By.ID, "unlock-zhou.desk").click()
    wait_notice(browser, "zhou.desk unlocked")
    assert browser.find_element(By.CSS_SELECTOR, "#account-zhou\\.desk .state").text == "active"
    sign_in(browser, venue, "zhou.desk", "the right password")
    assert browser.find_element(By.ID, "who").text == "zhou.desk · desk"


def test_an_admin_creates_an_account_on_the_page_and_it_signs_in_with_its_role(venue, browser):
    sign_in(browser, venue, STAFF["admin"], PASSWORD, then="/accounts")
    for field, value in (("new-name", "wu.media"), ("new-password", "press desk 2026"), ("new-again", "press desk 202")):
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#new-role option[value=viewer]").click()
    browser.find_element(By.ID, "create").click()
    wait_notice(browser, "the two passwords differ")
    assert browser.find_element(By.ID, "new-name").get_attribute("value") == "wu.media"  # kept; the passwords are not
    browser.find_element(By.ID, "new-password").send_keys("press desk 2026")
    browser.find_element(By.ID, "new-again").send_keys("press desk 2026")
    browser.find_element(By.ID, "create").click()
    wait_notice(browser, "wu.media (viewer) created")
    assert browser.find_element(By.CSS_SELECTOR, "#account-wu\\.media").text.startswith("wu.media viewer active")
    stored = venue.registry.store.conn.execute("SELECT role, hash FROM users WHERE username = 'wu.media'").fetchone()
    assert stored[0] == "viewer" and stored[1].startswith("$argon2id$")
    # A desk account cannot reach the page, nor make an account by posting its form.
    assert venue.get("/accounts", role="desk")[0] == 403
    assert venue.post("/accounts", {"name": "mallory", "role": "admin", "password": "p" * 10, "again": "p" * 10},
                      role="desk")[0] == 403
    assert venue.run(lambda: [a.name for a in Accounts(venue.registry.store).accounts()]).count("mallory") == 0

    sign_in(browser, venue, "wu.media", "press desk 2026")
    assert browser.find_element(By.ID, "who").text == "wu.media · viewer"
