"""Simulated SO-101 pick-cube from the two cameras (front, wrist) plus proprio, with the reward
from a trained classifier: pick_cube_sim_vision's recipe on the SO-101 task, and the run a real
SO-101 continues from (``experiments/so101_real``: the same observation and action spaces).

Steps (from this folder), as for pick_cube_sim_vision:

    python ../../scripts/record_success_fail.py --exp_name so101_pick_cube_sim_vision
    python ../../scripts/train_classifier.py --exp_name so101_pick_cube_sim_vision
    python ../../scripts/record_demos.py --exp_name so101_pick_cube_sim_vision --successes_needed 20
    bash run_learner.sh    # terminal 1
    bash run_actor.sh      # terminal 2
"""

from __future__ import annotations

from ml_collections import config_dict

from experiments.pick_cube_sim_vision import config as pick_cube_sim_vision
from experiments.pick_cube_sim_vision.config import make_env, make_expert, make_spaces  # noqa: F401  (the same factories)


def get_config() -> config_dict.ConfigDict:
    from sim_envs.so101_pick_cube import default_config as env_config

    return pick_cube_sim_vision.on_task("so101_pick_cube_sim_vision", "SO101PickCubeVision-v0", env_config())
