"""Attendee lists into the registry: `gated registry import FILE.csv --db FILE`.

The file is UTF-8 (a BOM from Excel is fine) with a header row naming these
columns, in any order:

    ticket_id     a u64, unique in the file
    name, company free text (may be empty)
    category      guest, media, staff, exhibitor, vip, ... (not empty)
    ticket_type   free text (may be empty)
    zones         zone names separated by ';' (at least one)
    valid_from, valid_until
                  one validity window: ISO 8601 with a UTC offset
                  (2025-06-01T08:00:00+02:00, or Z) or unix seconds; both
                  empty: valid at any time
    validity      instead of valid_from/valid_until: several windows,
                  'from/until;from/until' in the same formats
    max_entries   0 or empty = unlimited
    benefits      'lunch_day1=1;dinner=2' (may be empty)
    phone         the attendee's number (may be empty); the gate gets only
                  its last four digits, for the attended fallback lookup

A ticket already registered takes the file's definition, name and benefit
counts; its entries, whereabouts, badge serial and state are kept.

All or nothing: the first bad row stops the import with one line,
`FILE:LINE: column: problem` (LINE: where the row starts), and nothing from
the file is stored. Every row passes the same checks a gate's cache makes,
and the zones of the file and the database together must fit a gate's
cache (at most 64 distinct zones).
"""

from __future__ import annotations

import csv
import datetime
import functools
import io
import re
from pathlib import Path

from gated.errors import AttendeeFileError
from gated.validation.cache import MAX_TICKET_ID, MAX_ZONES, TicketRecord, _check_record

REQUIRED = ("ticket_id", "name", "company", "category", "ticket_type", "zones", "max_entries", "benefits", "phone")
WINDOW_COLUMNS = ("valid_from", "valid_until")
ALL_COLUMNS = (*REQUIRED, *WINDOW_COLUMNS, "validity")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PHONE_RE = re.compile(r"\+?[0-9][0-9 ()./-]*")
MAX_BENEFIT = 0xFFFF


class _RowError(ValueError):
    def __init__(self, column: str, problem: str) -> None:
        super().__init__(f"{column}: {problem}")
        self.column, self.problem = column, problem


RowError = _RowError  # what `check_row` raises: `.column` names the field, `.problem` says what is wrong


def parse_time(text: str, column: str) -> int:
    """Unix seconds from unix seconds or ISO 8601 with an offset."""
    text = text.strip()
    seconds = _seconds(text)
    if seconds is None:
        raise _RowError(column, f"{text!r} is not ISO 8601 (2025-06-01T08:00:00+02:00) or unix seconds")
    if seconds is False:
        raise _RowError(column, f"{text!r} has no UTC offset; add one, like +02:00 or Z")
    return seconds


@functools.lru_cache(maxsize=4096)  # a list repeats the same few opening and closing times
def _seconds(text: str) -> int | None | bool:
    """The instant `text` names; None: not a time; False: no UTC offset."""
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return False
    return int(moment.timestamp())


def _windows(row: dict[str, str], has_validity: bool) -> tuple[tuple[int, int], ...]:
    if has_validity:
        text = row["validity"].strip()
        pairs = [p for p in text.split(";") if p.strip()] if text else []
        windows = []
        for pair in pairs:
            start, sep, until = pair.partition("/")
            if not sep:
                raise _RowError("validity", f"{pair.strip()!r} is not 'from/until'")
            windows.append((parse_time(start, "validity"), parse_time(until, "validity")))
        column = "validity"
    else:
        start, until = row["valid_from"].strip(), row["valid_until"].strip()
        if bool(start) != bool(until):
            raise _RowError("valid_until" if start else "valid_from", "set both valid_from and valid_until, or neither")
        windows = [(parse_time(start, "valid_from"), parse_time(until, "valid_until"))] if start else []
        column = "valid_until"
    for start, until in windows:
        if start >= until:
            raise _RowError(column, "a validity window must end after it starts")
    return tuple(sorted(windows))


