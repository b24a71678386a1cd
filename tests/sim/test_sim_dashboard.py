"""`gated sim` serves the registry's dashboard behind its demo account, and it fills while the crowd scans."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

from hw_sim.sim import DEMO_ROLE, DEMO_USER
from tests.conftest import REPO

GATED = str(Path(sys.executable).with_name("gated"))


def test_the_simulators_dashboard_fills_live_behind_the_demo_sign_in(tmp_path):
    proc = subprocess.Popen([GATED, "sim", "--in-process", "--run-dir", str(tmp_path / "sim"), "--duration", "15", "--rate", "120"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = re.search(r"registry dashboard: (http://127\.0\.0\.1:\d+/)dashboard +"
                              r"\(demo account: (\w+), password (\S+), role (\w+)\)", line)
            if found:
                url, user, password, role = found.groups()
        assert url is not None, "the simulator printed no dashboard URL"
        assert (user, role) == (DEMO_USER, DEMO_ROLE) == ("demo", "desk")

        jar = CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with browser.open(url + "dashboard/data", timeout=10) as response:  # not signed in: the sign-in page
            assert "/signin" in response.url
        form = urllib.parse.urlencode({"username": user, "password": password, "next": "/dashboard"}).encode()
        request = urllib.request.Request(url + "signin", data=form, headers={"Origin": url.rstrip("/")})
        with browser.open(request, timeout=10) as response:
            assert response.status == 200 and b"chart.umd.js" in response.read()

        def checked_in() -> int:
            with browser.open(url + "dashboard/data", timeout=10) as response:
                return sum(row["in"] for row in json.loads(response.read())["hourly"])

        first = checked_in()
        deadline = time.monotonic() + 8
        while checked_in() <= first and time.monotonic() < deadline:
            time.sleep(0.3)
        assert checked_in() > first, "the dashboard did not move while the crowd scanned"
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
