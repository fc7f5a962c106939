"""Delivery bookkeeping shared by the socket and the in-process backends (no I/O here).

Actor side, `Outbox`: every transition gets a sequence number in the actor's session (a random
id chosen when the client is built) and stays, already encoded, until the learner acknowledges
it. Sequence numbers held are always one contiguous range [base, next_seq); dropping when full
removes the oldest, so the range stays contiguous and `base` tells the learner what it will
never get.

Learner side, `SessionTable`: per (actor_id, session) the next sequence number expected.
A data message (first, base, n items) is handled as:
  - unknown session: expect `base` (a new actor starts at 0; after a learner restart, the
    actor's oldest unacknowledged transition);
  - base > expected: the actor dropped [expected, base) from a full queue; skip them (counted
    as skipped; the actor also reports its own count of dropped transitions);
  - first > expected: a gap (earlier messages were lost, e.g. sent to a learner that died):
    deliver nothing, answer with a negative ack so the actor goes back;
  - otherwise deliver items[expected - first:] (the part before is duplicates) and advance.
The ack always carries expected - 1: the highest sequence number delivered contiguously.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


class Outbox:
    """Encoded transitions of one actor session awaiting acknowledgement. Thread-safe.

    `put` is called from the actor's main loop; `peek_batch`, `mark_sent`, `ack` and `rewind`
    from the I/O thread.
    """

    def __init__(self, capacity: int, max_bytes: int):
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._empty = threading.Condition(self._lock)
        self._items: dict[int, bytes] = {}
        self._bytes = 0
        self.base = 0  # oldest sequence number held
        self.next_seq = 0  # sequence number of the next transition put
        self.next_send = 0  # first sequence number not sent in the current round
        self.dropped = 0

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
                self._bytes -= len(self._items.pop(self.base))
                self.base += 1
                dropped += 1
            self.dropped += dropped
            self.next_send = max(self.next_send, self.base)
            return dropped

    @property
    def pending(self) -> int:
        """Transitions not yet acknowledged (sent or not)."""
        return len(self._items)

    @property
    def inflight(self) -> int:
        """Transitions sent in the current round and not yet acknowledged."""
        with self._lock:
            return max(0, self.next_send - self.base)

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
                item = self._items[seq]
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
            for seq in range(self.base, acked + 1):
                self._bytes -= len(self._items.pop(seq))
            self.base = acked + 1
            self.next_send = max(self.next_send, self.base)
            if not self._items:
                self._empty.notify_all()
            return True

    def rewind(self, to: int | None = None) -> None:
        """Re-send from `to` (default: the oldest unacknowledged) in the next round."""
        with self._lock:
            self.next_send = self.base if to is None else max(self.base, min(to, self.next_send))

    def wait_empty(self, timeout: float) -> bool:
        """Blocks until everything is acknowledged or `timeout` seconds pass."""
        with self._lock:
            return self._empty.wait_for(lambda: not self._items, timeout=max(0.0, timeout))


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
    """What to do with one data message: deliver items[offset:offset + count], then ack."""

    offset: int
    count: int
    nack: bool
    new_session: bool


class SessionTable:
    """Learner-side delivery state of every actor session. Thread-safe.

    Sessions are keyed by (actor_id, session), so an actor that restarts (new session) starts
    from its own sequence 0 and two processes mistakenly sharing an actor_id are each delivered
    exactly once (their data are merged under that id in `actors()`, with a warning).
    At most `max_sessions_per_actor` sessions are remembered per actor_id (least recently seen
    forgotten first); a forgotten session that comes back is treated as new.
    """

    def __init__(self, max_sessions_per_actor: int = 16, shared_id_window_s: float = 10.0):
        self._lock = threading.Lock()
        self._actors: dict[str, _Actor] = {}
        self._max_sessions = max_sessions_per_actor
        self._shared_window = shared_id_window_s

    def _session(self, actor_id: str, session: str, now: float) -> tuple[_Actor, _Session, bool]:
        actor = self._actors.setdefault(actor_id, _Actor())
        state = actor.sessions.get(session)
        new = state is None
        if new:
            state = actor.sessions[session] = _Session(session, last_seen=now)
            actor.sessions_seen += 1
            if len(actor.sessions) > self._max_sessions:
                oldest = min(actor.sessions.values(), key=lambda s: s.last_seen)
                del actor.sessions[oldest.session]
        actor.current = session
        actor.last_seen = state.last_seen = now
        return actor, state, new

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

    def seen(self, actor_id: str, session: str) -> None:
        """Records a sign of life (hello, stats) without touching delivery state."""
        with self._lock:
            self._session(actor_id, session, time.time())

    def count_stats(self, actor_id: str, session: str) -> None:
        with self._lock:
            actor, _, _ = self._session(actor_id, session, time.time())
            actor.stats_messages += 1

    def plan(
        self, actor_id: str, session: str, first: int, base: int, n: int, dropped: int = 0
    ) -> Plan:
        """Decides what part of a data message (seqs first..first+n-1) is new. `dropped` is the
        actor's count of transitions it dropped from a full queue (reported, not checked)."""
        with self._lock:
            actor, state, new = self._session(actor_id, session, time.time())
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
