"""Google Wallet rotating codes (GW1): the TOTP Wallet computes, and gates checking it offline."""

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gated.validation import EntitlementCache, KeyRing, Lane, Policy, Reason, TicketRecord, Validator, encode_snapshot
from gated.validation.token import (
    CodeKind,
    STEP_SECONDS,
    hotp,
    mint_dynamic,
    mint_wallet,
    render_rotating_barcode,
    totp,
    verify_code,
    wallet_key,
    wallet_pattern,
)
from tests.conftest import REPO

KEY = bytes(range(32))
RING = {1: KEY}
NOW = 1_763_003_600
REG = 5205320758  # a 10-digit registration number, as the seed's SMS gives them

# RFC 6238 appendix B, SHA-1 column: the 20-byte ASCII seed, 8 digits, X = 30 s.
RFC6238_SEED = b"12345678901234567890"
RFC6238_SHA1 = [(59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
                (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130")]


@pytest.mark.parametrize(("unix_time", "expected"), RFC6238_SHA1)
def test_rfc6238_sha1(unix_time, expected):
    assert totp(RFC6238_SEED, unix_time, 8, "sha1") == expected


@pytest.mark.parametrize(("unix_time", "expected"), RFC6238_SHA1)
def test_googles_example_pattern_renders_as_wallet_would(unix_time, expected):
    """Google's documentation pattern, with its substitutions made exactly as Wallet makes them."""
    pattern = "MyRotatingBarCode-{totp_timestamp_seconds}-{totp_value_0}"
    shown = render_rotating_barcode(pattern, [RFC6238_SEED], [8], 30_000, unix_time * 1000)
    assert shown == f"MyRotatingBarCode-{unix_time}-{expected}"
    millis = render_rotating_barcode("{totp_timestamp_millis}/{totp_value_0}", [RFC6238_SEED], [6], 30_000, unix_time * 1000 + 999)
    assert millis == f"{unix_time * 1000 + 999}/{expected[-6:]}"  # 6 digits: the same HOTP value, mod 10^6


def test_pattern_and_known_answers():
    assert wallet_pattern(1, REG) == "GW1:1:5205320758:{totp_timestamp_seconds}:{totp_value_0}"
    assert wallet_key(KEY, 42).hex() == "7c29df5697af96130b07a7bb217bf527a2e380a1b73038bc59fcd230d6171daf"
    assert mint_wallet(KEY, 1, 42, 1700000000) == "GW1:1:42:1700000000:90414371"
    # its own label: the Wallet key (Google holds it) is not the ticket key the app holds
    from gated.validation.token import ticket_key
    assert wallet_key(KEY, 42) != ticket_key(KEY, 42)


@pytest.mark.parametrize("ticket", [0, 1, 100001, REG, 3_000_017, 2**63 + 12345, 2**64 - 1])
def test_round_trip_over_id_shapes(ticket):
    code = mint_wallet(KEY, 1, ticket, NOW)
    v = verify_code(code, RING, NOW)
    assert (v.reason, v.kind, v.kid, v.ticket_id, v.step) == (Reason.OK, CodeKind.WALLET, 1, ticket, NOW // STEP_SECONDS)


@pytest.mark.parametrize(("offset", "reason"), [(-31, Reason.CODE_NOT_YET_VALID), (-30, Reason.OK), (0, Reason.OK),
                                                 (29, Reason.OK), (59, Reason.OK), (60, Reason.CODE_EXPIRED)])
def test_same_window_as_dynamic_codes(offset, reason):
    at = (NOW // STEP_SECONDS) * STEP_SECONDS  # the start of a step
    code = mint_wallet(KEY, 1, REG, at)
    assert verify_code(code, RING, at + offset).reason is reason
    assert verify_code(mint_dynamic(KEY, 1, REG, at), RING, at + offset).reason is reason


def test_scanner_text_and_refusals():
    code = mint_wallet(KEY, 1, REG, NOW)
    assert verify_code(" " + code.lower() + "\r\n", RING, NOW).reason is Reason.OK
    head, digits = code.rsplit(":", 1)
    wrong = f"{head}:{(int(digits) + 1) % 10**8:08d}"
    assert verify_code(wrong, RING, NOW).reason is Reason.BAD_SIGNATURE
    assert verify_code(wrong, RING, NOW).ticket_id is None  # nothing is trusted before the digits match
    assert verify_code(code, {2: KEY}, NOW).reason is Reason.UNKNOWN_KEY
    assert verify_code(code, {1: bytes(32)}, NOW).reason is Reason.BAD_SIGNATURE
    kid, ticket, seconds, digits = code[4:].split(":")
    for bad in (
        f"GW1:0{kid}:{ticket}:{seconds}:{digits}",  # leading zero: one text per code
        f"GW1:{kid}:0{ticket}:{seconds}:{digits}",
        f"GW1:{kid}:{ticket}:{seconds}:{digits}:1",
        f"GW1:{kid}:{ticket}:{seconds}:{digits[:-1]}",
        f"GW1:{kid}:{ticket}:+{seconds}:{digits}",
        f"GW1:{kid}:{ticket}:{seconds}:{digits[:-1]}\u0663",  # an Arabic-Indic digit
        f"GW1:256:{ticket}:{seconds}:{digits}",
        f"GW1:{kid}:{2**64}:{seconds}:{digits}",
        f"GW1:{kid}:{ticket}: {seconds}:{digits}",
        f"GW1:{kid}:{ticket}:{seconds}:{digits}" + "0" * 200,
        "GW1:", "GW1::::", "GW2:1:1:1:12345678",
    ):
        assert verify_code(bad, RING, NOW).reason is Reason.BAD_FORMAT, bad


def test_seconds_cannot_move_a_code_to_another_step():
    code = mint_wallet(KEY, 1, REG, NOW - 120)  # expired
    kid, ticket, seconds, digits = code[4:].split(":")
    moved = f"GW1:{kid}:{ticket}:{NOW}:{digits}"
    assert verify_code(moved, RING, NOW).reason is Reason.BAD_SIGNATURE
    same_step = f"GW1:{kid}:{ticket}:{int(seconds) // 30 * 30 + 29}:{digits}"  # another second of the same step
    assert verify_code(same_step, RING, NOW - 120).reason is Reason.OK


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 255), st.integers(0, 4_000_000_000), st.data())
def test_any_single_changed_character_is_never_ok(ticket, kid, at, data):
    key = bytes(range(32))
    code = mint_wallet(key, kid, ticket, at)
    pos = data.draw(st.integers(4, len(code) - 1))
    new = data.draw(st.sampled_from("0123456789:ABC "))
    changed = code[:pos] + new + code[pos + 1:]
    if changed == code:
        return
    v = verify_code(changed, {kid: key}, at)
    if v.reason is Reason.OK:  # only the seconds may change, and only within their step
        assert v.ticket_id == ticket and v.step == at // 30
        assert changed.rsplit(":", 1)[1] == code.rsplit(":", 1)[1]


@given(st.text(max_size=80))
def test_random_text_after_the_prefix_never_raises(text):
    assert verify_code("GW1:" + text, RING, NOW).reason is not Reason.OK


# ---- at the gate: the policy's "only the most recent" rule ----

HALL = Lane("north-in-1", "hall-a")
DESK = Lane("desk-1", "hall-a")


@pytest.fixture
def gate():
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, [TicketRecord(ticket_id=REG, category="guest", zones=("hall-a",)),
                                           TicketRecord(ticket_id=REG + 1, category="guest", zones=("hall-a",))]))
    return Validator(KeyRing(RING), cache, Policy(debounce_s=0))


def test_the_gate_admits_a_wallet_code_offline(gate):
    d = gate.decide(mint_wallet(KEY, 1, REG, NOW), HALL, NOW)
    assert (d.reason, d.ticket_id, d.kind) == (Reason.OK, REG, CodeKind.WALLET)


def test_an_older_code_than_the_newest_seen_is_refused_inside_the_window(gate):
    old, new = mint_wallet(KEY, 1, REG, NOW - 30), mint_wallet(KEY, 1, REG, NOW)
    assert gate.decide(old, HALL, NOW).reason is Reason.OK  # one step old: inside the window
    assert gate.decide(new, DESK, NOW).reason is Reason.OK
    assert gate.decide(old, DESK, NOW + 1).reason is Reason.CODE_EXPIRED  # a screenshot of the older code
    assert gate.decide(new, HALL, NOW + 2).reason is Reason.OK  # the newest itself again: fine
    assert gate.decide(mint_wallet(KEY, 1, REG + 1, NOW - 30), HALL, NOW + 3).reason is Reason.OK  # per ticket


def test_forged_codes_teach_the_gate_nothing(gate):
    new = mint_wallet(KEY, 1, REG, NOW + 30)
    forged = new.rsplit(":", 1)[0] + ":00000000"
    assert gate.decide(forged, HALL, NOW).reason is Reason.BAD_SIGNATURE
    assert gate.decide(mint_wallet(KEY, 1, REG, NOW), HALL, NOW).reason is Reason.OK


def test_clock_unsynced_like_dynamic_codes(gate):
    assert gate.decide(mint_wallet(KEY, 1, REG, NOW), HALL, NOW, clock_trusted=False).reason is Reason.CLOCK_UNSYNCED


def test_the_newest_memory_forgets_steps_outside_the_window():
    records = [TicketRecord(ticket_id=REG + i, category="guest", zones=("hall-a",)) for i in range(3000)]
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, records))
    gate = Validator(KeyRing(RING), cache, Policy(debounce_s=0, rate_burst=10**6, rate_per_s=10**6))
    for i in range(2000):
        assert gate.decide(mint_wallet(KEY, 1, REG + i, NOW), HALL, NOW).admitted
    later = NOW + 600
    for i in range(2000, 3000):
        assert gate.decide(mint_wallet(KEY, 1, REG + i, later), HALL, later).admitted
    assert len(gate._wallet_newest) <= 2048  # the first 2,000 left the window and were forgotten


