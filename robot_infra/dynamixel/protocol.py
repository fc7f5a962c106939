"""Dynamixel Protocol 2.0 framing: CRC-16, byte stuffing, packet encoding and incremental parsing.

A packet on the bus is

    FF FF FD 00 | id | length (2, little-endian) | instruction | parameters ... | CRC (2, LE)

where ``length`` counts the instruction byte, the parameters and the two CRC bytes. A status
packet (a motor's reply) has instruction ``0x55`` and an error byte as its first parameter.
Wherever ``FF FF FD`` occurs inside the instruction and parameters, the sender inserts an extra
``FD`` after it (byte stuffing) so that a header cannot appear mid-packet; ``length`` counts the
stuffed bytes and the CRC covers the stuffed packet from the first header byte on.

The CRC is CRC-16 with generator polynomial x^16 + x^15 + x^2 + 1 (0x8005), initial value 0,
bits processed most-significant first, no reflection and no final XOR (the "CRC-16/BUYPASS"
parameters). This module is pure Python and needs neither dynamixel-sdk nor a serial port; the
driver uses the SDK's framing, the emulator uses this one, and the tests check that they agree.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC
CRC_POLYNOMIAL = 0x8005
STATUS = 0x55


class Instruction(enum.IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


class StatusError(enum.IntEnum):
    """The low 7 bits of a status packet's error byte (bit 7 is the hardware alert flag)."""

    NONE = 0
    RESULT_FAIL = 1
    INSTRUCTION = 2
    CRC = 3
    DATA_RANGE = 4
    DATA_LENGTH = 5
    DATA_LIMIT = 6
    ACCESS = 7


def _crc_table(polynomial: int) -> tuple[int, ...]:
    """Remainder of each byte value, placed in the top 8 bits of the register, after 8 shifts."""
    table = []
    for byte in range(256):
        register = byte << 8
        for _ in range(8):
            register = (register << 1) ^ polynomial if register & 0x8000 else register << 1
        table.append(register & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table(CRC_POLYNOMIAL)


def crc16(data: bytes | bytearray, crc: int = 0) -> int:
    """CRC-16 of `data` (polynomial 0x8005, MSB first, init 0); pass `crc` to continue a CRC."""
    for byte in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def crc16_bitwise(data: bytes | bytearray) -> int:
    """The same CRC one bit at a time (the polynomial division written out); used to check the table."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLYNOMIAL) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Inserts FD after every FF FF FD in `body` (instruction + parameters)."""
    out = bytearray()
    for byte in body:
        out.append(byte)
        if byte == 0xFD and out[-3:-1] == b"\xff\xff" and len(out) >= 3:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Removes the FD that follows every FF FF FD in a received `body`."""
    out = bytearray()
    i = 0
    while i < len(body):
        out.append(body[i])
        if body[i] == 0xFD and out[-3:-1] == b"\xff\xff" and len(out) >= 3:
            if i + 1 < len(body) and body[i + 1] == 0xFD:
                i += 1  # the stuffed byte
        i += 1
    return bytes(out)


def encode_packet(motor_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete packet (header, id, length, stuffed instruction + params, CRC)."""
    if not 0 <= motor_id <= BROADCAST_ID:
        raise ValueError(f"motor id {motor_id} is outside 0..{BROADCAST_ID}")
    body = stuff(bytes([instruction]) + bytes(params))
    length = len(body) + 2
    packet = HEADER + bytes([motor_id]) + length.to_bytes(2, "little") + body
    return packet + crc16(packet).to_bytes(2, "little")


def encode_status(motor_id: int, error: int = 0, params: bytes = b"") -> bytes:
    """A status (reply) packet: instruction 0x55, then the error byte, then `params`."""
    return encode_packet(motor_id, STATUS, bytes([error]) + bytes(params))


class Packet(NamedTuple):
    motor_id: int
    instruction: int
    params: bytes  # unstuffed; for a status packet the error byte comes first
    crc_ok: bool


class PacketReader:
    """Splits a byte stream into packets; bytes before a header (noise, partial packets) are dropped.

    ``feed(data)`` returns the packets completed by `data`, including ones whose CRC does not
    match (``crc_ok`` False), so that a receiver can answer them with a CRC error.
    """

    # A length beyond this is taken as noise rather than waited for.
    MAX_LENGTH = 1024

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self._buffer += data
        packets = []
        while True:
            start = self._buffer.find(HEADER)
            if start < 0:
                # Keep a possible partial header at the end.
                del self._buffer[: max(0, len(self._buffer) - 3)]
                return packets
            del self._buffer[:start]
            if len(self._buffer) < 7:
                return packets
            length = int.from_bytes(self._buffer[5:7], "little")
            if length < 3 or length > self.MAX_LENGTH:
                del self._buffer[:1]  # not a real header; look for the next one
                continue
            total = 7 + length
            if len(self._buffer) < total:
                return packets
            raw = bytes(self._buffer[:total])
            del self._buffer[:total]
            crc_ok = crc16(raw[:-2]) == int.from_bytes(raw[-2:], "little")
            body = unstuff(raw[7:-2])
            packets.append(Packet(raw[4], body[0], body[1:], crc_ok))
