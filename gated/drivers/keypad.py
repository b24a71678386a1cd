"""Typed fallback: an operator keys in a ticket id and its 8 digits.

When a code will not scan, the operator types `<ticket id><sep><8 digits>`
and Enter, on a numeric keypad or a keyboard. The separator is `*`, `#`,
space, or Enter itself (Enter on a line with no separator yet moves to the
second field; the next Enter submits). Backspace deletes the last character,
Escape clears the line.

`parse_manual_entry` and `KeypadParser` are pure. A malformed line is not an
exception but a `ManualEntryInvalid` value with a stable reason, so the lane
can show it. What the 8 digits mean is not decided here.
`KeypadScanner` is the evdev-fed variant (keypads are usually HID devices).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gated.drivers.hid_scanner import BACKSPACE, ENTER, ESCAPE, EvdevKeyScanner, KeyTranslator

TICKET_ID_MAX = 2**64 - 1
CODE_DIGITS = 8
SEPARATORS = frozenset("*# " + ENTER)
# A u64 has 20 digits: 20 + separator + 8, with room for leading zeros.
MAX_TYPED = 40

_DIGITS = frozenset("0123456789")  # not str.isdigit(), which accepts "²"

# Reasons a typed line is refused (a contract, like decision reasons).
NON_DIGIT = "non_digit"
MISSING_TICKET_ID = "missing_ticket_id"
TICKET_ID_OUT_OF_RANGE = "ticket_id_out_of_range"
WRONG_DIGIT_COUNT = "wrong_digit_count"
TOO_MANY_FIELDS = "too_many_fields"
TOO_LONG = "too_long"


@dataclass(frozen=True, slots=True)
class ManualEntry:
    """A well-formed typed entry: which ticket, and the 8 digits typed for it."""

    source: str
    ticket_id: int
    digits: str
    at: float


@dataclass(frozen=True, slots=True)
class ManualEntryInvalid:
    """A typed line that could not be read; `reason` is one of the constants above."""

    source: str
    reason: str
    typed: str
    at: float


def parse_manual_entry(source: str, typed: str, at: float) -> ManualEntry | ManualEntryInvalid:
    """Read one submitted line: ticket id, one separator, 8 digits."""

    def invalid(reason: str) -> ManualEntryInvalid:
        return ManualEntryInvalid(source, reason, typed, at)

    if len(typed) > MAX_TYPED:
        return invalid(TOO_LONG)
    fields = _split_fields(typed)
    if len(fields) > 2:
        return invalid(TOO_MANY_FIELDS)
    ticket_text = fields[0]
    digits = fields[1] if len(fields) == 2 else ""
    if not ticket_text:
        return invalid(MISSING_TICKET_ID)
    if not set(ticket_text + digits) <= _DIGITS:
        return invalid(NON_DIGIT)
    ticket_id = int(ticket_text)
    if ticket_id > TICKET_ID_MAX:
        return invalid(TICKET_ID_OUT_OF_RANGE)
    if len(digits) != CODE_DIGITS:
        return invalid(WRONG_DIGIT_COUNT)
    return ManualEntry(source, ticket_id, digits, at)


def _split_fields(typed: str) -> list[str]:
    fields = [""]
    for char in typed:
        if char in SEPARATORS:
            fields.append("")
        else:
            fields[-1] += char
    return fields


class KeypadParser:
    """Line editing for the typed fallback; `feed` returns a result on submit.

    Characters are those `KeyTranslator.key_text` produces (ENTER, BACKSPACE
    and ESCAPE for those keys). The line holds at most MAX_TYPED characters;
    past that it is refused as too_long on submit, and only Escape or the
    submit clears it, since the operator cannot see what was dropped.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._typed = ""
        self._overflowed = False

    @property
    def typed(self) -> str:
        """The line so far, for an echo display."""
        return self._typed

    def clear(self) -> None:
        self._typed = ""
        self._overflowed = False

    def feed(self, char: str, at: float) -> ManualEntry | ManualEntryInvalid | None:
        if char == ESCAPE:
            self.clear()
        elif char == BACKSPACE:
            if not self._overflowed:
                self._typed = self._typed[:-1]
        elif char == ENTER:
            return self._enter(at)
        elif len(self._typed) >= MAX_TYPED:
            self._overflowed = True
        else:
            self._typed += char
        return None

    def _enter(self, at: float) -> ManualEntry | ManualEntryInvalid | None:
        if not self._typed:
            return None  # a stray Enter on an empty line is not an attempt
        if not self._overflowed and not SEPARATORS.intersection(self._typed):
            self._typed += ENTER
            return None
        typed, overflowed = self._typed, self._overflowed
        self.clear()
        if overflowed:
            return ManualEntryInvalid(self.source, TOO_LONG, typed, at)
        return parse_manual_entry(self.source, typed, at)


class KeypadScanner(EvdevKeyScanner):
    """A HID keypad for the typed fallback; calls `on_entry` with a
    `ManualEntry` or a `ManualEntryInvalid` each time the operator submits."""

    def __init__(
        self,
        name: str,
        device: str,
        layout: str = "us",
        *,
        on_entry: Callable[[ManualEntry | ManualEntryInvalid], None],
        clock: Callable[[], float] = time.monotonic,
        reconnect_delay: float = 0.5,
        reconnect_delay_max: float = 5.0,
    ) -> None:
        super().__init__(
            name, device, layout, clock=clock,
            reconnect_delay=reconnect_delay, reconnect_delay_max=reconnect_delay_max,
        )
        self._on_entry = on_entry
        self._translator = KeyTranslator(layout)
        self._parser = KeypadParser(name)

    def _start_session(self) -> None:
        self._translator = KeyTranslator(self.layout)
        self._parser.clear()

    def _on_key(self, keycode: int, value: int) -> None:
        char = self._translator.key_text(keycode, value)
        if char is None:
            return
        result = self._parser.feed(char, self._now())
        if result is not None:
            self._hand_over(self._on_entry, result)

    def _on_events_dropped(self) -> None:
        self._translator.lose_track()
        self._parser.clear()
