"""Hugging Face gym-hil's state pick-cube (the sim LeRobot's HIL-SERL uses) as an experiment.

gym-hil 0.1.14 pins mujoco < 3.9 and this project's own envs need mujoco 4 (and mink >= 1.3,
which needs mujoco >= 3.10), so it runs from a separate environment (commands in README.md,
"Your own env"): gym-hil, this project installed with --no-deps, and the project's other
dependencies at their pins. Nothing of this project's sim is imported on this path.

    bash scripts/run_learner.sh examples/gym_hil_pick_cube.py
    bash scripts/run_actor.sh examples/gym_hil_pick_cube.py

gym-hil's terms, mapped by the adapter: observations ``agent_pos`` (18: joint positions and
velocities, the gripper command 0..255, the pinch point's position) and ``environment_state``
(the cube's position); actions ``[dx, dy, dz]`` in [-1, 1] (2.5 cm per step) and the gripper in
[0, 2] (1 stays, 2 closes); success ``info["succeed"]``; its own gripper penalty
``info["discrete_penalty"]``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from ml_collections import config_dict

from experiments.base import base_config
from serl_launcher.human.base import DeviceAction
from serl_launcher.wrappers.adapter import SpaceAdapter, adapter_config

STEP = 0.025  # metres per step at |action| = 1 (gym-hil's default EE step)


def get_config() -> config_dict.ConfigDict:
    c = base_config()
    c.exp_name = "gym_hil_pick_cube"
    c.env_id = "gym_hil/PandaPickCube-v0"
    c.adapter = adapter_config()
    c.adapter.state_keys = ("agent_pos", "environment_state")
    c.adapter.action_low = (-1.0, -1.0, -1.0, 0.0)
    c.adapter.action_high = (1.0, 1.0, 1.0, 2.0)
    c.adapter.gripper_index = 3
    c.adapter.gripper_close = 1.0  # its high end closes
    c.adapter.success_key = "succeed"
    c.adapter.penalty_key = "discrete_penalty"
    # The agent of experiments/pick_cube_sim/config.py (a discrete grasp critic for the gripper).
    c.agent.learned_gripper = True
    c.agent.num_qs = 2
    c.agent.hidden_dims = (64, 64)
    c.agent.actor_lr = 1e-3
    c.agent.critic_lr = 1e-3
    c.agent.backup_entropy = False
    c.agent.init_temperature = 0.01
    c.agent.utd_ratio = 4
    c.agent.batch_size = 128
    c.agent.discount = 0.97
    c.learner.samples_per_insert = 512.0
    c.lock()
    return c


def make_env(config: config_dict.ConfigDict, render_mode: str | None = None) -> gym.Env:
    import gym_hil  # noqa: F401  (registers its envs)

    # No pause at reset (gym-hil waits 1 s for a person by default; the scripted one needs none).
    env = gym.make(config.env_id, image_obs=False, reset_delay_seconds=0.0, render_mode=render_mode or "rgb_array")
    return SpaceAdapter(env, config.adapter)


class PickExpert:
    """Above the cube, down, close, lift: in the agent's terms (state = agent_pos + cube)."""

    def __init__(self, noise: float = 0.0, seed: int | None = None):
        self.noise, self.rng, self.closed_steps = noise, np.random.default_rng(seed), 0

    def reset(self) -> None:
        self.closed_steps = 0

    def close(self) -> None:
        pass

    def get_action(self, observation) -> DeviceAction:
        state = observation["state"]
        tcp, cube = state[15:18], state[18:21]
        closed = state[14] / 255.0 > 0.5
        xy_error = np.linalg.norm(cube[:2] - tcp[:2])
        if self.closed_steps or (xy_error < 0.008 and tcp[2] - cube[2] < 0.012):
            self.closed_steps += 1
            target = cube + np.array([0.0, 0.0, 0.2]) if self.closed_steps > 6 and closed else tcp
            grip = 1.0
        else:
            target = cube + np.array([0.0, 0.0, 0.0 if xy_error < 0.01 else 0.05])
            grip = -1.0 if closed else 0.0
        move = np.clip((target - tcp) / STEP, -1.0, 1.0)
        if self.noise and not self.closed_steps:
            move = np.clip(move + self.rng.normal(0.0, self.noise, 3), -1.0, 1.0)
        return DeviceAction(np.append(move, grip).astype(np.float32), True)


def make_expert(env: gym.Env, config: config_dict.ConfigDict, seed: int | None = None):
    return PickExpert(config.actor.intervention.noise, config.seed if seed is None else seed)
