"""Serial scanners: the Framer's rules, then the driver on a real pty and loop://.

The pty stands in for the scanner's USB-serial port: the test writes to the
master end what a scanner would send; the driver opens the slave by a stable
symlink, as it would open /dev/serial/by-id/... at a real lane.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gated.drivers.base import Framer, Read
from gated.drivers.serial_scanner import SerialScanner
from gated.errors import DriverError
from tests.conftest import until

# --- Framer ------------------------------------------------------------------


def test_cr_framer_ignores_the_lf_of_a_scanner_set_to_crlf():
    framer = Framer("CR")
    assert framer.feed(b"T-1\r\nT-2\r\n") == [(b"T-1", False), (b"T-2", False)]


def test_lf_framer_ignores_the_cr_of_a_scanner_set_to_crlf():
    framer = Framer("LF")
    assert framer.feed(b"T-1\r\nT-2\r") == [(b"T-1", False)]
    assert framer.feed(b"\n") == [(b"T-2", False)]


def test_crlf_framer_waits_for_both_bytes_and_keeps_a_lone_cr_as_data():
    framer = Framer("CRLF")
    assert framer.feed(b"A\rB\r") == []
    assert framer.feed(b"\nC\r\n") == [(b"A\rB", False), (b"C", False)]


def test_blank_lines_are_not_frames():
    assert Framer("CR").feed(b"\r\r\n\r\n\rX\r") == [(b"X", False)]
    assert Framer("CRLF").feed(b"\r\n\r\nX\r\n") == [(b"X", False)]


@pytest.mark.parametrize("suffix,terminator", [("CR", b"\r"), ("LF", b"\n"), ("CRLF", b"\r\n")])
def test_a_frame_of_exactly_max_frame_is_whole_and_one_more_byte_truncates(suffix, terminator):
    framer = Framer(suffix, max_frame=8)
    assert framer.feed(b"12345678" + terminator) == [(b"12345678", False)]
    # Byte by byte, the overflow is reported as soon as it happens, not at the terminator.
    reported = [framer.feed(bytes([byte])) for byte in b"123456789"]
    assert reported == [[]] * 8 + [[(b"12345678", True)]]
    assert framer.feed(b"ABC" + terminator + b"NEXT" + terminator) == [(b"NEXT", False)]


def test_an_endless_line_is_reported_once_and_never_buffered():
    framer = Framer("CRLF", max_frame=512)
    reported = []
    for _ in range(256):  # 1 MiB with no terminator, ending on half a CRLF
        reported += framer.feed(b"x" * 4095 + b"\r")
        assert framer.buffered <= 513
    assert reported == [(b"x" * 512, True)]
    assert framer.feed(b"\nOK\r\n") == [(b"OK", False)]


def test_an_unknown_suffix_is_refused():
    with pytest.raises(DriverError, match="TAB"):
        Framer("TAB")


_payload = st.binary(min_size=1, max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)


@given(
    suffix=st.sampled_from(["CR", "LF", "CRLF"]),
    frames=st.lists(_payload, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_any_chunking_of_a_stream_gives_the_same_frames(suffix, frames, cuts):
    terminator = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}[suffix]
    stream = b"".join(frame + terminator for frame in frames)
    framer = Framer(suffix, max_frame=16)
    got = []
    start = 0
    for cut in sorted(cuts) + [len(stream)]:
        got += framer.feed(stream[start:cut])
        start = max(start, cut)
    assert got == [(frame[:16], len(frame) > 16) for frame in frames]


def test_stray_line_ends_near_max_frame_give_the_same_frame_at_once_or_byte_by_byte():
    # A scanner set to CRLF with extra CRs, on an LF lane whose cap is 2: the
    # stray CRs end the frame, they are not data, however they arrive.
    stream = b"b\r\r\r\n"
    framer = Framer("LF", max_frame=2)
    assert framer.feed(stream) == [(b"b", False)]
    framer = Framer("LF", max_frame=2)
    assert [f for byte in stream for f in framer.feed(bytes([byte]))] == [(b"b", False)]
    # ... while a stray byte followed by data is data: the frame overflows.
    framer = Framer("LF", max_frame=2)
    assert [f for byte in b"b\r\r\rc\n" for f in framer.feed(bytes([byte]))] == [(b"b\r", True)]


def test_a_flood_of_stray_line_ends_is_never_buffered():
    framer = Framer("CR", max_frame=4)
    assert framer.feed(b"AB") == []
    for _ in range(1000):
        assert framer.feed(b"\n" * 1000) == []
        assert framer.buffered <= 5
    assert framer.feed(b"\r") == [(b"AB", False)]


def _frames_by_the_rules(suffix: str, max_frame: int, stream: bytes) -> list[tuple[bytes, bool]]:
    """The Framer's docstring, written out plainly over a whole stream."""
    terminator = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}[suffix]
    stray = {"CR": b"\n", "LF": b"\r", "CRLF": b""}[suffix]
    *complete, tail = stream.split(terminator)
    frames = []
    for piece in complete:
        piece = piece.strip(stray)
        if len(piece) > max_frame:
            frames.append((piece[:max_frame], True))
        elif piece:
            frames.append((piece, False))
    if suffix == "CRLF" and tail.endswith(b"\r"):
        tail = tail[:-1]  # maybe the first half of the next terminator
    if len(tail.strip(stray)) > max_frame:  # overflow is reported before the terminator comes
        frames.append((tail.lstrip(stray)[:max_frame], True))
    return frames


