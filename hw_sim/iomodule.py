"""The simulated Modbus TCP I/O module: what a turnstile's relay, light,
buzzer, passage beam and emergency contact are wired to when the controller
is not at the turnstile.

A real pymodbus server on 127.0.0.1 (port 0: a free one), with `coils`
coils (outputs: relay, light channels, buzzer) and `inputs` discrete inputs
(the beam, the emergency contact) at addresses 0.., answering one unit id.
The simulator sets inputs (`set_input`) and watches coils (`coil`, `coils`,
`on_coil_change`); the gate reaches it only over TCP, so killing the gate
leaves the module, and what it does next, to be seen.

Like a real module (ADAM-6000 "safe value", WAGO, Waveshare...) it has a
communication watchdog: when no request from the master arrives for
`watchdog_s`, every coil drops to off, so the relay falls when the controller
dies or the cable is pulled. `connected` says a master talked to it within
`watchdog_s`.

The module's state lives here, in two lists; pymodbus's device store is only
the wire: a request calls `_serve` (the SimDevice action, on the server's
loop) before pymodbus reads or writes its own registers, and `_serve` copies
our bits into them (reads) or takes the written bits from the request
(writes). Every coil change, by a master or by the watchdog, calls the
`on_coil_change` callbacks with (address, value, time.monotonic()) on the
server's loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

CoilCallback = Callable[[int, bool, float], object]

_READ_COILS, _READ_INPUTS, _WRITE_COIL, _WRITE_COILS = 1, 2, 5, 15
_BITS_PER_REGISTER = 16


def _bits_to_registers(bits: list[bool]) -> list[int]:
    """pymodbus's packing of a bit block: bit i of the block is bit (i % 16),
    least significant first, of register i // 16."""
    registers = []
    for start in range(0, len(bits), _BITS_PER_REGISTER):
        word = 0
        for n, bit in enumerate(bits[start:start + _BITS_PER_REGISTER]):
            if bit:
                word |= 1 << n
        registers.append(word)
    return registers


class SimulatedIoModule:
    """A Modbus TCP I/O module on loopback (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, coils: int = 64, inputs: int = 64,
                 unit: int = 1, watchdog_s: float = 1.0) -> None:
        for name, count in (("coils", coils), ("inputs", inputs)):
            if not 1 <= count <= 2000 or count % _BITS_PER_REGISTER:
                raise ValueError(f"{name} must be a multiple of 16 from 16 to 2000, got {count}")
        if not 0 < watchdog_s <= 3600:
            raise ValueError(f"watchdog_s must be above 0 and at most 3600 s, got {watchdog_s}")
        self.host = host
        self.port = port
        self.unit = unit
        self.watchdog_s = float(watchdog_s)
        self._coils = [False] * coils
        self._inputs = [False] * inputs
        self._callbacks: list[CoilCallback] = []
        self._last_request: float | None = None  # monotonic time of the master's last request
        self._server: ModbusTcpServer | None = None
        self._watchdog_task: asyncio.Task | None = None
        self.watchdog_trips = 0  # how many times the watchdog dropped the coils
        self.requests = 0

    # ---- life cycle ----

    async def start(self) -> None:
        """Bind and serve; `port` is then the bound port. Coils start off."""
        if self._server is not None:
            raise RuntimeError("the I/O module is already running")
        device = SimDevice(
            id=self.unit,
            simdata=(
                [SimData(0, count=len(self._coils), values=False, datatype=DataType.BITS)],
                [SimData(0, count=len(self._inputs), values=False, datatype=DataType.BITS)],
                [SimData(0, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._serve,
        )
        server = ModbusTcpServer(device, address=(self.host, self.port))
        await server.serve_forever(background=True)
        self._server = server
        self.port = server.transport.sockets[0].getsockname()[1]
        self._last_request = None
        self._watchdog_task = asyncio.get_running_loop().create_task(self._watch(), name=f"iomodule-{self.port}-watchdog")

    async def stop(self) -> None:
        """Close the listener and every master's connection, as a module losing power does:
        its coils drop (a powered-down module drives nothing)."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            await asyncio.gather(self._watchdog_task, return_exceptions=True)
            self._watchdog_task = None
        await server.shutdown()
        self._last_request = None
        self._drop_coils()

    @property
    def running(self) -> bool:
        return self._server is not None

    # ---- what the simulator sees and drives ----

    def coil(self, addr: int) -> bool:
        return self._coils[addr]

    def coils(self) -> list[bool]:
        return list(self._coils)

    def input(self, addr: int) -> bool:
        return self._inputs[addr]

    def set_input(self, addr: int, value: bool) -> None:
        """Drive a discrete input (the beam broken, the emergency contact closed)."""
        if not 0 <= addr < len(self._inputs):
            raise IndexError(f"input address {addr} is outside 0..{len(self._inputs) - 1}")
        self._inputs[addr] = bool(value)

    def on_coil_change(self, callback: CoilCallback) -> None:
        """Call `callback(addr, value, t_monotonic)` on every coil change, on the server's loop."""
        self._callbacks.append(callback)

    @property
    def connected(self) -> bool:
        """A master talked to the module within `watchdog_s`."""
        last = self._last_request
        return last is not None and time.monotonic() - last < self.watchdog_s

    # ---- the wire ----

    async def _serve(self, function_code: int, start_address: int, address: int, count: int,
                     registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """Every request that reaches the store: the master is alive; reads see our bits,
        writes change them (pymodbus then stores the same bits in `registers`)."""
        self._last_request = time.monotonic()
        self.requests += 1
        if function_code in (_WRITE_COIL, _WRITE_COILS) and set_values is not None:
            at = time.monotonic()
            for n, value in enumerate(set_values):
                self._set_coil(address + n, bool(value), at)
        if function_code in (_READ_COILS, _WRITE_COIL, _WRITE_COILS):
            bits = self._coils
        elif function_code == _READ_INPUTS:
            bits = self._inputs
        else:
            return None
        packed = _bits_to_registers(bits)
        registers[: len(packed)] = packed
        return None

    def _set_coil(self, addr: int, value: bool, at: float) -> None:
        if not 0 <= addr < len(self._coils) or self._coils[addr] == value:
            return
        self._coils[addr] = value
        for callback in list(self._callbacks):
            try:
                callback(addr, value, at)
            except Exception as exc:  # a watcher must not break the module
                print(f"iomodule: coil callback failed: {exc!r}")

    def _drop_coils(self) -> None:
        at = time.monotonic()
        for addr, on in enumerate(self._coils):
            if on:
                self._set_coil(addr, False, at)

    async def _watch(self) -> None:
        """The communication watchdog: no request for watchdog_s, every coil off."""
        tick = min(0.05, self.watchdog_s / 10)
        tripped = False
        while True:
            await asyncio.sleep(tick)
            last = self._last_request
            silent = last is not None and time.monotonic() - last >= self.watchdog_s
            if silent and not tripped:
                tripped = True
                if any(self._coils):
                    self.watchdog_trips += 1
                    self._drop_coils()
            elif not silent:
                tripped = False
