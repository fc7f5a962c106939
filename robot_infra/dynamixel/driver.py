"""A Dynamixel arm on dynamixel-sdk (Protocol 2.0, X-series control table).

:class:`DynamixelArm` talks to several motors on one serial bus (a U2D2 or similar adapter):
ping, torque on/off, present and goal positions of all joints at once (GroupSyncRead /
GroupSyncWrite), single control-table items, and joint limits checked before anything is
written. dynamixel-sdk (and pyserial under it) is imported when the port is opened, so the
module imports without the [robot] extra.

Angles: a joint's angle in radians is ``sign * (ticks - zero_ticks) * 2 pi / 4096`` (4096 ticks
per turn on X-series motors); ``zero_ticks`` is the reading at the joint's zero and ``sign``
flips a motor mounted the other way round. A goal is rejected (:class:`PositionLimitError`,
nothing is sent) when any joint is outside the intersection of its configured limits and the
motor's own position limits (control table items 48 / 52, read at :meth:`DynamixelArm.open`).

Communication failures raise :class:`DynamixelError` subclasses naming the port, the motor(s)
and the operation: :class:`DynamixelTimeoutError` when no reply arrives in time,
:class:`DynamixelChecksumError` for a corrupt reply, :class:`MotorError` when a motor answers
with an error in its status packet. Reads and writes are retried ``retries`` times first (all of
them are idempotent), since a single corrupt packet on a noisy bus is not unusual.

What this shares with the Feetech driver (the Motor spec, angles, limit checks, retries, error
messages) lives in :mod:`robot_infra.servo_bus`; this module holds what is Dynamixel's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_infra import servo_bus
from robot_infra.servo_bus import (
    PERMISSION_HINT,
    TICKS_PER_TURN,
    Motor,
    ServoArm,
    radians_to_ticks,
    ticks_to_radians,
)

__all__ = [
    "ADDR_GOAL_POSITION", "ADDR_MAX_POSITION_LIMIT", "ADDR_MIN_POSITION_LIMIT", "ADDR_MODEL_NUMBER",
    "ADDR_PRESENT_POSITION", "ADDR_TORQUE_ENABLE", "PERMISSION_HINT", "POSITION_SIZE",
    "PROTOCOL_VERSION", "TICKS_PER_TURN", "DynamixelArm", "DynamixelChecksumError",
    "DynamixelError", "DynamixelTimeoutError", "Motor", "MotorError", "PositionLimitError",
    "import_sdk", "radians_to_ticks", "ticks_to_radians",
]

PROTOCOL_VERSION = 2.0

# X-series control table addresses and sizes used here.
ADDR_MODEL_NUMBER = 0
ADDR_MAX_POSITION_LIMIT, ADDR_MIN_POSITION_LIMIT = 48, 52
ADDR_TORQUE_ENABLE = 64
ADDR_GOAL_POSITION = 116
ADDR_PRESENT_POSITION = 132
POSITION_SIZE = 4


class DynamixelError(servo_bus.ServoBusError):
    """A Dynamixel bus or motor failure; the message names the port, motors and operation."""


class DynamixelTimeoutError(DynamixelError, servo_bus.BusTimeoutError):
    """No status packet arrived in time."""


class DynamixelChecksumError(DynamixelError, servo_bus.BusChecksumError):
    """A status packet arrived corrupt (wrong CRC, truncated)."""


class MotorError(DynamixelError, servo_bus.ServoStatusError):
    """A motor answered with an error in its status packet."""


class PositionLimitError(DynamixelError, servo_bus.LimitError):
    """A goal outside a joint's limits; nothing was written."""


def import_sdk():
    return servo_bus.import_sdk("dynamixel_sdk", "dynamixel-sdk", "Dynamixel", DynamixelError)


def _to_int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _int32_bytes(value: int) -> list[int]:
    return list(int(value & 0xFFFFFFFF).to_bytes(4, "little"))


class DynamixelArm(ServoArm):
    """Motors on one Protocol 2.0 bus; open with :meth:`open` or as a context manager.

    Args:
        port: serial device, e.g. ``/dev/ttyUSB0`` or ``/dev/serial/by-id/usb-FTDI_...``.
        motors: the joints, in the order positions are read and written (Motor or mappings).
        baudrate: the motors' baud rate (X-series default 57600; 1000000 is common for arms).
        timeout_ms, retries: see :class:`robot_infra.servo_bus.ServoArm`.
    """

    BUS = "Dynamixel"
    ERRORS = servo_bus.BusErrors(DynamixelError, DynamixelTimeoutError, DynamixelChecksumError,
                                 MotorError, PositionLimitError)
    ADDR_TORQUE_ENABLE = ADDR_TORQUE_ENABLE
    ADDR_GOAL_POSITION = ADDR_GOAL_POSITION
    ADDR_PRESENT_POSITION = ADDR_PRESENT_POSITION
    POSITION_SIZE = POSITION_SIZE

    def _import_sdk(self):
        return import_sdk()

    def _make_packet_handler(self, sdk):
        return sdk.PacketHandler(PROTOCOL_VERSION)

    def _read_position_limits(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.array([_to_int32(self.read_item(i, ADDR_MIN_POSITION_LIMIT, 4)) for i in self.ids])
        high = np.array([_to_int32(self.read_item(i, ADDR_MAX_POSITION_LIMIT, 4)) for i in self.ids])
        return low, high

    def _position_bytes(self, value: int) -> list[int]:
        return _int32_bytes(value)

    def _sync_read_once(self, address: int) -> tuple[Any, int, int]:
        group = self._sync_read_groups.get(address)
        if group is None:
            group = self._sdk.GroupSyncRead(self._port_handler, self._packet_handler, address,
                                            POSITION_SIZE)
            for motor_id in self.ids:
                group.addParam(motor_id)
            self._sync_read_groups[address] = group
        result = group.txRxPacket()
        if result != self._sdk.COMM_SUCCESS:
            return None, result, 0
        missing = [i for i in self.ids if not group.isAvailable(i, address, POSITION_SIZE)]
        if missing:
            return missing, self._sdk.COMM_RX_CORRUPT, 0
        values = [_to_int32(group.getData(i, address, POSITION_SIZE)) for i in self.ids]
        return np.array(values, np.int64), result, 0