# Line ends are what the rules are about: draw them often, among a few data bytes.
_line_noise = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"x", b"\xff"]), max_size=30).map(b"".join)


@settings(max_examples=1000, deadline=None)
@given(
    suffix=st.sampled_from(["CR", "LF", "CRLF"]),
    max_frame=st.integers(min_value=1, max_value=6),
    stream=st.one_of(_line_noise, st.binary(max_size=40)),
    data=st.data(),
)
def test_frames_and_flags_do_not_depend_on_how_the_bytes_arrive(suffix, max_frame, stream, data):
    byte_by_byte = list(range(len(stream) + 1))
    cuts = data.draw(st.one_of(st.just(byte_by_byte), st.lists(st.integers(0, len(stream)), max_size=len(stream))))
    at_once = Framer(suffix, max_frame).feed(stream)
    split = Framer(suffix, max_frame)
    got = []
    start = 0
    for cut in sorted(cuts) + [len(stream)]:
        got += split.feed(stream[start:cut])
        start = max(start, cut)
    assert got == at_once == _frames_by_the_rules(suffix, max_frame, stream)
    assert split.buffered <= max_frame + 1
    assert split.buffered <= max_frame + 1


# --- The driver ----------------------------------------------------------------


def run_async(scenario, timeout: float = 15.0):
    return asyncio.run(asyncio.wait_for(scenario, timeout))




