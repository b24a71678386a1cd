"""The desk prints badges: a [lane.printer] checked like every other table,
the bytes reaching a Zebra over TCP, a Brother QL through brother_ql's device
backend, the simulator's folder, and each print journaled with its serial."""

from __future__ import annotations

import asyncio
import socket
import threading
from io import BytesIO
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from gated.badge.printers import lp_command, send
from gated.config import load_config
from gated.errors import BadgeError, ConfigError, PrinterError
from gated.gate.badge_print import print_badge
from gated.clock import GateClock
from gated.gate.control import policy_from_config
from gated.gate.lane import LaneOutputs, LaneRunner, LaneServices
from gated.journal import Journal
from gated.validation import EntitlementCache, KeyRing, TicketRecord, Validator, encode_snapshot, token
from tests.conftest import REPO
from tests.gatekit import KEY

DESK = """
[gate]
id = "desk-gate"
key_file = "keys.json"

[[lane]]
id = "desk-1"
zone = "lobby"
direction = "in"
mode = "handheld"
  [[lane.scanner]]
  kind = "keypad"
  name = "USB Keypad"
  [lane.buzzer]
  pin = 4
"""

REGISTRATION = 5205320758
REPRINTED = 1_000_000 * 2 + 5  # lost a badge: the registry reissued it, serial 1
REVOKED = 0x5A5A_0000_1234_0001


def config_with(tmp_path: Path, printer: str):
    path = tmp_path / "gate.toml"
    path.write_text(DESK + printer)
    return load_config(path)


def refusal(tmp_path: Path, printer: str) -> str:
    with pytest.raises(ConfigError) as exc:
        config_with(tmp_path, printer)
    return str(exc.value)


# ---------------------------------------------------------------- the config table


def test_each_printer_kind_reads_with_its_defaults(tmp_path):
    cases = {
        '[lane.printer]\nkind = "cups"\ntarget = "desk_badges"\n': ("cups", "desk_badges", "cr80", None, None),
        '[lane.printer]\nkind = "brother-ql"\ntarget = "tcp://192.168.1.40"\n': ("brother-ql", "tcp://192.168.1.40", "62mm", "QL-820NWB", None),
        '[lane.printer]\nkind = "zpl"\ntarget = "tcp://zebra.venue.lan:9100"\nsize = "4x3in"\ndpi = 300\n': ("zpl", "tcp://zebra.venue.lan:9100", "4x3in", None, 300),
        '[lane.printer]\nkind = "file"\ntarget = "badges"\n': ("file", str(tmp_path / "badges"), "cr80", None, None),
    }
    for text, (kind, target, size, model, dpi) in cases.items():
        p = config_with(tmp_path, text).lanes[0].printer
        assert (p.kind, p.target, p.size, p.model, p.dpi) == (kind, target, size, model, dpi)


@pytest.mark.parametrize(
    "printer, line_key, says",
    [
        ('kind = "inkjet"\ntarget = "x"\n', "kind", 'expected one of "cups", "brother-ql", "zpl", "file", got "inkjet"'),
        ('kind = "cups"\ntarget = "my printer"\n', "target", "expected a CUPS queue name"),
        ('kind = "cups"\ntarget = "q"\ndpi = 300\n', "dpi", "not used by cups printers; they take: kind, target, size"),
        ('kind = "brother-ql"\ntarget = "tcp://ql"\nsize = "cr80"\n', "size", 'Brother QL printers print on 62 mm tape: size = "62mm"'),
        ('kind = "brother-ql"\ntarget = "tcp://ql"\nmodel = "QL-9"\n', "model", "expected one of"),
        ('kind = "zpl"\ntarget = "tcp://zebra:99999"\n', "target", "expected tcp://host[:port]"),
        ('kind = "zpl"\ntarget = "tcp://zebra"\ndpi = 250\n', "dpi", "expected one of 152, 203, 300, 600, got 250"),
        ('kind = "file"\ntarget = "out"\nsize = "a4"\n', "size", 'expected one of "cr80", "a6", "4x3in", "62mm"'),
    ],
)
def test_a_bad_printer_table_is_one_line_naming_file_line_and_key(tmp_path, printer, line_key, says):
    text = "[lane.printer]\n" + printer
    message = refusal(tmp_path, text)
    full = DESK + text
    line = next(n for n, l in enumerate(full.splitlines(), 1) if l.startswith(f"{line_key} ="))
    assert message.startswith(f"{tmp_path / 'gate.toml'}:{line}: lane[0].printer.{line_key}: "), message
    assert says in message and "\n" not in message


