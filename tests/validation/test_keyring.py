"""The key ring and key file: keys change at run time and never show in text."""

import logging
import os

import pytest

from gated.errors import KeyFileError, KeyRingError
from gated.keyfile import load_keyfile, new_key, save_keyfile
from gated.validation import KeyRing

SECRET = bytes.fromhex("5e" * 32)


def test_keys_never_appear_in_repr_or_errors(caplog):
    ring = KeyRing({1: SECRET, 7: new_key()})
    for text in (repr(ring), str(ring), f"{ring}"):
        assert "5e5e" not in text and "kids=[1, 7]" in text
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("ring %s", ring)
    assert "5e5e" not in caplog.text
    with pytest.raises(KeyRingError) as exc:
        KeyRing.from_json('{"keys": {"1": "' + "5e" * 31 + 'zz"}}')
    assert "5e5e" not in str(exc.value) and "key 1" in str(exc.value)
    with pytest.raises(KeyRingError) as exc:
        ring.add(3, SECRET[:31])
    assert "5e5e" not in str(exc.value)


def test_keys_added_and_retired_at_run_time():
    ring = KeyRing({1: SECRET})
    before = ring.keys
    ring.add(2, new_key())
    assert ring.kids() == [1, 2] and before == {1: SECRET}  # readers of the old dict see the old ring
    assert ring.retire(1) and not ring.retire(1)
    assert ring.kids() == [2]
    with pytest.raises(KeyRingError):
        ring.add(256, SECRET)
    with pytest.raises(KeyRingError):
        ring.replace({1: SECRET, 300: SECRET})
    assert ring.kids() == [2]  # a refused replace changes nothing


def test_key_file_round_trip_mode_0600(tmp_path):
    path = tmp_path / "keys.json"
    ring = KeyRing({1: SECRET, 200: new_key()})
    save_keyfile(path, ring)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_keyfile(path).keys == ring.keys
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        save_keyfile(path, ring)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_key_file_readable_by_others_is_refused_with_the_fix(tmp_path, mode):
    path = tmp_path / "keys.json"
    save_keyfile(path, KeyRing({1: SECRET}))
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as exc:
        load_keyfile(path)
    assert str(path) in str(exc.value) and f"chmod 600 {path}" in str(exc.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not valid JSON"),
        ('{"kees": {}}', "expected an object"),
        ('{"keys": {"one": "' + "00" * 32 + '"}}', "'one' is not an integer"),
        ('{"keys": {"1": "abc"}}', "must be 64 hex"),
        ('{"keys": ' + "[" * 1_000 + "]" * 1_000 + "}", "nest"),
        ('{"keys": {"1": ' + '{"a": ' * 100_000, "nest"),
    ],
)
def test_malformed_key_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "keys.json"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match=message) as exc:
        load_keyfile(path)
    assert str(path) in str(exc.value)


def test_missing_key_file_says_how_to_make_one(tmp_path):
    with pytest.raises(KeyFileError, match="gated keys new"):
        load_keyfile(tmp_path / "nope.json")
