"""The interface every robot backend implements, the impedance parameters and the errors the
server turns into HTTP status codes.

A backend owns one arm and its gripper. It is used from several server threads at once, so its
methods must be thread-safe. Poses are position (metres, base frame) plus a unit quaternion
ordered (x, y, z, w), as everywhere in the project (:mod:`serl_launcher.conventions`).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from dm_robotics.transformations import transformations as tr

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
            raise RequestError(f"unknown impedance parameter {short_repr(name)}; known: {sorted(IMPEDANCE_LIMITS)}")
        low, high, unit = IMPEDANCE_LIMITS[name]
        number = _as_float(value)
        if number is None or not low <= number <= high:
            raise RequestError(
                f"impedance parameter {name!r} must be a number in [{low:g}, {high:g}] {unit}, got {short_repr(value)}"
            )
        merged[name] = number
    return merged


def validate_pose(pose: Any, what: str = "pose") -> np.ndarray:
    """[x, y, z, qx, qy, qz, qw] -> (7,) float64 with a unit quaternion, or RequestError."""
    if not isinstance(pose, (list, tuple)) or len(pose) != 7:
        raise RequestError(f"{what} must be a list of 7 numbers [x, y, z, qx, qy, qz, qw], got {short_repr(pose)}")
    values = [_as_float(v) for v in pose]
    if any(v is None for v in values):
        raise RequestError(f"{what} must contain only finite numbers, got {short_repr(pose)}")
    out = np.array(values, dtype=np.float64)
    norm = float(np.linalg.norm(out[3:]))
    if not 0.9 <= norm <= 1.1:
        raise RequestError(f"{what} quaternion (x, y, z, w) must have unit norm, got norm {norm:.3f}")
    out[3:] /= norm
    return out


def validate_qpos(
    qpos: Any, n_joints: int, limits: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """A list of `n_joints` finite angles (rad) inside `limits` (low, high), or RequestError
    naming the first joint outside them."""
    if not isinstance(qpos, (list, tuple)) or len(qpos) != n_joints:
        raise RequestError(f"qpos must be a list of {n_joints} joint angles (rad), got {short_repr(qpos)}")
    values = [_as_float(v) for v in qpos]
    if any(v is None for v in values):
        raise RequestError(f"qpos must contain only finite numbers, got {short_repr(qpos)}")
    out = np.array(values, dtype=np.float64)
    if limits is not None:
        low, high = limits
        for i in np.flatnonzero((out < low) | (out > high)):
            raise RequestError(
                f"qpos[{i}] = {out[i]:.4f} rad is outside joint {i}'s limits [{low[i]:.4f}, {high[i]:.4f}]"
            )
    return out


def _as_float(value: Any) -> float | None:
    # bool is an int in Python; a JSON true is never a gain.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # a JSON integer of hundreds of digits
        return None
    return value if math.isfinite(value) else None


def short_repr(value: Any, limit: int = 200) -> str:
    """repr(value), cut to `limit` characters (an error message must not echo a huge body)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


# A position further than this from the base (metres) is no pose on any arm: a client bug, refused.
MAX_PLAUSIBLE_REACH = 10.0