def test_a_turnstile_has_no_printer(tmp_path):
    text = DESK.replace('mode = "handheld"', 'mode = "turnstile"').replace("  [[lane.scanner]]\n  kind = \"keypad\"\n  name = \"USB Keypad\"\n", "  [[lane.scanner]]\n  kind = \"serial\"\n  port = \"loop://\"\n") + "  [lane.relay]\n  pin = 17\n  [lane.printer]\n  kind = \"file\"\n  target = \"out\"\n"
    (tmp_path / "gate.toml").write_text(text)
    with pytest.raises(ConfigError, match="only handheld lanes have a \\[lane.printer\\]"):
        load_config(tmp_path / "gate.toml")


# ---------------------------------------------------------------- a desk lane prints


def desk_lane(tmp_path: Path, journal: Journal, printer: str) -> LaneRunner:
    config = config_with(tmp_path, printer)
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, [
        TicketRecord(ticket_id=REGISTRATION, category="guest", zones=("lobby",), name="张伟 Zhang Wei", company="北京会展"),
        TicketRecord(ticket_id=REPRINTED, category="media", zones=("lobby",), name="Ana Souza", company="TV Globo", badge_serial=1),
        TicketRecord(ticket_id=REVOKED, category="staff", zones=("lobby",), name="X", state=1),
    ]))
    validator = Validator(KeyRing({1: bytes(32), 2: KEY}), cache, policy_from_config(config))
    services = LaneServices(
        validator=validator, journal=journal, clock=GateClock(trust_local_clock=True), monotonic=lambda: 0.0,
        spawn=lambda coro: None, on_journal_failure=lambda exc: None, on_record=lambda: None,
    )
    return LaneRunner(config.lanes[0], services, LaneOutputs())


def the_code_in(image: Image.Image) -> token.Verified:
    found = [r.text for r in zxingcpp.read_barcodes(image)]
    assert len(found) == 1, found
    return token.verify_code(found[0], {2: KEY}, now=1_790_000_000.0)


def test_the_desk_prints_to_its_folder_and_journals_every_print_with_its_serial(tmp_path):
    folder = tmp_path / "printed"
    with Journal(tmp_path / "journal.db", gate_id="desk-gate") as journal:
        lane = desk_lane(tmp_path, journal, f'[lane.printer]\nkind = "file"\ntarget = "{folder}"\n')

        async def at_the_desk():
            first = await print_badge(lane, REGISTRATION)
            again = await print_badge(lane, REGISTRATION)  # the printer jammed: the same badge once more
            reissued = await print_badge(lane, REPRINTED)
            return first, again, reissued

        first, again, reissued = asyncio.run(at_the_desk())
        assert (first.serial, first.kid, reissued.serial) == (0, 2, 1)  # the newest key signs
        assert first.sent != again.sent and Path(again.sent).name == f"badge-{REGISTRATION}-0-2.png"
        for printed, ticket, serial in ((first, REGISTRATION, 0), (again, REGISTRATION, 0), (reissued, REPRINTED, 1)):
            v = the_code_in(Image.open(printed.sent))
            assert (str(v.reason), v.ticket_id, v.serial) == ("ok", ticket, serial)
        records = [r for r in journal.tail(10) if r.kind == "badge_printed"]
        assert [(r.lane, r.ticket_id, r.payload["serial"]) for r in records] == [
            ("desk-1", REGISTRATION, 0), ("desk-1", REGISTRATION, 0), ("desk-1", REPRINTED, 1)]


def test_the_desk_refuses_revoked_and_unknown_tickets_and_journals_nothing(tmp_path):
    with Journal(tmp_path / "journal.db", gate_id="desk-gate") as journal:
        lane = desk_lane(tmp_path, journal, f'[lane.printer]\nkind = "file"\ntarget = "{tmp_path / "out"}"\n')
        with pytest.raises(BadgeError, match=f"ticket {REVOKED} is revoked"):
            asyncio.run(print_badge(lane, REVOKED))
        with pytest.raises(BadgeError, match=f"ticket {REGISTRATION + 1} is not in this gate's cache"):
            asyncio.run(print_badge(lane, REGISTRATION + 1))
        assert [r for r in journal.tail(10) if r.kind == "badge_printed"] == []