def _ticket_id(text: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise _RowError("ticket_id", f"{text!r} is not a whole number")
    value = int(text)
    if value > MAX_TICKET_ID:
        raise _RowError("ticket_id", "must be at most 2^64-1")
    return value


def _zones(text: str) -> tuple[str, ...]:
    zones = tuple(z.strip() for z in text.split(";") if z.strip())
    if not zones:
        raise _RowError("zones", "at least one zone is needed (separate several with ';')")
    for zone in zones:
        if not _NAME_RE.fullmatch(zone):
            raise _RowError("zones", f"{zone!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -")
    if len(set(zones)) != len(zones):
        raise _RowError("zones", "a zone appears twice")
    return zones


def _benefits(text: str) -> tuple[tuple[str, int], ...]:
    benefits: list[tuple[str, int]] = []
    for item in (b.strip() for b in text.split(";")):
        if not item:
            continue
        name, sep, count = item.partition("=")
        name, count = name.strip(), count.strip()
        if not sep or not _NAME_RE.fullmatch(name) or not count.isdigit():
            raise _RowError("benefits", f"{item!r} is not 'name=count' (like lunch_day1=1)")
        if int(count) > MAX_BENEFIT:
            raise _RowError("benefits", f"{name}: at most {MAX_BENEFIT}")
        if any(name == n for n, _ in benefits):
            raise _RowError("benefits", f"{name} appears twice")
        benefits.append((name, int(count)))
    return tuple(benefits)


def _phone(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    if not _PHONE_RE.fullmatch(text):
        raise _RowError("phone", f"{text!r} is not a phone number")
    digits = re.sub(r"[^0-9]", "", text)
    if len(digits) < 4:
        raise _RowError("phone", "needs at least 4 digits")
    return ("+" if text.startswith("+") else "") + digits


def _max_entries(text: str) -> int:
    text = text.strip()
    if not text:
        return 0
    if not text.isascii() or not text.isdigit() or int(text) > 0xFFFFFFFF:
        raise _RowError("max_entries", f"{text!r} is not a whole number 0..4294967295")
    return int(text)


def _record(row: dict[str, str], has_validity: bool) -> tuple[TicketRecord, str]:
    category = row["category"].strip()
    if not category:
        raise _RowError("category", "must not be empty")
    phone = _phone(row["phone"])
    name, company = row["name"].strip(), row["company"].strip()
    if len((name + company).encode("utf-8")) > 4000:
        raise _RowError("name", "name and company are too long")
    return (
        TicketRecord(
            ticket_id=_ticket_id(row["ticket_id"]),
            category=category,
            ticket_type=row["ticket_type"].strip(),
            zones=_zones(row["zones"]),
            windows=_windows(row, has_validity),
            max_entries=_max_entries(row["max_entries"]),
            benefits=_benefits(row["benefits"]),
            name=name,
            company=company,
            phone_last4=phone[-4:],
        ),
        phone,
    )


def check_row(row: dict[str, str], has_validity: bool) -> tuple[TicketRecord, str]:
    """One attendee (the columns above, as text) as (ticket, full phone), with every check a
    file's row gets; `RowError` names the column. The API's batches use it too."""
    rec, phone = _record(row, has_validity)
    try:
        _check_record(rec, "record")
    except ValueError as exc:
        raise _RowError("record", str(exc).removeprefix("record: ")) from None
    return rec, phone


def zone_too_many(store, records) -> tuple[int, str, int] | None:
    """(index in `records`, zone, zones in the database before) of the first zone that would pass
    a gate's limit of MAX_ZONES together with the database's, or None when they all fit."""
    zones = store.zones_in_use()
    in_db = len(zones)
    for index, rec in enumerate(records):
        for zone in rec.zones:
            if zone not in zones:
                zones.add(zone)
                if len(zones) > MAX_ZONES:
                    return index, zone, in_db
    return None


def read_attendees(path: str | Path) -> list[tuple[TicketRecord, str]]:
    """Every row of an attendee file as (ticket, full phone), or `AttendeeFileError` for the first bad one."""
    return [(rec, phone) for _line, rec, phone in _read_rows(Path(path))]


def _read_rows(path: Path) -> list[tuple[int, TicketRecord, str]]:
    """(line where the record starts, ticket, full phone) for every row of the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise AttendeeFileError(f"{path}:{line}: file: not UTF-8 text") from None
    except OSError as exc:
        raise AttendeeFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    # newline="": records are split where CSV says (\n, \r\n, \r outside quotes), never on
    # U+2028, form feed or the other breaks str.splitlines() knows.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise AttendeeFileError(f"{path}:1: header: {exc}") from None
    if not header:
        raise AttendeeFileError(f"{path}:1: header: the file is empty; the first row must name the columns")
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in ALL_COLUMNS]
    if unknown:
        raise AttendeeFileError(f"{path}:1: header: unknown column {unknown[0]!r} (columns: {', '.join(ALL_COLUMNS)})")
    if len(set(header)) != len(header):
        raise AttendeeFileError(f"{path}:1: header: a column appears twice")
    missing = [c for c in REQUIRED if c not in header]
    has_validity = "validity" in header
    if has_validity and any(c in header for c in WINDOW_COLUMNS):
        raise AttendeeFileError(f"{path}:1: header: use validity or valid_from/valid_until, not both")
    if not has_validity:
        missing += [c for c in WINDOW_COLUMNS if c not in header]
    if missing:
        raise AttendeeFileError(f"{path}:1: header: missing column {missing[0]!r}")
    rows: list[tuple[int, TicketRecord, str]] = []
    seen: dict[int, int] = {}
    line = reader.line_num
    try:
        while True:
            line = reader.line_num + 1  # where the next record starts
            cells = next(reader, None)
            if cells is None:
                break
            if not cells:
                continue  # an empty line
            if len(cells) != len(header):
                raise _RowError("row", f"expected {len(header)} cells")
            row = dict(zip(header, cells))
            if not any(v.strip() for v in cells):
                continue  # a blank line
            rec, phone = check_row(row, has_validity)
            if rec.ticket_id in seen:
                raise _RowError("ticket_id", f"{rec.ticket_id} is already on line {seen[rec.ticket_id]}")
            seen[rec.ticket_id] = line
            rows.append((line, rec, phone))
    except _RowError as exc:
        raise AttendeeFileError(f"{path}:{line}: {exc}") from None
    except csv.Error as exc:
        raise AttendeeFileError(f"{path}:{line}: row: {exc}") from None
    return rows


def import_attendees(store, path: str | Path, *, actor: str | None = None) -> int:
    """Read and check the whole file first, then store it in one transaction; returns the count.

    Refused whole when the file's zones together with those already in the
    database are more than a gate's cache holds (64): the error names the
    line that brings in the first zone too many.
    """
    path = Path(path)
    rows = _read_rows(path)
    too_many = zone_too_many(store, [rec for _line, rec, _phone in rows])
    if too_many is not None:
        index, zone, in_db = too_many
        raise AttendeeFileError(
            f"{path}:{rows[index][0]}: zones: {zone!r} would be zone number {MAX_ZONES + 1} "
            f"({in_db} already in the database); a gate holds at most {MAX_ZONES}"
        )
    return store.put_tickets([(rec, phone) for _line, rec, phone in rows], actor=actor)

