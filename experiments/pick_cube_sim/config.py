"""Simulated Panda pick-cube from state (proprio + cube position), with the scripted expert as
the person who intervenes."""

from __future__ import annotations

import gymnasium as gym
from ml_collections import config_dict

from experiments.base import base_config


def get_config() -> config_dict.ConfigDict:
    from sim_envs.panda_pick_cube import default_config as env_config

    c = base_config()
    c.exp_name = "pick_cube_sim"
    c.env_id = "PandaPickCube-v0"
    c.env = env_config()
    # Screened in-process on this 2-core CPU (benchmarks/inprocess_pick_cube.py): a discrete grasp
    # critic for the gripper, 2 critics, no entropy backup, a small initial temperature and UTD 2
    # learned pick-cube from 20 demos to 95-100 % in ~15k env steps; RLPD's 10 critics were
    # too slow per update here for the same wall-clock.
    c.agent.learned_gripper = True
    c.agent.num_qs = 2
    c.agent.backup_entropy = False
    c.agent.init_temperature = 0.01
    c.agent.utd_ratio = 2
    c.agent.batch_size = 128
    c.agent.discount = 0.97
    c.learner.samples_per_insert = 256.0  # batch 128 x UTD 2: one learner step per env step
    c.lock()
    return c


def make_env(config: config_dict.ConfigDict, render_mode: str | None = None) -> gym.Env:
    import sim_envs  # noqa: F401  (registers the envs)

    return gym.make(config.env_id, config=config.env, render_mode=render_mode)


def make_expert(env: gym.Env, config: config_dict.ConfigDict, seed: int | None = None):
    from sim_envs.experts import PickCubeExpert

    return PickCubeExpert(env, noise=config.actor.intervention.noise, seed=config.seed if seed is None else seed)
