"""The gate token format, version 1 (docs/token-format.md), byte for byte.

Owns: per-ticket key derivation, minting and parsing of dynamic (0x01) and
static (0x02) codes, the 8-digit manual TOTP code, and the Google Wallet
rotating code (`GW1:`, the TOTP a Wallet pass computes from its own key). Verification against a
key ring (checks 1-4 of the format's verifier order) is `verify_code`; the
entitlement checks (step 5) belong to `policy`.

Rules this module keeps:
- Nothing here raises on any input text: a bad code is a `Reason`.
- Nothing about a ticket is trusted before its tag has been compared, in
  constant time, with the one recomputed from the event key.
- No clock is read: every time is an argument.

The decoder is hand-tuned because it sits on every scan: base32 is decoded by
translating RFC 4648's alphabet to Python's base-32 digits and calling
`int(..., 32)`, which is a few hundred nanoseconds where `base64.b32decode` is
several microseconds. A 45-character static code carries one spare bit; a code
with that bit set is not canonical and is refused, so no two texts verify as
the same code (other than by letter case, which the format allows).
"""

from __future__ import annotations

import base64
import hmac
import struct
from enum import StrEnum
from typing import NamedTuple

PREFIX = "GT1:"
WALLET_PREFIX = "GW1:"
TYPE_DYNAMIC = 0x01
TYPE_STATIC = 0x02
STEP_SECONDS = 30
MAX_TICKET_ID = 2**64 - 1
MAX_SERIAL = 2**16 - 1
MAX_STEP = 2**32 - 1
MANUAL_DIGITS = 8
WALLET_DIGITS = 8  # Wallet's valueLength
WALLET_PERIOD_MS = STEP_SECONDS * 1000  # Wallet's periodMillis: the dynamic code's 30 s step

_TICKET_KEY_LABEL = b"gated-ticket-key\x00"
# A different label: Google holds this key, and it must not let anyone mint GT1 codes.
_WALLET_KEY_LABEL = b"gated-wallet-totp\x00"
_WALLET_MAX_CHARS = 4 + 3 + 1 + 20 + 1 + 12 + 1 + WALLET_DIGITS  # GW1:<kid>:<ticket>:<seconds>:<digits>
_DYNAMIC_BODY = 30
_STATIC_BODY = 28
_TAG = 16
_DYNAMIC_CHARS = 48  # 30 bytes * 8 / 5, no spare bits
_STATIC_CHARS = 45  # 28 bytes = 224 bits in 225: one spare bit, must be 0
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"

try:  # the one-shot OpenSSL HMAC that hmac.digest wraps, without the wrapper's frame
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:  # pragma: no cover - CPython without OpenSSL
    _hmac_digest = hmac.digest

_dynamic_head = struct.Struct(">BBQI")
_static_head = struct.Struct(">BBQH")


class Reason(StrEnum):
    """Decision reasons: a contract shared with events, logs and the registry's reports."""

    OK = "ok"
    BAD_FORMAT = "bad_format"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    CODE_EXPIRED = "code_expired"
    CODE_NOT_YET_VALID = "code_not_yet_valid"
    UNKNOWN_TICKET = "unknown_ticket"
    REVOKED = "revoked"
    SUPERSEDED_BADGE = "superseded_badge"
    OUTSIDE_VALIDITY = "outside_validity"
    WRONG_ZONE = "wrong_zone"
    ALREADY_INSIDE = "already_inside"
    ENTRIES_EXHAUSTED = "entries_exhausted"
    ZONE_FULL = "zone_full"
    NO_BENEFIT = "no_benefit"
    BENEFIT_EXHAUSTED = "benefit_exhausted"
    RATE_LIMITED = "rate_limited"
    CLOCK_UNSYNCED = "clock_unsynced"
    REGISTRY_UNREACHABLE = "registry_unreachable"  # a redemption the registry must grant, offline and policy "refuse"
    CACHE_STALE = "cache_stale"  # the registry has not confirmed the cache for too long, and the policy denies


class CodeKind(StrEnum):
    DYNAMIC = "dynamic"
    STATIC = "static"
    MANUAL = "manual"
    WALLET = "wallet"


class Verified(NamedTuple):
    """The outcome of checks 1-4 of the verifier order.

    `ticket_id` is set only once the tag has been verified: a forged code
    never names a ticket. `step` is set for dynamic codes, `serial` for
    static badges.
    """

    reason: Reason
    kind: CodeKind | None = None
    kid: int | None = None
    ticket_id: int | None = None
    step: int | None = None
    serial: int | None = None


def _translation_table() -> bytes:
    """bytes.translate table: RFC 4648 base32 (either case) -> int(..., 32) digits.

    Every other byte maps to '!', which `int()` rejects, so signs, underscores
    and white space can never sneak through.
    """
    table = bytearray(b"!" * 256)
    digits = "0123456789abcdefghijklmnopqrstuv"
    for value, char in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"):
        table[ord(char)] = ord(digits[value])
        table[ord(char.lower())] = ord(digits[value])
    return bytes(table)


