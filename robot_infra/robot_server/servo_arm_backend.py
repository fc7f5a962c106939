"""A low-cost follower arm behind the robot server: SO-100 / SO-101 (Feetech STS3215 servos) or
Koch v1.1 (Dynamixel X-series), joint position control with tool-pose targets through inverse
kinematics on the arm's MuJoCo model.

A control thread at ``control_hz``:

1. reads every joint (one sync read) and computes the tool pose by forward kinematics on the
   arm's model (:mod:`sim_envs.kinematics`), its velocity by differencing, and the gripper's
   closure from the gripper joint between its calibrated open and closed angles;
2. turns the pose target into joint goals: the target is first moved to within the impedance's
   ``translational_clip`` of the tool (as the MuJoCo and Franka backends do), then one IK step
   of mink (joint limits, at most ``max_joint_velocity / control_hz`` per joint per tick) gives
   the goals, which are clipped to the intersection of the model's and the calibration's joint
   limits and written in one sync write together with the gripper's goal.

State fields a low-cost arm lacks: there is no force/torque sensor, so ``tcp_force`` and
``tcp_torque`` are zeros (documented in ``describe()``); an experiment on these arms leaves them
out of ``env.state_fields``. ``q`` and ``dq`` have 5 entries (the arm joints), not 7.

Errors: a bus failure (timeout, corrupt reply, a servo's error flags: overload, overheat,
voltage) in the control thread puts ``bus: <message>`` into ``errors``; the arm then gets no new
goals (the servos hold the last one) and pose commands are refused until ``clear_errors()``,
which first checks the bus answers again. A dropped serial link therefore surfaces as a clear
error at the next command, never as a hang.

Impedance: a position-servo arm has no Cartesian impedance; ``translational_clip`` bounds the
waypoint as above, the other parameters are validated and stored only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
from dm_robotics.transformations import transformations as tr

from robot_infra.robot_server.backend import (
    DEFAULT_IMPEDANCE,
    RobotBackend,
    RobotFault,
    check_can_move,
    clip_toward,
    validate_impedance,
)
from robot_infra.servo_bus import ServoArm, ServoBusError
from serl_launcher import conventions

log = logging.getLogger(__name__)


class ServoArmBackend(RobotBackend):
    """See the module docstring.

    Args:
        arm: the opened bus driver (:class:`~robot_infra.feetech.driver.FeetechArm` or
            :class:`~robot_infra.dynamixel.driver.DynamixelArm`), whose motors include every joint
            of `kinematics` and the `gripper` motor; its angles are the model's.
        kinematics: the arm's :class:`~sim_envs.kinematics.ArmKinematics`.
        gripper: the gripper motor's name.
        gripper_open, gripper_closed: the gripper motor's angles (rad, driver frame) fully open /
            closed.
        joint_offsets: (n,) the model's joint angles where the driver reads zero: model angle =
            driver angle + offset. A calibration's zero is the reference posture (the middle of
            each joint's range, robot_infra.calibration), so :func:`make_follower` passes the
            middle of the model's ranges; None: zeros (the driver's zeros are the model's).
        home_qpos: posture of a joint reset; default: the kinematics' home.
        control_hz: control-loop rate (reads, IK, writes).
        joint_reset_speed: rad/s of the joint furthest from its goal during a joint reset.
        reset_slack_s: a joint reset that is not there after 3x its planned duration plus this
            many seconds stops where the arm is, with an error (a blocked joint).
        name: the arm's name in /health ("so101", "koch", ...).
        start: start the control thread now (else call ``start()``).
    """

    def __init__(
        self,
        arm: ServoArm,
        kinematics: Any,
        gripper: str = "gripper",
        gripper_open: float = 0.0,
        gripper_closed: float = 1.0,
        joint_offsets: np.ndarray | None = None,
        home_qpos: tuple[float, ...] | None = None,
        control_hz: float = 30.0,
        joint_reset_speed: float = 0.5,
        reset_slack_s: float = 10.0,
        name: str = "servo_arm",
        start: bool = True,
    ):
        missing = [j for j in (*kinematics.joints, gripper) if j not in arm.names]
        if missing:
            raise ValueError(f"the arm's motors {arm.names} lack {missing} (joints of the kinematic model and the gripper)")
        if control_hz <= 0 or joint_reset_speed <= 0:
            raise ValueError("control_hz and joint_reset_speed must be positive")
        if gripper_open == gripper_closed:
            raise ValueError("gripper_open and gripper_closed must differ")
        self.arm, self.kinematics, self.name = arm, kinematics, name
        self.n_joints = len(kinematics.joints)
        self._arm_index = np.array([arm.names.index(j) for j in kinematics.joints])
        self._gripper_index = arm.names.index(gripper)
        self._offsets = np.zeros(self.n_joints) if joint_offsets is None else np.asarray(joint_offsets, np.float64)
        if self._offsets.shape != (self.n_joints,):
            raise ValueError(f"joint_offsets needs {self.n_joints} angles, got {self._offsets.shape}")
        self.gripper_open, self.gripper_closed = float(gripper_open), float(gripper_closed)
        self.control_hz, self.joint_reset_speed = float(control_hz), float(joint_reset_speed)
        self.reset_slack_s = float(reset_slack_s)
        self.home_qpos = np.asarray(kinematics.home_qpos if home_qpos is None else home_qpos, dtype=np.float64)
        if self.home_qpos.shape != (self.n_joints,):
            raise ValueError(f"home_qpos needs {self.n_joints} joint angles, got {self.home_qpos.shape}")
        # Joint goals stay inside both the model's ranges and the servos' calibrated limits.
        self._q_low = np.maximum(kinematics.q_low, arm.lower[self._arm_index] + self._offsets)
        self._q_high = np.minimum(kinematics.q_high, arm.upper[self._arm_index] + self._offsets)
        if np.any(self._q_low >= self._q_high):
            raise ValueError(f"the model's joint ranges and the calibration's limits do not overlap: "
                             f"{self._q_low} vs {self._q_high}")
        if np.any(self.home_qpos < self._q_low) or np.any(self.home_qpos > self._q_high):
            raise ValueError(f"home_qpos {self.home_qpos.tolist()} is outside the joint limits "
                             f"{self._q_low.tolist()}..{self._q_high.tolist()}")

        self._lock = threading.Lock()  # the state below
        self._bus = threading.Lock()  # one transaction at a time on the half-duplex serial line
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._impedance = dict(DEFAULT_IMPEDANCE)
        self._errors: list[str] = []
        self._gripper_command = "open"
        self._target: tuple[np.ndarray, np.ndarray] | None = None  # (pos, quat xyzw)
        self._reset_motion: dict[str, Any] | None = None  # the joint reset in progress
        self._previous: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None  # t, q, pos, quat
        self._snapshot: dict[str, Any] = {}
        angles = self._read_and_snapshot(time.monotonic())
        self._hold_q = angles[self._arm_index] + self._offsets
        self.arm.write_goal_positions(self._goal_angles(angles, self._hold_q))  # hold, then take over
        self.arm.set_torque(True)
        if start:
            self.start()

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-control", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stops the control loop and closes the port. Torque stays on: the servos hold the last
        goal instead of letting the arm fall (turn it off by hand, or with the calibration tool)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._lock:
            self._end_reset("was cut short: the backend closed")
            if not any(e.startswith("closed:") for e in self._errors):
                self._errors.append("closed: the backend is shut down")
            self._update_snapshot()
        with self._bus:
            self.arm.close()

    def _run(self) -> None:
        period = 1.0 / self.control_hz
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self._tick()
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -5 * period:
                next_tick = time.monotonic()

    def _tick(self) -> None:
        # Whatever fails (the bus, the SDK, the IK's QP), the arm stops getting goals and the
        # reason is in `errors`: the control thread never dies silently.
        now = time.monotonic()
        try:
            angles = self._read_and_snapshot(now)
        except Exception as error:
            self._fault(_reason(error))
            return
        try:
            with self._lock:
                goals = self._goals(angles, now)
        except Exception as error:
            self._fault(_reason(error))
            return
        if goals is None:
            return
        try:
            with self._bus:
                with self._lock:
                    faulted = bool(self._errors)  # since the goals were computed: write nothing
                if not faulted:
                    self.arm.write_goal_positions(goals)
        except Exception as error:
            self._fault(_reason(error))

    def _fault(self, message: str) -> None:
        with self._lock:
            if message not in self._errors:
                log.error("%s: %s", self.name, message)
                self._errors.append(message)
            self._end_reset(f"stopped by an error ({message})")
            self._update_snapshot()

    def _end_reset(self, outcome: str, hold: np.ndarray | None = None) -> None:
        """Ends the joint reset in progress, if any (lock held): its caller wakes with `outcome`,
        and the arm holds `hold` (default: where it is now), never the posture before the reset."""
        motion, self._reset_motion = self._reset_motion, None
        if motion is None:
            return
        self._target = None
        self._hold_q = np.asarray(self._snapshot["q"], dtype=np.float64) if hold is None else hold
        motion["outcome"] = outcome
        motion["done"].set()

    def _goals(self, angles: np.ndarray, now: float) -> np.ndarray | None:
        """Every motor's goal angle for this tick (lock held), or None: write nothing."""
        if self._errors:
            return None
        q = angles[self._arm_index] + self._offsets
        if self._reset_motion is not None:
            motion = self._reset_motion
            progress = min(1.0, (now - motion["t0"]) / motion["duration"])
            s = progress * progress * (3.0 - 2.0 * progress)
            q_goal = motion["q0"] + (motion["q1"] - motion["q0"]) * s
            if progress >= 1.0 and np.max(np.abs(q - motion["q1"])) < 0.03:
                self._end_reset("arrived", hold=motion["q1"])
        elif self._target is not None:
            pos, quat = self._target
            tcp = np.asarray(self._snapshot["tcp_pose"][:3])
            waypoint = clip_toward(tcp, pos, self._impedance["translational_clip"])
            q_goal = self.kinematics.ik(q, waypoint, quat, dt=1.0 / self.control_hz)
        else:
            q_goal = self._hold_q  # no target: hold the posture of the last reset or clear
        return self._goal_angles(angles, q_goal)

    def _goal_angles(self, angles: np.ndarray, q_goal: np.ndarray) -> np.ndarray:
        goals = angles.copy()
        goals[self._arm_index] = np.clip(q_goal, self._q_low, self._q_high) - self._offsets
        goals[self._gripper_index] = self.gripper_closed if self._gripper_command == "close" else self.gripper_open
        return goals

    def _read_and_snapshot(self, now: float) -> np.ndarray:
        with self._bus:
            angles = self.arm.read_positions()
        q = angles[self._arm_index] + self._offsets
        pos, quat = self.kinematics.fk(q)
        vel = np.zeros(6)
        dq = np.zeros(self.n_joints)
        with self._lock:
            if self._previous is not None and now > self._previous[0]:
                t0, q0, p0, quat0 = self._previous
                dt = now - t0
                dq = (q - q0) / dt
                vel[:3] = (pos - p0) / dt
                vel[3:] = _rotvec_between(quat0, quat) / dt
            self._previous = (now, q, pos, quat)
            grip = (angles[self._gripper_index] - self.gripper_open) / (self.gripper_closed - self.gripper_open)
            target = self._target
            self._snapshot = {
                "tcp_pose": [*pos.tolist(), *quat.tolist()],
                "tcp_vel": vel.tolist(),
                "tcp_force": [0.0, 0.0, 0.0],
                "tcp_torque": [0.0, 0.0, 0.0],
                "q": q.tolist(),
                "dq": dq.tolist(),
                "gripper_pose": float(np.clip(grip, 0.0, 1.0)),
                "gripper_command": self._gripper_command,
                "target_pose": [*pos.tolist(), *quat.tolist()] if target is None
                else [*target[0].tolist(), *target[1].tolist()],
                "errors": list(self._errors),
                "time": now,
            }
        return angles

    def _update_snapshot(self) -> None:
        """The commanded fields of the snapshot made current (lock held)."""
        target = self._target
        pose = self._snapshot["tcp_pose"]
        self._snapshot = {
            **self._snapshot,
            "gripper_command": self._gripper_command,
            "target_pose": list(pose) if target is None else [*target[0].tolist(), *target[1].tolist()],
            "errors": list(self._errors),
        }

    # ------------------------------------------------------------------ RobotBackend

    def state(self) -> dict[str, Any]:
        with self._lock:
                return dict(self._snapshot)

    def set_pose_target(self, pose: np.ndarray) -> None:
        with self._lock:
            self._check_can_move()
            self._target = (np.array(pose[:3], dtype=np.float64), np.array(pose[3:], dtype=np.float64))
            self._update_snapshot()

    def set_gripper(self, command: str) -> None:
        with self._lock:
            self._gripper_command = command
            self._update_snapshot()

    def get_impedance(self) -> dict[str, float]:
        with self._lock:
            return dict(self._impedance)

    def set_impedance(self, params: dict[str, float]) -> dict[str, float]:
        params = validate_impedance(params, self._impedance)
        with self._lock:
            self._impedance = params
            return dict(params)

    def joint_reset(self, qpos: np.ndarray | None = None, scene: bool = False) -> None:
        goal = self.home_qpos if qpos is None else np.asarray(qpos, dtype=np.float64)
        if self._thread is None:
            raise RobotFault(f"the {self.name} control thread is not running (start())")
        with self._lock:
            self._check_can_move()
            start = np.asarray(self._snapshot["q"], dtype=np.float64)
            duration = max(0.1, float(np.max(np.abs(goal - start))) / self.joint_reset_speed)
            motion = {"t0": time.monotonic(), "duration": duration, "q0": start, "q1": goal,
                      "done": threading.Event(), "outcome": None}
            self._reset_motion = motion
        allowed = 3.0 * duration + self.reset_slack_s
        if not motion["done"].wait(timeout=allowed):
            message = (f"joint reset: not at {np.round(goal, 3).tolist()} after {allowed:.0f} s "
                       f"(a joint blocked?); holding where the arm is")
            with self._lock:
                ours = self._reset_motion is motion
                if ours:  # still ours: stop it, fault
                    self._errors.append(message)
                    self._end_reset("timed out")
                    self._update_snapshot()
            if ours:
                self._hold_here()
        if motion["outcome"] != "arrived":
            raise RobotFault(f"joint reset {motion['outcome'] or 'timed out'}; errors: {self.state()['errors'] or 'none'}")

    def clear_errors(self) -> list[str]:
        """Checks the bus answers, makes the servos hold where they are with torque on (a servo
        that lost power comes back with torque off), then clears the errors."""
        if self._stop.is_set():
            raise RobotFault(f"the {self.name} backend is shut down")
        try:
            with self._bus:
                angles = self.arm.read_positions()  # the bus answers again, or the errors stay
                self.arm.write_goal_positions(angles)  # hold here first: no jump when torque comes on
                self.arm.set_torque(True)
        except Exception as error:
            with self._lock:
                errors = list(self._errors)
            raise RobotFault(f"the {self.name} bus still fails ({error}); errors kept: {errors}") from error
        with self._lock:
            self._end_reset("cancelled by clear_errors")
            cleared, self._errors = self._errors, []
            self._target = None  # hold where the arm is
            self._hold_q = angles[self._arm_index] + self._offsets
            self._update_snapshot()
            return cleared

    def _hold_here(self) -> None:
        """Best effort: every servo's goal becomes where it is, so a joint that was blocked does
        not jump to the last goal when it comes free."""
        try:
            with self._bus:
                self.arm.write_goal_positions(self.arm.read_positions())
        except Exception as error:  # the bus is failing too: the control loop reports it
            log.error("%s: could not hold the arm where it is: %s", self.name, error)

    def tool_position(self, qpos: np.ndarray) -> np.ndarray:
        return self.kinematics.fk(np.asarray(qpos, dtype=np.float64))[0]

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        return self._q_low.copy(), self._q_high.copy()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "port": self.arm.port,
            "joints": list(self.kinematics.joints),
            "control_hz": self.control_hz,
            "home_qpos": self.home_qpos.tolist(),
            "missing_sensors": ["tcp_force", "tcp_torque"],  # reported as zeros
        }

    def _check_can_move(self) -> None:
        check_can_move(self._errors, self._reset_motion is not None)


