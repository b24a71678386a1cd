"""The simulator's demo population: a few hundred attendees of a three-day show.

Deterministic: the same seed and day give the same people, tickets and
phone numbers, so a technician can find "the revoked exhibitor" twice in a
row. Validity windows are placed around the day the simulator starts (local
midnight to midnight), so the population is always "today's show".

Who is in it (the seed's categories and what they are for):

- guests (3-day, 1-day today, 1-day tomorrow: outside_validity today,
  single-entry day tickets: entries_exhausted on the second entry),
- media (press pass, lunch on day 1), staff (crew, backstage zone),
- exhibitors (booth staff, lunch on day 1), VIPs (lounge, lunch, dinner, hotel),
- a few revoked tickets (a refund, a duplicate) and reprinted badges (the
  old badge, serial 0, is superseded by serial 1).

Every attendee can enter hall-a, the zone the simulated lanes serve.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gated.validation import TicketRecord, TicketState

FIRST_TICKET_ID = 100_001
DEFAULT_COUNT = 320
DEFAULT_SEED = 7
DAY_S = 86_400

_CHINESE_SURNAMES = ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun", "Ma", "Zhu", "Hu", "Guo", "He", "Lin", "Gao", "Luo")
_CHINESE_GIVEN = ("Fang", "Wei", "Jie", "Min", "Jing", "Lei", "Yan", "Qiang", "Jun", "Yong", "Xiuying", "Tao", "Ming", "Hui", "Ling", "Na", "Xin", "Hao", "Yu", "Ting")
_WESTERN_FIRST = ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry", "Isabel", "Jonas", "Katrin", "Lucas", "Maria", "Noah", "Olivia", "Paul", "Sophie", "Tom", "Ute", "Victor")
_WESTERN_LAST = ("Smith", "Müller", "Martin", "Rossi", "Dubois", "Schmidt", "Brown", "García", "Johansson", "Novak", "Taylor", "Weber", "Moreau", "Jensen", "Fischer", "Kowalski", "Silva", "Meyer", "Evans", "Bauer")
_COMPANIES = ("Acme Robotics", "Huaxin Tech", "Daily News", "Nordlicht GmbH", "Shenzhen Bright", "Blue Harbor Ltd", "Lumen Systems", "Jinhua Trading", "Riverside Media", "Orbit Labs", "Tianfu Capital", "Atlas Logistics", "Kestrel AG", "Pearl River Foods", "Zenith Audio")
_MEDIA = ("Daily News", "Tech Weekly", "Expo TV", "Global Wire", "City Radio")


@dataclass(frozen=True, slots=True)
class Attendee:
    """A ticket holder: the gate's record plus what only the registry keeps (the full phone)."""

    record: TicketRecord
    phone: str
    note: str = ""  # what is special about this ticket, for the crowd and the console

    @property
    def ticket_id(self) -> int:
        return self.record.ticket_id

    @property
    def label(self) -> str:
        r = self.record
        return f"{r.name} ({r.category} #{r.ticket_id})"


def show_days(today: dt.date | None = None) -> tuple[int, int, int, int]:
    """Unix seconds of local midnight: day 1 (today), day 2, day 3, and the end of day 3."""
    today = today or dt.date.today()
    start = int(dt.datetime.combine(today, dt.time()).astimezone().timestamp())
    return start, start + DAY_S, start + 2 * DAY_S, start + 3 * DAY_S


def _name(rng: random.Random) -> str:
    if rng.random() < 0.55:
        return f"{rng.choice(_CHINESE_SURNAMES)} {rng.choice(_CHINESE_GIVEN)}"
    return f"{rng.choice(_WESTERN_FIRST)} {rng.choice(_WESTERN_LAST)}"


