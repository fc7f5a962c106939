"""serl_launcher.transport.codec.check_bounds: hostile frames are refused fast and small.

A peer may send one frame of the maximum size holding millions of tiny msgpack values; the
bounds walk must refuse it before msgpack builds any of them, in time and memory that do not
grow with the frame.
"""

from __future__ import annotations

import random
import struct
import tracemalloc

import msgpack
import numpy as np
import pytest
from test_transport import assert_same, transition

from serl_launcher.transport.codec import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ELEMENTS,
    HEADER_BYTES,
    MalformedMessage,
    array_header,
    check_bounds,
    decode,
    decode_message,
    encode,
    frame_parts,
    map_header,
    pack_value,
    unpack_value,
)

GENEROUS = 1 << 40  # a limit that no test value reaches


def params_tree() -> dict:
    """A small flax-like params tree: nested dicts of float32 arrays."""
    rng = np.random.default_rng(0)
    tree: dict = {}
    for name in ("actor", "critic", "temperature"):
        layers = {}
        for j in range(4):
            layers[f"Dense_{j}"] = {"kernel": rng.standard_normal((64, 64)).astype(np.float32),
                                    "bias": np.zeros(64, np.float32)}
        tree[name] = {"params": {"encoder": {"ResNet": layers}, "head": {"Dense_0": layers}}}
    return tree


