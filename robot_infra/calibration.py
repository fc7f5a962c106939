"""Joint calibration of a servo arm (SO-100 / SO-101 on Feetech, Koch v1.1 on Dynamixel).

A calibration says, per joint, where its zero is (``zero_ticks``), which way it turns
(``sign``) and the range it can move through (``min_ticks`` .. ``max_ticks``, raw servo ticks);
the gripper's two ends are its open and closed positions. :func:`record_calibration` measures
it on an arm with torque off:

1. **Reference posture, before starting.** Hold the arm with every joint in the middle of its
   range and the gripper fully closed (:data:`REFERENCE_POSTURE`). The first reading is each
   joint's zero (``zero_ticks``); for the gripper it marks the closed end. For SO-101 this is
   LeRobot's "middle of each joint's range" posture, except for the gripper.
2. **Sweep.** Move each joint by hand through its full range (both ends), for ``duration_s``
   seconds or until ``stop`` is set (the CLI sets it on Enter). Positions are sampled with one
   sync read every ``period_s``; the smallest and largest reading of each joint are its range.

Every bus driver built on :class:`robot_infra.servo_bus.ServoArm` works (torque off, raw
present ticks, sync reads). The servos' own memory (homing offsets, angle limits) is not
changed: the calibration lives in the file only.

The file (JSON, written atomically: a temp file in the same folder, fsync, rename)::

    {"format": 1, "arm": "so101", "bus": "feetech", "port": "/dev/ttyACM0",
     "reference_posture": "...",
     "motors": {"shoulder_pan": {"id": 1, "zero_ticks": 2051, "sign": 1,
                                 "min_ticks": 1010, "max_ticks": 3090}, ...},
     "gripper": {"motor": "gripper", "open_ticks": 2900, "closed_ticks": 2010},
     "written_at": "2026-12-03T11:40:00+00:00"}

:func:`load_calibration` validates it and gives :class:`Motor` specs with radian limits;
:func:`open_calibrated_arm` is what a follower backend calls: it refuses to drive an arm without
a valid calibration (:class:`CalibrationError`, with the command to make one).

Limitation: a joint whose range crosses the servo encoder's wrap point (4095 -> 0) is refused;
turn the horn or set the servo's homing offset so that the range lies inside 0..4095.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_infra.servo_bus import TICKS_PER_TURN, Motor, ServoArm, ticks_to_radians

FORMAT = 1
GRIPPER = "gripper"
REFERENCE_POSTURE = "every joint in the middle of its range, the gripper fully closed"
COMMAND = "python -m robot_infra.tools.calibrate_arm"

# Joint names and bus ids of the supported arms, in the order the driver reads them.
SO_ARM_MOTORS: dict[str, int] = {"shoulder_pan": 1, "shoulder_lift": 2, "elbow_flex": 3,
                                 "wrist_flex": 4, "wrist_roll": 5, GRIPPER: 6}  # STS3215
KOCH_MOTORS: dict[str, int] = dict(SO_ARM_MOTORS)  # Dynamixel X-series (XL430 / XL330)


@dataclasses.dataclass(frozen=True)
class ArmSpec:
    bus: str
    motors: Mapping[str, int]


ARMS: dict[str, ArmSpec] = {
    "so100": ArmSpec("feetech", SO_ARM_MOTORS),
    "so101": ArmSpec("feetech", SO_ARM_MOTORS),
    "koch": ArmSpec("dynamixel", KOCH_MOTORS),
}
BUSES = ("feetech", "dynamixel")
# Arms whose calibration files serve each other (one kinematic model, one motor layout).
_SAME_MODEL = {"so100": ("so101",), "so101": ("so100",)}

# A joint that moved less than this during the sweep was not moved through its range.
MIN_RANGE_TICKS = 40
# The gripper's reference reading must be within this fraction of its range from one end.
GRIPPER_END_FRACTION = 0.25


class CalibrationError(RuntimeError):
    """No usable calibration: missing, corrupt, for another arm, or a bad recording."""


@dataclasses.dataclass(frozen=True)
class JointCalibration:
    """One joint's calibration, in raw servo ticks."""

    id: int
    zero_ticks: int
    sign: int
    min_ticks: int
    max_ticks: int

    def motor(self, name: str) -> Motor:
        """The driver's spec: zero, sign, and the recorded range as radian limits."""
        ends = ticks_to_radians(np.array([self.min_ticks, self.max_ticks]), self.zero_ticks,
                                float(self.sign))
        return Motor(name, self.id, sign=float(self.sign), zero_ticks=self.zero_ticks,
                     min_angle=float(ends.min()), max_angle=float(ends.max()))


