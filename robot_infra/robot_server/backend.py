"""The interface every robot backend implements, the impedance parameters and the errors the
server turns into HTTP status codes.

A backend owns one arm and its gripper. It is used from several server threads at once, so its
methods must be thread-safe. Poses are position (metres, base frame) plus a unit quaternion
ordered (x, y, z, w), as everywhere in the project (:mod:`serl_launcher.conventions`).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

GRIPPER_COMMANDS = ("open", "close")


class RequestError(ValueError):
    """The request is malformed or a value is out of range (HTTP 400)."""


class RobotFault(RuntimeError):
    """The arm cannot do it in its current state: an error (reflex) not yet cleared, a joint
    reset in progress (HTTP 409). Clear the error (POST /clear_errors) and try again."""


class NotSupported(RuntimeError):
    """This backend has no such capability (HTTP 501)."""


# Cartesian impedance parameters, the names the original controller exposed in its own words:
# name -> (low, high, unit). Both bounds are inclusive.
IMPEDANCE_LIMITS: dict[str, tuple[float, float, str]] = {
    "translational_stiffness": (0.0, 5000.0, "N/m"),
    "translational_damping": (0.0, 300.0, "N s/m"),
    "rotational_stiffness": (0.0, 300.0, "N m/rad"),
    "rotational_damping": (0.0, 50.0, "N m s/rad"),
    "nullspace_stiffness": (0.0, 100.0, "N m/rad"),
    # Largest distance between the equilibrium the controller pulls towards and where the tool
    # is: bounds the force the arm applies in contact (stiffness * clip).
    "translational_clip": (0.001, 0.2, "m"),
    "rotational_clip": (0.005, 1.0, "rad"),
}

# Compliant defaults in the range the original tasks used (2000 N/m, ~critically damped).
DEFAULT_IMPEDANCE: dict[str, float] = {
    "translational_stiffness": 2000.0,
    "translational_damping": 89.0,
    "rotational_stiffness": 150.0,
    "rotational_damping": 7.0,
    "nullspace_stiffness": 0.2,
    "translational_clip": 0.02,
    "rotational_clip": 0.1,
}


def validate_impedance(update: Any, current: Mapping[str, float]) -> dict[str, float]:
    """`current` with the entries of `update` applied, after checking every one of them.

    Raises RequestError naming the parameter, its range and unit, and the bad value; nothing is
    applied when any entry is bad.
    """
    if not isinstance(update, Mapping):
        raise RequestError(f"impedance parameters must be a JSON object, got {type(update).__name__}")
    if not update:
        raise RequestError(f"no impedance parameters given; known: {sorted(IMPEDANCE_LIMITS)}")
    merged = dict(current)
    for name, value in update.items():
        if name not in IMPEDANCE_LIMITS:
            raise RequestError(f"unknown impedance parameter {name!r}; known: {sorted(IMPEDANCE_LIMITS)}")
        low, high, unit = IMPEDANCE_LIMITS[name]
        number = _as_float(value)
        if number is None or not low <= number <= high:
            raise RequestError(
                f"impedance parameter {name!r} must be a number in [{low:g}, {high:g}] {unit}, got {value!r}"
            )
        merged[name] = number
    return merged


def validate_pose(pose: Any, what: str = "pose") -> np.ndarray:
    """[x, y, z, qx, qy, qz, qw] -> (7,) float64 with a unit quaternion, or RequestError."""
    if not isinstance(pose, (list, tuple)) or len(pose) != 7:
        raise RequestError(f"{what} must be a list of 7 numbers [x, y, z, qx, qy, qz, qw], got {pose!r}")
    values = [_as_float(v) for v in pose]
    if any(v is None for v in values):
        raise RequestError(f"{what} must contain only finite numbers, got {pose!r}")
    out = np.array(values, dtype=np.float64)
    norm = float(np.linalg.norm(out[3:]))
    if not 0.9 <= norm <= 1.1:
        raise RequestError(f"{what} quaternion (x, y, z, w) must have unit norm, got norm {norm:.3f}")
    out[3:] /= norm
    return out


def validate_qpos(qpos: Any, n_joints: int) -> np.ndarray:
    if not isinstance(qpos, (list, tuple)) or len(qpos) != n_joints:
        raise RequestError(f"qpos must be a list of {n_joints} joint angles (rad), got {qpos!r}")
    values = [_as_float(v) for v in qpos]
    if any(v is None for v in values):
        raise RequestError(f"qpos must contain only finite numbers, got {qpos!r}")
    return np.array(values, dtype=np.float64)


def _as_float(value: Any) -> float | None:
    # bool is an int in Python; a JSON true is never a gain.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class RobotBackend(abc.ABC):
    """One arm with a gripper behind the robot server. Every method is called from server
    threads, concurrently; implementations lock what they share.

    ``state()`` returns a JSON-ready dict with these keys (all lists of floats unless noted):

    - ``tcp_pose`` (7): tool centre point, position + quaternion xyzw, base frame;
    - ``tcp_vel`` (6): linear (m/s) then angular (rad/s) velocity of the tool, base frame;
    - ``tcp_force`` (3), ``tcp_torque`` (3): external wrench on the hand (what the world does
      to the robot) in the base frame, torque about the tool centre point;
    - ``q``, ``dq`` (7): joint positions and velocities;
    - ``gripper_pose`` (float): 0 fully open .. 1 fully closed;
    - ``gripper_command`` (str): "open" or "close", the last command;
    - ``target_pose`` (7): the pose the arm is tracking;
    - ``errors`` (list of str): active errors; commands that move the arm are refused
      (RobotFault) until ``clear_errors()``;
    - ``time`` (float): the backend's clock, seconds.
    """

    name: str = "abstract"
    n_joints: int = 7

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """The latest state (see the class docstring)."""

    @abc.abstractmethod
    def set_pose_target(self, pose: np.ndarray) -> None:
        """Track the absolute tool pose (7,) [x, y, z, qx, qy, qz, qw]. RobotFault in error."""

    @abc.abstractmethod
    def set_gripper(self, command: str) -> None:
        """"open" or "close" (a binary gripper, as on the real hand)."""

    @abc.abstractmethod
    def get_impedance(self) -> dict[str, float]:
        """The current impedance parameters (all keys of IMPEDANCE_LIMITS)."""

    @abc.abstractmethod
    def set_impedance(self, params: dict[str, float]) -> dict[str, float]:
        """Applies already validated parameters (all keys); returns what is now in force."""

    @abc.abstractmethod
    def joint_reset(self, qpos: np.ndarray | None = None, scene: bool = False) -> None:
        """Moves the joints to `qpos` (default: the home posture) and returns when there.
        `scene`: also put the task's objects back (only a simulator can)."""

    @abc.abstractmethod
    def clear_errors(self) -> list[str]:
        """Recovers from errors; returns the errors that were cleared."""

    def close(self) -> None:  # noqa: B027 (optional: most backends hold nothing to release)
        """Releases the arm (stops threads, closes connections)."""

    def describe(self) -> dict[str, Any]:
        """Static facts for /health."""
        return {"backend": self.name}
