"""Delivery bookkeeping shared by the socket and the in-process backends (no network I/O here).

Actor side, `Outbox`: every transition gets a sequence number in the actor's session (a random
id chosen when the client is built) and stays, already encoded, until the learner acknowledges
it: in memory up to a count and a byte limit, then (optionally) in a bounded `Spool` on disk, so
a learner outage of minutes loses nothing; past both limits the oldest are dropped (counted).
Sequence numbers held are always one contiguous range [base, next_seq): the oldest are on disk,
the newest in memory, and dropping removes the oldest, so `base` tells the learner what it will
never get.

Learner side, `SessionTable`: per (actor_id, session) the next sequence number expected, seeded
from what the learner's data store durably holds, so an actor that re-sends after a learner
restart is deduplicated exactly. A data message (first, base, n items) is handled as:
  - unknown session: expect `base` (a new actor starts at 0);
  - base > expected: the actor dropped [expected, base) from a full queue; skip them (counted
    as skipped; the actor also reports its own count of dropped transitions);
  - first > expected: a gap (earlier messages were lost, e.g. sent to a learner that died):
    deliver nothing, answer with a negative ack so the actor goes back;
  - otherwise deliver items[expected - first:] (the part before is duplicates) and advance.
The ack always carries expected - 1: the highest sequence number delivered contiguously.
State is bounded: at most `max_actors` actor ids (others are refused) and
`max_sessions_per_actor` sessions each; a session forgotten to make room is remembered as
retired (up to `max_retired`), and data for a retired session is refused, so a recorded message
of an old session cannot be delivered again.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path


class _NoRoom(Exception):
    """An item the spool cannot take."""


class _Segment:
    def __init__(self, path: Path, start: int):
        self.path, self.start = path, start
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.offsets = array("q")
        self.size = 0

    def length(self, i: int) -> int:
        end = self.offsets[i + 1] if i + 1 < len(self.offsets) else self.size
        return end - self.offsets[i]

    def delete(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


class Spool:
    """Encoded items on disk, oldest first, in segment files of ~`segment_bytes`; at most
    `max_bytes` of items are held (a segment's file is deleted once all its items are released,
    so the disk may hold up to one segment more). Not thread-safe: the Outbox locks."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int, segment_bytes: int = 64 << 20):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.segment_bytes = int(max_bytes), int(segment_bytes)
        self._segments: deque[_Segment] = deque()
        self.start = self.end = 0  # items held: sequence numbers [start, end)
        self.bytes = 0

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, seq: int, item: bytes) -> None:
        if len(self) == 0:
            self.start = self.end = seq
        if seq != self.end:
            raise ValueError(f"spool appends must be contiguous: got {seq}, expected {self.end}")
        segment = self._segments[-1] if self._segments else None
        if segment is None or segment.size >= self.segment_bytes:
            segment = _Segment(self.directory / f"{seq:016d}.spool", seq)
            self._segments.append(segment)
        os.pwrite(segment.fd, item, segment.size)
        segment.offsets.append(segment.size)
        segment.size += len(item)
        self.end += 1
        self.bytes += len(item)

    def _locate(self, seq: int) -> tuple[_Segment, int]:
        for segment in self._segments:
            if segment.start <= seq < segment.start + len(segment.offsets):
                return segment, seq - segment.start
        raise KeyError(seq)

    def get(self, seq: int) -> bytes:
        segment, i = self._locate(seq)
        return os.pread(segment.fd, segment.length(i), segment.offsets[i])

    def release_below(self, seq: int) -> int:
        """Forgets the items before `seq`; returns how many were held."""
        seq = min(max(seq, self.start), self.end)
        released = seq - self.start
        for segment in self._segments:  # bytes of the released items, a segment at a time
            lo = max(self.start, segment.start) - segment.start
            hi = min(seq, segment.start + len(segment.offsets)) - segment.start
            if hi > lo:
                end = segment.offsets[hi] if hi < len(segment.offsets) else segment.size
                self.bytes -= end - segment.offsets[lo]
            if segment.start + len(segment.offsets) >= seq:
                break
        self.start = seq
        while self._segments and (
            self._segments[0].start + len(self._segments[0].offsets) <= seq
            and (len(self._segments) > 1 or seq >= self.end)
        ):
            self._segments.popleft().delete()
        return released

    def close(self) -> None:
        while self._segments:
            self._segments.popleft().delete()
        shutil.rmtree(self.directory, ignore_errors=True)


