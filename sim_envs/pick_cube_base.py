"""What every pick-cube arm task shares: config handling, the action contract, observations,
reward, rendering. A task module (:mod:`sim_envs.panda_pick_cube`, :mod:`sim_envs.so101_pick_cube`)
gives its MJCF, element names, ``default_config()``, its arm controller and its gripper.

Conventions for poses, actions and the gripper are those of :mod:`serl_launcher.conventions`.
One control step (``1 / control_hz`` seconds) moves the commanded tool-centre-point target by
``pos_scale * action[:3]`` from where the tool is, clips it to the workspace box, and lets the arm
controller track it at the physics rate. The reward is sparse: 1 when the cube is lifted
``lift_height`` off the table (``task="reach"``: when the tool is within ``reach_tolerance`` of
the cube), which also terminates the episode; the episode truncates (never terminates) after
``max_episode_steps``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from ml_collections import config_dict

from serl_launcher import conventions
from sim_envs.rendering import RENDER_HELP, has_display

ACTION_LAYOUTS = conventions.ACTION_LAYOUTS
STATE_FIELDS = ("tcp_pose", "tcp_vel", "gripper_pose", "cube_pos")
VISION_STATE_FIELDS = ("tcp_pose", "tcp_vel", "gripper_pose")
EXTRA_FIELD_SIZES = {"cube_pos": 3}
# Physical bounds of each state field (metres, unit quaternion, m/s and rad/s, stroke fraction).
STATE_BOUNDS = {
    "tcp_pose": ([-2.0] * 3 + [-1.0] * 4, [2.0] * 3 + [1.0] * 4),
    "tcp_vel": ([-10.0] * 6, [10.0] * 6),
    "gripper_pose": ([0.0], [1.0]),
    "cube_pos": ([-5.0, -5.0, -1.0], [5.0, 5.0, 5.0]),
}


class ArmController(Protocol):
    """Turns a tool target into joint targets for the arm's position servos, stepping physics."""

    def step(self, target_pos: np.ndarray, target_quat_wxyz: np.ndarray, n_substeps: int, ik_substeps: int) -> None: ...

    def reset(self, qpos: np.ndarray) -> None: ...

    def site_pos(self) -> np.ndarray: ...


def add_observation_defaults(c: config_dict.ConfigDict) -> None:
    """The observation defaults every pick-cube task shares (one home for them)."""
    c.image_obs = False
    c.state_fields = ()  # the state's fields in order; (): the task's default (with or without images)
    c.image_height = 128
    c.image_width = 128
    c.render_height = 256  # render() frames (videos), per camera
    c.render_width = 256


def make_config(
    default_config: Callable[[], config_dict.ConfigDict],
    task_name: str,
    validate: Callable[[config_dict.ConfigDict], None],
    overrides: dict[str, Any] | None = None,
) -> config_dict.ConfigDict:
    """default_config() with `overrides` applied and validated; an unknown key raises KeyError."""
    cfg = default_config()
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise KeyError(f"unknown {task_name} config key {key!r}; known keys: {sorted(cfg.keys())}")
        cfg[key] = tuple(value) if isinstance(value, list) else value
    validate(cfg)
    return cfg


def validate_control(c: config_dict.ConfigDict, n_arm_joints: int, action_modes: tuple[str, ...]) -> None:
    """Raises ValueError on inconsistent keys every arm task has (timing, actions, workspace, reset
    posture, reward type, episode length)."""
    if c.reward_type not in ("sparse", "dense"):
        raise ValueError(f"reward_type must be 'sparse' or 'dense', got {c.reward_type!r}")
    if c.action_mode not in action_modes:
        choices = " or ".join(repr(m) for m in action_modes)
        raise ValueError(f"action_mode must be {choices}, got {c.action_mode!r}")
    n_sub = 1.0 / (c.control_hz * c.physics_dt)
    if c.control_hz <= 0 or c.physics_dt <= 0 or abs(n_sub - round(n_sub)) > 1e-6 or n_sub < 1:
        raise ValueError(
            f"1 / (control_hz * physics_dt) must be a positive integer, got {n_sub:.4f} "
            f"(control_hz={c.control_hz}, physics_dt={c.physics_dt})"
        )
    low, high = np.array(c.workspace_low), np.array(c.workspace_high)
    if low.shape != (3,) or high.shape != (3,) or np.any(low >= high):
        raise ValueError(f"workspace_low {c.workspace_low} must be below workspace_high {c.workspace_high}")
    if c.max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {c.max_episode_steps}")
    if len(c.home_qpos) != n_arm_joints:
        raise ValueError(f"home_qpos needs {n_arm_joints} joint angles, got {len(c.home_qpos)}")


