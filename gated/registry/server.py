"""The reference registry: `gated registry serve`, the other end of every gate's uplink.

A small but real implementation of the `gated.v1.Registry` contract, used by
the simulator, the tests and the benchmarks, and good enough for a small
venue. It keeps its state in `RegistryStore` (SQLite) and an in-memory
`EntitlementCache` mirroring the tickets, from which snapshots are cut.

How it keeps the contract:

- Events: each batch is stored in one transaction (each (gate, journal
  epoch, seq) once) and acknowledged only after the commit, up to the
  batch's own last seq and never beyond. With mTLS the gate id is the
  client certificate's CN (or first DNS SAN) and an event of any other gate
  aborts the stream (PERMISSION_DENIED). Within a stream every batch must
  follow the one before (`after_seq`); a gap aborts the stream, so the gate
  reconnects and resends from its last acknowledged record. A stream's
  first batch may not start after more than the registry holds for that
  (gate, epoch): FAILED_PRECONDITION, with the trailing metadata
  `gated-acked-seq` saying what it holds, so the gate resends from there.
  A gate starts a new journal epoch at every boot (and a replaced journal
  restarts at seq 1 under one): logged, and its events are new. A resent
  (gate, epoch, seq) whose content differs from what is stored (a gate
  whose journal lost records it had sent and reused their numbers) is
  refused loudly: an error log line and ALREADY_EXISTS with the trailing
  metadata `gated-conflict-seq`, the batch stored not at all and not
  acknowledged, so the gate never takes it for stored.
- Fan-out: a new passage or redemption moves the registry's usage count,
  bumps the version and goes to every watching gate (the sender included) as
  a delta with absolute values.
- Heartbeats: a gate that asks (`current_every_s`) hears `current_version`
  when its watch has been quiet that long (and at once when it needs
  nothing at the start): how it knows its cache is current, not stale.
- Redeem: checked and taken in one store transaction (gated/registry/redeem.py),
  answered once per (gate, redemption_id), a grant fanned out like usage.
- Entitlement watch: a gate at the current version gets only new deltas; one
  whose version is in the recent delta log gets the deltas it missed, unless
  they add up to more bytes than a snapshot would; any other gets a snapshot
  first.
- Bounded messages: every WatchEntitlementsResponse is at most `MAX_UPDATE_BYTES`
  (1 MiB) serialized. A large change (an import) goes out as consecutive
  deltas, each built from at most `CHANGES_PER_STEP` changes and cut where
  the next op would pass the limit; snapshot chunks are cut likewise. A
  delta that cannot be cut (one op over the limit) is never sent: every
  watcher gets a snapshot instead.
- Commands that change the database while the server runs (revoke, reissue,
  import, keys) are picked up by polling `PRAGMA data_version` every 200 ms:
  a cheap read that changes only when another connection commits. Chosen
  over an admin RPC so the commands work the same whether or not the server
  is running (a server started later applies them at start).
- Nothing heavy runs on the event loop, so GetTime, watches and events are
  answered during an import: every use of the store and of the mirror runs
  in a worker thread, one at a time (`_exclusive`, and the group commits'
  chain, both under the service's lock), on the service's own connection.
  A large change is published in steps, the lock released between them, so
  event batches interleave with an import's deltas. The import itself is one transaction in the importing process
  (all or nothing); SQLite's WAL keeps the server's reads going meanwhile,
  and its writes wait (off the loop) for the import's commit.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog

from gated import eventloop
from gated.rpc import standard
from gated.rpc.convert import (
    MAX_UPDATE_BYTES,
    REDEEM_OUTCOMES,
    KeyChange,
    MalformedEvent,
    GateStatus,
    delta_update,
    gate_status_from_proto,
    key_change_to_proto,
    op_to_proto,
    ops_that_fit,
    snapshot_updates,
)
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from gated.validation.token import Reason
from gated.validation.cache import IN_PLACE_MAX_OPS, CheckedOps, Delta, EntitlementCache, Op, Reissue, SetState, Upsert, encode_snapshot
from gated.registry import redeem as registry_redeem
from gated.registry.changelog import Follower
from gated.registry.engine import is_url as is_database_url
from gated.registry.incoming import parse_ahead
from gated.registry.metrics import RegistryMetrics
from gated.registry.store import Change, EventBatch, EventConflict, IncomingEvent, RegistryStore, StoredBatch

log = structlog.get_logger()


GATE_ID_METADATA = "gated-gate-id"
ACKED_SEQ_TRAILER = "gated-acked-seq"
CONFLICT_SEQ_TRAILER = "gated-conflict-seq"
CHANGE_POLL_S = 0.2
#: How often a running registry keeps its snapshot when the version moved (and at stop).
KEEP_SNAPSHOT_EVERY_S = 30.0
DELTA_LOG_SIZE = 1000
#: Events one group commit takes at most (it takes at least one batch whatever its size): a
#: usage op on the wire is ~30 bytes, so the group's delta stays far under MAX_UPDATE_BYTES.
GROUP_EVENTS = 8192
#: The delta log holds at most this many bytes of updates (older ones are dropped: snapshot).
DELTA_LOG_BYTES = 64 << 20
#: Changes read per publishing step: bounds how long one step holds the store (~0.1 s).
CHANGES_PER_STEP = 2048
#: The worker threads the group commits are stored in (every service's; each holds its lock meanwhile).
_STORE_THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="registry-store")
#: Offered to a watcher instead of a delta it cannot be sent: send a snapshot.
_RESYNC = object()
#: A watcher this far behind is dropped; it reconnects and gets a snapshot.
WATCHER_QUEUE_LIMIT = 10_000
#: Merged runs of deltas kept for other watchers behind by the same run (`_merged`).
MERGED_RUNS_KEPT = 64
MAX_MESSAGE_BYTES = 8 << 20
#: What a gate may ask of `current_every_s`: at most one heartbeat a second, at least one an hour.
HEARTBEAT_MIN_S, HEARTBEAT_MAX_S = 1.0, 3600.0
#: How often the watches are looked over for a heartbeat due: one is sent up to this much later than asked.
HEARTBEAT_TICK_S = 0.25
#: Offered to a watcher whose watch has been quiet for its heartbeat interval.
_HEARTBEAT = object()


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class _Watcher:
    """One watch's mailbox: what the loop hands out, taken in order by the watch's coroutine.

    Not an `asyncio.Queue`: its `get` asks for the running loop for every future it makes,
    and on Python 3.11 that is a `getpid()` system call each time, 3 % of the registry's samples
    at 500 gates (py-spy). The loop is known here, once."""

    __slots__ = ("gate_id", "items", "waiter", "loop", "overflowed", "every", "quiet_since", "beat_queued")

    def __init__(self, gate_id: str, every: float | None = None) -> None:
        self.gate_id = gate_id
        self.items: collections.deque = collections.deque()
        self.waiter: asyncio.Future | None = None  # the watch waiting in `take`, if it is
        self.loop = asyncio.get_running_loop()
        self.overflowed = False
        self.every = every  # the heartbeat interval the gate asked for (None: none)
        self.quiet_since = time.monotonic()  # when the watch last sent anything
        self.beat_queued = False

    def offer(self, item) -> None:
        """Queue `item`, unless the watch is `WATCHER_QUEUE_LIMIT` behind: then it is over."""
        if len(self.items) >= WATCHER_QUEUE_LIMIT:
            self.overflowed = True
        else:
            self.put(item)

    def put(self, item) -> None:
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def empty(self) -> bool:
        return not self.items

    def take_nowait(self):
        return self.items.popleft()

    async def take(self):
        """The next item, waiting for one (on the loop this watcher was made on)."""
        while not self.items:
            self.waiter = self.loop.create_future()
            await self.waiter
        return self.items.popleft()


def _metadata_gate_id(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == GATE_ID_METADATA and value:
            return value
    return None


def peer_gate_id(context: grpc.aio.ServicerContext, tls: bool) -> str | None:
    """Who is calling: the client certificate's CN (or DNS SAN), or, without TLS, the metadata."""
    if tls:
        auth = context.auth_context()
        for prop in ("x509_common_name", "x509_subject_alternative_name"):
            values = auth.get(prop)
            if values:
                return values[0].decode("utf-8", "replace")
        return None
    return _metadata_gate_id(context)


