"""QR camera frames for the tests: the simulator's renderer (one copy, in `hw_sim.qr_frames`)."""

from hw_sim.qr_frames import (  # noqa: F401
    FRAME_HEIGHT,
    FRAME_WIDTH,
    QrSample,
    blank_frame,
    code_modules,
    render_code,
    standard_set,
)