@dataclasses.dataclass(frozen=True)
class GripperRange:
    """The gripper joint's two ends, raw ticks; maps a 0 (open) .. 1 (closed) stroke."""

    open_ticks: int
    closed_ticks: int

    def stroke(self, ticks: float) -> float:
        """0.0 open .. 1.0 closed, clipped."""
        fraction = (ticks - self.open_ticks) / (self.closed_ticks - self.open_ticks)
        return float(np.clip(fraction, 0.0, 1.0))

    def ticks(self, stroke: float) -> int:
        """The raw position of a 0 (open) .. 1 (closed) stroke, clipped."""
        stroke = float(np.clip(stroke, 0.0, 1.0))
        return int(round(self.open_ticks + stroke * (self.closed_ticks - self.open_ticks)))


@dataclasses.dataclass(frozen=True)
class Calibration:
    arm: str
    bus: str
    port: str
    joints: Mapping[str, JointCalibration]  # in the order the driver reads them
    gripper: GripperRange | None = None
    written_at: str = ""

    @property
    def motors(self) -> tuple[Motor, ...]:
        """Driver specs with radian limits, in joint order."""
        return tuple(joint.motor(name) for name, joint in self.joints.items())

    def gripper_angle(self, stroke: float) -> float:
        """The gripper joint's angle (radians, driver frame) for a 0 (open) .. 1 (closed) stroke."""
        if self.gripper is None:
            raise CalibrationError(f"the {self.arm} calibration has no {GRIPPER!r} joint")
        joint = self.joints[GRIPPER]
        return float(ticks_to_radians(self.gripper.ticks(stroke), joint.zero_ticks, joint.sign))

    def gripper_stroke(self, angle: float) -> float:
        """0 (open) .. 1 (closed) from the gripper joint's angle (radians, driver frame)."""
        if self.gripper is None:
            raise CalibrationError(f"the {self.arm} calibration has no {GRIPPER!r} joint")
        joint = self.joints[GRIPPER]
        ticks = joint.zero_ticks + joint.sign * angle * TICKS_PER_TURN / (2.0 * math.pi)
        return self.gripper.stroke(ticks)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT, "arm": self.arm, "bus": self.bus, "port": self.port,
            "reference_posture": REFERENCE_POSTURE,
            "motors": {name: dataclasses.asdict(joint) for name, joint in self.joints.items()},
        }
        if self.gripper is not None:
            data["gripper"] = {"motor": GRIPPER, **dataclasses.asdict(self.gripper)}
        data["written_at"] = self.written_at
        return data


def calibrate_command(arm: str | None = None, port: str | None = None,
                      output: str | os.PathLike | None = None) -> str:
    """The command line that writes a calibration file."""
    return (f"{COMMAND} --arm={arm or '<' + '|'.join(ARMS) + '>'} "
            f"--port={port or '<serial port>'} --output={output or '<calibration.json>'}")


def make_arm(bus: str, port: str, motors: Sequence[Motor | Mapping[str, Any]], *,
             baudrate: int = 1_000_000, timeout_ms: float | None = None,
             retries: int = 2) -> ServoArm:
    """An unopened driver for `bus` ("feetech" or "dynamixel")."""
    if bus == "feetech":
        from robot_infra.feetech.driver import FeetechArm as arm_class
    elif bus == "dynamixel":
        from robot_infra.dynamixel.driver import DynamixelArm as arm_class
    else:
        raise ValueError(f"unknown bus {bus!r}; known: {', '.join(BUSES)}")
    return arm_class(port, motors, baudrate=baudrate, timeout_ms=timeout_ms, retries=retries)


def uncalibrated_motors(motors: Mapping[str, int]) -> list[Motor]:
    """Specs to open an arm before it is calibrated: any position of a turn is allowed."""
    return [Motor(name, motor_id) for name, motor_id in motors.items()]


# -- recording ------------------------------------------------------------------------------------


