"""Camera frames of QR codes as a gate camera sees them: for the simulator's
virtual camera, the camera tests and `gated bench`.

A code is drawn with segno on a lit phone screen (light, with its own
margin around the quiet zone), held in front of a darker scene, then turned
in the image plane, tilted away from the camera (a true 3-D rotation
projected through a pinhole lens, applied with cv2.warpPerspective),
defocused (Gaussian blur), dimmed or washed out (brightness/contrast) and
given sensor noise. Everything is deterministic: randomness comes only from
the seed passed in.

`render_code()` makes one frame; `standard_set()` makes the fixed set of
about fifty varied frames the decode rate is measured on, so figures from
different machines and decoders compare like with like.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import segno

FRAME_WIDTH = 640
FRAME_HEIGHT = 480
QUIET_ZONE_MODULES = 4
# A 640x480 webcam with a ~60 degree horizontal field of view.
FOCAL_LENGTH_PX = 550.0
SCENE_LEVEL = 70  # the hand, sleeve and hall behind the phone
SCREEN_LEVEL = 235  # a white phone screen at decent brightness
INK_LEVEL = 20  # dark modules on that screen


@dataclass(frozen=True, slots=True)
class QrSample:
    """One rendered frame, the text it shows, and how it was made (for failure messages)."""

    frame: np.ndarray
    text: str
    label: str


def code_modules(text: str, error: str = "m") -> np.ndarray:
    """The QR symbol as a bool array (True = dark), quiet zone included."""
    symbol = segno.make_qr(text, error=error)
    modules = np.array(symbol.matrix, dtype=bool)
    return np.pad(modules, QUIET_ZONE_MODULES, constant_values=False)


def blank_frame(
    *, seed: int = 0, noise_sigma: float = 3.0, width: int = FRAME_WIDTH, height: int = FRAME_HEIGHT
) -> np.ndarray:
    """A frame with no code in it: the empty scene with a little sensor noise."""
    rng = np.random.default_rng(seed)
    scene = np.full((height, width), SCENE_LEVEL, dtype=np.float32)
    scene += rng.normal(0.0, noise_sigma, scene.shape).astype(np.float32)
    return np.clip(scene, 0, 255).astype(np.uint8)


def _rotation(angle_deg: float, tilt_deg: float, tilt_axis_deg: float) -> np.ndarray:
    """In-plane turn by `angle_deg`, then a tilt of `tilt_deg` about an in-plane axis."""
    turn = math.radians(angle_deg)
    in_plane = np.array(
        [[math.cos(turn), -math.sin(turn), 0.0], [math.sin(turn), math.cos(turn), 0.0], [0.0, 0.0, 1.0]]
    )
    axis_angle = math.radians(tilt_axis_deg)
    axis = np.array([math.cos(axis_angle), math.sin(axis_angle), 0.0])
    tilt, _ = cv2.Rodrigues(axis * math.radians(tilt_deg))
    return tilt @ in_plane


def render_code(
    text: str,
    *,
    module_px: float = 6.0,
    angle_deg: float = 0.0,
    tilt_deg: float = 0.0,
    tilt_axis_deg: float = 0.0,
    center: tuple[float, float] | None = None,
    blur_sigma: float = 0.0,
    noise_sigma: float = 0.0,
    brightness: float = 0.0,
    contrast: float = 1.0,
    seed: int = 0,
    error: str = "m",
    width: int = FRAME_WIDTH,
    height: int = FRAME_HEIGHT,
) -> np.ndarray:
    """A grayscale uint8 frame (height x width) showing `text` as a QR code on a phone screen.

    `module_px` is the module size in pixels where the screen faces the
    camera squarely; `angle_deg` turns the phone in the image plane;
    `tilt_deg` leans it away from the camera about the in-plane axis at
    `tilt_axis_deg`; `center` is where the code's middle lands (default:
    frame centre). `brightness` is added and `contrast` scales around mid
    grey after blurring, then Gaussian noise of `noise_sigma` is added.
    """
    modules = code_modules(text, error)
    # Draw the screen at 4x the final scale (see the warp below).
    oversample = 4
    source_px = max(1, round(module_px * oversample))
    screen_margin_modules = 3
    screen = np.where(np.kron(modules, np.ones((source_px, source_px), dtype=bool)), INK_LEVEL, SCREEN_LEVEL)
    screen = np.pad(
        screen.astype(np.uint8), screen_margin_modules * source_px, constant_values=SCREEN_LEVEL
    )
    side = screen.shape[0]

    # Corners of the screen image, as a plane of physical size side/oversample
    # pixels facing the camera at a distance where one pixel is one pixel.
    half = side / oversample / 2.0
    plane_corners = np.array([[-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0], [-half, half, 0.0]])
    rotated = plane_corners @ _rotation(angle_deg, tilt_deg, tilt_axis_deg).T
    cx, cy = center if center is not None else (width / 2.0, height / 2.0)
    depth = rotated[:, 2] + FOCAL_LENGTH_PX
    image_corners = np.stack(
        [cx + FOCAL_LENGTH_PX * rotated[:, 0] / depth, cy + FOCAL_LENGTH_PX * rotated[:, 1] / depth], axis=1
    ).astype(np.float32)
    source_corners = np.array([[0, 0], [side, 0], [side, side], [0, side]], dtype=np.float32)
    # Warp onto an oversampled canvas, then average down: each camera pixel
    # integrates the light falling on it instead of point-sampling it.
    homography = cv2.getPerspectiveTransform(source_corners, image_corners * oversample)
    sharp = cv2.warpPerspective(
        screen,
        homography,
        (width * oversample, height * oversample),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=SCENE_LEVEL,
    )
    frame = cv2.resize(sharp, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)

    if blur_sigma > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), blur_sigma)
    frame = (frame - 128.0) * contrast + 128.0 + brightness
    if noise_sigma > 0:
        rng = np.random.default_rng(seed)
        frame += rng.normal(0.0, noise_sigma, frame.shape).astype(np.float32)
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def standard_set(codes: Sequence[str], seed: int = 2024, count: int = 50) -> list[QrSample]:
    """`count` deterministic, varied frames cycling through `codes`.

    The mix, drawn from `seed`: module sizes 3.5-9 px (a phone at arm's
    length to close up), any in-plane angle, tilt up to 35 degrees about a
    random axis, blur sigma up to 1.5, noise sigma up to 8, contrast 0.45-1
    and brightness -40..+30 (dim screens, glare). The code is placed at a
    random spot where it stays fully in the frame. The same arguments always
    give the same frames.
    """
    if not codes:
        raise ValueError("standard_set needs at least one code")
    rng = np.random.default_rng(seed)
    samples: list[QrSample] = []
    for index in range(count):
        text = codes[index % len(codes)]
        module_px = float(rng.uniform(3.5, 9.0))
        angle = float(rng.uniform(0.0, 360.0))
        tilt = float(rng.uniform(0.0, 35.0))
        tilt_axis = float(rng.uniform(0.0, 180.0))
        blur = float(rng.uniform(0.0, 1.5))
        noise = float(rng.uniform(0.0, 8.0))
        contrast = float(rng.uniform(0.45, 1.0))
        brightness = float(rng.uniform(-40.0, 30.0))
        # Keep the whole screen in view: its diagonal bounds it at any angle.
        screen_modules = code_modules(text).shape[0] + 6
        reach = screen_modules * module_px * math.sqrt(2) / 2.0 * 1.15
        x_room = max(0.0, FRAME_WIDTH / 2.0 - reach)
        y_room = max(0.0, FRAME_HEIGHT / 2.0 - reach)
        center = (
            FRAME_WIDTH / 2.0 + float(rng.uniform(-x_room, x_room)),
            FRAME_HEIGHT / 2.0 + float(rng.uniform(-y_room, y_room)),
        )
        frame = render_code(
            text,
            module_px=module_px,
            angle_deg=angle,
            tilt_deg=tilt,
            tilt_axis_deg=tilt_axis,
            center=center,
            blur_sigma=blur,
            noise_sigma=noise,
            brightness=brightness,
            contrast=contrast,
            seed=seed * 1000 + index,
        )
        label = (
            f"#{index} module={module_px:.1f}px angle={angle:.0f} tilt={tilt:.0f}@{tilt_axis:.0f} "
            f"blur={blur:.2f} noise={noise:.1f} contrast={contrast:.2f} brightness={brightness:+.0f}"
        )
        samples.append(QrSample(frame=frame, text=text, label=label))
    return samples
