"""The entitlement cache: what the gate knows about every ticket, in memory.

Owns the per-ticket record of architecture.md, its compact storage, the
versioned snapshot/delta protocol, and the local usage counters (entries,
inside/outside per zone, benefit redemptions).

Storage. A venue may hold 1,000,000 tickets on a controller with 1 GB of RAM,
so nothing here is an object per ticket. A ticket is a row across typed
`array` columns; what many tickets share (category, ticket type, zones,
validity windows, max entries, benefit names) is interned once as a
`Profile`; names and companies live in one UTF-8 blob. Tickets are found
through an open-addressed table of 4-byte row numbers keyed by the ticket-id
column (linear probing, load factor at most 0.8). The id is mixed before it
picks its home slot (a Fibonacci multiply, then the top bits scaled to the
table's size), so consecutive ids, registration numbers, ids in blocks per
day or type and random 63-bit ids all spread evenly, and an absent id stops
after a few probes; the table has an empty slot past its end instead of
wrapping around. A ticket costs about 45 bytes plus its display text.

Versioning. `load_snapshot` replaces everything at once: it builds a new
table and swaps it in only when the whole snapshot has been checked. A
`Delta` names the version it builds on; it is checked completely before any
of it is applied, so a delta on the wrong version, or one with any bad
operation, is refused whole (`DeltaRefused`) and the cache is unchanged.
Deltas carry absolute values (entries used, inside zones, benefits left), so
applying the registry's view of a ticket is idempotent.

Zones are numbered as they first appear (at most 64): `inside` is a bitmask.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from array import array
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np

from gated.errors import DeltaRefused, SnapshotError

MAX_ZONES = 64
MAX_TICKET_ID = 2**64 - 1
NO_PHONE = 0xFFFF
_MAX_LOAD = 0.8
_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: spreads consecutive and blocked ids alike
_MASK64 = (1 << 64) - 1
IN_PLACE_MAX_OPS = 256  # a delta this small is applied on the deciding thread (about 2 ms at most)
_OPS_PER_PAUSE = 32  # delta operations a staging thread applies between two pauses
_COPY_CHUNK_BYTES = 1 << 18  # bytes of a column a staging thread copies between two pauses (a few dozen µs)
_SLICE_ROWS = 16384  # rows per slice where bulk checks make temporaries of other sizes
_SNAPSHOT_MAGIC = b"GTSNAP\x00\x02"
#: Format 1 (state 0 active, 1 revoked), still read: gates saved caches in it.
_SNAPSHOT_MAGIC_V1 = b"GTSNAP\x00\x01"
#: Format 2 writes a ticket's state as the wire's TicketState (1 active, 2 revoked); in memory it is
#: TicketState (0, 1). Any other byte reads as 0xFF, which the row check refuses.
_STATE_TO_SNAPSHOT = bytes([1, 2] + [0xFF] * 254)
_STATE_FROM_SNAPSHOT = bytes([0xFF, 0, 1] + [0xFF] * 253)
_BIG_ENDIAN_HOST = sys.byteorder == "big"


class TicketState(IntEnum):
    ACTIVE = 0
    REVOKED = 1


@dataclass(frozen=True, slots=True)
class TicketRecord:
    """One ticket as the registry describes it (and as `get()` reads it back).

    `windows` are (from, until) unix seconds, until exclusive; empty means
    valid at any time. `max_entries` 0 means unlimited. `benefits` is
    (name, remaining) pairs. `name`, `company` and `phone_last4` are shown on
    the attended handheld only.
    """

    ticket_id: int
    category: str
    ticket_type: str = ""
    zones: tuple[str, ...] = ()
    windows: tuple[tuple[int, int], ...] = ()
    max_entries: int = 0
    entries_used: int = 0
    badge_serial: int = 0
    state: TicketState = TicketState.ACTIVE
    inside: tuple[str, ...] = ()
    benefits: tuple[tuple[str, int], ...] = ()
    name: str = ""
    company: str = ""
    phone_last4: str = ""


class Profile(NamedTuple):
    """What many tickets share; interned once per distinct combination."""

    category: str
    ticket_type: str
    zones: tuple[str, ...]
    windows: tuple[tuple[int, int], ...]
    max_entries: int
    benefit_names: tuple[str, ...]


# ---- delta operations (absolute values: idempotent) ----


@dataclass(frozen=True, slots=True)
class Upsert:
    record: TicketRecord


@dataclass(frozen=True, slots=True)
class SetState:
    ticket_id: int
    state: TicketState


@dataclass(frozen=True, slots=True)
class Reissue:
    """A badge reprint: only `badge_serial` is current from now on."""

    ticket_id: int
    badge_serial: int


@dataclass(frozen=True, slots=True)
class SetUsage:
    """The registry's view of a ticket's entries and whereabouts (other gates' usage)."""

    ticket_id: int
    entries_used: int
    inside: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetBenefit:
    ticket_id: int
    name: str
    remaining: int


@dataclass(frozen=True, slots=True)
class SetZone:
    """Declare a zone and its capacity (0 = unlimited)."""

    name: str
    capacity: int


Op = Upsert | SetState | Reissue | SetUsage | SetBenefit | SetZone
#: Ops that set a ticket's usage to an absolute value: applied twice, the same (`EntitlementCache.apply_in_steps`).
_ABSOLUTE_USAGE_OPS = (SetUsage, SetBenefit)


@dataclass(frozen=True, slots=True)
class Delta:
    base_version: int
    version: int
    ops: tuple[Op, ...] = field(default_factory=tuple)


def _capacity_for(rows: int) -> int:
    return int(rows / 0.67) + 16


def _home_slots(tid: np.ndarray, size: int) -> np.ndarray:
    """`(tid * _MIX mod 2^64) * size >> 64` for every id, as `_Table.row_of` computes it.

    The 128-bit product is taken in two 32-bit halves (size < 2^32), in
    place: one new array of the ids' size, and one more for a moment."""
    h = np.multiply(tid, np.uint64(_MIX))  # wraps mod 2^64
    s = np.uint64(size)
    low = np.bitwise_and(h, np.uint64(0xFFFFFFFF))
    low *= s
    low >>= np.uint64(32)
    h >>= np.uint64(32)
    h *= s
    h += low
    del low
    h >>= np.uint64(32)
    return h


def _build_slots(tid_column: array, size: int) -> array:
    """The slot table for `tid_column` at `size` home slots, built in bulk.

    Rows sorted by home slot are placed in that order: each at its home or
    just after the one before, whichever is later. That is a valid
    linear-probing table (every slot from a row's home to its place is
    taken), and the whole build is a few array operations instead of a
    Python loop per ticket. Raises ValueError on a duplicate ticket id.

    Memory: the temporaries are whole 8-byte-per-row arrays, which the C
    allocator maps and unmaps, or small slices; arrays of other sizes freed
    in between would stay resident in its heap."""
    if not 0 < size < 2**32 - 1:
        raise ValueError(f"index size {size} out of range")
    n = len(tid_column)
    slots = array("I", [0]) * (size + 1)
    if not n:
        return slots
    tid = np.frombuffer(tid_column, dtype=np.uint64)
    try:
        ordered = np.sort(tid)
        for start in range(1, n, _SLICE_ROWS):
            here = ordered[start : start + _SLICE_ROWS]
            same = np.flatnonzero(here == ordered[start - 1 : start - 1 + len(here)])
            if len(same):
                raise ValueError(f"ticket {int(ordered[start + same[0]])} appears twice")
        del ordered
        home = _home_slots(tid, size)
    finally:
        del tid  # the column may grow again
    order = np.argsort(home)
    place = home.view(np.int64)[order]  # homes in sorted order; then place[i] = max(home, place[i-1] + 1)
    del home
    k = np.arange(n, dtype=np.int64)
    place -= k
    np.maximum.accumulate(place, out=place)
    place += k
    del k
    end = int(place[-1]) + 2  # an empty slot past the last one taken
    if end > len(slots):
        slots.extend(array("I", [0]) * (end - len(slots)))
    order += 1  # slots hold row + 1; 0 is empty
    table = np.frombuffer(slots, dtype=np.uint32)
    try:
        for start in range(0, n, _SLICE_ROWS):
            table[place[start : start + _SLICE_ROWS]] = order[start : start + _SLICE_ROWS]
    finally:
        del table
    return slots


def _check_record(rec: object, where: str, *, shared_checked: bool = False) -> None:
    """Refuse anything a record must not hold; messages name the ticket.

    `shared_checked`: the fields a `Profile` holds were already checked for
    an identical profile, so only the ticket's own fields are.
    """
    if not isinstance(rec, TicketRecord):
        raise ValueError(f"{where}: expected a TicketRecord")
    tid = rec.ticket_id
    if not isinstance(tid, int) or not 0 <= tid <= MAX_TICKET_ID:
        raise ValueError(f"{where}: ticket id must be 0..2^64-1")
    t = f"{where}: ticket {tid}"
    if not shared_checked:
        _check_shared(rec, t)
    for zone in rec.inside:
        if not isinstance(zone, str) or not zone:
            raise ValueError(f"{t}: zone names must be non-empty strings")
    if not isinstance(rec.entries_used, int) or not 0 <= rec.entries_used <= 0xFFFFFFFF:
        raise ValueError(f"{t}: entries_used must be 0..2^32-1")
    if not isinstance(rec.badge_serial, int) or not 0 <= rec.badge_serial <= 0xFFFF:
        raise ValueError(f"{t}: badge_serial must be 0..65535")
    if rec.state not in (TicketState.ACTIVE, TicketState.REVOKED):
        raise ValueError(f"{t}: state must be active or revoked")
    for _, remaining in rec.benefits:
        if not isinstance(remaining, int) or not 0 <= remaining <= 0xFFFF:
            raise ValueError(f"{t}: a benefit's remaining count must be 0..65535")
    if not isinstance(rec.name, str) or not isinstance(rec.company, str):
        raise ValueError(f"{t}: name and company must be strings")
    if len(rec.name) + len(rec.company) > 0x3FF0 and len(rec.name.encode("utf-8", "surrogatepass")) + len(rec.company.encode("utf-8", "surrogatepass")) > 0xFFF0:
        raise ValueError(f"{t}: name and company are too long")
    if rec.phone_last4 and not (len(rec.phone_last4) == 4 and rec.phone_last4.isascii() and rec.phone_last4.isdigit()):
        raise ValueError(f"{t}: phone_last4 must be 4 digits or empty")


def _check_shared(rec: TicketRecord, t: str) -> None:
    """The fields a `Profile` holds (many tickets share them)."""
    if not isinstance(rec.category, str) or not rec.category:
        raise ValueError(f"{t}: category must be a non-empty string")
    if not isinstance(rec.ticket_type, str):
        raise ValueError(f"{t}: ticket_type must be a string")
    for zone in rec.zones:
        if not isinstance(zone, str) or not zone:
            raise ValueError(f"{t}: zone names must be non-empty strings")
    for window in rec.windows:
        if (
            not isinstance(window, tuple)
            or len(window) != 2
            or not all(isinstance(x, int) for x in window)
            or window[0] >= window[1]
        ):
            raise ValueError(f"{t}: each validity window must be (from, until) with from < until")
    if not isinstance(rec.max_entries, int) or not 0 <= rec.max_entries <= 0xFFFFFFFF:
        raise ValueError(f"{t}: max_entries must be 0..2^32-1")
    names = [b[0] if isinstance(b, tuple) and len(b) == 2 else None for b in rec.benefits]
    if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{t}: benefits must be distinct (name, remaining) pairs")


class _Table:
    """The columns, the profile table and the index. Replaced whole by snapshots."""

    def __init__(self, capacity: int = 0):
        self.tid = array("Q")
        self.profile = array("I")
        self.used = array("I")
        self.serial = array("H")
        self.state = array("B")
        self.inside = array("Q")
        self.phone = array("H")
        self.text_off = array("I")
        self.text_len = array("H")
        self.ben_off = array("I")
        self.ben = array("H")
        self.text = bytearray()
        self.profiles: list[Profile] = []
        self.profile_ids: dict[Profile, int] = {}
        self.zone_bit: dict[str, int] = {}
        self.zone_names: list[str] = []
        self.capacity: dict[str, int] = {}
        self.occupancy: list[int] = []
        self.slots_size = capacity or _capacity_for(0)
        self.slots = array("I", bytes(4 * (self.slots_size + 1)))

    # -- index --
    def row_of(self, ticket_id: int) -> int:
        # The hot path of decide(): three bigint ops to the home slot, then probe.
        slots = self.slots
        tid = self.tid
        i = (ticket_id * _MIX & _MASK64) * self.slots_size >> 64
        r = slots[i]
        while r:
            if tid[r - 1] == ticket_id:
                return r - 1
            i += 1
            r = slots[i]
        return -1

    def probe_length(self, ticket_id: int) -> int:
        """Slots `row_of` reads for `ticket_id` (tests and the bench look at the index's shape)."""
        i = (ticket_id * _MIX & _MASK64) * self.slots_size >> 64
        n = 1
        while self.slots[i] and self.tid[self.slots[i] - 1] != ticket_id:
            i += 1
            n += 1
        return n

    def _index_insert(self, ticket_id: int, row: int) -> None:
        slots = self.slots
        i = (ticket_id * _MIX & _MASK64) * self.slots_size >> 64
        while slots[i]:
            i += 1
        slots[i] = row + 1
        if i == len(slots) - 1:  # keep an empty slot at the end: probes stop there
            slots.append(0)

    def rebuild_index(self, capacity: int) -> None:
        """Rebuild the slot table; raises ValueError on a duplicate ticket id."""
        self.slots = _build_slots(self.tid, capacity)
        self.slots_size = capacity

    def has_room_for(self, new_rows: int) -> bool:
        return len(self.tid) + new_rows <= self.slots_size * _MAX_LOAD

    def copy(self, pause: Callable[[], object]) -> _Table:
        """A private copy, safe to take from another thread while this one is in use.

        Deltas are the only writers of everything but the usage columns, and
        none runs meanwhile. Usage (used, inside, ben) may change under the
        copy: those tickets are noted by the cache and carried over at the
        swap, so occupancy is counted from the copied masks themselves, and a
        zone added meanwhile is left out here."""
        new = _Table.__new__(_Table)
        new.zone_names = list(self.zone_names)
        new.zone_bit = {name: bit for bit, name in enumerate(new.zone_names)}
        new.capacity = dict(self.capacity)
        new.profiles = list(self.profiles)
        new.profile_ids = dict(self.profile_ids)
        new.slots_size = self.slots_size
        for name in (*_COLUMNS, "ben", "slots"):
            setattr(new, name, _copy_column(getattr(self, name), pause))
        text = memoryview(self.text)
        new.text = bytearray()
        try:
            for start in range(0, len(text), _COPY_CHUNK_BYTES):
                new.text += text[start : start + _COPY_CHUNK_BYTES]  # one memory copy, no slice made
                pause()
        finally:
            text.release()  # the live text may grow again
        inside = _column(new.inside, np.uint64)
        zones = len(new.zone_names)
        if zones < 64:
            for row in np.flatnonzero(inside >> np.uint64(zones)).tolist():
                new.inside[row] &= (1 << zones) - 1
                inside[row] &= np.uint64((1 << zones) - 1)
        new.occupancy = _count_inside(inside, zones)
        return new

    # -- zones and profiles --
    def zone_index(self, name: str) -> int:
        bit = self.zone_bit.get(name)
        if bit is None:
            if len(self.zone_names) >= MAX_ZONES:
                raise ValueError(f"more than {MAX_ZONES} zones (adding {name!r})")
            bit = self.zone_bit[name] = len(self.zone_names)
            self.zone_names.append(name)
            self.occupancy.append(0)
        return bit

    def mask_of(self, zones: Iterable[str]) -> int:
        mask = 0
        for z in zones:
            mask |= 1 << self.zone_index(z)
        return mask

    def zones_of(self, mask: int) -> tuple[str, ...]:
        return tuple(name for bit, name in enumerate(self.zone_names) if mask >> bit & 1)

    def intern(self, rec: TicketRecord) -> int:
        prof = Profile(
            rec.category,
            rec.ticket_type,
            tuple(sorted(set(rec.zones))),
            tuple(sorted(rec.windows)),
            rec.max_entries,
            tuple(name for name, _ in rec.benefits),
        )
        return self.intern_profile(prof)

    def intern_profile(self, prof: Profile) -> int:
        idx = self.profile_ids.get(prof)
        if idx is None:
            for z in prof.zones:
                self.zone_index(z)
            idx = self.profile_ids[prof] = len(self.profiles)
            self.profiles.append(prof)
        return idx

    # -- rows --
    def _set_text(self, row: int, name: str, company: str) -> None:
        blob = (name + "\x1f" + company).encode("utf-8", "surrogatepass") if (name or company) else b""
        off, n = self.text_off[row], self.text_len[row]
        if len(blob) <= n:  # fits where the old text was: reuse the space
            self.text[off : off + len(blob)] = blob
        else:
            self.text_off[row] = len(self.text)
            self.text += blob
        self.text_len[row] = len(blob)

    def write_row(self, row: int, rec: TicketRecord) -> None:
        """Overwrite `row` with `rec` (occupancy kept in step)."""
        old_profile = self.profiles[self.profile[row]]
        prof_idx = self.intern(rec)
        self.profile[row] = prof_idx
        self.used[row] = rec.entries_used
        self.serial[row] = rec.badge_serial
        self.state[row] = int(rec.state)
        self.set_inside(row, self.mask_of(rec.inside))
        self.phone[row] = int(rec.phone_last4) if rec.phone_last4 else NO_PHONE
        self._set_text(row, rec.name, rec.company)
        counts = [remaining for _, remaining in rec.benefits]
        if len(counts) != len(old_profile.benefit_names) or not counts:
            self.ben_off[row] = len(self.ben)
            self.ben.extend(counts)
        else:
            off = self.ben_off[row]
            self.ben[off : off + len(counts)] = array("H", counts)

    def append_row(self, rec: TicketRecord) -> int:
        row = len(self.tid)
        if (row + 1) > self.slots_size * _MAX_LOAD:
            self.rebuild_index(_capacity_for(2 * (row + 1)))
        self.tid.append(rec.ticket_id)
        for col in (self.profile, self.used, self.inside, self.text_off, self.ben_off):
            col.append(0)
        for col in (self.serial, self.text_len):
            col.append(0)
        self.state.append(0)
        self.phone.append(NO_PHONE)
        self.profile[row] = self.intern(rec)
        self.ben_off[row] = len(self.ben)
        self.ben.extend(remaining for _, remaining in rec.benefits)
        self.write_row(row, rec)
        self._index_insert(rec.ticket_id, row)
        return row

    def set_inside(self, row: int, mask: int) -> None:
        old = self.inside[row]
        if old == mask:
            return
        changed = old ^ mask
        bit = 0
        while changed:
            if changed & 1:
                self.occupancy[bit] += 1 if mask >> bit & 1 else -1
            changed >>= 1
            bit += 1
        self.inside[row] = mask

    def record(self, row: int) -> TicketRecord:
        prof = self.profiles[self.profile[row]]
        off = self.ben_off[row]
        benefits = tuple(zip(prof.benefit_names, self.ben[off : off + len(prof.benefit_names)]))
        name, company = self.display_text(row)
        phone = self.phone[row]
        return TicketRecord(
            ticket_id=self.tid[row],
            category=prof.category,
            ticket_type=prof.ticket_type,
            zones=prof.zones,
            windows=prof.windows,
            max_entries=prof.max_entries,
            entries_used=self.used[row],
            badge_serial=self.serial[row],
            state=TicketState(self.state[row]),
            inside=self.zones_of(self.inside[row]),
            benefits=benefits,
            name=name,
            company=company,
            phone_last4="" if phone == NO_PHONE else f"{phone:04d}",
        )

    def display_text(self, row: int) -> tuple[str, str]:
        off, n = self.text_off[row], self.text_len[row]
        if not n:
            return "", ""
        name, _, company = bytes(self.text[off : off + n]).decode("utf-8", "replace").partition("\x1f")
        return name, company


class EntitlementCache:
    """Versioned, compact store of every ticket's entitlements.

    Read-mostly: `decide()` calls `row_of` and reads columns through
    `table`; writers (snapshots, deltas, local commits) run on the same
    thread as `decide()` in the daemon, so no locking is needed there.
    """

    def __init__(self) -> None:
        self.version = 0
        self.table = _Table()
        self._staging: Staging | None = None
        self._touched: set[int] | None = None  # tickets used here while a staging is out
        self._copies: list[CacheCopy] = []  # copies being taken for a save: they note changed tickets too

    def _note(self, ticket_id: int) -> None:
        """A ticket's row is about to change while a staging or a save copy is out."""
        if self._touched is not None:
            self._touched.add(ticket_id)
        for copy in self._copies:
            copy.touched.add(ticket_id)

    def __len__(self) -> int:
        return len(self.table.tid)

    def __repr__(self) -> str:
        return f"EntitlementCache(version={self.version}, tickets={len(self)}, zones={len(self.table.zone_names)})"

    # ---- reading ----

    def row_of(self, ticket_id: int) -> int:
        return self.table.row_of(ticket_id)

    def get(self, ticket_id: int) -> TicketRecord | None:
        row = self.table.row_of(ticket_id)
        return None if row < 0 else self.table.record(row)

    def usage_of(self, ticket_id: int) -> tuple[int, tuple[str, ...]] | None:
        """(entries_used, inside) of a ticket, None if unknown: `get`'s usage without making its
        whole record (a fifth of the time; counting a backlog's usage again reads it per record)."""
        table = self.table
        row = table.row_of(ticket_id)
        return None if row < 0 else (table.used[row], table.zones_of(table.inside[row]))

    def benefit_remaining(self, ticket_id: int, benefit: str) -> int | None:
        """What is left of one benefit of a ticket; None if the ticket or the benefit is unknown."""
        table = self.table
        row = table.row_of(ticket_id)
        if row < 0:
            return None
        names = table.profiles[table.profile[row]].benefit_names
        if benefit not in names:
            return None
        return table.ben[table.ben_off[row] + names.index(benefit)]

    def records(self) -> Iterable[TicketRecord]:
        table = self.table
        return (table.record(row) for row in range(len(table.tid)))

    def zone_capacity(self, zone: str) -> int:
        return self.table.capacity.get(zone, 0)

    def occupancy(self, zone: str) -> int:
        bit = self.table.zone_bit.get(zone)
        return 0 if bit is None else self.table.occupancy[bit]

    def find_by_phone(self, last4: str, limit: int = 20) -> list[TicketRecord]:
        """The attended fallback: tickets whose phone number ends in `last4`."""
        if not (len(last4) == 4 and last4.isascii() and last4.isdigit()):
            return []
        table = self.table
        needle = array("H", [int(last4)]).tobytes()
        raw = table.phone.tobytes()
        found: list[TicketRecord] = []
        pos = raw.find(needle)
        while pos >= 0 and len(found) < limit:
            if pos % 2 == 0:
                found.append(table.record(pos // 2))
            pos = raw.find(needle, pos + 1)
        return found

    # ---- local usage (this gate's own admissions) ----

    def count_entry(self, row: int, zone: str) -> None:
        table = self.table
        if self._touched is not None or self._copies:
            self._note(table.tid[row])
        table.used[row] = min(table.used[row] + 1, 0xFFFFFFFF)
        table.set_inside(row, table.inside[row] | 1 << table.zone_index(zone))

    def count_exit(self, row: int, zone: str) -> None:
        table = self.table
        if self._touched is not None or self._copies:
            self._note(table.tid[row])
        bit = table.zone_bit.get(zone)
        if bit is not None:
            table.set_inside(row, table.inside[row] & ~(1 << bit))

    def redeem(self, row: int, benefit: str) -> int | None:
        """Take one of `benefit`; the count left, or None if there was none to take."""
        table = self.table
        names = table.profiles[table.profile[row]].benefit_names
        if benefit not in names:
            return None
        i = table.ben_off[row] + names.index(benefit)
        if table.ben[i] == 0:
            return None
        if self._touched is not None or self._copies:
            self._note(table.tid[row])
        table.ben[i] -= 1
        return table.ben[i]

    def restore_usage(self, ticket_id: int, entries_used: int, inside: Iterable[str], benefit: str | None = None, benefit_remaining: int | None = None) -> bool:
        """Set a ticket's usage to values this gate journaled (replay after a reboot).

        False (nothing changed) if the ticket or the benefit is unknown.
        """
        table = self.table
        row = table.row_of(ticket_id)
        if row < 0 or not 0 <= entries_used <= 0xFFFFFFFF:
            return False
        if self._touched is not None or self._copies:
            self._note(ticket_id)
        if benefit is not None:
            names = table.profiles[table.profile[row]].benefit_names
            if benefit not in names or benefit_remaining is None or not 0 <= benefit_remaining <= 0xFFFF:
                return False
            table.ben[table.ben_off[row] + names.index(benefit)] = benefit_remaining
            return True
        if len(set(inside) - set(table.zone_names)) + len(table.zone_names) > MAX_ZONES:
            return False
        table.used[row] = entries_used
        table.set_inside(row, table.mask_of(inside))
        return True

    # ---- snapshots ----

    def load_snapshot(self, data: bytes | bytearray | memoryview) -> None:
        """Replace everything with a snapshot from `encode_snapshot`; all or nothing."""
        version, table = _decode_snapshot(data)
        self.table, self.version = table, version

    def to_snapshot(self) -> bytes:
        """The current state, usage included, as a snapshot (for persistence)."""
        return _encode_table(self.version, self.table)

    def begin_copy(self) -> CacheCopy:
        """Start a copy of the cache for saving, without holding the deciding thread.

        On the deciding thread, cheap. Then `CacheCopy.build()` (pure CPU: a
        worker thread) copies the table while decisions, local usage and
        small deltas go on; every ticket they change is noted, and
        `finish_copy()` (deciding thread again, cheap) writes those tickets
        into the copy as they are then. `CacheCopy.snapshot()` (a worker
        again) encodes it."""
        copy = CacheCopy(self.table, len(self.table.tid))
        self._copies.append(copy)
        return copy

    def finish_copy(self, copy: CacheCopy) -> bool:
        """Bring a built copy up to the live cache; False (give it up, save
        later) if the table was replaced meanwhile (a snapshot or a staged
        delta) or grew (a small delta of new tickets: rows and index would
        not match)."""
        if copy in self._copies:
            self._copies.remove(copy)
        live, fresh = self.table, copy.table
        rows = copy.rows
        if (live is not copy.source or fresh is None or len(live.tid) != rows
                or any(len(getattr(fresh, name)) != rows for name in _COLUMNS)):
            copy.table = None
            return False
        # Zones and profiles are only ever appended: bring the copy's lists up to
        # the live ones first, so every row written below finds its own.
        for zone in live.zone_names[len(fresh.zone_names):]:
            fresh.zone_index(zone)
        for prof in live.profiles[len(fresh.profiles):]:
            fresh.profile_ids[prof] = len(fresh.profiles)
            fresh.profiles.append(prof)
        for ticket_id in copy.touched:
            live_row = live.row_of(ticket_id)
            if live_row < 0:
                continue
            fresh.write_row(fresh.row_of(ticket_id), live.record(live_row))
        fresh.capacity = dict(live.capacity)
        copy.version = self.version
        return True

    # ---- deltas ----

    def fits_in_place(self, delta: Delta) -> bool:
        """Small enough to apply on the deciding thread (`apply`) within a couple of ms:
        at most `IN_PLACE_MAX_OPS` operations and no growth of the index.
        Anything bigger goes through `stage` and `swap`."""
        ops = delta.ops
        if len(ops) > IN_PLACE_MAX_OPS:
            return False
        return self.table.has_room_for(sum(1 for op in ops if isinstance(op, Upsert)))

    def apply(self, delta: Delta) -> None:
        """Apply a delta on top of the version it names, whole or not at all."""
        self._check_whole(delta)
        self._apply_noted(self.table, delta.ops)
        self.version = delta.version

    def _check_whole(self, delta: Delta) -> None:
        """`DeltaRefused` unless `delta` follows this version and every op of it applies in full."""
        self._check_header(delta)
        try:
            _check_delta(self.table, delta.ops)
        except ValueError as exc:
            raise DeltaRefused(f"delta {delta.base_version}->{delta.version} refused: {exc}") from None

    def _apply_noted(self, table: _Table, ops: tuple) -> None:
        """`_apply_ops`, each ticket it changes noted first for the save copies under way."""
        if self._copies:
            for op in ops:
                if not isinstance(op, SetZone):
                    self._note(op.record.ticket_id if isinstance(op, Upsert) else op.ticket_id)
        _apply_ops(table, ops)

    def apply_in_steps(self, delta: Delta, ops_per_step: int = IN_PLACE_MAX_OPS) -> Iterator[int] | None:
        """A large delta of usage only (`SetUsage`, `SetBenefit`), applied in place
        `ops_per_step` operations at a time: an iterator whose every step applies the next ops,
        yielding how many are applied so far between two steps. None for any other delta (it
        goes through `stage` and `swap`). Checked whole first (`DeltaRefused`, nothing
        applied); the version moves with the last step. The caller lets the lanes decide
        between two steps (a step is about 0.5 ms).

        Why: a backlog's replay sends the gate its own passages back, as usage deltas of about
        900 operations (a 2,000-record batch's). Staged, each copied the whole table: 28-80 ms
        at 1,000,000 tickets, in place 2 ms. Why it is safe: each op sets a ticket's count to
        the absolute value the registry holds, as a small delta applied between two decisions
        does; a step refuses to go on once the cache has moved to another table or version
        (`DeltaRefused`); and a delta cut off between steps leaves the version where it was,
        so the registry's next deltas start from there again and its ops, applied twice, leave
        what once does."""
        ops = delta.ops
        if not ops or not all(type(op) in _ABSOLUTE_USAGE_OPS for op in ops):
            return None
        self._check_whole(delta)
        return self._steps(delta, self.table, max(1, ops_per_step))

    def _steps(self, delta: Delta, table: _Table, ops_per_step: int) -> Iterator[int]:
        ops = delta.ops
        for start in range(0, len(ops), ops_per_step):
            if self.table is not table or self.version != delta.base_version:
                raise DeltaRefused(f"delta {delta.base_version}->{delta.version} refused: the cache moved to "
                                   f"version {self.version} while it was applied in steps")
            step = ops[start:start + ops_per_step]
            self._apply_noted(table, step)
            if start + ops_per_step >= len(ops):
                self.version = delta.version
                return
            yield start + len(step)

    def stage(self, delta: Delta) -> Staging:
        """Start applying a large delta beside the live table; on the deciding thread, cheap.

        Then `Staging.build()` (pure CPU: call it from a worker thread) copies
        the table and applies the delta to the copy, and `swap()` (on the
        deciding thread again) puts the copy in place. Until then, local usage
        committed here is noted per ticket and carried over at the swap. One
        staging at a time: a newer one supersedes an older one."""
        self._check_header(delta)
        staging = Staging(delta, self.table)
        self._staging, self._touched = staging, set()
        return staging

    def stage_bulk(self, base_version: int, version: int, upserts: bytes) -> Staging:
        """`stage` for the bulk case: a delta of upserts only, each ticket once,
        given as the columns `encode_snapshot(0, records)` makes of its records
        (a builder process makes them from the wire). `Staging.build()` then
        merges those columns into the copy in whole-array steps, not a ticket at
        a time; `swap` and `discard` as for `stage`."""
        self._check_header(Delta(base_version, version))
        staging = Staging(Delta(base_version, version), self.table, upserts=upserts)
        self._staging, self._touched = staging, set()
        return staging

    def swap(self, staging: Staging) -> None:
        """Put a built staging in place, whole, as if its delta were applied now.

        The tickets this gate used meanwhile are taken from the live table
        as they are now (their usage included), then the delta's own
        operations on them are applied again: what the delta sets wins, the
        rest of the local usage survives. Refused (`DeltaRefused`, cache
        unchanged) if the cache moved to another version or table meanwhile."""
        if staging is not self._staging or staging.table is None:
            raise DeltaRefused("delta refused: its staging is not the current one, or was not built")
        touched = self._touched or set()
        self._staging = self._touched = None
        delta, fresh, live = staging.delta, staging.table, self.table
        staging.table = None  # one swap per build
        if live is not staging.source or self.version != delta.base_version:
            raise DeltaRefused(f"delta {delta.base_version}->{delta.version} refused: the cache moved to version {self.version} while it was prepared")
        try:
            for ticket_id in touched:
                live_row, row = live.row_of(ticket_id), fresh.row_of(ticket_id)
                if live_row >= 0 and row >= 0:
                    fresh.write_row(row, live.record(live_row))  # as the delta found it at the swap
                    _apply_ops(fresh, staging.ops_of(ticket_id))
        except ValueError as exc:  # the usage names more zones than fit beside the delta's
            raise DeltaRefused(f"delta {delta.base_version}->{delta.version} refused: {exc}") from None
        self.table, self.version = fresh, delta.version

    def discard(self, staging: Staging) -> None:
        """Stop noting usage for `staging` (it failed or was abandoned); safe to repeat."""
        if staging is self._staging:
            self._staging = self._touched = None
        staging.table = None

    def _check_delta(self, ops: tuple) -> None:
        """ValueError for the first op that could not be applied in full (the registry's mirror asks)."""
        _check_delta(self.table, ops)

    def check(self, ops: tuple[Op, ...]) -> CheckedOps:
        """Check `ops` against the cache as it is now, once: ValueError for the first op that
        could not be applied in full, else the token `apply_checked` takes (the registry's
        mirror checks before the store commits, then applies without checking again).

        Upserts only, each ticket once (an import, an API batch): the records are packed into
        columns as they are checked, and `apply_checked` merges them in whole-array steps."""
        ops = tuple(ops)
        table = self.table
        if ops and all(type(op) is Upsert for op in ops) and len({op.record.ticket_id for op in ops}) == len(ops):
            bulk = _pack_records((op.record for op in ops), "op")
            zones = set(table.zone_names).union(bulk.zone_names)
            if len(zones) > MAX_ZONES:
                raise ValueError(f"more than {MAX_ZONES} zones")
            if len(table.text) + len(bulk.text) > 0xFFFFFFFF or len(table.ben) + len(bulk.ben) > 0xFFFFFFFF:
                raise ValueError("the cache's text or benefit area would pass 4 GiB")
            return CheckedOps(ops, table, self.version, bulk)
        _check_delta(table, ops)
        return CheckedOps(ops, table, self.version, None)

    def apply_checked(self, delta: Delta, checked: CheckedOps) -> None:
        """`apply` for a delta whose operations `check` passed on this cache as it is: not
        checked again. Refused (`DeltaRefused`, cache unchanged) when the header does not
        follow, the ops are not the ones checked, or the cache changed since the check."""
        self._check_header(delta)
        if checked.table is not self.table or checked.version != self.version or (
                checked.ops is not delta.ops and checked.ops != delta.ops):
            raise DeltaRefused(f"delta {delta.base_version}->{delta.version} refused: not the operations checked on this cache")
        if self._copies:
            for op in delta.ops:
                if not isinstance(op, SetZone):
                    self._note(op.record.ticket_id if isinstance(op, Upsert) else op.ticket_id)
        if checked.bulk is not None:
            _merge_upserts(self.table, checked.bulk)  # checked above: cannot fail half-way
        else:
            _apply_ops(self.table, delta.ops)
        checked.table = None  # a token applies once
        self.version = delta.version

    def _check_header(self, delta: Delta) -> None:
        if not isinstance(delta, Delta):
            raise DeltaRefused("not a Delta")
        if delta.base_version != self.version:
            raise DeltaRefused(f"delta builds on version {delta.base_version}, cache is at {self.version}")
        if not isinstance(delta.version, int) or delta.version <= delta.base_version:
            raise DeltaRefused(f"delta version {delta.version} does not follow {delta.base_version}")


class CheckedOps:
    """Operations `EntitlementCache.check` passed, for `apply_checked` on the same cache."""

    __slots__ = ("ops", "table", "version", "bulk")

    def __init__(self, ops: tuple, table: _Table, version: int, bulk: _Table | None) -> None:
        self.ops, self.table, self.version, self.bulk = ops, table, version, bulk


class CacheCopy:
    """A copy of the cache's table taken for a save (`EntitlementCache.begin_copy`)."""

    def __init__(self, source: _Table, rows: int) -> None:
        self.source = source
        self.rows = rows
        self.table: _Table | None = None
        self.touched: set[int] = set()
        self.version: int | None = None

    def build(self) -> None:
        """Copy the table: pure CPU, for a worker thread."""
        self.table = self.source.copy(_no_pause)

    def snapshot(self) -> bytes:
        """The finished copy as a snapshot: pure CPU, for a worker thread."""
        if self.table is None or self.version is None:
            raise ValueError("the copy was not built and finished")
        return _encode_table(self.version, self.table)


class Staging:
    """A delta applied onto a private copy of the table, ready for `EntitlementCache.swap`."""

    def __init__(self, delta: Delta, source: _Table, upserts: bytes | None = None) -> None:
        self.delta = delta
        self.source = source
        self.table: _Table | None = None
        self._by_ticket: dict[int, list] | None = None
        self._upserts = upserts
        self._bulk: _Table | None = None  # the decoded upserts of a bulk staging

    def build(self, pause: Callable[[], object] | None = None) -> None:
        """Copy the source table and apply the delta to the copy; raises `DeltaRefused`.

        Pure CPU, nothing shared is written: meant for a worker thread while
        the deciding thread goes on. `pause` is called every fraction of a
        millisecond of work, so such a caller can hand the interpreter back."""
        pause = pause or _no_pause
        delta = self.delta
        if self._upserts is not None:
            self._build_bulk(pause)
            return
        table = self.source.copy(pause)
        try:
            _check_delta(table, delta.ops)
        except ValueError as exc:
            raise DeltaRefused(f"delta {delta.base_version}->{delta.version} refused: {exc}") from None
        pause()
        new_ids = {op.record.ticket_id for op in delta.ops if isinstance(op, Upsert) and table.row_of(op.record.ticket_id) < 0}
        if not table.has_room_for(len(new_ids)):
            table.rebuild_index(_capacity_for(2 * (len(table.tid) + len(new_ids))))
        _apply_ops(table, delta.ops, pause)
        self.ops_of(0)  # the per-ticket index `swap` reads, made here rather than on the deciding thread
        self.table = table

    def _build_bulk(self, pause: Callable[[], object]) -> None:
        delta = self.delta
        try:
            _, bulk = _decode_snapshot(self._upserts)
        except SnapshotError as exc:
            raise DeltaRefused(f"delta {delta.base_version}->{delta.version} refused: {exc}") from None
        table = self.source.copy(pause)
        try:
            _merge_upserts(table, bulk, pause)
        except ValueError as exc:
            raise DeltaRefused(f"delta {delta.base_version}->{delta.version} refused: {exc}") from None
        self._bulk, self._upserts = bulk, None
        self.table = table

    def ops_of(self, ticket_id: int) -> list:
        """The delta's operations on one ticket, in order."""
        if self._bulk is not None:
            row = self._bulk.row_of(ticket_id)
            return [] if row < 0 else [Upsert(self._bulk.record(row))]
        if self._by_ticket is None:
            by_ticket: dict[int, list] = {}
            for op in self.delta.ops:
                if not isinstance(op, SetZone):
                    tid = op.record.ticket_id if isinstance(op, Upsert) else op.ticket_id
                    by_ticket.setdefault(tid, []).append(op)
            self._by_ticket = by_ticket
        return self._by_ticket.get(ticket_id, [])


def _no_pause() -> None:
    pass


def _apply_ops(table: _Table, ops: Iterable[Op], pause: Callable[[], object] = _no_pause) -> None:
    """Apply checked operations (`_check_delta`) to `table`."""
    for n, op in enumerate(ops):
        if isinstance(op, Upsert):
            row = table.row_of(op.record.ticket_id)
            if row < 0:
                table.append_row(op.record)
            else:
                table.write_row(row, op.record)
        elif isinstance(op, SetZone):
            table.zone_index(op.name)
            table.capacity[op.name] = op.capacity
        else:
            row = table.row_of(op.ticket_id)
            if isinstance(op, SetState):
                table.state[row] = int(op.state)
            elif isinstance(op, Reissue):
                table.serial[row] = op.badge_serial
            elif isinstance(op, SetUsage):
                table.used[row] = op.entries_used
                table.set_inside(row, table.mask_of(op.inside))
            elif isinstance(op, SetBenefit):
                names = table.profiles[table.profile[row]].benefit_names
                table.ben[table.ben_off[row] + names.index(op.name)] = op.remaining
        if n % _OPS_PER_PAUSE == _OPS_PER_PAUSE - 1:
            pause()


def _rows_of(table: _Table, ids: np.ndarray) -> np.ndarray:
    """`table.row_of` for every id of `ids` at once (-1 where absent): one
    whole-array step per probe, a few steps in all (the index keeps probes short)."""
    rows = np.full(len(ids), -1, dtype=np.int64)
    if not len(table.tid) or not len(ids):
        return rows
    slots = np.frombuffer(table.slots, dtype=np.uint32)
    held = np.frombuffer(table.tid, dtype=np.uint64)
    try:
        pos = _home_slots(ids, table.slots_size).astype(np.int64)
        todo = np.arange(len(ids))
        while len(todo):
            r = slots[pos[todo]].astype(np.int64)
            taken = r > 0
            todo, r = todo[taken], r[taken]
            hit = held[r - 1] == ids[todo]
            rows[todo[hit]] = r[hit] - 1
            todo = todo[~hit]
            pos[todo] += 1
    finally:
        del slots, held  # the columns may grow again
    return rows


def _merge_upserts(table: _Table, bulk: _Table, pause: Callable[[], object] = _no_pause) -> None:
    """Upsert every row of `bulk` (tickets each once, checked by the snapshot
    decoder) into `table`, as `_apply_ops` would apply `Upsert`s of them, in
    whole-array steps. Raises ValueError (`table` then half merged: a private
    copy, thrown away) when the zones would pass 64.

    A row overwritten gets its text and benefit counts appended, like
    `write_row` when they do not fit in place; occupancy is counted again
    from the masks."""
    n = len(bulk.tid)
    if not n:
        return
    ids = np.frombuffer(bulk.tid, dtype=np.uint64).copy()
    rows = _rows_of(table, ids)
    pause()
    zone_map = [table.zone_index(name) for name in bulk.zone_names]
    profile_map = np.array([table.intern_profile(p) for p in bulk.profiles] or [0], dtype=np.uint32)
    inside = np.frombuffer(bulk.inside, dtype=np.uint64).copy()
    if zone_map != list(range(len(zone_map))):
        moved = np.zeros(n, dtype=np.uint64)
        for bit, to in enumerate(zone_map):
            moved |= (inside >> np.uint64(bit) & np.uint64(1)) << np.uint64(to)
        inside = moved
    text_off = np.frombuffer(bulk.text_off, dtype=np.uint32).astype(np.int64) + len(table.text)
    ben_off = np.frombuffer(bulk.ben_off, dtype=np.uint32).astype(np.int64) + len(table.ben)
    if n and (int(text_off.max()) > 0xFFFFFFFF or int(ben_off.max()) > 0xFFFFFFFF):
        raise ValueError("the cache's text or benefit area would pass 4 GiB")
    values = {
        "profile": profile_map[np.frombuffer(bulk.profile, dtype=np.uint32)],
        "used": np.frombuffer(bulk.used, dtype=np.uint32),
        "serial": np.frombuffer(bulk.serial, dtype=np.uint16),
        "state": np.frombuffer(bulk.state, dtype=np.uint8),
        "inside": inside,
        "phone": np.frombuffer(bulk.phone, dtype=np.uint16),
        "text_off": text_off.astype(np.uint32),
        "text_len": np.frombuffer(bulk.text_len, dtype=np.uint16),
        "ben_off": ben_off.astype(np.uint32),
    }
    table.text += bulk.text
    table.ben.extend(bulk.ben)
    old, new = rows >= 0, rows < 0
    if old.any():
        at = rows[old]
        for name, v in values.items():
            col = np.frombuffer(getattr(table, name), dtype=v.dtype)
            col[at] = v[old]
            del col
    pause()
    first_new = len(table.tid)
    fresh = np.flatnonzero(new)
    if len(fresh):
        table.tid.frombytes(ids[fresh].tobytes())
        for name, v in values.items():
            getattr(table, name).frombytes(np.ascontiguousarray(v[fresh]).tobytes())
        if table.has_room_for(0):
            for k, ticket_id in enumerate(ids[fresh].tolist()):
                table._index_insert(ticket_id, first_new + k)
                if k % 1024 == 1023:
                    pause()
        else:
            table.rebuild_index(_capacity_for(2 * len(table.tid)))
    pause()
    table.occupancy = _count_inside(np.frombuffer(table.inside, dtype=np.uint64), len(table.zone_names))


def _check_delta(table: _Table, ops: tuple) -> None:
    """Raise ValueError for the first op that could not be applied in full to `table`."""
    known_zones = set(table.zone_names)
    upserted: dict[int, TicketRecord] = {}
    for n, op in enumerate(ops):
        where = f"op {n}"
        if isinstance(op, Upsert):
            _check_record(op.record, where)
            upserted[op.record.ticket_id] = op.record
            known_zones.update(op.record.zones, op.record.inside)
        elif isinstance(op, SetZone):
            if not isinstance(op.name, str) or not op.name:
                raise ValueError(f"{where}: zone name must be a non-empty string")
            if not isinstance(op.capacity, int) or not 0 <= op.capacity <= 0xFFFFFFFF:
                raise ValueError(f"{where}: zone capacity must be 0..2^32-1")
            known_zones.add(op.name)
        elif isinstance(op, (SetState, Reissue, SetUsage, SetBenefit)):
            tid = op.ticket_id
            if not isinstance(tid, int) or not 0 <= tid <= MAX_TICKET_ID:
                raise ValueError(f"{where}: ticket id must be 0..2^64-1")
            pending = upserted.get(tid)
            if pending is None and table.row_of(tid) < 0:
                raise ValueError(f"{where}: ticket {tid} is not in the cache")
            if isinstance(op, SetState) and op.state not in (TicketState.ACTIVE, TicketState.REVOKED):
                raise ValueError(f"{where}: ticket {tid}: unknown state {op.state!r}")
            if isinstance(op, Reissue) and (not isinstance(op.badge_serial, int) or not 0 <= op.badge_serial <= 0xFFFF):
                raise ValueError(f"{where}: ticket {tid}: badge serial must be 0..65535")
            if isinstance(op, SetUsage):
                if not isinstance(op.entries_used, int) or not 0 <= op.entries_used <= 0xFFFFFFFF:
                    raise ValueError(f"{where}: ticket {tid}: entries_used must be 0..2^32-1")
                if any(not isinstance(z, str) or not z for z in op.inside):
                    raise ValueError(f"{where}: ticket {tid}: zone names must be non-empty strings")
                known_zones.update(op.inside)
            if isinstance(op, SetBenefit):
                if pending is not None:
                    names = tuple(name for name, _ in pending.benefits)
                else:
                    names = table.profiles[table.profile[table.row_of(tid)]].benefit_names
                if op.name not in names:
                    raise ValueError(f"{where}: ticket {tid} has no benefit {op.name!r}")
                if not isinstance(op.remaining, int) or not 0 <= op.remaining <= 0xFFFF:
                    raise ValueError(f"{where}: ticket {tid}: remaining must be 0..65535")
        else:
            raise ValueError(f"{where}: unknown operation {type(op).__name__}")
    if len(known_zones) > MAX_ZONES:
        raise ValueError(f"more than {MAX_ZONES} zones")


# ---- snapshot encoding ----
#
# The snapshot is the registry's contract with every gate (it travels in
# gated.v1 SnapshotChunk messages and is what a gate keeps on disk); its
# normative text is docs/contract.md ("The snapshot", with the vectors in
# docs/snapshot-vectors.json), which this follows:
#
#   magic      8 bytes  "GTSNAP" 0x00 0x02 (format 2; format 1, 0x01, is still read)
#   head_len   u32 little-endian: length of the header
#   header     head_len bytes of UTF-8 JSON, an object with:
#                "version"        the entitlement version (integer)
#                "rows"           number of tickets R
#                "zones"          [[name, capacity], ...]: zone i is bit i of
#                                 the `inside` column; at most 64
#                "profiles"       [[category, ticket_type, [zone, ...],
#                                 [[from, until], ...], max_entries,
#                                 [benefit name, ...]], ...]: what tickets
#                                 share; every zone named must be in "zones"
#                "benefit_counts" number B of u16 benefit counts
#                "text_bytes"     number T of display-text bytes
#   columns    R values each, little-endian, no padding, in this order:
#                tid u64, profile u32 (index into "profiles"),
#                used u32 (entries used), serial u16 (badge serial),
#                state u8 (1 active, 2 revoked: TicketState's wire
#                numbers; format 1 had 0 active, 1 revoked),
#                inside u64 (zone bitmask),
#                phone u16 (last four digits 0..9999; 0xFFFF none),
#                text_off u32, text_len u16 (into the text area),
#                ben_off u32 (index of the ticket's first benefit count)
#   benefits   B x u16 little-endian: the remaining counts; a ticket's are at
#              ben_off.., one per benefit name of its profile, in order
#   text       T bytes: per ticket, UTF-8 name + 0x1F + company (empty when
#              both are empty), at text_off, text_len bytes
#   crc        u32 little-endian: CRC-32 (zlib/IEEE 802.3) of every byte
#              before it (a snapshot on an SD card can rot: a flipped bit is
#              refused, not believed)
#
# Limits a gate enforces (a snapshot beyond them is refused whole): at most
# 64 zones; benefit counts 0..65535; badge serial 0..65535; name and company
# together at most 65520 bytes of UTF-8; phone suffix 4 digits. Columns are
# raw arrays so loading is a memory copy plus one pass that checks every row
# and builds the index.

_COLUMNS = ("tid", "profile", "used", "serial", "state", "inside", "phone", "text_off", "text_len", "ben_off")


def _encode_table(version: int, table: _Table) -> bytes:
    header = {
        "version": version,
        "rows": len(table.tid),
        "zones": [[name, table.capacity.get(name, 0)] for name in table.zone_names],
        "profiles": [[p.category, p.ticket_type, list(p.zones), [list(w) for w in p.windows], p.max_entries, list(p.benefit_names)] for p in table.profiles],
        "benefit_counts": len(table.ben),
        "text_bytes": len(table.text),
    }
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    parts = [_SNAPSHOT_MAGIC, struct.pack("<I", len(head)), head]
    for name in (*_COLUMNS, "ben"):
        col = getattr(table, name)
        if _BIG_ENDIAN_HOST:
            col = array(col.typecode, col)
            col.byteswap()
        parts.append(col.tobytes().translate(_STATE_TO_SNAPSHOT) if name == "state" else col.tobytes())
    parts.append(bytes(table.text))
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def encode_snapshot(version: int, records: Iterable[TicketRecord], zone_capacity: dict[str, int] | None = None) -> bytes:
    """A snapshot of `records` at `version`, as the registry sends it.

    Raises ValueError naming the first bad record.
    """
    return _encode_table(version, _pack_records(records, "record", zone_capacity))


def _pack_records(records: Iterable[TicketRecord], where: str, zone_capacity: dict[str, int] | None = None) -> _Table:
    """`records` (each ticket once) checked and packed as a table's columns, without its
    index; ValueError names the first bad one as `where` and its position."""
    table = _Table(capacity=11)
    for zone, cap in (zone_capacity or {}).items():
        table.zone_index(zone)
        table.capacity[zone] = cap
    seen: set[int] = set()
    profile_of_raw: dict[tuple, int] = {}  # as given (unsorted) -> interned profile: checked once
    mask_of_inside: dict[tuple, int] = {(): 0}
    # The columns' appends, looked up once: this loop runs for every ticket of an import.
    tid, profile, used, serial, state = table.tid.append, table.profile.append, table.used.append, table.serial.append, table.state.append
    inside, phone, text_off, text_len = table.inside.append, table.phone.append, table.text_off.append, table.text_len.append
    ben_off, ben, text = table.ben_off.append, table.ben, table.text
    for n, rec in enumerate(records):
        try:
            raw = (rec.category, rec.ticket_type, rec.zones, rec.windows, rec.max_entries, tuple([b[0] for b in rec.benefits]))
            profile_idx = profile_of_raw.get(raw)
        except (AttributeError, TypeError, IndexError):  # not a record, or unhashable parts: the full check says why
            raw, profile_idx = None, None
        _check_record(rec, f"{where} {n}", shared_checked=profile_idx is not None)
        if profile_idx is None:
            profile_idx = table.intern(rec)
            if raw is not None:
                profile_of_raw[raw] = profile_idx
        ticket_id = rec.ticket_id
        if ticket_id in seen:
            raise ValueError(f"{where} {n}: ticket {ticket_id} appears twice")
        seen.add(ticket_id)
        tid(ticket_id)
        profile(profile_idx)
        used(rec.entries_used)
        serial(rec.badge_serial)
        state(rec.state)
        hashable = type(rec.inside) is tuple
        mask = mask_of_inside.get(rec.inside) if hashable else None
        if mask is None:
            mask = table.mask_of(rec.inside)
            if hashable:
                mask_of_inside[rec.inside] = mask
        inside(mask)
        phone(int(rec.phone_last4) if rec.phone_last4 else NO_PHONE)
        blob = (rec.name + "\x1f" + rec.company).encode("utf-8", "surrogatepass") if (rec.name or rec.company) else b""
        text_off(len(text))
        text_len(len(blob))
        text += blob
        ben_off(len(ben))
        ben.extend([remaining for _, remaining in rec.benefits])
    return table


def _decode_snapshot(data: bytes | bytearray | memoryview) -> tuple[int, _Table]:
    try:
        return _decode_snapshot_unchecked(memoryview(data).cast("B"))
    except SnapshotError:
        raise
    except RecursionError:  # json.loads on a header nested past the interpreter's recursion limit
        raise SnapshotError("snapshot refused: its header nests too deep") from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error) as exc:
        raise SnapshotError(f"snapshot refused: {exc}") from None


def _decode_snapshot_unchecked(data: memoryview) -> tuple[int, _Table]:
    magic = bytes(data[:8])
    if magic not in (_SNAPSHOT_MAGIC, _SNAPSHOT_MAGIC_V1):
        raise SnapshotError("snapshot refused: not a gated snapshot (bad magic)")
    if len(data) < 16 or zlib.crc32(data[:-4]) != struct.unpack_from("<I", data, len(data) - 4)[0]:
        raise SnapshotError("snapshot refused: checksum mismatch (truncated or damaged)")
    data = data[:-4]
    (head_len,) = struct.unpack_from("<I", data, 8)
    header = json.loads(bytes(data[12 : 12 + head_len]))
    pos = 12 + head_len
    rows = int(header["rows"])
    version = int(header["version"])
    if rows < 0 or version < 0:
        raise ValueError("negative row count or version")
    table = _Table(capacity=11)
    for name, capacity in header["zones"]:
        table.zone_index(str(name))
        table.capacity[str(name)] = int(capacity)
    for p in header["profiles"]:
        category, ticket_type, zones, windows, max_entries, benefit_names = p
        prof = Profile(str(category), str(ticket_type), tuple(map(str, zones)), tuple((int(a), int(b)) for a, b in windows), int(max_entries), tuple(map(str, benefit_names)))
        for z in prof.zones:
            if z not in table.zone_bit:
                raise ValueError(f"profile names unknown zone {z!r}")
        table.profile_ids[prof] = len(table.profiles)
        table.profiles.append(prof)
    sizes = {name: rows for name in _COLUMNS}
    sizes["ben"] = int(header["benefit_counts"])
    for name in (*_COLUMNS, "ben"):
        col = array(getattr(table, name).typecode)
        nbytes = sizes[name] * col.itemsize
        if pos + nbytes > len(data):
            raise ValueError(f"truncated in column {name}")
        if name == "state" and magic == _SNAPSHOT_MAGIC:
            col.frombytes(bytes(data[pos : pos + nbytes]).translate(_STATE_FROM_SNAPSHOT))
        else:
            col.frombytes(data[pos : pos + nbytes])
        if _BIG_ENDIAN_HOST:
            col.byteswap()
        setattr(table, name, col)
        pos += nbytes
    text_bytes = int(header["text_bytes"])
    if pos + text_bytes != len(data):
        raise ValueError(f"size mismatch: {len(data) - pos} bytes of text, header says {text_bytes}")
    table.text = bytearray(data[pos:])
    _check_rows(table)
    table.rebuild_index(_capacity_for(rows))
    return version, table


def _copy_column(col: array, pause: Callable[[], object]) -> array:
    """A copy of `col`, a slice at a time (each slice is one short memory copy)."""
    step = max(1, _COPY_CHUNK_BYTES // col.itemsize) * col.itemsize
    out = array(col.typecode)
    view = memoryview(col).cast("B")
    try:
        for start in range(0, len(view), step):
            out.frombytes(view[start : start + step])  # one memory copy, no slice made
            pause()
    finally:
        view.release()  # the live column may grow again
    return out


def _column(col: array, dtype) -> np.ndarray:
    """A column as a numpy array of `dtype` (a copy: the column stays resizable)."""
    if not len(col):
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(col, dtype=col.typecode).astype(dtype)


def _check_rows(table: _Table) -> None:
    """Every row: profiles, states, zones, phones and offsets in range; occupancy counted.

    A slice of rows at a time, on views of the columns (nothing big is
    allocated, so nothing stays resident after the load)."""
    rows = len(table.tid)
    zones = len(table.zone_names)
    occupancy = [0] * zones
    benefit_counts = np.array([len(p.benefit_names) for p in table.profiles] or [0], dtype=np.int64)
    ben_size, text_size = len(table.ben), len(table.text)
    cols = {name: np.frombuffer(getattr(table, name), dtype=getattr(table, name).typecode) if rows else None
            for name in ("profile", "state", "inside", "phone", "ben_off", "text_off", "text_len")}
    c: dict = {}
    try:
        for start in range(0, rows, _SLICE_ROWS):
            c = {name: col[start : start + _SLICE_ROWS] for name, col in cols.items()}
            if int(c["profile"].max()) >= len(table.profiles):
                raise ValueError("a row names a profile that does not exist")
            if int(c["state"].max()) > max(TicketState):
                raise ValueError("a row has an unknown state")
            inside = c["inside"]
            if zones < 64 and (inside >> np.uint64(zones)).any():
                raise ValueError("a row is inside a zone that does not exist")
            phone = c["phone"]
            if ((phone > 9999) & (phone != NO_PHONE)).any():
                raise ValueError("a phone suffix is not 4 digits")
            past = (c["ben_off"].astype(np.int64) + benefit_counts[c["profile"]] > ben_size) | (
                c["text_off"].astype(np.int64) + c["text_len"] > text_size
            )
            if past.any():
                raise ValueError(f"row {start + int(np.argmax(past))} points past the end of the snapshot")
            for bit, count in enumerate(_count_inside(inside, zones)):
                occupancy[bit] += count
    finally:
        del cols, c  # the columns may grow again
    table.occupancy = occupancy


def _count_inside(inside: np.ndarray, zones: int) -> list[int]:
    """How many rows are inside each zone (bit i of the masks is zone i)."""
    occupied = inside[inside != 0]
    return [int(np.count_nonzero(occupied >> np.uint64(bit) & np.uint64(1))) for bit in range(zones)]