def count_elements(value) -> int:
    """What check_bounds counts, computed from the Python value: every value is one element."""
    if isinstance(value, msgpack.ExtType):  # (a namedtuple, but one msgpack value)
        return 1
    if isinstance(value, dict):
        return 1 + sum(count_elements(k) + count_elements(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return 1 + sum(count_elements(v) for v in value)
    return 1


def depth_of(value) -> int:
    """Containers around the deepest one, plus one; 0 for a scalar."""
    if isinstance(value, msgpack.ExtType):
        return 0
    if isinstance(value, dict):
        return 1 + max((max(depth_of(k), depth_of(v)) for k, v in value.items()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def hostile_frame(payload: bytes) -> bytes:
    return b"".join(frame_parts("data", [payload], None))


def refused(frame: bytes, match: str, **limits) -> bool:
    """decode_message refuses `frame` with a MalformedMessage matching `match`. (How fast is
    measured by the benchmark, not asserted here: timed tests flake on loaded machines.)"""
    with pytest.raises(MalformedMessage, match=match):
        decode_message(frame, **limits)
    return True


# ------------------------------------------------------------------------- legitimate values


def data_frame(transitions: list[dict], key: bytes | None = None) -> bytes:
    """A data message built the way ActorClient builds one: items packed one by one."""
    items = [pack_value(t) for t in transitions]
    payload = [map_header(2), pack_value("first"), pack_value(0), pack_value("items"),
               array_header(len(items)), *items]
    return b"".join(frame_parts("data", payload, key))


def test_batch_of_transitions_passes_round_trips_and_checks():
    transitions = [transition(i) for i in range(64)]
    frame = data_frame(transitions, key=b"secret")
    msg_type, payload = decode_message(frame, key="secret")
    assert msg_type == "data"
    assert_same({"first": 0, "items": transitions}, payload)

    body = memoryview(frame)[HEADER_BYTES + 32:]  # as decode_message hands it over
    expected = 2 + count_elements({"first": 0, "items": transitions})
    assert check_bounds(body, DEFAULT_MAX_ELEMENTS, DEFAULT_MAX_DEPTH) == expected


def test_params_tree_passes_and_round_trips():
    tree = params_tree()
    frame = encode({"params": tree, "step": 7}, msg_type="params", key="k")
    assert_same({"params": tree, "step": 7}, decode(frame, key="k"))


def test_limits_count_the_body_too():
    # The body is [type, payload]: its array and its type string are 2 more elements, and the
    # array is one more level of nesting.
    payload = {"a": [1, 2, [3]], "b": None}
    n, d = count_elements(payload), depth_of(payload)
    frame = encode(payload)
    assert decode(frame, max_elements=n + 2, max_depth=d + 1) == payload
    with pytest.raises(MalformedMessage, match="element limit"):
        decode(frame, max_elements=n + 1)
    with pytest.raises(MalformedMessage, match="depth limit"):
        decode(frame, max_depth=d)


def test_unpack_value_still_works_standalone():
    value = {"x": np.arange(5, dtype=np.int16), "y": [None, True, "s", b"b", 1.5]}
    assert_same(value, unpack_value(pack_value(value)))


# ---------------------------------------------------------------------------- hostile frames


@pytest.mark.parametrize("element", [b"\xc0", b"\x01", b"\xc7\x00\x01"],
                         ids=["nil", "fixint", "empty-ext"])
def test_millions_of_tiny_values_are_refused_fast(element):
    n = 10_000_000 if len(element) == 1 else 3_000_000  # (3 M empty exts: ~9 MB)
    frame = hostile_frame(b"\xdd" + struct.pack(">I", n) + element * n)
    assert refused(frame, "element limit")


def test_ten_million_nils_stay_small_in_memory():
    n = 10_000_000
    frame = hostile_frame(b"\xdd" + struct.pack(">I", n) + b"\xc0" * n)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedMessage, match="element limit"):
            decode_message(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 << 20, f"peak {peak} bytes for a {len(frame)}-byte frame"


def test_many_small_containers_are_refused_once_the_count_is_reached():
    # No header declares too much on its own: the walk has to count its way to the limit and
    # stop there, not at the end of the frame.
    n = 100_000  # the outer header alone stays under the limit
    assert n < DEFAULT_MAX_ELEMENTS
    for inner in (b"\x9f" + b"\xc0" * 15, b"\x8f" + b"\xa0\xc0" * 15, b"\x92\x90\x80"):
        frame = hostile_frame(b"\xdd" + struct.pack(">I", n) + inner * n)
        assert refused(frame, "element limit")
    # Under the limit, the same shape is walked to its end and accepted.
    ok = b"\xdc" + struct.pack(">H", 4000) + (b"\x9f" + b"\xc0" * 15) * 4000
    assert check_bounds(ok, DEFAULT_MAX_ELEMENTS, DEFAULT_MAX_DEPTH) == 1 + 4000 * 16


def test_deep_nesting_is_refused_fast():
    frame = hostile_frame(b"\x91" * 100_000 + b"\xc0")
    assert refused(frame, "depth limit")
    maps = hostile_frame(b"\x81\xa0" * 100_000 + b"\xc0")
    assert refused(maps, "depth limit")
    # The limit is exact; empty containers count as a level too.
    for leaf in (b"\xc0", b"\x90", b"\x80"):
        depth = 10 + (leaf != b"\xc0")
        nested = b"\x91" * 10 + leaf
        assert check_bounds(nested, GENEROUS, depth) == 11
        with pytest.raises(MalformedMessage, match="depth limit"):
            check_bounds(nested, GENEROUS, depth - 1)
    assert check_bounds(b"\xc0", GENEROUS, 0) == 1


@pytest.mark.parametrize("header", [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                                    b"\xdc\xff\xff", b"\xde\xff\xff"])
def test_declared_lengths_beyond_the_data_are_refused_without_looping(header):
    data = header + b"\xc0" * 8
    with pytest.raises(MalformedMessage, match="truncated"):
        check_bounds(data, GENEROUS, DEFAULT_MAX_DEPTH)
    with pytest.raises(MalformedMessage):
        decode_message(hostile_frame(data))


@pytest.mark.parametrize("header", [b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
                                    b"\xc9\xff\xff\xff\xff\x01", b"\xda\xff\xff", b"\xd9\xff"])
def test_declared_payload_sizes_beyond_the_data_are_refused(header):
    with pytest.raises(MalformedMessage, match="truncated"):
        check_bounds(header + b"x" * 10, GENEROUS, DEFAULT_MAX_DEPTH)


def test_truncated_encodings_and_trailing_bytes_are_refused():
    value = {"a": [1, -2, 300, -70000, 2**40, 1.5, "x" * 40, b"y" * 300, None, True],
             "b": np.arange(6, dtype=np.float32).reshape(2, 3), "c": np.int8(3), "d": {}}
    data = pack_value(value)
    assert check_bounds(data, GENEROUS, DEFAULT_MAX_DEPTH) == count_elements(value)
    for cut in range(len(data)):
        with pytest.raises(MalformedMessage, match="truncated"):
            check_bounds(data[:cut], GENEROUS, DEFAULT_MAX_DEPTH)
    for extra in (b"\x00", b"\xc0", b"garbage", pack_value(value)):
        with pytest.raises(MalformedMessage, match="trailing"):
            check_bounds(data + extra, GENEROUS, DEFAULT_MAX_DEPTH)
    frame = encode(value)
    with pytest.raises(MalformedMessage, match="trailing"):
        decode(frame + b"\x00")
    with pytest.raises(MalformedMessage, match="truncated"):
        decode(frame[:-1])
    with pytest.raises(MalformedMessage, match="truncated"):
        decode(frame[:HEADER_BYTES])  # an empty body


@pytest.mark.parametrize("data", [b"\xc1", b"\x92\x01\xc1", b"\x81\xa1k\xc1", b"\x81\xc1\x01"])
def test_reserved_byte_is_refused(data):
    with pytest.raises(MalformedMessage, match="reserved byte 0xc1"):
        check_bounds(data, GENEROUS, DEFAULT_MAX_DEPTH)


def test_zero_element_limit_refuses_everything():
    with pytest.raises(MalformedMessage, match="element limit"):
        check_bounds(b"\xc0", 0, DEFAULT_MAX_DEPTH)


# ------------------------------------------------------------------ every format, randomised


def one_of_each_format() -> list[tuple[int, object]]:
    """(expected first byte, value) for every msgpack format that check_bounds walks."""
    return [
        (0xC0, None), (0xC2, False), (0xC3, True), (0x05, 5), (0xFB, -5),
        (0xCC, 200), (0xCD, 60000), (0xCE, 1 << 31), (0xCF, 1 << 63),
        (0xD0, -100), (0xD1, -30000), (0xD2, -(1 << 31)), (0xD3, -(1 << 63)),
        (0xCB, 1.25), (0xA3, "abc"), (0xD9, "s" * 40), (0xDA, "s" * 300), (0xDB, "s" * 70000),
        (0xC4, b"b"), (0xC5, b"b" * 300), (0xC6, b"b" * 70000),
        (0x92, [1, 2]), (0xDC, [None] * 20), (0xDD, [None] * 70000),
        (0x81, {"k": 1}), (0xDE, {str(i): i for i in range(20)}),
        (0xDF, {str(i): None for i in range(70000)}),
        *((b, msgpack.ExtType(9, b"e" * n)) for b, n in
          ((0xD4, 1), (0xD5, 2), (0xD6, 4), (0xD7, 8), (0xD8, 16), (0xC7, 0), (0xC7, 3))),
        (0xC8, msgpack.ExtType(9, b"e" * 300)), (0xC9, msgpack.ExtType(9, b"e" * 70000)),
    ]


@pytest.mark.parametrize("first, value", one_of_each_format(),
                         ids=lambda x: f"{x:#04x}" if isinstance(x, int) else "")
def test_every_format_is_walked(first, value):
    data = msgpack.packb(value, use_bin_type=True)
    assert data[0] == first
    assert check_bounds(data, GENEROUS, DEFAULT_MAX_DEPTH) == count_elements(value)
    assert check_bounds(memoryview(data), GENEROUS, DEFAULT_MAX_DEPTH) == count_elements(value)


def test_float32_is_walked():
    data = msgpack.packb([1.5, 2.5], use_single_float=True)
    assert data[1] == 0xCA
    assert check_bounds(data, GENEROUS, DEFAULT_MAX_DEPTH) == 3


def random_value(rng: random.Random, depth: int, exts: bool):
    """A random msgpack-able value; numpy arrays and scalars too, raw ExtTypes if `exts`."""
    kinds = ["none", "bool", "int", "float", "str", "bytes", "array", "scalar"]
    if exts:
        kinds.append("ext")
    if depth < 6:
        kinds += ["list", "dict"] * 3
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        bits = rng.choice([4, 7, 8, 15, 16, 31, 32, 63])
        return rng.randint(-(1 << bits), (1 << bits) - 1) if bits < 63 else rng.randint(
            -(1 << 63), (1 << 64) - 1)
    if kind == "float":
        return rng.choice([0.0, -1.5, rng.uniform(-1e9, 1e9), float("inf")])
    if kind == "str":
        return "é" * rng.choice([0, 1, 5, 31, 32, 200, 300])
    if kind == "bytes":
        return bytes(rng.choice([0, 1, 16, 255, 256, 70000]))
    if kind == "array":
        dtype = rng.choice(["|u1", "<i2", ">f4", "<f8", "|b1", "<c8"])
        shape = tuple(rng.randint(0, 4) for _ in range(rng.randint(0, 3)))
        return np.zeros(shape, dtype)
    if kind == "scalar":
        return np.dtype(rng.choice(["<f4", "<i8", "|u1", "|b1"])).type(1)
    if kind == "ext":
        return msgpack.ExtType(rng.randint(3, 100), bytes(rng.choice([0, 1, 2, 4, 8, 16, 17])))
    n = rng.choice([0, 1, 2, 5, 15, 16, 20])
    if kind == "list":
        return [random_value(rng, depth + 1, exts) for _ in range(n)]
    return {f"k{i}" * rng.randint(1, 3): random_value(rng, depth + 1, exts) for i in range(n)}


def test_random_values_are_accepted_and_the_limits_are_exact():
    rng = random.Random(1234)
    for trial in range(300):
        exts = trial % 2 == 1
        value = random_value(rng, 0, exts)
        data = pack_value(value)
        n, d = count_elements(value), depth_of(value)
        assert check_bounds(data, n, d) == n, trial
        with pytest.raises(MalformedMessage, match="element limit"):
            check_bounds(data, n - 1, GENEROUS)
        if d:
            with pytest.raises(MalformedMessage, match="depth limit"):
                check_bounds(data, GENEROUS, d - 1)
        if not exts:  # (unknown ext codes are refused by unpack_value, by design)
            assert_same(value, decode(encode(value), max_elements=n + 2, max_depth=d + 1))
        for cut in rng.sample(range(len(data)), min(len(data), 5)):
            with pytest.raises(MalformedMessage):
                check_bounds(data[:cut], GENEROUS, GENEROUS)


def test_random_corruptions_are_judged_like_msgpack_judges_them():
    # Whatever bytes come in, check_bounds accepts exactly when msgpack can parse them (with
    # hooks that make msgpack as lenient as a header walk: no UTF-8, no key hashing).
    rng = random.Random(99)
    lenient = {"raw": True, "strict_map_key": False, "object_pairs_hook": list,
               "ext_hook": lambda code, data: None}
    disagreements = []
    for _ in range(3000):
        data = bytearray(pack_value(random_value(rng, 3, True)))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            msgpack.unpackb(bytes(data), **lenient)
            ok = True
        except Exception:
            ok = False
        try:
            check_bounds(bytes(data), GENEROUS, 512)
            walked = True
        except MalformedMessage:
            walked = False
        if ok != walked:
            disagreements.append((bytes(data[:40]), ok))
    assert not disagreements, disagreements[:5]
