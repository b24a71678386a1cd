"""The gate's side of the registry contract: events up, entitlements, keys and time down.

`Uplink.run()` keeps one session with the registry alive for as long as the
daemon runs, on the daemon's event loop (so cache and key ring changes happen
on the same thread as `decide()`: no locks). A session is four concurrent
calls; when any of them fails the whole session is torn down and a new one
is made after an exponential backoff with full jitter, capped at
`reconnect_max_s`. One warning per outage, one info line when it ends.

Rules it keeps:

- Events go up exactly once at the registry, at least once on the wire:
  every session starts from the journal's first unacknowledged record and
  sends in seq order, in batches, with at most `max_in_flight` batches
  unacknowledged, each batch carrying the journal's epoch. A batch's
  `after_seq` is the seq of the record before its first as the journal has
  it (seqs may be skipped), never invented. An ack is written to the
  journal (`mark_acked`) only after the registry sent it, i.e. after its
  commit; an ack beyond the highest seq sent on the stream is a protocol
  error that ends the session and marks nothing. When the registry refuses
  a stream because it holds less than the gate thought (FAILED_PRECONDITION
  with `gated-acked-seq: N`), the next stream resends every record after N,
  acknowledged before or not. Sending is driven by `wake()`,
  which the daemon calls after each append; a slow safety sweep catches
  records appended by another process.
- Several registry instances (`[uplink] targets`, or a comma list in
  `target`): a session that fails to start or ends moves to the next
  instance, after the same backoff. Every instance shares one database, so
  the new session resends from the journal's first unacknowledged record
  and the registry stores each (gate, epoch, seq) once; the watch resumes
  from the cache's version. One warning per switch (`uplink_switched`).
- Key updates: a malformed one is refused whole and the key watch is
  reopened (the registry always starts it with the complete ring).
- Entitlement updates are applied whole or not at all: a malformed or
  out-of-order delta or snapshot is refused (`convert` and the cache check it
  completely first), logged, and the cache keeps its last good version; the
  watch is then reopened with that version, so the registry can resend
  deltas or a snapshot. A snapshot is decoded off the loop into a fresh
  cache and swapped in at once.
- Persisting the cache is the daemon's job (`gated.gate.state`): the uplink
  calls `on_cache_changed(snapshot=...)` after every update it applied.
- A snapshot never erases this gate's own usage: the registry builds it from
  the events it had stored, so everything the journal had not seen
  acknowledged when the watch was opened is counted again on top of it
  (`gated.usage.reapply_local_usage`) before it replaces the live cache,
  and `snapshot_journal_seq` says up to which journal seq the result holds
  all local usage (the daemon saves it with that seq). A record whose
  journal write was still in flight at the swap is caught up by the
  registry's delta for it.
- The clock offset is the registry's time minus the midpoint of the local
  send and receive times, from the round trip with the smallest RTT of a few
  samples, measured at every connect and every `time_sync_every_s`. The
  clock itself decides when an old offset is no longer trusted
  (`clock_unsynced`).
- Freshness: every delta or snapshot applied, and every `current_version`
  heartbeat that names the cache's own version, confirms the cache
  (`on_confirmed`, see `gated.gate.freshness`). The watch asks for a
  heartbeat every third of `stale_after_s` (at least 1 s, at most 60 s).
- Redeem (a handheld's redemption, `gated.redeem`) is asked only on
  the live session: not connected, it answers None at once; a failed call or
  an answer it cannot read is None too, and the lane's offline policy
  decides. It never retries on its own: the operator is waiting.
- Key bytes are never logged: only kids.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import grpc
import structlog

from gated.clock import GateClock
from gated.errors import DeltaRefused, SnapshotError, UplinkError
from gated.redeem import REDEEM_DEADLINE_S, RedeemAnswer, RedeemAsk
from gated.journal import Journal
from gated.rpc import builder, convert
from gated.rpc.v1 import registry_pb2 as pb
from gated.rpc.v1 import registry_pb2_grpc as pb_grpc
from gated.usage import reapply_local_usage
from gated.validation.cache import IN_PLACE_MAX_OPS, EntitlementCache
from gated.validation.keyring import KeyRing

__all__ = ["Uplink", "UplinkError", "channel_options"]

log = structlog.get_logger()

GATE_ID_METADATA = "gated-gate-id"
ACKED_SEQ_TRAILER = "gated-acked-seq"
CONFLICT_SEQ_TRAILER = "gated-conflict-seq"
MAX_MESSAGE_BYTES = 8 << 20
#: An event batch is cut at this many bytes: half of gRPC's default 4 MiB receive limit.
MAX_BATCH_BYTES = 2 << 20
_SAFETY_SWEEP_S = 30.0
#: ReportStatus: every STATUS_EVERY_S, and within _STATUS_CHECK_S of a change.
STATUS_EVERY_S = 5.0
_STATUS_CHECK_S = 1.0
_TIME_SAMPLES = 3
_CALL_TIMEOUT_S = 5.0


_STREAM_EVENTS = pb.DESCRIPTOR.services_by_name["RegistryService"].methods_by_name["StreamEvents"]


class _Stub(pb_grpc.RegistryServiceStub):
    """The contract's stub, but StreamEvents is written a serialized `StreamEventsRequest` at a time:
    a batch is the journal's wire encodings of its records, joined (`convert.stream_batch_bytes`),
    never a message built record by record. The registry reads the same message either way."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        super().__init__(channel)
        self.StreamEvents = channel.stream_stream(
            f"/{_STREAM_EVENTS.containing_service.full_name}/{_STREAM_EVENTS.name}",
            request_serializer=None,  # bytes, as written
            response_deserializer=pb.StreamEventsResponse.FromString,
        )