def record_calibration(
    arm: ServoArm,
    arm_name: str,
    bus: str,
    *,
    duration_s: float | None,
    stop: threading.Event | None = None,
    period_s: float = 0.02,
    signs: Mapping[str, int] | None = None,
    on_sample: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None,
) -> Calibration:
    """Measures zero and range of every joint of the opened `arm`, moved by hand (see the module).

    Args:
        arm: an opened driver (e.g. from :func:`make_arm` with :func:`uncalibrated_motors`);
            torque is switched off.
        arm_name, bus: what the calibration is for (go into the file).
        duration_s: how long to sample; None: until `stop` is set.
        stop: ends the sampling early when set (e.g. on Enter).
        period_s: time between two samples.
        signs: +1 / -1 per joint name (default +1): which way the joint's angle grows.
        on_sample: called after each sample with (ticks, low, high), each (n,) int64.

    Raises :class:`CalibrationError` if a joint hardly moved, crossed the encoder's wrap point,
    or the gripper was not closed at the start.
    """
    if duration_s is None and stop is None:
        raise ValueError("record_calibration needs duration_s, stop, or both")
    signs = dict(signs or {})
    unknown = set(signs) - set(arm.names)
    if unknown:
        raise ValueError(f"signs for unknown joints {sorted(unknown)}; joints are {arm.names}")
    arm.set_torque(False)
    reference = arm.read_present_ticks()
    low, high, previous = reference.copy(), reference.copy(), reference.copy()
    wrapped = np.zeros(len(arm.ids), bool)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while not (stop is not None and stop.is_set()):
        if deadline is not None and time.monotonic() >= deadline:
            break
        ticks = arm.read_present_ticks()
        # Three quarters of a turn between two samples is the reading wrapping, not a hand.
        wrapped |= np.abs(ticks - previous) > 3 * TICKS_PER_TURN // 4
        np.minimum(low, ticks, out=low)
        np.maximum(high, ticks, out=high)
        previous = ticks
        if on_sample is not None:
            on_sample(ticks, low, high)
        if stop is not None:
            stop.wait(period_s)
        else:
            time.sleep(period_s)

    names = arm.names
    problems = [f"{names[i]!r} crossed the encoder's wrap point (4095 -> 0); turn its horn or set "
                "the servo's homing offset so the range lies inside 0..4095"
                for i in np.flatnonzero(wrapped)]
    problems += [f"{names[i]!r} moved only {high[i] - low[i]} ticks" for i in range(len(names))
                 if not wrapped[i] and high[i] - low[i] < MIN_RANGE_TICKS]
    gripper = None
    if GRIPPER in names and not problems:
        i = names.index(GRIPPER)
        span = high[i] - low[i]
        if reference[i] - low[i] <= GRIPPER_END_FRACTION * span:
            gripper = GripperRange(open_ticks=int(high[i]), closed_ticks=int(low[i]))
        elif high[i] - reference[i] <= GRIPPER_END_FRACTION * span:
            gripper = GripperRange(open_ticks=int(low[i]), closed_ticks=int(high[i]))
        else:
            problems.append(f"{GRIPPER!r} was not closed at the start (its first reading "
                            f"{reference[i]} is mid-way in {low[i]}..{high[i]})")
    if problems:
        raise CalibrationError(
            "calibration failed: " + "; ".join(problems) + f". Start in the reference posture "
            f"({REFERENCE_POSTURE}), then move every joint through its full range.")
    joints = {name: JointCalibration(id=arm.ids[i], zero_ticks=int(reference[i]),
                                     sign=int(signs.get(name, 1)), min_ticks=int(low[i]),
                                     max_ticks=int(high[i]))
              for i, name in enumerate(names)}
    return Calibration(arm=arm_name, bus=bus, port=arm.port, joints=joints, gripper=gripper,
                       written_at=datetime.datetime.now(datetime.timezone.utc).isoformat())


