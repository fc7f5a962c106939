"""Simulated Panda pick-and-place into a bin from the two cameras (front, wrist) plus proprio,
without the objects' positions, with the reward and the episode's success decided by a trained
reward classifier: pick_cube_sim_vision's recipe on the pick-and-place task.

Steps (from this folder), as for pick_cube_sim_vision:

    python ../../scripts/record_success_fail.py --exp_name pick_place_sim_vision
    python ../../scripts/train_classifier.py --exp_name pick_place_sim_vision
    python ../../scripts/record_demos.py --exp_name pick_place_sim_vision --successes_needed 20
    bash run_learner.sh    # terminal 1
    bash run_actor.sh      # terminal 2

The classifier's frames are labelled by the simulator: success once the cube rests in the bin
and the gripper has let go; stages 0 (not held), 1 (held: lifted, carried, over the bin) and 2.
"""

from __future__ import annotations

from ml_collections import config_dict

from experiments.pick_cube_sim_vision import config as pick_cube_sim_vision
from experiments.pick_cube_sim_vision.config import make_env, make_spaces  # noqa: F401  (the same factories)
from experiments.pick_place_sim.config import make_expert  # noqa: F401  (the same expert)


def get_config() -> config_dict.ConfigDict:
    from sim_envs.panda_pick_place import default_config as env_config

    c = pick_cube_sim_vision.on_task("pick_place_sim_vision", "PandaPickPlaceVision-v0", env_config())
    # A success only when p >= 0.95 on 5 steps in a row. With pick-cube's 0.9 on 2 the policy
    # learnt frames the classifier passed: episodes ended after 11-25 steps with reward 1 while the
    # simulator said 0 % (classifier hacking; benchmarks/README.md, "Task suite").
    c.classifier.threshold = 0.95
    c.classifier.success_confirm = 5
    return c
