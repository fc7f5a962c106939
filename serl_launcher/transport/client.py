"""The actor's end of the link: queues transitions until acknowledged, receives params."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import zmq

from serl_launcher.transport import _io
from serl_launcher.transport.codec import (
    MessageTooLarge,
    TransportError,
    array_header,
    decode_message,
    encode,
    frame_parts,
    map_header,
    pack_value,
)
from serl_launcher.transport.config import TransportConfig
from serl_launcher.transport.reliability import Outbox

logger = logging.getLogger(__name__)

_STATS_QUEUE = 64  # stats messages waiting for the learner; older ones are dropped
_POLL_MS = 50
_HEARTBEAT_FACTOR = 10  # hello every retry_interval_s * this once params are known
_MAX_BACKOFF = 30.0  # s: re-send wait doubles per timeout without progress, up to this


class ParamsSlot:
    """The newest params seen, shared by the I/O thread (writer) and the actor (readers)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: tuple[int, dict] | None = None
        self.epoch: str | None = None
        self.step = -1
        self.env_steps: int | None = None  # what the learner had received at that publish, if told

    def is_newer(self, epoch: str, step: int) -> bool:
        """A new learner (epoch) always wins: it may have restarted from an older checkpoint."""
        return epoch != self.epoch or step > self.step

    def set(self, epoch: str, step: int, params: Any, env_steps: Any = None) -> None:
        with self._cond:
            self.epoch, self.step = epoch, step
            self.env_steps = env_steps if type(env_steps) is int and env_steps >= 0 else None
            self._value = (step, params)
            self._cond.notify_all()

    def latest(self) -> tuple[int, dict] | None:
        return self._value

    def snapshot(self) -> tuple[str | None, int, dict | None, int | None]:
        """(epoch, step, params, env_steps) of one publish, read together."""
        with self._cond:
            return self.epoch, self.step, None if self._value is None else self._value[1], self.env_steps

    def wait(self, timeout: float, newer_than: int | None) -> tuple[int, dict] | None:
        def ready() -> bool:
            return self._value is not None and (newer_than is None or self._value[0] > newer_than)

        with self._cond:
            return self._value if self._cond.wait_for(ready, max(0.0, timeout)) else None


