"""Settings shared by both ends of the actor <-> learner link."""

from __future__ import annotations

import os
from dataclasses import dataclass

from serl_launcher.transport.codec import as_key

KEY_ENV_VAR = "SERL_TRANSPORT_KEY"


@dataclass
class TransportConfig:
    """Where the learner listens and how both ends behave. Both ends must agree on the key.

    host: the learner's address, as the actors connect to it.
    data_port: ROUTER socket: transitions and stats in, acks and params replies out.
    param_port: PUB socket: params broadcast.
    key: shared secret for HMAC-SHA256 message authentication. None: read the environment
        variable SERL_TRANSPORT_KEY when a server or client is built; unset or empty there too:
        no authentication. (Authentication only: traffic is not encrypted.)
    max_message_bytes: larger messages are refused before they are parsed, on both ends.
    actor_queue_capacity: transitions an actor holds until the learner acknowledges them;
        beyond it the oldest are dropped (and counted in ActorClient.dropped).
    actor_queue_max_bytes: the same limit in encoded bytes (~200 KB per transition with two
        128x128x3 cameras, so the transition count alone could mean 20 GB).
    send_batch_size: most transitions per data message.
    max_inflight_batches: data messages sent but not yet acknowledged, per actor.
    retry_interval_s: an actor re-sends its unacknowledged transitions when no ack has arrived
        for this long (e.g. the learner restarted), and asks for params this often until it
        has some.
    """

    host: str = "127.0.0.1"
    data_port: int = 5588
    param_port: int = 5589
    key: str | None = None
    max_message_bytes: int = 64 << 20
    actor_queue_capacity: int = 100_000
    actor_queue_max_bytes: int = 2 << 30
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
                     "send_batch_size", "max_inflight_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"TransportConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("data_port", "param_port"):
            if not 0 <= getattr(self, name) < 65536:
                raise ValueError(f"TransportConfig.{name} out of range: {getattr(self, name)}")
        if self.retry_interval_s <= 0:
            raise ValueError(f"retry_interval_s must be > 0, got {self.retry_interval_s}")
