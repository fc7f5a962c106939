"""Settings shared by both ends of the actor <-> learner link."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from serl_launcher.transport.codec import DEFAULT_MAX_DEPTH, DEFAULT_MAX_ELEMENTS, as_key

KEY_ENV_VAR = "SERL_TRANSPORT_KEY"


@dataclass
class TransportConfig:
    """Where the learner listens and how both ends behave. Both ends must agree on the key.

    host: the learner's address, as the actors connect to it.
    bind_host: the interface the learner listens on: loopback by default; "0.0.0.0" (all) or
        one address for actors on other machines, which needs a key (see allow_unauthenticated).
    data_port: ROUTER socket: transitions and stats in, acks and params replies out.
    param_port: PUB socket: params broadcast.
    key: shared secret for HMAC-SHA256 message authentication. None: read the environment
        variable SERL_TRANSPORT_KEY when a server or client is built; unset or empty there too:
        no authentication. (Authentication only: traffic is not encrypted.)
    allow_unauthenticated: listen beyond loopback without a key. Anyone who can reach the
        port could then insert transitions or read the policy; refused unless this is True.
    max_message_bytes: larger messages are refused before they are parsed, on both ends.
    max_elements, max_depth: most msgpack elements and deepest nesting in one message, checked
        before anything is decoded (a frame of millions of tiny items costs no more than this).
    max_actors: actor ids the learner keeps state for; messages from more are refused.
    stats_per_s, stats_burst: stats messages the learner takes per actor (token bucket); the
        rest are refused (counted), so stats cannot flood the learner's disk.
    actor_queue_capacity: transitions an actor holds in memory until the learner acknowledges
        them; older ones move to the spool on disk (when the actor has one), then are dropped,
        oldest first (counted in ActorClient.dropped).
    actor_queue_max_bytes: the same memory limit in encoded bytes (~200 KB per transition with
        two 128x128x3 cameras, so the transition count alone could mean 20 GB).
    spool_max_bytes: disk the actor may use for transitions waiting for the learner (0: none).
    send_batch_size: most transitions per data message.
    max_inflight_batches: data messages sent but not yet acknowledged, per actor.
    retry_interval_s: an actor re-sends its unacknowledged transitions when no ack has arrived
        for this long (e.g. the learner restarted), and asks for params this often until it
        has some.
    """

    host: str = "127.0.0.1"
    bind_host: str = "127.0.0.1"
    data_port: int = 5588
    param_port: int = 5589
    key: str | None = None
    allow_unauthenticated: bool = False
    max_message_bytes: int = 64 << 20
    max_elements: int = DEFAULT_MAX_ELEMENTS
    max_depth: int = DEFAULT_MAX_DEPTH
    max_actors: int = 64
    stats_per_s: float = 5.0
    stats_burst: int = 20
    actor_queue_capacity: int = 100_000
    actor_queue_max_bytes: int = 1 << 30
    spool_max_bytes: int = 10 << 30
    send_batch_size: int = 64
    max_inflight_batches: int = 8
    retry_interval_s: float = 1.0

    def resolved_key(self) -> bytes | None:
        """The key in effect: `key`, else $SERL_TRANSPORT_KEY, else None (no authentication)."""
        if self.key is not None:
            return as_key(self.key)
        return as_key(os.environ.get(KEY_ENV_VAR))

    def validate(self) -> None:
        """Raises ValueError on settings that cannot work."""
        for name in ("max_message_bytes", "actor_queue_capacity", "actor_queue_max_bytes",
                     "send_batch_size", "max_inflight_batches", "max_elements", "max_depth",
                     "max_actors", "stats_burst"):
            if getattr(self, name) < 1:
                raise ValueError(f"TransportConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("data_port", "param_port"):
            if not 0 <= getattr(self, name) < 65536:
                raise ValueError(f"TransportConfig.{name} out of range: {getattr(self, name)}")
        if self.retry_interval_s <= 0:
            raise ValueError(f"retry_interval_s must be > 0, got {self.retry_interval_s}")
        if self.spool_max_bytes < 0 or self.stats_per_s <= 0:
            raise ValueError("spool_max_bytes must be >= 0 and stats_per_s > 0")

    def check_bind(self) -> str | None:
        """Raises ValueError if listening on `bind_host` without a key is not allowed; returns a
        warning to log when it is allowed only by allow_unauthenticated."""
        if is_loopback(self.bind_host) or self.resolved_key():
            return None
        risk = (f"listening on {self.bind_host!r} without a key: anyone who can reach ports "
                f"{self.data_port}/{self.param_port} can insert transitions into the replay "
                f"buffers")
        if not self.allow_unauthenticated:
            raise ValueError(
                f"refusing to start: {risk}. Give learner and actors the same secret in the "
                f"SERL_TRANSPORT_KEY environment variable, or listen on 127.0.0.1, or accept the "
                f"risk with transport.allow_unauthenticated=True")
        return f"{risk} (allowed by transport.allow_unauthenticated)"


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or "*": may be any interface
