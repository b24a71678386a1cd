"""The unit file systemd will load: syntax checked by systemd itself."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNIT = REPO / "systemd" / "gated.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path):
    gated = Path(sys.executable).with_name("gated")
    unit = tmp_path / "gated.service"
    unit.write_text(UNIT.read_text().replace("/opt/gated/bin/gated", str(gated)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "gated.service" in line]
    assert r.returncode == 0 and problems == [], problems


def test_the_unit_is_a_notify_service_with_watchdog_and_hardening():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["Type"] == ["notify"] and settings["WatchdogSec"] and settings["Restart"] == ["always"]
    assert settings["NoNewPrivileges"] == ["yes"] and settings["ProtectSystem"] == ["strict"]
    assert settings["CapabilityBoundingSet"] == [""] and settings["DevicePolicy"] == ["closed"]
    assert settings["ExecStart"][0].endswith("gated run --config /etc/gated/gated.toml")
    # lgpio needs a writable working directory, and ProtectSystem=strict makes / read-only
    assert settings["WorkingDirectory"] == ["/run/gated"] and settings["RuntimeDirectory"] == ["gated"]
