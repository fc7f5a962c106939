"""Wire format of the actor <-> learner link: msgpack with typed numpy buffers, nothing pickled.

One message is one byte string (one zmq frame)::

    offset  size  field
    0       4     magic b"SRLT"
    4       2     protocol version, big-endian uint16 (PROTOCOL_VERSION)
    6       1     flags (bit 0: a MAC follows)
    7       1     reserved, 0
    8       32    HMAC-SHA256(key, bytes 0..7 || body)        only when flags bit 0 is set
    8 / 40  ...   body: msgpack array [type: str, payload]

The first six bytes never change between versions, so a peer of another version is recognised
as such (ProtocolVersionError) instead of as garbage. The MAC covers the header too, so the
version and flags cannot be altered without the key. Checks run cheapest first and nothing is
parsed before it has passed the ones before it: size -> magic -> version -> MAC -> bounds ->
msgpack -> structure. The bounds check (check_bounds) walks the msgpack headers without building
any object and refuses more than ``max_elements`` values or containers nested deeper than
``max_depth``, so a small frame of millions of tiny values costs microseconds, not seconds.

Inside the body, numpy values are msgpack ext types whose data is::

    u8 len(dtype) | dtype.str (ascii, e.g. "<f4", "|u1") | u8 ndim | ndim x u64 LE dims | raw bytes

ext code 1 is an ndarray (C order; a 0-d array stays 0-d), ext code 2 a numpy scalar
(np.float32(1.0) comes back as np.float32). Only the dtypes in ALLOWED_DTYPES (bool, signed and
unsigned integers, floats, complex; either byte order) are accepted; object, string, void and
datetime dtypes are refused on both sides. Python bool / int / float / str / bytes / None /
list / dict are msgpack natives (tuples come back as lists). Map keys must be str.
Objects with ``__array__`` (jax arrays) are encoded as ndarrays, other Mappings (flax
FrozenDict) as dicts.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
MAGIC = b"SRLT"
FLAG_MAC = 0x01
HEADER_BYTES = 8
MAC_BYTES = 32
_HEADER = struct.Struct(">4sHBB")

EXT_NDARRAY = 1
EXT_SCALAR = 2
MAX_NDIM = 32


def _allowed_dtypes() -> frozenset[str]:
    one_byte = {"|b1", "|i1", "|u1"}
    multi = {f"{order}{kind}{size}" for order in "<>" for kind in "iu" for size in (2, 4, 8)}
    multi |= {f"{order}f{size}" for order in "<>" for size in (2, 4, 8)}
    multi |= {f"{order}c{size}" for order in "<>" for size in (8, 16)}
    return frozenset(one_byte | multi)


ALLOWED_DTYPES: frozenset[str] = _allowed_dtypes()


class TransportError(Exception):
    """Base class of every error raised by serl_launcher.transport."""


class MessageTooLarge(TransportError):
    """A message is larger than ``max_message_bytes`` (checked before anything is parsed)."""


class AuthenticationError(TransportError):
    """Missing or wrong MAC: the peer does not hold the same shared key."""


class ProtocolVersionError(TransportError):
    """The peer speaks another protocol version."""


class MalformedMessage(TransportError):
    """Bad magic, invalid msgpack, a refused dtype, or a payload of the wrong structure."""


class UnsupportedType(TransportError, TypeError):
    """encode() was given a value it does not carry (object arrays, arbitrary classes...)."""


def as_key(key: str | bytes | None) -> bytes | None:
    """Normalises a shared secret: str is UTF-8 encoded; empty means no key."""
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode()
    return bytes(key) or None


# ---------------------------------------------------------------------------------------- values


def _array_ext(code: int, arr: np.ndarray) -> msgpack.ExtType:
    dtype = arr.dtype.str
    if dtype not in ALLOWED_DTYPES:
        raise UnsupportedType(f"dtype {arr.dtype} ({dtype}) cannot be sent; only numeric and bool")
    if arr.ndim > MAX_NDIM:
        raise UnsupportedType(f"{arr.ndim}-D array: at most {MAX_NDIM} dimensions")
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (not ascontiguousarray: it turns 0-d arrays into 1-d)
    head = bytes([len(dtype)]) + dtype.encode() + bytes([arr.ndim])
    head += struct.pack(f"<{arr.ndim}Q", *arr.shape)
    # One copy: join reads the array's memory directly through the buffer protocol.
    raw = memoryview(arr).cast("B") if arr.size else b""  # (cast refuses zero-size shapes)
    return msgpack.ExtType(code, b"".join((head, raw)))


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return _array_ext(EXT_NDARRAY, obj)
    if isinstance(obj, np.generic):
        return _array_ext(EXT_SCALAR, np.asarray(obj))
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "__array__") and not isinstance(obj, type):
        return _array_ext(EXT_NDARRAY, np.asarray(obj))
    raise UnsupportedType(f"cannot encode a {type(obj).__module__}.{type(obj).__qualname__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code not in (EXT_NDARRAY, EXT_SCALAR):
        raise MalformedMessage(f"unknown ext type {code}")
    try:
        n = data[0]
        dtype = data[1 : 1 + n].decode("ascii")
        ndim = data[1 + n]
    except (IndexError, UnicodeDecodeError) as error:
        raise MalformedMessage("truncated array header") from error
    if dtype not in ALLOWED_DTYPES:
        raise MalformedMessage(f"refused dtype {dtype!r}")
    if ndim > MAX_NDIM or (code == EXT_SCALAR and ndim != 0):
        raise MalformedMessage(f"bad ndim {ndim}")
    start = 2 + n + 8 * ndim
    if len(data) < start:
        raise MalformedMessage("truncated array header")
    shape = struct.unpack_from(f"<{ndim}Q", data, 2 + n)
    dt = np.dtype(dtype)
    count = 1
    for dim in shape:
        count *= dim
    if count * dt.itemsize != len(data) - start:
        raise MalformedMessage(f"array {dtype}{list(shape)} != its {len(data) - start} bytes")
    # A fresh, writable array that owns its memory (frombuffer over bytes would be read-only,
    # and a consumer may well modify what it is given).
    arr = np.empty(shape, dt)
    if count:
        memoryview(arr).cast("B")[:] = memoryview(data)[start:]
    return arr[()] if code == EXT_SCALAR else arr


def pack_value(value: Any) -> bytes:
    """msgpack bytes of one value (a transition, a params tree...), numpy arrays as typed ext."""
    try:
        return msgpack.packb(value, default=_default, use_bin_type=True)
    except UnsupportedType:
        raise
    except (TypeError, ValueError, OverflowError) as error:
        raise UnsupportedType(str(error)) from error


def unpack_value(data: bytes | memoryview) -> Any:
    """Inverse of pack_value. Raises MalformedMessage on anything that is not a valid encoding."""
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=True)
    except MalformedMessage:
        raise
    except Exception as error:  # msgpack raises a zoo of types on garbage; all mean the same
        raise MalformedMessage(f"invalid msgpack: {type(error).__name__}: {error}") from error


# ---------------------------------------------------------------------------------- bounds

DEFAULT_MAX_ELEMENTS = 1 << 17
DEFAULT_MAX_DEPTH = 32


def _fixed_sizes() -> tuple[int, ...]:
    # Total encoded size of the values whose first byte alone fixes it; 0 for the others.
    sizes = [0] * 256
    for b in (*range(0x00, 0x80), *range(0xE0, 0x100), 0xC0, 0xC2, 0xC3):
        sizes[b] = 1  # fixints, nil, false, true
    for b in range(0xA0, 0xC0):
        sizes[b] = 1 + (b & 0x1F)  # fixstr
    for b, n in ((0xCC, 2), (0xCD, 3), (0xCE, 5), (0xCF, 9),  # uint 8..64
                 (0xD0, 2), (0xD1, 3), (0xD2, 5), (0xD3, 9),  # int 8..64
                 (0xCA, 5), (0xCB, 9),  # float 32, 64
                 (0xD4, 3), (0xD5, 4), (0xD6, 6), (0xD7, 10), (0xD8, 18)):  # fixext 1..16
        sizes[b] = n
    return tuple(sizes)


_FIXED_SIZES = _fixed_sizes()
_U8 = struct.Struct(">B").unpack_from
_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
# str / bin / ext with a length field: first byte -> (header bytes, reader of the length).
# (An ext header also holds its type byte, after the length.)
_SIZED = {0xD9: (2, _U8), 0xDA: (3, _U16), 0xDB: (5, _U32),  # str 8, 16, 32
          0xC4: (2, _U8), 0xC5: (3, _U16), 0xC6: (5, _U32),  # bin 8, 16, 32
          0xC7: (3, _U8), 0xC8: (4, _U16), 0xC9: (6, _U32)}  # ext 8, 16, 32
# array / map 16 and 32: first byte -> (header bytes, reader of the count, values per entry).
_CONTAINERS = {0xDC: (3, _U16, 1), 0xDD: (5, _U32, 1), 0xDE: (3, _U16, 2), 0xDF: (5, _U32, 2)}


def check_bounds(data: bytes | memoryview, max_elements: int, max_depth: int) -> int:
    """Refuses an encoding that would be too costly to unpack; returns its number of elements.

    Runs before msgpack builds anything, so that a hostile frame of millions of tiny values
    (or of deeply nested containers) is refused in time proportional to `max_elements`, never
    to the frame's size. It reads headers only: str / bin / ext payloads are skipped unread.

    Every msgpack value counts as one element: the top-level one, each container itself, each
    array item, and each map key and map value ([1, {"a": 2}] has 5). Depth is the most
    containers nested inside one another: a scalar has depth 0, [] depth 1, [[]] depth 2.
    Raises MalformedMessage when the count would exceed `max_elements` (as soon as a container
    declares it, before its items are read), when the depth exceeds `max_depth`, when the data
    is truncated, holds bytes after the single top-level value, or uses the reserved byte 0xc1.
    """
    view = data if isinstance(data, bytes) else memoryview(data).cast("B")
    end = len(view)
    fixed, sized = _FIXED_SIZES, _SIZED
    pos = 0
    todo = 1  # values still to read; each needs at least one byte
    declared = 1  # values counted so far, those still to read included
    # For each open non-empty container, the value of `todo` at which its last item is read.
    # Inner containers end no earlier than outer ones, so the list is sorted; entries of
    # closed containers are dropped lazily, only when a container header needs the depth.
    ends: list[int] = []
    if max_elements < 1:
        raise MalformedMessage(f"1 element exceeds the element limit (max_elements {max_elements})")
    try:
        while todo:
            b = view[pos]
            todo -= 1
            n = fixed[b]
            if n:
                pos += n
                continue
            entry = sized.get(b)
            if entry is not None:
                pos += entry[0] + entry[1](view, pos + 1)[0]
                continue
            if 0x80 <= b <= 0x9F:  # fixmap (a key and a value per entry), fixarray
                count = (b & 0x0F) * (2 if b < 0x90 else 1)
                pos += 1
            else:
                container = _CONTAINERS.get(b)
                if container is None:  # only 0xc1 is left
                    raise MalformedMessage(f"reserved byte 0x{b:02x} at offset {pos}")
                count = container[1](view, pos + 1)[0] * container[2]
                pos += container[0]
            while ends and ends[-1] > todo:
                ends.pop()
            if len(ends) >= max_depth:
                raise MalformedMessage(
                    f"containers nested deeper than the depth limit (max_depth {max_depth})")
            if count:
                declared += count
                if declared > max_elements:
                    raise MalformedMessage(
                        f"{declared}+ elements exceed the element limit "
                        f"(max_elements {max_elements})")
                ends.append(todo)
                todo += count
                if todo > end - pos:
                    raise MalformedMessage(
                        f"truncated msgpack: {todo} values declared, {end - pos} bytes left")
    except (IndexError, struct.error) as error:
        raise MalformedMessage("truncated msgpack") from error
    if pos > end:
        raise MalformedMessage("truncated msgpack")
    if pos < end:
        raise MalformedMessage(f"{end - pos} trailing bytes after the msgpack value")
    return declared


# ------------------------------------------------------------------------ hand-built msgpack


def array_header(n: int) -> bytes:
    """msgpack header of an n-element array (the elements follow, already packed)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def map_header(n: int) -> bytes:
    """msgpack header of an n-entry map (keys and values follow, already packed)."""
    if n < 16:
        return bytes([0x80 | n])
    if n < 1 << 16:
        return b"\xde" + struct.pack(">H", n)
    return b"\xdf" + struct.pack(">I", n)


