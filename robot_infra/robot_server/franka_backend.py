"""A Franka arm (Panda or FR3) with its hand, through franky (``pip install franky-control``).

franky wraps libfranka and plans jerk-limited trajectories in its own real-time thread, so a
pose target from the server becomes an asynchronous Cartesian motion that a newer target
pre-empts; no ROS is involved. The library is imported when a backend is constructed, never at
import time, so everything else here works without it.

Needs, as franky itself does: a real-time kernel, the Franka Control Interface enabled in the
arm's web interface, and the franky wheel built for the arm's libfranka version.

How each piece maps (this file is not exercised by the project's tests; no arm is attached):

- pose targets: ``robot.move(CartesianMotion(Affine(position, quaternion xyzw)),
  asynchronous=True)`` at ``dynamics_factor`` of the arm's velocity/acceleration/jerk limits;
- state: ``current_cartesian_state`` (end-effector pose and twist), ``state.q`` / ``dq``, and
  ``state.O_F_ext_hat_K`` (external wrench, base frame) for ``tcp_force`` / ``tcp_torque``;
- impedance: libfranka's internal Cartesian impedance takes stiffness only (the firmware picks
  the damping), set with ``set_cartesian_impedance`` while no motion runs, so a change stops the
  current motion first; damping, nullspace stiffness and the clips are validated and stored;
- joint reset: a blocking ``JointMotion`` to the home posture;
- clear errors: ``recover_from_errors()``;
- gripper: ``Gripper.grasp_async`` (close, with ``gripper_force``) and ``open_async``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from robot_infra.robot_server.backend import (
    DEFAULT_IMPEDANCE,
    NotSupported,
    RobotBackend,
    RobotFault,
    validate_impedance,
)

INSTALL_HINT = (
    "FrankaBackend needs the franky-control package (pip install franky-control==2.0.0; it "
    "ships libfranka 0.21 wheels, see franky's README for other firmware versions and for the "
    "real-time kernel it needs)"
)

# A folded, wrist-down posture within the joint limits of both Panda and FR3.
DEFAULT_HOME_QPOS = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
# The Panda's joint position limits (rad, Franka's datasheet); a joint reset outside them is
# refused by the server before libfranka sees it. FR3's ranges differ on some joints (joint 6
# reaches further); libfranka's own check stays in force behind this one either way.
JOINT_LIMITS = (
    (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
    (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
)


def _import_franky():
    try:
        import franky
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT}: {error}") from error
    return franky


class FrankaBackend(RobotBackend):
    """See the module docstring.

    Args:
        robot_ip: the arm's FCI address (the control box's, not the web interface's login).
        home_qpos: posture of a joint reset.
        dynamics_factor: fraction of the arm's velocity, acceleration and jerk limits (0, 1].
        gripper: whether a Franka Hand is attached.
        gripper_speed: m/s; gripper_force: N when grasping.
    """

    name = "franka"

    def __init__(
        self,
        robot_ip: str,
        home_qpos: tuple[float, ...] = DEFAULT_HOME_QPOS,
        dynamics_factor: float = 0.1,
        gripper: bool = True,
        gripper_speed: float = 0.1,
        gripper_force: float = 20.0,
    ):
        if not robot_ip:
            raise ValueError("FrankaBackend needs the arm's address (--robot_ip)")
        if not 0.0 < dynamics_factor <= 1.0:
            raise ValueError(f"dynamics_factor must be in (0, 1], got {dynamics_factor}")
        self._franky = franky = _import_franky()
        self.home_qpos = np.asarray(home_qpos, dtype=np.float64)
        self.robot = franky.Robot(robot_ip)
        self.robot.relative_dynamics_factor = dynamics_factor
        self.robot.recover_from_errors()
        self.gripper = franky.Gripper(robot_ip) if gripper else None
        self._max_width = float(self.gripper.max_width) if self.gripper is not None else 0.0
        self._gripper_speed, self._gripper_force = gripper_speed, gripper_force
        self._gripper_command = "open"
        self._target: np.ndarray | None = None
        self._errors: list[str] = []
        self._impedance = dict(DEFAULT_IMPEDANCE)
        self._lock = threading.Lock()  # one command at a time reaches libfranka
        self.robot_ip = robot_ip

    def state(self) -> dict[str, Any]:
        with self._lock:
            cartesian = self.robot.current_cartesian_state
            pose = cartesian.pose.end_effector_pose
            twist = cartesian.velocity.end_effector_twist
            raw = self.robot.state
            wrench = np.asarray(raw.O_F_ext_hat_K, dtype=np.float64)
            position = np.asarray(pose.translation, dtype=np.float64)
            quat = np.asarray(pose.quaternion, dtype=np.float64)  # franky: (x, y, z, w)
            width = float(self.gripper.width) if self.gripper is not None else self._max_width
            errors = list(self._errors)
            if self.robot.has_errors:
                errors.append(str(raw.current_errors))
            target = self._target if self._target is not None else np.concatenate([position, quat])
            return {
                "tcp_pose": [*position.tolist(), *quat.tolist()],
                "tcp_vel": [*np.asarray(twist.linear).tolist(), *np.asarray(twist.angular).tolist()],
                "tcp_force": wrench[:3].tolist(),
                "tcp_torque": wrench[3:].tolist(),
                "q": np.asarray(raw.q, dtype=np.float64).tolist(),
                "dq": np.asarray(raw.dq, dtype=np.float64).tolist(),
                "gripper_pose": float(np.clip(1.0 - width / self._max_width, 0.0, 1.0)) if self._max_width else 0.0,
                "gripper_command": self._gripper_command,
                "target_pose": [float(v) for v in target],
                "errors": errors,
                "time": float(raw.time.to_sec()) if hasattr(raw, "time") else 0.0,
            }

    def set_pose_target(self, pose: np.ndarray) -> None:
        franky = self._franky
        with self._lock:
            if self._errors or self.robot.has_errors:
                raise RobotFault(f"the arm is in error ({self._errors}); POST /clear_errors first")
            motion = franky.CartesianMotion(franky.Affine(pose[:3].tolist(), pose[3:].tolist()))
            try:
                # Raises the exception an earlier asynchronous motion stored (a reflex, a limit).
                self.robot.move(motion, asynchronous=True)
            except Exception as error:
                self._errors.append(f"{type(error).__name__}: {error}")
                raise RobotFault(f"the arm refused the motion: {error}; POST /clear_errors") from error
            self._target = np.asarray(pose, dtype=np.float64).copy()

    def set_gripper(self, command: str) -> None:
        if self.gripper is None:
            raise NotSupported("no gripper attached (FrankaBackend(gripper=False))")
        with self._lock:
            if command == "close":
                self.gripper.grasp_async(0.0, self._gripper_speed, self._gripper_force, epsilon_outer=1.0)
            else:
                self.gripper.open_async(self._gripper_speed)
            self._gripper_command = command

    def get_impedance(self) -> dict[str, float]:
        with self._lock:
            return dict(self._impedance)

    def set_impedance(self, params: dict[str, float]) -> dict[str, float]:
        params = validate_impedance(params, self._impedance)
        with self._lock:
            self._stop_motion()
            k_t, k_r = params["translational_stiffness"], params["rotational_stiffness"]
            self.robot.set_cartesian_impedance([k_t, k_t, k_t, k_r, k_r, k_r])
            self._impedance = params
            return dict(params)

    def joint_reset(self, qpos: np.ndarray | None = None, scene: bool = False) -> None:
        if scene:
            raise NotSupported("a real arm cannot put the task's objects back (scene=true); a person does")
        goal = self.home_qpos if qpos is None else np.asarray(qpos, dtype=np.float64)
        with self._lock:
            if self._errors or self.robot.has_errors:
                raise RobotFault("the arm is in error; POST /clear_errors before a joint reset")
            self._stop_motion()
            try:
                self.robot.move(self._franky.JointMotion(goal.tolist()))
            except Exception as error:
                self._errors.append(f"{type(error).__name__}: {error}")
                raise RobotFault(f"joint reset failed: {error}") from error
            self._target = None

    def clear_errors(self) -> list[str]:
        with self._lock:
            cleared = list(self._errors)
            if self.robot.has_errors:
                cleared.append(str(self.robot.state.current_errors))
            self.robot.recover_from_errors()
            self._errors = []
            self._target = None
            return cleared

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(JOINT_LIMITS[0]), np.array(JOINT_LIMITS[1])

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "robot_ip": self.robot_ip, "gripper": self.gripper is not None}

    def _stop_motion(self) -> None:
        # libfranka accepts configuration commands (impedance) and new control modes (a joint
        # motion after Cartesian ones) only while no motion runs.
        if self.robot.is_in_control:
            self.robot.move(self._franky.CartesianStopMotion())  # blocks until the arm is still
        try:
            self.robot.join_motion()  # raises what an asynchronous motion stored, if anything
        except Exception as error:
            self._errors.append(f"{type(error).__name__}: {error}")
