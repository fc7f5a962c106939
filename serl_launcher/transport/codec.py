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
parsed before it has passed the ones before it: size -> magic -> version -> MAC -> msgpack ->
structure.

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
) -> tuple[str, Any]:
    """Checks and decodes one frame: returns (type, payload).

    Raises MessageTooLarge, MalformedMessage, ProtocolVersionError or AuthenticationError (in
    the order the checks run). With a key, a message without a valid MAC is refused; without
    one, a message that carries a MAC is refused too (the peers are configured differently,
    and accepting would hide that).
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
    body = unpack_value(view[body_start:])
    if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], str)):
        raise MalformedMessage("body is not [type, payload]")
    return body[0], body[1]


def decode(
    data: bytes | memoryview | Any,
    *,
    key: str | bytes | None = None,
    max_message_bytes: int | None = None,
) -> Any:
    """The payload of one frame made by encode(); see decode_message for the checks."""
    return decode_message(data, key=key, max_message_bytes=max_message_bytes)[1]