# ---------------------------------------------------------------------------------- messages


def frame_parts(msg_type: str, payload_parts: Iterable[bytes], key: bytes | None) -> list[bytes]:
    """The pieces of one message whose payload is already msgpack-encoded in pieces.

    ``b"".join(result)`` is the frame; pieces are kept apart so the caller pays for one copy.
    """
    body = [b"\x92", msgpack.packb(msg_type), *payload_parts]
    header = _HEADER.pack(MAGIC, PROTOCOL_VERSION, FLAG_MAC if key else 0, 0)
    if not key:
        return [header, *body]
    mac = hmac.new(key, header, hashlib.sha256)
    for part in body:
        mac.update(part)
    return [header, mac.digest(), *body]


def encode(
    payload: Any,
    *,
    msg_type: str = "value",
    key: str | bytes | None = None,
    max_message_bytes: int | None = None,
) -> bytes:
    """One framed message carrying `payload` (see the module docstring for the layout).

    Raises UnsupportedType for values that cannot be carried, MessageTooLarge when the frame
    exceeds `max_message_bytes`.
    """
    frame = b"".join(frame_parts(msg_type, [pack_value(payload)], as_key(key)))
    if max_message_bytes is not None and len(frame) > max_message_bytes:
        raise MessageTooLarge(f"{len(frame)} bytes > max_message_bytes {max_message_bytes}")
    return frame


