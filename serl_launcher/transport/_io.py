"""Plumbing shared by LearnerServer and ActorClient: wake-ups, socket options, checks, logging."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import zmq

from serl_launcher.transport.codec import MalformedMessage

# Frames up to this multiple of max_message_bytes reach the application, which refuses and
# counts them (too_large); zmq drops the connection of a peer that sends anything larger, so a
# hostile peer cannot make the receiver buffer unbounded amounts of memory.
HARD_LIMIT_FACTOR = 2
HEARTBEAT_MS = 2000  # zmq-level heartbeats tear down connections to peers that vanished silently


class Waker:
    """Lets any thread interrupt an I/O thread's zmq poll (a socketpair whose fd is polled).

    Writes are skipped while a wake-up is already pending, so a burst of calls costs one
    syscall. The I/O thread must call `drain()` *before* it looks at the queues.
    """

    def __init__(self) -> None:
        self._rx, self._tx = socket.socketpair()
        self._rx.setblocking(False)
        self._tx.setblocking(False)
        self._pending = False
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return self._rx.fileno()

    def wake(self) -> None:
        with self._lock:
            if self._pending:
                return
            self._pending = True
        try:
            self._tx.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the buffer is full of wake-ups already, or we are closing

    def drain(self) -> None:
        with self._lock:
            self._pending = False
        try:
            while self._rx.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self._rx.close()
        self._tx.close()


def endpoint(host: str, port: int) -> str:
    """tcp endpoint for zmq; IPv6 literals go in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def configure(sock: zmq.Socket, max_message_bytes: int, host: str) -> None:
    """Options every socket of the link gets (before bind / connect)."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, HARD_LIMIT_FACTOR * max_message_bytes + 4096)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * HEARTBEAT_MS)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    if ":" in host:
        sock.setsockopt(zmq.IPV6, 1)


def bound_port(sock: zmq.Socket) -> int:
    """The port a socket is bound to (resolves port 0)."""
    return int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])


def fields(payload: Any, **types: type | tuple[type, ...]) -> dict[str, Any]:
    """Checks that `payload` is a dict with these keys of these types; returns it.

    bool is refused where int is asked for (it is an int subclass in Python).
    """
    if not isinstance(payload, dict):
        raise MalformedMessage(f"payload is a {type(payload).__name__}, not a map")
    for name, kind in types.items():
        if name not in payload:
            raise MalformedMessage(f"payload lacks {name!r}")
        value = payload[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise MalformedMessage(f"payload[{name!r}] is a {type(value).__name__}")
    return payload


class RateLimitedLog:
    """Logs a message per key at most once every `interval_s`, with the count it stood for."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0):
        self._logger = logger
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, level: int, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        extra = self._suppressed.pop(key, 0)
        if extra:
            msg += f" (and {extra} more like it in the last {self._interval:.0f} s)"
        self._logger.log(level, msg, *args)


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@:")
MAX_ID_CHARS = 64


def check_ids(actor_id: Any, session: Any) -> None:
    """Actor ids end up in file names and metric keys, sessions are what the client generates
    (hex): refuse anything else before it reaches the learner's state."""
    if not valid_actor_id(actor_id):
        raise MalformedMessage(f"bad actor id {str(actor_id)[:80]!r}")
    if not (isinstance(session, str) and 0 < len(session) <= 32
            and set(session) <= set("0123456789abcdef")):
        raise MalformedMessage(f"bad session {str(session)[:80]!r}")


def valid_actor_id(actor_id: Any) -> bool:
    return (isinstance(actor_id, str) and 0 < len(actor_id) <= MAX_ID_CHARS
            and set(actor_id) <= _ID_CHARS)


class TokenBucket:
    """`rate` events per second with bursts of `burst`, per key; bounded number of keys."""

    def __init__(self, rate: float, burst: int, max_keys: int = 1024):
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._tokens: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> bool:
        now = time.monotonic()
        tokens, last = self._tokens.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if len(self._tokens) >= self.max_keys and key not in self._tokens:
            oldest = min(self._tokens, key=lambda k: self._tokens[k][1])
            del self._tokens[oldest]
        if tokens < 1.0:
            self._tokens[key] = (tokens, now)
            return False
        self._tokens[key] = (tokens - 1.0, now)
        return True