def validate_config(c: config_dict.ConfigDict, n_arm_joints: int, action_modes: tuple[str, ...]) -> None:
    """Raises ValueError on an inconsistent pick-cube config."""
    if c.task not in ("pick", "reach"):
        raise ValueError(f"task must be 'pick' or 'reach', got {c.task!r}")
    validate_control(c, n_arm_joints, action_modes)
    if np.any(np.array(c.cube_xy_low) > np.array(c.cube_xy_high)):
        raise ValueError(f"cube_xy_low {c.cube_xy_low} must not exceed cube_xy_high {c.cube_xy_high}")
    if c.lift_height <= 0:
        raise ValueError(f"lift_height must be > 0, got {c.lift_height}")


class PickCubeEnv(gym.Env):
    """Base of the pick-cube tasks; see the module docstring. A subclass sets the class attributes
    below and implements :meth:`_make_controller`, :meth:`_open_gripper`, :meth:`_gripper_ctrl`
    and :meth:`gripper_pose`."""

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 10}

    # Set by each task.
    XML_PATH: Path
    TASK_NAME: str
    ARM_JOINTS: tuple[str, ...]
    ACTION_MODES: tuple[str, ...] = ("xyz", "xyz_rpy")
    TCP_SITE = "tcp"
    GRIPPER_ACTUATOR = "gripper"
    CUBE_BODY = "cube"
    CUBE_JOINT = "cube"
    CUBE_GEOM = "cube"
    PAD_GEOMS: tuple[str, ...]  # the gripper geoms that must all touch the cube for a grasp
    CAMERAS = ("front", "wrist")
    CUBE_HALF_SIZE: float
    HAS_CUBE = True  # False: a task of the same arm and control with other objects (no cube)
    # The state's fields (state and vision variants), the task's own field sizes and every
    # field's bounds; a task with other objects (sim_envs.panda_peg_insert) sets its own.
    STATE_FIELDS = STATE_FIELDS
    VISION_STATE_FIELDS = VISION_STATE_FIELDS
    EXTRA_FIELD_SIZES = EXTRA_FIELD_SIZES
    STATE_BOUNDS = STATE_BOUNDS

    @classmethod
    def default_config(cls) -> config_dict.ConfigDict:
        raise NotImplementedError

    @classmethod
    def validate(cls, config: config_dict.ConfigDict) -> None:
        validate_config(config, len(cls.ARM_JOINTS), cls.ACTION_MODES)

    @classmethod
    def make_config(cls, overrides: dict[str, Any] | None = None) -> config_dict.ConfigDict:
        return make_config(cls.default_config, cls.TASK_NAME, cls.validate, overrides)

    def __init__(
        self,
        config: config_dict.ConfigDict | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        if config is None:
            config = self.make_config(overrides)
        elif overrides:
            config = self.make_config({**config.to_dict(), **overrides})
        else:
            self.validate(config)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        if render_mode == "human" and not has_display():
            raise RuntimeError(
                "render_mode='human' opens MuJoCo's viewer window and needs a display; "
                "use render_mode='rgb_array' for offscreen frames"
            )
        self.config = config
        self.render_mode = render_mode
        # Without a display only offscreen rendering exists, so only that mode is declared.
        self.metadata = {
            "render_modes": ["rgb_array", "human"] if has_display() else ["rgb_array"],
            "render_fps": int(round(config.control_hz)),
        }

        self.model = self._load_model()
        self.model.opt.timestep = config.physics_dt
        self.model.vis.global_.offwidth = max(config.image_width, 2 * config.render_width, 640)
        self.model.vis.global_.offheight = max(config.image_height, config.render_height, 480)
        self.data = mujoco.MjData(self.model)
        self._n_substeps = int(round(1.0 / (config.control_hz * config.physics_dt)))
        self._ik_substeps = max(1, min(self._n_substeps, int(round(config.ik_hz / config.control_hz))))

        m = self.model
        self._home_qpos = np.array(config.home_qpos, dtype=np.float64)
        self._controller = self._make_controller()
        self._tcp_site = m.site(self.TCP_SITE).id
        self._pad_geoms = {m.geom(name).id for name in self.PAD_GEOMS}
        self._bind_task()
        self._gripper_actuator = m.actuator(self.GRIPPER_ACTUATOR).id
        self._camera_ids = {name: m.camera(name).id for name in self.CAMERAS}

        self._ws_low = np.array(config.workspace_low, dtype=np.float64)
        self._ws_high = np.array(config.workspace_high, dtype=np.float64)
        self._rot_limit = np.array(config.rot_limit, dtype=np.float64)
        self._home_quat_xyzw = np.array(config.tcp_quat_xyzw, dtype=np.float64)
        self._home_quat_xyzw /= np.linalg.norm(self._home_quat_xyzw)
        self._home_quat_wxyz = conventions.xyzw_to_wxyz(self._home_quat_xyzw)

        names = tuple(config.state_fields) or (self.VISION_STATE_FIELDS if config.image_obs else self.STATE_FIELDS)
        known = tuple(dict.fromkeys((*self.STATE_FIELDS, *self.VISION_STATE_FIELDS, *self.EXTRA_FIELD_SIZES)))
        self.state_layout = conventions.StateLayout.choose(  # the task's order, as RealArmEnv's
            names, known, required=("tcp_pose", "tcp_vel", "gripper_pose"), extra=self.EXTRA_FIELD_SIZES,
            owner=self.TASK_NAME)
        low = np.concatenate([self.STATE_BOUNDS[name][0] for name in self.state_layout.names])
        high = np.concatenate([self.STATE_BOUNDS[name][1] for name in self.state_layout.names])
        obs_spaces: dict[str, spaces.Space] = {
            "state": spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        }
        if config.image_obs:
            shape = (config.image_height, config.image_width, 3)
            for name in self.CAMERAS:
                obs_spaces[name] = spaces.Box(0, 255, shape, np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        action_dim = 4 if config.action_mode == "xyz" else 7
        self.action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

        self._image_renderer: mujoco.Renderer | None = None
        self._video_renderer: mujoco.Renderer | None = None
        # GL contexts must be released before the interpreter tears modules down (OSMesa raises
        # otherwise); a finalizer runs at exit even for envs nobody closed.
        self._renderers: list[mujoco.Renderer] = []
        weakref.finalize(self, _close_renderers, self._renderers)
        self._viewer = None
        self._state_buf = np.zeros(self.state_layout.size, dtype=np.float32)
        self._velocity = np.zeros(6)
        self._quat = np.zeros(4)
        self._target_quat_wxyz = self._home_quat_wxyz.copy()
        self._gripper_closed = False
        self._cube_rest_z = self.CUBE_HALF_SIZE
        self._steps = 0

    # ------------------------------------------------------------------ task hooks

    def _load_model(self) -> mujoco.MjModel:
        return mujoco.MjModel.from_xml_path(str(self.XML_PATH))

    def _bind_task(self) -> None:
        """Looks up the task's own elements in the model (here the cube)."""
        m = self.model
        self._cube_body = m.body(self.CUBE_BODY).id
        self._cube_qpos = m.joint(self.CUBE_JOINT).qposadr[0]
        self._cube_dof = m.joint(self.CUBE_JOINT).dofadr[0]
        self._cube_geom = m.geom(self.CUBE_GEOM).id

    def _reset_task(self, options: dict[str, Any]) -> None:
        """Places the task's objects for a new episode (here the cube, on the table)."""
        if "cube_xy" in options:
            cube_xy = np.asarray(options["cube_xy"], dtype=np.float64)
        else:
            cube_xy = self.np_random.uniform(self.config.cube_xy_low, self.config.cube_xy_high)
        d = self.data
        d.qpos[self._cube_qpos : self._cube_qpos + 3] = (*cube_xy, self.CUBE_HALF_SIZE)
        d.qpos[self._cube_qpos + 3 : self._cube_qpos + 7] = (1.0, 0.0, 0.0, 0.0)
        self._cube_rest_z = self.CUBE_HALF_SIZE

    def _task_state(self, state: np.ndarray) -> None:
        """Writes the task's own fields of the state vector (here cube_pos, when observed)."""
        if "cube_pos" in self.state_layout.names:
            state[self.state_layout.slice("cube_pos")] = self.data.qpos[self._cube_qpos : self._cube_qpos + 3]

    def _make_controller(self) -> ArmController:
        raise NotImplementedError

    def _open_gripper(self) -> None:
        """Puts the gripper fully open, its servo holding it there (at reset)."""
        raise NotImplementedError

    def _gripper_ctrl(self, closed: bool) -> float:
        """The gripper actuator's control for the binary command."""
        raise NotImplementedError

    def gripper_pose(self) -> float:
        """0 fully open .. 1 fully closed."""
        raise NotImplementedError

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self._controller.reset(self._home_qpos)
        self._open_gripper()
        self._gripper_closed = False
        self._reset_task(options)
        mujoco.mj_forward(m, d)

        self._target_quat_wxyz = self._home_quat_wxyz.copy()
        self._reset_tool()
        self._steps = 0
        obs = self._observation()
        if self.render_mode == "human":
            self.render()
        return obs, self._info(success=False)

    def _reset_tool(self) -> None:
        """Moves the tool to where an episode starts (before its first step)."""
        if self.config.tcp_reset_noise > 0:
            # Start from a perturbed tool position: one control step towards a noisy target.
            noise = self.np_random.uniform(-1.0, 1.0, 2) * self.config.tcp_reset_noise
            target = self._controller.site_pos()
            target[:2] += noise
            self._controller.step(
                np.clip(target, self._ws_low, self._ws_high), self._target_quat_wxyz,
                self._n_substeps, self._ik_substeps,
            )

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = self._check_action(action)
        tcp = self.data.site_xpos[self._tcp_site]
        target_pos = np.clip(tcp + self.config.pos_scale * action[:3], self._ws_low, self._ws_high)
        if self.config.action_mode == "xyz_rpy":
            self._target_quat_wxyz = self._rotated_target(action[3:6])

        grip = action[-1]
        if grip >= conventions.GRIPPER_DEAD_BAND:
            self._gripper_closed = True
        elif grip <= -conventions.GRIPPER_DEAD_BAND:
            self._gripper_closed = False
        self.data.ctrl[self._gripper_actuator] = self._gripper_ctrl(self._gripper_closed)

        self._controller.step(target_pos, self._target_quat_wxyz, self._n_substeps, self._ik_substeps)
        self._steps += 1

        success = self.is_success()
        terminated = bool(success) and self.config.terminate_on_success
        truncated = (not terminated) and self._steps >= self.config.max_episode_steps
        obs = self._observation()
        if self.render_mode == "human":
            self.render()
        return obs, self._reward(success), terminated, truncated, self._info(success)

    def render(self) -> np.ndarray | None:
        """rgb_array: (render_height, 2 * render_width, 3) uint8, front | wrist side by side."""
        if self.render_mode == "human":
            self._sync_viewer()
            return None
        if self.render_mode != "rgb_array":
            return None
        if self._video_renderer is None:
            self._video_renderer = self._make_renderer(self.config.render_height, self.config.render_width)
        return np.concatenate(
            [self._render_camera(self._video_renderer, name) for name in self.CAMERAS], axis=1
        )

    def close(self) -> None:
        _close_renderers(self._renderers)
        self._image_renderer = self._video_renderer = None
        if self._viewer is not None:
            self._viewer.close()
            self._viewer = None

    # ------------------------------------------------------------------ task state

    def _reward(self, success: bool) -> float:
        if self.config.reward_type == "sparse" or success:
            return float(success)
        if self.config.task == "reach":
            return -float(np.linalg.norm(self.tcp_pos() - self.reach_target()))
        to_go = float(np.linalg.norm(self.tcp_pos() - self.cube_pos()))
        return -(to_go + max(0.0, self.config.lift_height - self.cube_lift()))

    def reach_target(self) -> np.ndarray:
        return self.cube_pos() + np.array([0.0, 0.0, self.config.reach_height])

    def is_success(self) -> bool:
        if self.config.task == "reach":
            return bool(np.linalg.norm(self.tcp_pos() - self.reach_target()) <= self.config.reach_tolerance)
        return self.cube_lift() >= self.config.lift_height

    def cube_lift(self) -> float:
        """Height of the cube above its resting height, metres."""
        return float(self.data.qpos[self._cube_qpos + 2] - self._cube_rest_z)

    def tcp_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._tcp_site].copy()

    def cube_pos(self) -> np.ndarray:
        return self.data.qpos[self._cube_qpos : self._cube_qpos + 3].copy()

    @property
    def gripper_closed(self) -> bool:
        """The gripper command (True: closing or closed)."""
        return self._gripper_closed

    def is_grasped(self) -> bool:
        """Every gripper pad touches the cube."""
        touching = set()
        for i in range(self.data.ncon):
            g1, g2 = self.data.contact.geom1[i], self.data.contact.geom2[i]
            if g1 == self._cube_geom and g2 in self._pad_geoms:
                touching.add(g2)
            elif g2 == self._cube_geom and g1 in self._pad_geoms:
                touching.add(g1)
        return len(touching) == len(self._pad_geoms)

    # ------------------------------------------------------------------ internals

    def _check_action(self, action: Any) -> np.ndarray:
        return conventions.check_action(action, self.action_space.shape, self.config.action_mode)

    def _rotated_target(self, drot: np.ndarray) -> np.ndarray:
        """Pre-multiplies the current orientation by exp(rot_scale * drot), clipped to rot_limit."""
        current = np.zeros(4)
        mujoco.mju_mat2Quat(current, self.data.site_xmat[self._tcp_site])
        delta = np.zeros(4)
        mujoco.mju_axisAngle2Quat(delta, drot / (np.linalg.norm(drot) + 1e-12), self.config.rot_scale * np.linalg.norm(drot))
        target = np.zeros(4)
        mujoco.mju_mulQuat(target, delta, current)
        # Rotation vector of target relative to home, clipped per axis, then re-applied to home.
        home_inv, rel, rotvec = np.zeros(4), np.zeros(4), np.zeros(3)
        mujoco.mju_negQuat(home_inv, self._home_quat_wxyz)
        mujoco.mju_mulQuat(rel, target, home_inv)
        mujoco.mju_quat2Vel(rotvec, rel, 1.0)
        rotvec = np.clip(rotvec, -self._rot_limit, self._rot_limit)
        angle = np.linalg.norm(rotvec)
        clipped = np.array([1.0, 0.0, 0.0, 0.0])
        if angle > 1e-12:
            mujoco.mju_axisAngle2Quat(clipped, rotvec / angle, angle)
        mujoco.mju_mulQuat(target, clipped, self._home_quat_wxyz)
        return target

    def _observation(self) -> dict[str, np.ndarray]:
        d, state = self.data, self._state_buf
        layout = self.state_layout
        pose = state[layout.slice("tcp_pose")]
        pose[:3] = d.site_xpos[self._tcp_site]
        mujoco.mju_mat2Quat(self._quat, d.site_xmat[self._tcp_site])
        quat_xyzw = conventions.align_quat_sign(conventions.wxyz_to_xyzw(self._quat), self._home_quat_xyzw)
        pose[3:] = quat_xyzw
        mujoco.mj_objectVelocity(self.model, d, mujoco.mjtObj.mjOBJ_SITE, self._tcp_site, self._velocity, 0)
        vel = state[layout.slice("tcp_vel")]
        vel[:3] = self._velocity[3:]  # mujoco returns [angular, linear]
        vel[3:] = self._velocity[:3]
        state[layout.slice("gripper_pose")] = self.gripper_pose()
        self._task_state(state)
        obs = {"state": state.copy()}
        if self.config.image_obs:
            if self._image_renderer is None:
                self._image_renderer = self._make_renderer(self.config.image_height, self.config.image_width)
            for name in self.CAMERAS:
                obs[name] = self._render_camera(self._image_renderer, name)
        return obs

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": bool(success), "cube_lift": self.cube_lift(), "grasped": self.is_grasped()}

    def _make_renderer(self, height: int, width: int) -> mujoco.Renderer:
        try:
            renderer = mujoco.Renderer(self.model, height, width)
            self._renderers.append(renderer)
            return renderer
        except Exception as error:  # the GL backends raise several unrelated types
            raise RuntimeError(RENDER_HELP.format(backend=os.environ.get("MUJOCO_GL"), error=error)) from error

    def _render_camera(self, renderer: mujoco.Renderer, camera: str) -> np.ndarray:
        renderer.update_scene(self.data, camera=self._camera_ids[camera])
        return renderer.render()

    def _sync_viewer(self) -> None:
        if self._viewer is None:
            import mujoco.viewer

            self._viewer = mujoco.viewer.launch_passive(self.model, self.data)
        self._viewer.sync()


def _close_renderers(renderers: list[mujoco.Renderer]) -> None:
    while renderers:
        renderers.pop().close()
