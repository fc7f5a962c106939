"""The actor <-> learner link over ZeroMQ, and an in-process stand-in with the same API.

    server = LearnerServer(TransportConfig(), sink, on_stats=log, allowance=limiter.allowance)
    server.start()
    server.publish_params(step, policy_params)            # newest wins, never blocks

    client = ActorClient(TransportConfig(host="learner-host"), actor_id="actor-0",
                         spool_dir="runs/x/actor-0/spool").start()
    client.wait_for_credit(timeout=1.0)                    # a simulator honours backpressure
    client.send_transition(transition)                     # never blocks; kept until acked
    step, params = client.wait_for_params(timeout=60.0)

`sink` is a TransitionSink (the learner's DataStore: validate, log to disk, insert) or a plain
``on_transitions(actor_id, transitions)`` callable (in memory). What it fixes relative to
agentlace (HIL-SERL's transport): msgpack with typed numpy buffers instead of pickle, bounded
decoding (codec.py), versioned and size-limited messages, HMAC-SHA256 with a shared key
(TransportConfig.key or $SERL_TRANSPORT_KEY; required to listen beyond loopback), epochs that
make recorded messages useless after a restart, any number of actors each with its own sequence
numbers, acknowledgements sent only once the sink has made the data durable (group commit on
its own thread) and that name the transitions the sink rejected, credits in acknowledgements
for backpressure, re-sends after a learner restart that a durable sink deduplicates exactly, an
actor queue that spills to a bounded spool on disk, bounded per-actor state and rate-limited
stats. reliability.py describes the delivery protocol.

Threading: each end has one background I/O thread that owns its zmq sockets; the caller's
threads hand it work through locks, queues and a wake-up socketpair. The learner's sink and
stats callback run on its I/O thread (the sink's commit on a committer thread).
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
from serl_launcher.transport.server import CallbackSink, LearnerServer, TransitionSink

__all__ = [
    "PROTOCOL_VERSION",
    "ActorClient",
    "AuthenticationError",
    "CallbackSink",
    "LearnerServer",
    "LocalClient",
    "LocalHub",
    "LocalServer",
    "MalformedMessage",
    "MessageTooLarge",
    "ProtocolVersionError",
    "TransportConfig",
    "TransitionSink",
    "TransportError",
    "UnsupportedType",
    "decode",
    "decode_message",
    "encode",
]
