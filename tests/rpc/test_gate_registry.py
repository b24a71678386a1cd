"""A small venue end to end: two real gate daemons, the reference registry, mTLS on loopback.

Scans go in on ptys, people walk through mock passage beams, events go up
to the registry, and what one gate learns reaches the other.
"""

import asyncio
import json
import sys

from gpiozero.pins.mock import MockFactory, MockPWMPin

from gated.config import load_config
from gated.gate.daemon import Gate
from gated.registry.server import RegistryServer
from gated.rpc.admin import status_reply
from gated.rpc.certs import make_venue_certs
from gated.validation import TicketRecord
from gated.validation.token import mint_static
from tests.gatekit import Pty, make_gate_dir
from tests.rpc_helpers import KEY, badge_code, phone_code, registry_tls, until

ALICE = TicketRecord(ticket_id=1001, category="vip", zones=("hall",), name="Alice Zhang")
BOB = TicketRecord(ticket_id=1002, category="guest", zones=("hall",))
PASSAGE = 5


async def gated_command(*args):
    """The `gated` CLI as a technician runs it, without blocking this event loop (it serves the gates)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gated", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


class Door:
    def __init__(self, root, gate_id=None, port=None, certs=None, *, reboot=False):
        """A new gate dir (keys, config, no cache) or, with `reboot`, the one already at `root`."""
        if reboot:
            config_path = root / "gate.toml"
        else:
            root.mkdir()
            gate = certs.gates[gate_id]
            uplink = f'target = "127.0.0.1:{port}"\nca = "{certs.ca}"\ncert = "{gate.cert}"\nkey = "{gate.key}"\nreconnect_max_s = 1'
            config_path = make_gate_dir(root, gate_id=gate_id, tickets=None, uplink=uplink)
        self.config = load_config(config_path, check_files=True)
        self.ptys = [Pty(root / "scanner-in-1"), Pty(root / "scanner-out-1")]
        self.factory = MockFactory(pin_class=MockPWMPin)
        self.gate = Gate(self.config, pin_factory=self.factory)
        self.root = root

    def records(self, kind):
        return [r for r in self.gate.journal.tail(1000) if r.kind == kind]

    async def walk_through(self, code):
        before = len(self.records("passage"))
        self.ptys[0].send(code)
        await until(lambda: self.factory.pin(17).state == 1, what="relay")
        beam = self.factory.pin(PASSAGE)
        beam.drive_low()
        await asyncio.sleep(0.03)
        beam.drive_high()
        await until(lambda: len(self.records("passage")) == before + 1, what="passage record")

    async def scan(self, code):
        before = len(self.records("decision"))
        self.ptys[0].send(code)
        await until(lambda: len(self.records("decision")) == before + 1, what="decision")
        return self.records("decision")[-1]


def test_two_gates_and_the_registry(tmp_path, registry_db):
    certs = make_venue_certs(tmp_path / "certs", ["gate-a", "gate-b"], hosts=["127.0.0.1", "localhost"])

    async def venue():
        registry = RegistryServer(registry_db, "127.0.0.1:0", tls=registry_tls(certs))
        registry.store.put_tickets([(ALICE, "0001"), (BOB, "0002")], record_changes=False)
        registry.store.add_key(1, KEY)
        port = await registry.start()
        doors = []
        try:
            a = Door(tmp_path / "a", "gate-a", port, certs)
            doors.append(a)
            b = Door(tmp_path / "b", "gate-b", port, certs)
            doors.append(b)
            await a.gate.start()
            await b.gate.start()
            for door in (a, b):  # an empty gate gets its snapshot and keys from the registry
                await until(lambda door=door: len(door.gate.validator.cache) == 2 and 1 in door.gate.keyring, timeout=10, what="snapshot")
            await a.walk_through(phone_code(1001))
            await until(lambda: registry.store.event_count("gate-a") >= 2, what="events at the registry")
            took = await until(lambda: b.gate.validator.cache.get(1001).inside == ("hall",), what="delta at gate b")
            assert took < 1.0
            assert (await b.scan(phone_code(1001))).reason == "already_inside"

            code, _, err = await gated_command("registry", "revoke", "1002", "--db", str(registry_db))
            assert code == 0, err
            await until(lambda: a.gate.validator.cache.get(1002).state == 1, timeout=5, what="revocation at gate a")
            assert (await a.scan(badge_code(1002))).reason == "revoked"

            # the admin service answers on the gate's unix socket (served by this very event loop)
            await until(lambda: a.gate.journal.backlog() == 0, what="gate a's backlog drained")
            code, out, err = await gated_command("admin", "status", "--socket", str(a.root / "admin.sock"))
            assert code == 0, err
            doc = json.loads(out)
            assert doc["gate_id"] == "gate-a" and {lane["id"] for lane in doc["lanes"]} == {"in-1", "out-1"}
            assert doc["uplink"]["connected"] is True and doc["journal_backlog"] == 0 and doc["cache_tickets"] == 2
            # the typed fields of the contract carry the same (other vendors' tools read those, not the JSON)
            reply = status_reply(a.gate.status())
            assert (reply.gate_id, reply.cache_tickets, reply.journal_backlog, reply.uplink_connected) == ("gate-a", 2, 0, True)
            assert {lane.id: lane.state for lane in reply.lanes} == {"in-1": "idle", "out-1": "idle"}
            # every record gate a journaled reached the registry, once
            assert registry.store.event_count("gate-a") == len(a.gate.journal.tail(10_000))
        finally:
            for door in doors:
                if hasattr(door.gate, "journal") and door.gate.journal is not None:
                    await door.gate.stop()
                for pty in door.ptys:
                    pty.close()
            await registry.stop()

    asyncio.run(venue())


def test_a_gate_rebooted_with_no_network_admits_from_what_it_last_knew(tmp_path, registry_db):
    """The registry's snapshot and keys are saved the moment they arrive; the network then goes."""
    certs = make_venue_certs(tmp_path / "certs", ["gate-a"], hosts=["127.0.0.1", "localhost"])

    async def morning():
        registry = RegistryServer(registry_db, "127.0.0.1:0", tls=registry_tls(certs))
        registry.store.put_tickets([(ALICE, "0001"), (BOB, "0002")], record_changes=False)
        registry.store.add_key(7, bytes(range(1, 33)))  # a key the gate's bootstrap file does not have
        port = await registry.start()
        door = Door(tmp_path / "a", "gate-a", port, certs)
        try:
            await door.gate.start()
            await until(lambda: len(door.gate.validator.cache) == 2 and 7 in door.gate.keyring, timeout=10, what="snapshot and keys")
            await door.walk_through(mint_static(bytes(range(1, 33)), 7, 1001, 0))
        finally:
            await door.gate.stop()
            for pty in door.ptys:
                pty.close()
            await registry.stop()

    asyncio.run(morning())

    async def after_power_cut():  # same config, registry gone
        door = Door(tmp_path / "a", reboot=True)
        try:
            await door.gate.start()
            assert door.gate.uplink.status()["connected"] is False
            assert (await door.scan(mint_static(bytes(range(1, 33)), 7, 1002, 0))).reason == "ok"
            await asyncio.sleep(1.1)  # past the debounce
            assert (await door.scan(mint_static(bytes(range(1, 33)), 7, 1001, 0))).reason == "already_inside"
        finally:
            await door.gate.stop()
            for pty in door.ptys:
                pty.close()

    asyncio.run(after_power_cut())