class _EventStream:
    """What a gate's StreamEvents call shares with the group commit: whether a batch of it was
    refused (an `EventConflict`, or a store that failed), after which none of its later batches
    is stored: the call ends there, as it did when each batch was stored before the next was read."""

    __slots__ = ("refused",)

    def __init__(self) -> None:
        self.refused = False


@dataclass(slots=True)
class _Pending:
    """A gate's batch waiting for the next group commit, and where its result goes."""

    batch: EventBatch
    received: float  # perf_counter when it arrived (fan-out latency starts there)
    future: asyncio.Future
    stream: _EventStream | None = None


#: A stream's batches queued for storing (or answers owed) at once at most: the one being stored and the next.
STREAM_BATCHES_QUEUED = 2
#: Asks `_Acknowledger` to answer with what is acknowledged so far (a batch of no events).
_ACK_AS_IS = object()
_STREAM_END = object()


class _Acknowledger:
    """A StreamEvents call's answers, one per batch in the order the batches came, each written
    once its batch is stored; a conflict ends the call (ALREADY_EXISTS) after the answers before it.

    Why a task of its own: the call's handler queues each batch for storing as soon as it has
    read and checked it, behind the one being stored (`STREAM_BATCHES_QUEUED`), and goes on
    reading, so the group commit's chain takes the next batch the moment the last is stored,
    with no turn of the handler between. A backlog's replay then keeps the store busy instead
    of leaving it idle 1-1.5 ms a batch, and the handler need not wait for a request that may
    not come (a gate that sent its last batch waits for its ack)."""

    def __init__(self, service: RegistryService, context: grpc.aio.ServicerContext, gate_id: str) -> None:
        self._service = service
        self._context = context
        self._gate_id = gate_id
        self._queue: asyncio.Queue = asyncio.Queue()
        self._room = asyncio.Semaphore(STREAM_BATCHES_QUEUED)  # released as each item is answered
        self._task = asyncio.ensure_future(self._answer())
        self.last_ack = 0

    async def room(self) -> None:
        """Wait until fewer than `STREAM_BATCHES_QUEUED` items wait for their answer, then take a place
        for the next (`put`); raises what ended the answers (the conflict's abort) instead of waiting."""
        if self._task.done():
            self._task.result()
            raise RuntimeError("the stream's answers ended")  # (never: they end only at `_STREAM_END`)
        if not self._room.locked():
            await self._room.acquire()  # free: taken at once
            return
        taking = asyncio.ensure_future(self._room.acquire())
        await asyncio.wait((taking, self._task), return_when=asyncio.FIRST_COMPLETED)
        if not taking.done():
            taking.cancel()
            self._task.result()
            raise RuntimeError("the stream's answers ended")

    def put(self, item: object) -> None:
        """Queue `item`, in the place `room` took: a stored batch's future with its epoch and events, or
        `_ACK_AS_IS`."""
        self._queue.put_nowait(item)

    async def drain(self) -> None:
        """Every queued batch stored and answered (or the abort that ended the answers raised)."""
        self._queue.put_nowait(_STREAM_END)
        await self._task

    def cancel(self) -> None:
        """Stop answering (the call is over); what ended the answers, if anything, is not raised again."""
        if self._task.done():
            if not self._task.cancelled():
                self._task.exception()
        else:
            self._task.cancel()

    async def _answer(self) -> None:
        service, context, gate_id = self._service, self._context, self._gate_id
        while True:
            item = await self._queue.get()
            if item is _STREAM_END:
                return
            if item is not _ACK_AS_IS:
                future, epoch, events = item
                try:
                    stored = await future
                except EventConflict as conflict:
                    service.metrics.event_conflicts.inc()
                    log.error("registry_event_conflict", gate=gate_id, epoch=f"{epoch:#018x}", seq=conflict.seq, error=str(conflict),
                              note="batch refused, nothing stored: the gate reused seqs it had already sent")
                    await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(conflict),
                                        trailing_metadata=((CONFLICT_SEQ_TRAILER, str(conflict.seq)),))
                if stored.usage_refused is not None:
                    log.error("registry_usage_refused", gate=gate_id, first_seq=events[0].seq, last_seq=events[-1].seq,
                              error=stored.usage_refused, note="events stored; their usage is not fanned out")
                service.events_stored += stored.new_events
                service.metrics.events_stored.inc(stored.new_events)
                if len(events) > stored.new_events:
                    service.metrics.duplicates.inc(len(events) - stored.new_events)
                self.last_ack = stored.acked_seq
            # The version every use counted so far is in (handed out already): a gate catching up waits for it.
            await context.write(pb.StreamEventsResponse(up_to_seq=self.last_ack, version=service._published_version))
            self._room.release()


