"""Dynamixel arms (Protocol 2.0): a driver on dynamixel-sdk and a pty emulator of the protocol for
tests without hardware. The leader-arm device (any bus) is :mod:`robot_infra.leader_arm`."""

from robot_infra.dynamixel.driver import (
    DynamixelArm,
    DynamixelChecksumError,
    DynamixelError,
    DynamixelTimeoutError,
    Motor,
    MotorError,
    PositionLimitError,
    radians_to_ticks,
    ticks_to_radians,
)
from robot_infra.dynamixel.emulator import DynamixelEmulator, EmulatedMotor

__all__ = [
    "DynamixelArm", "DynamixelChecksumError", "DynamixelEmulator", "DynamixelError",
    "DynamixelTimeoutError", "EmulatedMotor", "Motor", "MotorError",
    "PositionLimitError", "radians_to_ticks", "ticks_to_radians",
]
