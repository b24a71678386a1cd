"""A venue on loopback for the rpc tests: certificates, a registry, gates with real uplinks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from gated.clock import GateClock
from gated.config import UplinkSection
from gated.journal import Journal
from gated.registry.server import RegistryServer, TlsFiles
from gated.rpc.certs import VenueCerts
from gated.rpc.uplink import Uplink
from gated.validation import EntitlementCache, KeyRing, Lane, TicketRecord, Validator
from gated.validation.policy import Direction
from gated.validation.token import mint_dynamic, mint_static
from tests.conftest import until  # noqa: F401 - the scenarios import it from here with the scenery

KEY = bytes(range(32))
KID = 1
HALL_IN = Lane("in-1", "hall-a")
HALL_OUT = Lane("out-1", "hall-a", Direction.OUT)

ALICE = TicketRecord(ticket_id=1001, category="vip", ticket_type="3-day", zones=("hall-a", "lounge"),
                     benefits=(("lunch_day1", 1),), name="Alice Zhang", company="Acme", phone_last4="4567")
BOB = TicketRecord(ticket_id=1002, category="guest", ticket_type="1-day", zones=("hall-a",), name="Bob")
CAROL = TicketRecord(ticket_id=1003, category="media", zones=("hall-a", "press"), name="Carol")
TICKETS = (ALICE, BOB, CAROL)


def phone_code(ticket_id: int, kid: int = KID, key: bytes = KEY) -> str:
    return mint_dynamic(key, kid, ticket_id, time.time())


def badge_code(ticket_id: int, serial: int = 0, kid: int = KID, key: bytes = KEY) -> str:
    return mint_static(key, kid, ticket_id, serial)


def registry_tls(certs: VenueCerts) -> TlsFiles:
    return TlsFiles(certs.ca, certs.registry.cert, certs.registry.key)


def uplink_settings(port: int, certs: VenueCerts | None, gate_id: str, reconnect_max_s: float = 0.5) -> UplinkSection:
    if certs is None:
        return UplinkSection(f"127.0.0.1:{port}", True, None, None, None, reconnect_max_s)
    gate = certs.gates[gate_id]
    return UplinkSection(f"127.0.0.1:{port}", False, certs.ca, gate.cert, gate.key, reconnect_max_s)


async def start_registry(db: Path, certs: VenueCerts | None, *, port: int = 0, tickets=TICKETS, keys=True) -> RegistryServer:
    server = RegistryServer(db, f"127.0.0.1:{port}", tls=None if certs is None else registry_tls(certs))
    if tickets and server.store.ticket_count() == 0:
        server.store.put_tickets([(t, "") for t in tickets], record_changes=False)
    if keys and not server.store.keys_managed:
        server.store.add_key(KID, KEY)
    await server.start()
    return server


class Gate:
    """One gate: journal, cache, key ring, clock, a validator and a running uplink."""

    def __init__(self, tmp: Path, gate_id: str, port: int, certs: VenueCerts | None, **uplink_kwargs) -> None:
        self.gate_id = gate_id
        self.journal = Journal(tmp / f"journal-{gate_id}.db", gate_id, checkpoint_every_s=None)
        self.cache = EntitlementCache()
        self.keyring = KeyRing()
        self.clock = GateClock()
        self.validator = Validator(self.keyring, self.cache)
        self.uplink = Uplink(gate_id, self.journal, self.cache, self.keyring, self.clock,
                             uplink_settings(port, certs, gate_id), **uplink_kwargs)
        self.task: asyncio.Task | None = None

    def start(self) -> Gate:
        self.task = asyncio.create_task(self.uplink.run(), name=f"uplink-{self.gate_id}")
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.journal.close()

    def decide(self, code: str, lane: Lane = HALL_IN):
        return self.validator.decide(code, lane, time.time())

    async def pass_through(self, code: str, lane: Lane = HALL_IN):
        """Scan, and when admitted, the person walks through: commit, journal, wake the uplink."""
        decision = self.decide(code, lane)
        await self.journal.append_async("decision", at=decision.at, lane=lane.id, ticket_id=decision.ticket_id,
                                        reason=str(decision.reason))
        if decision.admitted:
            usage = self.validator.commit(decision)
            payload = usage._asdict()
            payload["direction"] = str(payload["direction"])
            payload["inside"] = list(payload["inside"])
            await self.journal.append_async("passage", at=decision.at, lane=lane.id, ticket_id=usage.ticket_id,
                                            payload=payload)
        self.uplink.wake()
        return decision




@dataclass
class Venue:
    registry: RegistryServer
    gates: list[Gate]

    async def close(self) -> None:
        for gate in self.gates:
            await gate.stop()
        await self.registry.stop()