@dataclass(frozen=True, slots=True)
class _Published:
    """What one store step produced, for the loop to hand to the watchers."""

    update: pb.WatchEntitlementsResponse | None = None
    base: int = 0
    size: int = 0
    keys: KeyChange | None = None


class RegistryService(pb_grpc.RegistryServiceServicer):
    """The `Registry` servicer.

    The store and the mirror are touched only inside `_exclusive`: in a worker
    thread, one call at a time; the loop itself only answers calls and hands
    updates to watchers.
    """

    def __init__(self, store: RegistryStore, *, tls: bool) -> None:
        self.store = store
        self.tls = tls
        self.cache = EntitlementCache()
        #: (base, version, update, serialized size), oldest first
        self._log: collections.deque[tuple[int, int, pb.WatchEntitlementsResponse, int]] = collections.deque()
        self._log_bytes = 0
        self._watchers: set[_Watcher] = set()
        self._key_watchers: set[_Watcher] = set()
        self._snapshot: tuple[int, bytes] | None = None
        #: The version of the snapshot kept in the database (None: none of ours).
        self.kept_version: int | None = None
        self._data_version = -1
        #: On PostgreSQL: this instance follows every instance's change log (gated/registry/changelog.py).
        self.follower = Follower(self, store.path) if store.dialect == "postgres" else None
        self._published_version = 0  # the version of the last update handed to the watchers
        self._lock = asyncio.Lock()
        self._pending: collections.deque[_Pending] = collections.deque()  # batches for the next group commit
        self._writer: asyncio.Task | None = None
        self._store_waiters = 0  # `_exclusive` calls waiting for the lock
        #: Runs of deltas merged for watchers that fell behind, by (base, version): built once each.
        self._merged_runs: collections.OrderedDict[tuple[int, int], pb.WatchEntitlementsResponse] = collections.OrderedDict()
        self._poll_now = asyncio.Event()
        self.events_stored = 0
        self.largest_update_bytes = 0
        #: The latest ReportStatus of each gate (in memory: gates report again within 5 s).
        self.gate_status: dict[str, GateStatus] = {}
        self.metrics = RegistryMetrics(self)

    async def _exclusive(self, fn, *args, then=None):
        """Run `fn(*args)` in a worker thread while nothing else uses the store or the mirror.

        `then(result)` runs on the loop before the next one starts (handing
        updates out in version order). A cancelled caller does not cut this
        short: the thread finishes and hands out before the lock is let go.
        """
        async def critical():
            self._store_waiters += 1  # the group commits' chain lets go of the lock for it
            try:
                await self._lock.acquire()
            finally:
                self._store_waiters -= 1
            try:
                result = await asyncio.to_thread(fn, *args)
                if then is not None:
                    then(result)
                if self.follower is not None:  # what the step followed of other instances, if `then` did not
                    self.follower.hand_out_caught_up()
                return result
            finally:
                self._lock.release()

        return await asyncio.shield(critical())

    # ------------------------------------------------------------ state

    def load(self) -> None:
        """Build the mirror from the database (applying changes made while stopped).

        From the kept snapshot when it is of the database's version (a second for a million
        tickets, and it is what the first gate gets); else from every ticket's row.
        """
        if self.follower is not None:
            self.follower.prepare()  # pending changes are published as deltas: other instances follow them
        else:
            self.store.mark_all_changes_applied()
        version = self.store.version
        kept = self.store.kept_snapshot()
        if kept is not None and kept[0] == version:
            data = kept[1]
            self.kept_version = version
        else:
            started = time.perf_counter()
            data = encode_snapshot(version, self.store.records())
            self.metrics.snapshot_builds.inc()  # the snapshot the first gate gets, built from the rows
            self.metrics.snapshot_seconds.observe(time.perf_counter() - started)
        self.cache.load_snapshot(data)
        self._snapshot = (self.cache.version, data)
        # PostgreSQL: changes made while every instance was stopped are still pending: the first
        # poll must look (-1), not take the database's change count as already published.
        self._data_version = -1 if self.follower is not None else self.store.data_version()
        self._published_version = self.cache.version

    def kept_is_stale(self) -> bool:
        return self.kept_version != self.cache.version

    def _snapshot_now(self) -> tuple[int, bytes]:
        if self._snapshot is None or self._snapshot[0] != self.cache.version:
            started = time.perf_counter()
            self._snapshot = (self.cache.version, self.cache.to_snapshot())
            self.metrics.snapshot_builds.inc()
            self.metrics.snapshot_seconds.observe(time.perf_counter() - started)
        return self._snapshot

    async def snapshot(self) -> tuple[int, bytes]:
        return await self._exclusive(self._snapshot_now)

    def _snapshot_size_estimate(self) -> int:
        """What a snapshot of the mirror would weigh: 39 column bytes a ticket, benefits, text."""
        table = self.cache.table
        return 39 * len(self.cache) + 2 * len(table.ben) + len(table.text) + 4096

    def _prepare(self, delta: Delta, ops: list[pb.DeltaOp] | None = None, checked: CheckedOps | None = None) -> _Published:
        """Apply a delta the store has committed to the mirror (not checked again when `checked`
        is what the mirror's `check` made of its ops); its wire form (worker thread)."""
        if self.follower is not None and delta.base_version != self.cache.version:
            if not self.follower.catch_up_to(delta.base_version):  # another instance wrote first
                return _Published()  # the mirror was reloaded with this delta in it
            checked = None  # the mirror moved since the check
        if checked is None:
            self.cache.apply(delta)
        else:
            self.cache.apply_checked(delta, checked)
        if ops is None:
            update = delta_update(delta)
        else:
            update = pb.WatchEntitlementsResponse(delta=pb.Delta(base_version=delta.base_version, version=delta.version, ops=ops))
        return _Published(update, delta.base_version, update.ByteSize())

    def _hand_out(self, published: _Published) -> None:
        """Log an update and give it to every watcher (on the loop, still under the lock)."""
        if self.follower is not None:
            self.follower.hand_out_caught_up()  # what other instances wrote before it, first
        update = published.update
        if update is not None:
            self._published_version = update.delta.version
            if published.size > MAX_UPDATE_BYTES:
                # One op larger than any message may be: nobody gets it as a delta, and
                # nobody older than it can catch up with deltas. Everyone gets a snapshot.
                log.warning("registry_delta_too_large", version=update.delta.version, size=published.size,
                            limit=MAX_UPDATE_BYTES, note="sending every watcher a snapshot instead")
                self._log.clear()
                self._log_bytes = 0
                for watcher in self._watchers:
                    watcher.offer(_RESYNC)
            else:
                self.largest_update_bytes = max(self.largest_update_bytes, published.size)
                self._log.append((published.base, update.delta.version, update, published.size))
                self._log_bytes += published.size
                while self._log and (len(self._log) > DELTA_LOG_SIZE or self._log_bytes > DELTA_LOG_BYTES):
                    self._log_bytes -= self._log.popleft()[3]
                for watcher in self._watchers:
                    watcher.offer((published.base, update, published.size))
        if published.keys is not None:
            wire = key_change_to_proto(published.keys)
            for watcher in self._key_watchers:
                watcher.offer(wire)

    def _resync_watchers(self) -> None:
        """The mirror was reloaded from the database: no delta reaches back past it; everyone gets a snapshot."""
        self._log.clear()
        self._log_bytes = 0
        self._published_version = self.cache.version
        for watcher in self._watchers:
            watcher.offer(_RESYNC)

    def _hand_out_all(self, result: tuple[list[_Published], bool]) -> None:
        for published in result[0]:
            self._hand_out(published)

    def check_ops(self, ops: tuple[Op, ...]) -> CheckedOps:
        """ValueError when the mirror (and so every gate) could not take `ops` whole; else the
        check, for `_prepare` to apply them on without checking again."""
        if self.follower is not None:
            self.follower.catch_up()  # checked against what the other instances committed first
        return self.cache.check(ops)

    async def conflict_counts(self) -> dict[str, int]:
        """The conflicts the store holds, by kind (for `/metrics`)."""
        return await self._exclusive(self.store.conflict_counts)

    def watching_gates(self) -> frozenset[str]:
        """The gates watching entitlements now (connected), for the dashboard."""
        return frozenset(w.gate_id for w in self._watchers)

    # ---------------------------------------------------- command changes

    def wake(self) -> None:
        """Something committed to the file in this process: publish it now, not at the next tick."""
        self._poll_now.set()

    async def poll_changes(self) -> None:
        """Turn commands' commits into deltas and key updates (cheap when nothing changed).

        `_data_version` moves only once every change is published: a poll that
        fails (a busy file) is retried on the next tick, not forgotten.
        """
        version = await self._exclusive(self.store.data_version)
        if version == self._data_version:
            return
        while True:
            _published, more = await self._exclusive(self._changes_step, then=self._hand_out_all)
            if not more:
                break
        self._data_version = version

    def _changes_step(self) -> tuple[list[_Published], bool]:
        """Publish the next pending changes as one delta of at most MAX_UPDATE_BYTES (worker thread).

        Returns what to hand out, and whether changes are left for another step.
        """
        pending = self.store.next_changes(CHANGES_PER_STEP)
        if not pending:
            return [], False
        ops: list[Op] = []
        op_change: list[int] = []  # the index in `pending` of each op's change
        upserted: set[int] = set()
        for n, (change, rec) in enumerate(pending):
            if change.kind in ("ticket", "state", "reissue") and rec is not None:
                if rec.ticket_id in upserted:
                    continue  # this delta carries the ticket as it is now already: each ticket once
                    # keeps an import's delta on the gates' fast path
                if change.kind == "ticket":
                    upserted.add(rec.ticket_id)
                ops.append(SetState(rec.ticket_id, rec.state) if change.kind == "state"
                           else Reissue(rec.ticket_id, rec.badge_serial) if change.kind == "reissue"
                           else Upsert(rec))
                op_change.append(n)
        wire = [op_to_proto(op) for op in ops[: _upserts_apart(ops)]]
        take = ops_that_fit(wire)
        covered = [change for change, _ in (pending if take == len(ops) else pending[: op_change[take]])]
        ops, wire = tuple(ops[:take]), wire[:take]
        more = len(covered) < len(pending) or len(pending) == CHANGES_PER_STEP
        checked = None
        try:
            if self.follower is not None:
                self.follower.catch_up()  # checked against what the other instances committed first
            checked = self.cache.check(ops)  # once: the mirror applies what it checked
        except ValueError as exc:
            # The commands check before they commit; this is the last line: never bump
            # the version past what the mirror holds (every later delta would be refused).
            log.error("registry_changes_refused", error=str(exc), changes=len(covered),
                      note="not sent to the gates; fix the tickets with a new import")
            ops, wire = (), []
        keys = self._key_change(covered)
        delta = self.store.apply_changes(covered, ops, keys, wire)
        published = []
        if delta is not None:
            published.append(self._prepare(delta, wire, checked))
            log.info("registry_changes_published", version=delta.version, ops=len(delta.ops),
                     bytes=published[0].size, more=more)
        if keys is not None:
            published.append(_Published(keys=keys))
            log.info("registry_keys_published", added=[kid for kid, _ in keys.add], retired=list(keys.retire))
        return published, more

    def _key_change(self, changes: list[Change]) -> KeyChange | None:
        if not any(c.kind in ("key_add", "key_retire") for c in changes):
            return None
        added: dict[int, bytes] = {}
        retired: list[int] = []
        keys = self.store.keys()
        for change in changes:
            if change.kind == "key_add" and change.kid in keys:
                added[change.kid] = keys[change.kid]
                if change.kid in retired:
                    retired.remove(change.kid)
            elif change.kind == "key_retire" and change.kid not in keys:
                added.pop(change.kid, None)
                retired.append(change.kid)
        if not added and not retired:
            return None
        return KeyChange(False, tuple(sorted(added.items())), tuple(retired))

    async def poll_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), CHANGE_POLL_S)
            self._poll_now.clear()
            try:
                await self.poll_changes()
            except Exception:  # a locked or busy file: try again next tick
                log.exception("registry_change_poll_failed")

    # ------------------------------------------------------------- calls

    async def _identify(self, context: grpc.aio.ServicerContext) -> str:
        gate_id = peer_gate_id(context, self.tls)
        if not gate_id:
            how = "a client certificate" if self.tls else f"the {GATE_ID_METADATA} metadata"
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"no gate id: send {how}")
        if self.tls:
            claimed = _metadata_gate_id(context)
            if claimed is not None and claimed != gate_id:
                log.warning("registry_gate_id_refused", gate=gate_id, claimed=claimed)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{GATE_ID_METADATA} {claimed!r} is not this certificate's gate {gate_id!r}")
        return gate_id

    def _queue_batch(self, gate_id: str, events: list[IncomingEvent], epoch: int, received: float,
                     stream: _EventStream | None = None) -> asyncio.Future:
        """Queue one gate's batch for the next group commit; the future of its result (an
        `EventConflict` set as its exception). Not stored at all once `stream` is refused.

        Batches that arrive while a group is being stored wait for the next
        one, which takes them all (up to GROUP_EVENTS events, one batch of
        each gate) in one transaction and hands their usage out as one delta."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(EventBatch(gate_id, epoch, events), received, future, stream))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups())
        return future

    async def _write_groups(self) -> None:
        """Group commits while batches wait; ends when none does (the next batch starts another)."""
        while self._pending:
            try:
                # Shielded like `_exclusive`: a step in a worker thread finishes and hands out before the lock goes.
                await asyncio.shield(self._chain_groups())
            except Exception as exc:  # no group can start (the worker threads are gone): every waiting batch hears it
                log.error("registry_group_commit_failed", error=str(exc), batches=len(self._pending))
                while self._pending:
                    item = self._pending.popleft()
                    if not item.future.done():
                        item.future.set_exception(exc)

    async def _chain_groups(self) -> None:
        """Under the lock: group after group, each the moment the one before is stored, until no
        batch waits or another user of the store does (it gets the lock next; then the chain goes on).

        Why a chain of callbacks and not a loop of awaits: each await costs a turn of the event
        loop, and on a busy registry a turn is the hundreds of gRPC writes of the last delta's
        fan-out (10-25 ms at 500 gates). Here a group costs one: its worker thread's result comes
        back by `call_soon_threadsafe`, and that callback hands the delta out, answers the
        group's batches and starts the next group's thread, all in the same turn."""
        async with self._lock:
            done = asyncio.get_running_loop().create_future()
            self._next_group(done, first=True)
            await done

    def _next_group(self, done: asyncio.Future, *, first: bool = False) -> None:
        """Start storing the next group in a worker thread; `done` once nothing waits to be stored, or
        another store user waits (on the loop). The first group of a chain is stored whatever waits:
        users of the store that keep coming could otherwise keep every batch waiting."""
        if not self._pending or (self._store_waiters and not first):
            done.set_result(None)
            return
        group: list[_Pending] = []
        events = 0
        # One batch of a gate a group: a gate's next batch (its stream's, queued behind this one) waits
        # for the next group, where the set-wise path takes it (it takes each gate once).
        gates: set[str] = set()
        later: list[_Pending] = []
        pending = self._pending
        while pending and (not group or events + len(pending[0].batch.events) <= GROUP_EVENTS):
            item = pending.popleft()
            if item.stream is not None and item.stream.refused:
                item.future.cancel()  # a batch of this stream was refused: nothing after it is stored
            elif item.batch.gate_id in gates:
                later.append(item)
            else:
                gates.add(item.batch.gate_id)
                group.append(item)
                events += len(item.batch.events)
        pending.extendleft(reversed(later))
        if not group:  # only batches of refused streams waited
            done.set_result(None)
            return
        loop = asyncio.get_running_loop()
        stored = _STORE_THREADS.submit(self._store_group, [item.batch for item in group])
        stored.add_done_callback(lambda stored: loop.call_soon_threadsafe(self._group_stored, stored, group, done))

    def _group_stored(self, stored: concurrent.futures.Future, group: list[_Pending], done: asyncio.Future) -> None:
        """A group's store step ended (on the loop): hand its delta out, answer its batches, go on."""
        if done.cancelled():  # the chain was cancelled (the loop is closing): nothing more to hand out or start
            return
        error = stored.exception()
        result = None
        try:
            if error is None:
                result = stored.result()
                self._hand_out_group(result, group)
            if self.follower is not None:  # what the step followed of other instances, if the hand-out did not
                self.follower.hand_out_caught_up()
        except Exception as exc:  # stored, not handed out: the batches hear it (a resend is acknowledged)
            log.exception("registry_hand_out_failed")
            error = exc
        for i, item in enumerate(group):
            if item.future.done():  # its stream ended meanwhile: stored all the same
                continue
            answer = error if error is not None else result[0][i]
            if isinstance(answer, BaseException):  # a conflict, or the store failed as a whole (a database error)
                if item.stream is not None:
                    item.stream.refused = True  # before the next group is formed (below)
                item.future.set_exception(answer)
            else:
                item.future.set_result(answer)
        try:
            self._next_group(done)
        except Exception as exc:  # never leave the chain (and the lock) hanging
            if not done.done():
                done.set_exception(exc)

    def _store_group(self, batches: list[EventBatch]) -> tuple[list[StoredBatch | EventConflict], _Published | None]:
        """Store a group of batches and apply their usage to the mirror (worker thread).

        The mirror checks each batch's usage before the store commits (`check_ops`); when the
        committed delta is exactly the one set of ops it checked (a group of one batch, the
        replay's case), the mirror applies it on that check instead of checking it again."""
        checks: list[CheckedOps] = []
        results, delta = self.store.store_event_batches(batches, time.time(), check=lambda ops: checks.append(self.check_ops(ops)))
        if delta is None:
            return results, None
        checked = checks[0] if len(checks) == 1 else None
        if checked is not None and _same_ops(checked.ops, delta.ops):
            delta = Delta(delta.base_version, delta.version, checked.ops)  # apply_checked then needs no comparison
        else:
            checked = None
        return results, self._prepare(delta, checked=checked)

    def _hand_out_group(self, result: tuple[list, _Published | None], group: list[_Pending]) -> None:
        if result[1] is not None:
            self._hand_out(result[1])
            self.metrics.fanout.observe(time.perf_counter() - min(item.received for item in group))

    def _hand_out_batch(self, result: tuple[object, _Published | None]) -> None:
        if result[1] is not None:
            self._hand_out(result[1])

    def _gate_known(self, gate_id: str, epoch: int) -> tuple[int, list[int]]:
        return self.store.acked_seq(gate_id, epoch), self.store.gate_epochs(gate_id)

    async def StreamEvents(self, request_iterator, context) -> None:
        gate_id = await self._identify(context)
        expect_after: int | None = None
        epoch: int | None = None
        stream = _EventStream()
        acks = _Acknowledger(self, context, gate_id)

        async def refuse(code: grpc.StatusCode, details: str, trailing_metadata=()) -> None:
            await acks.drain()  # the batches before this one are stored and answered first
            await context.abort(code, details, trailing_metadata=trailing_metadata)

        try:
            async for batch, events in parse_ahead(request_iterator, gate_id):  # the next batch parsed while this one is stored
                received = time.perf_counter()
                if not batch.events:
                    # Answered like any batch (a client may count acks), and nothing else checked.
                    await acks.room()
                    acks.put(_ACK_AS_IS)
                    continue
                if epoch is None:
                    epoch = batch.journal_epoch
                elif batch.journal_epoch != epoch:
                    await refuse(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"journal_epoch changed within a stream ({epoch:#x} -> {batch.journal_epoch:#x})")
                if isinstance(events, MalformedEvent):
                    await refuse(grpc.StatusCode.INVALID_ARGUMENT, str(events))
                if expect_after is None:
                    known, epochs = await self._exclusive(self._gate_known, gate_id, epoch)
                    if epoch not in epochs and epochs:
                        log.info("registry_gate_new_epoch", gate=gate_id, epoch=f"{epoch:#018x}", epochs_before=len(epochs),
                                 note="a reboot or a replaced journal: stored as new events")
                    if batch.after_seq > known:
                        # The gate believes we hold records up to after_seq (an earlier state of this
                        # database acknowledged them, or the gate invented the number): refuse, and say
                        # what we hold, so it resends from there instead of leaving a hole.
                        log.warning("registry_event_gap", gate=gate_id, epoch=f"{epoch:#018x}", stored_up_to=known,
                                    gate_resumes_after=batch.after_seq)
                        await refuse(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"gap: batch follows {batch.after_seq}, the registry holds this journal up to {known}; resend after {known}",
                            trailing_metadata=((ACKED_SEQ_TRAILER, str(known)),),
                        )
                elif batch.after_seq != expect_after:
                    await refuse(grpc.StatusCode.FAILED_PRECONDITION, f"gap: batch follows {batch.after_seq}, expected {expect_after}; resend")
                # Stored behind the batch before it, answered by `acks` once stored (`_Acknowledger`).
                await acks.room()
                acks.put((self._queue_batch(gate_id, events, epoch, received, stream), epoch, events))
                expect_after = events[-1].seq
            await acks.drain()
        finally:
            acks.cancel()

    async def WatchEntitlements(self, request, context) -> AsyncIterator[pb.WatchEntitlementsResponse]:
        gate_id = await self._identify(context)
        every = request.current_every_s
        watcher = _Watcher(gate_id, min(max(every, HEARTBEAT_MIN_S), HEARTBEAT_MAX_S) if every > 0 else None)
        if self.follower is not None and request.have_version > self._published_version:
            await self.follower.follow_now()  # a gate from another instance: its version is in the log
        try:
            # Watching, the version and the log are read with no await between them (and
            # only the loop changes them): nothing handed out later is missed.
            self._watchers.add(watcher)
            have, sent = request.have_version, self._published_version
            catch_up = self._deltas_since(have) if have != sent else []
            if catch_up is None:
                version, data = await self.snapshot()  # this version or later: later deltas are skipped below
                log.info("registry_sending_snapshot", gate=gate_id, have=have, version=version, size=len(data))
                for update in snapshot_updates(version, data):
                    yield update
                sent = version
            else:
                for update in catch_up:
                    yield update
                if watcher.every is not None and not catch_up:
                    yield pb.WatchEntitlementsResponse(current_version=sent)  # current from the start
            watcher.quiet_since = time.monotonic()
            held = None  # taken from the queue while merging, not mergeable: sent next
            while True:
                if held is not None:
                    item, held = held, None
                else:
                    # A plain get: the heartbeat comes through the queue (`beat_forever`), not
                    # from a timeout around each get, which costs a task and a timer per update.
                    item = await watcher.take()
                if watcher.overflowed:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too far behind; reconnect for a snapshot")
                if item is _HEARTBEAT:
                    watcher.beat_queued = False
                    # Quiet that long (a slow send may have let the marker in meanwhile) and nothing
                    # queued: the gate holds everything up to `sent`.
                    if watcher.empty() and time.monotonic() - watcher.quiet_since >= watcher.every:
                        yield pb.WatchEntitlementsResponse(current_version=sent)
                        watcher.quiet_since = time.monotonic()
                    continue
                if item is _RESYNC:
                    version, data = await self.snapshot()
                    log.info("registry_sending_snapshot", gate=gate_id, have=sent, version=version, size=len(data))
                    for update in snapshot_updates(version, data):
                        yield update
                    sent = version
                    watcher.quiet_since = time.monotonic()
                    continue
                if item[0] < sent:
                    continue
                # A watcher that fell behind (a slow link, a busy gate, hundreds of gates) gets the
                # deltas queued meanwhile as one: fewer messages the further behind, never over 1 MiB.
                run = [item]
                size = item[2]
                while not watcher.empty():
                    following = watcher.take_nowait()
                    if following is _HEARTBEAT:  # not quiet after all
                        watcher.beat_queued = False
                        continue
                    if (following is _RESYNC or following[0] != run[-1][1].delta.version
                            or size + following[2] > MAX_UPDATE_BYTES):
                        held = following
                        break
                    run.append(following)
                    size += following[2]
                update = run[0][1] if len(run) == 1 else self._merged(run)
                sent = update.delta.version
                yield update
                watcher.quiet_since = time.monotonic()
        finally:
            self._watchers.discard(watcher)

    def offer_heartbeats(self, now: float) -> None:
        """Queue a heartbeat for each watch quiet for the interval its gate asked (on the loop)."""
        for watcher in self._watchers:
            if (watcher.every is not None and not watcher.beat_queued and now - watcher.quiet_since >= watcher.every
                    and watcher.empty()):
                watcher.beat_queued = True
                watcher.put(_HEARTBEAT)

    async def beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_TICK_S)
            self.offer_heartbeats(time.monotonic())

    def _merged(self, run: list[tuple[int, pb.WatchEntitlementsResponse, int]]) -> pb.WatchEntitlementsResponse:
        """Consecutive deltas as one (the first's base, the last's version, every op in order).

        Watchers behind by the same run share the message: built once, not per gate."""
        key = (run[0][0], run[-1][1].delta.version)
        merged = self._merged_runs.get(key)
        if merged is None:
            ops = [op for _base, update, _size in run for op in update.delta.ops]
            merged = pb.WatchEntitlementsResponse(delta=pb.Delta(base_version=key[0], version=key[1], ops=ops))
            self._merged_runs[key] = merged
            while len(self._merged_runs) > MERGED_RUNS_KEPT:
                self._merged_runs.popitem(last=False)
        return merged

    def _deltas_since(self, have: int) -> list[pb.WatchEntitlementsResponse] | None:
        """The logged deltas that bring `have` up to date, or None when a snapshot is needed:
        the log no longer reaches back to `have`, or its deltas weigh more than a snapshot."""
        for i, (base, _version, _update, _size) in enumerate(self._log):
            if base == have:
                tail = list(self._log)[i:]
                if sum(size for *_, size in tail) > max(self._snapshot_size_estimate(), MAX_UPDATE_BYTES):
                    return None
                return [update for _b, _v, update, _s in tail]
        return None

    def _ring(self) -> dict[int, bytes] | None:
        return self.store.keys() if self.store.keys_managed else None

    async def WatchKeys(self, request, context) -> AsyncIterator[pb.WatchKeysResponse]:
        gate_id = await self._identify(context)
        watcher = _Watcher(gate_id)
        try:
            self._key_watchers.add(watcher)  # before reading the ring: a change meanwhile comes again after it
            ring = await self._exclusive(self._ring)
            # Always a first message, so a client knows where it stands: the complete ring (even
            # empty), or, from a registry that manages no keys, an empty update that changes nothing.
            yield key_change_to_proto(KeyChange(True, tuple(sorted(ring.items())), ()) if ring is not None
                                      else KeyChange(False, (), ()))
            while True:
                update = await watcher.take()
                if watcher.overflowed:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too far behind; reconnect")
                yield update
        finally:
            self._key_watchers.discard(watcher)

    def _redeem(self, gate_id: str, req: registry_redeem.RedeemRequest) -> tuple[registry_redeem.RedeemResult, _Published | None]:
        result = registry_redeem.redeem(self.store, gate_id, req, check=self.check_ops)
        return result, None if result.delta is None else self._prepare(result.delta)

    async def Redeem(self, request, context) -> pb.RedeemResponse:
        gate_id = await self._identify(context)
        rid, benefit = request.redemption_id, request.benefit
        if not rid or len(rid.encode()) > registry_redeem.MAX_REDEMPTION_ID or not benefit:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"a redemption needs a redemption_id of 1 to {registry_redeem.MAX_REDEMPTION_ID} bytes and a benefit")
        req = registry_redeem.RedeemRequest(rid, request.ticket_id, benefit, request.lane, request.at)
        try:
            result, _published = await self._exclusive(self._redeem, gate_id, req, then=self._hand_out_batch)
        except registry_redeem.RedemptionConflict as exc:
            log.warning("registry_redeem_conflict", gate=gate_id, error=str(exc))
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except ValueError as exc:  # the mirror refused the grant: rolled back, nothing taken
            log.error("registry_redeem_refused", gate=gate_id, error=str(exc))
            await context.abort(grpc.StatusCode.INTERNAL, "the registry could not apply this redemption")
        if not result.replayed:
            self.metrics.redeem.labels(outcome=str(result.outcome)).inc()
        log.info("registry_redeem", gate=gate_id, lane=req.lane, ticket_id=req.ticket_id, benefit=benefit,
                 outcome=result.outcome, remaining=result.remaining, replayed=result.replayed, version=result.version)
        return pb.RedeemResponse(outcome=REDEEM_OUTCOMES[Reason(result.outcome)], remaining=result.remaining,
                              replayed=result.replayed, version=result.version)

    async def GetTime(self, request, context) -> pb.GetTimeResponse:
        return pb.GetTimeResponse(unix_nanos=time.time_ns())

    async def ReportStatus(self, request, context) -> pb.ReportStatusResponse:
        gate_id = await self._identify(context)
        if not request.HasField("status"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a status report needs its status")
        self.gate_status[gate_id] = gate_status_from_proto(request.status, received_at=time.time())
        return pb.ReportStatusResponse()

    def gate_states(self) -> dict[str, GateStatus]:
        """The latest status each gate reported (since this registry started), for the dashboard."""
        return dict(self.gate_status)


def _same_ops(checked: tuple[Op, ...], ops: tuple[Op, ...]) -> bool:
    """The very op objects checked, in order (the store hands on what it checked)."""
    return len(checked) == len(ops) and all(a is b for a, b in zip(checked, ops))


def _upserts_apart(ops: list[Op]) -> int:
    """How many of `ops` to publish in this step so that a long run of upserts (an import) travels
    in deltas of its own: a gate merges a delta of upserts only in whole-array steps, and takes a
    delta with any other op one op at a time. Runs a gate applies in place anyway (at most
    IN_PLACE_MAX_OPS ops) are left where they are."""
    start = None
    for i, op in enumerate(ops):
        if type(op) is Upsert:
            start = i if start is None else start
            continue
        if start is not None and i - start > IN_PLACE_MAX_OPS:
            return start or i  # the ops before the run, or the run itself
        start = None
    if start and len(ops) - start > IN_PLACE_MAX_OPS:
        return start
    return len(ops)


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """mTLS: the registry's certificate, and only clients with a certificate from `ca`."""
    return grpc.ssl_server_credentials(
        [(files.key.read_bytes(), files.cert.read_bytes())],
        root_certificates=files.ca.read_bytes(),
        require_client_auth=True,
    )


class RegistryServer:
    """A running reference registry on an event loop: `await start()`, `await stop()`."""

    def __init__(self, db: str | Path, listen: str = "127.0.0.1:7443", *, tls: TlsFiles | None = None) -> None:
        #: For this process's own callers (set-up, tests); the service has a connection of its own.
        self.store = RegistryStore(db)
        self.db = db if is_database_url(db) else Path(db)  # a PostgreSQL URL is no path
        self.listen = listen
        self.tls = tls
        self.service = RegistryService(RegistryStore(db), tls=tls is not None)
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health = None
        self._poller: asyncio.Task | None = None
        self._beater: asyncio.Task | None = None
        self._keeper: asyncio.Task | None = None

    async def keep_snapshot(self) -> bool:
        """Keep the mirror's snapshot in the database (so the next start serves it at once).

        Cut under the service's lock (the same snapshot a gate would get), written on a
        connection of its own outside it: event batches go on meanwhile."""
        if not self.service.kept_is_stale():
            return False
        version, data = await self.service.snapshot()

        def write() -> bool:
            with RegistryStore(self.db, create=False) as keeper:
                return keeper.keep_snapshot(version, data)

        kept = await asyncio.to_thread(write)
        if kept:
            self.service.kept_version = version
        return kept

    async def _keep_forever(self) -> None:
        while True:  # at once when the mirror was built from the rows, then whenever the version moved
            try:
                await self.keep_snapshot()
            except Exception:  # a busy file: try again next time
                log.exception("registry_keep_snapshot_failed")
            await asyncio.sleep(KEEP_SNAPSHOT_EVERY_S)

    async def import_attendees(self, path: str | Path) -> int:
        """`gated registry import` from inside this process: off the loop, on a connection of its own.

        All or nothing, like the command; the gates get it as soon as it commits."""
        from gated.registry.importer import import_attendees

        def run() -> int:
            with RegistryStore(self.db, create=False) as desk:
                return import_attendees(desk, path)

        count = await asyncio.to_thread(run)
        self.service.wake()
        return count

    async def start(self) -> int:
        await asyncio.to_thread(self.service.load)
        self.service.store.checkpoint_in_background()  # the connection that stores the gates' events
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
        self._server = grpc.aio.server(options=options)
        pb_grpc.add_RegistryServiceServicer_to_server(self.service, self._server)
        self._health = await standard.add_standard_services(self._server, pb.DESCRIPTOR.services_by_name["RegistryService"])
        if self.tls is None:
            port = self._server.add_insecure_port(self.listen)
            log.warning("registry_plaintext", listen=self.listen, note="no TLS: loopback and simulator only")
        else:
            port = self._server.add_secure_port(self.listen, server_credentials(self.tls))
        if port == 0:
            raise OSError(f"cannot listen on {self.listen}")
        self.port = port
        await self._server.start()
        self._poller = asyncio.create_task(self.service.poll_forever(), name="registry-change-poll")
        self._beater = asyncio.create_task(self.service.beat_forever(), name="registry-heartbeats")
        if self.service.follower is not None:
            self.service.follower.start()
        self._keeper = asyncio.create_task(self._keep_forever(), name="registry-keep-snapshot")
        log.info("registry_listening", listen=self.listen, port=port, tls=self.tls is not None, version=self.service.cache.version, tickets=len(self.service.cache),
                 event_loop=eventloop.loop_name())
        return port

    async def stop(self, grace: float | None = 0.5) -> None:
        if self._health is not None:
            await standard.set_not_serving(self._health)
            self._health = None
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
            with contextlib.suppress(Exception):
                await self.keep_snapshot()
        for task in (self._poller, self._beater):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._poller = self._beater = None
        if self.service.follower is not None:
            await self.service.follower.stop()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        async with self.service._lock:  # a worker thread may still be finishing a step
            self.service.store.close()
        self.store.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> RegistryServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(db: str | Path, listen: str, tls: TlsFiles | None, *, ready=None) -> None:
    """Run until cancelled. `ready(port)` is called once listening."""
    server = RegistryServer(db, listen, tls=tls)
    await server.start()
    try:
        if ready is not None:
            ready(server.port)
        await server.wait_closed()
    finally:
        await server.stop()
