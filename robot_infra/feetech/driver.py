"""A Feetech STS arm (SO-100 / SO-101: STS3215 servos) on feetech-servo-sdk.

:class:`FeetechArm` talks to several servos on one serial bus (the arm's USB adapter board, 1 Mbps
by default): ping, torque on/off, present and goal positions of all joints at once (SYNC_READ /
GroupSyncWrite), single memory-table items, and joint limits checked before anything is written.
feetech-servo-sdk (module ``scservo_sdk``, pyserial under it) is imported when the port is opened,
so the module imports without the [robot] extra.

Angles, limits, retries and error messages are shared with the Dynamixel driver
(:mod:`robot_infra.servo_bus`): a joint's angle is ``sign * (ticks - zero_ticks) * 2 pi / 4096``,
and a goal is rejected (:class:`PositionLimitError`, nothing is sent) when any joint is outside
the intersection of its configured limits and the servo's min / max angle limits (memory table
items 9 and 11, read at :meth:`FeetechArm.open`).

STS specifics: items are little-endian (``PacketHandler(0)``; 1 would be the SCS series' big
endian), and positions are sign-magnitude with bit 15 as the sign. The SDK's ``GroupSyncRead``
drops the error byte of each reply, so :meth:`FeetechArm._sync_read_once` makes the same two SDK
calls it makes (``syncReadTx``, then ``readRx`` per servo) and keeps the error flags and which
servo failed. Errors: :class:`FeetechTimeoutError` (no reply), :class:`FeetechChecksumError`
(corrupt reply), :class:`MotorError` (error flags in a reply: voltage, angle, overheat,
overcurrent, overload), all :class:`FeetechError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_infra import servo_bus
from robot_infra.feetech import protocol
from robot_infra.servo_bus import Motor, ServoArm

__all__ = ["BYTE_ORDER_STS", "FeetechArm", "FeetechChecksumError", "FeetechError",
           "FeetechTimeoutError", "Motor", "MotorError", "PositionLimitError", "import_sdk"]

BYTE_ORDER_STS = 0  # feetech-servo-sdk's protocol_end: 0 little-endian (STS/SMS), 1 big (SCS)


class FeetechError(servo_bus.ServoBusError):
    """A Feetech bus or servo failure; the message names the port, servos and operation."""


class FeetechTimeoutError(FeetechError, servo_bus.BusTimeoutError):
    """No status packet arrived in time."""


class FeetechChecksumError(FeetechError, servo_bus.BusChecksumError):
    """A status packet arrived corrupt (wrong checksum, truncated)."""


class MotorError(FeetechError, servo_bus.ServoStatusError):
    """A servo answered with error flags in its status packet."""


class PositionLimitError(FeetechError, servo_bus.LimitError):
    """A goal outside a joint's limits; nothing was written."""


def import_sdk():
    return servo_bus.import_sdk("scservo_sdk", "feetech-servo-sdk", "Feetech", FeetechError)


class FeetechArm(ServoArm):
    """STS servos on one bus; open with :meth:`open` or as a context manager.

    Args:
        port: serial device, e.g. ``/dev/ttyACM0`` or ``/dev/serial/by-id/usb-1a86_...``.
        motors: the joints, in the order positions are read and written (Motor or mappings).
        baudrate: the servos' baud rate (STS3215 default 1000000).
        timeout_ms, retries: see :class:`robot_infra.servo_bus.ServoArm`.
    """

    BUS = "Feetech"
    ERRORS = servo_bus.BusErrors(FeetechError, FeetechTimeoutError, FeetechChecksumError,
                                 MotorError, PositionLimitError)
    ADDR_TORQUE_ENABLE = protocol.address("torque_enable")
    ADDR_GOAL_POSITION = protocol.address("goal_position")
    ADDR_PRESENT_POSITION = protocol.address("present_position")
    ADDR_LOCK = protocol.address("lock")
    ADDR_MIN_POSITION_LIMIT = protocol.address("min_position_limit")
    ADDR_MAX_POSITION_LIMIT = protocol.address("max_position_limit")
    POSITION_SIZE = protocol.POSITION_SIZE

    def _import_sdk(self):
        return import_sdk()

    def _make_packet_handler(self, sdk):
        return sdk.PacketHandler(BYTE_ORDER_STS)

    def _describe_status_error(self, error: int) -> str:
        return protocol.describe_error(error)

    def _read_position_limits(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.array([self.read_item(i, self.ADDR_MIN_POSITION_LIMIT, 2) for i in self.ids])
        high = np.array([self.read_item(i, self.ADDR_MAX_POSITION_LIMIT, 2) for i in self.ids])
        return low, high

    def _position_bytes(self, value: int) -> list[int]:
        raw = self._sdk.SCS_TOSCS(int(value), 15)
        return [self._sdk.SCS_LOBYTE(raw), self._sdk.SCS_HIBYTE(raw)]

    def _sync_read_once(self, address: int) -> tuple[Any, int, int]:
        sdk, handler, port = self._sdk, self._packet_handler, self._port_handler
        result = handler.syncReadTx(port, address, self.POSITION_SIZE, list(self.ids), len(self.ids))
        if result != sdk.COMM_SUCCESS:
            return None, result, 0
        values = []
        for motor_id in self.ids:
            data, result, error = handler.readRx(port, motor_id, self.POSITION_SIZE)
            if result != sdk.COMM_SUCCESS or error:
                return [motor_id], result, error
            if len(data) < self.POSITION_SIZE:  # a status packet without the data asked for
                return [motor_id], sdk.COMM_RX_CORRUPT, 0
            values.append(sdk.SCS_TOHOST(sdk.SCS_MAKEWORD(data[0], data[1]), 15))
        return np.array(values, np.int64), sdk.COMM_SUCCESS, 0
