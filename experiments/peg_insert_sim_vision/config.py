"""Simulated Panda peg insertion from the two cameras (front, wrist) plus proprio and the wrist's
force/torque, without the hole's position, with the reward and the episode's success decided by
a trained reward classifier: pick_cube_sim_vision's recipe on the peg task, without the grasp
critic (the hand keeps the peg).

The steps are pick_cube_sim_vision's (its docstring) with ``--exp_name peg_insert_sim_vision``:
labelled frames, the classifier, demos, then this folder's run_learner.sh and run_actor.sh. The
frames are labelled by the simulator: success once the peg's tip is 2 cm deep in the hole. Time
to 90 % (one seed): benchmarks/README.md, "Task suite".
"""

from __future__ import annotations

from ml_collections import config_dict

from experiments.peg_insert_sim.config import make_expert  # noqa: F401  (the same expert)
from experiments.pick_cube_sim_vision import config as pick_cube_sim_vision
from experiments.pick_cube_sim_vision.config import make_env, make_spaces  # noqa: F401  (the same factories)


def get_config() -> config_dict.ConfigDict:
    from sim_envs.panda_peg_insert import default_config as env_config

    c = pick_cube_sim_vision.on_task("peg_insert_sim_vision", "PandaPegInsertVision-v0", env_config())
    c.agent.learned_gripper = False  # the gripper command does nothing: the hand holds the peg
    return c