class Outbox:
    """Encoded transitions of one actor session awaiting acknowledgement. Thread-safe.

    `put` is called from the actor's main loop; `peek_batch`, `mark_sent`, `ack` and `rewind`
    from the I/O thread. Memory holds at most `capacity` items and `max_bytes` bytes (at least
    the newest item); older ones move to the spool (`spool_dir`, at most `spool_max_bytes`) and
    are dropped, oldest first, only when it is full too.
    """

    def __init__(self, capacity: int, max_bytes: int, spool_dir: str | os.PathLike | None = None,
                 spool_max_bytes: int = 0):
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._empty = threading.Condition(self._lock)
        self._items: dict[int, bytes] = {}  # in memory: [mem_base, next_seq)
        self._spool = Spool(spool_dir, spool_max_bytes) if spool_dir and spool_max_bytes > 0 else None
        self._bytes = 0
        self.base = 0  # oldest sequence number held
        self.mem_base = 0  # oldest sequence number in memory (older ones are in the spool)
        self.next_seq = 0  # sequence number of the next transition put
        self.next_send = 0  # first sequence number not sent in the current round
        self.dropped = 0
        self.spool_errors = 0  # writes to the spool that failed (their items were dropped)
        self.last_spool_error: OSError | None = None

    def put(self, item: bytes) -> int:
        """Queues one encoded transition; returns how many old ones were dropped to make room."""
        with self._lock:
            self._items[self.next_seq] = item
            self.next_seq += 1
            self._bytes += len(item)
            dropped = 0
            while len(self._items) > self.capacity or (
                self._bytes > self.max_bytes and len(self._items) > 1
            ):
                old = self._items.pop(self.mem_base)
                self._bytes -= len(old)
                spool = self._spool
                try:
                    if spool is None or len(old) > spool.max_bytes:
                        raise _NoRoom
                    while spool.bytes + len(old) > spool.max_bytes:
                        dropped += spool.release_below(spool.start + 1)
                    spool.append(self.mem_base, old)
                except (_NoRoom, OSError) as error:
                    # No room (or the disk failed): it goes, and everything older with it, so
                    # the range held stays contiguous.
                    if isinstance(error, OSError):
                        self.spool_errors += 1
                        self.last_spool_error = error
                    if spool is not None:
                        dropped += spool.release_below(spool.end)
                    dropped += 1
                self.mem_base += 1
                self.base = spool.start if spool is not None and len(spool) else self.mem_base
            self.dropped += dropped
            self.next_send = max(self.next_send, self.base)
            return dropped

    @property
    def pending(self) -> int:
        """Transitions not yet acknowledged (sent or not, in memory or spooled)."""
        with self._lock:
            return self.next_seq - self.base

    @property
    def spooled(self) -> int:
        """Transitions waiting on disk."""
        with self._lock:
            return self.mem_base - self.base

    @property
    def inflight(self) -> int:
        """Transitions sent in the current round and not yet acknowledged."""
        with self._lock:
            return max(0, self.next_send - self.base)

    def _item(self, seq: int) -> bytes:
        return self._items[seq] if seq >= self.mem_base else self._spool.get(seq)

    def peek_batch(
        self, max_items: int, max_bytes: int, window: int
    ) -> tuple[int, int, list[bytes]] | None:
        """(first seq, base, items) of the next batch to send, or None.

        At most `max_items` items totalling at most `max_bytes` (at least one item), and only
        while fewer than `window` transitions are in flight.
        """
        with self._lock:
            start = max(self.next_send, self.base)
            room = min(max_items, window - (start - self.base), self.next_seq - start)
            if room <= 0:
                return None
            items, total = [], 0
            for seq in range(start, start + room):
                item = self._item(seq)
                if items and total + len(item) > max_bytes:
                    break
                items.append(item)
                total += len(item)
            return start, self.base, items

    def mark_sent(self, end: int) -> None:
        """Everything before `end` has been sent in this round."""
        with self._lock:
            self.next_send = max(self.next_send, self.base, end)

    def ack(self, acked: int) -> bool:
        """Releases everything up to and including `acked`; True if that released anything."""
        with self._lock:
            acked = min(acked, self.next_seq - 1)
            if acked < self.base:
                return False
            if self._spool is not None:
                self._spool.release_below(acked + 1)
            for seq in range(max(self.base, self.mem_base), acked + 1):
                self._bytes -= len(self._items.pop(seq))
            self.base = acked + 1
            self.mem_base = max(self.mem_base, self.base)
            self.next_send = max(self.next_send, self.base)
            if self.base == self.next_seq:
                self._empty.notify_all()
            return True

    def rewind(self, to: int | None = None) -> None:
        """Re-send from `to` (default: the oldest unacknowledged) in the next round."""
        with self._lock:
            self.next_send = self.base if to is None else max(self.base, min(to, self.next_send))

    def wait_empty(self, timeout: float) -> bool:
        """Blocks until everything is acknowledged or `timeout` seconds pass."""
        with self._lock:
            return self._empty.wait_for(lambda: self.base == self.next_seq,
                                        timeout=max(0.0, timeout))

    def close(self) -> None:
        """Deletes the spool's files (what they held is given up)."""
        with self._lock:
            if self._spool is not None:
                self._spool.close()