_B32_TO_INT_DIGITS = _translation_table()


def ticket_key(event_key: bytes, ticket_id: int) -> bytes:
    """HMAC-SHA256(event_key, "gated-ticket-key\\0" || ticket_id as u64 big-endian)."""
    return hmac.digest(event_key, _TICKET_KEY_LABEL + ticket_id.to_bytes(8, "big"), "sha256")


def _b32(body: bytes) -> str:
    return base64.b32encode(body).decode("ascii").rstrip("=")


def _check_common(kid: int, ticket_id: int) -> None:
    if not 0 <= kid <= 255:
        raise ValueError(f"kid must be 0..255, got {kid}")
    if not 0 <= ticket_id <= MAX_TICKET_ID:
        raise ValueError(f"ticket id must be 0..2^64-1, got {ticket_id}")


def step_at(unix_time: float) -> int:
    """The 30-second step a time falls in: floor(unix_time / 30)."""
    return int(unix_time // STEP_SECONDS)


def mint_dynamic(event_key: bytes, kid: int, ticket_id: int, unix_time: float) -> str:
    """The phone e-ticket code for the 30 s step containing `unix_time`."""
    _check_common(kid, ticket_id)
    step = step_at(unix_time)
    if not 0 <= step <= MAX_STEP:
        raise ValueError(f"time {unix_time} is outside the u32 step range")
    head = _dynamic_head.pack(TYPE_DYNAMIC, kid, ticket_id, step)
    tag = hmac.digest(ticket_key(event_key, ticket_id), head, "sha256")[:_TAG]
    return PREFIX + _b32(head + tag)


def mint_static(event_key: bytes, kid: int, ticket_id: int, serial: int) -> str:
    """The printed badge code for badge `serial` (0 for the first print)."""
    _check_common(kid, ticket_id)
    if not 0 <= serial <= MAX_SERIAL:
        raise ValueError(f"badge serial must be 0..65535, got {serial}")
    head = _static_head.pack(TYPE_STATIC, kid, ticket_id, serial)
    tag = hmac.digest(ticket_key(event_key, ticket_id), head, "sha256")[:_TAG]
    return PREFIX + _b32(head + tag)


def hotp(secret: bytes, counter: int, digits: int = MANUAL_DIGITS, digest: str = "sha256") -> str:
    """RFC 4226 HOTP with the section 5.3 dynamic truncation (HMAC-SHA256 unless told)."""
    mac = hmac.digest(secret, counter.to_bytes(8, "big"), digest)
    offset = mac[-1] & 0x0F
    binary = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def totp(secret: bytes, unix_time: float, digits: int = MANUAL_DIGITS, digest: str = "sha256", period_s: float = STEP_SECONDS) -> str:
    """RFC 6238 TOTP, T0 = 0 (by default HMAC-SHA256 and X = 30 s, the manual code)."""
    return hotp(secret, int(unix_time // period_s), digits, digest)


def manual_code(event_key: bytes, ticket_id: int, unix_time: float) -> str:
    """The 8 digits the attendee's app shows under the QR at `unix_time`."""
    _check_common(0, ticket_id)
    return totp(ticket_key(event_key, ticket_id), unix_time)


def wallet_key(event_key: bytes, ticket_id: int) -> bytes:
    """HMAC-SHA256(event_key, "gated-wallet-totp\\0" || ticket_id as u64 big-endian):
    the secret a Google Wallet pass holds (its `totpDetails.parameters[0].key`)."""
    return hmac.digest(event_key, _WALLET_KEY_LABEL + ticket_id.to_bytes(8, "big"), "sha256")


def wallet_pattern(kid: int, ticket_id: int) -> str:
    """The `valuePattern` of ticket `ticket_id`'s Wallet pass, signed with key `kid`."""
    _check_common(kid, ticket_id)
    return f"{WALLET_PREFIX}{kid}:{ticket_id}:{{totp_timestamp_seconds}}:{{totp_value_0}}"


def render_rotating_barcode(pattern: str, keys: "list[bytes]", value_lengths: "list[int]", period_ms: int, unix_ms: int) -> str:
    """What Google Wallet shows at `unix_ms`: the pattern with its substitutions made.

    `{totp_value_n}` is RFC 6238 TOTP-SHA1 with `keys[n]`, `value_lengths[n]`
    digits and a step of `period_ms`; `{totp_timestamp_seconds}` and
    `{totp_timestamp_millis}` the time of generation. Issuers use it to test a
    pattern; gated's own `mint_wallet` is this with gated's pattern.
    """
    out = pattern.replace("{totp_timestamp_millis}", str(unix_ms)).replace("{totp_timestamp_seconds}", str(unix_ms // 1000))
    for n, (key, length) in enumerate(zip(keys, value_lengths)):
        out = out.replace(f"{{totp_value_{n}}}", hotp(key, unix_ms // period_ms, length, "sha1"))
    return out


def mint_wallet(event_key: bytes, kid: int, ticket_id: int, unix_time: float) -> str:
    """The code a Wallet pass shows at `unix_time` (whole seconds count, as Wallet's do)."""
    _check_common(kid, ticket_id)
    unix_ms = int(unix_time) * 1000
    if not 0 <= unix_ms // WALLET_PERIOD_MS <= MAX_STEP:
        raise ValueError(f"time {unix_time} is outside the u32 step range")
    key = wallet_key(event_key, ticket_id)
    return render_rotating_barcode(wallet_pattern(kid, ticket_id), [key], [WALLET_DIGITS], WALLET_PERIOD_MS, unix_ms)


def _decimal(field: str, maximum: int) -> int | None:
    """A canonical decimal field: ASCII digits, no sign, no leading zero, at most `maximum`."""
    if not field or not field.isascii() or not field.isdigit() or (field[0] == "0" and len(field) > 1):
        return None
    value = int(field)
    return value if value <= maximum else None


def _verify_wallet(text: str, keys: "dict[int, bytes]", now: float, skew_steps: int) -> Verified:
    """Checks 1-4 for a `GW1:` code, with the same reasons and window as a dynamic code.

    The step is the TOTP counter Wallet used: floor(seconds / 30). The seconds
    are not signed themselves, but a counter other than the one the digits
    were made for fails the comparison, so they cannot be moved to another step.
    """
    text = text.strip(_ASCII_WHITESPACE)
    if len(text) > _WALLET_MAX_CHARS or text[:4].upper() != WALLET_PREFIX:
        return _BAD_FORMAT
    fields = text[4:].split(":")
    if len(fields) != 4 or len(fields[3]) != WALLET_DIGITS or not fields[3].isascii() or not fields[3].isdigit():
        return _BAD_FORMAT
    kid, ticket_id, seconds = _decimal(fields[0], 255), _decimal(fields[1], MAX_TICKET_ID), _decimal(fields[2], (MAX_STEP + 1) * STEP_SECONDS - 1)
    if kid is None or ticket_id is None or seconds is None:
        return _BAD_FORMAT
    event_key = keys.get(kid)
    if event_key is None:
        return _UNKNOWN_KEY
    step = seconds // STEP_SECONDS
    secret = _hmac_digest(event_key, _WALLET_KEY_LABEL + ticket_id.to_bytes(8, "big"), "sha256")
    mac = _hmac_digest(secret, step.to_bytes(8, "big"), "sha1")  # hotp(secret, step, 8, "sha1"), inlined: every Wallet scan
    offset = mac[-1] & 0x0F
    expected = "%08d" % ((int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF) % 10**WALLET_DIGITS)
    if not hmac.compare_digest(expected.encode("ascii"), fields[3].encode("ascii")):
        return _BAD_SIGNATURE
    current = int(now // STEP_SECONDS)
    if step < current - skew_steps:
        return Verified(Reason.CODE_EXPIRED, CodeKind.WALLET, kid, ticket_id, step)
    if step > current + skew_steps:
        return Verified(Reason.CODE_NOT_YET_VALID, CodeKind.WALLET, kid, ticket_id, step)
    return Verified(Reason.OK, CodeKind.WALLET, kid, ticket_id, step)


def decode_body(text: str) -> bytes | None:
    """Check 1 of the verifier order: the code's body bytes, or None for bad_format.

    Accepts lower case and surrounding ASCII white space; refuses anything
    else that is not exactly a dynamic or static code of the right type.
    """
    if not isinstance(text, str):
        return None
    text = text.strip(_ASCII_WHITESPACE)
    n = len(text) - 4
    if n != _DYNAMIC_CHARS and n != _STATIC_CHARS:
        return None
    if text[:4].upper() != PREFIX:
        return None
    if n == _DYNAMIC_CHARS:
        body = b32decode_exact(text[4:], _DYNAMIC_BODY)
        return body if body is not None and body[0] == TYPE_DYNAMIC else None
    body = b32decode_exact(text[4:], _STATIC_BODY)
    return body if body is not None and body[0] == TYPE_STATIC else None


def b32decode_exact(chars: str, nbytes: int) -> bytes | None:
    """RFC 4648 base32 without padding, either case, to exactly `nbytes` bytes.

    None unless `chars` is the one canonical encoding of `nbytes` bytes: the
    right length, only alphabet characters, and the spare low bits zero.
    """
    spare = 5 * len(chars) - 8 * nbytes
    if not 0 <= spare < 5 or not chars.isascii():
        return None
    if not chars:
        return b""
    try:
        value = int(chars.encode("ascii").translate(_B32_TO_INT_DIGITS), 32)
    except ValueError:
        return None
    if value & ((1 << spare) - 1):
        return None
    return (value >> spare).to_bytes(nbytes, "big")


_new_tuple = tuple.__new__
_OK = Reason.OK
_DYNAMIC_KIND = CodeKind.DYNAMIC
_STATIC_KIND = CodeKind.STATIC
_BAD_FORMAT = Verified(Reason.BAD_FORMAT)
_UNKNOWN_KEY = Verified(Reason.UNKNOWN_KEY)
_BAD_SIGNATURE = Verified(Reason.BAD_SIGNATURE)


def verify_code(text: str, keys: "dict[int, bytes]", now: float, skew_steps: int = 1) -> Verified:
    """Checks 1-4 of the verifier order, in that order, for a scanned code.

    `keys` maps kid -> event key (a `KeyRing` provides one). A `GW1:` text is
    a Google Wallet code (`_verify_wallet`), checked only once the GT1 parse
    failed, so the codes gated mints pay nothing for it. For static codes
    `now` is not used: a badge does not expire by itself, its ticket's
    validity windows do (policy's job).
    """
    body = decode_body(text)
    if body is None:
        if isinstance(text, str) and WALLET_PREFIX in text[:16].upper():
            return _verify_wallet(text, keys, now, skew_steps)
        return _BAD_FORMAT
    kid = body[1]
    event_key = keys.get(kid)
    if event_key is None:
        return _UNKNOWN_KEY
    tkey = _hmac_digest(event_key, _TICKET_KEY_LABEL + body[2:10], "sha256")
    if body[0] == TYPE_DYNAMIC:
        tag = _hmac_digest(tkey, body[:14], "sha256")[:_TAG]
        if not hmac.compare_digest(tag, body[14:]):
            return _BAD_SIGNATURE
        _, _, ticket_id, step = _dynamic_head.unpack_from(body)
        current = int(now // STEP_SECONDS)
        if step < current - skew_steps:
            return Verified(Reason.CODE_EXPIRED, CodeKind.DYNAMIC, kid, ticket_id, step)
        if step > current + skew_steps:
            return Verified(Reason.CODE_NOT_YET_VALID, CodeKind.DYNAMIC, kid, ticket_id, step)
        return _new_tuple(Verified, (_OK, _DYNAMIC_KIND, kid, ticket_id, step, None))
    tag = _hmac_digest(tkey, body[:12], "sha256")[:_TAG]
    if not hmac.compare_digest(tag, body[12:]):
        return _BAD_SIGNATURE
    _, _, ticket_id, serial = _static_head.unpack_from(body)
    return _new_tuple(Verified, (_OK, _STATIC_KIND, kid, ticket_id, None, serial))


def verify_manual(
    ticket_id: int, digits: str, keys: "dict[int, bytes]", now: float, skew_steps: int = 1
) -> Verified:
    """Check a typed ticket id + 8 digits against every key in the ring.

    The operator types no kid, so each kid is tried (newest first); each
    candidate is compared in constant time. A code that matches only outside
    the step window says `code_expired` or `code_not_yet_valid`, so an
    operator can tell a stale phone screen from a typing mistake: the window
    searched for that is 10 steps either side, never more.
    """
    if (
        not isinstance(digits, str)
        or len(digits) != MANUAL_DIGITS
        or not digits.isascii()
        or not digits.isdigit()
        or not isinstance(ticket_id, int)
        or not 0 <= ticket_id <= MAX_TICKET_ID
    ):
        return _BAD_FORMAT
    if not keys:
        return _UNKNOWN_KEY
    current = int(now // STEP_SECONDS)
    typed = digits.encode("ascii")
    label = _TICKET_KEY_LABEL + ticket_id.to_bytes(8, "big")
    stale: Verified | None = None
    for kid in sorted(keys, reverse=True):
        tkey = hmac.digest(keys[kid], label, "sha256")
        for delta in range(-skew_steps, skew_steps + 1):
            step = current + delta
            if step >= 0 and hmac.compare_digest(hotp(tkey, step).encode("ascii"), typed):
                return Verified(Reason.OK, CodeKind.MANUAL, kid, ticket_id, step)
        if stale is None:
            for delta in range(skew_steps + 1, skew_steps + 11):
                for step, reason in ((current - delta, Reason.CODE_EXPIRED), (current + delta, Reason.CODE_NOT_YET_VALID)):
                    if step >= 0 and hmac.compare_digest(hotp(tkey, step).encode("ascii"), typed):
                        stale = Verified(reason, CodeKind.MANUAL, kid, ticket_id, step)
    return stale or _BAD_SIGNATURE