def write_calibration(path: str | os.PathLike, calibration: Calibration) -> Path:
    """Writes `calibration` as JSON atomically: a reader sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(calibration.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)
    return path


# -- loading --------------------------------------------------------------------------------------


def load_calibration(
    path: str | os.PathLike,
    expected_motors: Mapping[str, int] | Sequence[str],
    *,
    arm: str | None = None,
    port: str | None = None,
) -> Calibration:
    """The validated calibration at `path`, its joints in the order of `expected_motors`.

    Args:
        expected_motors: the joints the caller drives: names, or names -> bus ids (then the
            file's ids must match).
        arm, port: only for the message that says how to make a calibration.

    Raises :class:`CalibrationError` (saying which command writes a good file) if the file is
    missing or unreadable, not format 1, lacks an expected joint or has others, has repeated or
    unexpected ids, a range with min >= max, or a zero outside its range.
    """
    path = Path(path)
    expected = dict(expected_motors) if isinstance(expected_motors, Mapping) else \
        {name: None for name in expected_motors}

    def fail(reason: str) -> CalibrationError:
        return CalibrationError(f"no valid calibration at {str(path)!r}: {reason}. Calibrate the "
                                f"arm first: {calibrate_command(arm, port, path)}")

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise fail("the file does not exist") from None
    except RecursionError:
        raise fail("the file cannot be read as JSON (nested too deeply)") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:  # JSONDecodeError, an over-long integer
        raise fail(f"the file cannot be read as JSON ({str(error)[:200]})") from None
    if not isinstance(data, dict) or type(data.get("format")) is not int or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise fail(f"expected format {FORMAT}, found {found!r}")
    if arm is not None and data.get("arm") not in (arm, *_SAME_MODEL.get(arm, ())):
        raise fail(f"it is a calibration of {data.get('arm')!r}, not {arm!r}")
    motors = data.get("motors")
    if not isinstance(motors, dict):
        raise fail("it has no 'motors' table")
    missing = [name for name in expected if name not in motors]
    extra = [name for name in motors if name not in expected]
    if missing or extra:
        raise fail(f"its joints {list(motors)} are not the expected {list(expected)} (missing "
                   f"{missing}, unexpected {extra}): a calibration of another arm?")
    joints: dict[str, JointCalibration] = {}
    for name in expected:
        entry = motors[name]
        try:
            joint = JointCalibration(**{field: entry[field] for field in
                                        ("id", "zero_ticks", "sign", "min_ticks", "max_ticks")})
        except (TypeError, KeyError) as error:
            raise fail(f"joint {name!r} is incomplete ({error!r})") from error
        if not all(isinstance(v, int) and not isinstance(v, bool)
                   for v in dataclasses.astuple(joint)):
            raise fail(f"joint {name!r} has non-integer values: {entry}")
        if not all(0 <= v < TICKS_PER_TURN for v in (joint.zero_ticks, joint.min_ticks, joint.max_ticks)):
            raise fail(f"joint {name!r} has ticks outside one turn 0..{TICKS_PER_TURN - 1}: {entry}")
        if not 0 <= joint.id <= 252:
            raise fail(f"joint {name!r} has bus id {joint.id}, not 0..252")
        if joint.sign not in (1, -1):
            raise fail(f"joint {name!r} has sign {joint.sign}, not +1 or -1")
        if not joint.min_ticks < joint.max_ticks:
            raise fail(f"joint {name!r} has min_ticks {joint.min_ticks} >= max_ticks "
                       f"{joint.max_ticks}")
        if not joint.min_ticks <= joint.zero_ticks <= joint.max_ticks:
            raise fail(f"joint {name!r} has zero_ticks {joint.zero_ticks} outside its range "
                       f"{joint.min_ticks}..{joint.max_ticks}")
        if expected[name] is not None and joint.id != expected[name]:
            raise fail(f"joint {name!r} has id {joint.id}, expected {expected[name]}")
        joints[name] = joint
    ids = [joint.id for joint in joints.values()]
    if len(set(ids)) != len(ids):
        raise fail(f"servo ids repeat: {ids}")
    gripper = None
    if GRIPPER in joints:
        entry = data.get("gripper")
        joint = joints[GRIPPER]
        ends = {joint.min_ticks, joint.max_ticks}
        if (not isinstance(entry, dict)
                or not all(type(entry.get(k)) is int for k in ("open_ticks", "closed_ticks"))
                or {entry.get("open_ticks"), entry.get("closed_ticks")} != ends):
            raise fail(f"its 'gripper' entry {entry} does not give open_ticks and closed_ticks as "
                       f"the ends of the {GRIPPER!r} range {joint.min_ticks}..{joint.max_ticks}")
        gripper = GripperRange(int(entry["open_ticks"]), int(entry["closed_ticks"]))
    return Calibration(arm=str(data.get("arm", "")), bus=str(data.get("bus", "")),
                       port=str(data.get("port", "")), joints=joints, gripper=gripper,
                       written_at=str(data.get("written_at", "")))


def open_calibrated_arm(
    bus: str,
    port: str,
    calibration_path: str | os.PathLike,
    expected_motors: Mapping[str, int] | Sequence[str],
    *,
    arm: str | None = None,
    baudrate: int = 1_000_000,
    timeout_ms: float | None = None,
    retries: int = 2,
) -> ServoArm:
    """An opened driver whose joints carry the calibration at `calibration_path`.

    Refuses (:class:`CalibrationError`) a missing or invalid file, or one made for another bus.
    The driver's limits are the calibrated ranges (narrowed to the servos' own limits at open).
    `arm` ("so101", "koch" ...) only completes the calibration command in the message. For the
    gripper's open / closed ends, :func:`load_calibration` the same file.
    """
    if bus not in BUSES:
        raise ValueError(f"unknown bus {bus!r}; known: {', '.join(BUSES)}")
    if arm is None:
        candidates = [name for name, spec in ARMS.items() if spec.bus == bus]
        arm = candidates[0] if len(candidates) == 1 else None
    calibration = load_calibration(calibration_path, expected_motors, arm=arm, port=port)
    if calibration.bus != bus:
        raise CalibrationError(
            f"the calibration at {str(calibration_path)!r} is for a {calibration.bus!r} bus, not "
            f"{bus!r}. Calibrate this arm: {calibrate_command(arm, port, calibration_path)}")
    driver = make_arm(bus, port, calibration.motors, baudrate=baudrate, timeout_ms=timeout_ms,
                      retries=retries)
    return driver.open()