# ---- `gated wallet object` and `gated token verify`, through the command line ----

def _gated(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gated", *args], capture_output=True, text=True, timeout=60, **kw)


def test_a_pass_rendered_from_the_object_json_alone_verifies_at_the_gate(tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": {"7": KEY.hex()}}))
    keys.chmod(0o600)
    out = _gated("wallet", "object", "--keys", str(keys), "--kid", "7", "--ticket", str(REG), "--issuer-id", "3388000000012345678",
                 "--holder", "王芳")
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert obj["id"] == f"3388000000012345678.gated-{REG}" and obj["classId"] == "3388000000012345678.gated-event"
    assert obj["ticketHolderName"] == "王芳" and obj["state"] == "ACTIVE"
    barcode = obj["rotatingBarcode"]
    assert barcode["type"] == "QR_CODE" and barcode["totpDetails"]["algorithm"] == "TOTP_SHA1"
    details = barcode["totpDetails"]
    assert KEY.hex() not in out.stdout  # the event key never leaves: only this ticket's Wallet key
    # Be Google Wallet: only the object's own fields make the code
    params = details["parameters"]
    shown = render_rotating_barcode(barcode["valuePattern"], [bytes.fromhex(p["key"]) for p in params],
                                    [p["valueLength"] for p in params], int(details["periodMillis"]), NOW * 1000 + 417)
    assert shown.isascii() and all(c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:" for c in shown)  # QR alphanumeric
    verdict = _gated("token", "verify", shown, "--keys", str(keys), "--time", str(NOW + 20))
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert json.loads(verdict.stdout) == {"reason": "ok", "ticket_id": REG, "kind": "wallet", "kid": 7,
                                          "step": NOW // 30, "serial": None}
    stale = _gated("token", "verify", shown, "--keys", str(keys), "--time", str(NOW + 120))
    assert stale.returncode == 1 and json.loads(stale.stdout)["reason"] == "code_expired"
    minted = _gated("token", "mint", "--keys", str(keys), "--kid", "7", "--ticket", str(REG), "--wallet", "--time", str(NOW))
    assert minted.stdout.strip() == shown.replace(str(NOW * 1000 + 417)[:-3], str(NOW))


def test_wallet_object_without_an_issuer_says_what_to_add(tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": {"1": KEY.hex()}}))
    keys.chmod(0o600)
    out = _gated("wallet", "object", "--keys", str(keys), "--kid", "1", "--ticket", "42")
    assert out.returncode == 0 and "id" not in json.loads(out.stdout)
    assert out.stderr.strip() == 'gated wallet object: no --issuer-id given: add "id" and "classId" before inserting the object'
    missing = _gated("wallet", "object", "--keys", str(keys), "--kid", "9", "--ticket", "42")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1 and "kid 9" in missing.stderr