class ZebraOnLoopback:
    """A TCP listener standing where the Zebra's port 9100 would be: keeps every job it receives."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.jobs: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                chunks = []
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
                self.jobs.append(b"".join(chunks))

    def close(self):
        self.server.close()


def test_a_zebra_on_tcp_receives_the_zpl_with_the_code_in_its_qr_field(tmp_path):
    zebra = ZebraOnLoopback()
    try:
        with Journal(tmp_path / "journal.db", gate_id="desk-gate") as journal:
            lane = desk_lane(tmp_path, journal, f'[lane.printer]\nkind = "zpl"\ntarget = "tcp://127.0.0.1:{zebra.port}"\nsize = "4x3in"\n')
            printed = asyncio.run(print_badge(lane, REPRINTED))
        for _ in range(100):
            if zebra.jobs:
                break
            threading.Event().wait(0.02)
        zpl = zebra.jobs[0].decode("utf-8")
        code = token.mint_static(KEY, 2, REPRINTED, 1)
        assert zpl.startswith("^XA") and f"^FDMA,{code}^FS" in zpl and "^FDAna Souza^FS" in zpl
        assert printed.sent == f"{len(zebra.jobs[0])} bytes to 127.0.0.1:{zebra.port}"
    finally:
        zebra.close()


def test_a_zebra_that_is_off_is_one_line_and_no_record(tmp_path):
    idle = socket.create_server(("127.0.0.1", 0))
    port = idle.getsockname()[1]
    idle.close()  # nothing listens there now
    with Journal(tmp_path / "journal.db", gate_id="desk-gate") as journal:
        lane = desk_lane(tmp_path, journal, f'[lane.printer]\nkind = "zpl"\ntarget = "tcp://127.0.0.1:{port}"\n')
        with pytest.raises(PrinterError, match=f"Zebra printer tcp://127.0.0.1:{port}: Connection refused"):
            asyncio.run(print_badge(lane, REGISTRATION))
        assert [r for r in journal.tail(10) if r.kind == "badge_printed"] == []


def test_a_brother_ql_through_its_device_backend_gets_a_raster_that_reads_back(tmp_path):
    from brother_ql.reader import BrotherQLReader

    device = tmp_path / "lp0"  # what /dev/usb/lp0 is to brother_ql's linux_kernel backend: a file it writes
    device.write_bytes(b"")
    with Journal(tmp_path / "journal.db", gate_id="desk-gate") as journal:
        lane = desk_lane(tmp_path, journal, f'[lane.printer]\nkind = "brother-ql"\ntarget = "file://{device}"\nmodel = "QL-700"\n')
        printed = asyncio.run(print_badge(lane, REGISTRATION))
    assert printed.sent.endswith("(linux_kernel)")
    reader = BrotherQLReader(BytesIO(device.read_bytes()))
    reader.filename_fmt = str(tmp_path / "label{counter}.png")
    reader.analyse()
    v = the_code_in(Image.open(tmp_path / "label1.png").convert("RGB"))
    assert (str(v.reason), v.ticket_id, v.serial) == ("ok", REGISTRATION, 0)


def test_a_brother_ql_device_that_is_not_there_is_one_line():
    with pytest.raises(PrinterError, match="Brother QL printer /nonexistent/lp0: cannot open"):
        send("brother-ql", "/nonexistent/lp0", b"\x00" * 400, title="t")


def test_the_cups_command_line_is_lp_with_the_queue_and_the_file_and_no_shell():
    # The command is what `lp` gets; tests/badge/test_cups.py prints through a private cupsd.
    assert lp_command("desk_badges", "/tmp/gated-badge-x.pdf", "badge-42-0") == [
        "lp", "-d", "desk_badges", "-t", "badge-42-0", "-o", "fit-to-page", "--", "/tmp/gated-badge-x.pdf"]
    assert lp_command("q; rm -rf /", "/tmp/b.pdf", "t")[2] == "q; rm -rf /"  # one argv item, never a shell


def test_the_simulators_desk_prints_into_its_run_directory(tmp_path):
    from hw_sim.sim import generate_config

    root = REPO
    data, _ = generate_config(root / "hw_sim" / "sim.toml", tmp_path, uplink=False)
    desk = next(lane for lane in data["lane"] if lane["id"] == "desk-1")
    assert desk["mode"] == "handheld" and desk["printer"] == {
        "kind": "file", "target": str(tmp_path / "badges"), "size": "cr80", "format": "png"}
    assert load_config(root / "hw_sim" / "sim.toml").lanes[-1].printer.kind == "file"


def test_the_example_desk_in_example_toml_loads_once_uncommented(tmp_path):
    root = REPO
    text = (root / "config" / "example.toml").read_text()
    head, desk = text.split("# [[lane]]\n# id = \"desk-1\"", 1)
    lines = [line[2:] if line.startswith("# ") else line for line in ("# [[lane]]\n# id = \"desk-1\"" + desk).splitlines()]
    uncommented = head + "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    (tmp_path / "gate.toml").write_text(uncommented)
    config = load_config(tmp_path / "gate.toml")
    printer = config.lanes[-1].printer
    assert (config.lanes[-1].id, printer.kind, printer.target, printer.model, printer.size) == (
        "desk-1", "brother-ql", "tcp://192.168.1.40", "QL-820NWB", "62mm")
