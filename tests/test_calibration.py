"""Calibration by hand against the emulated buses: a thread turns the emulated servos through
their ranges (``set_present``, torque off) while the library or the CLI samples them."""

from __future__ import annotations

import json
import math
import subprocess
import threading

import numpy as np
import pytest

from robot_infra import calibration as calib
from robot_infra.calibration import CalibrationError
from robot_infra.dynamixel.emulator import DynamixelEmulator
from robot_infra.feetech.driver import FeetechArm
from robot_infra.feetech.emulator import FeetechEmulator
from robot_infra.feetech.protocol import Instruction
from robot_infra.servo_bus import LimitError

pytest.importorskip("scservo_sdk")  # the [robot] extra
pytest.importorskip("dynamixel_sdk")

NAMES = list(calib.SO_ARM_MOTORS)
# Per servo id: (low, high) of the sweep. Joints start in the middle, the gripper closed (low).
RANGES = {1: (1700, 2400), 2: (1650, 2450), 3: (1600, 2500), 4: (1550, 2550), 5: (1000, 3100),
          6: (1500, 2600)}
START = {i: (1500 if i == 6 else 2048) for i in RANGES}
TICK = 2 * math.pi / 4096


class HandMover:
    """Once the first sync read (the reference reading) went out, moves every servo to one end of
    its range, then the other, `cycles` times, then sets :attr:`done` and stays. It goes on to
    the next end only after two more sync reads were answered, so the sampler sees every end
    however slow a loaded machine is."""

    def __init__(self, emulator, start=START, ranges=RANGES, cycles: int = 2):
        self.emulator, self.ranges, self.cycles = emulator, ranges, cycles
        self.done = threading.Event()
        self._stop = threading.Event()
        for motor_id, ticks in start.items():
            emulator.set_present(motor_id, ticks)
        self._before = self._sync_reads()  # earlier reads on this bus do not count
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sync_reads(self) -> int:
        return self.emulator.instructions().count(Instruction.SYNC_READ)

    def _wait_for_sync_reads(self, count: int) -> bool:
        while self._sync_reads() < count:
            if self._stop.wait(0.005):
                return False
        return True

    def _run(self):
        if not self._wait_for_sync_reads(self._before + 1):
            return
        for _ in range(self.cycles):
            for end in (0, 1):
                for motor_id, ends in self.ranges.items():
                    self.emulator.set_present(motor_id, ends[end])
                if not self._wait_for_sync_reads(self._sync_reads() + 2):
                    return
        self.done.set()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join(timeout=5.0)


def record(arm, mover, arm_name="so101", bus="feetech", **kwargs):
    """Samples until the mover is done (20 s at most, should the test be broken)."""
    return calib.record_calibration(arm, arm_name, bus, duration_s=20.0, stop=mover.done, **kwargs)


def check_so101_file(data, port):
    assert data["format"] == 1 and data["arm"] == "so101" and data["bus"] == "feetech"
    assert data["port"] == port and data["written_at"]
    assert list(data["motors"]) == NAMES
    for motor_id, (name, entry) in enumerate(data["motors"].items(), start=1):
        assert entry == {"id": motor_id, "zero_ticks": START[motor_id], "sign": 1,
                         "min_ticks": RANGES[motor_id][0], "max_ticks": RANGES[motor_id][1]}, name
    assert data["gripper"] == {"motor": "gripper", "open_ticks": 2600, "closed_ticks": 1500}


def record_so101(emulator, path):
    arm = calib.make_arm("feetech", emulator.port, calib.uncalibrated_motors(calib.SO_ARM_MOTORS),
                         timeout_ms=500)
    with arm, HandMover(emulator) as mover:
        result = record(arm, mover, signs={"wrist_roll": 1})
    return calib.write_calibration(path, result)


def test_record_write_and_load_so101(tmp_path):
    with FeetechEmulator(range(1, 7)) as emulator:
        emulator.servos[1].set("torque_enable", 1)
        path = record_so101(emulator, tmp_path / "cal" / "so101.json")
        assert emulator.get(1, "torque_enable") == 0  # switched off to move by hand
    assert [p.name for p in path.parent.iterdir()] == ["so101.json"]  # no temp file left
    check_so101_file(json.loads(path.read_text()), emulator.port)

    loaded = calib.load_calibration(path, calib.SO_ARM_MOTORS)
    motors = loaded.motors
    assert [m.name for m in motors] == NAMES and [m.id for m in motors] == list(range(1, 7))
    pan = motors[0]
    assert pan.zero_ticks == 2048 and pan.sign == 1.0
    assert pan.min_angle == pytest.approx(-348 * TICK) and pan.max_angle == pytest.approx(352 * TICK)
    assert loaded.gripper == calib.GripperRange(open_ticks=2600, closed_ticks=1500)
    assert loaded.gripper.stroke(1500) == 1.0 and loaded.gripper.stroke(2050) == pytest.approx(0.5)
    assert loaded.gripper.ticks(0.0) == 2600
    assert loaded.gripper_stroke(loaded.gripper_angle(0.25)) == pytest.approx(0.25, abs=1e-3)
    # Names only, in another order: the joints come back in the caller's order.
    assert [m.name for m in calib.load_calibration(path, NAMES[::-1]).motors] == NAMES[::-1]


