"""Franka Panda picks a cube from the table and places it in a bin (MuJoCo, gymnasium API): a
multi-stage task (reach, grasp, lift, carry, release).

Registered as ``PandaPickPlace-v0`` (state: proprio, the cube's and the bin's positions) and
``PandaPickPlaceVision-v0`` (proprio, ``front`` and ``wrist`` camera images; no object positions).
The scene, arm, cameras and control contract are pick-cube's (:mod:`sim_envs.panda_pick_cube`,
:mod:`sim_envs.pick_cube_base`): ``[dx, dy, dz, gripper]`` (or ``xyz_rpy``) tracked by
differential IK. An open bin (``bin_inner_half`` inside, ``bin_wall_height`` high) stands on the
table; the bin's and the cube's positions are drawn at every reset, at least
``min_separation`` apart (centre to centre). Success: the cube rests inside the bin's walls, below
their rim, and the gripper has let go of it. The reward is sparse (1 on success, which ends the
episode unless ``terminate_on_success`` is False) or dense (minus the distances still to go: tool
to cube, cube to the bin's floor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from ml_collections import config_dict

from sim_envs import pick_cube_base
from sim_envs.panda_pick_cube import ARM_JOINTS, CUBE_HALF_SIZE, PandaPickCubeEnv
from sim_envs.panda_pick_cube import default_config as pick_cube_config
from sim_envs.pick_cube_base import STATE_BOUNDS as PICK_STATE_BOUNDS

XML_PATH = Path(__file__).parent / "xmls" / "pick_cube.xml"  # the bin is added by _load_model

BIN_BODY = "bin"
BIN_WALL_THICKNESS = 0.005
BIN_FLOOR_THICKNESS = 0.004

STATE_FIELDS = ("tcp_pose", "tcp_vel", "gripper_pose", "cube_pos", "bin_pos")
VISION_STATE_FIELDS = ("tcp_pose", "tcp_vel", "gripper_pose")
EXTRA_FIELD_SIZES = {"cube_pos": 3, "bin_pos": 3}
STATE_BOUNDS = {**PICK_STATE_BOUNDS, "bin_pos": ([-5.0, -5.0, -1.0], [5.0, 5.0, 5.0])}


def default_config() -> config_dict.ConfigDict:
    """Every default of the task. Locked: an unknown key raises instead of being ignored."""
    base = pick_cube_config()
    c = config_dict.ConfigDict()
    # Timing, actions and the reset posture are pick-cube's (one home for them).
    for key in ("control_hz", "physics_dt", "ik_hz", "action_mode", "pos_scale", "rot_scale",
                "workspace_low", "workspace_high", "rot_limit", "home_qpos", "tcp_quat_xyzw",
                "tcp_reset_noise", "cube_xy_low", "cube_xy_high"):
        c[key] = base[key]
    c.max_episode_steps = 100  # truncation, not termination; the expert needs ~25
    # The bin: drawn in [bin_xy_low, bin_xy_high], its centre at least min_separation from the cube's.
    c.bin_xy_low = (0.35, -0.2)
    c.bin_xy_high = (0.6, 0.2)
    c.min_separation = 0.15  # metres: the fingers fit between the bin's wall and the cube
    c.bin_inner_half = 0.06  # half the inside width (12 cm square)
    c.bin_wall_height = 0.05
    c.reward_type = "sparse"  # or "dense"
    c.terminate_on_success = True  # False where a learned classifier ends the episode
    pick_cube_base.add_observation_defaults(c)
    c.lock()
    return c


def make_config(overrides: dict[str, Any] | None = None) -> config_dict.ConfigDict:
    """default_config() with `overrides` applied; an unknown key raises KeyError."""
    return PandaPickPlaceEnv.make_config(overrides)


class PandaPickPlaceEnv(PandaPickCubeEnv):
    """See the module docstring. `config` is from :func:`make_config`; keyword overrides also
    work: ``gym.make("PandaPickPlace-v0", bin_inner_half=0.05)``."""

    TASK_NAME = "PandaPickPlace"
    STATE_FIELDS = STATE_FIELDS
    VISION_STATE_FIELDS = VISION_STATE_FIELDS
    EXTRA_FIELD_SIZES = EXTRA_FIELD_SIZES
    STATE_BOUNDS = STATE_BOUNDS
    default_config = staticmethod(default_config)

    @classmethod
    def validate(cls, c: config_dict.ConfigDict) -> None:
        pick_cube_base.validate_control(c, len(ARM_JOINTS), cls.ACTION_MODES)
        for name in ("cube", "bin"):
            if np.any(np.array(c[f"{name}_xy_low"]) > np.array(c[f"{name}_xy_high"])):
                raise ValueError(f"{name}_xy_low {c[f'{name}_xy_low']} must not exceed {name}_xy_high {c[f'{name}_xy_high']}")
        if c.bin_inner_half <= 1.5 * CUBE_HALF_SIZE or c.bin_wall_height <= 0:
            raise ValueError(f"bin_inner_half must exceed {1.5 * CUBE_HALF_SIZE} and bin_wall_height 0, "
                             f"got {c.bin_inner_half} and {c.bin_wall_height}")
        if c.min_separation < c.bin_inner_half + BIN_WALL_THICKNESS + CUBE_HALF_SIZE:
            raise ValueError(f"min_separation {c.min_separation} would let the cube start inside the bin's walls")
        # The two ranges must leave room for min_separation: the farthest corners apart.
        corners = [np.array(c.cube_xy_low) - c.bin_xy_high, np.array(c.cube_xy_high) - c.bin_xy_low]
        if max(np.linalg.norm(corner) for corner in corners) < c.min_separation:
            raise ValueError(f"cube_xy and bin_xy ranges never lie min_separation={c.min_separation} apart")

    # ------------------------------------------------------------------ model

    def _load_model(self) -> mujoco.MjModel:
        """The pick-cube scene with an open bin sized from the config."""
        c = self.config
        spec = mujoco.MjSpec.from_file(str(self.XML_PATH))
        bin_body = spec.worldbody.add_body(name=BIN_BODY, pos=[0.45, 0.15, 0.0])
        inner, wall, height = c.bin_inner_half, BIN_WALL_THICKNESS, c.bin_wall_height
        outer = inner + wall
        boxes = [
            ("bin_floor", [0, 0, BIN_FLOOR_THICKNESS / 2], [outer, outer, BIN_FLOOR_THICKNESS / 2]),
            ("bin_px", [inner + wall / 2, 0, height / 2], [wall / 2, outer, height / 2]),
            ("bin_nx", [-inner - wall / 2, 0, height / 2], [wall / 2, outer, height / 2]),
            ("bin_py", [0, inner + wall / 2, height / 2], [inner, wall / 2, height / 2]),
            ("bin_ny", [0, -inner - wall / 2, height / 2], [inner, wall / 2, height / 2]),
        ]
        for name, pos, size in boxes:
            bin_body.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, pos=pos, size=size,
                              friction=[1.0, 0.005, 0.0001], rgba=[0.2, 0.55, 0.3, 1])
        bin_body.add_site(name=BIN_BODY, pos=[0, 0, BIN_FLOOR_THICKNESS], size=[0.004, 0, 0], group=4)
        return spec.compile()

    def _bind_task(self) -> None:
        super()._bind_task()
        self._bin_body = self.model.body(BIN_BODY).id
        self._bin_site = self.model.site(BIN_BODY).id

    # ------------------------------------------------------------------ episode

    def _reset_task(self, options: dict[str, Any]) -> None:
        c = self.config
        bin_xy = np.asarray(options["bin_xy"], np.float64) if "bin_xy" in options \
            else self.np_random.uniform(c.bin_xy_low, c.bin_xy_high)
        if "cube_xy" in options:
            cube_xy = np.asarray(options["cube_xy"], np.float64)
        else:
            for _ in range(1000):  # rejection sampling; validate() made sure the ranges allow it
                cube_xy = self.np_random.uniform(c.cube_xy_low, c.cube_xy_high)
                if np.linalg.norm(cube_xy - bin_xy) >= c.min_separation:
                    break
            else:
                raise RuntimeError(f"no cube position {c.min_separation} m from the bin at {bin_xy}; widen cube_xy")
        self.model.body_pos[self._bin_body] = (*bin_xy, 0.0)
        super()._reset_task({"cube_xy": cube_xy})

    # ------------------------------------------------------------------ task state

    def bin_pos(self) -> np.ndarray:
        """The centre of the bin's floor (its top face), metres."""
        return self.data.site_xpos[self._bin_site].copy()

    def cube_in_bin(self) -> bool:
        """The whole cube is inside the bin's walls and below their rim."""
        cube, floor = self.cube_pos(), self.bin_pos()
        inside = np.all(np.abs(cube[:2] - floor[:2]) <= self.config.bin_inner_half - CUBE_HALF_SIZE + 1e-3)
        return bool(inside and cube[2] + CUBE_HALF_SIZE <= self.config.bin_wall_height)

    def is_success(self) -> bool:
        return self.cube_in_bin() and not self.is_grasped()

    def _reward(self, success: bool) -> float:
        if self.config.reward_type == "sparse" or success:
            return float(success)
        goal = self.bin_pos() + np.array([0.0, 0.0, CUBE_HALF_SIZE])
        return -float(np.linalg.norm(self.tcp_pos() - self.cube_pos()) + np.linalg.norm(self.cube_pos() - goal))

    def _task_state(self, state: np.ndarray) -> None:
        super()._task_state(state)
        if "bin_pos" in self.state_layout.names:
            state[self.state_layout.slice("bin_pos")] = self.bin_pos()

    def _info(self, success: bool) -> dict[str, Any]:
        return {**super()._info(success), "in_bin": self.cube_in_bin()}
