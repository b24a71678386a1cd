"""A simulated day, then every log line, journal record, export, registry text
field and error message is searched for the event key and every ticket key
(hex, base64, raw bytes): none may appear."""

import base64
import os

from reliability import secrets_scan


def test_finder_sees_a_key_in_any_encoding():
    key = bytes(range(7, 39))
    finder = secrets_scan.Finder({"event key": key})
    assert finder.search(b'{"event": "x", "k": "' + key.hex().encode() + b'"}')
    assert finder.search(b"key=" + base64.urlsafe_b64encode(key).rstrip(b"="))
    assert finder.search(b"\x00\x01" + key + b"\x02")
    assert finder.search(key.hex()[:40].encode() + b" " + key.hex()[40:].encode()) == []


def test_a_simulated_day_leaks_no_key(tmp_path):
    result = secrets_scan.run(tmp_path, duration=float(os.environ.get("GATED_SECRETS_S", "10")))
    assert result.decisions > 0 and result.tickets > 0 and result.places >= 20
    assert result.found == []