def test_sign_and_refused_recordings(tmp_path):
    with FeetechEmulator(range(1, 7)) as emulator:
        arm = calib.make_arm("feetech", emulator.port,
                             calib.uncalibrated_motors(calib.SO_ARM_MOTORS), timeout_ms=500)
        with arm:
            with HandMover(emulator) as mover:
                result = record(arm, mover, signs={"elbow_flex": -1})
            elbow = result.joints["elbow_flex"].motor("elbow_flex")
            assert elbow.sign == -1.0
            assert elbow.min_angle == pytest.approx(-452 * TICK)  # 2500 is the negative end
            # Nobody moved the arm: every joint is reported, and nothing is returned.
            with pytest.raises(CalibrationError, match=r"'shoulder_pan' moved only 0 ticks.*"
                                                       r"'gripper' moved only 0 ticks.*posture"):
                calib.record_calibration(arm, "so101", "feetech", duration_s=0.1)
            # The gripper half open at the start.
            with HandMover(emulator, start={**START, 6: 2050}) as mover:
                with pytest.raises(CalibrationError, match="'gripper' was not closed at the start"):
                    record(arm, mover)
            # wrist_roll's range across the encoder's 4095 -> 0 point.
            with HandMover(emulator, start={**START, 5: 4000},
                           ranges={**RANGES, 5: (4090, 5)}) as mover:
                with pytest.raises(CalibrationError, match="'wrist_roll' crossed the encoder's wrap"):
                    record(arm, mover)


def test_load_refuses_missing_corrupt_and_mismatched_files(tmp_path):
    command = r"python -m robot_infra\.tools\.calibrate_arm --arm=so101 --port=/dev/ttyACM0 --output="
    missing = tmp_path / "none.json"
    with pytest.raises(CalibrationError, match=rf"does not exist\. Calibrate the arm first: {command}"):
        calib.load_calibration(missing, NAMES, arm="so101", port="/dev/ttyACM0")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": 1, "motors": {')
    with pytest.raises(CalibrationError, match="cannot be read as JSON.*calibrate_arm"):
        calib.load_calibration(corrupt, NAMES)

    good = {"format": 1, "arm": "so101", "bus": "feetech", "port": "/dev/ttyACM0",
            "motors": {name: {"id": i + 1, "zero_ticks": 2048, "sign": 1, "min_ticks": 1000,
                              "max_ticks": 3000} for i, name in enumerate(NAMES)},
            "gripper": {"motor": "gripper", "open_ticks": 3000, "closed_ticks": 1000},
            "written_at": "2026-12-03T00:00:00+00:00"}
    path = tmp_path / "cal.json"

    def refused(change, pattern, expected=calib.SO_ARM_MOTORS):
        data = json.loads(json.dumps(good))
        change(data)
        path.write_text(json.dumps(data))
        with pytest.raises(CalibrationError, match=pattern + ".*calibrate_arm"):
            calib.load_calibration(path, expected)

    path.write_text(json.dumps(good))
    assert len(calib.load_calibration(path, calib.SO_ARM_MOTORS).motors) == 6
    refused(lambda d: d.update(format=2), "expected format 1, found 2")
    refused(lambda d: d["motors"].pop("wrist_roll"), r"missing \['wrist_roll'\]")
    refused(lambda d: None, r"unexpected \['gripper'\]", expected=NAMES[:5])
    refused(lambda d: d["motors"]["elbow_flex"].update(id=2), r"'elbow_flex' has id 2, expected 3")
    refused(lambda d: d["motors"]["elbow_flex"].update(id=2), r"ids repeat", expected=NAMES)
    refused(lambda d: d["motors"]["wrist_flex"].update(min_ticks=3000), "min_ticks 3000 >= max")
    refused(lambda d: d["motors"]["wrist_flex"].update(zero_ticks=10), "zero_ticks 10 outside")
    refused(lambda d: d["motors"]["wrist_flex"].update(sign=0), "sign 0")
    refused(lambda d: d["motors"]["wrist_flex"].pop("sign"), "'wrist_flex' is incomplete")
    refused(lambda d: d["motors"]["wrist_flex"].update(zero_ticks="2048"), "non-integer")
    refused(lambda d: d.pop("gripper"), "'gripper' entry None")