class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class PlugPort:
    """A pty behind `tmp_path/scanner`: plug() makes a fresh one, unplug() closes it."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "scanner"
        self.master: int | None = None

    def plug(self) -> None:
        master, slave = os.openpty()
        slave_name = os.ttyname(slave)
        os.close(slave)  # the driver opens it by name, like a real port
        staging = self.path.with_name("scanner.new")
        staging.symlink_to(slave_name)
        os.replace(staging, self.path)
        self.master = master

    def unplug(self) -> None:
        os.close(self.master)
        self.master = None

    async def send(self, *pieces: bytes, pause: float = 0.0) -> None:
        for piece in pieces:
            await asyncio.to_thread(_write_all, self.master, piece)
            await asyncio.sleep(pause)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def texts(reads: list[Read]) -> list[str]:
    return [read.text for read in reads]


@pytest.fixture
def port(tmp_path):
    plug = PlugPort(tmp_path)
    yield plug
    if plug.master is not None:
        plug.unplug()


async def start(scanner: SerialScanner) -> asyncio.Task:
    task = asyncio.create_task(scanner.run())
    await until(lambda: scanner.connected)
    return task


async def stop(scanner: SerialScanner, task: asyncio.Task) -> None:
    scanner.close()
    await task  # returns normally: close() is a clean stop


@pytest.mark.parametrize("suffix,terminator", [("CR", b"\r"), ("LF", b"\n"), ("CRLF", b"\r\n")])
def test_codes_arrive_with_each_suffix_even_when_split_across_writes(port, suffix, terminator):
    clock = FakeClock()
    reads: list[Read] = []

    async def scenario():
        port.plug()
        scanner = SerialScanner("lane-1", str(port.path), suffix=suffix, on_read=reads.append, clock=clock)
        task = await start(scanner)
        await port.send(b"GT1:AbC/09" + terminator + b"GT2" + terminator)
        await until(lambda: len(reads) == 2)
        clock.now = 2000.0
        # A slow scanner (or a USB adapter flushing late) delivers in pieces,
        # here cut inside the terminator too.
        await port.send(b"SPL", b"IT-3" + terminator[:1], terminator[1:] + b"GT4" + terminator, pause=0.05)
        await until(lambda: len(reads) == 4)
        await stop(scanner, task)

    run_async(scenario())
    assert reads[:2] == [Read("lane-1", "GT1:AbC/09", 1000.0), Read("lane-1", "GT2", 1000.0)]
    assert reads[2:] == [Read("lane-1", "SPLIT-3", 2000.0), Read("lane-1", "GT4", 2000.0)]


def test_noise_a_10kb_burst_and_non_utf8_bytes_each_get_a_plain_answer(port):
    reads: list[Read] = []

    async def scenario():
        port.plug()
        scanner = SerialScanner("lane-1", str(port.path), on_read=reads.append)
        task = await start(scanner)
        await port.send(b"\r\n\r\x00\x1b[2J\xff\r")  # blank lines, then line noise
        await port.send(b"9" * 10_000 + b"\r" + b"AFTER-BURST\r")
        await port.send("Zoë Müller".encode("latin-1") + b"\r" + b"\xc3\x28\xa0\r")
        await until(lambda: len(reads) == 5)
        await asyncio.sleep(0.1)  # and nothing more trickles in
        await stop(scanner, task)

    run_async(scenario())
    assert [(read.text, read.truncated) for read in reads] == [
        ("\x00\x1b[2J\xff", False),
        ("9" * 512, True),
        ("AFTER-BURST", False),
        ("Zoë Müller", False),
        ("\xc3(\xa0", False),
    ]


def test_unplug_is_logged_once_and_the_scanner_comes_back_on_replug(port):
    reads: list[Read] = []

    async def scenario(logs):
        port.plug()
        scanner = SerialScanner(
            "lane-1", str(port.path), on_read=reads.append, reconnect_delay=0.02, reconnect_delay_max=0.05
        )
        task = await start(scanner)
        await port.send(b"BEFORE\r", b"HALF-A-CO")
        await until(lambda: reads)
        port.unplug()
        await until(lambda: not scanner.connected)
        await asyncio.sleep(0.3)  # many retries against a dangling symlink
        assert [log["event"] for log in logs if log["event"].startswith("scanner_")] == ["scanner_connected", "scanner_disconnected"]
        port.plug()
        await until(lambda: scanner.connected)
        await port.send(b"AFTER\r")
        await until(lambda: len(reads) == 2)
        await stop(scanner, task)

    with capture_logs() as logs:
        run_async(scenario(logs))
    assert texts(reads) == ["BEFORE", "AFTER"]  # the half code did not leak into AFTER
    assert [(log["event"], log["source"]) for log in logs if log["event"].startswith("scanner_")] == [
        ("scanner_connected", "lane-1"),
        ("scanner_disconnected", "lane-1"),
        ("scanner_reconnected", "lane-1"),
    ]
    assert logs[1]["log_level"] == "warning"


def test_a_scanner_missing_at_start_is_reported_once_and_picked_up_when_plugged(port):
    reads: list[Read] = []

    async def scenario():
        scanner = SerialScanner("lane-2", str(port.path), on_read=reads.append, reconnect_delay=0.02)
        task = asyncio.create_task(scanner.run())
        await asyncio.sleep(0.2)
        assert not scanner.connected
        port.plug()
        await until(lambda: scanner.connected)
        await port.send(b"LATE\r")
        await until(lambda: reads)
        await stop(scanner, task)

    with capture_logs() as logs:
        run_async(scenario())
    assert [log["event"] for log in logs if log["event"].startswith("scanner_")] == ["scanner_unavailable", "scanner_connected"]
    assert texts(reads) == ["LATE"]


def test_loop_url_runs_the_same_driver_path():
    reads: list[Read] = []

    async def scenario():
        scanner = SerialScanner("sim", "loop://", suffix="LF", on_read=reads.append)
        task = await start(scanner)
        scanner.port.write(b"SIM-1\nSIM-")
        scanner.port.write(b"2\n")
        await until(lambda: len(reads) == 2)
        await stop(scanner, task)
        scanner.close()  # twice is fine
        assert scanner.port is None

    run_async(scenario())
    assert texts(reads) == ["SIM-1", "SIM-2"]


def test_cancelling_run_releases_the_port(port):
    async def scenario():
        port.plug()
        scanner = SerialScanner("lane-1", str(port.path), on_read=lambda read: None)
        task = await start(scanner)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert scanner.port is None and not scanner.connected

    run_async(scenario())


def test_a_failing_consumer_does_not_silence_the_lane(port):
    reads: list[Read] = []

    def consumer(read: Read) -> None:
        if read.text == "BOOM":
            raise RuntimeError("bug downstream")
        reads.append(read)

    async def scenario():
        port.plug()
        scanner = SerialScanner("lane-1", str(port.path), on_read=consumer)
        task = await start(scanner)
        await port.send(b"BOOM\rSTILL-HERE\r")
        await until(lambda: reads)
        await stop(scanner, task)

    with capture_logs() as logs:
        run_async(scenario())
    assert texts(reads) == ["STILL-HERE"]
    assert "scanner_consumer_failed" in [log["event"] for log in logs if log["event"].startswith("scanner_")]