@dataclass
class _Session:
    session: str
    next_expected: int | None = None  # None until the first data message sets it from `base`
    delivered: int = 0
    duplicates: int = 0
    skipped: int = 0
    dropped: int = 0  # as reported by the actor: its queue was full
    last_seen: float = 0.0


@dataclass
class _Actor:
    sessions: dict[str, _Session] = field(default_factory=dict)
    current: str = ""
    sessions_seen: int = 0
    delivered: int = 0  # totals over all sessions, forgotten ones included
    duplicates: int = 0
    skipped: int = 0
    stats_messages: int = 0
    last_seen: float = 0.0
    warned_shared_id: bool = False


@dataclass
class Plan:
    """What to do with one data message: deliver items[offset:offset + count], then ack.
    `refused` names why the message was not considered at all (then nothing is acked)."""

    offset: int
    count: int
    nack: bool
    new_session: bool
    refused: str | None = None


class SessionTable:
    """Learner-side delivery state of every actor session. Thread-safe.

    Sessions are keyed by (actor_id, session), so an actor that restarts (new session) starts
    from its own sequence 0 and two processes mistakenly sharing an actor_id are each delivered
    exactly once (their data are merged under that id in `actors()`, with a warning).
    Bounded as the module docstring says.
    """

    def __init__(self, max_sessions_per_actor: int = 16, shared_id_window_s: float = 10.0,
                 max_actors: int = 64, max_retired: int = 4096, idle_actor_s: float = 60.0):
        self._lock = threading.Lock()
        self._actors: dict[str, _Actor] = {}
        self._max_sessions = max_sessions_per_actor
        self._max_actors = max_actors
        self._retired: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._max_retired = max_retired
        self._shared_window = shared_id_window_s
        self._idle_actor_s = idle_actor_s

    def seed(self, delivered: dict[str, dict[str, int]]) -> None:
        """Known sessions and their next expected sequence numbers (e.g. what a data store
        recovered after a restart): data they re-send is recognised as duplicates. Seeded
        actors count as idle until they are heard from, so they make room for new ones."""
        with self._lock:
            for actor_id, sessions in delivered.items():
                for session, nxt in sessions.items():
                    state = self._session(actor_id, session, 0.0)[1]
                    if state is not None:
                        state.next_expected = max(state.next_expected or 0, int(nxt))

    def _retire(self, actor_id: str, session: str) -> None:
        self._retired[(actor_id, session)] = None
        while len(self._retired) > self._max_retired:
            self._retired.popitem(last=False)

    def _session(self, actor_id: str, session: str, now: float
                 ) -> tuple[_Actor | None, _Session | None, bool | str]:
        """(actor, session state, new), creating them, or (None, None, reason it is refused).
        Only data messages get here: nothing an unsequenced message (hello, stats) says can
        create, refresh or evict state."""
        actor = self._actors.get(actor_id)
        if actor is None:
            if len(self._actors) >= self._max_actors:
                idle_id = min(self._actors, key=lambda a: self._actors[a].last_seen)
                idle = self._actors[idle_id]
                if now - idle.last_seen < self._idle_actor_s:
                    return None, None, "too_many_actors"
                for old in idle.sessions:  # an actor gone quiet makes room
                    self._retire(idle_id, old)
                del self._actors[idle_id]
            actor = self._actors[actor_id] = _Actor()
        state = actor.sessions.get(session)
        new = state is None
        if new:
            if (actor_id, session) in self._retired:
                return None, None, "retired_session"
            if len(actor.sessions) >= self._max_sessions:
                oldest = min(actor.sessions.values(), key=lambda s: s.last_seen)
                if now - oldest.last_seen < self._shared_window:
                    return None, None, "too_many_sessions"  # all of them are live
                del actor.sessions[oldest.session]
                self._retire(actor_id, oldest.session)
            state = actor.sessions[session] = _Session(session, last_seen=now)
            actor.sessions_seen += 1
        actor.current = session
        actor.last_seen = state.last_seen = now
        return actor, state, new

    def active_actors(self, within_s: float = 10.0) -> int:
        """Actor ids heard from in the last `within_s` seconds (at least 1)."""
        now = time.time()
        with self._lock:
            return max(1, sum(now - a.last_seen < within_s for a in self._actors.values()))

    def shared_id(self, actor_id: str) -> bool:
        """True (once per actor_id) when two sessions of one id were active within the window:
        two live processes are using the same actor_id."""
        with self._lock:
            actor = self._actors.get(actor_id)
            if actor is None or actor.warned_shared_id:
                return False
            recent = [s for s in actor.sessions.values()
                      if actor.last_seen - s.last_seen < self._shared_window and s.delivered]
            if len(recent) > 1:
                actor.warned_shared_id = True
                return True
            return False

    def count_stats(self, actor_id: str) -> None:
        """Counts a stats message of a known actor (stats never create state)."""
        with self._lock:
            actor = self._actors.get(actor_id)
            if actor is not None:
                actor.stats_messages += 1

    def plan(
        self, actor_id: str, session: str, first: int, base: int, n: int, dropped: int = 0
    ) -> Plan:
        """Decides what part of a data message (seqs first..first+n-1) is new. `dropped` is the
        actor's count of transitions it dropped from a full queue (reported, not checked)."""
        with self._lock:
            actor, state, new = self._session(actor_id, session, time.time())
            if actor is None:
                return Plan(0, 0, nack=False, new_session=False, refused=new)
            state.dropped = max(state.dropped, dropped)
            fresh = state.next_expected is None
            if fresh:
                state.next_expected = base
            elif base > state.next_expected:
                state.skipped += base - state.next_expected
                actor.skipped += base - state.next_expected
                state.next_expected = base
            if first > state.next_expected:
                return Plan(0, 0, nack=True, new_session=new)
            offset = state.next_expected - first
            if offset >= n:
                state.duplicates += n
                actor.duplicates += n
                return Plan(n, 0, nack=False, new_session=new)
            state.duplicates += offset
            actor.duplicates += offset
            return Plan(offset, n - offset, nack=False, new_session=new)

    def commit(self, actor_id: str, session: str, count: int) -> None:
        """The planned `count` transitions were delivered."""
        with self._lock:
            actor = self._actors[actor_id]
            state = actor.sessions.get(session)
            if state is not None and state.next_expected is not None:
                state.next_expected += count
                state.delivered += count
                actor.delivered += count

    def acked(self, actor_id: str, session: str) -> int:
        """Highest sequence number delivered contiguously (-1: none)."""
        with self._lock:
            actor = self._actors.get(actor_id)
            state = actor.sessions.get(session) if actor else None
            if state is None or state.next_expected is None:
                return -1
            return state.next_expected - 1

    def actors(self) -> dict[str, dict]:
        """Per actor_id: the current session and counters summed over its sessions."""
        with self._lock:
            out = {}
            for actor_id, actor in self._actors.items():
                current = actor.sessions.get(actor.current)
                out[actor_id] = {
                    "session": actor.current,
                    "sessions": actor.sessions_seen,
                    "transitions": actor.delivered,
                    "duplicates": actor.duplicates,
                    "skipped": actor.skipped,
                    "dropped": sum(s.dropped for s in actor.sessions.values()),
                    "acked": (current.next_expected - 1)
                    if current and current.next_expected is not None else -1,
                    "stats_messages": actor.stats_messages,
                    "last_seen": actor.last_seen,
                }
            return out
