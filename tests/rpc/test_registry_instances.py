"""A hall served by two registry instances on one PostgreSQL, and one of them dying mid-stream.

Two `gated registry serve` processes share the database; gate A talks to
instance A, gate B to instance B, each configured with both addresses. What
one instance counts reaches the gates of the other; instance A is killed
with SIGKILL while people walk through gate A, which fails over to B; at the
end every journal record is stored exactly once, each ticket's usage is the
passages walked, and both gates hold the registry's version.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from gated.config import load_config
from gated.gate.daemon import Gate
from gated.journal import u64_to_sqlite
from gated.registry.store import RegistryStore
from gated.validation import TicketRecord
from gated.validation.token import mint_static
from tests.conftest import POSTGRES_ENV, fresh_postgres_db
from tests.gatekit import KEY, Pty, make_gate_dir
from tests.rpc_helpers import until

needs_postgres = pytest.mark.skipif(not os.environ.get(POSTGRES_ENV),
                                    reason=f"several registry instances need PostgreSQL: set {POSTGRES_ENV} (.ci/run does)")

FIRST = 5205320758  # 10-digit registration numbers, consecutive
TICKETS = [TicketRecord(ticket_id=FIRST + i, category="guest", zones=("hall",)) for i in range(400)]
PASSAGE_PIN = 5
RELAY_PIN = 17


def badge(ticket_id: int) -> str:
    return mint_static(KEY, 1, ticket_id, 0)


class Instance:
    """`gated registry serve --db URL` as its own process."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port
        self.address = f"127.0.0.1:{port}"

    @classmethod
    async def start(cls, url: str, log_path) -> Instance:
        log = open(log_path, "wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gated", "registry", "serve", "--db", url, "--plaintext", "--listen", "127.0.0.1:0",
            "--http", "off", stdout=asyncio.subprocess.PIPE, stderr=log)
        log.flush()
        seen = []
        while not (found := re.search(r"^registry listening on 127\.0\.0\.1:(\d+)", seen[-1] if seen else "")):
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, f"registry did not start: {''.join(seen)}"
            seen.append(line)
        instance = cls(proc, int(found.group(1)))
        instance._drain = asyncio.create_task(instance._copy_output(log))
        return instance

    async def _copy_output(self, log) -> None:
        while line := await self.proc.stdout.readline():
            log.write(line)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 10)
        await self._drain


class Door:
    """A real gate daemon: serial scanner on a pty, mock pins, uplink to the instances listed."""

    def __init__(self, root, gate_id: str, targets: list[str]) -> None:
        root.mkdir()
        uplink = f"targets = {targets!r}\nplaintext = true\nreconnect_max_s = 1".replace("'", '"')
        self.config = load_config(make_gate_dir(root, gate_id=gate_id, tickets=None, uplink=uplink, rate_burst=50),
                                  check_files=True)
        self.ptys = [Pty(root / "scanner-in-1"), Pty(root / "scanner-out-1")]
        self.factory = MockFactory(pin_class=MockPWMPin)
        self.gate = Gate(self.config, pin_factory=self.factory)
        self.walked: list[int] = []

    @property
    def cache(self):
        return self.gate.validator.cache

    def records(self, kind: str | None = None):
        return [r for r in self.gate.journal.tail(100_000) if kind is None or r.kind == kind]

    async def walk_through(self, ticket_id: int) -> None:
        passages = len(self.records("passage"))
        relay = self.factory.pin(RELAY_PIN)
        await until(lambda: relay.state == 0, what="relay closed")
        self.ptys[0].send(badge(ticket_id))
        await until(lambda: relay.state == 1, what="relay")
        beam = self.factory.pin(PASSAGE_PIN)
        beam.drive_low()
        await asyncio.sleep(0.02)
        beam.drive_high()
        await until(lambda: len(self.records("passage")) == passages + 1, what="passage record")
        self.walked.append(ticket_id)

    async def close(self) -> None:
        if getattr(self.gate, "journal", None) is not None:
            await self.gate.stop()
        for pty in self.ptys:
            pty.close()


@pytest.fixture
def postgres_url():
    yield from fresh_postgres_db(os.environ[POSTGRES_ENV])


