"""`gated demo`: a scripted morning at one door, through the real decision path.

The validation core alone, no devices (`make run` is the whole simulated
gate: `gated sim`). It mints a key, builds a small cache, and plays scans
through `Validator.decide()` and `commit()`, printing each decision as the
lane would show it.
"""

from __future__ import annotations

import time

from gated.validation import (
    Delta, Direction, EntitlementCache, KeyRing, Lane, Mode, Policy, Reissue, SetState, TicketRecord, TicketState,
    Validator, encode_snapshot,
)
from gated.validation.token import manual_code, mint_dynamic, mint_static

_ANSI = {"admit": "\033[1;32m", "deny": "\033[1;31m"}


def run_demo() -> int:
    key = bytes(range(32))
    now = 1_763_020_800  # 08:00 UTC on the show's first day
    day = 86_400
    tickets = [
        TicketRecord(1001, "guest", "3-day", ("hall-a",), ((now, now + 3 * day),), name="Wang Fang", company="Acme"),
        TicketRecord(1002, "media", "press", ("hall-a", "press"), benefits=(("lunch_day1", 1),), name="Li Wei", company="Daily News", phone_last4="8812"),
        TicketRecord(1003, "staff", "crew", ("hall-a", "backstage"), name="Chen Jie"),
        TicketRecord(1004, "guest", "1-day", ("hall-a",), ((now + day, now + 2 * day),), max_entries=1),
        TicketRecord(1005, "exhibitor", "booth", ("hall-a",)),
    ]
    cache = EntitlementCache()
    cache.load_snapshot(encode_snapshot(1, tickets, {"hall-a": 5000}))
    gate = Validator(KeyRing({1: key}), cache, Policy())
    door_in, door_out = Lane("north-in-1", "hall-a"), Lane("north-out-1", "hall-a", Direction.OUT)
    door_in2 = Lane("north-in-2", "hall-a")
    desk = Lane("press-desk", "hall-a", mode=Mode.HANDHELD)

    def show(label, decision, t0):
        micros = (time.perf_counter() - t0) * 1e6
        colour = _ANSI[decision.signal.pattern]
        who = f"ticket {decision.ticket_id}" if decision.ticket_id is not None else "no ticket"
        extra = f" [{decision.attendee.name}, {decision.attendee.company}]" if decision.attendee else ""
        print(f"  {label:<48} {colour}{decision.reason:<18}\033[0m {who:<12} {decision.category or '':<10} light {decision.signal.color} {decision.signal.pattern}{extra}  ({micros:.0f} µs)")

    def scan(label, code, lane, at, commit=True, **kw):
        t0 = time.perf_counter()
        d = gate.decide(code, lane, at, **kw)
        show(label, d, t0)
        if commit:
            gate.commit(d)
        return d

    print("gated demo: the validation core at one door (the whole simulated gate with its live console is `gated sim`)\n")
    scan("guest shows phone e-ticket", mint_dynamic(key, 1, 1001, now), door_in, now)
    scan("guest tries again at the next lane", mint_dynamic(key, 1, 1001, now + 20), door_in2, now + 20)
    scan("media scans printed badge", mint_static(key, 1, 1002, 0), door_in, now + 25)
    scan("staff scans badge (red lane light)", mint_static(key, 1, 1003, 0), door_in2, now + 30)
    scan("screenshot forwarded from yesterday", mint_dynamic(key, 1, 1001, now - day), door_in, now + 40)
    scan("1-day ticket on the wrong day", mint_dynamic(key, 1, 1004, now + 45), door_in2, now + 45)
    scan("somebody's home-made QR", "GT1:AEAQAAAAAAAAAABKANQKUKV56PY33X2CHTXFSZ3XQLIOPUT5", door_in, now + 50)
    scan("line noise on the serial scanner", "\x00\x13GT1:%%", door_in2, now + 55)
    scan("exhibitor, scanner reads twice", mint_static(key, 1, 1005, 0), door_in, now + 60)
    scan("  (same code 0.4 s later: repeat, not a new decision)", mint_static(key, 1, 1005, 0), door_in, now + 60.4)
    scan("guest leaves for coffee", mint_dynamic(key, 1, 1001, now + 600), door_out, now + 600)
    scan("guest comes back", mint_dynamic(key, 1, 1001, now + 900), door_in, now + 900)
    cache.apply(Delta(1, 2, (Reissue(1003, 1), SetState(1005, TicketState.REVOKED))))
    print("\n  -- registry: staff badge 1003 reprinted (serial 1), exhibitor 1005 revoked --")
    scan("staff finds the old badge", mint_static(key, 1, 1003, 0), door_in2, now + 1000)
    scan("revoked exhibitor", mint_static(key, 1, 1005, 0), door_in2, now + 1010)
    print("\n  -- handheld at the press desk --")
    scan("media redeems lunch", mint_static(key, 1, 1002, 0), desk, now + 14400, benefit="lunch_day1")
    scan("media asks for lunch again", mint_static(key, 1, 1002, 0), Lane("press-desk-2", "hall-a", mode=Mode.HANDHELD), now + 14500, benefit="lunch_day1")
    t0 = time.perf_counter()
    d = gate.decide_manual(1002, manual_code(key, 1002, now + 14600), Lane("press-desk-3", "hall-a", mode=Mode.HANDHELD), now + 14600, benefit="dinner")
    show("typed fallback: ticket 1002 + 8 digits, dinner", d, t0)
    print(f"\n  hall-a occupancy: {cache.occupancy('hall-a')} of {cache.zone_capacity('hall-a')}")
    return 0