def _reason(error: BaseException) -> str:
    """An error's line in ``errors``: "bus: ..." for the servo bus, "control: ..." otherwise."""
    if isinstance(error, ServoBusError):
        return f"bus: {error}"
    return f"control: {type(error).__name__}: {error}"


def _rotvec_between(quat0_xyzw: np.ndarray, quat1_xyzw: np.ndarray) -> np.ndarray:
    """The rotation vector (base frame) taking orientation 0 to orientation 1."""
    q0, q1 = conventions.xyzw_to_wxyz(quat0_xyzw), conventions.xyzw_to_wxyz(quat1_xyzw)
    relative = tr.quat_mul(q1, tr.quat_inv(q0))
    if relative[0] < 0:
        relative = -relative
    norm = float(np.linalg.norm(relative[1:]))
    if norm < 1e-12:
        return np.zeros(3)
    angle = 2.0 * np.arctan2(norm, relative[0])
    return relative[1:] / norm * angle


def make_follower(kind: str, port: str, calibration: str, timeout_ms: float | None = None,
                  **kwargs: Any) -> ServoArmBackend:
    """The follower backend of arm `kind` ("so101", "so100": Feetech; "koch": Dynamixel) on serial
    `port`, driven with the calibration file at `calibration` (refused without a valid one:
    :class:`~robot_infra.calibration.CalibrationError` names the command that makes it).
    `timeout_ms`: the bus's reply timeout (None: the SDK's own). Other keyword arguments go to
    :class:`ServoArmBackend`."""
    from robot_infra.calibration import (
        ARMS,
        CalibrationError,
        calibrate_command,
        load_calibration,
        open_calibrated_arm,
    )
    from sim_envs.kinematics import arm_kinematics

    if kind not in ARMS:
        raise ValueError(f"unknown follower arm {kind!r}; known: {sorted(ARMS)}")
    if not port:
        raise ValueError(f"the {kind} follower needs its serial port (--serial_port /dev/ttyACM0)")
    if not calibration:
        raise ValueError(f"the {kind} follower needs its calibration file (--calibration); make one with: "
                         f"{calibrate_command(kind, port)}")
    spec = ARMS[kind]
    calib = load_calibration(calibration, spec.motors, arm=kind, port=port)
    kinematics = arm_kinematics(kind)
    arm = open_calibrated_arm(spec.bus, port, calibration, spec.motors, arm=kind, timeout_ms=timeout_ms)
    try:
        return ServoArmBackend(
            arm, kinematics, gripper_open=calib.gripper_angle(0.0), gripper_closed=calib.gripper_angle(1.0),
            joint_offsets=0.5 * (kinematics.q_low + kinematics.q_high), name=kind, **kwargs,
        )
    except ValueError as error:  # the calibrated ranges do not fit the model (too narrow, shifted)
        arm.close()
        raise CalibrationError(f"the calibration at {calibration!r} does not fit the {kind} model: {error}. "
                               f"Calibrate again, moving every joint through its whole range: "
                               f"{calibrate_command(kind, port, calibration)}") from None
    except BaseException:
        arm.close()
        raise
