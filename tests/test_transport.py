"""serl_launcher.transport: codec, delivery bookkeeping, and the zmq link on loopback."""

from __future__ import annotations

import struct
import threading
import time
from collections import defaultdict

import msgpack
import numpy as np
import pytest
import zmq

from serl_launcher.transport import (
    ActorClient,
    AuthenticationError,
    LearnerServer,
    LocalHub,
    MalformedMessage,
    MessageTooLarge,
    ProtocolVersionError,
    TransportConfig,
    TransportError,
    UnsupportedType,
    decode,
    decode_message,
    encode,
)
from serl_launcher.transport.codec import frame_parts, pack_value
from serl_launcher.transport.reliability import Outbox, SessionTable
from serl_launcher.transport.server import REJECT_REASONS

FAST = {"retry_interval_s": 0.2}


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def transition(i: int, size: int = 128, rng: np.random.Generator | None = None) -> dict:
    """A realistic transition: two uint8 cameras + a float32 state, per observation."""
    rng = rng or np.random.default_rng(i)

    def obs():
        return {
            "state": rng.standard_normal(19).astype(np.float32),
            "front": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "wrist": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        }

    return {
        "observations": obs(),
        "next_observations": obs(),
        "actions": rng.uniform(-1, 1, 7).astype(np.float32),
        "rewards": np.float32(i % 2),
        "masks": 1.0,
        "dones": i % 10 == 9,
        "intervened": np.bool_(i % 3 == 0),
        "grasp_penalty": -0.02,
        "seq": i,
    }


