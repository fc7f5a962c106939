"""Simulated SO-101 pick-cube from state (proprio + cube position), with the scripted expert as
the person who intervenes. The recipe is pick_cube_sim's (the same task on a smaller arm); only
the env differs."""

from __future__ import annotations

from ml_collections import config_dict

from experiments.pick_cube_sim import config as pick_cube_sim
from experiments.pick_cube_sim.config import make_env, make_expert  # noqa: F401  (the same factories)


def get_config() -> config_dict.ConfigDict:
    from sim_envs.so101_pick_cube import default_config as env_config

    c = pick_cube_sim.get_config()
    c.exp_name = "so101_pick_cube_sim"
    c.env_id = "SO101PickCube-v0"
    c.env = env_config()
    return c
