"""What the operator-screen tests share: one headless Chromium per module, and reading the page."""

from __future__ import annotations

import pytest

from gated.bench.screen import chromium


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


def text(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")
