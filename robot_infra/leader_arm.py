"""A leader arm as an intervention device: move it by hand, the robot's tool follows.

Any arm on a Dynamixel or Feetech bus (:mod:`robot_infra.servo_bus`): the SO-100 / SO-101
leaders (Feetech STS3215), Koch's leader (Dynamixel), or an arm of your own. For the known arms
give ``arm=`` ("so101", "so100", "koch") and ``calibration=`` (the file
``python -m robot_infra.tools.calibrate_arm`` writes): the motors, their zeros and the gripper's
ends come from the calibration and the kinematic model is the arm's MJCF (:mod:`sim_envs.kinematics`,
joint angle = calibrated angle + the middle of the model's range, as on the followers). For
another arm give ``motors=`` and ``chain=`` (below) and ``bus=``.

Mapping (relative, end-effector deltas). At every ``get_action`` the leader's joint angles are
read (one sync read, torque off so the arm moves freely) and put through a kinematic model of
the leader, :class:`KinematicChain`, giving its tool position p and orientation R in the
leader's base frame. The action is the tool's motion since the previous step, expressed in the
robot's base frame and in the env's action units:

    dp      = Rz(frame_yaw) (p_t - p_{t-1}) * motion_scale            metres
    a[:3]   = clip(dp / pos_scale, -1, 1)                            (pos_scale: env metres / step)
    a[3:6]  = clip(rotvec(Rz R_t R_{t-1}^T Rz^T) / rot_scale, -1, 1)  (only for 7-D actions)
    a[-1]   = +1 (close) when the gripper joint is past the middle of its open..closed stroke,
              -1 (open) otherwise, with a little hysteresis so it does not chatter at the middle

which is the env's action convention (``serl_launcher.conventions``): a base-frame translation
scaled by ``pos_scale`` and a base-frame rotation vector scaled by ``rot_scale``. Like a
SpaceMouse this is clutch-free relative teleoperation: the robot repeats the leader's motion,
it does not track the leader's absolute pose, so the two may drift apart (e.g. after clipping
or when the robot hits its workspace box); a person simply keeps moving until the robot's tool
is where it should be.

The device intervenes on any step where the tool moved more than ``deadzone`` metres (or
``rot_deadzone`` radians) or the gripper command changed, and for ``hold_steps`` steps after,
so a short pause in a person's motion does not hand control back to the policy.

The default :data:`DEFAULT_MOTORS` / :data:`DEFAULT_CHAIN` describe an illustrative 5-joint arm
with a gripper joint (base yaw, shoulder, elbow, wrist pitch, wrist roll; ids 1-6, all zero at
2048 ticks with the arm in an L: upper arm up, forearm forward). Measure your own arm's link
offsets, ids, zero readings and signs and put them in the experiment's config.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from dm_robotics.transformations import transformations as tr

from robot_infra.servo_bus import Motor
from serl_launcher import conventions
from serl_launcher.human.base import DeviceAction

AXES = {"x": np.array([1.0, 0.0, 0.0]), "y": np.array([0.0, 1.0, 0.0]),
        "z": np.array([0.0, 0.0, 1.0])}


@dataclasses.dataclass(frozen=True)
class ChainJoint:
    """A revolute joint: `offset` (metres) from the previous joint's frame to this joint, in that
    frame, then a rotation by the joint's angle about its own `axis` ("x", "y" or "z")."""

    name: str
    axis: str
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        if self.axis not in AXES:
            raise ValueError(f"joint {self.name!r}: axis must be 'x', 'y' or 'z', got {self.axis!r}")
        if len(self.offset) != 3:
            raise ValueError(f"joint {self.name!r}: offset needs 3 components, got {self.offset}")

    @classmethod
    def coerce(cls, spec: ChainJoint | Mapping[str, Any] | Sequence[Any]) -> ChainJoint:
        if isinstance(spec, ChainJoint):
            return spec
        if hasattr(spec, "keys"):  # a dict, a Mapping or an ml_collections ConfigDict
            spec = dict(spec)
            return cls(spec["name"], spec["axis"], tuple(spec.get("offset", (0.0, 0.0, 0.0))))
        name, axis, *offset = spec
        return cls(name, axis, tuple(offset[0]) if offset else (0.0, 0.0, 0.0))


