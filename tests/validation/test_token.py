"""The token format, checked byte for byte against token-format.md and the RFCs."""

import base64
import json
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gated.validation import token
from gated.validation.token import CodeKind, Reason
from tests.conftest import REPO

KEY_0_31 = bytes(range(32))
KEY_AB = b"\xab" * 32
U64 = st.integers(0, 2**64 - 1)
KID = st.integers(0, 255)


# ---- known answers from token-format.md ----

def test_ticket_key_vector():
    assert token.ticket_key(KEY_0_31, 42).hex() == "2dcdecdfec97de59039944a175b4a3dfebfb0d8a9ea24719e6098b5bcf0f1c74"


@pytest.mark.parametrize(
    "mint, expected",
    [
        (lambda: token.mint_dynamic(KEY_0_31, 1, 42, 1700000000), "GT1:AEAQAAAAAAAAAABKANQKUKV56PY33X2CHTXFSZ3XQLIOPUT4"),
        (lambda: token.mint_static(KEY_0_31, 1, 42, 3), "GT1:AIAQAAAAAAAAAABKAABSPY2N6NAUOPVA3YFTTEQIVS4RI"),
        (lambda: token.manual_code(KEY_0_31, 42, 1700000000), "86780919"),
        (lambda: token.mint_dynamic(KEY_AB, 200, 2**64 - 1, 4000000000), "GT1:AHEP777777777777A7ZICVO2EFNVYKVP62O7EPARM6UHSSFW"),
        (lambda: token.mint_static(KEY_AB, 200, 2**64 - 1, 65535), "GT1:ALEP777777777777777ZCRBM6COWQNUMDCNKWCD67QQ3C"),
    ],
)
def test_known_answer_vectors(mint, expected):
    assert mint() == expected


def test_known_answer_vectors_verify():
    v = token.verify_code("GT1:AEAQAAAAAAAAAABKANQKUKV56PY33X2CHTXFSZ3XQLIOPUT4", {1: KEY_0_31}, 1700000000)
    assert v == (Reason.OK, CodeKind.DYNAMIC, 1, 42, 56666666, None)
    v = token.verify_code("GT1:ALEP777777777777777ZCRBM6COWQNUMDCNKWCD67QQ3C", {200: KEY_AB}, 0)
    assert v == (Reason.OK, CodeKind.STATIC, 200, 2**64 - 1, None, 65535)
    assert token.verify_manual(42, "86780919", {1: KEY_0_31}, 1700000000).reason is Reason.OK


# ---- RFC 6238 appendix B (SHA-256 rows), RFC 4648 section 10 ----

@pytest.mark.parametrize(
    "unix_time, expected",
    [(59, "46119246"), (1111111109, "68084774"), (1111111111, "67062674"), (1234567890, "91819424"), (2000000000, "90698825"), (20000000000, "77737706")],
)
def test_rfc6238_sha256(unix_time, expected):
    assert token.totp(b"12345678901234567890123456789012", unix_time) == expected


RFC4648 = [(b"", ""), (b"f", "MY"), (b"fo", "MZXQ"), (b"foo", "MZXW6"), (b"foob", "MZXW6YQ"), (b"fooba", "MZXW6YTB"), (b"foobar", "MZXW6YTBOI")]


@pytest.mark.parametrize("raw, encoded", RFC4648)
def test_rfc4648_base32(raw, encoded):
    assert token._b32(raw) == encoded
    assert token.b32decode_exact(encoded, len(raw)) == raw
    assert token.b32decode_exact(encoded.lower(), len(raw)) == raw


def test_base32_refuses_non_canonical_spare_bits():
    # "MY" is 'f' with 2 spare zero bits; "MZ" sets one of them.
    assert token.b32decode_exact("MZ", 1) is None
    assert token.b32decode_exact("M1", 1) is None  # '1' is not in the alphabet
    assert token.b32decode_exact("M_", 1) is None
    assert token.b32decode_exact("+M", 1) is None


# ---- reading what scanners send ----

