"""Franka Panda inserts a peg it holds into a hole with about 1 mm clearance (MuJoCo, gymnasium API).

Registered as ``PandaPegInsert-v0`` (state: proprio, force/torque and the hole's position) and
``PandaPegInsertVision-v0`` (proprio, force/torque, ``front`` and ``wrist`` camera images; no
hole position). ``state_fields`` may choose others, e.g. ``hole_offset`` (the hole's mouth
minus the peg's tip) instead of ``hole_pos``. The control contract is the pick-cube one (:mod:`sim_envs.pick_cube_base`,
:mod:`serl_launcher.conventions`): ``[dx, dy, dz, gripper]`` (or ``xyz_rpy``) tracked by
differential IK on the arm's position servos. The hand holds the peg throughout: the gripper
command is accepted and ignored (the fingers stay closed on the peg).

The peg is a cylinder (``peg_radius``) fixed in the hand below the tool centre point, with a
force/torque sensor between them. ``tcp_force`` / ``tcp_torque`` in the state are what a wrist
F/T sensor with its tool weight compensated reads: the external force on the peg (N, base frame)
and its torque about the tool centre point (N m, base frame). The hole is square, ``2 *
peg_radius + hole_clearance`` wide (1 mm wider than the peg by default), in a board whose
position (and yaw) is drawn at every reset; the episode starts with the peg ``start_height``
above the board, within ``start_xy_noise`` of the hole's axis. Success: the peg's tip is
``insert_depth`` below the board's top inside the hole. The reward is sparse (1 on success,
which ends the episode) or dense (minus the tip's distance still to go).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from ml_collections import config_dict

from sim_envs import pick_cube_base
from sim_envs.panda_pick_cube import ARM_JOINTS, TCP_SITE, PandaPickCubeEnv
from sim_envs.pick_cube_base import STATE_BOUNDS as PICK_STATE_BOUNDS

XML_PATH = Path(__file__).parent / "xmls" / "peg_insert.xml"

BOARD_BODY = "board"
HOLE_SITE = "hole"  # the centre of the hole's mouth, on the board's top face
PEG_BODY = "peg"
PEG_GEOM = "peg"
FT_SITE = "ft"  # the force/torque sensor's site, at the tool centre point
BOARD_HALF_SIZE = 0.05  # the board is 2 * this square
BOARD_HEIGHT = 0.04
HOLE_FLOOR = 0.005  # height of the hole's floor above the table

STATE_FIELDS = ("tcp_pose", "tcp_vel", "gripper_pose", "tcp_force", "tcp_torque", "hole_pos")
VISION_STATE_FIELDS = ("tcp_pose", "tcp_vel", "gripper_pose", "tcp_force", "tcp_torque")
EXTRA_FIELD_SIZES = {"hole_pos": 3, "hole_offset": 3}
FORCE_BOUND = 500.0  # N, the force observation's bound (as the real arm's env)
TORQUE_BOUND = 50.0  # N m
STATE_BOUNDS = {
    **PICK_STATE_BOUNDS,
    "tcp_force": ([-FORCE_BOUND] * 3, [FORCE_BOUND] * 3),
    "tcp_torque": ([-TORQUE_BOUND] * 3, [TORQUE_BOUND] * 3),
    "hole_pos": ([-5.0, -5.0, -1.0], [5.0, 5.0, 5.0]),
    "hole_offset": ([-5.0, -5.0, -5.0], [5.0, 5.0, 5.0]),  # the hole's mouth minus the peg's tip
}


def default_config() -> config_dict.ConfigDict:
    """Every default of the task. Locked: an unknown key raises instead of being ignored."""
    c = config_dict.ConfigDict()
    # Timing.
    c.control_hz = 10.0
    c.physics_dt = 0.002  # 50 substeps per control step: stiff contacts in a 1 mm gap
    c.ik_hz = 50.0
    c.max_episode_steps = 100  # truncation, not termination
    # Actions.
    c.action_mode = "xyz"  # "xyz": [dx, dy, dz, gripper]; "xyz_rpy": adds droll, dpitch, dyaw
    c.pos_scale = 0.01  # metres per step at |a| = 1
    c.rot_scale = 0.1  # radians per step at |a| = 1
    c.workspace_low = (0.3, -0.25, 0.055)  # 0.055: the peg's tip can reach the hole's floor
    c.workspace_high = (0.65, 0.25, 0.35)
    c.rot_limit = (0.3, 0.3, 0.8)
    # Reset.
    c.home_qpos = (0.0, -0.2681, 0.0, -2.4318, 0.0, 2.163, 0.785)  # tool at ~(0.45, 0, 0.30)
    c.tcp_quat_xyzw = (1.0, 0.0, 0.0, 0.0)  # gripper pointing straight down
    c.hole_xy_low = (0.4, -0.12)  # where the hole's centre is drawn, metres
    c.hole_xy_high = (0.55, 0.12)
    c.hole_yaw_range = 0.5  # the board's yaw is drawn in +- this, radians
    c.start_height = 0.03  # the peg's tip starts this far above the board
    c.start_xy_noise = 0.02  # ... and within this (uniform, per axis) of the hole's axis
    # The peg and the hole.
    c.peg_radius = 0.01
    c.peg_length = 0.06  # below the tool centre point
    c.hole_clearance = 0.001  # the hole is this much wider than the peg
    c.insert_depth = 0.02  # success: the tip this far below the board's top, inside the hole
    c.reward_type = "sparse"  # or "dense": minus the tip's distance to the success point
    c.terminate_on_success = True
    # Observations.
    pick_cube_base.add_observation_defaults(c)
    c.lock()
    return c


def make_config(overrides: dict[str, Any] | None = None) -> config_dict.ConfigDict:
    """default_config() with `overrides` applied; an unknown key raises KeyError."""
    return PandaPegInsertEnv.make_config(overrides)


class PandaPegInsertEnv(PandaPickCubeEnv):
    """See the module docstring. `config` is from :func:`make_config`; keyword overrides also
    work: ``gym.make("PandaPegInsert-v0", hole_clearance=0.002)``."""

    XML_PATH = XML_PATH
    TASK_NAME = "PandaPegInsert"
    STATE_FIELDS = STATE_FIELDS
    VISION_STATE_FIELDS = VISION_STATE_FIELDS
    EXTRA_FIELD_SIZES = EXTRA_FIELD_SIZES
    STATE_BOUNDS = STATE_BOUNDS
    HAS_CUBE = False
    default_config = staticmethod(default_config)

    @classmethod
    def validate(cls, c: config_dict.ConfigDict) -> None:
        pick_cube_base.validate_control(c, len(ARM_JOINTS), cls.ACTION_MODES)
        if np.any(np.array(c.hole_xy_low) > np.array(c.hole_xy_high)):
            raise ValueError(f"hole_xy_low {c.hole_xy_low} must not exceed hole_xy_high {c.hole_xy_high}")
        if not 0 < c.peg_radius < BOARD_HALF_SIZE / 2 or c.hole_clearance <= 0:
            raise ValueError(f"peg_radius must be in (0, {BOARD_HALF_SIZE / 2}) and hole_clearance > 0, "
                             f"got {c.peg_radius} and {c.hole_clearance}")
        if not 0 < c.insert_depth <= BOARD_HEIGHT - HOLE_FLOOR or c.insert_depth >= c.peg_length:
            raise ValueError(f"insert_depth must be in (0, {BOARD_HEIGHT - HOLE_FLOOR}] and below "
                             f"peg_length, got {c.insert_depth}")

    # ------------------------------------------------------------------ model

    def _load_model(self) -> mujoco.MjModel:
        """The scene with the peg in the hand and the hole's walls sized from the config."""
        c = self.config
        spec = mujoco.MjSpec.from_file(str(self.XML_PATH))
        tcp = spec.site(TCP_SITE)
        peg = spec.body("hand").add_body(name=PEG_BODY, pos=tcp.pos, quat=tcp.quat)
        # From the tip, peg_length below the tool centre point, to 2 cm above it, between the fingers.
        half = (c.peg_length + 0.02) / 2
        peg.add_geom(name=PEG_GEOM, type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[c.peg_radius, half, 0],
                     pos=[0, 0, half - 0.02], contype=2, conaffinity=2, mass=0.05,
                     friction=[0.3, 0.005, 0.0001], rgba=[0.9, 0.75, 0.2, 1])
        peg.add_site(name=FT_SITE, size=[0.004, 0, 0])
        spec.add_sensor(name="ft_force", type=mujoco.mjtSensor.mjSENS_FORCE,
                        objtype=mujoco.mjtObj.mjOBJ_SITE, objname=FT_SITE)
        spec.add_sensor(name="ft_torque", type=mujoco.mjtSensor.mjSENS_TORQUE,
                        objtype=mujoco.mjtObj.mjOBJ_SITE, objname=FT_SITE)
        board = spec.body(BOARD_BODY)
        fixture = spec.find_default("fixture")
        for name, pos, size in hole_geoms(c.peg_radius + c.hole_clearance / 2):
            board.add_geom(default=fixture, name=name, type=mujoco.mjtGeom.mjGEOM_BOX, pos=pos, size=size)
        return spec.compile()

    def _bind_task(self) -> None:
        m = self.model
        self._board_body = m.body(BOARD_BODY).id
        self._hole_site = m.site(HOLE_SITE).id
        self._peg_body = m.body(PEG_BODY).id
        self._ft_site = m.site(FT_SITE).id
        self._force_adr = m.sensor("ft_force").adr[0]
        self._torque_adr = m.sensor("ft_torque").adr[0]
        self._peg_weight = float(m.body_subtreemass[self._peg_body]) * -float(m.opt.gravity[2])
        self._cube_rest_z = 0.0

    # ------------------------------------------------------------------ episode

    def _open_gripper(self) -> None:  # the hand keeps the peg: fingers closed on it
        closed = self.config.peg_radius
        self.data.qpos[self._finger_qpos] = closed
        self.data.ctrl[self._gripper_actuator] = closed

    def _gripper_ctrl(self, closed: bool) -> float:
        return self.config.peg_radius

    def _reset_task(self, options: dict[str, Any]) -> None:
        c = self.config
        hole_xy = np.asarray(options["hole_xy"], np.float64) if "hole_xy" in options \
            else self.np_random.uniform(c.hole_xy_low, c.hole_xy_high)
        yaw = float(options.get("hole_yaw", self.np_random.uniform(-c.hole_yaw_range, c.hole_yaw_range)))
        self.model.body_pos[self._board_body] = (*hole_xy, 0.0)
        self.model.body_quat[self._board_body] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))

    def _reset_tool(self) -> None:
        """Brings the peg above the hole (before the episode's first step): where the task starts."""
        c = self.config
        noise = self.np_random.uniform(-c.start_xy_noise, c.start_xy_noise, 2)
        target = self.hole_pos() + np.array([*noise, c.start_height + c.peg_length])
        target = np.clip(target, self._ws_low, self._ws_high)
        for _ in range(30):
            self._controller.step(target, self._target_quat_wxyz, self._n_substeps, self._ik_substeps)
            if np.linalg.norm(self.tcp_pos() - target) < 1e-3:
                break

    # ------------------------------------------------------------------ task state

    def hole_pos(self) -> np.ndarray:
        """The centre of the hole's mouth (on the board's top face), metres."""
        return self.data.site_xpos[self._hole_site].copy()

    def peg_tip(self) -> np.ndarray:
        """The centre of the peg's tip, metres."""
        axis = self.data.site_xmat[self._ft_site].reshape(3, 3)[:, 2]  # along the peg, to its tip
        return self.data.site_xpos[self._ft_site] + self.config.peg_length * axis

    def insertion(self) -> float:
        """How deep the tip is below the board's top, inside the hole (metres; <= 0 outside)."""
        tip, hole = self.peg_tip(), self.hole_pos()
        if np.linalg.norm(tip[:2] - hole[:2]) > self.config.hole_clearance + 0.001:
            return 0.0
        return max(0.0, float(hole[2] - tip[2]))

    def tcp_wrench(self) -> tuple[np.ndarray, np.ndarray]:
        """(force N, torque N m): the external wrench on the peg about the tool centre point, base
        frame, its weight compensated (a wrist F/T sensor's reading after tool calibration)."""
        d = self.data
        rot = d.site_xmat[self._ft_site].reshape(3, 3)
        # MuJoCo's sensors give what the hand exerts on the peg, in the sensor's frame; the world
        # exerts the opposite on the peg in static balance, plus the weight the hand carries.
        force = -(rot @ d.sensordata[self._force_adr:self._force_adr + 3])
        torque = -(rot @ d.sensordata[self._torque_adr:self._torque_adr + 3])
        force[2] += self._peg_weight
        com_arm = d.xipos[self._peg_body] - d.site_xpos[self._ft_site]
        torque -= np.cross(com_arm, [0.0, 0.0, -self._peg_weight])
        return force, torque

    def is_success(self) -> bool:
        return self.insertion() >= self.config.insert_depth

    def _reward(self, success: bool) -> float:
        if self.config.reward_type == "sparse" or success:
            return float(success)
        goal = self.hole_pos() - np.array([0.0, 0.0, self.config.insert_depth])
        return -float(np.linalg.norm(self.peg_tip() - goal))

    def _task_state(self, state: np.ndarray) -> None:
        layout = self.state_layout
        force, torque = self.tcp_wrench()
        if "tcp_force" in layout.names:
            state[layout.slice("tcp_force")] = np.clip(force, -FORCE_BOUND, FORCE_BOUND)
        if "tcp_torque" in layout.names:
            state[layout.slice("tcp_torque")] = np.clip(torque, -TORQUE_BOUND, TORQUE_BOUND)
        if "hole_pos" in layout.names:
            state[layout.slice("hole_pos")] = self.hole_pos()
        if "hole_offset" in layout.names:  # where the hole is from the tip: what a policy must close
            state[layout.slice("hole_offset")] = self.hole_pos() - self.peg_tip()

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": bool(success), "insertion": self.insertion(), "grasped": True}

    def is_grasped(self) -> bool:
        return True

    def cube_lift(self) -> float:  # no cube; kept so the pick-cube base's helpers stay valid
        return 0.0


def hole_geoms(half_width: float) -> list[tuple[str, list[float], list[float]]]:
    """(name, pos, half sizes) of the board's boxes around a square hole of `half_width`: four
    walls BOARD_HEIGHT high and the hole's floor HOLE_FLOOR thick, in the board's frame."""
    b, h = BOARD_HALF_SIZE, BOARD_HEIGHT / 2
    side = (b - half_width) / 2  # a wall's half thickness
    mid = half_width + side
    return [
        ("wall_px", [mid, 0, h], [side, b, h]),
        ("wall_nx", [-mid, 0, h], [side, b, h]),
        ("wall_py", [0, mid, h], [half_width, side, h]),
        ("wall_ny", [0, -mid, h], [half_width, side, h]),
        ("hole_floor", [0, 0, HOLE_FLOOR / 2], [half_width, half_width, HOLE_FLOOR / 2]),
    ]