def assert_same(a, b, path: str = "") -> None:
    """Equal values, types, dtypes and shapes, recursively; arrays bit for bit."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray | np.generic):
        assert type(b) is type(a), (path, type(a), type(b))
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), path
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path
    elif isinstance(a, float) and a != a:
        assert isinstance(b, float) and b != b, path
    else:
        assert type(b) is type(a) and a == b, (path, a, b)


@pytest.fixture
def closing():
    """Registers servers and clients to close at the end of the test, clients first."""
    things = []
    yield things.append
    for thing in reversed(things):
        thing.close()


def start_server(closing, config: TransportConfig, **kwargs):
    """A started server on free ports, a list that receives (actor_id, transition)s, and a
    client config pointing at it."""
    received: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def on_transitions(actor_id, transitions):
        with lock:
            received.extend((actor_id, t) for t in transitions)

    server = LearnerServer(config, kwargs.pop("on_transitions", on_transitions), **kwargs)
    server.start()
    closing(server)
    client_config = TransportConfig(**{**config.__dict__, "data_port": server.data_port,
                                       "param_port": server.param_port})
    return server, received, client_config


def server_config(**kwargs) -> TransportConfig:
    return TransportConfig(data_port=0, param_port=0, **{**FAST, **kwargs})


# ------------------------------------------------------------------------------------ codec


def test_codec_round_trip_is_bit_exact():
    t = transition(3)
    t["nested"] = {"zero_d": np.array(2.5, np.float64), "empty": np.zeros((0, 4), np.int16),
                   "strided": np.arange(24, dtype=np.int64).reshape(4, 6)[:, ::2],
                   "big_endian": np.arange(3, dtype=">f4"), "i": np.int64(-7),
                   "text": "ok", "none": None, "list": [1, 2.0, True]}
    frame = encode(t, key="secret")
    back = decode(frame, key="secret")
    expected = dict(t)
    expected["nested"] = dict(t["nested"], strided=np.ascontiguousarray(t["nested"]["strided"]))
    assert_same(expected, back)
    assert back["observations"]["front"].flags.writeable  # consumers may modify what they get
    assert isinstance(back["dones"], bool) and isinstance(back["masks"], float)
    assert decode_message(encode(1, msg_type="x"))[0] == "x"


def test_codec_refuses_what_it_must():
    with pytest.raises(UnsupportedType):
        encode({"x": np.array([object(), 1], dtype=object)})
    with pytest.raises(UnsupportedType):
        encode({"x": np.array(["a", "b"])})
    with pytest.raises(UnsupportedType):
        encode({"f": lambda: 0})
    frame = encode({"x": np.zeros(1000, np.uint8)})
    with pytest.raises(MessageTooLarge):
        encode({"x": np.zeros(1000, np.uint8)}, max_message_bytes=500)
    with pytest.raises(MessageTooLarge):
        decode(frame, max_message_bytes=len(frame) - 1)
    other_version = bytearray(frame)
    other_version[4:6] = struct.pack(">H", 99)
    with pytest.raises(ProtocolVersionError):
        decode(bytes(other_version))
    signed = bytearray(encode({"x": 1}, key="secret"))
    with pytest.raises(AuthenticationError):
        decode(bytes(signed), key="other")
    signed[-1] ^= 1  # payload altered after signing
    with pytest.raises(AuthenticationError):
        decode(bytes(signed), key="secret")
    with pytest.raises(AuthenticationError):  # key expected, message unsigned
        decode(frame, key="secret")
    with pytest.raises(AuthenticationError):  # signed, but no key here
        decode(encode(1, key="secret"))
    with pytest.raises(MalformedMessage):
        decode(b"not a message at all")
    with pytest.raises(MalformedMessage):  # valid header, invalid msgpack
        decode(b"".join(frame_parts("data", [b"\xc1"], None)))
    bad_ext = msgpack.ExtType(1, b"\x03|O8\x01" + struct.pack("<Q", 1) + b"\0" * 8)
    with pytest.raises(MalformedMessage):  # an object array forged on the wire
        decode(b"".join(frame_parts("data", [msgpack.packb(bad_ext)], None)))
    lying_ext = msgpack.ExtType(1, b"\x03<f4\x01" + struct.pack("<Q", 10**6) + b"\0" * 8)
    with pytest.raises(MalformedMessage):  # shape larger than the bytes sent
        decode(b"".join(frame_parts("data", [msgpack.packb(lying_ext)], None)))


def test_outbox_and_session_table_bookkeeping():
    box = Outbox(capacity=5, max_bytes=1 << 20)
    for i in range(7):
        box.put(bytes([i]))
    assert (box.base, box.pending, box.dropped) == (2, 5, 2)
    first, base, items = box.peek_batch(max_items=2, max_bytes=100, window=3)
    assert (first, base, items) == (2, 2, [b"\x02", b"\x03"])
    box.mark_sent(4)
    assert box.peek_batch(2, 100, window=3)[2] == [b"\x04"]  # the window caps what is in flight
    assert box.ack(3) and box.pending == 3 and not box.ack(1)
    box.rewind()
    assert box.peek_batch(10, 100, 10)[0] == 4

    table = SessionTable()
    assert table.plan("a", "s1", first=0, base=0, n=4).count == 4
    table.commit("a", "s1", 4)
    plan = table.plan("a", "s1", first=2, base=0, n=4)  # 2, 3 already delivered
    assert (plan.offset, plan.count, plan.nack) == (2, 2, False)
    table.commit("a", "s1", 2)
    assert table.plan("a", "s1", first=9, base=0, n=1).nack  # 6..8 missing: go back
    assert table.plan("a", "s1", first=10, base=10, n=1).count == 1  # actor dropped 6..9
    table.commit("a", "s1", 1)
    assert table.plan("a", "s2", first=0, base=0, n=3).count == 3  # restarted actor: from 0
    table.commit("a", "s2", 3)
    view = table.actors()["a"]
    assert (view["session"], view["sessions"], view["transitions"]) == ("s2", 2, 10)
    assert (view["duplicates"], view["skipped"], view["acked"]) == (2, 4, 2)


# -------------------------------------------------------------------------------- zmq link


def test_actor_to_learner_round_trip_with_key(closing):
    config = server_config(key="secret")
    stats_seen = []
    server, received, client_config = start_server(
        closing, config, on_stats=lambda a, s: stats_seen.append((a, s))
    )
    client = ActorClient(client_config, "actor-0").start()
    closing(client)
    sent = [transition(i) for i in range(20)]
    for t in sent:
        client.send_transition(t)
    client.send_stats({"actor/episode_return": np.float32(1.5), "steps": 20})
    assert client.flush(10.0) and client.pending == 0
    assert [a for a, _ in received] == ["actor-0"] * 20
    for t, (_, r) in zip(sent, received, strict=True):
        assert_same(t, r)
    assert wait_until(lambda: stats_seen)
    assert stats_seen[0][0] == "actor-0" and stats_seen[0][1]["steps"] == 20
    actors = server.actors
    assert actors["actor-0"]["transitions"] == 20
    assert actors["actor-0"]["session"] == client.session
    assert server.stats["rejected"] == dict.fromkeys(REJECT_REASONS, 0)


def test_four_actors_exactly_once_in_order(closing):
    server, received, client_config = start_server(closing, server_config(send_batch_size=8))
    clients = [ActorClient(client_config, f"actor-{k}").start() for k in range(4)]
    for c in clients:
        closing(c)
    n = 150

    def run(client):
        for i in range(n):
            client.send_transition({"seq": i, "obs": np.full((16, 16, 3), i % 256, np.uint8)})

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(c.flush(20.0) for c in clients)
    per_actor = defaultdict(list)
    for actor_id, t in received:
        per_actor[actor_id].append(t["seq"])
        assert t["obs"][0, 0, 0] == t["seq"] % 256
    assert sorted(per_actor) == [f"actor-{k}" for k in range(4)]
    assert all(seqs == list(range(n)) for seqs in per_actor.values())
    assert server.stats["transitions"] == 4 * n


def test_params_newest_wins_and_late_joiner_gets_current(closing):
    server, _, client_config = start_server(closing, server_config())
    early = ActorClient(client_config, "early").start()
    closing(early)
    assert early.latest_params() is None
    assert wait_until(lambda: server.stats["accepted"] >= 1)  # connected (its hello arrived)
    rng = np.random.default_rng(0)
    trees = {}
    for step in range(1, 6):
        trees[step] = {"actor": {"dense": {"kernel": rng.standard_normal((512, 256), np.float32),
                                           "bias": np.zeros(256, np.float32)}},
                       "temperature": np.float32(step)}
        server.publish_params(step, trees[step])
    got = early.wait_for_params(10.0, newer_than=4)
    assert got is not None and got[0] == 5
    assert_same(trees[5], got[1])
    late = ActorClient(client_config, "late").start()  # no publish after it joins
    closing(late)
    got = late.wait_for_params(10.0)
    assert got is not None and got[0] == 5
    assert_same(trees[5], got[1])


def test_learner_restart_mid_stream_loses_and_duplicates_nothing(closing):
    config = server_config(send_batch_size=4, max_inflight_batches=4)
    seen: list[list[int]] = [[], []]

    def slow(index):
        def on_transitions(actor_id, transitions):
            time.sleep(0.01)  # a busy learner: messages are in flight when it goes away
            seen[index].extend(t["seq"] for t in transitions)
        return on_transitions

    first = LearnerServer(config, slow(0)).start()
    ports = {"data_port": first.data_port, "param_port": first.param_port}
    client = ActorClient(TransportConfig(**{**config.__dict__, **ports}), "actor").start()
    closing(client)
    n = 400
    for i in range(n // 2):
        client.send_transition({"seq": i, "x": np.arange(100, dtype=np.float32)})
    assert wait_until(lambda: len(seen[0]) >= 40)
    first.close()
    delivered_before = len(seen[0])
    assert 0 < delivered_before < n // 2
    for i in range(n // 2, n):  # the learner is down: all of this waits in the actor's queue
        client.send_transition({"seq": i, "x": np.arange(100, dtype=np.float32)})
    assert client.pending >= n - delivered_before
    second = LearnerServer(TransportConfig(**{**config.__dict__, **ports}), slow(1)).start()
    closing(second)
    assert client.flush(30.0)
    assert seen[0] == list(range(delivered_before))
    assert seen[0] + seen[1] == list(range(n)), (seen[0][-4:], seen[1][:8], len(seen[1]))
    assert client.dropped == 0


def test_actor_restart_is_a_new_session(closing):
    server, received, client_config = start_server(closing, server_config())
    old = ActorClient(client_config, "actor").start()
    for i in range(50):
        old.send_transition({"seq": i})
    assert old.flush(10.0)
    old.close()
    new = ActorClient(client_config, "actor").start()  # same id, new process: seq from 0
    closing(new)
    for i in range(20):
        new.send_transition({"seq": 100 + i})
    assert new.flush(10.0)
    assert [t["seq"] for _, t in received] == list(range(50)) + list(range(100, 120))
    view = server.actors["actor"]
    assert (view["sessions"], view["transitions"], view["session"]) == (2, 70, new.session)


def test_two_live_clients_sharing_an_actor_id_are_both_delivered(closing):
    server, received, client_config = start_server(closing, server_config())
    a, b = (ActorClient(client_config, "same").start() for _ in range(2))
    closing(a)
    closing(b)
    for i in range(30):
        a.send_transition({"seq": i, "who": "a"})
        b.send_transition({"seq": i, "who": "b"})
    assert a.flush(10.0) and b.flush(10.0)
    for who in "ab":
        assert [t["seq"] for _, t in received if t["who"] == who] == list(range(30))
    view = server.actors["same"]
    assert (view["sessions"], view["transitions"]) == (2, 60)


def test_failing_callback_is_retried_not_lost(closing):
    calls = []

    def flaky(actor_id, transitions):
        calls.append([t["seq"] for t in transitions])
        if len(calls) == 1:
            raise RuntimeError("buffer rejected the batch")

    server, _, client_config = start_server(closing, server_config(), on_transitions=flaky)
    client = ActorClient(client_config, "actor").start()
    closing(client)
    for i in range(5):
        client.send_transition({"seq": i})
    assert client.flush(10.0)
    delivered = [seq for batch in calls[1:] for seq in batch]
    assert delivered == list(range(5)) and server.stats["callback_errors"] == 1


def test_hostile_messages_are_counted_and_server_keeps_serving(closing):
    config = server_config(key="secret", max_message_bytes=1 << 20)
    server, received, client_config = start_server(closing, config)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(f"tcp://127.0.0.1:{server.data_port}")
    data = {"actor": "evil", "session": "s", "first": 0, "base": 0, "dropped": 0,
            "items": [{"seq": 0}]}
    wrong_version = bytearray(encode(data, msg_type="data", key="secret"))
    wrong_version[4:6] = struct.pack(">H", 2)
    hostile = {
        "bad_auth": [encode(data, msg_type="data", key="guess"),  # forged
                     encode(data, msg_type="data")],  # unauthenticated
        "too_large": [b"\0" * ((1 << 20) + 1)],
        "bad_version": [bytes(wrong_version)],
        "malformed": [b"garbage", encode(5, msg_type="data", key="secret"),
                      encode(data, msg_type="nonsense", key="secret")],
    }
    for frames in hostile.values():
        for frame in frames:
            raw.send(frame)
    raw.send_multipart([b"two", b"frames"])  # malformed as well
    expected = {**dict.fromkeys(REJECT_REASONS, 0), **{k: len(v) for k, v in hostile.items()}}
    expected["malformed"] += 1
    try:
        assert wait_until(lambda: server.stats["rejected"] == expected), server.stats
    finally:
        raw.close()
        ctx.term()
    assert received == [] and "evil" not in server.actors
    client = ActorClient(client_config, "good").start()
    closing(client)
    client.send_transition({"seq": 1})
    assert client.flush(10.0)
    assert [(a, t["seq"]) for a, t in received] == [("good", 1)]


def test_key_mismatch_accepts_nothing(closing, monkeypatch):
    monkeypatch.setenv("SERL_TRANSPORT_KEY", "learner-key")  # the server's key comes from env
    server, received, client_config = start_server(closing, server_config())
    client_config.key = "actor-key"
    client = ActorClient(client_config, "actor").start()
    closing(client)
    server.publish_params(1, {"w": np.ones(3, np.float32)})
    for i in range(10):
        client.send_transition({"seq": i})
    assert not client.flush(1.0)
    assert received == [] and client.pending == 10
    assert server.stats["rejected"]["bad_auth"] > 0 and server.stats["accepted"] == 0
    assert client.latest_params() is None


def test_full_queue_drops_oldest_without_blocking(closing):
    config = server_config(actor_queue_capacity=10)
    probe = LearnerServer(config, lambda a, t: None).start()  # only to find two free ports
    ports = {"data_port": probe.data_port, "param_port": probe.param_port}
    probe.close()
    client = ActorClient(TransportConfig(**{**config.__dict__, **ports}), "actor").start()
    closing(client)
    start = time.perf_counter()
    for i in range(100):  # no learner yet
        client.send_transition({"seq": i, "img": np.zeros((64, 64, 3), np.uint8)})
    assert time.perf_counter() - start < 1.0
    assert (client.pending, client.dropped) == (10, 90)
    assert not client.flush(0.1)
    server, received, _ = start_server(closing, TransportConfig(**{**config.__dict__, **ports}))
    assert client.flush(10.0)
    assert [t["seq"] for _, t in received] == list(range(90, 100))  # the newest survive
    assert server.actors["actor"]["dropped"] == 90


def test_oversized_transition_is_refused_at_the_call():
    client = ActorClient(server_config(max_message_bytes=10_000), "actor")
    with pytest.raises(MessageTooLarge):
        client.send_transition({"img": np.zeros(20_000, np.uint8)})
    with pytest.raises(UnsupportedType):
        client.send_transition({"x": np.array([None])})
    assert client.pending == 0


# -------------------------------------------------------------------------------- LocalHub


def test_local_hub_same_semantics():
    hub = LocalHub(TransportConfig(actor_queue_capacity=30))
    received, stats = [], []
    client = hub.client("actor-0").start()  # actor first: its data waits for the server
    sent = [transition(i, size=32) for i in range(40)]
    for t in sent[:5]:
        client.send_transition(t)
    assert client.pending == 5 and client.latest_params() is None
    server = hub.server(lambda a, ts: received.extend(ts), lambda a, s: stats.append(s)).start()
    assert client.pending == 0 and len(received) == 5
    for t in sent[5:]:
        client.send_transition(t)
    client.send_stats({"x": 1})
    assert client.flush(1.0)
    for t, r in zip(sent, received, strict=True):
        assert_same(t, r)
    assert stats == [{"x": 1}]
    params = {"w": np.arange(4, dtype=np.float32)}
    server.publish_params(7, params)
    params["w"][:] = -1  # published params are a snapshot
    step, got = client.wait_for_params(1.0)
    assert step == 7 and got["w"].tolist() == [0, 1, 2, 3]
    late = hub.client("late").start()
    assert late.latest_params()[0] == 7
    server.close()
    for i in range(35):  # no server: the queue keeps the newest 30
        client.send_transition({"seq": i})
    assert (client.pending, client.dropped) == (30, 5)
    restarted = hub.server(lambda a, ts: received.extend(ts)).start()
    assert client.pending == 0 and [t["seq"] for t in received[-30:]] == list(range(5, 35))
    restarted.close()
    with pytest.raises(UnsupportedType):
        client.send_transition({"x": np.array([object()])})
    assert pack_value({"a": 1}) == msgpack.packb({"a": 1})


# ------------------------------------------------------------ durable sink, security, backpressure


def state_space_store(path, **kwargs):
    from gymnasium import spaces

    from serl_launcher.data.store import DataStore

    obs = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (4,), np.float32)})
    return DataStore(path, obs, spaces.Box(-1, 1, (2,), np.float32), 10_000, **kwargs)


def state_transition(i: int, bad: bool = False) -> dict:
    obs = {"state": np.array([i, 0, 0, 0], np.float32)}
    nxt = {"state": np.array([i + 1, 0, 0, 0], np.float32)}
    action = np.array([0.5, np.nan if bad else 0.1], np.float32)
    return {"observations": obs, "next_observations": nxt, "actions": action, "rewards": 0.0,
            "masks": 1.0, "dones": i % 20 == 19, "intervened": False}


def held_states(store) -> list[int]:
    """The observation index of every transition the online buffer holds, in order."""
    buf = store.online
    out = []
    for g in range(buf._rows_written - buf.rows, buf._rows_written):
        if buf._valid[g % buf.capacity]:
            out.append(int(buf._frames["state"][(g - 1) % buf.capacity][0]))
    return out


def test_one_invalid_transition_in_a_batch_is_rejected_and_the_rest_kept_once(closing, tmp_path):
    store = state_space_store(tmp_path)
    server, _, client_config = start_server(closing, server_config(), on_transitions=store)
    client = ActorClient(client_config, "sim-0").start()
    closing(client)
    for i in range(40):
        client.send_transition(state_transition(i, bad=i == 17))  # one NaN from a blown-up sim
    assert client.flush(10.0)  # the bad one is acknowledged (as rejected): nothing to re-send
    assert held_states(store) == [i for i in range(40) if i != 17]
    assert client.rejected == {"invalid transition": 1} and client.retransmits == 0
    assert server.stats["rejected_transitions"] == 1 and server.stats["transitions"] == 39
    assert store.counts()[2] == {"invalid transition": 1}


def test_exactly_once_across_learner_restarts_with_a_durable_store(closing, tmp_path):
    """The store's delivery state survives the learner: re-sent transitions it already holds
    are recognised, so a restart (kill or close) duplicates nothing and loses nothing."""
    config = server_config(send_batch_size=4, max_inflight_batches=4)
    store = state_space_store(tmp_path)
    first = LearnerServer(config, store).start()
    ports = {"data_port": first.data_port, "param_port": first.param_port}
    client = ActorClient(TransportConfig(**{**config.__dict__, **ports}), "actor").start()
    closing(client)
    for i in range(200):
        client.send_transition(state_transition(i))
    assert wait_until(lambda: store.online.num_inserted >= 40)
    first.close()  # its last acks may or may not get out
    store.close()
    for i in range(200, 400):
        client.send_transition(state_transition(i))
    restored = state_space_store(tmp_path, resuming=True)
    assert restored.online.num_inserted > client.acked  # everything acknowledged, maybe more
    second = LearnerServer(TransportConfig(**{**config.__dict__, **ports}), restored).start()
    closing(second)
    assert client.flush(30.0)
    assert held_states(restored) == list(range(400)) and restored.online.num_inserted == 400
    assert client.dropped == 0


def raw_dealer(port: int):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return ctx, sock


def test_forged_and_replayed_messages_insert_nothing(closing, tmp_path):
    key = "the-shared-secret"
    config = server_config(key=key)
    store = state_space_store(tmp_path)
    server, _, _ = start_server(closing, config, on_transitions=store)
    ctx, sock = raw_dealer(server.data_port)
    try:
        # A stranger without the key: refused before parsing.
        forged = {"actor": "evil", "session": "abcd", "epoch": server.epoch, "first": 0, "base": 0,
                  "dropped": 0, "items": [state_transition(0)]}
        sock.send(encode(forged, msg_type="data"))
        sock.send(encode(forged, msg_type="data", key="a-guess"))
        assert wait_until(lambda: server.stats["rejected"]["bad_auth"] == 2)
        # A message of a real actor, captured: delivered once, a duplicate when sent again...
        sock.send(encode({"actor": "a0", "session": "ab12", "step": -1}, msg_type="hello", key=key))
        reply = decode_message(sock.recv(), key=key)
        assert reply[0] == "ack" and reply[1]["epoch"] == server.epoch
        captured = encode({**forged, "actor": "a0", "session": "ab12"}, msg_type="data", key=key)
        sock.send(captured)
        sock.send(captured)
        assert wait_until(lambda: server.stats["duplicates"] == 1)
        assert store.online.num_inserted == 1
        # ... and refused by a restarted learner (new epoch), which holds it already.
        server.close()
        store.close()
        restored = state_space_store(tmp_path, resuming=True)
        second = LearnerServer(TransportConfig(**{**config.__dict__, "data_port": server.data_port,
                                                  "param_port": server.param_port}), restored).start()
        closing(second)
        sock.send(captured)
        assert wait_until(lambda: second.stats["rejected"]["stale_epoch"] == 1)
        assert restored.online.num_inserted == 1 and "evil" not in second.actors
    finally:
        sock.close()
        ctx.term()


def test_a_decoding_bomb_is_refused_cheaply_and_the_server_keeps_serving(closing):
    import tracemalloc

    from serl_launcher.transport.codec import frame_parts

    server, received, client_config = start_server(closing, server_config(max_message_bytes=32 << 20))
    bomb = b"".join(frame_parts("data", [b"\xdd" + struct.pack(">I", 20_000_000) + b"\xc0" * 20_000_000], None))
    ctx, sock = raw_dealer(server.data_port)
    tracemalloc.start()
    try:
        for _ in range(3):
            sock.send(bomb)
        assert wait_until(lambda: server.stats["rejected"]["malformed"] == 3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sock.close()
        ctx.term()
    assert peak < 3 * len(bomb)  # the frames themselves, not millions of decoded objects
    client = ActorClient(client_config, "after").start()
    closing(client)
    client.send_transition({"seq": 1})
    assert client.flush(10.0) and [t["seq"] for _, t in received] == [1]


def test_listening_beyond_loopback_needs_a_key(monkeypatch):
    monkeypatch.delenv("SERL_TRANSPORT_KEY", raising=False)
    with pytest.raises(TransportError, match="refusing to start.*SERL_TRANSPORT_KEY"):
        LearnerServer(server_config(bind_host="0.0.0.0"), lambda a, t: None).start()
    allowed = TransportConfig(bind_host="0.0.0.0", allow_unauthenticated=True)
    assert "allowed by transport.allow_unauthenticated" in allowed.check_bind()
    assert TransportConfig(bind_host="0.0.0.0", key="k").check_bind() is None
    assert TransportConfig(bind_host="::1").check_bind() is None
    assert TransportConfig().bind_host == "127.0.0.1"
    server = LearnerServer(server_config(bind_host="0.0.0.0", key="k"), lambda a, t: None).start()
    server.close()


def test_actor_ids_sessions_and_stats_are_bounded(closing):
    server, received, client_config = start_server(
        closing, server_config(max_actors=3, stats_per_s=0.01, stats_burst=2))
    stats = []
    server._on_stats = lambda actor, s: stats.append((actor, s))
    clients = [ActorClient(client_config, f"a{k}").start() for k in range(4)]
    for client in clients:
        closing(client)
    for k, client in enumerate(clients[:3]):
        client.send_transition({"seq": k})
        assert client.flush(10.0)
    clients[3].send_transition({"seq": 3})
    assert not clients[3].flush(1.0)  # a fourth actor id gets no state on the learner
    assert server.stats["rejected"]["too_many_actors"] > 0 and "a3" not in server.actors
    for i in range(6):
        clients[0].send_stats({"episode": i})
    clients[0].send_stats({"bad": float("nan")})
    assert wait_until(lambda: server.stats["rejected"]["rate_limited"] >= 3)
    assert [s["episode"] for _, s in stats] == [0, 1]
    with pytest.raises(ValueError, match="actor_id"):
        ActorClient(client_config, "../../etc")


def test_backpressure_credit_follows_the_rate_limiter(closing):
    from serl_launcher.data.rate_limiter import SampleToInsertRatio

    limiter = SampleToInsertRatio(1, min_size=0, tolerance=10, samples_per_step=1)
    count = []

    def on_transitions(actor_id, transitions):
        count.extend(transitions)
        limiter.inserted(len(transitions))

    config = server_config(send_batch_size=1)
    server = LearnerServer(config, on_transitions, allowance=limiter.allowance).start()
    closing(server)
    client = ActorClient(TransportConfig(**{**config.__dict__, "data_port": server.data_port,
                                            "param_port": server.param_port}), "sim").start()
    closing(client)
    assert client.credit_left() == 0  # no learner contact yet: a simulator waits
    assert client.wait_for_credit(10.0)
    sent = 0
    while client.wait_for_credit(1.0):
        client.send_transition({"seq": sent})
        sent += 1
    assert sent == 10 and client.flush(10.0) and len(count) == 10  # the tolerance, then wait
    for _ in range(5):  # the learner trains: credit is pushed to the waiting actor
        limiter.stepped()
        server.notify_credit()
    assert client.wait_for_credit(10.0)
    deadline = time.monotonic() + 10.0  # the grants may arrive one by one on a loaded machine
    while client.credit_left() < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.credit_left() == 5
    assert server.stats["credit_grants"] >= 1


def test_spool_keeps_everything_through_a_learner_outage(closing, tmp_path):
    config = server_config(actor_queue_capacity=20, spool_max_bytes=1 << 20)
    probe = LearnerServer(config, lambda a, t: None).start()
    ports = {"data_port": probe.data_port, "param_port": probe.param_port}
    probe.close()
    client = ActorClient(TransportConfig(**{**config.__dict__, **ports}), "arm",
                         spool_dir=tmp_path / "spool").start()
    closing(client)
    for i in range(300):  # the learner is away: 20 in memory, the rest on disk
        client.send_transition({"seq": i, "x": np.full(100, i, np.float32)})
    assert (client.pending, client.spooled, client.dropped) == (300, 280, 0)
    assert any((tmp_path / "spool").rglob("*.spool"))
    server, received, _ = start_server(closing, TransportConfig(**{**config.__dict__, **ports}))
    assert client.flush(30.0)
    assert [t["seq"] for _, t in received] == list(range(300))
    assert all(float(t["x"][0]) == t["seq"] for _, t in received)
    assert client.spooled == 0 and not any((tmp_path / "spool").rglob("*.spool"))


def test_replayed_hellos_change_nothing_the_learner_keeps(closing):
    server, received, client_config = start_server(closing, server_config())
    ctx, sock = raw_dealer(server.data_port)
    try:
        for k in range(40):  # hellos of 40 old sessions of a live actor's id (recorded, say)
            sock.send(encode({"actor": "robot-0", "session": f"{k:04x}", "step": -1}, msg_type="hello"))
        assert wait_until(lambda: server.stats["accepted"] >= 40)
    finally:
        sock.close()
        ctx.term()
    assert server.actors == {}
    client = ActorClient(client_config, "robot-0").start()
    closing(client)
    client.send_transition({"seq": 0})
    assert client.flush(10.0) and server.stats["rejected"]["retired_session"] == 0


def test_idle_actor_ids_make_room_and_seeded_ones_count_as_idle():
    table = SessionTable(max_actors=2, idle_actor_s=0.2)
    table.seed({"old": {"aa": 5}})
    assert not table.plan("a", "01", 0, 0, 1).refused  # the seeded one is idle: it goes
    assert not table.plan("b", "02", 0, 0, 1).refused
    assert table.plan("c", "03", 0, 0, 1).refused == "too_many_actors"  # both live
    time.sleep(0.3)
    assert not table.plan("c", "03", 0, 0, 1).refused
    assert table.plan("a", "01", 1, 1, 1).refused == "retired_session"  # a recorded message of it


def test_stats_must_be_finite_real_numbers():
    from serl_launcher.transport.server import check_stats

    assert check_stats({"a": 1, "b/c": np.float32(2.5), "d": True}) == {"a": 1, "b/c": np.float32(2.5), "d": True}
    for bad in ({"x": np.complex64(1)}, {"x": float("inf")}, {"x": "text"}, {"x": [1]},
                {"bad name!": 1}, {f"k{i}": 1 for i in range(65)}):
        with pytest.raises(MalformedMessage):
            check_stats(bad)


def test_two_processes_with_one_actor_id_are_refused(tmp_path):
    first = ActorClient(TransportConfig(), "same-host", spool_dir=tmp_path / "spool")
    with pytest.raises(ValueError, match="another actor process with actor_id 'same-host'"):
        ActorClient(TransportConfig(), "same-host", spool_dir=tmp_path / "spool")
    first.close()
    ActorClient(TransportConfig(), "same-host", spool_dir=tmp_path / "spool").close()  # free again
