"""The Feetech driver (feetech-servo-sdk) against the STS3215 emulator (its own framing in
robot_infra.feetech.protocol), through a real pty that the SDK's PortHandler (pyserial) opens like
the SO-101's USB adapter."""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest

from robot_infra import servo_bus
from robot_infra.feetech import protocol
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
from robot_infra.feetech.protocol import ErrorFlag, Instruction

sdk = pytest.importorskip("scservo_sdk")  # the [robot] extra

TICK = 2 * math.pi / 4096  # radians per tick
SO101 = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def eventually(condition, timeout: float = 10.0) -> bool:
    """Polls `condition` (generous timeout: a loaded 2-core machine is slow, never wrong)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def three_joints():
    return [Motor("pan", 1), Motor("lift", 2, sign=-1.0, zero_ticks=1024),
            Motor("elbow", 3, min_angle=-1.0)]


@pytest.fixture
def emulator():
    with FeetechEmulator([1, 2, EmulatedServo(3, min_position=1024, max_position=3072)]) as emu:
        yield emu


# -- protocol ---------------------------------------------------------------------------------------


class RecordingPort:
    """Just enough of a PortHandler for the SDK to build and 'send' a packet."""

    is_using = False

    def __init__(self):
        self.sent = b""

    def clearPort(self):
        pass

    def writePort(self, packet):
        self.sent += bytes(packet)
        return len(packet)


def test_framing_matches_the_manual_and_the_sdk():
    # The ping of id 1 as Feetech's protocol manual prints it.
    assert protocol.encode_packet(1, Instruction.PING) == bytes.fromhex("FFFF 01 02 01 FB")
    handler, port = sdk.PacketHandler(0), RecordingPort()
    handler.syncWriteTxOnly(port, 42, 2, [1, 0x34, 0x12, 2, 0x00, 0x88], 6)
    assert port.sent == protocol.encode_packet(
        protocol.BROADCAST_ID, Instruction.SYNC_WRITE, bytes([42, 2, 1, 0x34, 0x12, 2, 0x00, 0x88]))
    port.sent = b""
    handler.writeTxOnly(port, 7, 40, 1, [1])
    assert port.sent == protocol.encode_packet(7, Instruction.WRITE, bytes([40, 1]))
    # STS is little-endian and positions are sign-magnitude (bit 15), in both implementations.
    for value in (0, 1, 2047, 4095, -1, -300, 32767, -32767):
        raw = protocol.to_sign_magnitude(value)
        assert raw == sdk.SCS_TOSCS(value, 15) and protocol.from_sign_magnitude(raw) == value
        low, high = sdk.SCS_LOBYTE(raw), sdk.SCS_HIBYTE(raw)
        assert bytes([low, high]) == raw.to_bytes(2, "little")
        assert sdk.SCS_TOHOST(sdk.SCS_MAKEWORD(low, high), 15) == value
    assert protocol.to_sign_magnitude(-5) == 0x8005
    with pytest.raises(ValueError):
        protocol.to_sign_magnitude(1 << 15)


def test_packet_reader_skips_noise_and_flags_bad_checksums():
    first = protocol.encode_packet(5, Instruction.WRITE, bytes([42, 0xFF, 0xFF]))
    second = protocol.encode_status(6, ErrorFlag.OVERLOAD, b"\x00\x08")
    broken = bytearray(protocol.encode_packet(7, Instruction.PING))
    broken[-1] ^= 1
    reader = protocol.PacketReader()
    stream = b"\x00\xff\x13\xff" + first + second + bytes(broken)
    packets = [p for i in range(len(stream)) for p in reader.feed(stream[i:i + 1])]  # byte by byte
    assert packets == [protocol.Packet(5, Instruction.WRITE, bytes([42, 0xFF, 0xFF]), True),
                       protocol.Packet(6, ErrorFlag.OVERLOAD, b"\x00\x08", True),
                       protocol.Packet(7, Instruction.PING, b"", False)]
    assert protocol.describe_error(0x22) == "angle (position sensor, or a goal outside the angle " \
                                            "limits), overload"


def test_memory_table_addresses_of_the_sts3215():
    # The items the driver relies on, as in Feetech's STS3215 memory table.
    assert [protocol.address(item) for item in ("model_number", "min_position_limit",
                                                "max_position_limit", "torque_enable",
                                                "goal_position", "lock", "present_position")] \
        == [3, 9, 11, 40, 42, 55, 56]
    assert (FeetechArm.ADDR_GOAL_POSITION, FeetechArm.ADDR_PRESENT_POSITION) == (42, 56)


# -- driver -----------------------------------------------------------------------------------------


def test_ping_torque_and_positions_round_trip(emulator):
    with FeetechArm(emulator.port, three_joints(), timeout_ms=500) as arm:
        assert arm.models == dict.fromkeys(arm.names, protocol.STS3215_MODEL)
        assert arm.ping(3) == 777
        # lift: zero 1024, sign -1, so the servo's 2048 reads as -1024 ticks.
        assert arm.read_present_ticks().tolist() == [2048, 2048, 2048]
        np.testing.assert_allclose(arm.read_positions(), np.array([0, -1024, 0]) * TICK)
        assert arm.torque_enabled().tolist() == [False] * 3
        arm.set_torque(True)
        assert all(emulator.get(i, "torque_enable") == 1 for i in emulator.servos)
        target = np.array([-0.75, 1.0, 0.5])
        arm.write_goal_positions(target)
        expected = [2048 - 489, 1024 - 652, 2048 + 326]  # zero + sign * round(angle / TICK)
        assert eventually(lambda: [emulator.get(i, "goal_position") for i in (1, 2, 3)] == expected)
        assert emulator.instructions()[-1] == Instruction.SYNC_WRITE  # one packet, no reply
        np.testing.assert_allclose(arm.read_goal_positions(), target, atol=TICK)
        assert eventually(lambda: np.allclose(arm.read_positions(), target, atol=TICK))
        arm.set_torque(False, ["elbow", "lift"])
        assert arm.torque_enabled().tolist() == [True, False, False]
        emulator.set_present(2, 1000)  # moved by hand
        assert arm.read_positions()[1] == pytest.approx(24 * TICK)
        emulator.set_present(3, -20)  # past zero in multi-turn mode: sign-magnitude on the wire
        assert arm.read_present_ticks()[2] == -20
    assert not arm.is_open


def test_sync_read_of_six_servos_is_one_packet():
    with FeetechEmulator(range(1, 7)) as emulator:
        motors = [Motor(name, i + 1) for i, name in enumerate(SO101)]
        with FeetechArm(emulator.port, motors, timeout_ms=500) as arm:
            for i in range(1, 7):
                emulator.set_present(i, 1000 + 100 * i)
            before = len(emulator.instructions())
            ticks = arm.read_present_ticks()
            assert emulator.instructions()[before:] == [Instruction.SYNC_READ]
            assert ticks.tolist() == [1100, 1200, 1300, 1400, 1500, 1600]
            np.testing.assert_allclose(arm.read_positions(), (ticks - 2048) * TICK)


def test_limits_are_checked_before_anything_is_written(emulator):
    with FeetechArm(emulator.port, three_joints(), timeout_ms=500) as arm:
        # elbow: configured min -1.0 rad; the servo's own limits 1024..3072 ticks = +-pi/2.
        assert arm.lower[2] == pytest.approx(-1.0) and arm.upper[2] == pytest.approx(math.pi / 2)
        packets_before = list(emulator.received)
        bad_goals = {"elbow": [0.1, 0.1, 1.7], "pan": [-3.2, 0.0, 0.0], "lift": [0.0, np.inf, 0.0]}
        for joint, goal in bad_goals.items():
            with pytest.raises(PositionLimitError, match=rf"nothing was written: '{joint}' \(id"):
                arm.write_goal_positions(goal)
        with pytest.raises(PositionLimitError, match=r"'pan' .*; 'elbow'"):  # every bad joint
            arm.write_goal_positions([4.0, 0.0, -1.5])
        assert list(emulator.received) == packets_before  # not one byte reached the bus
        assert [emulator.get(i, "goal_position") for i in (1, 2, 3)] == [2048] * 3
        with pytest.raises(ValueError, match="expected 3 goal angles"):
            arm.write_goal_positions(np.zeros(4))
        # Past the driver's checks, the servo refuses a goal outside its angle limits itself.
        with pytest.raises(MotorError, match=r"of motor 3 \('elbow'\) .*error 0x02: angle"):
            arm.write_item(3, 42, 2, 4000)
        assert emulator.get(3, "goal_position") == 2048
        assert issubclass(PositionLimitError, servo_bus.LimitError)
        assert issubclass(PositionLimitError, ValueError)


def test_eeprom_lock(emulator):
    with FeetechArm(emulator.port, three_joints(), timeout_ms=500) as arm:
        with pytest.raises(MotorError, match=r"address 9 of motor 1 \('pan'\).*0x40.*locked"):
            arm.write_item("pan", FeetechArm.ADDR_MIN_POSITION_LIMIT, 2, 100)
        assert emulator.get(1, "min_position_limit") == 0
        with pytest.raises(MotorError, match="read-only"):
            arm.write_item("pan", FeetechArm.ADDR_PRESENT_POSITION, 2, 100)
        arm.write_item("pan", FeetechArm.ADDR_LOCK, 1, 0)
        arm.write_item("pan", FeetechArm.ADDR_MIN_POSITION_LIMIT, 2, 100)
        arm.write_item("pan", FeetechArm.ADDR_LOCK, 1, 1)
        assert arm.read_item("pan", FeetechArm.ADDR_MIN_POSITION_LIMIT, 2) == 100
        assert emulator.get(1, "min_position_limit") == 100


def test_bad_checksum_is_a_clear_error(emulator):
    with FeetechArm(emulator.port, three_joints(), timeout_ms=500) as arm:
        emulator.inject_fault("corrupt_checksum", ids=[3])
        with pytest.raises(FeetechChecksumError,
                           match=r"sync read of address 56 on /dev/pts/\d+ \(motors 1, 2, 3\) failed "
                                 r"after 3 attempts: corrupt reply .* from motor 3 \('elbow'\)"):
            arm.read_positions()
        with pytest.raises(FeetechChecksumError, match=r"ping motor 3 \('elbow'\) .* corrupt reply"):
            arm.ping(3)
        emulator.inject_fault(None)
        assert arm.read_positions()[0] == 0.0  # the bus recovers


def test_timeout_is_a_clear_error_not_a_hang(emulator):
    # 300 ms: the answering servos (an emulator thread of this process) answer in it on a loaded machine.
    with FeetechArm(emulator.port, three_joints(), timeout_ms=300, retries=1) as arm:
        emulator.inject_fault("no_reply", ids=[2])
        start = time.monotonic()
        with pytest.raises(FeetechTimeoutError, match=r"\(motors 1, 2, 3\) failed after 2 attempts: "
                                                      r"no reply \(timeout\) from motor 2 \('lift'\)"):
            arm.read_positions()
        with pytest.raises(FeetechTimeoutError, match=r"motor 2 \('lift'\)"):
            arm.set_torque(True, ["lift"])
        assert time.monotonic() - start < 5.0
        arm.set_torque(True, ["pan"])  # the others still answer
        emulator.inject_fault(None)
        assert arm.read_positions().shape == (3,)


def test_corrupt_instruction_gets_no_reply(emulator):
    with FeetechArm(emulator.port, three_joints(), timeout_ms=500) as arm:
        broken = bytearray(protocol.encode_packet(1, Instruction.PING))
        broken[-1] ^= 0xFF
        arm._port_handler.writePort(bytes(broken))  # what a glitch on the line would deliver
        assert eventually(lambda: emulator.received[-1].checksum_ok is False)
        assert arm.ping(1) == 777  # nothing stale was left on the line


def test_servo_error_flags_are_a_motor_error_naming_the_servo(emulator):
    with FeetechArm(emulator.port, three_joints(), timeout_ms=500) as arm:
        emulator.servos[2].status_flags = ErrorFlag.OVERLOAD | ErrorFlag.OVERHEAT
        with pytest.raises(MotorError, match=r"sync read of address 56 on /dev/pts/\d+ from motor 2 "
                                             r"\('lift'\): .*error 0x24: overheat, overload"):
            arm.read_positions()
        with pytest.raises(MotorError, match=r"read address 40 .* of motor 2 \('lift'\).*overload"):
            arm.torque_enabled()
        emulator.servos[2].status_flags = 0
        assert arm.torque_enabled().tolist() == [False, False, False]


def test_dropped_link_is_a_clear_error_not_a_hang(emulator):
    arm = FeetechArm(emulator.port, three_joints(), timeout_ms=200).open()
    arm.read_positions()
    emulator.close()  # the adapter is unplugged mid-run
    start = time.monotonic()
    for _ in range(2):  # and stays a clear error, not "port in use"
        with pytest.raises(FeetechError, match=r"sync read .*failed: the serial port stopped working"):
            arm.read_positions()
    assert time.monotonic() - start < 5.0
    arm.close()


def test_open_errors_name_the_port_and_servos(emulator, tmp_path, monkeypatch):
    motors = three_joints() + [Motor("wrist", 9)]
    with pytest.raises(FeetechTimeoutError, match=r"no reply to ping from 'wrist' \(id 9\)"):
        FeetechArm(emulator.port, motors, timeout_ms=300, retries=1).open()  # the others answer, loaded or not
    missing = str(tmp_path / "ttyACM7")
    with pytest.raises(FeetechError, match=rf"could not open serial port '{missing}'.*dialout"):
        FeetechArm(missing, three_joints()).open()
    with pytest.raises(FeetechError, match="Feetech port .* is not open"):
        FeetechArm(emulator.port, three_joints()).read_positions()
    with pytest.raises(ValueError, match="distinct"):
        FeetechArm(emulator.port, [Motor("a", 1), Motor("b", 1)])
    with pytest.raises(FeetechError, match="do not overlap"):
        FeetechArm(emulator.port, [Motor("elbow", 3, max_angle=-2.0)], timeout_ms=500).open()
    monkeypatch.setitem(sys.modules, "scservo_sdk", None)
    with pytest.raises(FeetechError, match="needs feetech-servo-sdk"):
        FeetechArm(emulator.port, three_joints()).open()


def test_both_buses_share_one_hierarchy():
    from robot_infra.dynamixel import driver as dynamixel

    assert dynamixel.Motor is Motor is servo_bus.Motor
    assert issubclass(dynamixel.DynamixelArm, servo_bus.ServoArm)
    assert issubclass(FeetechArm, servo_bus.ServoArm)
    for feetech_error, dynamixel_error, shared in (
            (FeetechTimeoutError, dynamixel.DynamixelTimeoutError, servo_bus.BusTimeoutError),
            (FeetechChecksumError, dynamixel.DynamixelChecksumError, servo_bus.BusChecksumError),
            (MotorError, dynamixel.MotorError, servo_bus.ServoStatusError)):
        assert issubclass(feetech_error, shared) and issubclass(dynamixel_error, shared)
        assert issubclass(feetech_error, FeetechError) and not issubclass(feetech_error,
                                                                          dynamixel.DynamixelError)