def axis_rotation(axis: str, angle: float) -> np.ndarray:
    """(3, 3) rotation by `angle` radians about the unit x, y or z axis."""
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    if axis == "y":
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class KinematicChain:
    """Forward kinematics of a serial chain of revolute joints.

    The tool frame is ``T = prod_i [Trans(offset_i) Rot(axis_i, q_i)] Trans(tool_offset)``,
    starting at the leader's base frame.
    """

    def __init__(self, joints: Sequence[ChainJoint | Mapping[str, Any] | Sequence[Any]],
                 tool_offset: Sequence[float] = (0.0, 0.0, 0.0)):
        self.joints = tuple(ChainJoint.coerce(j) for j in joints)
        if not self.joints:
            raise ValueError("a kinematic chain needs at least one joint")
        self.tool_offset = np.asarray(tool_offset, np.float64)
        if self.tool_offset.shape != (3,):
            raise ValueError(f"tool_offset needs 3 components, got {tool_offset}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    def forward(self, angles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Joint angles (in chain order, radians) -> tool position (3,) and rotation (3, 3)."""
        if len(angles) != len(self.joints):
            raise ValueError(f"the chain has {len(self.joints)} joints, got {len(angles)} angles")
        position, rotation = np.zeros(3), np.eye(3)
        for joint, angle in zip(self.joints, angles, strict=True):
            position = position + rotation @ np.asarray(joint.offset, np.float64)
            rotation = rotation @ axis_rotation(joint.axis, float(angle))
        return position + rotation @ self.tool_offset, rotation


class ModelChain:
    """The forward kinematics of a known arm's MuJoCo model (SO-101, SO-100, Koch), fed with
    calibrated angles (zero in the middle of each joint's range): the same shape as
    :class:`KinematicChain`."""

    def __init__(self, arm: str):
        from sim_envs.kinematics import arm_kinematics

        self._kinematics = arm_kinematics(arm)
        self._offsets = 0.5 * (self._kinematics.q_low + self._kinematics.q_high)

    @property
    def names(self) -> tuple[str, ...]:
        return self._kinematics.joints

    def forward(self, angles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        position, quat_xyzw = self._kinematics.fk(np.asarray(angles, np.float64) + self._offsets)
        return position, tr.quat_to_mat(conventions.xyzw_to_wxyz(quat_xyzw))[:3, :3]


DEFAULT_MOTORS = (
    Motor("base_yaw", 1), Motor("shoulder", 2), Motor("elbow", 3),
    Motor("wrist_pitch", 4), Motor("wrist_roll", 5), Motor("gripper", 6),
)
DEFAULT_CHAIN = (
    ChainJoint("base_yaw", "z", (0.0, 0.0, 0.05)),
    ChainJoint("shoulder", "y", (0.0, 0.0, 0.04)),
    ChainJoint("elbow", "y", (0.0, 0.0, 0.11)),
    ChainJoint("wrist_pitch", "y", (0.12, 0.0, 0.0)),
    ChainJoint("wrist_roll", "x", (0.05, 0.0, 0.0)),
)
DEFAULT_TOOL_OFFSET = (0.06, 0.0, 0.0)


class LeaderArm:
    """Leader-arm intervention device (see the module doc for the mapping).

    Args:
        action_dim: 4 (``[dx, dy, dz, gripper]``) or 7 (with ``droll, dpitch, dyaw``).
        port: the leader's serial device (required), e.g. ``/dev/ttyUSB0``.
        arm: "so101", "so100" or "koch": a known arm, with `calibration` (motors, chain,
            tool_offset and the gripper's angles then come from there); None: a custom arm.
        calibration: the known arm's calibration file.
        bus: "dynamixel" or "feetech"; "" (default): the known arm's, else "dynamixel".
        motors: every motor of the leader (Motor or mappings of its fields).
        chain: the kinematic model: joints (ChainJoint, mappings, or ``(name, axis, offset)``)
            naming motors in `motors`, from the base outwards.
        tool_offset: from the last joint's frame to the tool point, metres.
        gripper_joint: the motor whose angle gives the gripper command (None: always open).
        gripper_open, gripper_closed: that joint's angles (radians) with the gripper open / closed.
        pos_scale, rot_scale: the env's metres and radians per step at |a| = 1.
        motion_scale: robot metres per leader metre (and radians per radian).
        frame_yaw: rotation of the leader's base frame about z relative to the robot's, radians.
        deadzone, rot_deadzone: motion per step (metres, radians) below which a person is
            not taken to be moving the arm.
        hold_steps: steps the device keeps intervening after the last motion.
        baudrate, timeout_ms, retries: see :class:`~robot_infra.servo_bus.ServoArm`.
    """

    def __init__(
        self,
        action_dim: int = 4,
        port: str | None = None,
        arm: str | None = None,
        calibration: str = "",
        bus: str = "",
        motors: Sequence[Motor | Mapping[str, Any]] = DEFAULT_MOTORS,
        chain: Sequence[ChainJoint | Mapping[str, Any] | Sequence[Any]] = DEFAULT_CHAIN,
        tool_offset: Sequence[float] = DEFAULT_TOOL_OFFSET,
        gripper_joint: str | None = "gripper",
        gripper_open: float = 0.0,
        gripper_closed: float = -0.7,
        pos_scale: float = 0.04,
        rot_scale: float = 0.2,
        motion_scale: float = 1.0,
        frame_yaw: float = 0.0,
        deadzone: float = 0.001,
        rot_deadzone: float = 0.01,
        hold_steps: int = 5,
        baudrate: int = 1_000_000,
        timeout_ms: float | None = None,
        retries: int = 2,
    ):
        if action_dim not in (4, 7):
            raise ValueError(f"action_dim must be 4 or 7, got {action_dim}")
        if not port:
            raise ValueError("the leader arm needs port= (its serial device, e.g. /dev/ttyUSB0 or "
                             "/dev/serial/by-id/usb-FTDI_...)")
        if pos_scale <= 0 or rot_scale <= 0 or motion_scale <= 0:
            raise ValueError("pos_scale, rot_scale and motion_scale must be positive")
        if gripper_joint is not None and gripper_open == gripper_closed:
            raise ValueError("gripper_open and gripper_closed must differ")
        if hold_steps < 0 or deadzone < 0 or rot_deadzone < 0:
            raise ValueError("hold_steps, deadzone and rot_deadzone must be >= 0")
        from robot_infra import calibration as calib

        self.action_dim = action_dim
        if arm:
            if arm not in calib.ARMS:
                raise ValueError(f"unknown leader arm {arm!r}; known: {sorted(calib.ARMS)} (or arm=None "
                                 "with motors= and chain= for your own)")
            if not calibration:
                raise calib.CalibrationError(f"the {arm} leader needs calibration= (its calibration file); "
                                             f"make one with: {calib.calibrate_command(arm, port)}")
            spec = calib.ARMS[arm]
            if bus and bus != spec.bus:
                raise ValueError(f"the {arm} leader is on a {spec.bus} bus, not {bus!r}")
            bus = spec.bus
            recorded = calib.load_calibration(calibration, spec.motors, arm=arm, port=port)
            motors = recorded.motors
            self.chain: KinematicChain | ModelChain = ModelChain(arm)
            gripper_joint = calib.GRIPPER
            gripper_open, gripper_closed = recorded.gripper_angle(0.0), recorded.gripper_angle(1.0)
        else:
            self.chain = KinematicChain(chain, tool_offset)
        self.arm = calib.make_arm(bus or "dynamixel", port, motors, baudrate=baudrate,
                                  timeout_ms=timeout_ms, retries=retries)
        unknown = [n for n in self.chain.names + ((gripper_joint,) if gripper_joint else ())
                   if n not in self.arm.names]
        if unknown:
            raise ValueError(f"chain / gripper joints {unknown} are not among the motors "
                             f"{self.arm.names}")
        self._chain_index = [self.arm.names.index(n) for n in self.chain.names]
        self._gripper_index = None if gripper_joint is None else self.arm.names.index(gripper_joint)
        self.gripper_open, self.gripper_closed = float(gripper_open), float(gripper_closed)
        self.pos_scale, self.rot_scale, self.motion_scale = pos_scale, rot_scale, motion_scale
        self._frame = axis_rotation("z", frame_yaw)
        self.deadzone, self.rot_deadzone, self.hold_steps = deadzone, rot_deadzone, hold_steps
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self._grip = conventions.GRIPPER_OPEN
        self._hold = 0
        self.arm.open()
        try:
            self.arm.set_torque(False)  # a person moves it by hand
        except BaseException:
            self.arm.close()
            raise

    def reset(self) -> None:
        """Forgets the previous reading: the first step of an episode never moves the robot."""
        self._previous = None
        self._hold = 0

    def gripper_command(self, angle: float) -> float:
        """+1 (close) or -1 (open) from the gripper joint's angle, with +-0.1 stroke hysteresis."""
        fraction = (angle - self.gripper_open) / (self.gripper_closed - self.gripper_open)
        threshold = 0.4 if self._grip == conventions.GRIPPER_CLOSE else 0.6
        return conventions.GRIPPER_CLOSE if fraction > threshold else conventions.GRIPPER_OPEN

    def action_from_angles(self, angles: np.ndarray) -> DeviceAction:
        """The proposal for joint angles `angles` (all motors, radians), given the last reading."""
        angles = np.asarray(angles, np.float64)
        position, rotation = self.chain.forward(angles[self._chain_index])
        grip = self._grip
        if self._gripper_index is not None:
            grip = self.gripper_command(float(angles[self._gripper_index]))
        previous, self._previous = self._previous, (position, rotation)
        action = np.zeros(self.action_dim, np.float32)
        action[-1] = grip
        if previous is None:  # first reading: nothing to compare with
            self._grip = grip
            return DeviceAction(action, False)
        dp = self._frame @ (position - previous[0]) * self.motion_scale
        action[:3] = np.clip(dp / self.pos_scale, -1.0, 1.0)
        moving = float(np.linalg.norm(dp)) > self.deadzone
        if self.action_dim == 7:
            relative = self._frame @ rotation @ previous[1].T @ self._frame.T
            drot = np.asarray(tr.rmat_to_axisangle(relative)) * self.motion_scale
            action[3:6] = np.clip(drot / self.rot_scale, -1.0, 1.0)
            moving = moving or float(np.linalg.norm(drot)) > self.rot_deadzone
        if moving or grip != self._grip:
            self._hold = self.hold_steps + 1
        self._grip = grip
        intervening = self._hold > 0
        self._hold = max(0, self._hold - 1)
        return DeviceAction(action + 0.0, intervening)  # + 0.0: no -0

    def get_action(self, observation: dict[str, np.ndarray] | None = None) -> DeviceAction:
        return self.action_from_angles(self.arm.read_positions())

    def close(self) -> None:
        self.arm.close()