def decode_message(
    data: bytes | memoryview | Any,
    *,
    key: str | bytes | None = None,
    max_message_bytes: int | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> tuple[str, Any]:
    """Checks and decodes one frame: returns (type, payload).

    Raises MessageTooLarge, MalformedMessage, ProtocolVersionError or AuthenticationError (in
    the order the checks run). With a key, a message without a valid MAC is refused; without
    one, a message that carries a MAC is refused too (the peers are configured differently,
    and accepting would hide that). `max_elements` and `max_depth` bound the body's msgpack
    before it is unpacked (see check_bounds); the body's own [type, payload] counts 3 of them.
    """
    view = memoryview(data).cast("B")
    if max_message_bytes is not None and view.nbytes > max_message_bytes:
        raise MessageTooLarge(f"{view.nbytes} bytes > max_message_bytes {max_message_bytes}")
    if view.nbytes < HEADER_BYTES:
        raise MalformedMessage(f"{view.nbytes}-byte message is shorter than the header")
    magic, version, flags, _ = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise MalformedMessage("bad magic: not a serl transport message")
    if version != PROTOCOL_VERSION:
        raise ProtocolVersionError(f"peer speaks protocol {version}, this is {PROTOCOL_VERSION}")
    key = as_key(key)
    body_start = HEADER_BYTES
    if flags & FLAG_MAC:
        if not key:
            raise AuthenticationError("message is signed but no key is configured here")
        body_start += MAC_BYTES
        if view.nbytes < body_start:
            raise MalformedMessage("truncated MAC")
        mac = hmac.new(key, view[:HEADER_BYTES], hashlib.sha256)
        mac.update(view[body_start:])
        if not hmac.compare_digest(mac.digest(), view[HEADER_BYTES:body_start].tobytes()):
            raise AuthenticationError("MAC mismatch: wrong key or altered message")
    elif key:
        raise AuthenticationError("unsigned message but a key is configured")
    check_bounds(view[body_start:], max_elements, max_depth)
    body = unpack_value(view[body_start:])
    if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], str)):
        raise MalformedMessage("body is not [type, payload]")
    return body[0], body[1]


def decode(
    data: bytes | memoryview | Any,
    *,
    key: str | bytes | None = None,
    max_message_bytes: int | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """The payload of one frame made by encode(); see decode_message for the checks."""
    return decode_message(data, key=key, max_message_bytes=max_message_bytes,
                          max_elements=max_elements, max_depth=max_depth)[1]
