"""Bring your own gymnasium env: this one file is a whole experiment, anywhere on disk.

    bash scripts/run_learner.sh ~/my_task/own_env.py        # the learner (demos, runs: beside this file)
    bash scripts/run_actor.sh ~/my_task/own_env.py          # an actor, in another terminal
    python scripts/record_demos.py --exp_name ~/my_task/own_env.py --successes_needed 20

``PointReach`` stands for an env someone else wrote, in its own terms: nested Dict observations,
actions in its own units with the gripper third of four and 0 meaning close, success reported as
``info["succeed"]``. ``SpaceAdapter`` maps it onto the project's contract from the ``adapter``
settings below; each of them is checked against the env when it is built (a wrong bound, leaf or
key is an error that says what to set). Replace the class with ``gym.make("your/Env-v0")``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from ml_collections import config_dict

from experiments.base import base_config
from serl_launcher.human.base import DeviceAction
from serl_launcher.wrappers.adapter import SpaceAdapter, adapter_config

STEP = 0.1  # the env's largest move per step, per axis


class PointReach(gym.Env):
    """A gripper point to bring to a goal and close there (a stand-in for a foreign env)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, max_steps: int = 40):
        self.render_mode, self.max_steps = render_mode, max_steps
        box = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.observation_space = spaces.Dict({
            "robot": spaces.Dict({"pos": box, "gripper": spaces.Box(0.0, 1.0, (1,), np.float32)}),
            "goal": box,
        })
        # dx, dy, gripper (0 close, 1 stay, 2 open), dz
        self.action_space = spaces.Box(np.array([-STEP, -STEP, 0.0, -STEP], np.float32),
                                       np.array([STEP, STEP, 2.0, STEP], np.float32), dtype=np.float32)

    def _obs(self):
        return {"robot": {"pos": self.pos.astype(np.float32), "gripper": np.array([self.closed], np.float32)},
                "goal": self.goal.astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.5, 0.5, 3)
        self.goal = self.np_random.uniform(-0.5, 0.5, 3)
        self.closed, self.steps = 0.0, 0
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64), self.action_space.low, self.action_space.high)
        self.pos = np.clip(self.pos + a[[0, 1, 3]], -1.0, 1.0)
        if a[2] < 0.5:
            self.closed = 1.0
        elif a[2] > 1.5:
            self.closed = 0.0
        self.steps += 1
        succeed = bool(np.linalg.norm(self.pos - self.goal) < 0.08 and self.closed)
        return self._obs(), float(succeed), succeed, self.steps >= self.max_steps, {"succeed": succeed}

    def render(self):
        image = np.zeros((32, 32, 3), np.uint8)
        for point, channel in ((self.pos, 0), (self.goal, 1)):
            u, v = np.clip(((point[:2] + 1.0) * 16).astype(int), 0, 31)
            image[v, u, channel] = 255
        return image


def get_config() -> config_dict.ConfigDict:
    c = base_config()
    c.exp_name = "own_env"
    c.env = config_dict.ConfigDict({"max_steps": 40})
    c.adapter = adapter_config()
    c.adapter.state_keys = ("robot/pos", "robot/gripper", "goal")
    c.adapter.action_low = (-STEP, -STEP, 0.0, -STEP)
    c.adapter.action_high = (STEP, STEP, 2.0, STEP)
    c.adapter.gripper_index = 2  # moved last, the project's gripper place
    c.adapter.gripper_close = -1.0  # the env's low end closes
    c.adapter.gripper_state_key = "robot/gripper"
    c.adapter.success_key = "succeed"
    # The pick-cube recipe's agent (experiments/pick_cube_sim/config.py), for a sparse 0/1 reward.
    c.agent.learned_gripper = True
    c.agent.num_qs = 2
    c.agent.hidden_dims = (64, 64)
    c.agent.actor_lr = 1e-3
    c.agent.critic_lr = 1e-3
    c.agent.backup_entropy = False
    c.agent.init_temperature = 0.01
    c.agent.discount = 0.97
    c.agent.utd_ratio = 4
    c.agent.batch_size = 128
    c.learner.samples_per_insert = 512.0  # batch 128 x UTD 4: one learner step per env step
    c.lock()
    return c


def make_env(config: config_dict.ConfigDict, render_mode: str | None = None) -> gym.Env:
    return SpaceAdapter(PointReach(render_mode, config.env.max_steps), config.adapter)


class ReachExpert:
    """The scripted person, in the agent's terms (state [pos, gripper, goal], actions in [-1, 1])."""

    def __init__(self, noise: float = 0.0, seed: int | None = None):
        self.noise, self.rng = noise, np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass

    def get_action(self, observation) -> DeviceAction:
        state = observation["state"]
        offset = state[4:7] - state[0:3]
        move = np.clip(offset / STEP, -1.0, 1.0) + self.rng.normal(0.0, self.noise, 3)
        grip = 1.0 if np.linalg.norm(offset) < 0.05 else -1.0  # +1 closes
        return DeviceAction(np.clip(np.append(move, grip), -1.0, 1.0).astype(np.float32), True)


def make_expert(env: gym.Env, config: config_dict.ConfigDict, seed: int | None = None):
    return ReachExpert(config.actor.intervention.noise, config.seed if seed is None else seed)