class Credit:
    """Backpressure from the learner: the sequence number this actor may queue up to.

    Each ack grants ``acked + 1 + credit`` (credit -1: no limit). Before the first ack nothing
    is granted, so an actor that honours credit waits for its learner. Shared by the I/O thread
    (grant) and the actor's loop (left, wait)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._end: int | None = 0

    def grant(self, acked: int, credit: int) -> None:
        with self._cond:
            self._end = None if credit < 0 else acked + 1 + credit
            self._cond.notify_all()

    def left(self, next_seq: int) -> int | None:
        """Transitions that may still be queued (None: no limit)."""
        end = self._end
        return None if end is None else end - next_seq

    def wait(self, next_seq: Callable[[], int], timeout: float) -> bool:
        """Blocks until a transition may be queued (True) or `timeout` s pass (False)."""
        def ready() -> bool:
            left = self.left(next_seq())
            return left is None or left > 0

        with self._cond:
            return self._cond.wait_for(ready, timeout=max(0.0, timeout))


class ActorClient:
    """Sends transitions and stats to a LearnerServer and receives its params.

    Nothing here waits on the network: `send_transition` encodes the transition (a snapshot:
    later in-place changes to its arrays are not sent) and queues it; a background I/O thread
    owns the sockets (DEALER to the learner's ROUTER, SUB to its PUB), sends batches of up to
    `send_batch_size` as soon as they are queued (at most `max_inflight_batches` messages
    unacknowledged), and keeps every transition until the learner acknowledges it: in memory
    up to the queue limits, then in a spool on disk (`spool_dir`, up to spool_max_bytes), and
    only past both drops the oldest (counted in `dropped`, logged). Transitions the learner
    rejects (invalid, e.g. NaN) are acknowledged with a reason: counted in `rejected`, logged,
    never re-sent.

    Backpressure: acks carry credit (see Credit); :meth:`credit_left` and
    :meth:`wait_for_credit` let a simulated actor wait for the learner. Nothing here waits on
    its own: a real robot ignores the credit and its transitions queue.

    Data and stats flow only while the learner answers: the client says hello (every
    retry_interval_s until answered, then every 10x that as a heartbeat) and the learner
    answers each hello with an ack (and with its params if the client's are older). After
    `retry_interval_s` without an ack for data in flight (learner down, restarted or swamped)
    the client stops sending data, says hello again, and once answered re-sends from its oldest
    unacknowledged transition; each further timeout without progress doubles that wait (up to
    30 s). So start order does not matter: before the learner is up everything waits here.

    `actor_id` names the actor in the learner's callbacks and `actors` table. Each client also
    picks a random `session`, so a restarted actor is recognised as new and delivered from its
    first transition. Two live clients with the same actor_id are both delivered (each exactly
    once), merged under that id on the learner, which warns.
    """

    def __init__(self, config: TransportConfig, actor_id: str,
                 spool_dir: str | os.PathLike | None = None):
        config.validate()
        if not _io.valid_actor_id(actor_id):
            raise ValueError(f"actor_id must be 1-{_io.MAX_ID_CHARS} characters of letters, "
                             f"digits and ._-@: (got {actor_id!r})")
        self.config = config
        self.actor_id = actor_id
        self.session = secrets.token_hex(8)
        self._key = config.resolved_key()
        self._spool_lock = _lock_spool(spool_dir, actor_id)
        self._outbox = Outbox(config.actor_queue_capacity, config.actor_queue_max_bytes,
                              _session_spool(spool_dir, self.session), config.spool_max_bytes)
        self._stats_queue: deque[dict] = deque(maxlen=_STATS_QUEUE)
        self.credit = Credit()
        self.rejected: dict[str, int] = {}  # transitions the learner rejected, by reason
        self.acked = -1  # highest sequence number the learner acknowledged
        self._params = ParamsSlot()
        self._waker = _io.Waker()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = _io.RateLimitedLog(logger)
        fields = ("actor", "session", "epoch", "first", "base", "dropped", "items")
        self._head = [msgpack.packb(k) for k in fields]
        self._ids = [msgpack.packb(actor_id), msgpack.packb(self.session)]
        # I/O thread state.
        self._server_epoch: str | None = None
        # Bytes a data message adds around its items (+ 27: the three ints at their widest;
        # the epoch is 16 hex characters, +16 for a longer one).
        self._overhead = sum(len(p) for p in self._data_parts(0, 0, [], "0" * 16)) + 27 + 16
        self._last_progress = time.monotonic()
        self._retry_s = config.retry_interval_s  # current re-send wait (backs off)
        self._blocked = False  # zmq refused a send (HWM): wait until the socket is writable
        self._inflight_ends: deque[int] = deque()  # end seq of each data message not yet acked
        self._next_hello = 0.0
        self._nack_point: int | None = None
        # Data and stats are sent only while the learner answers: zmq would otherwise queue
        # them for a learner that is not there (hellos go out regardless, and the learner
        # answers each with an ack).
        self._alive = False
        self.retransmits = 0

    # ----------------------------------------------------------------------- public API

    def start(self) -> ActorClient:
        """Starts the I/O thread (connecting happens in the background); returns at once."""
        if self._thread is not None:
            raise RuntimeError("ActorClient.start() called twice")
        self._thread = threading.Thread(
            target=self._run, name=f"serl-actor-io-{self.actor_id}", daemon=True
        )
        self._thread.start()
        return self

    def send_transition(self, transition: dict) -> None:
        """Queues one transition (dict of numpy arrays / scalars / nested dicts); never blocks.

        Raises UnsupportedType for values the codec does not carry and MessageTooLarge for a
        transition that alone exceeds max_message_bytes: both are bugs in the caller.
        """
        item = pack_value(transition)
        if len(item) + self._overhead > self.config.max_message_bytes:
            raise MessageTooLarge(
                f"one transition encodes to {len(item)} bytes; max_message_bytes is"
                f" {self.config.max_message_bytes}"
            )
        errors = self._outbox.spool_errors
        dropped = self._outbox.put(item)
        if self._outbox.spool_errors != errors:
            self._log(logging.ERROR, "spool", "actor %r: cannot write to the spool (%s); the "
                      "oldest transitions were dropped", self.actor_id, self._outbox.last_spool_error)
        if dropped:
            self._log(logging.WARNING, "dropped", "actor %r: queue full, dropped %d oldest"
                      " transition(s), %d so far", self.actor_id, dropped, self._outbox.dropped)
        self._waker.wake()

    def send_stats(self, stats: dict) -> None:
        """Sends a flat dict of at most 64 numbers to the learner's on_stats; best effort (no
        ack, no retry; the learner takes a few per second per actor)."""
        pack_value(stats)  # refuses what cannot be sent here, in the caller
        self._stats_queue.append(dict(stats))
        self._waker.wake()

    def credit_left(self) -> int | None:
        """Transitions this actor may still queue before the learner's rate limiter says wait
        (None: no limit; <= 0: wait)."""
        return self.credit.left(self._outbox.next_seq)

    def wait_for_credit(self, timeout: float) -> bool:
        """Waits up to `timeout` s until the learner grants credit; True if it has."""
        return self.credit.wait(lambda: self._outbox.next_seq, timeout)

    @property
    def spooled(self) -> int:
        """Unacknowledged transitions waiting on disk."""
        return self._outbox.spooled

    @property
    def spool_errors(self) -> int:
        """Writes to the spool that failed (their transitions were dropped, and counted)."""
        return self._outbox.spool_errors

    def latest_params(self) -> tuple[int, dict] | None:
        """(step, params) of the newest params received so far; None before any."""
        return self._params.latest()

    def params_snapshot(self) -> tuple[str | None, int, dict | None, int | None]:
        """(learner epoch, step, params, env_steps) of the newest publish, all of the same one;
        env_steps: what the learner had received by then (None when it did not say)."""
        return self._params.snapshot()

    def wait_for_params(
        self, timeout: float, newer_than: int | None = None
    ) -> tuple[int, dict] | None:
        """Like latest_params, but waits up to `timeout` s for params (with step > newer_than,
        if given). None on timeout."""
        return self._params.wait(timeout, newer_than)

    @property
    def pending(self) -> int:
        """Transitions queued and not yet acknowledged by the learner."""
        return self._outbox.pending

    @property
    def dropped(self) -> int:
        """Transitions dropped, oldest first, because the queue was full."""
        return self._outbox.dropped

    def flush(self, timeout: float) -> bool:
        """Waits up to `timeout` s until everything queued is acknowledged; True if it was."""
        self._waker.wake()
        return self._outbox.wait_empty(timeout)

    def close(self) -> None:
        """Stops the I/O thread; unacknowledged transitions are discarded (flush first)."""
        self._stop.set()
        self._waker.wake()
        if self._thread is not None:
            self._thread.join(5.0)
            if self._thread.is_alive():
                logger.warning("actor I/O thread did not stop")
                return
        self._waker.close()
        if self._outbox.pending:
            logger.info("actor %r closed with %d unacknowledged transition(s)", self.actor_id,
                        self._outbox.pending)
        self._outbox.close()
        if self._spool_lock is not None:
            os.close(self._spool_lock)  # releases the lock
            self._spool_lock = None

    def __enter__(self) -> ActorClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------ I/O thread

    def _data_parts(self, first: int, base: int, items: list[bytes],
                    epoch: str | None = None) -> list[bytes]:
        # msgpack of {"actor", "session", "epoch", "first", "base", "dropped", "items": [...]}
        # around items packed once in send_transition (and re-used as such by every re-send).
        h = self._head
        epoch = self._server_epoch if epoch is None else epoch
        payload = [map_header(7), h[0], self._ids[0], h[1], self._ids[1],
                   h[2], msgpack.packb(epoch), h[3], msgpack.packb(first),
                   h[4], msgpack.packb(base), h[5], msgpack.packb(self._outbox.dropped),
                   h[6], array_header(len(items)), *items]
        return frame_parts("data", payload, self._key)

    def _run(self) -> None:
        cfg = self.config
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        _io.configure(dealer, cfg.max_message_bytes, cfg.host)
        # Not IMMEDIATE: with it, zmq discards messages received but not yet read when the
        # connection drops, i.e. the learner's last acks before a restart (-> duplicates).
        # Without it, sends before the connection exists wait in zmq's pipe; the small HWM
        # bounds that copy (the Outbox keeps the data regardless) and re-sends find it full.
        dealer.setsockopt(zmq.SNDHWM, cfg.max_inflight_batches + 8)
        dealer.setsockopt(zmq.RCVHWM, 1000)
        dealer.connect(_io.endpoint(cfg.host, cfg.data_port))
        sub = ctx.socket(zmq.SUB)
        _io.configure(sub, cfg.max_message_bytes, cfg.host)
        sub.setsockopt(zmq.CONFLATE, 1)  # only the newest params matter
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(_io.endpoint(cfg.host, cfg.param_port))
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        poller.register(sub, zmq.POLLIN)
        poller.register(self._waker.fileno(), zmq.POLLIN)
        try:
            while not self._stop.is_set():
                poller.modify(dealer, zmq.POLLIN | (zmq.POLLOUT if self._blocked else 0))
                events = dict(poller.poll(_POLL_MS))
                self._waker.drain()
                if events.get(dealer, 0) & zmq.POLLOUT:
                    self._blocked = False
                if events.get(dealer, 0) & zmq.POLLIN:
                    self._receive(dealer)
                if sub in events:
                    self._receive(sub)
                self._pump(dealer)
        except Exception:
            logger.exception("actor I/O thread crashed")
        finally:
            dealer.close(0)
            sub.close(0)
            ctx.term()

    def _receive(self, sock: zmq.Socket) -> None:
        for _ in range(1000):
            try:
                frame = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                msg_type, payload = decode_message(
                    frame.buffer, key=self._key, max_message_bytes=self.config.max_message_bytes,
                    max_elements=self.config.max_elements, max_depth=self.config.max_depth,
                )
                if msg_type == "ack":
                    self._on_ack(payload)
                elif msg_type == "params":
                    self._on_params(payload)
                else:
                    raise TransportError(f"unexpected message type {msg_type!r}")
            except TransportError as error:
                self._log(logging.WARNING, type(error).__name__,
                          "actor %r: ignored a message from the learner: %s", self.actor_id, error)

    def _on_ack(self, payload: Any) -> None:
        p = _io.fields(payload, session=str, epoch=str, acked=int, nack=bool, credit=int,
                       rejected=list, refused=str)
        if p["session"] != self.session:
            return  # meant for an earlier client with this actor_id
        now = time.monotonic()
        if p["refused"]:
            self._on_refused(p["refused"])
            return
        if p["epoch"] != self._server_epoch:
            if self._server_epoch is not None:
                logger.info("actor %r: learner restarted; it holds up to seq %d, this actor had"
                            " %d acknowledged; re-sending what it lacks", self.actor_id,
                            p["acked"], self.acked)
                self._rewind()  # what was sent to the old learner is refused by the new one
                self._last_progress = now
            self._server_epoch = p["epoch"]
            self._next_hello = 0.0  # ask the new learner for its params now
        for item in p["rejected"]:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], str):
                reason = item[1].split(":")[0][:64]
                self.rejected[reason] = self.rejected.get(reason, 0) + 1
                self._log(logging.WARNING, "rejected", "actor %r: the learner rejected "
                          "transition %s: %s", self.actor_id, item[0], item[1][:200])
        self.acked = max(self.acked, p["acked"])
        self.credit.grant(p["acked"], p["credit"])
        if not self._alive:
            self._alive = True
            self._rewind()  # what was sent before may have gone nowhere
            self._last_progress = now
        if self._outbox.ack(p["acked"]):
            self._last_progress = now
            self._retry_s = self.config.retry_interval_s
            self._nack_point = None
        while self._inflight_ends and self._inflight_ends[0] <= p["acked"] + 1:
            self._inflight_ends.popleft()
        if p["nack"] and self._nack_point != p["acked"] + 1:
            # Every message sent after the lost one is nacked with the same point: go back once.
            self._nack_point = p["acked"] + 1
            self._rewind(self._nack_point)
            self._last_progress = now

    def _on_refused(self, reason: str) -> None:
        if reason == "retired_session":
            # The learner forgot this session to make room (it was quiet for long): go on as a
            # new one, from the oldest transition not acknowledged.
            old, self.session = self.session, secrets.token_hex(8)
            self._ids[1] = msgpack.packb(self.session)
            logger.warning("actor %r: the learner retired session %s; continuing as session %s",
                           self.actor_id, old, self.session)
            self._rewind()
            return
        self._log(logging.ERROR, "refused", "actor %r: the learner refuses this actor's data "
                  "(%s): it keeps state for at most max_actors actor ids and 16 live sessions "
                  "per id; give each actor process its own --actor_id", self.actor_id, reason)

    def _on_params(self, payload: Any) -> None:
        p = _io.fields(payload, epoch=str, step=int, params=dict)
        if self._params.is_newer(p["epoch"], p["step"]):
            self._params.set(p["epoch"], p["step"], p["params"], payload.get("env_steps"))

    def _send(self, dealer: zmq.Socket, frame: bytes) -> bool:
        try:
            dealer.send(frame, zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            self._blocked = True
            return False

    def _pump(self, dealer: zmq.Socket) -> None:
        if self._blocked:
            return
        now = time.monotonic()
        cfg = self.config
        if self._alive and self._outbox.inflight and now - self._last_progress > self._retry_s:
            # No ack for a while: the learner is gone, restarting or swamped. Stop sending data
            # until it answers a hello, then go back to the oldest unacknowledged transition;
            # wait longer next time, so a slow learner is not buried in re-sends.
            self._retry_s = min(2 * self._retry_s, max(_MAX_BACKOFF, cfg.retry_interval_s))
            self._alive = False
            self._rewind()
            self._nack_point = None
            self._next_hello = 0.0
            self.retransmits += 1
        if now >= self._next_hello:
            payload = {"actor": self.actor_id, "session": self.session,
                       "epoch": self._params.epoch, "step": self._params.step}
            if not self._send(dealer, encode(payload, msg_type="hello", key=self._key)):
                return
            steady = self._alive and self._params.latest() is not None
            self._next_hello = now + cfg.retry_interval_s * (_HEARTBEAT_FACTOR if steady else 1)
        if not self._alive:
            return
        while self._stats_queue:
            payload = {"actor": self.actor_id, "session": self.session,
                       "epoch": self._server_epoch, "stats": self._stats_queue[0]}
            frame = encode(payload, msg_type="stats", key=self._key)
            if len(frame) <= self.config.max_message_bytes and not self._send(dealer, frame):
                return
            self._stats_queue.popleft()
        budget = cfg.max_message_bytes - self._overhead
        # At most max_inflight_batches unacknowledged messages: while the window is full, new
        # transitions accumulate and leave in fuller batches (small ones only when idle).
        while len(self._inflight_ends) < cfg.max_inflight_batches:
            batch = self._outbox.peek_batch(cfg.send_batch_size, budget, window=1 << 62)
            if batch is None:
                return
            first, base, items = batch
            if not self._send(dealer, b"".join(self._data_parts(first, base, items))):
                return
            self._outbox.mark_sent(first + len(items))
            if not self._inflight_ends:
                self._last_progress = now
            self._inflight_ends.append(first + len(items))

    def _rewind(self, to: int | None = None) -> None:
        self._outbox.rewind(to)
        self._inflight_ends.clear()


def _lock_spool(spool_dir: str | os.PathLike | None, actor_id: str) -> int | None:
    """Takes `spool_dir`'s lock (held until the client closes): two live processes with one
    actor id would share a spool (and a random stream); the second one is refused."""
    if spool_dir is None:
        return None
    root = Path(spool_dir)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"another actor process with actor_id {actor_id!r} is running here (it "
                         f"holds {root / '.lock'}); give each actor its own --actor_id") from None
    return fd


def _session_spool(spool_dir: str | os.PathLike | None, session: str) -> Path | None:
    """This session's spool folder under `spool_dir` (whose lock the caller holds); spools left
    by earlier sessions (a killed actor) are deleted: their sequence numbers belong to sessions
    that are gone."""
    if spool_dir is None:
        return None
    root = Path(spool_dir)
    if root.is_dir():
        for old in root.iterdir():
            if old.is_dir():
                size = sum(f.stat().st_size for f in old.iterdir() if f.is_file())
                logger.warning("deleting the spool of an earlier actor session (%s, %d bytes):"
                               " those transitions were never acknowledged", old, size)
                shutil.rmtree(old, ignore_errors=True)
    return root / session