def test_lower_case_and_surrounding_white_space_accepted():
    code = "GT1:AIAQAAAAAAAAAABKAABSPY2N6NAUOPVA3YFTTEQIVS4RI"
    for text in (code.lower(), f"  {code}\r\n", f"\t{code.lower()}\n", "gT1:" + code[4:]):
        assert token.verify_code(text, {1: KEY_0_31}, 0).reason is Reason.OK


def test_inner_white_space_and_unicode_white_space_refused():
    code = "GT1:AIAQAAAAAAAAAABKAABSPY2N6NAUOPVA3YFTTEQIVS4RI"
    for text in (code[:10] + " " + code[10:], "\u00a0" + code, code + "\u2003", code + "=", code + "==="):
        assert token.verify_code(text, {1: KEY_0_31}, 0).reason is Reason.BAD_FORMAT


def test_static_code_with_spare_bit_set_is_not_a_second_valid_text():
    code = "GT1:AIAQAAAAAAAAAABKAABSPY2N6NAUOPVA3YFTTEQIVS4RI"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    flipped = code[:-1] + alphabet[alphabet.index(code[-1]) ^ 1]
    assert token.verify_code(flipped, {1: KEY_0_31}, 0).reason is Reason.BAD_FORMAT


def test_type_must_match_length():
    static_body = base64.b32decode("AIAQAAAAAAAAAABKAABSPY2N6NAUOPVA3YFTTEQIVS4RI" + "===")
    as_dynamic_type = bytes([1]) + static_body[1:]
    text = "GT1:" + token._b32(as_dynamic_type)
    assert token.verify_code(text, {1: KEY_0_31}, 0).reason is Reason.BAD_FORMAT
    dyn_body = bytes([3]) + bytes(29)
    assert token.verify_code("GT1:" + token._b32(dyn_body), {1: KEY_0_31}, 0).reason is Reason.BAD_FORMAT


# ---- the verifier's order ----

def test_unknown_key_is_checked_before_the_signature():
    code = token.mint_static(KEY_0_31, 7, 42, 0)
    v = token.verify_code(code, {1: KEY_0_31}, 0)
    assert v.reason is Reason.UNKNOWN_KEY and v.ticket_id is None


def test_nothing_is_trusted_before_the_signature():
    code = token.mint_dynamic(KEY_0_31, 1, 42, 1700000000)
    v = token.verify_code(code, {1: KEY_AB}, 1700000000)
    assert v.reason is Reason.BAD_SIGNATURE and v.ticket_id is None and v.kind is None
    # an expired code under the wrong key is still a bad signature, not an expired code
    assert token.verify_code(code, {1: KEY_AB}, 1800000000).reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "offset, reason",
    [(-31, Reason.CODE_NOT_YET_VALID), (-30, Reason.OK), (0, Reason.OK), (29, Reason.OK), (59, Reason.OK), (60, Reason.CODE_EXPIRED), (89, Reason.CODE_EXPIRED)],
)
def test_step_window_default_skew(offset, reason):
    """A code lives 60-90 s: its own step and one step of skew either way."""
    minted_at = 1700000010  # step 56666667 begins at 1700000010
    code = token.mint_dynamic(KEY_0_31, 1, 42, minted_at)
    assert token.verify_code(code, {1: KEY_0_31}, minted_at + offset).reason is reason


def test_skew_is_configurable():
    code = token.mint_dynamic(KEY_0_31, 1, 42, 1700000010)
    assert token.verify_code(code, {1: KEY_0_31}, 1700000010 + 90, skew_steps=1).reason is Reason.CODE_EXPIRED
    assert token.verify_code(code, {1: KEY_0_31}, 1700000010 + 90, skew_steps=3).reason is Reason.OK
    assert token.verify_code(code, {1: KEY_0_31}, 1700000010 + 31, skew_steps=0).reason is Reason.CODE_EXPIRED


