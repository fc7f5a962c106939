"""The learner's end of the link: receives transitions and stats, publishes params."""

from __future__ import annotations

import logging
import math
import secrets
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import zmq

from serl_launcher.transport import _io
from serl_launcher.transport.codec import (
    AuthenticationError,
    MalformedMessage,
    MessageTooLarge,
    ProtocolVersionError,
    TransportError,
    decode_message,
    encode,
)
from serl_launcher.transport.config import TransportConfig
from serl_launcher.transport.reliability import SessionTable

logger = logging.getLogger(__name__)

OnTransitions = Callable[[str, list[dict]], None]
OnStats = Callable[[str, dict], None]
Allowance = Callable[[], "int | None"]

REJECT_REASONS = ("too_large", "bad_auth", "bad_version", "malformed", "stale_epoch",
                  "too_many_actors", "too_many_sessions", "retired_session", "rate_limited")
_MAX_GRANT_IDENTS = 4  # peers a credit grant for one session goes to (a replay cannot divert it)
_MAX_MESSAGES_PER_WAKE = 256  # then look at the waker again, so a flood cannot starve publishes
_CLOSE_LINGER_MS = 300  # lets the last acks out on close, so a restart re-sends nothing delivered
_MAX_STATS_KEYS = 64
_PARAMS_REPLIES_PER_S = 20.0  # params replies to hellos, per actor id (a replayed hello is cheap)


class TransitionSink(Protocol):
    """Where a LearnerServer puts what actors send (the learner's DataStore is one).

    ``delivered()`` -> {actor_id: {session: next sequence number}}: what the sink already holds,
    read once at start so re-sent transitions are recognised. ``deliver(actor_id, session,
    start, transitions)`` -> one entry per transition, None if accepted, else the reason it was
    rejected; if it raises, the message is not acknowledged and will be re-sent (so a sink
    must keep nothing of it, or refuse everything from then on, as a broken DataStore does).
    ``commit()`` makes everything delivered durable; acknowledgements go out only after it
    returns, and if it raises the server stops (it cannot tell what is durable).
    """

    def delivered(self) -> dict[str, dict[str, int]]: ...

    def deliver(self, actor_id: str, session: str, start: int,
                transitions: list[Any]) -> list[str | None]: ...

    def commit(self) -> None: ...


class CallbackSink:
    """A TransitionSink that hands transitions to `on_transitions(actor_id, transitions)` and
    keeps nothing itself (in memory only; for tests, benchmarks and tools)."""

    def __init__(self, on_transitions: OnTransitions):
        self._on_transitions = on_transitions

    def delivered(self) -> dict[str, dict[str, int]]:
        return {}

    def deliver(self, actor_id: str, session: str, start: int,
                transitions: list[Any]) -> list[str | None]:
        self._on_transitions(actor_id, transitions)
        return [None] * len(transitions)

    def commit(self) -> None:
        pass


def as_sink(sink: TransitionSink | OnTransitions) -> TransitionSink:
    return sink if hasattr(sink, "deliver") else CallbackSink(sink)


def params_frame(epoch: str, step: int, params: Any, key: bytes | None, max_bytes: int,
                 env_steps: int | None = None) -> bytes:
    """The "params" message both backends hand to actors (encoded once per publish); with the
    number of env steps the learner had received when it published them, if given."""
    payload = {"epoch": epoch, "step": step, "params": params}
    if env_steps is not None:
        payload["env_steps"] = int(env_steps)
    return encode(payload, msg_type="params", key=key, max_message_bytes=max_bytes)


def credit_share(allowance: Allowance | None, actors: int) -> int:
    """Transitions one actor may send beyond what is acknowledged (-1: no limit): the rate
    limiter's allowance split between the active actors (at least 1 each while it is > 0, so
    nobody starves while the learner waits)."""
    total = allowance() if allowance is not None else None
    if total is None:
        return -1
    return 0 if total <= 0 else max(1, math.ceil(total / max(1, actors)))


def check_stats(stats: Any) -> dict[str, float | int | bool]:
    """Stats are a flat map of at most 64 short names to finite numbers; anything else is
    malformed (a NaN would stop the learner's metrics writer)."""
    if not isinstance(stats, dict) or len(stats) > _MAX_STATS_KEYS:
        raise MalformedMessage(f"stats must be a map of at most {_MAX_STATS_KEYS} numbers")
    for name, value in stats.items():
        if not _io.valid_actor_id(name.replace("/", "_") if isinstance(name, str) else name):
            raise MalformedMessage(f"bad stats name {str(name)[:80]!r}")
        if not isinstance(value, int | float | np.integer | np.floating | np.bool_) or not math.isfinite(value):
            raise MalformedMessage(f"stats value {name!r} is not a finite number")
    return stats


