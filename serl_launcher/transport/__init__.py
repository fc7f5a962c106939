"""The actor <-> learner link over ZeroMQ, and an in-process stand-in with the same API.

    server = LearnerServer(TransportConfig(), on_transitions=buffer_insert, on_stats=log)
    server.start()
    server.publish_params(step, policy_params)            # newest wins, never blocks

    client = ActorClient(TransportConfig(host="learner-host"), actor_id="actor-0").start()
    client.send_transition(transition)                     # never blocks; retried until acked
    step, params = client.wait_for_params(timeout=60.0)

What it fixes relative to agentlace (HIL-SERL's transport): msgpack with typed numpy buffers
instead of pickle (codec.py), versioned and size-limited messages, optional HMAC-SHA256 with a
shared key (TransportConfig.key or $SERL_TRANSPORT_KEY), any number of actors each with its own
sequence numbers, acknowledgements that trim the actor's bounded queue, re-sends after a
learner restart, a restarted actor accepted from its first transition, data sent as it is
produced (not at episode end). reliability.py describes the delivery protocol.

Threading: each end has one background I/O thread that owns its zmq sockets; the caller's
threads hand it work through locks, queues and a wake-up socketpair. The learner's callbacks
run on its I/O thread.
"""

from serl_launcher.transport.client import ActorClient
from serl_launcher.transport.codec import (
    PROTOCOL_VERSION,
    AuthenticationError,
    MalformedMessage,
    MessageTooLarge,
    ProtocolVersionError,
    TransportError,
    UnsupportedType,
    decode,
    decode_message,
    encode,
)
from serl_launcher.transport.config import TransportConfig
from serl_launcher.transport.local import LocalClient, LocalHub, LocalServer
from serl_launcher.transport.server import LearnerServer

__all__ = [
    "PROTOCOL_VERSION",
    "ActorClient",
    "AuthenticationError",
    "LearnerServer",
    "LocalClient",
    "LocalHub",
    "LocalServer",
    "MalformedMessage",
    "MessageTooLarge",
    "ProtocolVersionError",
    "TransportConfig",
    "TransportError",
    "UnsupportedType",
    "decode",
    "decode_message",
    "encode",
]
