"""The desk prints through a real CUPS: Debian's cupsd started privately for this module
(its own config, spool, state and log under tmp, its own unix socket and loopback port;
`CUPS_SERVER` points gated's `lp` at it), a queue with a `file:` device (FileDevice Yes)
and the cups-filters "Generic PDF Printer" driver, so the job's output is a PDF on disk.
The badge goes through gated's CUPS path (`print_badge` -> `lp`); the page CUPS wrote is
rendered with pdftoppm and its QR decoded (zxing-cpp)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image

from gated.errors import PrinterError
from gated.gate.badge_print import print_badge
from gated.journal import Journal
from tests.badge.test_printing import REGISTRATION, REPRINTED, desk_lane, the_code_in
from gated.bench.screen import free_port as free_tcp_port

CUPSD = "/usr/sbin/cupsd"
PDF_DRIVER = "lsb/usr/cupsfilters/Generic-PDF_Printer-PDF.ppd"  # cups-filters' PDF printer

pytestmark = [
    pytest.mark.skipif(not Path(CUPSD).exists() or shutil.which("lpadmin") is None,
                       reason="Debian's cups (cupsd, lpadmin) is not installed"),
    pytest.mark.timeout(120),
]


class PrivateCups:
    """A cupsd of its own: `env` is what `lp` needs to reach it."""

    def __init__(self, root: Path):
        self.root = root
        for d in ("spool", "cache", "state", "log", "out"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "out").chmod(0o777)  # the file: device writes as the job's user
        self.socket = root / "cups.sock"
        (root / "cupsd.conf").write_text(
            f"Listen {self.socket}\nListen 127.0.0.1:{free_tcp_port()}\nLogLevel info\nWebInterface No\nBrowsing No\n"
            "<Location />\n  Order allow,deny\n  Allow all\n</Location>\n")
        (root / "cups-files.conf").write_text(
            f"FileDevice Yes\nServerRoot {root}\nRequestRoot {root}/spool\nCacheDir {root}/cache\nStateDir {root}/state\n"
            f"TempDir {root}/spool\nErrorLog {root}/log/error_log\nAccessLog {root}/log/access_log\nPageLog {root}/log/page_log\n")
        self.env = {**os.environ, "CUPS_SERVER": str(self.socket)}
        self.process = subprocess.Popen([CUPSD, "-f", "-c", str(root / "cupsd.conf"), "-s", str(root / "cups-files.conf")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while self.run("lpstat", "-r").stdout.strip() != "scheduler is running":
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cupsd did not start: {self.process.stdout.read().decode(errors='replace')}"
                                   f"{(root / 'log' / 'error_log').read_text(errors='replace') if (root / 'log' / 'error_log').exists() else ''}")
            time.sleep(0.1)

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)

    def add_queue(self, name: str) -> Path:
        out = self.root / "out" / f"{name}.pdf"
        added = self.run("lpadmin", "-p", name, "-E", "-v", f"file://{out}", "-m", PDF_DRIVER)
        assert added.returncode == 0, added.stderr
        return out

    def completed(self, queue: str) -> list[str]:
        return [line.split()[0] for line in self.run("lpstat", "-W", "completed", "-o", queue).stdout.splitlines() if line]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def cups():
    # Not under pytest's tmp (mode 0700, root's): cupsd runs filters as "lp", who must read the PPD and write the output.
    root = Path(tempfile.mkdtemp(prefix="gated-cups-"))
    root.chmod(0o755)
    server = PrivateCups(root)
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def job_id(sent: str) -> str:
    assert sent.startswith("request id is "), sent  # lp's answer: "request id is desk_badges-1 (1 file(s))"
    return sent.split()[3]


def printed_page(cups: PrivateCups, queue: str, job: str, out: Path, tmp_path: Path) -> Image.Image:
    deadline = time.monotonic() + 30
    while job not in cups.completed(queue):
        assert time.monotonic() < deadline, f"job {job} not completed: {cups.run('lpstat', '-l', '-o', queue).stdout}"
        time.sleep(0.1)
    page = tmp_path / f"{job}"
    subprocess.run(["pdftoppm", "-r", "300", "-png", "-singlefile", str(out), str(page)], check=True, timeout=60)
    return Image.open(f"{page}.png").convert("RGB")


def test_the_desk_prints_through_cups_and_the_page_cups_wrote_carries_the_badges_code(cups, tmp_path, monkeypatch):
    out = cups.add_queue("desk_badges")
    monkeypatch.setenv("CUPS_SERVER", str(cups.socket))
    with Journal(tmp_path / "journal.db", gate_id="desk-gate") as journal:
        lane = desk_lane(tmp_path, journal, '[lane.printer]\nkind = "cups"\ntarget = "desk_badges"\nsize = "a6"\n')
        for ticket, serial in ((REGISTRATION, 0), (REPRINTED, 1)):
            printed = asyncio.run(print_badge(lane, ticket))
            v = the_code_in(printed_page(cups, "desk_badges", job_id(printed.sent), out, tmp_path))
            assert (str(v.reason), v.ticket_id, v.serial) == ("ok", ticket, serial)
        records = [r for r in journal.tail(10) if r.kind == "badge_printed"]
        assert [(r.ticket_id, r.payload["serial"]) for r in records] == [(REGISTRATION, 0), (REPRINTED, 1)]


def test_a_queue_cups_does_not_have_is_one_line_and_no_record(cups, tmp_path, monkeypatch):
    monkeypatch.setenv("CUPS_SERVER", str(cups.socket))
    with Journal(tmp_path / "journal.db", gate_id="desk-gate") as journal:
        lane = desk_lane(tmp_path, journal, '[lane.printer]\nkind = "cups"\ntarget = "no_such_queue"\n')
        with pytest.raises(PrinterError) as refused:
            asyncio.run(print_badge(lane, REGISTRATION))
        message = str(refused.value)
        assert message.startswith("CUPS printer no_such_queue: ") and "\n" not in message
        assert not [r for r in journal.tail(10) if r.kind == "badge_printed"]