class _Committer:
    """Calls ``sink.commit()`` on its own thread, so the I/O thread goes on receiving and writing
    while the disk syncs (group commit: one sync covers every batch delivered before it began).
    Replies wait here, in order, until the commit that covers them is done."""

    def __init__(self, sink: TransitionSink, wake: Callable[[], None]):
        self._sink, self._wake = sink, wake
        self._cond = threading.Condition()
        self._requested = self._done = 0
        self._waiting: deque[tuple[int, list[tuple[bytes, bytes]]]] = deque()
        self._closed = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="serl-learner-commit", daemon=True)
        self._thread.start()

    def submit(self, replies: list[tuple[bytes, bytes]], new_data: bool) -> None:
        with self._cond:
            if new_data:
                self._requested += 1
                self._cond.notify_all()
            self._waiting.append((self._requested, replies))

    def ready(self) -> list[tuple[bytes, bytes]]:
        """Replies whose commit is done, oldest first."""
        out = []
        with self._cond:
            while self._waiting and self._waiting[0][0] <= self._done:
                out.extend(self._waiting.popleft()[1])
        return out

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._requested > self._done or self._closed)
                if self._requested == self._done:
                    return  # closed, nothing left
                target = self._requested
            try:
                self._sink.commit()
            except BaseException as error:
                self.error = error
                self._wake()
                return
            with self._cond:
                self._done = target
            self._wake()

    def close(self) -> None:
        """Finishes outstanding commits and stops the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()


class LearnerServer:
    """Receives transitions and stats from any number of actors; publishes params to them.

    Sockets (both bound on `config.bind_host`, loopback unless configured; another interface
    needs a key, see TransportConfig.check_bind):
      - ROUTER on `config.data_port`: data / stats / hello from actors' DEALERs; acks and
        params replies (for an actor that just connected) go back the same way;
      - PUB on `config.param_port`: every publish_params, to all actors' SUBs.

    Delivery: `sink` (a TransitionSink, or a plain ``on_transitions(actor_id, transitions)``
    callable, kept in memory only) gets each transition exactly once, in order per actor
    session, on the server's I/O thread; what it accepts or rejects is acknowledged only after
    ``sink.commit()``, once per batch of messages (group commit), with the rejected sequence
    numbers and reasons in the ack, so the actor drops them instead of re-sending. With a
    durable sink whose ``delivered()`` survives restarts, delivery is exactly once across
    learner restarts too. If ``deliver`` raises, the error is logged and counted
    (stats["callback_errors"]) and the actor re-sends the same transitions later.

    Every message except hello carries the learner's epoch (a random id per server start, told
    to actors in acks): a message recorded before a restart is refused (stale_epoch); within an
    epoch, sequence numbers make a replayed data message a duplicate.

    Backpressure: each ack carries a credit, the transitions this actor may send beyond what is
    acknowledged, from `allowance()` (the learner's rate limiter; None: no limit). An actor that
    was told 0 gets a fresh ack as soon as the allowance grows (:meth:`notify_credit`).

    Anything that fails a check (size, version, MAC, bounds, msgpack, structure, epoch, state
    limits, rate) is dropped and counted under stats["rejected"][reason]; the I/O thread never
    dies of a peer's message. If ``commit`` raises, `error` is set and the server stops.
    """

    def __init__(
        self,
        config: TransportConfig,
        sink: TransitionSink | OnTransitions,
        on_stats: OnStats | None = None,
        allowance: Allowance | None = None,
    ):
        config.validate()
        self.config = config
        self.bind_host = config.bind_host
        self.epoch = secrets.token_hex(8)  # tells actors a restarted learner from the old one
        self._sink = as_sink(sink)
        self._on_stats = on_stats
        self._allowance = allowance
        self._key = config.resolved_key()
        self._table = SessionTable(max_actors=config.max_actors)
        self._table.seed(self._sink.delivered())
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "accepted": 0,
            "rejected": dict.fromkeys(REJECT_REASONS, 0),
            "transitions": 0,
            "rejected_transitions": 0,
            "duplicates": 0,
            "gaps": 0,
            "callback_errors": 0,
            "params_published": 0,
            "params_replies": 0,
            "credit_grants": 0,
        }
        self._pending_params: tuple[int, bytes] | None = None
        self._params: tuple[int, bytes] | None = None  # current (step, frame), I/O thread only
        self._replies: list[tuple[bytes, bytes]] = []  # sent after the batch's commit
        self._uncommitted = False
        # Told credit 0: (actor, session) -> the peers that asked (a grant goes to each).
        self._starved: dict[tuple[str, str], list[bytes]] = {}
        self._stats_bucket = _io.TokenBucket(config.stats_per_s, config.stats_burst)
        self._params_bucket = _io.TokenBucket(_PARAMS_REPLIES_PER_S, 5)
        self._waker = _io.Waker()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._log = _io.RateLimitedLog(logger)
        self.error: BaseException | None = None  # a failed commit: the server stopped
        self.data_port: int | None = None  # actual ports once started (config port 0: any free)
        self.param_port: int | None = None

    # ----------------------------------------------------------------------- public API

    def start(self, timeout: float = 10.0) -> LearnerServer:
        """Binds both sockets on a background I/O thread and returns once they are bound.

        Raises TransportError if binding fails (e.g. the port is in use) or if the interface
        may not be listened on without a key.
        """
        if self._thread is not None:
            raise RuntimeError("LearnerServer.start() called twice")
        try:
            warning = self.config.check_bind()
        except ValueError as error:
            raise TransportError(str(error)) from None
        if warning:
            logger.warning("%s", warning)
        self._thread = threading.Thread(target=self._run, name="serl-learner-io", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TransportError("learner I/O thread did not start")
        if self._start_error is not None:
            raise TransportError(
                f"cannot bind {self.bind_host}:{self.config.data_port}/{self.config.param_port}:"
                f" {self._start_error}"
            ) from self._start_error
        return self

    def publish_params(self, step: int, params: Any, env_steps: int | None = None) -> None:
        """Sends `params` (nested dict of numpy arrays) to all actors; never waits on the network.
        `env_steps`: transitions received so far, told to actors with the params (an evaluator
        reports it next to the learner step it evaluated).

        The tree is encoded here, so later in-place changes to the arrays do not leak into what
        is sent. If several publishes queue up faster than the I/O thread sends, only the newest
        goes out; actors keep only the newest too. Raises UnsupportedType / MessageTooLarge.
        """
        step = int(step)
        frame = params_frame(self.epoch, step, params, self._key, self.config.max_message_bytes, env_steps)
        with self._lock:
            self._pending_params = (step, frame)
        self._waker.wake()

    def notify_credit(self) -> None:
        """The rate limiter's allowance may have grown (call after a learner step): actors that
        were told to wait get a fresh credit. Cheap when nobody waits."""
        if self._starved:
            self._waker.wake()

    @property
    def actors(self) -> dict[str, dict]:
        """Per actor_id: session (current), sessions (count seen), transitions (delivered),
        duplicates (received again, not delivered), skipped (sequence numbers the actor
        dropped before this learner saw them), dropped (the actor's own count of transitions
        its full queue dropped), acked (current session), stats_messages, last_seen
        (time.time())."""
        return self._table.actors()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: accepted (messages), rejected {reason: messages}, transitions (accepted),
        rejected_transitions (refused by the sink), duplicates, gaps, callback_errors,
        params_published, params_replies, credit_grants."""
        with self._lock:
            return {k: dict(v) if isinstance(v, dict) else v for k, v in self._stats.items()}

    def close(self, timeout: float = 5.0) -> None:
        """Stops the I/O thread and closes the sockets (after trying to send the last acks)."""
        self._stop.set()
        self._waker.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("learner I/O thread did not stop within %.1f s", timeout)
                return
        self._waker.close()

    def __enter__(self) -> LearnerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------ I/O thread

    def _count(self, name: str, n: int = 1, reason: str | None = None) -> None:
        with self._lock:
            if reason is None:
                self._stats[name] += n
            else:
                self._stats[name][reason] += n

    def _run(self) -> None:
        ctx = zmq.Context()
        router = pub = None
        try:
            router = ctx.socket(zmq.ROUTER)
            _io.configure(router, self.config.max_message_bytes, self.bind_host)
            # Per peer; an actor keeps at most max_inflight_batches data messages in flight.
            router.setsockopt(zmq.RCVHWM, 4 * self.config.max_inflight_batches + 64)
            router.setsockopt(zmq.SNDHWM, 1000)
            router.bind(_io.endpoint(self.bind_host, self.config.data_port))
            pub = ctx.socket(zmq.PUB)
            _io.configure(pub, self.config.max_message_bytes, self.bind_host)
            pub.setsockopt(zmq.SNDHWM, 2)  # slow subscribers skip stale params
            pub.bind(_io.endpoint(self.bind_host, self.config.param_port))
            self.data_port, self.param_port = _io.bound_port(router), _io.bound_port(pub)
        except Exception as error:  # reported to start()'s caller
            self._start_error = error
            for sock in (router, pub):
                if sock is not None:
                    sock.close(0)
            ctx.term()
            self._ready.set()
            return
        self._ready.set()
        logger.info("learner transport on %s data:%d params:%d (auth %s)", self.bind_host,
                    self.data_port, self.param_port, "on" if self._key else "off")
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(self._waker.fileno(), zmq.POLLIN)
        linger = _CLOSE_LINGER_MS
        committer = _Committer(self._sink, self._waker.wake)
        try:
            while not self._stop.is_set():
                poller.poll(200)
                self._waker.drain()
                self._send_pending_params(pub)
                for _ in range(_MAX_MESSAGES_PER_WAKE):
                    if self._stop.is_set():
                        break
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._handle(frames)
                self._grant_starved()
                # Every reply reports delivery state that includes this batch: it leaves only
                # once the commit covering the batch (and all before it) is done.
                replies, self._replies = self._replies, []
                if replies or self._uncommitted:
                    committer.submit(replies, self._uncommitted)
                self._uncommitted = False
                if committer.error is not None:
                    # What reached the disk is unknown: acknowledge nothing more.
                    self.error = committer.error
                    linger = 0
                    logger.error("commit of received transitions failed (%r); the learner's "
                                 "transport stops (nothing unacknowledged is lost)", self.error)
                    return
                for ident, frame in committer.ready():
                    try:
                        router.send_multipart([ident, frame], zmq.NOBLOCK, copy=False)
                    except zmq.ZMQError:
                        pass  # peer gone or its queue full: it re-sends / asks again
            committer.close()  # the last commit, so the last acks can go out
            for ident, frame in committer.ready():
                try:
                    router.send_multipart([ident, frame], zmq.NOBLOCK, copy=False)
                except zmq.ZMQError:
                    pass
        except Exception as error:  # a bug here must not pass silently: the actors would stall
            self.error = error
            logger.exception("learner I/O thread crashed")
        finally:
            committer.close()
            router.close(linger)
            pub.close(0)
            ctx.term()

    def _send_pending_params(self, pub: zmq.Socket) -> None:
        with self._lock:
            pending, self._pending_params = self._pending_params, None
        if pending is None:
            return
        self._params = pending
        frame = pending[1]
        try:
            pub.send(frame, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass  # PUB drops rather than blocks; actors will ask (hello) if they miss it
        self._count("params_published")

    def _handle(self, frames: list[zmq.Frame]) -> None:
        ident, parts = frames[0].bytes, frames[1:]
        try:
            size = sum(len(p) for p in parts)
            if size > self.config.max_message_bytes:
                raise MessageTooLarge(f"{size} bytes")
            if len(parts) != 1:
                raise MalformedMessage(f"{len(parts)} frames, expected 1")
            msg_type, payload = decode_message(
                parts[0].buffer, key=self._key, max_message_bytes=self.config.max_message_bytes,
                max_elements=self.config.max_elements, max_depth=self.config.max_depth,
            )
            if msg_type == "data":
                reason = self._on_data(ident, payload)
            elif msg_type == "stats":
                reason = self._on_stats_msg(ident, payload)
            elif msg_type == "hello":
                reason = self._on_hello(ident, payload)
            else:
                raise MalformedMessage(f"unknown message type {msg_type!r}")
            if reason is None:
                self._count("accepted")
                return
            detail = reason
        except MessageTooLarge as error:
            reason, detail = "too_large", error
        except AuthenticationError as error:
            reason, detail = "bad_auth", error
        except ProtocolVersionError as error:
            reason, detail = "bad_version", error
        except MalformedMessage as error:
            reason, detail = "malformed", error
        self._count("rejected", reason=reason)
        self._log(logging.WARNING, reason, "rejected a message (%s): %s", reason, detail)

    def _ack(self, ident: bytes, session: str, acked: int, nack: bool,
             rejected: list | None = None, actor_id: str | None = None,
             refused: str = "") -> None:
        credit = credit_share(self._allowance, self._table.active_actors())
        if credit == 0 and actor_id is not None and not refused:
            idents = self._starved.setdefault((actor_id, session), [])
            if ident not in idents:
                idents.append(ident)
                del idents[:-_MAX_GRANT_IDENTS]
        payload = {"session": session, "epoch": self.epoch, "acked": acked, "nack": nack,
                   "credit": credit, "rejected": rejected or [], "refused": refused}
        self._replies.append((ident, encode(payload, msg_type="ack", key=self._key)))

    def _grant_starved(self) -> None:
        if not self._starved or credit_share(self._allowance, 1) == 0:
            return
        starved, self._starved = self._starved, {}
        for (actor_id, session), idents in starved.items():
            for ident in idents:
                self._ack(ident, session, self._table.acked(actor_id, session), False,
                          actor_id=actor_id)
            self._count("credit_grants")

    def _on_data(self, ident: bytes, payload: Any) -> str | None:
        p = _io.fields(payload, actor=str, session=str, epoch=str, first=int, base=int,
                       dropped=int, items=list)
        actor_id, session, items = p["actor"], p["session"], p["items"]
        _io.check_ids(actor_id, session)
        if min(p["first"], p["base"], p["dropped"]) < 0 or p["base"] > p["first"] or not all(
            isinstance(t, dict) for t in items
        ):
            raise MalformedMessage("bad data message")
        if p["epoch"] != self.epoch:  # sent to an earlier learner (or recorded and replayed)
            # The ack tells the actor this learner's epoch and what it holds, so it re-sends
            # the rest at once (with credit, or a grant as soon as there is some).
            self._ack(ident, session, self._table.acked(actor_id, session), False,
                      actor_id=actor_id)
            return "stale_epoch"
        plan = self._table.plan(actor_id, session, p["first"], p["base"], len(items), p["dropped"])
        if plan.refused:  # said to the actor, so it can act (a new session) or say why it waits
            self._ack(ident, session, -1, False, refused=plan.refused)
            return plan.refused
        if plan.new_session:
            logger.info("actor %r: session %s starts at seq %d", actor_id, session, p["base"])
        rejected = []
        if plan.nack:
            self._count("gaps")
        elif plan.count:
            start = p["first"] + plan.offset
            batch = items[plan.offset : plan.offset + plan.count]
            try:
                reasons = self._sink.deliver(actor_id, session, start, batch)
            except Exception as error:
                self._count("callback_errors")
                self._log(logging.ERROR, "deliver", "delivering transitions of actor %r failed "
                          "(%r); it will re-send", actor_id, error)
            else:
                if len(reasons) != len(batch):
                    raise RuntimeError(f"sink answered {len(reasons)} of {len(batch)} transitions")
                self._uncommitted = True
                rejected = [[start + i, r] for i, r in enumerate(reasons) if r is not None]
                self._table.commit(actor_id, session, plan.count)
                self._count("transitions", plan.count - len(rejected))
                self._count("rejected_transitions", len(rejected))
                for seq, why in rejected:
                    self._log(logging.WARNING, f"reject-{actor_id}", "actor %r: transition %d "
                              "rejected: %s", actor_id, seq, why)
            if self._table.shared_id(actor_id):
                logger.warning("two live processes use actor_id %r; both are delivered, their"
                               " counts merged under one id", actor_id)
        self._count("duplicates", plan.offset if not plan.nack else 0)
        self._ack(ident, session, self._table.acked(actor_id, session), plan.nack, rejected,
                  actor_id=actor_id)
        return None

    def _on_stats_msg(self, ident: bytes, payload: Any) -> str | None:
        p = _io.fields(payload, actor=str, session=str, epoch=str, stats=dict)
        _io.check_ids(p["actor"], p["session"])
        if p["epoch"] != self.epoch:
            return "stale_epoch"
        if not self._stats_bucket.take(p["actor"]):
            return "rate_limited"
        stats = check_stats(p["stats"])
        self._table.count_stats(p["actor"])
        if self._on_stats is not None:
            try:
                self._on_stats(p["actor"], stats)
            except Exception:
                logger.exception("on_stats raised for actor %r", p["actor"])
        return None

    def _on_hello(self, ident: bytes, payload: Any) -> str | None:
        p = _io.fields(payload, actor=str, session=str, step=int)
        _io.check_ids(p["actor"], p["session"])
        epoch = payload.get("epoch")
        # Always answered, and nothing else: a hello carries no sequence number, so a recorded
        # one must not be able to change what the learner keeps. The ack tells the actor the
        # learner is there, its epoch and what it has.
        self._ack(ident, p["session"], self._table.acked(p["actor"], p["session"]), False,
                  actor_id=p["actor"])
        if self._params is not None:
            step, frame = self._params
            if (epoch != self.epoch or p["step"] < step) and self._params_bucket.take(p["actor"]):
                self._replies.append((ident, frame))
                self._count("params_replies")
        return None
