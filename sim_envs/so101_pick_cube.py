"""SO-101 arm picks up a 2.5 cm cube from a table (MuJoCo, gymnasium API).

Registered as ``SO101PickCube-v0`` (state: proprio + cube position) and ``SO101PickCubeVision-v0``
(proprio + ``front`` and ``wrist`` camera images, no cube position). The same task as
:mod:`sim_envs.panda_pick_cube` (what they share is in :mod:`sim_envs.pick_cube_base`), scaled to
the low-cost arm: a workspace 0.1-0.3 m in front of the base, actions ``[dx, dy, dz, gripper]``
only (the 5-DoF arm keeps its tool pointing down; it cannot take arbitrary orientations).

Control: every IK update (``ik_hz``) :class:`MinkIKController` turns the next waypoint of the
clipped tool target into joint targets with :class:`sim_envs.kinematics.ArmKinematics` (the IK a
real SO-101 follower uses), and the MJCF's position servos track them at the physics rate.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
from ml_collections import config_dict

from serl_launcher import conventions
from sim_envs import kinematics, pick_cube_base
from sim_envs.controllers import DiffIKController

XML_PATH = kinematics.XML_DIR / "so101_pick_cube.xml"

# Element names of the MJCF (sim_envs/xmls/so101*.xml), in one place.
ARM_JOINTS = kinematics.SO101_ARM_JOINTS
ARM_ACTUATORS = ARM_JOINTS  # each servo is named after its joint
GRIPPER_JOINT = kinematics.GRIPPER_JOINT
GRIPPER_ACTUATOR = "gripper"
JAW_PADS = ("fixed_jaw", "moving_jaw_pad")
TCP_SITE = kinematics.TCP_SITE
CUBE_BODY = "cube"
CUBE_JOINT = "cube"
CUBE_GEOM = "cube"
CAMERAS = ("front", "wrist")

GRIPPER_OPEN = 0.8  # radians of the moving jaw: a 2.5 cm cube fits with ~1.5 cm to spare
GRIPPER_CLOSED = 0.0  # jaws touching; on a cube the servo squeezes with kp * angle
CUBE_HALF_SIZE = 0.0125


def default_config() -> config_dict.ConfigDict:
    """Every default of the task. Locked: an unknown key raises instead of being ignored."""
    c = config_dict.ConfigDict()
    # Timing.
    c.control_hz = 10.0
    c.physics_dt = 0.004  # 25 substeps per control step
    c.ik_hz = 50.0  # joint-target updates per second; the servos run every physics step
    c.max_episode_steps = 100  # truncation, not termination
    # Actions.
    c.action_mode = "xyz"  # [dx, dy, dz, gripper]; the only mode of the 5-DoF arm
    c.pos_scale = 0.02  # metres per step at |a| = 1
    c.rot_scale = 0.0  # unused (no rotation actions); kept so every pick-cube config has the key
    c.workspace_low = (0.08, -0.16, 0.008)  # 0.008: the jaw tips just clear the table
    c.workspace_high = (0.30, 0.16, 0.20)
    c.rot_limit = (0.0, 0.0, 0.0)  # unused, as rot_scale
    # Reset.
    c.home_qpos = kinematics.SO101_HOME_QPOS  # tool at ~(0.18, 0, 0.11), pointing down
    c.tcp_quat_xyzw = kinematics.TOOL_DOWN_QUAT_XYZW  # pointing down, jaws closing along x
    c.tcp_reset_noise = 0.0  # metres of uniform xy noise on the first tool target
    c.cube_xy_low = (0.14, -0.08)
    c.cube_xy_high = (0.24, 0.08)
    # Task, as in panda_pick_cube.
    c.task = "pick"
    c.lift_height = 0.05  # metres the cube must rise above its resting height
    c.reach_tolerance = 0.015
    c.reach_height = 0.03
    c.reward_type = "sparse"
    c.terminate_on_success = True
    # Observations.
    pick_cube_base.add_observation_defaults(c)
    c.lock()
    return c


def make_config(overrides: dict[str, Any] | None = None) -> config_dict.ConfigDict:
    """default_config() with `overrides` applied; an unknown key raises KeyError."""
    return SO101PickCubeEnv.make_config(overrides)


class MinkIKController(DiffIKController):
    """:class:`DiffIKController`'s servo loop (straight-line waypoints, joint targets for the
    position servos) with each IK update solved by :class:`~sim_envs.kinematics.ArmKinematics`:
    mink's QP with joint and velocity limits instead of an unconstrained damped least squares.

    Args:
        model, data: the MuJoCo model and data.
        kinematics: the arm's IK (built on `model`; it has its own data).
        actuators: the arm joints' position actuators, in ``kinematics.joints`` order.
        ik_dt: seconds between IK updates (bounds each update's joint step).
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        kinematics: kinematics.ArmKinematics,
        actuators: tuple[str, ...],
        ik_dt: float,
    ):
        super().__init__(model, data, kinematics.tcp_site, kinematics.joints, actuators, kinematics.home_qpos)
        self.kinematics = kinematics
        self.ik_dt = ik_dt

    def joint_targets(self, target_pos: np.ndarray, target_quat_wxyz: np.ndarray) -> np.ndarray:
        """One IK update from the measured joint angles: (n,) joint position targets."""
        return self.kinematics.ik(
            self.data.qpos[self.qpos_ids], target_pos, conventions.wxyz_to_xyzw(target_quat_wxyz), dt=self.ik_dt
        )


class SO101PickCubeEnv(pick_cube_base.PickCubeEnv):
    """See the module docstring. `config` is from :func:`make_config`; keyword overrides also work:
    ``gym.make("SO101PickCube-v0", lift_height=0.03)``."""

    XML_PATH = XML_PATH
    TASK_NAME = "SO101PickCube"
    ARM_JOINTS = ARM_JOINTS
    ACTION_MODES = ("xyz",)
    TCP_SITE = TCP_SITE
    GRIPPER_ACTUATOR = GRIPPER_ACTUATOR
    CUBE_BODY, CUBE_JOINT, CUBE_GEOM = CUBE_BODY, CUBE_JOINT, CUBE_GEOM
    PAD_GEOMS = JAW_PADS
    CAMERAS = CAMERAS
    CUBE_HALF_SIZE = CUBE_HALF_SIZE
    default_config = staticmethod(default_config)

    def _make_controller(self) -> MinkIKController:
        m = self.model
        self._gripper_qpos = m.joint(GRIPPER_JOINT).qposadr[0]
        self.kinematics = kinematics.ArmKinematics(m, TCP_SITE, ARM_JOINTS, home_qpos=self._home_qpos)
        return MinkIKController(m, self.data, self.kinematics, ARM_ACTUATORS, 1.0 / self.config.ik_hz)

    def _open_gripper(self) -> None:
        self.data.qpos[self._gripper_qpos] = GRIPPER_OPEN
        self.data.ctrl[self._gripper_actuator] = GRIPPER_OPEN

    def _gripper_ctrl(self, closed: bool) -> float:
        return GRIPPER_CLOSED if closed else GRIPPER_OPEN

    def gripper_pose(self) -> float:
        """0 fully open .. 1 fully closed (jaws touching)."""
        opening = float(self.data.qpos[self._gripper_qpos]) - GRIPPER_CLOSED
        return float(np.clip(1.0 - opening / (GRIPPER_OPEN - GRIPPER_CLOSED), 0.0, 1.0))
