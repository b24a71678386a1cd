"""A Google Wallet code at a real gate: pty scanner, journal, MockFactory relay."""

import asyncio
import time

from gated.validation.token import mint_wallet
from tests.gate.test_daemon import RELAY_IN, Door, until
from tests.gatekit import KEY


def test_a_wallet_code_opens_the_relay_and_an_older_screenshot_does_not(tmp_path):
    async def scenario():
        async with Door(tmp_path) as door:
            relay = door.pin(RELAY_IN)
            now = time.time()
            screenshot = mint_wallet(KEY, 1, 1, now - 30)  # still inside the window
            door.scan_in.send(mint_wallet(KEY, 1, 1, now))
            await until(lambda: relay.state == 1)
            await until(lambda: relay.state == 0, timeout=2.0)
            door.scan_out.send(mint_wallet(KEY, 1, 1, now))  # out and back: anti-passback allows the next entry
            await until(lambda: len(door.records("decision")) == 2)
            door.scan_in.send(screenshot)
            await until(lambda: len(door.records("decision")) == 3)
            last = door.records("decision")[-1]
            assert (last.ticket_id, last.reason, last.payload.get("code_kind")) == (1, "code_expired", "wallet")
            assert relay.state == 0
    asyncio.run(scenario())
