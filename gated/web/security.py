"""Who may reach a gated web page, and how they prove it: the listen rule,
PIN hashes, sessions that expire, and the same-origin rule for POSTs.

Standard library only (hashlib.scrypt, hmac, secrets): the config loader
checks the listen rule with it before any web server is imported.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable

PIN_MIN, PIN_MAX = 4, 64
# scrypt at 2**14 x 8 x 1: 16 MiB and some 50 ms per try on a Pi-class CPU, so a stolen
# config does not give up a 6-digit PIN to a table, and sign-in stays instant for a person.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN = 2**14, 8, 1, 32
_HASH_PREFIX = "scrypt"


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback IP address: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_problem(host: str, *, tls: bool, sign_in: bool) -> str | None:
    """Why a staff page may not listen on `host`, or None if it may.

    Loopback is always allowed (the unit's own kiosk browser). Any other
    address reaches the venue's network: only with TLS and a sign-in."""
    if is_loopback(host):
        return None
    missing = [what for what, present in (("tls_cert and tls_key", tls), ("pin_hash", sign_in)) if not present]
    if missing:
        return (f"{host} is not a loopback address: a staff page listens there only with TLS and a sign-in "
                f"(set {' and '.join(missing)}), or listen on 127.0.0.1")
    return None


def pin_problem(pin: str) -> str | None:
    if not PIN_MIN <= len(pin) <= PIN_MAX:
        return f"a PIN is {PIN_MIN} to {PIN_MAX} characters"
    if not pin.isprintable() or pin != pin.strip():
        return "a PIN is printable characters without leading or trailing spaces"
    return None


def hash_pin(pin: str, salt: bytes | None = None) -> str:
    """"scrypt$N$r$p$salt$hash" (base64): what the config's pin_hash holds."""
    problem = pin_problem(pin)
    if problem:
        raise ValueError(problem)
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_SCRYPT_LEN)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"{_HASH_PREFIX}${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt)}${b64(digest)}"


def pin_hash_problem(stored: str) -> str | None:
    """Why `stored` is not a hash `hash_pin` wrote, or None."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _HASH_PREFIX:
        return 'expected a hash from `gated web hash-pin` ("scrypt$16384$8$1$...")'
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError:
        return 'expected a hash from `gated web hash-pin` ("scrypt$16384$8$1$...")'
    if not (2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16 and len(salt) >= 8 and len(digest) >= 16):
        return "the scrypt parameters of this hash are out of range; make a new one with `gated web hash-pin`"
    return None


def verify_pin(pin: str, stored: str) -> bool:
    """Constant-time check of a typed PIN against a `hash_pin` hash."""
    if pin_hash_problem(stored) is not None or len(pin) > PIN_MAX:
        return False
    _, n, r, p, salt, digest = stored.split("$")
    expected = base64.b64decode(digest)
    got = hashlib.scrypt(pin.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                         dklen=len(expected), maxmem=128 * int(n) * int(r) * int(p) + 2**20)
    return hmac.compare_digest(got, expected)


class Sessions:
    """Signed-in browsers: a random token per sign-in, kept only as its SHA-256,
    expiring `lifetime_s` after sign-in (monotonic time: a wall-clock jump changes nothing).

    Failed sign-ins are limited per client address (`max_failures` per `lockout_s`)."""

    def __init__(self, lifetime_s: float, *, monotonic: Callable[[], float] = time.monotonic,
                 max_failures: int = 5, lockout_s: float = 60.0):
        self.lifetime_s = lifetime_s
        self._monotonic = monotonic
        self._expiry: dict[bytes, float] = {}
        self._principal: dict[bytes, object] = {}  # who signed in (an account), when the sign-in says
        self._failures: dict[str, list[float]] = {}
        self.max_failures, self.lockout_s = max_failures, lockout_s

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "replace")).digest()

    def open(self, principal: object = None) -> str:
        now = self._monotonic()
        self._expiry = {k: t for k, t in self._expiry.items() if t > now}
        self._principal = {k: p for k, p in self._principal.items() if k in self._expiry}
        token = secrets.token_urlsafe(32)
        self._expiry[self._key(token)] = now + self.lifetime_s
        if principal is not None:
            self._principal[self._key(token)] = principal
        return token

    def principal(self, token: str | None) -> object:
        """Who opened this (valid) session, or None (a PIN sign-in, or no session)."""
        return self._principal.get(self._key(token)) if self.valid(token) else None

    def valid(self, token: str | None) -> bool:
        if not token or len(token) > 128:
            return False
        expiry = self._expiry.get(self._key(token))
        return expiry is not None and expiry > self._monotonic()

    def close(self, token: str | None) -> None:
        if token:
            self._expiry.pop(self._key(token), None)
            self._principal.pop(self._key(token), None)

    def close_where(self, condition: Callable[[object], bool]) -> int:
        """End every session whose principal meets `condition` (an account disabled or changed); how many."""
        ended = [k for k, p in self._principal.items() if condition(p)]
        for key in ended:
            self._expiry.pop(key, None)
            self._principal.pop(key, None)
        return len(ended)

    def locked_out(self, client: str) -> bool:
        now = self._monotonic()
        recent = [t for t in self._failures.get(client, ()) if now - t < self.lockout_s]
        self._failures[client] = recent
        return len(recent) >= self.max_failures

    def failed(self, client: str) -> None:
        self._failures.setdefault(client, []).append(self._monotonic())


def same_origin(origin: str | None, referer: str | None, scheme: str, host: str) -> bool:
    """A POST came from a page of this server: its Origin (or, lacking one, its
    Referer) names this scheme and host. Browsers send Origin on every POST."""
    expected = f"{scheme}://{host}"
    if origin:
        return hmac.compare_digest(origin.encode(), expected.encode())
    if referer:
        return referer == expected or referer.startswith(expected + "/")
    return False
