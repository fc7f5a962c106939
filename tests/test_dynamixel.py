"""The Dynamixel driver and leader arm against the Protocol 2.0 emulator, through a real pty that
dynamixel-sdk's PortHandler (pyserial) opens like a USB serial adapter."""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest

from robot_infra.dynamixel import protocol
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
from robot_infra.leader_arm import ChainJoint, KinematicChain, LeaderArm
from serl_launcher.human import InterventionDevice, make_device
from serl_launcher.human.devices import device_from_config

sdk = pytest.importorskip("dynamixel_sdk")  # the [robot] extra

TICK = 2 * math.pi / 4096  # radians per tick


@pytest.fixture
def emulator():
    with DynamixelEmulator([1, 2, EmulatedMotor(3, min_position=1024, max_position=3072)]) as emu:
        yield emu


def eventually(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def three_joints():
    return [Motor("base", 1), Motor("shoulder", 2, sign=-1.0, zero_ticks=1024),
            Motor("elbow", 3, min_angle=-1.0)]


# -- protocol ---------------------------------------------------------------------------------------


def test_crc16_known_values():
    assert protocol.crc16(b"123456789") == 0xFEE8  # the CRC-16/BUYPASS check value
    # The ping of id 1 and a status packet, as the ROBOTIS e-manual prints them.
    ping = bytes.fromhex("FFFFFD00 01 0300 01")
    assert protocol.crc16(ping) == 0x4E19
    assert protocol.encode_packet(1, protocol.Instruction.PING) == ping + b"\x19\x4e"
    status = bytes.fromhex("FFFFFD00 01 0700 55 00 0604 26")
    assert protocol.encode_status(1, 0, bytes.fromhex("060426")) == status + b"\x65\x5d"


def test_crc16_table_matches_the_bitwise_division_and_the_sdk():
    rng = np.random.default_rng(0)
    handler = sdk.PacketHandler(2.0)
    for size in (0, 1, 7, 64, 300):
        data = rng.integers(0, 256, size, np.uint8).tobytes()
        assert protocol.crc16(data) == protocol.crc16_bitwise(data) == handler.updateCRC(0, data, size)
    assert protocol.crc16(b"6789", protocol.crc16(b"12345")) == protocol.crc16(b"123456789")


def test_byte_stuffing_and_packet_reader():
    params = bytes.fromhex("FFFFFD 00 FFFFFDFD 12")
    assert protocol.stuff(params) == bytes.fromhex("FFFFFDFD 00 FFFFFDFDFD 12")
    rng = np.random.default_rng(1)
    for _ in range(50):
        body = bytes(rng.choice([0xFF, 0xFD, 0x00, 0x12], size=int(rng.integers(1, 20))))
        assert protocol.unstuff(protocol.stuff(body)) == body
    first = protocol.encode_packet(5, protocol.Instruction.WRITE, params)
    second = protocol.encode_packet(6, protocol.Instruction.READ, b"\x84\x00\x04\x00")
    broken = bytearray(protocol.encode_packet(7, protocol.Instruction.PING))
    broken[-1] ^= 1
    reader = protocol.PacketReader()
    stream = b"\x00\xff\x13" + first + second + bytes(broken)
    packets = [p for i in range(len(stream)) for p in reader.feed(stream[i:i + 1])]  # byte by byte
    assert packets == [protocol.Packet(5, protocol.Instruction.WRITE, params, True),
                       protocol.Packet(6, protocol.Instruction.READ, b"\x84\x00\x04\x00", True),
                       protocol.Packet(7, protocol.Instruction.PING, b"", False)]


def test_ticks_and_radians():
    zero, sign = np.array([2048.0, 1024.0]), np.array([1.0, -1.0])
    np.testing.assert_allclose(ticks_to_radians([3072, 1024], zero, sign), [math.pi / 2, 0.0])
    np.testing.assert_allclose(ticks_to_radians([2048, 0], zero, sign), [0.0, math.pi / 2])
    np.testing.assert_array_equal(radians_to_ticks([0.5, 0.5], zero, sign), [2374, 698])
    ticks = np.array([0, 4095])
    np.testing.assert_array_equal(radians_to_ticks(ticks_to_radians(ticks, zero, sign), zero, sign),
                                  ticks)


# -- driver -----------------------------------------------------------------------------------------


def test_ping_torque_and_positions(emulator):
    with DynamixelArm(emulator.port, three_joints(), timeout_ms=500) as arm:
        assert arm.models == {"base": 1020, "shoulder": 1020, "elbow": 1020}
        assert arm.ping(2) == 1020
        np.testing.assert_allclose(arm.read_positions(), [0.0, -1024 * TICK, 0.0])
        assert not arm.torque_enabled().any()
        arm.set_torque(True)
        assert [emulator.get(i, "torque_enable") for i in (1, 2, 3)] == [1, 1, 1]
        goal = np.array([0.5, 0.5, -0.25])
        arm.write_goal_positions(goal)
        # A sync write has no reply: wait for the emulator to have taken it off the line.
        assert eventually(lambda: [emulator.get(i, "goal_position") for i in (1, 2, 3)]
                          == [2374, 698, 1885])
        assert protocol.Instruction.SYNC_WRITE in emulator.instructions()
        np.testing.assert_allclose(arm.read_goal_positions(), goal, atol=TICK)
        deadline = time.monotonic() + 5.0
        while np.abs(arm.read_positions() - goal).max() > TICK and time.monotonic() < deadline:
            time.sleep(0.02)  # the emulated motors move at a turn per second
        np.testing.assert_allclose(arm.read_positions(), goal, atol=TICK)
        arm.set_torque(False, ["elbow"])
        assert arm.torque_enabled().tolist() == [True, True, False]
        emulator.set_present(3, 2100)  # turned by hand
        assert arm.read_positions()[2] == pytest.approx(52 * TICK)
    assert not arm.is_open


def test_limits_are_checked_before_anything_is_written(emulator):
    with DynamixelArm(emulator.port, three_joints(), timeout_ms=500) as arm:
        # elbow: configured min -1.0 rad; the motor's own limits 1024..3072 ticks = +-pi/2.
        np.testing.assert_allclose([arm.lower[2], arm.upper[2]], [-1.0, math.pi / 2])
        sent = len(emulator.instructions())
        for goal, joint in (([0.0, 0.0, -1.2], "elbow"), ([0.0, 0.0, 1.6], "elbow"),
                            ([0.0, np.nan, 0.0], "shoulder")):
            with pytest.raises(PositionLimitError, match=rf"nothing was written: '{joint}' \(id"):
                arm.write_goal_positions(goal)
        assert len(emulator.instructions()) == sent  # not one packet went out
        assert emulator.get(3, "goal_position") == 2048
        with pytest.raises(ValueError, match="expected 3 goal angles"):
            arm.write_goal_positions([0.0, 0.0])
        # Past the driver's checks, the motor refuses a goal outside its limits itself.
        with pytest.raises(MotorError, match=r"motor 3 .*error 0x06: .*exceeds the limit"):
            arm.write_item(3, 116, 4, 4000)
        assert emulator.get(3, "goal_position") == 2048
        arm.set_torque(True, [3])
        with pytest.raises(MotorError, match="error 0x07"):  # EEPROM is locked while torque is on
            arm.write_item(3, 48, 4, 4095)


def test_bad_checksum_is_a_clear_error(emulator):
    with DynamixelArm(emulator.port, three_joints(), timeout_ms=500) as arm:
        emulator.inject_fault("corrupt_crc")
        with pytest.raises(DynamixelChecksumError,
                           match=r"sync read of address 132 on /dev/pts/\d+ \(motors 1, 2, 3\) "
                                 r"failed after 3 attempts: corrupt reply \(bad checksum"):
            arm.read_positions()
        with pytest.raises(DynamixelChecksumError, match="ping motor 2 .* corrupt reply"):
            arm.ping(2)
        emulator.inject_fault(None)
        np.testing.assert_allclose(arm.read_positions()[0], 0.0)  # the bus recovers


def test_timeout_is_a_clear_error_not_a_hang(emulator):
    # 300 ms: the answering servos (an emulator thread of this process) answer in it on a loaded machine.
    with DynamixelArm(emulator.port, three_joints(), timeout_ms=300, retries=1) as arm:
        emulator.inject_fault("no_reply", ids=[2])
        start = time.monotonic()
        with pytest.raises(DynamixelTimeoutError, match=r"\(motors 1, 2, 3\) failed after 2 attempts: "
                                                        r"no reply \(timeout\)"):
            arm.read_positions()
        with pytest.raises(DynamixelTimeoutError, match="motor 2"):
            arm.set_torque(True, ["shoulder"])
        assert time.monotonic() - start < 5.0
        arm.set_torque(True, ["base"])  # the others still answer
        emulator.inject_fault(None)
        assert arm.read_positions().shape == (3,)


def test_open_errors_name_the_port_and_motors(emulator, tmp_path, monkeypatch):
    motors = three_joints() + [Motor("wrist", 9)]
    with pytest.raises(DynamixelTimeoutError, match=r"no reply to ping from 'wrist' \(id 9\)"):
        DynamixelArm(emulator.port, motors, timeout_ms=300, retries=1).open()  # the others answer, loaded or not
    missing = str(tmp_path / "ttyUSB7")
    with pytest.raises(DynamixelError, match=rf"could not open serial port '{missing}'.*dialout"):
        DynamixelArm(missing, three_joints()).open()
    with pytest.raises(DynamixelError, match="not open"):
        DynamixelArm(emulator.port, three_joints()).read_positions()
    with pytest.raises(ValueError, match="distinct"):
        DynamixelArm(emulator.port, [Motor("a", 1), Motor("b", 1)])
    monkeypatch.setitem(sys.modules, "dynamixel_sdk", None)
    with pytest.raises(DynamixelError, match="needs dynamixel-sdk"):
        DynamixelArm(emulator.port, three_joints()).open()


# -- leader arm ---------------------------------------------------------------------------------------

LEADER_MOTORS = [Motor("yaw", 1), Motor("pitch", 2), Motor("gripper", 3)]
# Yaw about z at the base, a 0.2 m link along x to a pitch joint (about y), a 0.1 m tool.
LEADER_CHAIN = [ChainJoint("yaw", "z"), ("pitch", "y", (0.2, 0.0, 0.0))]
LEADER = dict(motors=LEADER_MOTORS, chain=LEADER_CHAIN, tool_offset=(0.1, 0.0, 0.0),
              gripper_joint="gripper", gripper_open=0.0, gripper_closed=1.0, pos_scale=0.01,
              rot_scale=0.1, hold_steps=2, timeout_ms=500)


def test_kinematic_chain_by_hand():
    chain = KinematicChain(LEADER_CHAIN, tool_offset=(0.1, 0.0, 0.0))
    for angles, expected in (((0.0, 0.0), (0.3, 0.0, 0.0)), ((math.pi / 2, 0.0), (0.0, 0.3, 0.0)),
                             ((0.0, math.pi / 2), (0.2, 0.0, -0.1))):
        position, rotation = chain.forward(angles)
        np.testing.assert_allclose(position, expected, atol=1e-12)
        assert np.allclose(rotation @ rotation.T, np.eye(3))


def test_leader_arm_maps_motion_to_end_effector_deltas():
    with DynamixelEmulator([1, 2, 3]) as emulator:
        emulator.motors[1].set("torque_enable", 1)
        arm = LeaderArm(4, emulator.port, **LEADER)
        assert isinstance(arm, InterventionDevice)
        assert emulator.get(1, "torque_enable") == 0  # free to move by hand
        first = arm.get_action({})
        assert not first.intervening and first.action.tolist() == [0.0, 0.0, 0.0, -1.0]

        emulator.set_present(1, 2048 + 13)  # the base turns by 13 ticks
        theta = 13 * TICK
        moved = arm.get_action({})
        expected = 0.3 * np.array([math.cos(theta) - 1.0, math.sin(theta), 0.0]) / 0.01
        assert moved.intervening and moved.action.dtype == np.float32
        np.testing.assert_allclose(moved.action[:3], expected, rtol=1e-5)
        assert moved.action[3] == -1.0

        # Held still: intervenes for hold_steps more steps, with zero motion, then hands back.
        still = [arm.get_action({}) for _ in range(3)]
        assert [s.intervening for s in still] == [True, True, False]
        assert not still[0].action[:3].any()

        emulator.set_present(2, 2048 + 300)  # a big pitch: clipped to the action range
        assert arm.get_action({}).action[2] == -1.0

        emulator.set_present(3, 2048 + int(0.8 / TICK))  # gripper past the middle: close
        grip = arm.get_action({})
        assert grip.intervening and grip.action[-1] == 1.0 and not grip.action[:3].any()
        emulator.set_present(3, 2048 + int(0.45 / TICK))  # hysteresis: still closed
        assert arm.get_action({}).action[-1] == 1.0
        emulator.set_present(3, 2048 + int(0.3 / TICK))
        assert arm.get_action({}).action[-1] == -1.0

        arm.reset()
        emulator.set_present(1, 2048 + 100)
        assert not arm.get_action({}).intervening  # the first reading after a reset moves nothing
        arm.close()


def test_leader_arm_frame_yaw_and_rotations():
    with DynamixelEmulator([1, 2, 3]) as emulator:
        arm = LeaderArm(7, emulator.port, **{**LEADER, "frame_yaw": math.pi / 2})
        arm.get_action({})
        emulator.set_present(1, 2048 + 10)  # the tool moves along the leader's +y ...
        theta = 10 * TICK
        action = arm.get_action({}).action
        # ... which is the robot's -x; the yaw turns the tool about z.
        np.testing.assert_allclose(action[:2], [-0.3 * math.sin(theta) / 0.01,
                                                0.3 * (math.cos(theta) - 1.0) / 0.01], rtol=1e-5)
        np.testing.assert_allclose(action[3:6], [0.0, 0.0, theta / 0.1], atol=1e-6)
        emulator.inject_fault("no_reply")
        with pytest.raises(DynamixelTimeoutError):
            arm.get_action({})
        arm.close()


def test_leader_arm_as_a_device_kind():
    with DynamixelEmulator([1, 2, 3]) as emulator:
        device = make_device("leader_arm", 4, port=emulator.port, **LEADER)
        assert isinstance(device, LeaderArm) and device.action_dim == 4
        device.close()
        intervention = {"device": "leader_arm", "enabled": True,
                        "leader_arm": {"port": emulator.port, **LEADER}}
        device = device_from_config(intervention, 7, make_expert=lambda: None)
        assert isinstance(device, LeaderArm) and device.action_dim == 7
        device.close()
    with pytest.raises(ValueError, match="needs port="):
        make_device("leader_arm", 4)
    with pytest.raises(ValueError, match=r"not among the motors"):
        LeaderArm(4, "/dev/null", motors=LEADER_MOTORS, chain=[("wrist", "x")])
