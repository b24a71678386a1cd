"""The passage window: which admissions the beam confirmed, on a fake clock.

Pure lane logic (`gated.gate.passage`): every call takes `now`, so a whole
morning at the door runs in microseconds with no sleeps.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest

from gated.gate.passage import PassageWindow

# --------------------------------------------------------------------------
# One person at a time



def test_admitted_guest_who_walks_through_in_time_is_counted():
    window = PassageWindow(timeout_s=5)
    window.expect("ticket-1", now=10.0)
    assert window.next_deadline() == 15.0
    assert window.passage(now=15.0) == "ticket-1"  # the deadline itself is in time
    assert window.expired(now=100.0) == []
    assert window.next_deadline() is None


def test_admitted_guest_who_never_walks_through_expires():
    window = PassageWindow(timeout_s=5)
    window.expect("ticket-1", now=10.0)
    assert window.expired(now=15.0) == []
    assert window.passage(now=15.1) is None, "late: the next person is a tailgater"
    assert window.expired(now=15.1) == ["ticket-1"]
    assert len(window) == 0


def test_passages_are_matched_in_scan_order():
    window = PassageWindow(timeout_s=5)
    window.expect("first", now=10.0)
    window.expect("second", now=11.0)
    window.expect("third", now=12.0)
    assert window.passage(now=13.0) == "first"
    assert window.passage(now=13.5) == "second"
    assert window.next_deadline() == 17.0
    assert len(window) == 1


def test_a_passage_skips_a_run_out_expectation_and_leaves_it_for_expired():
    window = PassageWindow(timeout_s=5)
    window.expect("walked_away", now=10.0)
    window.expect("next_in_line", now=14.0)
    assert window.passage(now=16.0) == "next_in_line"
    assert window.expired(now=16.0) == ["walked_away"]


def test_expired_returns_only_the_run_out_ones_in_order():
    window = PassageWindow(timeout_s=2)
    for index, at in enumerate([1.0, 2.0, 3.0, 4.0]):
        window.expect(index, now=at)
    assert window.expired(now=5.5) == [0, 1, 2]
    assert window.next_deadline() == 6.0


def test_a_passage_nobody_was_admitted_for_is_none():
    assert PassageWindow(timeout_s=5).passage(now=1.0) is None


@pytest.mark.parametrize("timeout", [0, -1, math.inf])
def test_passage_window_needs_a_positive_timeout(timeout):
    with pytest.raises(ValueError):
        PassageWindow(timeout_s=timeout)


def test_a_bool_is_not_a_timeout():
    with pytest.raises(ValueError, match="passage timeout_s must be a positive number of seconds"):
        PassageWindow(timeout_s=True)


# --------------------------------------------------------------------------
# A rush at the door


def ticket_ids_of_a_real_show(rng):
    """The id shapes registration systems hand out, mixed in one queue."""
    consecutive = list(range(1, 101))
    registration_numbers = [5205320758 + n for n in range(100)]
    blocks = [1_000_000 * k + n for k in range(1, 6) for n in range(20)]
    random_63_bit = [rng.getrandbits(63) for _ in range(100)]
    ids = consecutive + registration_numbers + blocks + random_63_bit
    rng.shuffle(ids)
    return ids


def replay(window, scans, walks):
    """Run scans (at, ticket_id) and walks (at) through the window in time
    order, calling `expired()` before each event as the lane does at its
    deadlines; returns (what each passage matched, what expired)."""
    events = sorted([(at, 0, ticket_id) for at, ticket_id in scans] + [(at, 1, None) for at in walks])
    matched, expired = [], []
    for now, kind, ticket_id in events:
        expired.extend(window.expired(now))
        if kind == 0:
            window.expect(ticket_id, now)
        else:
            matched.append(window.passage(now))
    return matched, expired


def test_a_morning_rush_confirms_everyone_in_scan_order():
    """400 admissions one every 0.25 s, each person through the beam 1 s
    after the scan, so four or five are expected at any moment."""
    ids = ticket_ids_of_a_real_show(random.Random(10))
    window: PassageWindow[int] = PassageWindow(timeout_s=5)
    scans = [(index * 0.25, ticket_id) for index, ticket_id in enumerate(ids)]

    matched, expired = replay(window, scans, [at + 1.0 for at, _ in scans])

    assert matched == ids
    assert expired == [] and window.expired(math.inf) == []
    assert len(window) == 0 and window.next_deadline() is None


def test_people_turning_back_in_a_rush_leave_every_admission_counted_once():
    """One in seven turns back. The window counts people, it cannot tell
    faces: a passage goes to the oldest admission still in time, which may
    be the one who turned back. What holds is the count: as many entries
    confirmed as people walked through, as many `not_passed` as turned back,
    and every admission lands in exactly one of the two."""
    ids = ticket_ids_of_a_real_show(random.Random(11))
    window: PassageWindow[int] = PassageWindow(timeout_s=5)
    scans = [(index * 0.25, ticket_id) for index, ticket_id in enumerate(ids)]
    walks = [at + 1.0 for index, (at, _) in enumerate(scans) if index % 7 != 3]

    matched, expired = replay(window, scans, walks)
    expired.extend(window.expired(math.inf))

    assert None not in matched
    assert len(matched) == len(walks)
    assert len(expired) == len(ids) - len(walks)
    assert sorted(matched + expired) == sorted(ids)


def test_someone_who_turns_back_alone_is_the_one_not_counted():
    """Scans far enough apart that only one admission is pending at a time:
    then the one who turned back is exactly the one that expires."""
    ids = ticket_ids_of_a_real_show(random.Random(12))
    window: PassageWindow[int] = PassageWindow(timeout_s=1.5)
    scans = [(index * 2.0, ticket_id) for index, ticket_id in enumerate(ids)]
    turned_back = [ticket_id for index, (_, ticket_id) in enumerate(scans) if index % 7 == 3]
    walks = [at + 1.0 for index, (at, _) in enumerate(scans) if index % 7 != 3]

    matched, expired = replay(window, scans, walks)
    expired.extend(window.expired(math.inf))

    assert matched == [ticket_id for ticket_id in ids if ticket_id not in turned_back]
    assert expired == turned_back


def test_tailgaters_in_a_rush_are_reported_not_matched():
    """Two people through on one scan, over and over: every second passage
    finds nobody expected (None), and no admission is consumed twice."""
    window: PassageWindow[int] = PassageWindow(timeout_s=5)
    outcomes = []
    for index, ticket_id in enumerate(range(5205320758, 5205320758 + 50)):
        now = index * 2.0
        window.expect(ticket_id, now)
        outcomes.append(window.passage(now + 0.5))
        outcomes.append(window.passage(now + 0.8))
    assert outcomes[0::2] == list(range(5205320758, 5205320758 + 50))
    assert outcomes[1::2] == [None] * 50
    assert window.expired(math.inf) == []


def test_the_window_is_lane_logic_and_loads_no_hardware():
    code = ("import sys, gated.gate.passage; "
            "print(sorted(m for m in ('gpiozero', 'threading', 'asyncio') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert "gpiozero" not in loaded and "asyncio" not in loaded
