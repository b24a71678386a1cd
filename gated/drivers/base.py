"""What every input driver produces: a `Read`, plain text with no meaning.

Drivers turn hardware into `Read`s (scanners, camera, keypad) or obey plain
commands (GPIO). None of them knows what a ticket is: deciding happens in
`gated.validation`, wiring in `gated.lane`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Read:
    """One complete frame read from an input device.

    `text` is the frame decoded byte-for-byte as latin-1 (so any byte string
    maps to a string and nothing raises), terminator removed. `at` is the
    monotonic time the frame completed, from the clock the driver was given.
    `truncated` is set when the frame exceeded the driver's length cap and was
    cut: the text is then only its head, and the decision will say bad_format.
    """

    source: str
    text: str
    at: float
    truncated: bool = False
