"""What the gate keeps on disk besides its journal, so a reboot with no
network admits correctly from what it last knew.

- the key ring: `<state_dir>/keyring.json` (mode 0600). Once it exists it is
  the authority (the registry may have added or retired keys since the
  bootstrap key file was written); before that, the config's key file is.
- the entitlement cache: `<state_dir>/cache.snap` (a snapshot, CRC-checked)
  and `<state_dir>/cache.json` (the journal sequence whose local usage it
  includes). Local usage journaled after that sequence (passages,
  redemptions) is replayed on load, so anti-passback and entry counts
  survive a power cut too. The replay sets the absolute values each record
  holds: exact, because the sequence saved is exactly what the saved cache
  includes.
- a snapshot from the registry lacks this gate's usage the registry had not
  stored when it cut it: `gated.usage.reapply_local_usage` adds it back (by counting
  again, not by absolute values: those would undo other gates' entries the
  snapshot does include) before the snapshot replaces the live cache, and
  the cache is then saved with the sequence that re-application reached,
  so a snapshot never erases local usage it does not include.

Every write is atomic: a temp file, fsync, rename, fsync of the directory.
A damaged cache file is logged and ignored (the gate starts empty and the
registry resends), never half-loaded.

At run time `CacheSaver` writes the live cache: a fresh registry snapshot at
once, deltas and local usage at the gate's periodic save; at start
`gated.usage.replay_usage` re-applies what the journal holds after the saved sequence
(`rebase_saved_seq` first: a journal that lost its tail ends below it).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import structlog

from gated.atomic_file import write_atomically
from gated.errors import GatedError, StateError
from gated.keyfile import load_keyfile, save_keyfile
from gated.journal import Journal
from gated.validation import EntitlementCache, KeyRing

log = structlog.get_logger("gated.gate.state")


class StateStore:
    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(f"{self.dir}: cannot use as the state directory: {exc.strerror or exc}") from None
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise StateError(f"{self.dir}: the state directory is not writable by this user")
        self.keyring_path = self.dir / "keyring.json"
        self.cache_path = self.dir / "cache.snap"
        self.cache_meta_path = self.dir / "cache.json"

    # ---- keys ----

    def load_keyring(self, bootstrap: Path) -> KeyRing:
        if self.keyring_path.exists():
            return load_keyfile(self.keyring_path)
        return load_keyfile(bootstrap)

    def save_keyring(self, ring: KeyRing) -> None:
        save_keyfile(self.keyring_path, ring, overwrite=True)

    # ---- cache ----

    def load_cache(self) -> tuple[EntitlementCache, int]:
        """The persisted cache and the journal seq it includes; empty if none or damaged."""
        cache = EntitlementCache()
        if not self.cache_path.exists():
            return cache, 0
        try:
            cache.load_snapshot(self.cache_path.read_bytes())
            meta = json.loads(self.cache_meta_path.read_text()) if self.cache_meta_path.exists() else {}
            return cache, int(meta.get("journal_seq", 0))
        # TypeError, AttributeError, RecursionError: a cache.json that is JSON but not {"journal_seq": N}
        except (OSError, ValueError, TypeError, AttributeError, RecursionError, GatedError) as exc:
            log.error("cache_file_unusable", path=str(self.cache_path), error=str(exc))
            return EntitlementCache(), 0

    def save_cache(self, snapshot: bytes, journal_seq: int) -> None:
        write_atomically(self.cache_path, snapshot)
        write_atomically(self.cache_meta_path, json.dumps({"journal_seq": journal_seq}).encode())

    def save_cache_seq(self, journal_seq: int) -> None:
        """Only the journal seq the saved cache includes (the snapshot is unchanged)."""
        write_atomically(self.cache_meta_path, json.dumps({"journal_seq": journal_seq}).encode())


def rebase_saved_seq(store: StateStore, journal: Journal, saved_seq: int) -> int:
    """At start, before anything is appended: the seq to replay usage after.

    A journal whose seqs end below `saved_seq` lost a tail the saved cache
    had seen (an SD card that lied about a flush). Everything it still holds
    came before the save, so the cache includes it; but this boot's records
    take seqs leaping from the surviving end, possibly still below
    `saved_seq`, and a replay after `saved_seq` would skip their usage at the
    next start. So the position becomes the journal's end, saved at once."""
    end = journal.high_water
    if saved_seq <= end:
        return saved_seq
    log.warning("journal_behind_saved_cache", saved_seq=saved_seq, journal_seq=end,
                note="the journal lost records the saved cache includes; usage is replayed after the journal's end from now on")
    try:
        store.save_cache_seq(end)
    except GatedError as exc:  # this start replays right; the next would skip this boot's usage again
        log.error("cache_position_save_failed", error=str(exc))
    return end



class CacheSaver:
    """Writes the live cache to `store` when it changed, never holding the loop:
    the table is copied and encoded in worker threads while the lanes decide;
    the tickets they change meanwhile are brought into the copy on the loop
    (`EntitlementCache.begin_copy`), so the file is one consistent state.

    The cache stays marked dirty until a save succeeds (a full disk must not
    lose the next attempt)."""

    def __init__(self, store: StateStore, journal: Journal, cache: EntitlementCache):
        self.store = store
        self.journal = journal
        self.cache = cache
        self.dirty = False
        self._lock = asyncio.Lock()

    def mark_dirty(self) -> None:
        self.dirty = True

    async def save(self, journal_seq: int | None = None) -> None:
        """Saved with `journal_seq` when given (what the cache is known to include),
        else the journal's last seq (every record's usage is in the cache before
        the record is journaled)."""
        async with self._lock:
            self.dirty = False
            tail = self.journal.tail(1)
            last = tail[-1].seq if tail else 0
            seq = last if journal_seq is None else min(journal_seq, last)
            try:
                copy = self.cache.begin_copy()
                try:
                    await asyncio.to_thread(copy.build)
                finally:
                    finished = self.cache.finish_copy(copy)  # back on the loop: cheap
                if not finished:  # the table was replaced or grew meanwhile: the next save takes it
                    self.dirty = True
                    return
                snapshot = await asyncio.to_thread(copy.snapshot)
                await asyncio.to_thread(self.store.save_cache, snapshot, seq)
            except BaseException:
                self.dirty = True
                raise

    async def save_keys(self, ring: KeyRing) -> None:
        try:
            await asyncio.to_thread(self.store.save_keyring, ring)
        except GatedError as exc:
            log.error("keyring_save_failed", error=str(exc))
