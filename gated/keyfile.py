"""Reading and writing the key file on disk (the format is `KeyRing.from_json`).

The key file holds the event's signing secrets: whoever reads it can mint
codes for every ticket. So it is refused when group or others may read or
write it, with the command that fixes it in the message.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from gated.atomic_file import write_atomically
from gated.errors import KeyFileError, KeyRingError
from gated.validation.keyring import KEY_BYTES, KeyRing


def load_keyfile(path: str | os.PathLike) -> KeyRing:
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found (create one with: gated keys new --out {path})") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open key file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise KeyFileError(f"{path}: key file is not a regular file")
        if mode & 0o077:
            raise KeyFileError(
                f"{path}: key file is readable or writable by group or others (mode {stat.S_IMODE(mode):04o}); "
                f"fix with: chmod 600 {path}"
            )
        data = fh.read(1 << 20)
    try:
        return KeyRing.from_json(data, source=str(path))
    except KeyRingError as exc:
        raise KeyFileError(str(exc)) from None


def save_keyfile(path: str | os.PathLike, ring: KeyRing, *, overwrite: bool = False) -> None:
    """Write atomically (temp file + rename), mode 0600 from the first byte."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key file")
    try:
        write_atomically(path, ring.to_json().encode("utf-8"), 0o600)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write key file: {exc.strerror or exc}") from None


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)