def test_manual_code_window_and_stale_answers():
    keys = {1: KEY_0_31}
    digits = token.manual_code(KEY_0_31, 42, 1700000000)
    assert token.verify_manual(42, digits, keys, 1700000000 + 30).reason is Reason.OK
    assert token.verify_manual(42, digits, keys, 1700000000 + 120).reason is Reason.CODE_EXPIRED
    assert token.verify_manual(42, digits, keys, 1700000000 - 120).reason is Reason.CODE_NOT_YET_VALID
    assert token.verify_manual(43, digits, keys, 1700000000).reason is Reason.BAD_SIGNATURE
    assert token.verify_manual(42, "8678091", keys, 1700000000).reason is Reason.BAD_FORMAT
    assert token.verify_manual(42, "8678O919", keys, 1700000000).reason is Reason.BAD_FORMAT
    assert token.verify_manual(2**64, digits, keys, 1700000000).reason is Reason.BAD_FORMAT
    assert token.verify_manual(42, digits, {}, 1700000000).reason is Reason.UNKNOWN_KEY


def test_manual_code_tries_every_kid():
    keys = {1: KEY_AB, 9: KEY_0_31, 200: bytes(32)}
    v = token.verify_manual(42, token.manual_code(KEY_0_31, 42, 1700000000), keys, 1700000000)
    assert (v.reason, v.kid, v.ticket_id) == (Reason.OK, 9, 42)


# ---- properties ----

