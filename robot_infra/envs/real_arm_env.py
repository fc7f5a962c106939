"""A real arm as a gymnasium env: the observation/action contract of ``sim_envs``, driven through
the robot server (``python -m robot_infra.robot_server``) over HTTP.

Conventions (poses, action layout, gripper sign and dead band) are those of
:mod:`serl_launcher.conventions`, so a policy, a wrapper or an intervention device works the
same in sim and here.

Observation ``state``: float32, the fields of ``config.state_fields`` in this order (a subset
keeps the order):

=============  ====  ===================================================================
field          size  meaning
=============  ====  ===================================================================
tcp_pose       7     tool position (m, base frame) + quaternion xyzw, sign aligned with
                     the reset orientation
tcp_vel        6     linear (m/s) then angular (rad/s) tool velocity, base frame
gripper_pose   1     0 fully open .. 1 fully closed
tcp_force      3     external force on the hand (N, base frame), clipped to +-force_bound
tcp_torque     3     external torque about the tool (N m, base frame), clipped to
                     +-torque_bound
=============  ====  ===================================================================

With the default fields the vector has 20 entries. One uint8 (image_height, image_width, 3)
array per camera joins it, under the camera's name.

Actions: ``[dx, dy, dz, gripper]`` (``action_mode="xyz"``, orientation held at the reset
orientation) or ``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` (``"xyz_rpy"``), each in [-1, 1].
The target is the last observed pose moved by ``pos_scale * a[:3]`` metres (and rotated by a
base-frame rotation vector ``rot_scale * a[3:6]``), its position clipped to the workspace box
and its rotation from the reset orientation clipped per axis to ``rot_limit``. The gripper
closes at ``a[-1] >= 0.5``, opens at ``<= -0.5``, and keeps its command in between.

Timing: one step sends its commands, sleeps until ``1 / control_hz`` seconds after the step
began (``time.monotonic``), then reads the state, so steps come at the control rate whatever
the policy's inference time (as long as it is shorter).

Reward: always 0 and no ``info["success"]``: a real arm knows neither, the reward classifier
(:mod:`serl_launcher.wrappers.classifier_reward`) supplies both. Episodes truncate after
``max_episode_steps``; they never terminate by themselves.

Reset: clear errors, a joint reset every ``joint_reset_period`` episodes, open the gripper,
then move (at ``reset_speed``, with the stiffer ``reset_impedance``) to the reset pose with
optional uniform noise in x, y, z and yaw, and wait until the tool is within
``reset_tolerance``; then switch to the compliant ``impedance``.

Failures: a server that does not answer raises :class:`RobotConnectionError` naming the URL
and the request after ``1 + retries`` attempts of ``request_timeout`` seconds each (with
backoff), so a dropped server never hangs the actor. An arm in error (the server answers 409)
is cleared and the command sent again (``recover_errors``); an error that will not clear yet or
comes back (a servo bus silent for a moment) is retried with backoff for up to
``recover_timeout`` seconds per step or reset, each try listed in ``info["robot_errors"]``,
then raised. Constructing the env makes no request (a learner builds it for its spaces only).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from dm_robotics.transformations import transformations as tr
from gymnasium import spaces
from ml_collections import config_dict

from robot_infra.robot_server.backend import DEFAULT_IMPEDANCE, IMPEDANCE_LIMITS
from robot_infra.robot_server.client import RobotClient, RobotServerError
from serl_launcher import conventions

log = logging.getLogger(__name__)

STATE_FIELDS = ("tcp_pose", "tcp_vel", "gripper_pose", "tcp_force", "tcp_torque")
ACTION_LAYOUTS = conventions.ACTION_LAYOUTS


def default_config() -> config_dict.ConfigDict:
    """Every default of the real-arm env. Locked: an unknown key raises instead of being ignored."""
    c = config_dict.ConfigDict()
    # The robot server.
    c.server_url = "http://127.0.0.1:5000"
    c.request_timeout = 0.5  # seconds for one attempt of a state, pose or gripper request
    c.reset_request_timeout = 30.0  # seconds for a joint reset (the arm moves while we wait)
    c.retries = 2  # further attempts after one that got no answer
    c.retry_backoff = 0.1  # seconds before the first retry, doubled each retry
    # Timing.
    c.control_hz = 10.0
    c.max_episode_steps = 100  # truncation, never termination
    # Actions.
    c.action_mode = "xyz"  # "xyz": [dx, dy, dz, gripper]; "xyz_rpy": adds droll, dpitch, dyaw
    c.pos_scale = 0.02  # metres per step at |a| = 1
    c.rot_scale = 0.1  # radians per step at |a| = 1
    c.workspace_low = (0.3, -0.25, 0.02)  # clip box for the commanded tool position, metres
    c.workspace_high = (0.65, 0.25, 0.4)
    c.rot_limit = (0.6, 0.6, 1.6)  # |rotation vector| from the reset orientation, per axis
    c.gripper_sleep = 0.0  # seconds to wait after a gripper toggle (a slow real hand: ~0.6)
    # Reset.
    c.reset_position = (0.45, 0.0, 0.3)
    c.reset_quat_xyzw = (1.0, 0.0, 0.0, 0.0)  # gripper pointing straight down
    c.reset_noise_xy = 0.0  # metres, uniform in [-n, n], per axis
    c.reset_noise_z = 0.0
    c.reset_noise_yaw = 0.0  # radians about the base z axis
    c.reset_speed = 0.2  # m/s of the move to the reset pose
    c.reset_rot_speed = 1.0  # rad/s
    c.reset_tolerance = 0.01  # metres from the reset position that count as there
    c.reset_timeout = 10.0  # seconds to get there, or the reset raises
    c.joint_reset_period = 0  # a joint reset every N episodes (0: never)
    c.reset_scene = False  # ask the server to put the task's objects back (only a simulator can)
    c.open_gripper_on_reset = True
    c.recover_errors = True  # clear errors at reset, and in a step whose command met one
    c.recover_timeout = 10.0  # seconds a step (or reset) keeps clearing and resending while the
    # error comes back or will not clear (a bus hiccup, a paused driver) before it raises; 0: one
    # clear and one resend
    # Impedance (robot_infra.robot_server.backend.IMPEDANCE_LIMITS): compliant while the policy
    # acts, stiffer while resetting.
    c.apply_impedance = True
    c.impedance = config_dict.ConfigDict(dict(DEFAULT_IMPEDANCE))
    c.reset_impedance = config_dict.ConfigDict(
        {**DEFAULT_IMPEDANCE, "translational_stiffness": 3000.0, "translational_damping": 109.0,
         "rotational_stiffness": 250.0, "rotational_damping": 9.0, "translational_clip": 0.05}
    )
    # Observations.
    c.state_fields = STATE_FIELDS
    c.force_bound = 500.0  # N, tcp_force's observation bound
    c.torque_bound = 100.0  # N m
    c.image_height = 128
    c.image_width = 128
    c.lock()
    return c


def make_config(overrides: Mapping[str, Any] | None = None) -> config_dict.ConfigDict:
    """default_config() with `overrides` applied; an unknown key raises KeyError."""
    cfg = default_config()
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise KeyError(f"unknown RealArmEnv config key {key!r}; known keys: {sorted(cfg.keys())}")
        if isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                if sub_key not in cfg[key]:
                    raise KeyError(f"unknown RealArmEnv config key {key}.{sub_key}; known: {sorted(cfg[key].keys())}")
                cfg[key][sub_key] = sub_value
        else:
            cfg[key] = tuple(value) if isinstance(value, list) else value
    validate_config(cfg)
    return cfg


def validate_config(c: config_dict.ConfigDict) -> None:
    if c.action_mode not in ACTION_LAYOUTS:
        raise ValueError(f"action_mode must be one of {list(ACTION_LAYOUTS)}, got {c.action_mode!r}")
    low, high = np.array(c.workspace_low, dtype=float), np.array(c.workspace_high, dtype=float)
    if low.shape != (3,) or high.shape != (3,) or np.any(low >= high):
        raise ValueError(f"workspace_low {c.workspace_low} must be below workspace_high {c.workspace_high}")
    reset = np.array(c.reset_position, dtype=float)
    if reset.shape != (3,) or np.any(reset < low) or np.any(reset > high):
        raise ValueError(f"reset_position {c.reset_position} must lie in the workspace box {c.workspace_low}..{c.workspace_high}")
    if len(c.reset_quat_xyzw) != 4 or not 0.9 < np.linalg.norm(c.reset_quat_xyzw) < 1.1:
        raise ValueError(f"reset_quat_xyzw must be a unit quaternion (x, y, z, w), got {c.reset_quat_xyzw}")
    for key in ("control_hz", "pos_scale", "rot_scale", "request_timeout", "reset_request_timeout",
                "reset_speed", "reset_rot_speed", "reset_tolerance", "reset_timeout", "force_bound", "torque_bound"):
        if not c[key] > 0:
            raise ValueError(f"{key} must be positive, got {c[key]}")
    if c.retries < 0 or c.retry_backoff < 0 or c.gripper_sleep < 0 or c.joint_reset_period < 0 or c.recover_timeout < 0:
        raise ValueError("retries, retry_backoff, gripper_sleep, joint_reset_period and recover_timeout must not be negative")
    if c.max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {c.max_episode_steps}")
    conventions.StateLayout.choose(c.state_fields, STATE_FIELDS, owner="RealArmEnv")
    for group in ("impedance", "reset_impedance"):
        for name, value in c[group].items():
            lo, hi, unit = IMPEDANCE_LIMITS[name]
            if not lo <= value <= hi:
                raise ValueError(f"{group}.{name} must be in [{lo:g}, {hi:g}] {unit}, got {value}")


def quat_to_rotvec(quat_wxyz: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> (3,) rotation vector of angle <= pi."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    if q[0] < 0:
        q = -q
    sin_half = float(np.linalg.norm(q[1:]))
    if sin_half < 1e-12:
        return np.zeros(3)
    return q[1:] / sin_half * (2.0 * math.atan2(sin_half, q[0]))


class RealArmEnv(gym.Env):
    """See the module docstring.

    Args:
        config: from :func:`make_config` (keyword overrides also work, as in the sim env).
        cameras: name -> any object whose ``read()`` returns the latest HxWx3 uint8 RGB frame;
            frames of another size are resized. The env reads them; their owner closes them.
        render_mode: None or "rgb_array" (the cameras' latest frames side by side).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        config: config_dict.ConfigDict | None = None,
        cameras: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        if config is None:
            config = make_config(overrides)
        elif overrides:
            config = make_config({**config.to_dict(), **overrides})
        else:
            validate_config(config)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.config, self.render_mode = config, render_mode
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(config.control_hz))}
        self.cameras = dict(cameras or {})
        for name, camera in self.cameras.items():
            if name == "state" or not callable(getattr(camera, "read", None)):
                raise ValueError(f"camera {name!r} must be named other than 'state' and have a read() method")

        self.client = RobotClient(
            config.server_url, timeout=config.request_timeout, retries=config.retries,
            backoff=config.retry_backoff, reset_timeout=config.reset_request_timeout,
        )
        self.state_layout = conventions.StateLayout.choose(config.state_fields, STATE_FIELDS, owner="RealArmEnv")
        bounds = {
            "tcp_pose": ([-2.0] * 3 + [-1.0] * 4, [2.0] * 3 + [1.0] * 4),
            "tcp_vel": ([-10.0] * 6, [10.0] * 6),
            "gripper_pose": ([0.0], [1.0]),
            "tcp_force": ([-config.force_bound] * 3, [config.force_bound] * 3),
            "tcp_torque": ([-config.torque_bound] * 3, [config.torque_bound] * 3),
        }
        self._state_low = np.concatenate([bounds[n][0] for n in self.state_layout.names]).astype(np.float32)
        self._state_high = np.concatenate([bounds[n][1] for n in self.state_layout.names]).astype(np.float32)
        obs_spaces: dict[str, spaces.Space] = {"state": spaces.Box(self._state_low, self._state_high, dtype=np.float32)}
        self._image_shape = (config.image_height, config.image_width, 3)
        for name in self.cameras:
            obs_spaces[name] = spaces.Box(0, 255, self._image_shape, np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(-1.0, 1.0, (4 if config.action_mode == "xyz" else 7,), np.float32)

        self._ws_low = np.array(config.workspace_low, dtype=np.float64)
        self._ws_high = np.array(config.workspace_high, dtype=np.float64)
        self._rot_limit = np.array(config.rot_limit, dtype=np.float64)
        quat = np.array(config.reset_quat_xyzw, dtype=np.float64)
        self._reset_quat_xyzw = quat / np.linalg.norm(quat)
        self._reset_quat_wxyz = conventions.xyzw_to_wxyz(self._reset_quat_xyzw)
        self._pose = np.zeros(7)  # last observed tool pose (sign-aligned quaternion xyzw)
        self._target_quat_wxyz = self._reset_quat_wxyz.copy()
        self._gripper_closed = False
        self._episodes = 0
        self._steps = 0
        self._images: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """`options`: ``joint_reset`` (bool) forces or skips this reset's joint reset."""
        super().reset(seed=seed)
        options = options or {}
        c, client = self.config, self.client
        cleared = self._clear_errors() if c.recover_errors else []
        periodic = c.joint_reset_period > 0 and self._episodes % c.joint_reset_period == 0
        if options.get("joint_reset", periodic or c.reset_scene):
            client.joint_reset(scene=c.reset_scene)
        if c.apply_impedance:
            client.set_impedance(**c.reset_impedance.to_dict())
        if c.open_gripper_on_reset:
            client.gripper("open")

        position = np.array(c.reset_position, dtype=np.float64)
        position[:2] += self.np_random.uniform(-1.0, 1.0, 2) * c.reset_noise_xy
        position[2] += self.np_random.uniform(-1.0, 1.0) * c.reset_noise_z
        position = np.clip(position, self._ws_low, self._ws_high)
        yaw = self.np_random.uniform(-1.0, 1.0) * c.reset_noise_yaw
        quat = tr.quat_mul(tr.axisangle_to_quat(np.array([0.0, 0.0, yaw])), self._reset_quat_wxyz)
        state = self._move_to(position, quat)
        if c.apply_impedance:
            client.set_impedance(**c.impedance.to_dict())

        self._target_quat_wxyz = quat
        self._gripper_closed = state["gripper_command"] == "close"
        self._episodes += 1
        self._steps = 0
        info: dict[str, Any] = {"robot_errors": cleared} if cleared else {}
        return self._observation(state), info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        started = time.monotonic()
        c = self.config
        a = self._check_action(action)
        info: dict[str, Any] = {}
        deadline = started + c.recover_timeout  # one budget for the step's commands' recovery

        grip = a[-1]
        toggled = False
        if grip >= conventions.GRIPPER_DEAD_BAND and not self._gripper_closed:
            self._command(lambda: self.client.gripper("close"), info, deadline)
            self._gripper_closed, toggled = True, True
        elif grip <= -conventions.GRIPPER_DEAD_BAND and self._gripper_closed:
            self._command(lambda: self.client.gripper("open"), info, deadline)
            self._gripper_closed, toggled = False, True

        position = np.clip(self._pose[:3] + c.pos_scale * a[:3], self._ws_low, self._ws_high)
        if c.action_mode == "xyz_rpy":
            self._target_quat_wxyz = self._rotated_target(a[3:6])
        target = np.concatenate([position, conventions.wxyz_to_xyzw(self._target_quat_wxyz)])
        self._command(lambda: self.client.set_pose(target.tolist()), info, deadline)
        if toggled and c.gripper_sleep > 0:
            time.sleep(c.gripper_sleep)

        remaining = 1.0 / c.control_hz - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        state = self.client.state()
        obs = self._observation(state)
        self._steps += 1
        truncated = self._steps >= c.max_episode_steps
        return obs, 0.0, False, truncated, info

    def render(self) -> np.ndarray | None:
        """rgb_array: the cameras' latest frames side by side, (H, n * W, 3); None without cameras."""
        if self.render_mode != "rgb_array" or not self._images:
            return None
        return np.concatenate([self._images[name] for name in self.cameras], axis=1)

    def close(self) -> None:
        """Nothing to release: HTTP requests hold no connection; the cameras' owner closes them."""

    # ------------------------------------------------------------------ internals

    def _check_action(self, action: Any) -> np.ndarray:
        return conventions.check_action(action, self.action_space.shape, self.config.action_mode)

    def _command(self, send, info: dict[str, Any], deadline: float) -> None:
        """Sends a command. If the arm is in error (409) and recover_errors is on, clears the
        error (see _clear_errors) and sends again, until the command goes through; past
        `deadline` (time.monotonic()) the next refusal is raised. The first clear and resend
        always happen. What was cleared goes to info["robot_errors"]."""
        tried = False
        while True:
            try:
                send()
                return
            except RobotServerError as error:
                if error.status != 409 or not self.config.recover_errors or (tried and time.monotonic() >= deadline):
                    raise
            tried = True
            info.setdefault("robot_errors", []).extend(self._clear_errors(deadline))

    def _clear_errors(self, deadline: float | None = None) -> list[str]:
        """The errors cleared, and a line for each clear that was refused and retried. A clear
        refused with 409 (the error persists: a bus that does not answer yet) is retried with
        backoff until `deadline` (default: recover_timeout from now), then the refusal is raised;
        the first try always happens."""
        if deadline is None:
            deadline = time.monotonic() + self.config.recover_timeout
        wait, notes = 0.1, []
        while True:
            try:
                return notes + self.client.clear_errors()
            except RobotServerError as error:
                left = deadline - time.monotonic()
                if error.status != 409 or left <= 0:
                    raise
                pause = min(wait, left)
                notes.append(f"clear_errors refused, tried again after {pause:.2g} s: {error}")
                log.warning("robot: %s; clearing again in %.2g s", error, pause)
                time.sleep(pause)
                wait = min(2 * wait, 1.0)

    def _rotated_target(self, drot: np.ndarray) -> np.ndarray:
        """Pre-multiplies the current orientation by exp(rot_scale * drot), then clips the
        rotation from the reset orientation per axis to rot_limit. Quaternions wxyz."""
        current = conventions.xyzw_to_wxyz(self._pose[3:])
        target = tr.quat_mul(tr.axisangle_to_quat(self.config.rot_scale * drot), current)
        relative = tr.quat_mul(target, tr.quat_inv(self._reset_quat_wxyz))
        rotvec = np.clip(quat_to_rotvec(relative), -self._rot_limit, self._rot_limit)
        return tr.quat_mul(tr.axisangle_to_quat(rotvec), self._reset_quat_wxyz)

    def _move_to(self, position: np.ndarray, quat_wxyz: np.ndarray) -> dict[str, Any]:
        """Moves the target to the pose along a line at the reset speeds, then waits until the
        tool is within reset_tolerance (and the gripper open, if asked). Returns the last state."""
        c, client = self.config, self.client
        period = 1.0 / c.control_hz
        state = self._checked(client.state())
        start_pos = np.array(state["tcp_pose"][:3])
        start_quat = conventions.align_quat_sign(conventions.xyzw_to_wxyz(np.array(state["tcp_pose"][3:])), quat_wxyz)
        distance = float(np.linalg.norm(position - start_pos))
        relative = tr.quat_mul(quat_wxyz, tr.quat_inv(start_quat))
        angle = 2.0 * math.acos(min(1.0, abs(float(relative[0]))))
        duration = max(distance / c.reset_speed, angle / c.reset_rot_speed)
        n = max(1, math.ceil(duration / period))
        for k in range(1, n + 1):
            tick = time.monotonic()
            fraction = k / n
            waypoint_quat = tr.quat_slerp(start_quat, quat_wxyz, fraction)
            waypoint = np.concatenate([start_pos + (position - start_pos) * fraction,
                                       conventions.wxyz_to_xyzw(waypoint_quat)])
            client.set_pose(waypoint.tolist())
            if k < n:
                time.sleep(max(0.0, period - (time.monotonic() - tick)))

        deadline = time.monotonic() + c.reset_timeout
        while True:
            state = self._checked(client.state())
            error = float(np.linalg.norm(np.array(state["tcp_pose"][:3]) - position))
            gripper_ok = not c.open_gripper_on_reset or state["gripper_pose"] <= 0.1
            if error <= c.reset_tolerance and gripper_ok and not state["errors"]:
                return state
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"reset: the arm did not reach {np.round(position, 3).tolist()} within "
                    f"{c.reset_timeout:g} s (tool at {np.round(state['tcp_pose'][:3], 3).tolist()}, "
                    f"{error * 1000:.0f} mm away; gripper {state['gripper_pose']:.2f} closed; "
                    f"errors {state['errors']}) via {client.url}"
                )
            time.sleep(min(period, 0.05))

    def _checked(self, state: dict[str, Any]) -> dict[str, Any]:
        needed = ("tcp_pose", "tcp_vel", "tcp_force", "tcp_torque", "gripper_pose", "gripper_command", "errors")
        missing = [key for key in needed if key not in state]
        if missing:
            raise RuntimeError(f"the robot server at {self.client.url} sent a state without {missing}")
        return state

    def _observation(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        state = self._checked(state)
        pose = np.array(state["tcp_pose"], dtype=np.float64)
        pose[3:] = conventions.align_quat_sign(pose[3:], self._reset_quat_xyzw)
        self._pose = pose
        values = {
            "tcp_pose": pose,
            "tcp_vel": state["tcp_vel"],
            "gripper_pose": state["gripper_pose"],
            "tcp_force": state["tcp_force"],
            "tcp_torque": state["tcp_torque"],
        }
        vector = self.state_layout.pack(values)
        np.clip(vector, self._state_low, self._state_high, out=vector)
        obs = {"state": vector}
        for name, camera in self.cameras.items():
            obs[name] = self._frame(name, camera)
        self._images = {name: obs[name] for name in self.cameras}
        return obs

    def _frame(self, name: str, camera: Any) -> np.ndarray:
        frame = camera.read()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            described = f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else repr(frame)[:80]
            raise RuntimeError(f"camera {name!r} read() must return an HxWx3 uint8 array, got {described}")
        if frame.shape != self._image_shape:
            import cv2

            frame = cv2.resize(frame, (self._image_shape[1], self._image_shape[0]), interpolation=cv2.INTER_AREA)
        return np.array(frame, copy=True)
