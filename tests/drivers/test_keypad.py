"""The typed fallback: an operator keys in a ticket id and 8 digits."""

from __future__ import annotations

import evdev
import pytest
from evdev import ecodes as e

from gated.drivers.hid_scanner import BACKSPACE, ENTER, ESCAPE, KeyTranslator
from gated.drivers.keypad import (
    MAX_TYPED,
    MISSING_TICKET_ID,
    NON_DIGIT,
    TICKET_ID_OUT_OF_RANGE,
    TOO_LONG,
    TOO_MANY_FIELDS,
    WRONG_DIGIT_COUNT,
    KeypadParser,
    KeypadScanner,
    ManualEntry,
    ManualEntryInvalid,
    parse_manual_entry,
)

U64_MAX = "18446744073709551615"


@pytest.mark.parametrize(
    "typed,ticket_id,digits",
    [
        ("12345*87654321", 12345, "87654321"),
        ("12345#87654321", 12345, "87654321"),
        ("12345 87654321", 12345, "87654321"),
        ("12345\n87654321", 12345, "87654321"),
        ("007*00000001", 7, "00000001"),
        (f"{U64_MAX}*12345678", 2**64 - 1, "12345678"),
        ("0*99999999", 0, "99999999"),
    ],
)
def test_well_formed_lines(typed, ticket_id, digits):
    assert parse_manual_entry("desk-1", typed, 5.0) == ManualEntry("desk-1", ticket_id, digits, 5.0)


@pytest.mark.parametrize(
    "typed,reason",
    [
        ("12a45*87654321", NON_DIGIT),
        ("12345*8765432x", NON_DIGIT),
        ("12345*8765432²", NON_DIGIT),  # a digit to str.isdigit(), not to us
        ("12345*1234567", WRONG_DIGIT_COUNT),
        ("12345*123456789", WRONG_DIGIT_COUNT),
        ("12345*", WRONG_DIGIT_COUNT),
        ("12345", WRONG_DIGIT_COUNT),
        ("18446744073709551616*12345678", TICKET_ID_OUT_OF_RANGE),
        ("*12345678", MISSING_TICKET_ID),
        ("1*2*12345678", TOO_MANY_FIELDS),
        ("12345**12345678", TOO_MANY_FIELDS),
        ("1" * (MAX_TYPED + 1), TOO_LONG),
    ],
)
def test_malformed_lines_get_a_reason(typed, reason):
    assert parse_manual_entry("desk-1", typed, 5.0) == ManualEntryInvalid("desk-1", reason, typed, 5.0)


def type_line(parser: KeypadParser, chars: str, at: float = 1.0) -> list:
    results = [parser.feed(char, at) for char in chars]
    return [result for result in results if result is not None]


def test_enter_moves_to_the_digits_then_submits():
    parser = KeypadParser("desk-1")
    assert type_line(parser, "12345" + ENTER) == []
    assert type_line(parser, "87654321" + ENTER) == [ManualEntry("desk-1", 12345, "87654321", 1.0)]
    assert parser.typed == ""


def test_backspace_corrects_and_can_step_back_over_the_separator():
    parser = KeypadParser("desk-1")
    typed = "12346" + BACKSPACE + "5" + ENTER + BACKSPACE + "*8765432" + "9" + BACKSPACE + "1" + ENTER
    assert type_line(parser, typed) == [ManualEntry("desk-1", 12345, "87654321", 1.0)]


def test_escape_starts_over_and_a_stray_enter_is_not_an_attempt():
    parser = KeypadParser("desk-1")
    assert type_line(parser, ENTER + "999*1" + ESCAPE + ENTER) == []
    assert type_line(parser, "42*00000042" + ENTER) == [ManualEntry("desk-1", 42, "00000042", 1.0)]


def test_a_wrong_line_is_answered_and_cleared():
    parser = KeypadParser("desk-1")
    refused = ManualEntryInvalid("desk-1", WRONG_DIGIT_COUNT, "42*123", 1.0)
    assert type_line(parser, "42*123" + ENTER) == [refused]
    assert type_line(parser, "42*12345678" + ENTER) == [ManualEntry("desk-1", 42, "12345678", 1.0)]


def test_a_held_down_key_fills_the_line_and_is_refused_as_too_long():
    parser = KeypadParser("desk-1")
    results = type_line(parser, "7" * 500 + BACKSPACE + ENTER)
    assert results == [ManualEntryInvalid("desk-1", TOO_LONG, "7" * MAX_TYPED, 1.0)]
    assert parser.typed == ""


def test_keypad_keystrokes_through_the_shared_key_translator():
    translator = KeyTranslator("de")
    parser = KeypadParser("desk-1")
    presses = [e.KEY_KP1, e.KEY_KP2, e.KEY_KPASTERISK, *[e.KEY_KP0] * 7, e.KEY_KP9, e.KEY_KPENTER]
    results = []
    for keycode in presses:
        for value in (1, 0):
            char = translator.key_text(keycode, value)
            if char is not None and (result := parser.feed(char, 3.0)) is not None:
                results.append(result)
    assert results == [ManualEntry("desk-1", 12, "00000009", 3.0)]


def test_the_keypad_scanner_hands_each_submission_to_its_callback():
    entries = []
    scanner = KeypadScanner("desk-1", "Numeric Keypad", on_entry=entries.append, clock=lambda: 9.0)
    strokes = [e.KEY_KP5, e.KEY_KPENTER, *[e.KEY_KP1] * 8, e.KEY_KPENTER, e.KEY_KP5, e.KEY_KPENTER, e.KEY_KP1,
               e.KEY_KPENTER]
    scanner._consume(
        [evdev.InputEvent(0, 0, e.EV_KEY, keycode, value) for keycode in strokes for value in (1, 0)]
    )
    assert entries == [
        ManualEntry("desk-1", 5, "11111111", 9.0),
        ManualEntryInvalid("desk-1", WRONG_DIGIT_COUNT, "5\n1", 9.0),
    ]
