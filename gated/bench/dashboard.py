"""The registry's staff pages at scale: `python -m gated.bench.dashboard [--tickets N] [--checkins N]`.

Builds a registry file with N tickets (10-digit registration numbers, five
categories, two zones, phones) and M check-ins (passages in and out over
three days at four gates of three lanes, stored through
`RegistryStore.store_events` as a gate's uplink stores them: usage counted,
the dashboard's triggers firing), then serves the desk pages and the
dashboard on loopback (the registry's one application, signed in with an
admin account) and times, over real HTTP, each page and each chart's data:
median, p99, max of `--rounds` requests each.

Target (issue 12): each page and each chart's data within 200 ms p99 at
1,000,000 tickets and 1,000,000 check-ins.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

TARGET_P99_MS = 200.0
CATEGORIES = ("guest", "guest", "guest", "exhibitor", "media", "staff", "vip")
GATES = {"north": ("in-1", "in-2", "out-1"), "south": ("in-1", "in-2", "out-1"), "east": ("in-1", "out-1"),
         "lounge": ("vip-1",)}
FIRST_NAMES = ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Anna", "Ben", "Clara")


def _phone(tid: int) -> str:
    return f"+86 138 {tid % 100_000_000:08d}"


def _build(db: Path, tickets: int, checkins: int, rng: random.Random, *, dashboard: bool = True) -> dict:
    from gated.registry import dashdata
    from gated.registry.store import IncomingEvent, RegistryStore
    from gated.validation import TicketRecord

    ids = [5_205_000_000 + i * 7 for i in range(tickets)]  # 10-digit registration numbers
    timings = {}
    with RegistryStore(db) as store:
        store.add_key(1, bytes(range(32)))
        start = time.perf_counter()
        if dashboard:
            dashdata.install(store.conn)  # before the data: the triggers keep the figures as it comes
        chunk = 100_000
        for at in range(0, tickets, chunk):
            store.put_tickets(
                ((TicketRecord(ticket_id=tid, category=CATEGORIES[tid % len(CATEGORIES)], ticket_type="3-day",
                               zones=("hall", "lounge") if tid % 7 == 0 else ("hall",),
                               benefits=(("lunch_day1", 1),), name=f"{FIRST_NAMES[tid % 13]} {tid % 100_003}",
                               company=f"Company {tid % 5000}", phone_last4=f"{tid % 10_000:04d}"),
                  _phone(tid)) for tid in ids[at:at + chunk]),
                record_changes=False)
        timings["tickets_s"] = time.perf_counter() - start
        day0 = 1_764_230_400  # 2025-11-27 08:00 UTC
        seqs = {gate: 0 for gate in GATES}
        start = time.perf_counter()
        done, batch_size = 0, 2000
        while done < checkins:
            gate = rng.choice(tuple(GATES))
            batch = []
            for _ in range(min(batch_size, checkins - done)):
                lane = rng.choice(GATES[gate])
                direction = "out" if lane.startswith("out") else "in"
                zone = "lounge" if lane.startswith("vip") else "hall"
                tid = ids[rng.randrange(tickets)]
                at = day0 + 86_400 * rng.randrange(3) + rng.uniform(0, 12 * 3600)
                seqs[gate] += 1
                batch.append(IncomingEvent(f"{gate}:{seqs[gate]}", seqs[gate], at, "passage", lane, tid, "ok",
                                           json.dumps({"ticket_id": tid, "zone": zone, "direction": direction})))
                if rng.random() < 0.05:  # a denial now and then
                    seqs[gate] += 1
                    batch.append(IncomingEvent(f"{gate}:{seqs[gate]}", seqs[gate], at, "decision", lane, None,
                                               rng.choice(("bad_signature", "code_expired", "revoked", "already_inside")), "{}"))
            store.store_events(gate, batch, time.time())
            done += sum(1 for ev in batch if ev.kind == "passage")
        timings["checkins_s"] = time.perf_counter() - start
        timings["events"] = store.event_count()
        if store.dialect == "postgres":  # the planner's statistics, as autovacuum soon has them after a bulk load
            store.conn.execute("ANALYZE")
    return {"ids": ids, **timings}


class _Served:
    """The registry (gRPC) with its staff pages on loopback, as `gated registry serve` runs them,
    on a loop in a thread; requests carry the session of a signed-in admin account."""

    PASSWORD = "bench password"

    def __init__(self, db: Path) -> None:
        self.db = db
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.cookie = ""

    def __enter__(self) -> "_Served":
        from gated.registry.accounts import Accounts
        from gated.registry.http import RegistryWeb
        from gated.registry.pages import staff_pages
        from gated.registry.server import RegistryServer
        from gated.registry.store import RegistryStore
        from gated.web import WebSettings

        with RegistryStore(self.db) as store:
            if not any(name == "bench" for name, _role, _locked in Accounts(store).users()):
                Accounts(store).add_user("bench", "admin", self.PASSWORD)

        async def start():
            self.registry = RegistryServer(self.db, "127.0.0.1:0")
            await self.registry.start()
            self.server = RegistryWeb(self.registry, WebSettings(host="127.0.0.1", port=0), pages=staff_pages())
            await self.server.start()

        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(300)
        self.cookie = self._sign_in()
        return self

    def _sign_in(self) -> str:
        import urllib.error
        import urllib.parse

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        form = urllib.parse.urlencode({"username": "bench", "password": self.PASSWORD, "next": "/"}).encode()
        request = urllib.request.Request(self.url + "/signin", data=form, method="POST", headers={"Origin": self.url})
        try:
            urllib.request.build_opener(NoRedirect).open(request, timeout=30)
        except urllib.error.HTTPError as answer:  # 303: signed in, the cookie set
            if answer.code == 303:
                return answer.headers["Set-Cookie"].partition(";")[0]
            raise
        raise RuntimeError("the bench account did not sign in")

    def __exit__(self, *exc) -> None:
        async def stop():
            await self.server.stop()
            await self.registry.stop()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)

    @property
    def url(self) -> str:
        return self.server.url.rstrip("/")


def _time(url: str, rounds: int, cookie: str = "") -> dict:
    samples = []
    size = 0
    for _ in range(rounds):
        start = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Cookie": cookie}), timeout=30) as response:
            size = len(response.read())
            assert response.status == 200 and not response.url.endswith("/signin"), url
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 2), "p99_ms": round(samples[int(0.99 * (len(samples) - 1))], 2),
            "max_ms": round(samples[-1], 2), "bytes": size}


def bench_dashboard(tickets: int = 1_000_000, checkins: int = 1_000_000, rounds: int = 200, seed: int = 12,
                    store: str = "sqlite") -> dict:
    """`store`: "sqlite" (a temp file) or "postgres" (a fresh database on GATED_BENCH_POSTGRES or
    GATED_TEST_POSTGRES, dropped afterwards; gated.bench.store)."""
    from gated.bench.store import _database

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="gated-bench-dashboard-") as tmp, _database(store, Path(tmp)) as db:
        built = _build(db, tickets, checkins, rng)
        ids = built.pop("ids")
        someone = ids[rng.randrange(len(ids))]
        with _Served(db) as served:
            pages = {
                "chart data (/dashboard/data: every chart)": "/dashboard/data",
                "dashboard page": "/dashboard",
                "search: ticket number": f"/attendees?q={someone}",
                "search: last four phone digits": f"/attendees?q={_phone(someone)[-4:]}",
                "search: name prefix": "/attendees?q=Zhao%2012",
                "search: company prefix": "/attendees?q=Company%20421",
                "search: absent": "/attendees?q=Nobody",
                "attendee page (with movements)": f"/attendees/{someone}",
                "walk-in form": "/walkin",
            }
            for path in pages.values():  # warm the page cache once, as a running registry's would be
                _time(served.url + path, 1, served.cookie)
            results = {name: _time(served.url + path, rounds, served.cookie) for name, path in pages.items()}
            exports = {name: _time(served.url + path, 1, served.cookie) for name, path in (
                ("check-ins CSV (every passage)", "/export/checkins.csv"), ("report PDF", "/export/report.pdf"))}
        # What the triggers cost the event path: the same check-ins stored with and without them.
        n = min(100_000, tickets, checkins)
        ingest = {}
        for label, on in (("without dashboard triggers", False), ("with dashboard triggers", True)):
            with _database(store, Path(tmp)) as small_db:
                small = _build(small_db, n, n, random.Random(seed), dashboard=on)
            ingest[label] = round(n / small["checkins_s"])
    return {"store": store, "tickets": tickets, "checkins": checkins, "build": built, "rounds": rounds, "pages": results,
            "exports": exports, "ingest_checkins_per_s": ingest,
            "target_p99_ms": TARGET_P99_MS, "met": all(r["p99_ms"] <= TARGET_P99_MS for r in results.values())}


def format_dashboard(r: dict) -> str:
    b = r["build"]
    lines = [f"registry pages ({r.get('store', 'sqlite')}) at {r['tickets']:,} tickets and {r['checkins']:,} check-ins "
             f"({b['events']:,} events; built in {b['tickets_s']:.1f} s + {b['checkins_s']:.1f} s, triggers on)",
             f"  {'page':<45} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} {'bytes':>9}"]
    for name, s in r["pages"].items():
        lines.append(f"  {name:<45} {s['median_ms']:>10.2f} {s['p99_ms']:>8.2f} {s['max_ms']:>8.2f} {s['bytes']:>9,}")
    for name, e in r["exports"].items():
        lines.append(f"  export: {name:<37} {e['median_ms'] / 1000:>9.2f} s {e['bytes']:>26,}")
    for label, rate in r["ingest_checkins_per_s"].items():
        lines.append(f"  check-ins stored (store_events, 2,000 a batch) {label}: {rate:,}/s")
    lines.append(f"  target: p99 at most {r['target_p99_ms']:.0f} ms each: {'met' if r['met'] else 'NOT met'}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m gated.bench.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--checkins", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                        help="postgres: a fresh database on the server GATED_BENCH_POSTGRES (or GATED_TEST_POSTGRES) names")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.store == "postgres":
        from gated.bench.store import _postgres_admin_url

        if _postgres_admin_url() is None:
            parser.error("--store postgres needs GATED_BENCH_POSTGRES=postgresql://ROLE@HOST/DB (a role that may create databases)")
    result = bench_dashboard(args.tickets, args.checkins, args.rounds, store=args.store)
    print(json.dumps(result, indent=2) if args.json else format_dashboard(result))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
