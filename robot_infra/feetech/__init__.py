"""Feetech STS servo arms (SO-100 / SO-101, STS3215): a driver on feetech-servo-sdk and a pty
emulator of the protocol for tests without hardware."""

from robot_infra.feetech.driver import (
    FeetechArm,
    FeetechChecksumError,
    FeetechError,
    FeetechTimeoutError,
    Motor,
    MotorError,
    PositionLimitError,
)
from robot_infra.feetech.emulator import EmulatedServo, FeetechEmulator

__all__ = [
    "EmulatedServo", "FeetechArm", "FeetechChecksumError", "FeetechEmulator", "FeetechError",
    "FeetechTimeoutError", "Motor", "MotorError", "PositionLimitError",
]