class UplinkSettings(Protocol):
    """What the uplink reads from `gated.config.UplinkSection` (or any lookalike)."""

    target: str
    plaintext: bool
    ca: Path | None
    cert: Path | None
    key: Path | None
    reconnect_max_s: float


def channel_options() -> list[tuple[str, Any]]:
    """Keepalives find a registry that vanished without closing the connection."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


_BULK_SWITCH_INTERVAL_S = 0.0005
_BULK_YIELD_S = 0.0001


def _yield_to_lanes() -> None:
    """A bulk build's pause between two short steps (a memory copy of 256 KiB, a
    thousand index inserts): the interpreter lock is let go for a moment, so a
    lane waiting for it takes it at once, not after the switch interval."""
    time.sleep(_BULK_YIELD_S)


class _SessionEnded(Exception):
    """The registry closed a call that should last as long as the session."""


class _ProtocolError(Exception):
    """The registry broke the contract (an ack for records never sent): end the session."""


class Uplink:
    def __init__(
        self,
        gate_id: str,
        journal: Journal,
        cache: EntitlementCache,
        keyring: KeyRing,
        clock: GateClock,
        uplink_config: UplinkSettings,
        *,
        on_cache_changed: Callable[..., None] | None = None,
        on_keys_changed: Callable[[], None] | None = None,
        on_confirmed: Callable[[], None] | None = None,
        on_conflict: Callable[[int], Awaitable[None]] | None = None,
        batch_size: int = 2000,
        max_in_flight: int = 8,
        time_sync_every_s: float = 60.0,
        reconnect_base_s: float = 0.25,
        status_every_s: float = STATUS_EVERY_S,
    ) -> None:
        if batch_size < 1 or max_in_flight < 1:
            raise ValueError("batch_size and max_in_flight must be at least 1")
        self.gate_id = gate_id
        self.journal = journal
        # Each record appended from now on keeps what is sent for it (gated/journal.py): a backlog
        # goes out as the records' bytes joined, never read and built record by record.
        journal.keep_wire(convert.journal_wire(journal.gate_id))
        self.cache = cache
        self.keyring = keyring
        self.clock = clock
        self.config = uplink_config
        self.on_cache_changed = on_cache_changed
        self.on_keys_changed = on_keys_changed
        self.on_confirmed = on_confirmed
        self.on_conflict = on_conflict
        stale_after_s = getattr(uplink_config, "stale_after_s", 300.0)
        self.current_every_s = min(60.0, max(1.0, stale_after_s / 3))
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.time_sync_every_s = time_sync_every_s
        self.reconnect_base_s = reconnect_base_s
        self.status_every_s = status_every_s
        self._status_reports = 0
        self._metadata = ((GATE_ID_METADATA, gate_id),) if uplink_config.plaintext else ()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._connected = False
        self._stub: pb_grpc.RegistryServiceStub | None = None  # the live session's, for Redeem
        self._target = self.targets[0]  # the registry instance tried or in use now
        self._instance: str | None = None  # the one the latest session that connected used
        self._last_error: str | None = None
        self._registry_acked = 0  # highest seq the registry acknowledged
        self._journal_acked = 0  # highest seq written to the journal as acknowledged
        self._sent_seq = 0
        self._refused_updates = 0
        self.sessions = 0  # sessions that reached the registry; reconnects = sessions - 1
        self.confirmations = 0  # updates and heartbeats that confirmed the cache
        self._resend_after: int | None = None  # set when the registry says it holds less than we thought
        self._watch_acked_through = 0  # the journal's acknowledged prefix when the entitlement watch was opened
        #: After a snapshot: the journal seq up to which the live cache holds all local usage.
        self.snapshot_journal_seq: int | None = None
        #: The registry's entitlement version named by its latest ack (every use it had counted then).
        self.registry_version = 0

    # ------------------------------------------------------------ public

    def wake(self) -> None:
        """Records were appended: send them now. Safe from any thread."""
        loop = self._loop
        if loop is None:
            self._wake.set()
        elif threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    @property
    def connected(self) -> bool:
        """The stream to the registry is up right now."""
        return self._connected

    @property
    def registry_acked_seq(self) -> int:
        """The highest seq the registry acknowledged on this uplink's streams."""
        return self._registry_acked

    @property
    def unreachable(self) -> bool:
        """Not connected, and the last attempt to reach the registry failed."""
        return not self._connected and self._last_error is not None

    @property
    def journal_acked_seq(self) -> int:
        """The highest seq this uplink has marked acknowledged in the journal."""
        return self._journal_acked

    def status(self) -> dict[str, Any]:
        clock = self.clock.status()
        return {
            "connected": self._connected,
            "target": self._target,
            "plaintext": self.config.plaintext,
            "last_acked_seq": self._registry_acked,
            "journal_acked_seq": self._journal_acked,
            "sent_seq": self._sent_seq,
            "backlog": self.journal.backlog(),
            "cache_version": self.cache.version,
            "cache_tickets": len(self.cache),
            "refused_updates": self._refused_updates,
            "reconnects": max(0, self.sessions - 1),
            "last_error": self._last_error,
            "clock": {"offset_s": clock.offset_s, "trusted": clock.trusted, "age_s": clock.age_s, "rtt_s": clock.rtt_s},
            "status_reports": self._status_reports,
        }

    async def run(self) -> None:
        """Stay connected until cancelled; never returns otherwise."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        credentials = self._credentials()
        targets = self.targets
        if self.config.plaintext:
            log.warning("uplink_plaintext", target=",".join(targets), note="no TLS: the simulator's loopback only")
        attempt = 0
        outage_since: float | None = None
        index = 0
        while True:
            target = self._target = targets[index]
            channel = (
                grpc.aio.insecure_channel(target, options=channel_options())
                if credentials is None
                else grpc.aio.secure_channel(target, credentials, options=channel_options())
            )
            try:
                await self._session(channel, outage_since)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._last_error = _describe(exc)
                if self._connected:  # a session that worked has ended
                    attempt = 0
                    outage_since = time.monotonic()
                    log.warning("uplink_disconnected", target=target, error=self._last_error)
                elif outage_since is None:
                    outage_since = time.monotonic()
                    log.warning("uplink_unreachable", target=target, error=self._last_error)
                else:
                    log.debug("uplink_retry_failed", target=target, error=self._last_error)
                self._connected = False
                index = (index + 1) % len(targets)  # failover: the next instance (it resends from the last ack)
            finally:
                self._connected = False
                await channel.close(grace=None)
            delay = random.uniform(0.0, min(self.config.reconnect_max_s, self.reconnect_base_s * 2**attempt))
            attempt = min(attempt + 1, 30)
            await asyncio.sleep(delay)

    @property
    def targets(self) -> tuple[str, ...]:
        """The registry instances this gate may use, in the order it tries them."""
        configured = tuple(getattr(self.config, "targets", ()) or ())
        return configured or tuple(part.strip() for part in self.config.target.split(",") if part.strip())

    # ----------------------------------------------------------- session

    def _credentials(self) -> grpc.ChannelCredentials | None:
        cfg = self.config
        if cfg.plaintext:
            return None
        try:
            return grpc.ssl_channel_credentials(
                root_certificates=Path(cfg.ca).read_bytes(),
                private_key=Path(cfg.key).read_bytes(),
                certificate_chain=Path(cfg.cert).read_bytes(),
            )
        except (OSError, TypeError) as exc:
            raise UplinkError(f"uplink: cannot read the TLS files (ca, cert, key): {exc}") from None

    async def _session(self, channel: grpc.aio.Channel, outage_since: float | None) -> None:
        stub = _Stub(channel)
        await self._sync_time(stub)
        self._stub = stub
        self._connected = True
        self.sessions += 1
        self._last_error = None
        outage = None if outage_since is None else round(time.monotonic() - outage_since, 3)
        log.info("uplink_connected", target=self._target, outage_s=outage, backlog=self.journal.backlog())
        if self._instance is not None and self._instance != self._target:
            log.warning("uplink_switched", previous=self._instance, target=self._target, outage_s=outage,
                        note="another registry instance: events resent from the last acknowledged record")
        self._instance = self._target
        tasks = [
            asyncio.create_task(self._send_events(stub), name="uplink-events"),
            asyncio.create_task(self._watch_entitlements(stub), name="uplink-entitlements"),
            asyncio.create_task(self._watch_keys(stub), name="uplink-keys"),
            asyncio.create_task(self._keep_time(stub), name="uplink-time"),
            asyncio.create_task(self._report_status(stub), name="uplink-status"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the first failure
            raise _SessionEnded("a session call ended")
        finally:
            self._stub = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -------------------------------------------------------- redemption

    async def redeem(self, ask: RedeemAsk, timeout: float = REDEEM_DEADLINE_S) -> RedeemAnswer | None:
        """Ask the registry to take one benefit; None when it gives no answer (see the rules above)."""
        stub = self._stub
        if stub is None or not self._connected:
            return None
        request = pb.RedeemRequest(redemption_id=ask.redemption_id, ticket_id=ask.ticket_id, benefit=ask.benefit,
                                   lane=ask.lane, at=ask.at)
        try:
            reply = await stub.Redeem(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            log.warning("redeem_no_answer", lane=ask.lane, ticket_id=ask.ticket_id, benefit=ask.benefit, error=_describe(exc))
            return None
        answer = convert.redeem_answer(reply)
        if answer is None:
            log.warning("redeem_answer_unreadable", lane=ask.lane, outcome=reply.outcome)
        return answer

    # ------------------------------------------------------------ events

    def _previous_seq(self, seq: int, floor: int = 0) -> int:
        """The seq of the record just before `seq` as the journal has it, if above `floor`
        (0: none; purged, never written, or of an earlier epoch when `floor` is the epoch's start - 1)."""
        width = 2
        while True:
            low = max(floor, seq - width)
            previous = 0
            for rec in itertools.islice(self.journal.since(low, batch=width), width):
                if rec.seq >= seq:
                    break
                previous = rec.seq
            if previous or low == floor:
                return previous
            if width >= 1 << 16:  # a long stretch purged: the registry holds all of it (it was acknowledged)
                return 0
            width *= 4

    def _event_batch(self, after: int, records: list[tuple[int, bytes | tuple]], epoch: int) -> tuple[bytes, int]:
        """The serialized stream message for `records` (as `Journal.unacked_wire` reads them, from
        the first) and the seq of the last it holds: as many as fit in MAX_BATCH_BYTES, so a
        registry with gRPC's default 4 MiB receive limit takes every batch."""
        while True:
            batch = convert.stream_batch_bytes(self.journal.gate_id, after, records, epoch)
            if len(records) == 1 or len(batch) <= MAX_BATCH_BYTES:
                return batch, records[-1][0]
            records = records[: len(records) // 2]

    async def _send_events(self, stub: _Stub) -> None:
        """One stream per journal epoch, oldest first: a stream carries a single epoch."""
        while True:
            await self._stream_epoch(stub)

    async def _stream_epoch(self, stub: _Stub) -> None:
        """Send the records of one epoch (the oldest with records to send). Returns once every
        record of it was sent and acknowledged and a later epoch's records wait; raises when
        the stream fails."""
        call = stub.StreamEvents(metadata=self._metadata)
        window = asyncio.Semaphore(self.max_in_flight)
        acked = asyncio.Event()
        progress = asyncio.Event()
        resend_after, self._resend_after = self._resend_after, None
        sent_high = 0  # the highest seq written on this stream
        epoch: int | None = None
        epoch_first = 0
        finishing = False

        async def write() -> None:
            nonlocal sent_high, epoch, epoch_first, finishing
            # From the journal's first unacknowledged record, or after what the registry says it holds.
            cursor = 0 if resend_after is None else resend_after
            read_rows = self.journal.unacked_wire if resend_after is None else self.journal.wire_since
            after: int | None = None
            epoch_end: int | None = None
            ahead: asyncio.Future | None = None  # the next batch's read, started before this batch goes out

            def read_from(seq: int) -> asyncio.Future:
                self._wake.clear()  # an append from now on wakes the sweep below, read or not
                return asyncio.ensure_future(asyncio.to_thread(read_rows, seq, self.batch_size))

            try:
                while True:
                    if ahead is None:
                        ahead = read_from(cursor)
                    rows, ahead = await ahead, None
                    if not rows:
                        try:
                            await asyncio.wait_for(self._wake.wait(), _SAFETY_SWEEP_S)
                        except TimeoutError:
                            pass
                        continue
                    if epoch is None:
                        epoch, epoch_first, epoch_end = self.journal.epoch_span(rows[0][0])
                    elif epoch_end is None and epoch != self.journal.epoch:
                        # An older epoch's tail: this boot's epoch may have begun since the stream took it
                        # up. Read after the records, so a record seen here has its epoch row seen too.
                        epoch_end = (await asyncio.to_thread(self.journal.epoch_span, epoch_first))[2]
                    if epoch_end is not None:
                        rows = [r for r in rows if r[0] < epoch_end]
                        if not rows:
                            # This epoch is all sent: once it is acknowledged, a new stream takes the next.
                            finishing = True
                            while self._registry_acked < sent_high:
                                progress.clear()
                                await progress.wait()
                            await call.done_writing()
                            return
                    if after is None:
                        # Within the epoch: its first record follows nothing the registry holds of it.
                        after = await asyncio.to_thread(self._previous_seq, rows[0][0], max(0, epoch_first - 1))
                    # Built off the loop (the lanes decide on it meanwhile), while the next batch is read.
                    batch, last = await asyncio.to_thread(self._event_batch, after, rows, epoch)
                    after = cursor = last
                    ahead = read_from(cursor)
                    await window.acquire()
                    sent_high = self._sent_seq = cursor
                    await call.write(batch)
            finally:
                if ahead is not None:
                    ahead.cancel()

        async def read() -> None:
            try:
                while True:
                    ack = await call.read()
                    if ack is grpc.aio.EOF:
                        # A clean end: read() itself raises AioRpcError when the call ended with an
                        # error status. (A stream-stream call cannot be awaited: that was a TypeError
                        # at the end of every finished epoch, and the session started over.)
                        if finishing:
                            return
                        raise _SessionEnded("registry closed the event stream")
                    if ack.up_to_seq > sent_high:
                        log.error("uplink_ack_beyond_sent", up_to_seq=ack.up_to_seq, highest_sent=sent_high,
                                  note="protocol error: nothing marked; reconnecting")
                        raise _ProtocolError(f"registry acknowledged up to {ack.up_to_seq}, only {sent_high} was sent")
                    window.release()
                    self.registry_version = max(self.registry_version, ack.version)
                    if ack.up_to_seq > self._registry_acked:
                        self._registry_acked = ack.up_to_seq
                        acked.set()
                    progress.set()
            except grpc.aio.AioRpcError as exc:
                held = self._registry_holds(exc)
                if held is not None:
                    self._resend_after = max(held, epoch_first - 1)
                    log.warning("uplink_registry_behind", registry_holds_up_to=held, epoch=f"{epoch or 0:#018x}",
                                note="resending every record after it")
                elif exc.code() is grpc.StatusCode.ALREADY_EXISTS:
                    await self._registry_conflict(exc, epoch or 0, epoch_first, sent_high)
                raise

        async def record_acks() -> None:
            # Acks are coalesced: one journal write for however many arrived meanwhile.
            while True:
                await acked.wait()
                acked.clear()
                await self._record_acks()

        tasks = [asyncio.create_task(c) for c in (write(), read(), record_acks())]
        reader = tasks[1]
        try:
            pending = set(tasks)
            while reader in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            await self._record_acks()  # the epoch is done: its last acks are written before the next stream
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            call.cancel()

    async def _record_acks(self) -> None:
        up_to = self._registry_acked
        if up_to > self._journal_acked:
            await asyncio.to_thread(self.journal.mark_acked, up_to, count=False)  # the number is not read here
            self._journal_acked = up_to

    async def _registry_conflict(self, exc: grpc.aio.AioRpcError, epoch: int, epoch_first: int, sent_high: int) -> None:
        """The registry holds other content under one of our (epoch, seq): it refused the batch.

        Nothing from that seq on was acknowledged, so those records move to a new epoch
        and go up again as new events; both versions stay visible at the registry.
        `on_conflict(seq)` is awaited first: the registry may hold admissions the cache
        lacks, and the daemon holds limited-entry admissions from before the move on
        (`gated.gate.catchup`), its own record moving with the rest."""
        seq = None
        for key, value in exc.trailing_metadata() or ():
            if key == CONFLICT_SEQ_TRAILER:
                try:
                    seq = int(value)
                except (TypeError, ValueError):
                    seq = None
        log.error("uplink_event_conflict", error=_describe(exc), epoch=f"{epoch:#018x}", seq=seq,
                  note="the registry holds different records under these seqs")
        if seq is None or not epoch_first <= seq <= sent_high:
            return
        if await asyncio.to_thread(self.journal.acked_through) >= seq:
            return
        if self.on_conflict is not None:
            try:
                await self.on_conflict(seq)
            except Exception as exc:
                log.error("conflict_callback_failed", error=repr(exc))
        new = await asyncio.to_thread(self.journal.new_epoch_from, seq)
        log.warning("uplink_new_epoch", from_seq=seq, epoch=f"{new:#018x}", note="records from this seq are sent again under it")

    @staticmethod
    def _registry_holds(exc: grpc.aio.AioRpcError) -> int | None:
        """The seq the registry says it holds up to, from a FAILED_PRECONDITION's trailers."""
        if exc.code() is not grpc.StatusCode.FAILED_PRECONDITION:
            return None
        for key, value in exc.trailing_metadata() or ():
            if key == ACKED_SEQ_TRAILER:
                try:
                    held = int(value)
                except (TypeError, ValueError):
                    return None
                return held if held >= 0 else None
        return None

    # ------------------------------------------------------ entitlements

    async def _watch_entitlements(self, stub: pb_grpc.RegistryServiceStub) -> None:
        refusals = 0
        while True:
            self._watch_acked_through = self.journal.acked_through()  # a snapshot includes at least these
            request = pb.WatchEntitlementsRequest(have_version=self.cache.version, current_every_s=self.current_every_s)
            call = stub.WatchEntitlements(request, metadata=self._metadata)
            assembler = convert.SnapshotAssembler()
            try:
                async for update in call:
                    try:
                        await self._apply_update(update, assembler)
                        refusals = 0
                    except (DeltaRefused, SnapshotError) as exc:
                        refusals += 1
                        self._refused_updates += 1
                        self._last_error = f"entitlement update refused: {exc}"
                        log.warning("entitlement_update_refused", error=str(exc), cache_version=self.cache.version)
                        break
                else:
                    raise _SessionEnded("registry closed the entitlement watch")
            finally:
                call.cancel()
            # Ask again with the version kept; back off if the registry keeps sending bad updates.
            await asyncio.sleep(min(self.config.reconnect_max_s, 0.1 * 2 ** min(refusals, 10)))

    async def _apply_update(self, update: pb.WatchEntitlementsResponse, assembler: convert.SnapshotAssembler) -> None:
        which = update.WhichOneof("update")
        if which == "snapshot":
            complete = assembler.add(update.snapshot)
            if complete is not None:
                await self._load_snapshot(*complete)
        elif which == "delta":
            if assembler.in_progress:
                raise convert.MalformedUpdate("a delta in the middle of a snapshot")
            await self._apply_delta(update.delta)
            self._cache_changed(snapshot=False)
            self._confirmed()
        elif which == "current_version":
            if assembler.in_progress:
                raise convert.MalformedUpdate("a heartbeat in the middle of a snapshot")
            if update.current_version == self.cache.version:
                self._confirmed()
            else:
                log.debug("entitlement_heartbeat_other_version", said=update.current_version, have=self.cache.version)
        else:
            raise convert.MalformedUpdate("an update with neither snapshot nor delta")

    async def _apply_delta(self, msg: pb.Delta) -> None:
        """A small delta in place; a large one of usage only in place a step at a time
        (`EntitlementCache.apply_in_steps`); any other large one converted and built in a
        worker thread on a copy of the table, then swapped in: the lanes go on deciding."""
        if len(msg.ops) <= IN_PLACE_MAX_OPS:
            delta = convert.delta_from_proto(msg)
            if self.cache.fits_in_place(delta):
                self.cache.apply(delta)
                return
        # Meanwhile the worker thread holds the interpreter lock most of the
        # time: the deciding thread gets it within 0.5 ms instead of Python's
        # usual 5 ms. And the tens of thousands of objects a large delta makes
        # would start the cyclic garbage collector, whose full passes hold
        # every thread for tens of ms; none of them is in a cycle (reference
        # counts free them once swapped in), so the collector rests meanwhile.
        collecting, interval = gc.isenabled(), sys.getswitchinterval()
        gc.disable()
        sys.setswitchinterval(min(interval, _BULK_SWITCH_INTERVAL_S))
        try:
            await self._stage_and_swap(msg)
        finally:
            sys.setswitchinterval(interval)
            if collecting:
                gc.enable()

    async def _stage_and_swap(self, msg: pb.Delta) -> None:
        # Upserts only (an import): the builder process converts and packs them,
        # and this process merges the columns in whole-array steps. Usage only (a
        # backlog's passages counted): converted in a thread, applied in place a
        # step at a time between the lanes' decisions. Anything else, or no
        # builder: converted and applied in a thread on a copy, op by op.
        bulk = None
        if msg.ops and msg.ops[0].WhichOneof("op") == "upsert":  # else never upserts only: no round trip to the builder
            try:
                raw = await asyncio.to_thread(msg.SerializeToString)
                bulk = await builder.bulk_upserts(raw)
            except builder.BuilderUnavailable as exc:
                log.warning("delta_builder_unavailable", error=str(exc))
        if isinstance(bulk, str):
            raise DeltaRefused(bulk)
        if bulk is not None:
            staging = self.cache.stage_bulk(msg.base_version, msg.version, bulk)
            del bulk
            try:
                await asyncio.to_thread(staging.build, _yield_to_lanes)
                self.cache.swap(staging)
            finally:
                self.cache.discard(staging)
            log.info("entitlement_delta_swapped", version=msg.version, ops=len(msg.ops), tickets=len(self.cache))
            return
        delta = await asyncio.to_thread(convert.delta_from_proto, msg)
        steps = self.cache.apply_in_steps(delta)
        if steps is not None:
            for _applied in steps:
                await asyncio.sleep(0)  # the lanes decide between two steps
            return
        staging = self.cache.stage(delta)
        try:
            await asyncio.to_thread(staging.build)
            self.cache.swap(staging)
        finally:
            self.cache.discard(staging)
        log.info("entitlement_delta_swapped", version=delta.version, ops=len(delta.ops), tickets=len(self.cache))

    async def _load_snapshot(self, version: int, data: bytes) -> None:
        fresh = EntitlementCache()
        await asyncio.to_thread(fresh.load_snapshot, data)  # checks everything; raises SnapshotError
        if fresh.version != version:
            raise convert.MalformedUpdate(f"snapshot says version {fresh.version}, its chunks said {version}")
        # This gate's usage the registry may not have had: everything not acknowledged when we asked.
        read_to, reapplied = await asyncio.to_thread(self._reapply_since, fresh, self._watch_acked_through)
        self.cache.table, self.cache.version = fresh.table, fresh.version
        # Records journaled meanwhile went into the old table: count them on the new one too.
        late_to, late = self._reapply_since(self.cache, read_to)
        self.snapshot_journal_seq = late_to
        log.info("entitlement_snapshot_loaded", version=version, tickets=len(self.cache), size=len(data),
                 local_usage_reapplied=reapplied + late, journal_seq=late_to)
        self._cache_changed(snapshot=True)
        self._confirmed()

    def _confirmed(self) -> None:
        """The registry says the cache is current (on the loop thread)."""
        self.confirmations += 1
        if self.on_confirmed is not None:
            try:
                self.on_confirmed()
            except Exception as exc:
                log.error("confirmed_callback_failed", error=repr(exc))

    def _reapply_since(self, cache: EntitlementCache, after_seq: int) -> tuple[int, int]:
        """Count local usage journaled after `after_seq` on `cache`; (the last seq read, how many applied)."""
        usage = list(self.journal.usage_since(after_seq))
        return (usage[-1].seq if usage else after_seq), reapply_local_usage(cache, usage)

    def _cache_changed(self, *, snapshot: bool) -> None:
        """Tell the daemon, which persists the cache (a snapshot at once, deltas in batches).

        The update is applied by now: a failing callback is logged, never taken
        for a bad update (which would refuse and re-request a good one)."""
        if self.on_cache_changed is not None:
            try:
                self.on_cache_changed(snapshot=snapshot)
            except Exception as exc:
                log.error("cache_changed_callback_failed", error=repr(exc))

    # -------------------------------------------------------------- keys

    async def _watch_keys(self, stub: pb_grpc.RegistryServiceStub) -> None:
        """Follow the key ring. A malformed update is refused and the watch reopened:
        the registry starts every watch with the complete ring, so nothing is missed
        (skipping it and reading on would lose a retirement for good)."""
        refusals = 0
        while True:
            call = stub.WatchKeys(pb.WatchKeysRequest(have_kids=self.keyring.kids()), metadata=self._metadata)
            try:
                async for update in call:
                    try:
                        change = convert.key_change_from_proto(update)
                    except convert.MalformedUpdate as exc:
                        refusals += 1
                        self._refused_updates += 1
                        self._last_error = f"key update refused: {exc}"
                        log.warning("key_update_refused", error=str(exc))
                        break
                    refusals = 0
                    self._apply_key_change(change)
                else:
                    raise _SessionEnded("registry closed the key watch")
            finally:
                call.cancel()
            await asyncio.sleep(min(self.config.reconnect_max_s, 0.1 * 2 ** min(refusals, 10)))

    def _apply_key_change(self, change: convert.KeyChange) -> None:
        if not change.complete and not change.add and not change.retire:
            return  # a registry that manages no keys: the ring stays as given locally
        keys = {} if change.complete else dict(self.keyring.keys)
        keys.update(change.add)
        for kid in change.retire:
            keys.pop(kid, None)
        before = set(self.keyring.kids())
        self.keyring.replace(keys)  # all at once: a verifier sees the old ring or the new
        after = set(self.keyring.kids())
        log.info("keys_updated", kids=sorted(after), added=sorted(after - before), retired=sorted(before - after))
        if self.on_keys_changed is not None:
            self.on_keys_changed()

    # ------------------------------------------------------------ status

    async def _gate_status(self) -> convert.GateStatus:
        clock = self.clock.status()
        backlog = await asyncio.to_thread(self.journal.backlog)
        return convert.GateStatus(
            backlog=backlog, cache_version=self.cache.version, cache_tickets=len(self.cache),
            clock_offset_ms=None if clock.offset_s is None else round(clock.offset_s * 1000),
            clock_trusted=clock.trusted, at=self.clock.now(),
        )

    async def _report_status(self, stub: pb_grpc.RegistryServiceStub) -> None:
        """ReportStatus every `status_every_s`, and soon after the backlog, the cache version or
        the clock's trust changes. A failed report is tried again at the next check; a registry
        without the call (UNIMPLEMENTED) is not asked again this session."""
        sent_state, sent_at = None, float("-inf")
        while True:
            status = await self._gate_status()
            state = (status.backlog, status.cache_version, status.clock_trusted)
            if state != sent_state or time.monotonic() - sent_at >= self.status_every_s:
                try:
                    await stub.ReportStatus(convert.gate_status_to_proto(status), timeout=_CALL_TIMEOUT_S,
                                            metadata=self._metadata)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                        log.info("uplink_status_unsupported", target=self._target,
                                 note="this registry takes no status reports")
                        return
                    log.debug("uplink_status_failed", error=_describe(exc))
                else:
                    self._status_reports += 1
                # A failed report waits its turn too: a registry that errs is not asked every second.
                sent_state, sent_at = state, time.monotonic()
            await asyncio.sleep(min(_STATUS_CHECK_S, self.status_every_s))

    # -------------------------------------------------------------- time

    async def _sync_time(self, stub: pb_grpc.RegistryServiceStub) -> None:
        best: tuple[float, float] | None = None
        for _ in range(_TIME_SAMPLES):
            sent_wall = time.time()
            sent = time.perf_counter()
            reply = await stub.GetTime(pb.GetTimeRequest(), timeout=_CALL_TIMEOUT_S, metadata=self._metadata)
            rtt = time.perf_counter() - sent
            offset = reply.unix_nanos / 1e9 - (sent_wall + rtt / 2)
            if best is None or rtt < best[1]:
                best = (offset, rtt)
        self.clock.update(*best)

    async def _keep_time(self, stub: pb_grpc.RegistryServiceStub) -> None:
        while True:
            await asyncio.sleep(self.time_sync_every_s)
            await self._sync_time(stub)
