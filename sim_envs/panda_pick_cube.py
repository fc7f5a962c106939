"""Franka Panda picks up a cube from a table (MuJoCo, gymnasium API).

Registered as ``PandaPickCube-v0`` (state: proprio + cube position) and ``PandaPickCubeVision-v0``
(proprio + ``front`` and ``wrist`` camera images, no cube position). Conventions for poses,
actions and the gripper are those of :mod:`serl_launcher.conventions`.

One control step (``1 / control_hz`` seconds) moves the commanded tool-centre-point target by
``pos_scale * action[:3]`` from where the tool is, clips it to the workspace box, and lets
:class:`~sim_envs.controllers.DiffIKController` track it at the physics rate. The reward is sparse:
1 when the cube is lifted ``lift_height`` off the table (``task="reach"``: when the tool is within
``reach_tolerance`` of the cube), which also terminates the episode; the episode truncates
(never terminates) after ``max_episode_steps``. What the pick-cube tasks share (observations,
reward, rendering, the action contract) is in :mod:`sim_envs.pick_cube_base`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ml_collections import config_dict

from sim_envs import pick_cube_base
from sim_envs.controllers import DiffIKController
from sim_envs.pick_cube_base import (  # noqa: F401  (re-exported: this module's public names)
    ACTION_LAYOUTS,
    EXTRA_FIELD_SIZES,
    STATE_BOUNDS,
    STATE_FIELDS,
    VISION_STATE_FIELDS,
)

XML_PATH = Path(__file__).parent / "xmls" / "pick_cube.xml"

# Element names of the MJCF (sim_envs/xmls), in one place.
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
ARM_ACTUATORS = tuple(f"actuator{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_joint1", "finger_joint2")
FINGER_PADS = ("left_pad", "right_pad")
GRIPPER_ACTUATOR = "gripper"
TCP_SITE = "tcp"
CUBE_BODY = "cube"
CUBE_JOINT = "cube"
CUBE_GEOM = "cube"
CAMERAS = ("front", "wrist")

FINGER_STROKE = 0.04  # metres each finger travels from closed to open
CUBE_HALF_SIZE = 0.02


def default_config() -> config_dict.ConfigDict:
    """Every default of the task. Locked: an unknown key raises instead of being ignored."""
    c = config_dict.ConfigDict()
    # Timing.
    c.control_hz = 10.0
    c.physics_dt = 0.004  # 25 substeps per control step; 0.002 works too, at ~2/3 the speed
    c.ik_hz = 50.0  # joint-target updates per second; the servos run every physics step
    c.max_episode_steps = 100  # truncation, not termination
    # Actions.
    c.action_mode = "xyz"  # "xyz": [dx, dy, dz, gripper]; "xyz_rpy": adds droll, dpitch, dyaw
    c.pos_scale = 0.04  # metres per step at |a| = 1
    c.rot_scale = 0.2  # radians per step at |a| = 1
    c.workspace_low = (0.25, -0.3, 0.01)  # 0.01: fingertips touch the table  # clip box for the commanded tool position
    c.workspace_high = (0.7, 0.3, 0.45)
    c.rot_limit = (0.6, 0.6, 1.6)  # |rotation vector| from the reset orientation, per axis
    # Reset.
    c.home_qpos = (0.0, -0.2681, 0.0, -2.4318, 0.0, 2.163, 0.785)  # tool at ~(0.45, 0, 0.30)
    c.tcp_quat_xyzw = (1.0, 0.0, 0.0, 0.0)  # gripper pointing straight down
    c.tcp_reset_noise = 0.0  # metres of uniform xy noise on the first tool target
    c.cube_xy_low = (0.35, -0.2)
    c.cube_xy_high = (0.6, 0.2)
    # Task. "pick": lift the cube `lift_height`; "reach": bring the tool within `reach_tolerance`
    # of the point `reach_height` above the cube's centre, whatever the gripper does (a
    # short-horizon variant for quick learning tests).
    c.task = "pick"
    c.lift_height = 0.1  # metres the cube must rise above its resting height
    c.reach_tolerance = 0.03
    c.reach_height = 0.05
    # "sparse": 1 on success, else 0. "dense": 1 on success, else minus the distance still to go
    # (metres; tool to target, plus the lift still missing for "pick"); for quick learning tests.
    c.reward_type = "sparse"
    # False: success does not end the episode (it truncates at max_episode_steps), for a task
    # whose reward and episode end come from a learned classifier (a wrapper), not the simulator.
    c.terminate_on_success = True
    # Observations.
    pick_cube_base.add_observation_defaults(c)
    c.lock()
    return c


def make_config(overrides: dict[str, Any] | None = None) -> config_dict.ConfigDict:
    """default_config() with `overrides` applied; an unknown key raises KeyError."""
    return PandaPickCubeEnv.make_config(overrides)


class PandaPickCubeEnv(pick_cube_base.PickCubeEnv):
    """See the module docstring. `config` is from :func:`make_config`; keyword overrides also work:
    ``gym.make("PandaPickCube-v0", lift_height=0.05)``."""

    XML_PATH = XML_PATH
    TASK_NAME = "PandaPickCube"
    ARM_JOINTS = ARM_JOINTS
    TCP_SITE = TCP_SITE
    GRIPPER_ACTUATOR = GRIPPER_ACTUATOR
    CUBE_BODY, CUBE_JOINT, CUBE_GEOM = CUBE_BODY, CUBE_JOINT, CUBE_GEOM
    PAD_GEOMS = FINGER_PADS
    CAMERAS = CAMERAS
    CUBE_HALF_SIZE = CUBE_HALF_SIZE
    default_config = staticmethod(default_config)

    def _make_controller(self) -> DiffIKController:
        m = self.model
        self._finger_qpos = np.array([m.joint(j).qposadr[0] for j in FINGER_JOINTS])
        return DiffIKController(m, self.data, TCP_SITE, ARM_JOINTS, ARM_ACTUATORS, self._home_qpos)

    def _open_gripper(self) -> None:
        self.data.qpos[self._finger_qpos] = FINGER_STROKE
        self.data.ctrl[self._gripper_actuator] = FINGER_STROKE

    def _gripper_ctrl(self, closed: bool) -> float:
        return 0.0 if closed else FINGER_STROKE

    def gripper_pose(self) -> float:
        """0 fully open .. 1 fully closed."""
        opening = float(np.mean(self.data.qpos[self._finger_qpos]))
        return float(np.clip(1.0 - opening / FINGER_STROKE, 0.0, 1.0))