@dataclasses.dataclass(frozen=True)
class MotionLimits:
    """What a pose command may ask for, enforced by the server whatever the client computed.

    Applied to every POST /pose target, in this order:

    1. a step limit: a target further than `max_step` metres from both where the tool is and
       the target it tracks now is moved onto the line towards it, `max_step` from the nearer of
       the two (so an env's steps from the tool pass, and so do a reset's waypoints, each a small
       step from the previous one however far the tool lags); an orientation more than
       `max_rot_step` radians from the tool's is turned back to `max_rot_step` along the same
       rotation;
    2. the workspace box: the position is clamped into [`workspace_low`, `workspace_high`]
       (base frame, metres). The box wins: a target is always inside it, even when the tool
       itself is outside (after a joint reset elsewhere, or pushed there by hand), in which case
       the first command may be further than `max_step` from the tool.

    A target is clamped, not refused: the env's own commands are small steps inside its box, so
    a clamp means a client bug or a box that differs between the env and the server; each one is
    counted (GET /health) and named in the answer (``limited``). Positions further than
    :data:`MAX_PLAUSIBLE_REACH` from the base are refused (400): no arm reaches there.
    """

    workspace_low: tuple[float, float, float]
    workspace_high: tuple[float, float, float]
    max_step: float = 0.1
    max_rot_step: float = 0.5

    def __post_init__(self):
        low = np.asarray(self.workspace_low, dtype=np.float64)
        high = np.asarray(self.workspace_high, dtype=np.float64)
        if low.shape != (3,) or high.shape != (3,) or not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"workspace_low and workspace_high need 3 finite numbers each, got "
                             f"{self.workspace_low}, {self.workspace_high}")
        if np.any(low >= high):
            raise ValueError(f"workspace_low {tuple(low)} must be below workspace_high {tuple(high)} on every axis")
        if not (math.isfinite(self.max_step) and self.max_step > 0):
            raise ValueError(f"max_step must be a positive number of metres, got {self.max_step}")
        if not (math.isfinite(self.max_rot_step) and self.max_rot_step > 0):
            raise ValueError(f"max_rot_step must be a positive number of radians, got {self.max_rot_step}")
        object.__setattr__(self, "workspace_low", tuple(float(v) for v in low))
        object.__setattr__(self, "workspace_high", tuple(float(v) for v in high))

    @classmethod
    def from_box(cls, low: Sequence[float], high: Sequence[float], **kwargs: float) -> MotionLimits:
        return cls(tuple(low), tuple(high), **kwargs)  # type: ignore[arg-type]

    def apply(
        self, pose: np.ndarray, tcp_pose: Sequence[float], target_pose: Sequence[float] | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """(the pose the arm may track, the limits that changed it: "step", "rotation_step",
        "workspace"). `pose`, `tcp_pose` (where the tool is) and `target_pose` (what it tracks
        now; None: the tool's pose): [x, y, z, qx, qy, qz, qw]."""
        if float(np.max(np.abs(pose[:3]))) > MAX_PLAUSIBLE_REACH:
            raise RequestError(
                f"pose position {pose[:3].tolist()} is more than {MAX_PLAUSIBLE_REACH:g} m from the base: "
                f"no arm reaches there (the workspace box is {self.workspace_low}..{self.workspace_high})"
            )
        out = np.array(pose, dtype=np.float64)
        limited: list[str] = []
        tcp = np.asarray(tcp_pose, dtype=np.float64)
        references = [tcp[:3]] if target_pose is None else [tcp[:3], np.asarray(target_pose[:3], dtype=np.float64)]
        reference = min(references, key=lambda p: float(np.linalg.norm(out[:3] - p)))
        if float(np.linalg.norm(out[:3] - reference)) > self.max_step:
            out[:3] = clip_toward(reference, out[:3], self.max_step)
            limited.append("step")
        # Orientation step: the angle of the rotation from the tool's orientation to the target's.
        target_wxyz, tcp_wxyz = out[[6, 3, 4, 5]], tcp[[6, 3, 4, 5]] / np.linalg.norm(tcp[3:])
        relative = tr.quat_mul(target_wxyz, tr.quat_inv(tcp_wxyz))
        angle = 2.0 * math.atan2(float(np.linalg.norm(relative[1:])), abs(float(relative[0])))
        if angle > self.max_rot_step:
            capped = tr.quat_slerp(tcp_wxyz, target_wxyz, self.max_rot_step / angle)
            out[3:] = capped[[1, 2, 3, 0]] / np.linalg.norm(capped)
            limited.append("rotation_step")
        clamped = np.clip(out[:3], self.workspace_low, self.workspace_high)
        if np.any(clamped != out[:3]):
            out[:3] = clamped
            limited.append("workspace")
        return out, limited

    def contains(self, position: Sequence[float], tolerance: float = 1e-6) -> bool:
        p = np.asarray(position, dtype=np.float64)
        return bool(np.all(p >= np.asarray(self.workspace_low) - tolerance)
                    and np.all(p <= np.asarray(self.workspace_high) + tolerance))

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_can_move(errors: Sequence[str], resetting: bool) -> None:
    """RobotFault unless the arm may take a motion command: no active error, no joint reset."""
    if errors:
        raise RobotFault(f"the arm is in error ({'; '.join(errors)}); POST /clear_errors first")
    if resetting:
        raise RobotFault("a joint reset is in progress")


def clip_toward(position: np.ndarray, target: np.ndarray, clip: float) -> np.ndarray:
    """`target`, moved onto the line from `position` to at most `clip` metres from it (the
    impedance's translational_clip: how far ahead of the tool a backend aims)."""
    delta = target - position
    distance = float(np.linalg.norm(delta))
    return position + delta * (clip / distance) if distance > clip else np.array(target, dtype=np.float64)


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

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) of each joint in radians, which joint resets are checked against before
        the arm moves; None: the backend checks its own."""
        return None

    def tool_position(self, qpos: np.ndarray) -> np.ndarray | None:
        """Where the tool centre point would be (3,) with the joints at `qpos` (forward
        kinematics), so the server can refuse a joint reset that ends outside the workspace box;
        None: the backend has no kinematic model (only the joint limits are checked)."""
        return None

    def default_limits(self) -> MotionLimits | None:
        """The motion limits of a server started without any (a simulator knows its task's box);
        None: the server refuses to start without limits (a real arm needs the experiment's)."""
        return None
