"""Simulated Panda pick-and-place into a bin from state (proprio, the cube's and the bin's
positions), with the scripted expert (sim_envs.experts.PickPlaceExpert) as the person who
intervenes. The recipe is pick_cube_sim's (the first stages are that task); only the env and the
expert differ."""

from __future__ import annotations

import gymnasium as gym
from ml_collections import config_dict

from experiments.pick_cube_sim import config as pick_cube_sim
from experiments.pick_cube_sim.config import make_env  # noqa: F401  (the same factory: gym.make(env_id, config=env))


def get_config() -> config_dict.ConfigDict:
    from sim_envs.panda_pick_place import default_config as env_config

    c = pick_cube_sim.get_config()
    c.exp_name = "pick_place_sim"
    c.env_id = "PandaPickPlace-v0"
    c.env = env_config()
    return c


def make_expert(env: gym.Env, config: config_dict.ConfigDict, seed: int | None = None):
    from sim_envs.experts import PickPlaceExpert

    return PickPlaceExpert(env, noise=config.actor.intervention.noise, seed=config.seed if seed is None else seed)
