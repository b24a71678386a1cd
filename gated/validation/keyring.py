"""The event key ring: kid (0..255) -> 32-byte secret, changed at run time.

Owns the key ring's contents and the key file's JSON form. Reading the file
from disk (and its permission check) is `gated.keyfile`'s job: this module
does no I/O.

Keys never leave this object in text: `repr`, `str`, error messages and
`describe()` show kids only. The verifier reads `keys` (a plain dict, for
speed); writers replace that dict wholesale, so a verifier in another thread
sees either the old ring or the new one, never half an update.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from gated.errors import KeyRingError

KEY_BYTES = 32


def _check(kid: object, key: object) -> None:
    if not isinstance(kid, int) or isinstance(kid, bool) or not 0 <= kid <= 255:
        raise KeyRingError(f"kid must be an integer 0..255, got {kid!r}")
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise KeyRingError(f"key for kid {kid} must be {KEY_BYTES} bytes")


class KeyRing:
    __slots__ = ("keys",)

    def __init__(self, keys: Mapping[int, bytes] | None = None):
        items = dict(keys or {})
        for kid, key in items.items():
            _check(kid, key)
        self.keys: dict[int, bytes] = {kid: bytes(key) for kid, key in items.items()}

    def __repr__(self) -> str:
        return f"KeyRing(kids={self.kids()})"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self.keys

    def kids(self) -> list[int]:
        return sorted(self.keys)

    def get(self, kid: int) -> bytes | None:
        return self.keys.get(kid)

    def add(self, kid: int, key: bytes) -> None:
        """Add or replace a key; codes signed with it verify from now on."""
        _check(kid, key)
        self.keys = {**self.keys, kid: bytes(key)}

    def retire(self, kid: int) -> bool:
        """Remove a key: its codes say unknown_key from now on. False if absent."""
        if kid not in self.keys:
            return False
        self.keys = {k: v for k, v in self.keys.items() if k != kid}
        return True

    def replace(self, keys: Mapping[int, bytes]) -> None:
        """Swap in a whole new ring at once (validated first, all or nothing)."""
        self.keys = KeyRing(keys).keys

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "key file") -> "KeyRing":
        """Parse `{"keys": {"1": "<64 hex>", ...}}`; errors name `source`, never a key."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyRingError(f"{source}: not valid JSON ({exc.__class__.__name__} at {_where(exc)})") from None
        except RecursionError:
            raise KeyRingError(f"{source}: not a key file (its JSON nests too deep)") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), dict):
            raise KeyRingError(f'{source}: expected an object {{"keys": {{"<kid>": "<64 hex chars>"}}}}')
        keys: dict[int, bytes] = {}
        for name, value in doc["keys"].items():
            if not name.isdigit() or not 0 <= int(name) <= 255:
                raise KeyRingError(f"{source}: key id {name!r} is not an integer 0..255")
            if not isinstance(value, str) or len(value) != 2 * KEY_BYTES:
                raise KeyRingError(f"{source}: key {name} must be {2 * KEY_BYTES} hex characters")
            try:
                keys[int(name)] = bytes.fromhex(value)
            except ValueError:
                raise KeyRingError(f"{source}: key {name} is not hexadecimal") from None
        return cls(keys)

    def to_json(self) -> str:
        """The key file form. The caller writes it with mode 0600."""
        return json.dumps({"keys": {str(k): self.keys[k].hex() for k in self.kids()}}, indent=2) + "\n"


def _where(exc: Exception) -> str:
    line = getattr(exc, "lineno", None)
    return f"line {line}" if line is not None else "start"
