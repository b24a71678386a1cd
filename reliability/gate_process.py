"""`gated run` in its own process, on mock pins that people walk through.

The daemon's GPIO is gpiozero's MockFactory (`gpio = "mock"`), which lives
inside the daemon's process: nothing outside can break a passage beam. This
launcher is `gated run --config FILE` exactly (the CLI's own `main`), with one
difference: the pin factory it gets is a MockFactory whose relay pins are
watched, and each time a lane's relay opens, a simulated person walks through
that lane's beam (or, with probability 1 - walk, turns back). A kill -9 of
this process is a power cut of the whole controller, people included.

    python -m reliability.gate_process --config gate.toml [--walk 0.85] [--seed N]

Each walk is printed on stderr as one JSON line {"walk": lane, "at": t} so the
harness can tell a counted entry from a person who never came.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time

from gpiozero.pins.mock import MockFactory, MockPWMPin

from gated.config import load_config
from gated.errors import GatedError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="reliability.gate_process")
    p.add_argument("--config", required=True)
    p.add_argument("--walk", type=float, default=0.85, help="probability an admitted person walks through")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    try:
        config = load_config(args.config, check_files=True)
    except GatedError as exc:
        print(f"gated run: {exc}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    relays: dict[int, tuple[str, bool, int, bool]] = {}  # relay pin -> lane, active_high, beam pin, beam active level
    for lane in config.lanes:
        if lane.relay is not None and lane.passage is not None:
            relays[lane.relay.pin] = (lane.id, lane.relay.active_high, lane.passage.pin, lane.passage.active_high)
    lock = threading.Lock()
    factory: MockFactory

    def walk(lane_id: str, beam_pin: int, broken_level: bool) -> None:
        time.sleep(rng.uniform(0.03, 0.3))
        with lock:
            pin = factory.pin(beam_pin)
            (pin.drive_high if broken_level else pin.drive_low)()
        sys.stderr.write(json.dumps({"walk": lane_id, "at": time.time()}) + "\n")
        sys.stderr.flush()
        time.sleep(0.04)
        with lock:
            (pin.drive_low if broken_level else pin.drive_high)()

    class WatchedPin(MockPWMPin):
        def _change_state(self, value):
            changed = super()._change_state(value)
            watched = relays.get(_gpio_number(self))
            if changed and watched is not None and bool(value) == watched[1] and rng.random() < args.walk:
                threading.Thread(target=walk, args=(watched[0], watched[2], watched[3]), daemon=True).start()
            return changed

    factory = MockFactory(pin_class=WatchedPin)

    import gated.gate.daemon
    from gated.cli import main as gated_main

    gated.gate.daemon.make_pin_factory = lambda kind: factory
    return gated_main(["run", "--config", args.config])


def _gpio_number(pin) -> int | None:
    name = str(pin.info.name)
    return int(name[4:]) if name.startswith("GPIO") and name[4:].isdigit() else None


if __name__ == "__main__":
    sys.exit(main())
