"""Dynamixel arms (Protocol 2.0): a driver on dynamixel-sdk, a leader-arm intervention device, and
a pty emulator of the protocol for tests without hardware."""

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
from robot_infra.dynamixel.leader_arm import ChainJoint, KinematicChain, LeaderArm

__all__ = [
    "ChainJoint", "DynamixelArm", "DynamixelChecksumError", "DynamixelEmulator", "DynamixelError",
    "DynamixelTimeoutError", "EmulatedMotor", "KinematicChain", "LeaderArm", "Motor", "MotorError",
    "PositionLimitError", "radians_to_ticks", "ticks_to_radians",
]
