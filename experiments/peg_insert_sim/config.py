"""Simulated Panda peg insertion from state (proprio, force/torque, the hole's offset from the peg's tip), with the
force-guided scripted expert (sim_envs.experts.PegInsertExpert) as the person who intervenes."""

from __future__ import annotations

import gymnasium as gym
from ml_collections import config_dict

from experiments.base import base_config
from experiments.pick_cube_sim.config import make_env  # noqa: F401  (the same factory: gym.make(env_id, config=env))


def get_config() -> config_dict.ConfigDict:
    from sim_envs.panda_peg_insert import default_config as env_config

    c = base_config()
    c.exp_name = "peg_insert_sim"
    c.env_id = "PandaPegInsert-v0"
    c.env = env_config()
    # Where the hole is from the peg's tip, not where it is in the base frame: with the absolute
    # position the same recipe did not reach 90 % in 5 min on 3 seeds; with the offset it did
    # (benchmarks/README.md, "Task suite"). Force and torque stay in the state. Demos recorded
    # with hole_pos have the same size: re-record them. Files written since demo files name their
    # fields are refused; older ones load with a warning that their fields are not checked.
    c.env.state_fields = ("tcp_pose", "tcp_vel", "gripper_pose", "tcp_force", "tcp_torque", "hole_offset")
    # pick_cube_sim's recipe (screened on the distributed path) without the grasp critic: the
    # hand holds the peg, so the gripper command does nothing.
    c.agent.num_qs = 2
    c.agent.hidden_dims = (64, 64)
    c.agent.actor_lr = 1e-3
    c.agent.critic_lr = 1e-3
    c.agent.backup_entropy = False
    c.agent.init_temperature = 0.01
    c.agent.utd_ratio = 4
    c.agent.batch_size = 128
    c.agent.discount = 0.97
    c.learner.samples_per_insert = 512.0  # batch 128 x UTD 4: one learner step per env step
    c.lock()
    return c


def make_expert(env: gym.Env, config: config_dict.ConfigDict, seed: int | None = None):
    from sim_envs.experts import PegInsertExpert

    return PegInsertExpert(env, noise=config.actor.intervention.noise, seed=config.seed if seed is None else seed)
