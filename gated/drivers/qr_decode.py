"""QR decoding of camera frames, behind one small interface.

Owns the choice of QR library. `gated.drivers.camera` and `gated bench` ask
for a decoder by name and call `decode(gray) -> list[str]`; nothing else in
gated imports zxing-cpp, OpenCV's QR detector or pyzbar directly.

- `zxing` (zxing-cpp) is the default: the best read rate on tilted, blurred
  phone screens and the fastest.
- `opencv` (`cv2.QRCodeDetector`) and `opencv-aruco`
  (`cv2.QRCodeDetectorAruco`) are always installed with OpenCV, so a gate
  can fall back to them and the bench can compare against them.
- `pyzbar` is used only if the `pyzbar` package (and libzbar) is installed;
  it is not a dependency of gated.

Text comes back as `str`. Where a library hands out bytes they are decoded
as latin-1, the same byte-for-byte rule as `gated.drivers.base.Read`, so a
code reads identically from a camera and from a serial scanner.

Decoder objects are not shared between threads: OpenCV's detectors keep
state. Each camera makes its own with `make_decoder()`.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import cv2
import numpy as np
import zxingcpp

from gated.errors import DriverError

DEFAULT_DECODER = "zxing"


class QrDecoder(Protocol):
    """Anything that finds QR codes in a grayscale frame."""

    name: str

    def decode(self, gray: np.ndarray) -> list[str]:
        """Return the text of every QR code found, in no particular order."""
        ...


class ZxingDecoder:
    """zxing-cpp, restricted to QR codes (faster, and no stray 1D misreads)."""

    name = "zxing"

    def decode(self, gray: np.ndarray) -> list[str]:
        barcodes = zxingcpp.read_barcodes(gray, formats=zxingcpp.BarcodeFormat.QRCode)
        # `bytes`, not `text`: text is transcoded per ECI, bytes are what the
        # code holds, and Read's contract is bytes-as-latin-1.
        return [barcode.bytes.decode("latin-1") for barcode in barcodes if barcode.valid]


class OpenCvDecoder:
    """OpenCV's built-in QR detector (classic or ArUco-based finder)."""

    def __init__(self, *, aruco: bool = False) -> None:
        self.name = "opencv-aruco" if aruco else "opencv"
        self._detector = cv2.QRCodeDetectorAruco() if aruco else cv2.QRCodeDetector()

    def decode(self, gray: np.ndarray) -> list[str]:
        found, texts, _points, _straight = self._detector.detectAndDecodeMulti(gray)
        if not found:
            return []
        # A detected but undecodable code comes back as "".
        return [text for text in texts if text]


class PyzbarDecoder:
    """ZBar through pyzbar; optional, only if pyzbar and libzbar are installed."""

    name = "pyzbar"

    def __init__(self) -> None:
        try:
            from pyzbar import pyzbar
        except (ImportError, OSError) as exc:  # OSError: package present, libzbar missing
            raise DriverError(
                f"QR decoder 'pyzbar' is not available ({exc}); "
                "install the pyzbar package and libzbar0, or use decoder 'zxing'"
            ) from exc
        self._pyzbar = pyzbar

    def decode(self, gray: np.ndarray) -> list[str]:
        symbols = self._pyzbar.decode(gray, symbols=[self._pyzbar.ZBarSymbol.QRCODE])
        return [symbol.data.decode("latin-1") for symbol in symbols]


_FACTORIES = {
    "zxing": ZxingDecoder,
    "opencv": OpenCvDecoder,
    "opencv-aruco": lambda: OpenCvDecoder(aruco=True),
    "pyzbar": PyzbarDecoder,
}

DECODER_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def make_decoder(name: str = DEFAULT_DECODER) -> QrDecoder:
    """A new decoder by name; DriverError names the choices if it is unknown or missing."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise DriverError(
            f"unknown QR decoder {name!r}; expected one of: {', '.join(DECODER_NAMES)}"
        )
    return factory()


def available_decoders() -> dict[str, str | None]:
    """Each decoder name mapped to None if usable here, else why not."""
    availability: dict[str, str | None] = {}
    for name in DECODER_NAMES:
        try:
            make_decoder(name)
        except DriverError as exc:
            availability[name] = str(exc)
        else:
            availability[name] = None
    return availability


def to_gray(frame: Any) -> np.ndarray:
    """A frame as a contiguous 2-D uint8 array, converting BGR/BGRA as cv2 delivers them.

    Raises ValueError for anything that is not an 8-bit gray, BGR or BGRA
    image (a truncated or garbled frame), so the caller can skip it.
    """
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame is {type(frame).__name__}, not a numpy array")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame dtype is {frame.dtype}, expected uint8")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        gray = frame
    elif frame.ndim == 3 and frame.shape[2] == 3:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    else:
        raise ValueError(f"frame shape {frame.shape} is not gray, BGR or BGRA")
    if gray.shape[0] < 21 or gray.shape[1] < 21:  # smaller than one version-1 QR
        raise ValueError(f"frame {gray.shape[1]}x{gray.shape[0]} is too small to hold a QR code")
    return np.ascontiguousarray(gray)


_per_thread = threading.local()


def decode_frame(gray: np.ndarray, decoder: str = DEFAULT_DECODER) -> list[str]:
    """Decode one grayscale frame with the named decoder (one instance per thread)."""
    cache: dict[str, QrDecoder] = _per_thread.__dict__.setdefault("decoders", {})
    if decoder not in cache:
        cache[decoder] = make_decoder(decoder)
    return cache[decoder].decode(gray)
