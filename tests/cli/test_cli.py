"""The technician's commands, run as a technician would: as a subprocess."""

import json
import os
import subprocess
import sys

import pytest

KEY_0_31_FILE = '{"keys": {"1": "' + bytes(range(32)).hex() + '"}}'


def gated(*args, check=False):
    return subprocess.run([sys.executable, "-m", "gated", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def keyfile(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(KEY_0_31_FILE)
    os.chmod(path, 0o600)
    return str(path)


def test_keys_new_writes_a_0600_file_that_mints(tmp_path):
    out = tmp_path / "k.json"
    r = gated("keys", "new", "--out", str(out), "--kid", "7")
    assert r.returncode == 0 and os.stat(out).st_mode & 0o777 == 0o600
    r = gated("token", "mint", "--keys", str(out), "--kid", "7", "--ticket", "5", "--static", "--serial", "2")
    assert r.returncode == 0 and r.stdout.startswith("GT1:")
    assert gated("keys", "new", "--out", str(out)).returncode == 2  # never overwrites silently


def test_mint_reproduces_the_vectors(keyfile):
    r = gated("token", "mint", "--keys", keyfile, "--kid", "1", "--ticket", "42", "--dynamic", "--time", "1700000000")
    assert r.stdout.strip() == "GT1:AEAQAAAAAAAAAABKANQKUKV56PY33X2CHTXFSZ3XQLIOPUT4"
    r = gated("token", "mint", "--keys", keyfile, "--kid", "1", "--ticket", "42", "--static", "--serial", "3")
    assert r.stdout.strip() == "GT1:AIAQAAAAAAAAAABKAABSPY2N6NAUOPVA3YFTTEQIVS4RI"
    r = gated("token", "totp", "--keys", keyfile, "--kid", "1", "--ticket", "42", "--time", "1700000000")
    assert r.stdout.strip() == "86780919"


@pytest.mark.parametrize(
    "args, status, reason, ticket",
    [
        (["GT1:AEAQAAAAAAAAAABKANQKUKV56PY33X2CHTXFSZ3XQLIOPUT4", "--time", "1700000000"], 0, "ok", 42),
        (["GT1:AEAQAAAAAAAAAABKANQKUKV56PY33X2CHTXFSZ3XQLIOPUT4", "--time", "1700000100"], 1, "code_expired", 42),
        (["GT1:AEAQAAAAAAAAAABKANQKUKV56PY33X2CHTXFSZ3XQLIOPUT4", "--time", "1700000100", "--skew", "5"], 0, "ok", 42),
        (["GT1:AEAQAAAAAAAAAABKANQKUKV56PY33X2CHTXFSZ3XQLIOPUTA", "--time", "1700000000"], 1, "bad_signature", None),
        (["hello", "--time", "1700000000"], 1, "bad_format", None),
        (["86780919", "--manual", "42", "--time", "1700000000"], 0, "ok", 42),
    ],
)
def test_verify_prints_json_and_exit_status(keyfile, args, status, reason, ticket):
    r = gated("token", "verify", *args, "--keys", keyfile)
    assert r.returncode == status, r.stderr
    out = json.loads(r.stdout)
    assert out["reason"] == reason and out["ticket_id"] == ticket


@pytest.mark.parametrize(
    "args",
    [
        ["token", "verify", "GT1:X", "--time", "1"],  # missing --keys
        ["token", "verify", "GT1:X", "--keys", "/nonexistent/keys.json"],
        ["token", "mint", "--keys", "KEYFILE", "--kid", "1", "--ticket", "1", "--static", "--serial", "70000"],
        ["token", "mint", "--keys", "KEYFILE", "--kid", "9", "--ticket", "1", "--static"],
        ["token", "mint", "--keys", "KEYFILE", "--kid", "1", "--ticket", "-1", "--static"],
        ["token", "frobnicate"],
        [],
    ],
)
def test_usage_errors_are_one_line_exit_2(keyfile, args):
    r = gated(*[keyfile if a == "KEYFILE" else a for a in args])
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_world_readable_key_file_is_a_usage_error(keyfile):
    os.chmod(keyfile, 0o644)
    r = gated("token", "verify", "GT1:X", "--keys", keyfile)
    assert r.returncode == 2 and "chmod 600" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_config_check_good_and_bad(tmp_path):
    from tests.gatekit import make_gate_dir

    config = make_gate_dir(tmp_path)
    r = gated("config", "check", str(config), "--check-files")
    assert r.returncode == 0 and r.stdout.startswith("OK:") and "2 lanes" in r.stdout
    config.write_text(config.read_text().replace('direction = "out"', 'direction = "sideways"'))
    r = gated("config", "check", str(config))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "gate.toml:" in r.stderr and "lane[1].direction" in r.stderr and "Traceback" not in r.stderr


def test_journal_tail_stats_export(tmp_path):
    import csv
    import io

    from gated.journal import Journal
    from tests.gatekit import make_gate_dir

    config = make_gate_dir(tmp_path)
    with Journal(tmp_path / "state" / "journal.db", "test-gate") as journal:
        for n in range(5):
            journal.append("decision", at=1_763_000_000 + n, lane="in-1", ticket_id=2**64 - 1 - n, reason="ok", payload={"n": n})
        journal.mark_acked(2)
    r = gated("journal", "tail", "--config", str(config), "-n", "2")
    tail = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 0 and [t["seq"] for t in tail] == [4, 5] and tail[-1]["ticket_id"] == 2**64 - 5
    r = gated("journal", "stats", "--db", str(tmp_path / "state" / "journal.db"), "--gate-id", "test-gate")
    stats = json.loads(r.stdout)
    assert stats["records"] == 5 and stats["unacked"] == 3
    r = gated("journal", "export", "--config", str(config), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert r.returncode == 0 and len(rows) == 5 and "exported 5 records" in r.stderr
    r = gated("journal", "stats")
    assert r.returncode == 2 and "--config" in r.stderr