def _phone(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return "+86 1" + "".join(str(rng.randrange(10)) for _ in range(10))
    return "+49 15" + "".join(str(rng.randrange(10)) for _ in range(9))


def population(count: int = DEFAULT_COUNT, *, seed: int = DEFAULT_SEED, today: dt.date | None = None) -> list[Attendee]:
    """`count` attendees (at least 40), ticket ids from FIRST_TICKET_ID, the same for the same arguments."""
    if count < 40:
        raise ValueError(f"the demo population needs at least 40 attendees, got {count}")
    rng = random.Random(seed)
    d1, d2, d3, end = show_days(today)
    whole_show = ((d1, end),)
    people: list[Attendee] = []
    for n in range(count):
        tid = FIRST_TICKET_ID + n
        name, phone = _name(rng), _phone(rng)
        roll = rng.random()
        note = ""
        company = rng.choice(_COMPANIES)
        max_entries = 0
        benefits: tuple[tuple[str, int], ...] = ()
        windows = whole_show
        if roll < 0.58:
            category, zones = "guest", ("hall-a",)
            kind = rng.random()
            if kind < 0.55:
                ticket_type = "3-day"
            elif kind < 0.80:
                ticket_type, windows = "1-day", ((d1, d2),)
            elif kind < 0.90:
                ticket_type, windows, note = "1-day", ((d2, d3),), "day 2 ticket"
            else:
                ticket_type, windows, max_entries, note = "single-entry", ((d1, d2),), 1, "single entry"
        elif roll < 0.68:
            category, ticket_type, zones = "media", "press", ("hall-a", "press")
            company = rng.choice(_MEDIA)
            benefits = (("lunch_day1", 1),)
        elif roll < 0.78:
            category, ticket_type, zones = "staff", "crew", ("hall-a", "backstage")
            company = "Show Organiser"
        elif roll < 0.92:
            category, ticket_type, zones = "exhibitor", "booth", ("hall-a",)
            benefits = (("lunch_day1", 1),)
        else:
            category, ticket_type, zones = "vip", "all-access", ("hall-a", "vip-lounge")
            benefits = (("lunch_day1", 1), ("dinner", 1), ("hotel", 2))
        state, badge_serial = TicketState.ACTIVE, 0
        if n % 37 == 11:
            state, note = TicketState.REVOKED, "revoked"
        elif n % 29 == 5:
            badge_serial, note = 1, "badge reprinted"
        record = TicketRecord(
            ticket_id=tid, category=category, ticket_type=ticket_type, zones=zones, windows=windows,
            max_entries=max_entries, badge_serial=badge_serial, state=state, benefits=benefits,
            name=name, company=company, phone_last4=phone[-4:],
        )
        people.append(Attendee(record, phone, note))
    return people


def records(people: Iterable[Attendee]) -> list[TicketRecord]:
    return [p.record for p in people]


# The reference registry's import format (see gated/registry/importer.py).
CSV_COLUMNS = ("ticket_id", "name", "company", "category", "ticket_type", "zones", "max_entries", "benefits", "phone",
               "valid_from", "valid_until")


def _iso(unix: int) -> str:
    return dt.datetime.fromtimestamp(unix).astimezone().isoformat(timespec="seconds")


def csv_row(person: Attendee) -> dict[str, str]:
    r = person.record
    (valid_from, valid_until), = r.windows or ((None, None),)
    return {
        "ticket_id": str(r.ticket_id), "name": r.name, "company": r.company, "category": r.category,
        "ticket_type": r.ticket_type, "zones": ";".join(r.zones), "max_entries": str(r.max_entries),
        "benefits": ";".join(f"{name}={count}" for name, count in r.benefits), "phone": person.phone,
        "valid_from": "" if valid_from is None else _iso(valid_from),
        "valid_until": "" if valid_until is None else _iso(valid_until),
    }


def write_csv(path: str | Path, people: Iterable[Attendee]) -> Path:
    """The attendee list as the registry imports it (state and badge serials are not import columns)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, CSV_COLUMNS)
        writer.writeheader()
        for person in people:
            writer.writerow(csv_row(person))
    return path
