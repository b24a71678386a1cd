"""GPIO drivers on gpiozero: turnstile relay, RGB lane light, buzzer,
passage sensor, emergency input, and the pin factory they are built on.

Drivers here take plain commands ("pulse the relay", "show this colour",
"play the deny beeps") and report plain events ("the beam was broken at t",
"emergency asserted at t"). None of them knows what a ticket is: the lane
turns decisions into these commands.

- `pins.py`: the pin factory, the device base class (close, context manager,
  closed devices refuse commands), the helpers every driver shares.
- `outputs.py`: `Relay`, `LaneLight` (+ `parse_color`), `Buzzer`, and the
  timing thread behind pulses, blinks and beeps.
- `inputs.py`: `PassageSensor`, `EmergencyInput`.

Each module opens with the rules it keeps.
"""

from gated.drivers.gpio.inputs import Clock, EmergencyInput, PassageSensor
from gated.drivers.gpio.outputs import (
    AMBER,
    BLACK,
    RED,
    RGB,
    SAFE_STATES,
    Buzzer,
    Color,
    LaneLight,
    Relay,
    SafeState,
    parse_color,
)
from gated.drivers.gpio.pins import GpioDevice, Pin, make_pin_factory

__all__ = [
    "AMBER",
    "BLACK",
    "RED",
    "RGB",
    "SAFE_STATES",
    "Buzzer",
    "Clock",
    "Color",
    "EmergencyInput",
    "GpioDevice",
    "LaneLight",
    "PassageSensor",
    "Pin",
    "Relay",
    "SafeState",
    "make_pin_factory",
    "parse_color",
]
