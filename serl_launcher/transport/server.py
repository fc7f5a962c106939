"""The learner's end of the link: receives transitions and stats, publishes params."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

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

REJECT_REASONS = ("too_large", "bad_auth", "bad_version", "malformed")
_MAX_MESSAGES_PER_WAKE = 256  # then look at the waker again, so a flood cannot starve publishes
_CLOSE_LINGER_MS = 300  # lets the last acks out on close, so a restart re-sends nothing delivered


def params_frame(epoch: str, step: int, params: Any, key: bytes | None, max_bytes: int) -> bytes:
    """The "params" message both backends hand to actors (encoded once per publish)."""
    payload = {"epoch": epoch, "step": step, "params": params}
    return encode(payload, msg_type="params", key=key, max_message_bytes=max_bytes)


class LearnerServer:
    """Receives transitions and stats from any number of actors; publishes params to them.

    Sockets (both bound on `bind_host`):
      - ROUTER on `config.data_port`: data / stats / hello from actors' DEALERs; acks and
        params replies (for an actor that just connected) go back the same way;
      - PUB on `config.param_port`: every publish_params, to all actors' SUBs.

    Callbacks run on the server's I/O thread, in order per actor session, and must be
    thread-safe with respect to the learner's main loop (e.g. a replay buffer with a lock).
    `on_transitions(actor_id, transitions)` gets each transition exactly once per server
    lifetime; it is acknowledged only after the callback returns, so if it raises, the error is
    logged and counted (stats["callback_errors"]) and the actor sends the same transitions
    again after retry_interval_s. After a learner crash (or a close that could not send its
    last acks), what was delivered but not acknowledged is delivered again to the next server:
    at-least-once across servers, exactly once within one.

    Anything that fails a check (size, version, MAC, msgpack, structure) is dropped and counted
    under stats["rejected"][reason]; the I/O thread never dies of a peer's message.
    """

    def __init__(
        self,
        config: TransportConfig,
        on_transitions: OnTransitions,
        on_stats: OnStats | None = None,
        bind_host: str = "0.0.0.0",
    ):
        config.validate()
        self.config = config
        self.bind_host = bind_host
        self.epoch = secrets.token_hex(8)  # tells actors a restarted learner from the old one
        self._on_transitions = on_transitions
        self._on_stats = on_stats
        self._key = config.resolved_key()
        self._table = SessionTable()
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "accepted": 0,
            "rejected": dict.fromkeys(REJECT_REASONS, 0),
            "transitions": 0,
            "duplicates": 0,
            "gaps": 0,
            "callback_errors": 0,
            "params_published": 0,
            "params_replies": 0,
        }
        self._pending_params: tuple[int, bytes] | None = None
        self._params: tuple[int, bytes] | None = None  # current (step, frame), I/O thread only
        self._waker = _io.Waker()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._log = _io.RateLimitedLog(logger)
        self.data_port: int | None = None  # actual ports once started (config port 0: any free)
        self.param_port: int | None = None

    # ----------------------------------------------------------------------- public API

    def start(self, timeout: float = 10.0) -> LearnerServer:
        """Binds both sockets on a background I/O thread and returns once they are bound.

        Raises TransportError if binding fails (e.g. the port is in use).
        """
        if self._thread is not None:
            raise RuntimeError("LearnerServer.start() called twice")
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

    def publish_params(self, step: int, params: Any) -> None:
        """Sends `params` (nested dict of numpy arrays) to all actors; never waits on the network.

        The tree is encoded here, so later in-place changes to the arrays do not leak into what
        is sent. If several publishes queue up faster than the I/O thread sends, only the newest
        goes out; actors keep only the newest too. Raises UnsupportedType / MessageTooLarge.
        """
        step = int(step)
        frame = params_frame(self.epoch, step, params, self._key, self.config.max_message_bytes)
        with self._lock:
            self._pending_params = (step, frame)
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
        """Counters: accepted (messages), rejected {too_large, bad_auth, bad_version,
        malformed}, transitions, duplicates, gaps, callback_errors, params_published,
        params_replies."""
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
                    self._handle(router, frames)
        except Exception:  # a bug here must not pass silently: the actors would just stall
            logger.exception("learner I/O thread crashed")
        finally:
            router.close(_CLOSE_LINGER_MS)
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

    def _handle(self, router: zmq.Socket, frames: list[zmq.Frame]) -> None:
        ident, parts = frames[0].bytes, frames[1:]
        reason = None
        try:
            size = sum(len(p) for p in parts)
            if size > self.config.max_message_bytes:
                raise MessageTooLarge(f"{size} bytes")
            if len(parts) != 1:
                raise MalformedMessage(f"{len(parts)} frames, expected 1")
            msg_type, payload = decode_message(
                parts[0].buffer, key=self._key, max_message_bytes=self.config.max_message_bytes
            )
            if msg_type == "data":
                self._on_data(router, ident, payload)
            elif msg_type == "stats":
                self._on_stats_msg(payload)
            elif msg_type == "hello":
                self._on_hello(router, ident, payload)
            else:
                raise MalformedMessage(f"unknown message type {msg_type!r}")
            self._count("accepted")
            return
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

    def _reply(self, router: zmq.Socket, ident: bytes, frame: bytes) -> None:
        try:
            router.send_multipart([ident, frame], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:
            pass  # peer gone or its queue full: it re-sends / asks again and gets another reply

    def _ack(self, router: zmq.Socket, ident: bytes, session: str, acked: int, nack: bool) -> None:
        payload = {"session": session, "epoch": self.epoch, "acked": acked, "nack": nack}
        self._reply(router, ident, encode(payload, msg_type="ack", key=self._key))

    def _on_data(self, router: zmq.Socket, ident: bytes, payload: Any) -> None:
        p = _io.fields(payload, actor=str, session=str, first=int, base=int, dropped=int,
                       items=list)
        actor_id, session, items = p["actor"], p["session"], p["items"]
        if min(p["first"], p["base"], p["dropped"]) < 0 or not all(
            isinstance(t, dict) for t in items
        ):
            raise MalformedMessage("bad data message")
        plan = self._table.plan(actor_id, session, p["first"], p["base"], len(items), p["dropped"])
        if plan.new_session:
            logger.info("actor %r: session %s starts at seq %d", actor_id, session, p["base"])
        if plan.nack:
            self._count("gaps")
        elif plan.count:
            batch = items[plan.offset : plan.offset + plan.count]
            try:
                self._on_transitions(actor_id, batch)
            except Exception:
                self._count("callback_errors")
                logger.exception("on_transitions raised for actor %r; it will re-send", actor_id)
            else:
                self._table.commit(actor_id, session, plan.count)
                self._count("transitions", plan.count)
            if self._table.shared_id(actor_id):
                logger.warning("two live processes use actor_id %r; both are delivered, their"
                               " counts merged under one id", actor_id)
        self._count("duplicates", plan.offset if not plan.nack else 0)
        self._ack(router, ident, session, self._table.acked(actor_id, session), plan.nack)

    def _on_stats_msg(self, payload: Any) -> None:
        p = _io.fields(payload, actor=str, session=str, stats=dict)
        self._table.count_stats(p["actor"], p["session"])
        if self._on_stats is not None:
            try:
                self._on_stats(p["actor"], p["stats"])
            except Exception:
                logger.exception("on_stats raised for actor %r", p["actor"])

    def _on_hello(self, router: zmq.Socket, ident: bytes, payload: Any) -> None:
        p = _io.fields(payload, actor=str, session=str, step=int)
        epoch = payload.get("epoch")
        self._table.seen(p["actor"], p["session"])
        # Always answered: the ack tells the actor the learner is there (and what it has).
        self._ack(router, ident, p["session"], self._table.acked(p["actor"], p["session"]), False)
        if self._params is not None:
            step, frame = self._params
            if epoch != self.epoch or p["step"] < step:
                self._reply(router, ident, frame)
                self._count("params_replies")
