"""Feetech STS (SMS/STS series, e.g. STS3215) framing and memory table, in pure Python.

A packet on the bus is

    FF FF | id | length | instruction (or, in a reply, error flags) | parameters ... | checksum

where ``length`` counts the instruction byte, the parameters and the checksum (parameters + 2),
and ``checksum = ~(id + length + instruction + sum(parameters)) & 0xFF``. There is no byte
stuffing; ids above 0xFD cannot start a packet, which is how a receiver skips noise.

Byte order: STS servos are little-endian (low byte first); the older SCS series is big-endian.
feetech-servo-sdk picks the order from ``PacketHandler(protocol_end)``: 0 for STS (its
``SCS_MAKEWORD`` then takes the first byte as the low one). Signed items use sign-magnitude, not
two's complement: bit 15 of a position or speed is the sign and the low 15 bits the magnitude
(the SDK's ``SCS_TOHOST`` / ``SCS_TOSCS``).

Status error flags (a reply's third byte): bit 0 input voltage, bit 1 angle (sensor or limit),
bit 2 overheat, bit 3 overcurrent, bit 5 overload. :data:`ERROR_ACCESS` (bit 6) is the
emulator's own flag for a refused write, see :mod:`robot_infra.feetech.emulator`.

The driver (:mod:`robot_infra.feetech.driver`) talks through feetech-servo-sdk; this module is
the independent implementation the emulator uses, and both use :data:`CONTROL_TABLE`.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC
MAX_LENGTH = 250  # the longest packet feetech-servo-sdk sends or accepts


class Instruction(enum.IntEnum):
    """Instruction codes (the SMS/STS set; REG_WRITE + ACTION are the deferred write)."""

    PING, READ, WRITE, REG_WRITE, ACTION = 0x01, 0x02, 0x03, 0x04, 0x05
    SYNC_READ, SYNC_WRITE = 0x82, 0x83


class ErrorFlag(enum.IntFlag):
    """Bits of a status packet's error byte."""

    VOLTAGE = 0x01
    ANGLE = 0x02
    OVERHEAT = 0x04
    OVERCURRENT = 0x08
    OVERLOAD = 0x20
    ACCESS = 0x40  # emulator only: a write to a read-only or locked item was refused


ERROR_ACCESS = ErrorFlag.ACCESS
ERROR_NAMES = {
    ErrorFlag.VOLTAGE: "input voltage out of range",
    ErrorFlag.ANGLE: "angle (position sensor, or a goal outside the angle limits)",
    ErrorFlag.OVERHEAT: "overheat",
    ErrorFlag.OVERCURRENT: "overcurrent",
    ErrorFlag.OVERLOAD: "overload",
    ErrorFlag.ACCESS: "write refused (read-only item, or EEPROM locked by item 55)",
}


def describe_error(error: int) -> str:
    """Every flag set in a status error byte, in words (unknown bits by value)."""
    names = [text for flag, text in ERROR_NAMES.items() if error & flag]
    unknown = error & ~sum(ERROR_NAMES) & 0xFF
    if unknown:
        names.append(f"unknown flags {unknown:#04x}")
    return ", ".join(names) or "no error"


# STS3215 memory table: name -> (address, size). Addresses below EEPROM_END are EEPROM (kept
# over power cycles, writable only while the lock, item 55, is 0); the rest is RAM.
CONTROL_TABLE: dict[str, tuple[int, int]] = {
    "firmware_major_version": (0, 1),
    "firmware_minor_version": (1, 1),
    "model_number": (3, 2),
    "id": (5, 1),
    "baud_rate": (6, 1),
    "return_delay_time": (7, 1),
    "response_status_level": (8, 1),
    "min_position_limit": (9, 2),
    "max_position_limit": (11, 2),
    "max_temperature_limit": (13, 1),
    "max_voltage_limit": (14, 1),
    "min_voltage_limit": (15, 1),
    "max_torque_limit": (16, 2),
    "homing_offset": (31, 2),
    "operating_mode": (33, 1),
    "torque_enable": (40, 1),
    "acceleration": (41, 1),
    "goal_position": (42, 2),
    "goal_time": (44, 2),
    "goal_speed": (46, 2),
    "torque_limit": (48, 2),
    "lock": (55, 1),
    "present_position": (56, 2),
    "present_speed": (58, 2),
    "present_load": (60, 2),
    "present_voltage": (62, 1),
    "present_temperature": (63, 1),
    "status": (65, 1),
    "moving": (66, 1),
    "present_current": (69, 2),
}
TABLE_SIZE = 71  # addresses 0..70
EEPROM_END = 40
READ_ONLY = (range(0, 5), range(56, 71))
# Items in sign-magnitude, with their sign bit.
SIGN_BITS = {"homing_offset": 11, "goal_position": 15, "goal_speed": 15, "present_position": 15,
             "present_speed": 15, "present_load": 10}
STS3215_MODEL = 777
POSITION_SIZE = 2


def address(item: str) -> int:
    return CONTROL_TABLE[item][0]


def to_sign_magnitude(value: int, sign_bit: int = 15) -> int:
    """A signed integer as the servo stores it: |value| with bit `sign_bit` set when negative."""
    magnitude = abs(int(value))
    if magnitude >= 1 << sign_bit:
        raise ValueError(f"{value} does not fit in {sign_bit} bits plus a sign bit")
    return magnitude | (1 << sign_bit) if value < 0 else magnitude


def from_sign_magnitude(raw: int, sign_bit: int = 15) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


def checksum(data: bytes | bytearray) -> int:
    """~sum & 0xFF over id, length, instruction and parameters."""
    return ~sum(data) & 0xFF


def encode_packet(motor_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete packet: header, id, length, instruction (or error byte), params, checksum."""
    if not 0 <= motor_id <= BROADCAST_ID:
        raise ValueError(f"servo id {motor_id} is outside 0..{BROADCAST_ID}")
    body = bytes([motor_id, len(params) + 2, instruction]) + bytes(params)
    if len(body) + 3 > MAX_LENGTH:
        raise ValueError(f"a packet of {len(body) + 3} bytes is longer than {MAX_LENGTH}")
    return HEADER + body + bytes([checksum(body)])


def encode_status(motor_id: int, error: int = 0, params: bytes = b"") -> bytes:
    """A status (reply) packet: the error flags take the instruction's place."""
    return encode_packet(motor_id, int(error), params)


class Packet(NamedTuple):
    motor_id: int
    instruction: int  # for a status packet: the error flags
    params: bytes
    checksum_ok: bool


class PacketReader:
    """Splits a byte stream into packets; bytes before a header (noise, partial packets) are dropped.

    ``feed(data)`` returns the packets completed by `data`, including ones whose checksum does
    not match (``checksum_ok`` False), so that the receiver decides what to do with them.
    """

    def __init__(self):
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self._pending.extend(data)
        found: list[Packet] = []
        while (start := self._pending.find(HEADER)) >= 0:
            del self._pending[:start]
            if len(self._pending) < 4:
                break
            motor_id, length = self._pending[2], self._pending[3]
            if motor_id > BROADCAST_ID or length < 2 or length + 4 > MAX_LENGTH:
                del self._pending[:1]  # FF FF FF ... or noise: not a real header
                continue
            if len(self._pending) < length + 4:
                break  # the rest is still on its way
            raw = bytes(self._pending[:length + 4])
            del self._pending[:length + 4]
            found.append(Packet(motor_id, raw[4], raw[5:-1], checksum(raw[2:-1]) == raw[-1]))
        else:
            del self._pending[:-1]  # no header: keep only a possible first FF of the next one
        return found