@needs_postgres
def test_two_instances_one_database_and_a_gate_that_fails_over(tmp_path, postgres_url):
    with RegistryStore(postgres_url) as store:
        store.put_tickets([(t, "") for t in TICKETS], record_changes=False)
        store.add_key(1, KEY)

    async def hall():
        a_instance = await Instance.start(postgres_url, tmp_path / "registry-a.log")
        b_instance = await Instance.start(postgres_url, tmp_path / "registry-b.log")
        a = Door(tmp_path / "gate-a", "gate-a", [a_instance.address, b_instance.address])
        b = Door(tmp_path / "gate-b", "gate-b", [b_instance.address, a_instance.address])
        try:
            for door in (a, b):
                await door.gate.start()
            for door in (a, b):
                await until(lambda door=door: len(door.cache) == len(TICKETS) and 1 in door.gate.keyring,
                            timeout=15, what="snapshot and keys")
            assert a.gate.uplink.status()["target"] == a_instance.address
            assert b.gate.uplink.status()["target"] == b_instance.address

            # Counted at instance A, seen at the gate on instance B (and back).
            await a.walk_through(FIRST)
            await until(lambda: b.cache.get(FIRST).entries_used == 1, what="A's usage at gate B")
            await b.walk_through(FIRST + 1)
            await until(lambda: a.cache.get(FIRST + 1).entries_used == 1, what="B's usage at gate A")

            # A command's change (published by whichever instance polls first) reaches both gates.
            revoke = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gated", "registry", "revoke", str(FIRST + 399), "--db", postgres_url,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(revoke.communicate(), 30)
            assert revoke.returncode == 0, err.decode()
            for door in (a, b):
                await until(lambda door=door: door.cache.get(FIRST + 399).state == 1, what="revocation at both gates")

            # People walk through both gates. Instance A stalls (SIGSTOP: gate A's records go out on
            # its stream unacknowledged), then dies (SIGKILL) with them in flight.
            async def crowd(door: Door, ids, stall_at: int | None = None, kill_at: int | None = None) -> None:
                for n, tid in enumerate(ids):
                    if n == stall_at:
                        a_instance.proc.send_signal(signal.SIGSTOP)
                    if n == kill_at:
                        assert door.gate.journal.backlog() > 0  # records sent to A and never acknowledged
                        a_instance.proc.kill()
                    await door.walk_through(tid)

            await asyncio.gather(
                crowd(a, [FIRST + 2 + i for i in range(40)], stall_at=12, kill_at=18),
                crowd(b, [FIRST + 100 + i for i in range(40)]),
            )
            await a_instance.proc.wait()
            assert a_instance.proc.returncode == -signal.SIGKILL

            for door in (a, b):
                await until(lambda door=door: door.gate.journal.backlog() == 0, timeout=15, what="journal drained")
            assert a.gate.uplink.status()["target"] == b_instance.address  # gate A is on instance B now

            with RegistryStore(postgres_url, create=False) as registry:
                version = registry.version
                await until(lambda: a.cache.version == b.cache.version == version, timeout=10,
                            what="both gates at the registry's version")
                # Exactly once: each journal record is one row, under its (gate, epoch, seq).
                doubled = registry.conn.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM events GROUP BY gate_id, epoch, seq HAVING count(*) > 1) d"
                ).fetchone()[0]
                assert doubled == 0
                for door in (a, b):
                    journal = {(u64_to_sqlite(door.gate.journal.epoch_span(r.seq)[0]), r.seq) for r in door.records()}
                    stored = set(registry.conn.execute("SELECT epoch, seq FROM events WHERE gate_id = ?",
                                                       (door.gate.config.gate.id,)).fetchall())
                    assert stored == journal, f"{door.gate.config.gate.id}: lost {len(journal - stored)}"
                # The registry's usage is the passages walked, and so is each gate's.
                walked = {}
                for tid in a.walked + b.walked:
                    walked[tid] = walked.get(tid, 0) + 1
                for tid, times in walked.items():
                    assert registry.ticket(tid).entries_used == times
                    assert a.cache.get(tid).entries_used == times == b.cache.get(tid).entries_used
                assert sum(walked.values()) == len(a.records("passage")) + len(b.records("passage")) == 82
        finally:
            for door in (a, b):
                await door.close()
            for instance in (a_instance, b_instance):
                await instance.stop()

    asyncio.run(hall())


def test_several_addresses_in_the_config(tmp_path):
    def uplink(body: str):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        root.mkdir()
        return load_config(make_gate_dir(root, uplink=body + "\nplaintext = true")).uplink

    assert uplink('target = "reg-a.venue:7443"').targets == ("reg-a.venue:7443",)
    assert uplink('target = "reg-a.venue:7443, reg-b.venue:7443"').targets == ("reg-a.venue:7443", "reg-b.venue:7443")
    listed = uplink('targets = ["reg-a.venue:7443", "[::1]:7443"]')
    assert (listed.target, listed.targets) == ("reg-a.venue:7443", ("reg-a.venue:7443", "[::1]:7443"))
    from gated.errors import ConfigError

    for body, says in (('target = "a:1"\ntargets = ["b:2"]', "not both"),
                       ('targets = ["a:1", "a:1"]', "listed twice"),
                       ('targets = []', "non-empty array"),
                       ('target = "a:1,"', 'expected "host:port"'),
                       ('targets = ["a"]', 'expected "host:port"')):
        with pytest.raises(ConfigError, match=says) as caught:
            uplink(body)
        assert "\n" not in str(caught.value)