def test_open_calibrated_arm(tmp_path):
    with FeetechEmulator(range(1, 7)) as emulator:
        path = record_so101(emulator, tmp_path / "so101.json")
        arm = calib.open_calibrated_arm("feetech", emulator.port, path, calib.SO_ARM_MOTORS,
                                        timeout_ms=500)
        try:
            assert isinstance(arm, FeetechArm) and arm.is_open
            emulator.set_present(1, 2148)
            assert arm.read_positions()[0] == pytest.approx(100 * TICK)
            np.testing.assert_allclose(arm.lower[0], -348 * TICK)  # the calibrated range
            with pytest.raises(LimitError, match="'shoulder_pan'"):
                arm.write_goal_positions([-0.5 * math.pi, 0, 0, 0, 0, 0])
        finally:
            arm.close()
        with pytest.raises(CalibrationError, match=r"a calibration of 'so101', not 'koch'.*"
                                                   r"--arm=koch"):
            calib.open_calibrated_arm("dynamixel", emulator.port, path, calib.KOCH_MOTORS)
        with pytest.raises(CalibrationError, match=r"does not exist.*--arm=<so100\|so101\|koch> "
                                                   rf"--port={emulator.port}"):
            calib.open_calibrated_arm("feetech", emulator.port, tmp_path / "no.json", NAMES)


def test_koch_on_the_dynamixel_bus(tmp_path):
    with DynamixelEmulator(range(1, 7)) as emulator:
        arm = calib.make_arm("dynamixel", emulator.port,
                             calib.uncalibrated_motors(calib.KOCH_MOTORS), timeout_ms=500)
        with arm, HandMover(emulator) as mover:
            result = record(arm, mover, "koch", "dynamixel")
        path = calib.write_calibration(tmp_path / "koch.json", result)
        assert json.loads(path.read_text())["motors"]["wrist_roll"]["max_ticks"] == 3100
        arm = calib.open_calibrated_arm("dynamixel", emulator.port, path, calib.KOCH_MOTORS,
                                        timeout_ms=500)
        with arm:
            assert arm.read_positions().shape == (6,)


def test_cli_in_a_subprocess(python, subprocess_env, tmp_path):
    output = tmp_path / "so101.json"
    with FeetechEmulator(range(1, 7)) as emulator, HandMover(emulator) as mover:
        command = [python, "-m", "robot_infra.tools.calibrate_arm", "--arm=so101",
                   f"--port={emulator.port}", f"--output={output}", "--timeout_ms=500"]
        process = subprocess.Popen(command, env=subprocess_env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            mover.done.wait(timeout=120)  # the CLI sampled every end of every joint ...
            stdout, stderr = process.communicate("\n", timeout=120)  # ... and Enter ends it
        finally:
            process.kill()
    assert process.returncode == 0, stdout + stderr
    assert "reference posture" in stdout and "press Enter" in stdout
    assert f"wrote {output}" in stdout
    check_so101_file(json.loads(output.read_text()), emulator.port)
    missing = subprocess.run([python, "-m", "robot_infra.tools.calibrate_arm", "--arm=so101"],
                             env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "--port" in missing.stderr


def _so101_file(tmp_path, **changes):
    motors = {name: {"id": i, "zero_ticks": 2048, "sign": 1, "min_ticks": 1024, "max_ticks": 3072}
              for name, i in calib.ARMS["so101"].motors.items()}
    motors["gripper"].update(min_ticks=2048, max_ticks=2948)
    data = {"format": 1, "arm": "so101", "bus": "feetech", "port": "/dev/x", "motors": motors,
            "gripper": {"motor": "gripper", "open_ticks": 2948, "closed_ticks": 2048}, "written_at": ""}
    for key, value in changes.items():
        data[key] = value
    return data


@pytest.mark.parametrize("forge", [
    lambda d: d["motors"]["elbow_flex"].update(max_ticks=10_000),  # past one turn
    lambda d: d["motors"]["elbow_flex"].update(min_ticks=-5),
    lambda d: d["motors"]["wrist_flex"].update(id=300),
    lambda d: d.update(format=True),  # a JSON true is not format 1
    lambda d: d.update(arm="koch"),  # another arm's file
    lambda d: d["gripper"].update(open_ticks=2948.0),
])
def test_forged_calibration_files_are_refused_with_the_command(tmp_path, forge):
    data = _so101_file(tmp_path)
    forge(data)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="calibrate_arm"):
        calib.load_calibration(path, calib.ARMS["so101"].motors, arm="so101")


@pytest.mark.parametrize("text", ['{"format": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000])
def test_unparseable_calibration_files_are_refused_with_the_command(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(CalibrationError, match="calibrate_arm"):
        calib.load_calibration(path, calib.ARMS["so101"].motors, arm="so101")
