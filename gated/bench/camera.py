"""The camera's decoders on rendered phone and badge frames."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from gated.bench.common import BENCH_NOW
from gated.drivers.qr_decode import DECODER_NAMES, make_decoder, to_gray
from gated.errors import DriverError
from gated.validation.token import mint_dynamic, mint_static


def bench_camera(repeats: int = 5) -> dict:
    """Decode time per 640x480 frame and the share decoded, on 50 rendered phone/badge frames
    (tilted up to ~35 degrees, blurred, noisy), for each decoder installed."""
    from gated.bench.frames import standard_set

    key = bytes(range(32))
    codes = [mint_dynamic(key, 1, 42, BENCH_NOW), mint_static(key, 1, 43, 0)]
    samples = standard_set(codes, seed=2024, count=50)
    return measure_decoders([x.frame for x in samples], [x.text for x in samples], DECODER_NAMES, repeats=repeats)


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; with 50 samples p99 is the slowest frame, as it should be."""
    rank = max(1, int(np.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def measure_decoders(
    frames: Sequence[np.ndarray],
    codes: Sequence[str],
    decoders: Sequence[str] = DECODER_NAMES,
    *,
    repeats: int = 1,
) -> dict[str, dict[str, Any]]:
    """Decode time and read rate of each decoder over the same frames.

    `codes[i]` is the text frame `i` shows. A frame counts as read when the
    expected text is among the results; any other text returned is a
    misread (for a gate, worse than no read). Each frame is decoded
    `repeats` times for timing; the read rate uses the first pass. One
    untimed warm-up decode per decoder keeps library set-up out of the
    figures. Pure measurement: nothing is printed.

    Returns, per decoder name, either {"available": False, "reason": ...} or
    {"available": True, "frames", "read", "misread", "read_rate",
    "median_ms", "p99_ms", "mean_ms", "max_ms"}.
    """
    if len(frames) != len(codes):
        raise ValueError(f"{len(frames)} frames but {len(codes)} expected codes; give one code per frame")
    if not frames:
        raise ValueError("no frames to measure")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    grays = [to_gray(frame) for frame in frames]

    results: dict[str, dict[str, Any]] = {}
    for name in decoders:
        try:
            decoder = make_decoder(name)
        except DriverError as exc:
            results[name] = {"available": False, "reason": str(exc)}
            continue
        decoder.decode(grays[0])
        timings_ms: list[float] = []
        read = misread = 0
        for attempt in range(repeats):
            for gray, expected in zip(grays, codes):
                started = time.perf_counter_ns()
                texts = decoder.decode(gray)
                timings_ms.append((time.perf_counter_ns() - started) / 1e6)
                if attempt == 0:
                    read += expected in texts
                    misread += any(text != expected for text in texts)
        timings_ms.sort()
        results[name] = {
            "available": True,
            "frames": len(grays),
            "read": read,
            "misread": misread,
            "read_rate": read / len(grays),
            "median_ms": statistics.median(timings_ms),
            "p99_ms": _percentile(timings_ms, 0.99),
            "mean_ms": statistics.fmean(timings_ms),
            "max_ms": timings_ms[-1],
        }
    return results