@given(kid=KID, ticket=U64, unix_time=st.integers(0, 30 * (2**32 - 1)))
def test_dynamic_round_trip(kid, ticket, unix_time):
    code = token.mint_dynamic(KEY_AB, kid, ticket, unix_time)
    assert len(code) == 52 and set(code[4:]) <= set(string.ascii_uppercase + "234567")
    v = token.verify_code(code, {kid: KEY_AB}, unix_time)
    assert (v.reason, v.kid, v.ticket_id, v.step) == (Reason.OK, kid, ticket, unix_time // 30)


@given(kid=KID, ticket=U64, serial=st.integers(0, 65535))
def test_static_round_trip(kid, ticket, serial):
    code = token.mint_static(KEY_AB, kid, ticket, serial)
    assert len(code) == 49
    v = token.verify_code(code, {kid: KEY_AB}, 0)
    assert (v.reason, v.kid, v.ticket_id, v.serial) == (Reason.OK, kid, ticket, serial)


@given(ticket=U64, unix_time=st.integers(0, 2**40))
def test_manual_round_trip(ticket, unix_time):
    digits = token.manual_code(KEY_AB, ticket, unix_time)
    assert len(digits) == 8 and digits.isdigit()
    assert token.verify_manual(ticket, digits, {5: KEY_AB}, unix_time).reason is Reason.OK


def _valid_code(draw_static, kid, ticket, n):
    return token.mint_static(KEY_AB, kid, ticket, n % 65536) if draw_static else token.mint_dynamic(KEY_AB, kid, ticket, 1700000000)


@given(static=st.booleans(), kid=KID, ticket=U64, n=st.integers(0, 2**20), pos=st.integers(0, 51), new=st.characters(min_codepoint=0, max_codepoint=0x2FFF))
@settings(max_examples=500)
def test_any_single_changed_character_is_never_ok(static, kid, ticket, n, pos, new):
    code = _valid_code(static, kid, ticket, n)
    pos %= len(code)
    assume(new.upper() != code[pos].upper())
    changed = code[:pos] + new + code[pos + 1 :]
    assert token.verify_code(changed, {kid: KEY_AB}, 1700000000).reason is not Reason.OK


@given(static=st.booleans(), kid=KID, ticket=U64, n=st.integers(0, 2**20), pos=st.integers(0, 29), xor=st.integers(1, 255))
@settings(max_examples=500)
def test_any_single_changed_byte_is_never_ok(static, kid, ticket, n, pos, xor):
    code = _valid_code(static, kid, ticket, n)
    body = bytearray(token.decode_body(code))
    pos %= len(body)
    body[pos] ^= xor
    changed = "GT1:" + token._b32(bytes(body))
    # a changed kid byte may name a key that the ring also holds
    keys = {k: KEY_AB for k in range(256)}
    assert token.verify_code(changed, keys, 1700000000).reason is not Reason.OK


@given(st.binary(max_size=200))
def test_random_bytes_never_raise(raw):
    for text in (raw.decode("latin-1"), "GT1:" + raw.decode("latin-1"), "GT1:" + token._b32(raw)):
        assert token.verify_code(text, {1: KEY_AB}, 1700000000).reason is not Reason.OK


@given(st.text(max_size=300))
def test_random_text_never_raises(text):
    assert token.verify_code(text, {1: KEY_AB}, 1700000000).reason in set(Reason)
    assert token.verify_manual(42, text, {1: KEY_AB}, 1700000000).reason in set(Reason)


def test_hostile_inputs():
    keys = {1: KEY_AB}
    for text in ("x" * 10_000, "\x00" * 52, "GT1:" + "\x00" * 48, "GT1:" + "A" * 10_000, b"\xff\xfe".decode("latin-1") * 26, "GT1:" + "-" * 48, "GT1:+" + "A" * 47, "GT1:" + "_A" * 24, None, b"GT1:", 12345):
        assert token.verify_code(text, keys, 1700000000).reason is Reason.BAD_FORMAT


def test_minting_refuses_out_of_range_fields():
    with pytest.raises(ValueError):
        token.mint_static(KEY_AB, 256, 1, 0)
    with pytest.raises(ValueError):
        token.mint_static(KEY_AB, 1, 2**64, 0)
    with pytest.raises(ValueError):
        token.mint_static(KEY_AB, 1, 1, 65536)
    with pytest.raises(ValueError):
        token.mint_dynamic(KEY_AB, 1, 1, 30 * 2**32)


# ---- the vector file other implementations test against (docs/token-vectors.json) ----

VECTORS = json.loads((REPO / "docs" / "token-vectors.json").read_text())
VECTOR_KEYS = {name: bytes.fromhex(hexkey) for name, hexkey in VECTORS["keys"].items()}


def test_vector_file_ticket_keys():
    for case in VECTORS["ticket_keys"]:
        assert token.ticket_key(VECTOR_KEYS[case["event_key"]], case["ticket_id"]).hex() == case["ticket_key"]
    for case in VECTORS["wallet_keys"]:
        assert token.wallet_key(VECTOR_KEYS[case["event_key"]], case["ticket_id"]).hex() == case["wallet_key"]


@pytest.mark.parametrize("case", VECTORS["mint"], ids=lambda c: f"{c['kind']}-{c['ticket_id']}")
def test_vector_file_mint(case):
    key = VECTOR_KEYS[case["event_key"]]
    if case["kind"] == "dynamic":
        code = token.mint_dynamic(key, case["kid"], case["ticket_id"], case["unix_time"])
    elif case["kind"] == "static":
        code = token.mint_static(key, case["kid"], case["ticket_id"], case["serial"])
    elif case["kind"] == "wallet":
        code = token.mint_wallet(key, case["kid"], case["ticket_id"], case["unix_time"])
    else:
        code = token.manual_code(key, case["ticket_id"], case["unix_time"])
    assert code == case["code"]


@pytest.mark.parametrize("case", VECTORS["verify"], ids=lambda c: c["note"])
def test_vector_file_verify(case):
    ring = {int(kid): VECTOR_KEYS[name] for kid, name in case["ring"].items()}
    v = token.verify_code(case["code"], ring, case["unix_time"], case["skew_steps"])
    assert v.reason.value == case["reason"]
    if "kind" in case:
        assert (v.kind.value, v.kid, v.ticket_id) == (case["kind"], case["kid"], case["ticket_id"])
    else:
        assert v.kind is None


def test_vector_file_matches_the_documents_table():
    table = (REPO / "docs" / "token-format.md").read_text()
    for case in VECTORS["mint"]:
        assert f"`{case['code']}`" in table
