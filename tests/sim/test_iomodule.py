"""The simulated Modbus I/O module: a real pymodbus server on loopback, spoken to by a real client."""

from __future__ import annotations

import asyncio
import time

import pytest
from pymodbus.client import AsyncModbusTcpClient

from hw_sim.iomodule import SimulatedIoModule
from tests.conftest import until


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _client(module: SimulatedIoModule) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=module.port, timeout=1, retries=0)
    assert await client.connect()
    return client


def test_a_master_writes_coils_and_reads_the_inputs_the_simulator_drives():
    async def scenario():
        module = SimulatedIoModule(coils=32, inputs=64)
        changes = []
        module.on_coil_change(lambda addr, value, at: changes.append((addr, value)))
        await module.start()
        assert module.port > 0 and not module.connected
        client = await _client(module)
        try:
            assert not (await client.write_coil(0, True, device_id=1)).isError()
            assert not (await client.write_coils(17, [True, False, True], device_id=1)).isError()
            assert module.coil(0) and module.coil(17) and not module.coil(18) and module.coil(19)
            assert module.coils() == [a in (0, 17, 19) for a in range(32)]
            assert changes == [(0, True), (17, True), (19, True)]
            assert module.connected

            module.set_input(5, True)
            module.set_input(63, True)
            bits = (await client.read_discrete_inputs(0, count=64, device_id=1)).bits[:64]
            assert [n for n, bit in enumerate(bits) if bit] == [5, 63]
            module.set_input(5, False)
            bits = (await client.read_discrete_inputs(5, count=1, device_id=1)).bits
            assert bits[0] is False
            assert (await client.read_coils(17, count=3, device_id=1)).bits[:3] == [True, False, True]

            # An address the module does not have is a Modbus exception, not a crash.
            assert (await client.read_coils(40, count=1, device_id=1)).isError()
            with pytest.raises(IndexError):
                module.set_input(64, True)
        finally:
            client.close()
            await module.stop()

    run(scenario())


def test_the_watchdog_drops_every_coil_when_the_master_stops_talking():
    async def scenario():
        module = SimulatedIoModule(watchdog_s=0.4)
        fell = []
        module.on_coil_change(lambda addr, value, at: fell.append((addr, at)) if not value else None)
        await module.start()
        client = await _client(module)
        try:
            for _ in range(6):  # a master polling every 100 ms keeps the coil up well past watchdog_s
                await asyncio.sleep(0.1)
                await client.write_coil(2, True, device_id=1)
                await client.write_coil(7, True, device_id=1)
            last_talk = time.monotonic()
            assert module.coil(2) and module.coil(7) and module.connected

            # The master goes silent (its process died): the relay falls after ~watchdog_s.
            await until(lambda: not module.coil(2), timeout=3, what="the watchdog to drop the coil")
            assert not module.coil(7) and not module.connected
            assert sorted(addr for addr, _ in fell) == [2, 7]
            assert fell[0][1] - last_talk >= 0.4  # never before watchdog_s of silence
            assert module.watchdog_trips == 1

            # The master comes back: it writes again and the coil holds.
            await client.write_coil(2, True, device_id=1)
            assert module.coil(2) and module.connected
        finally:
            client.close()
            await module.stop()

    run(scenario())


def test_stopping_the_module_drops_connections_and_coils_and_it_serves_again_on_the_same_port():
    async def scenario():
        module = SimulatedIoModule()
        await module.start()
        port = module.port
        client = await _client(module)
        await client.write_coil(1, True, device_id=1)
        await module.stop()
        assert not module.coil(1) and not module.running
        await until(lambda: not client.connected, timeout=3, what="the master to see the connection drop")
        client.close()

        restarted = SimulatedIoModule(port=port)
        await restarted.start()
        try:
            assert restarted.port == port
            client = await _client(restarted)
            assert (await client.read_coils(0, count=16, device_id=1)).bits[:16] == [False] * 16
            client.close()
        finally:
            await restarted.stop()

    run(scenario())


def test_bad_sizes_are_refused_with_one_line():
    with pytest.raises(ValueError, match="coils must be a multiple of 16"):
        SimulatedIoModule(coils=10)
    with pytest.raises(ValueError, match="watchdog_s"):
        SimulatedIoModule(watchdog_s=0)
