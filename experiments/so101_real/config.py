"""A real SO-101 (or SO-100) picking up a cube: the same observation and action spaces as
``so101_pick_cube_sim_vision``, so a run can start in simulation and continue on the arm.

From this folder (README.md walks through every step):

    python -m robot_infra.tools.calibrate_arm --arm so101 --port /dev/ttyACM0 --output follower.json
    python -m robot_infra.robot_server --backend so101 --serial_port /dev/ttyACM0 \\
        --calibration follower.json --exp_name so101_real        # the arm's PC
    python ../../scripts/record_success_fail.py --exp_name so101_real --labels keyboard
    python ../../scripts/train_classifier.py --exp_name so101_real
    python ../../scripts/record_demos.py --exp_name so101_real --successes_needed 20
    bash run_learner.sh --set agent.init_from=../so101_pick_cube_sim_vision/runs/first_run
    bash run_actor.sh

What the sim task has and the arm lacks: no cube position (vision only, as the sim vision
task), and no force/torque sensor (the follower reports zeros; tcp_force / tcp_torque are not in
``env.state_fields``). Poses are in the arm's base frame, as in the simulator (the MJCF's base
is the world origin there).
"""

from __future__ import annotations

from ml_collections import config_dict

from experiments.real_arm_template.config import make_env, make_expert, make_spaces  # noqa: F401  (the same factories)

# The sim experiment whose spaces this one matches, and whose runs and demos it continues.
SIM_EXPERIMENT = "so101_pick_cube_sim_vision"


def get_config() -> config_dict.ConfigDict:
    from experiments.mappings import load_experiment
    from experiments.real_arm_template.config import get_config as template_config
    from robot_infra.cameras.factory import camera_config
    from sim_envs.kinematics import arm_kinematics

    sim = load_experiment(SIM_EXPERIMENT).get_config()
    c = template_config()
    c.exp_name = "so101_real"
    e = c.env
    e.server_url = "http://127.0.0.1:5000"
    e.control_hz = sim.env.control_hz
    e.max_episode_steps = sim.env.max_episode_steps
    e.pos_scale = sim.env.pos_scale
    # The sim task's box to begin with; measure your own with find_workspace_bounds (README).
    e.workspace_low, e.workspace_high = tuple(sim.env.workspace_low), tuple(sim.env.workspace_high)
    home = arm_kinematics("so101").fk(sim.env.home_qpos)[0]
    e.reset_position = tuple(float(v) for v in home)
    e.reset_quat_xyzw = tuple(sim.env.tcp_quat_xyzw)
    e.reset_noise_xy = 0.01
    e.reset_speed = 0.1  # m/s: a small arm, slow resets
    e.reset_tolerance = 0.01
    e.state_fields = ("tcp_pose", "tcp_vel", "gripper_pose")  # no force/torque sensor
    e.apply_impedance = False  # position servos: no impedance to set
    e.gripper_sleep = 0.3  # the STS3215 jaw takes ~0.3 s to close
    e.image_height, e.image_width = sim.env.image_height, sim.env.image_width
    size = (sim.env.image_width, sim.env.image_height)
    # One entry per camera of the sim task, by its observation name; crops from pick_roi.
    c.cameras = config_dict.ConfigDict({
        "front": camera_config("opencv", "/dev/video0", size=size, loop=False),
        "wrist": camera_config("opencv", "/dev/video2", size=size, loop=False),
    })
    c.classifier = sim.classifier  # the same model shape; trained on this arm's own frames
    c.classifier.checkpoint = "classifier"
    # The sim run's agent, unchanged, so that agent.init_from can restore its checkpoint.
    c.agent = sim.agent
    c.learner.replay_capacity = sim.learner.replay_capacity
    c.learner.samples_per_insert = sim.learner.samples_per_insert
    c.actor.intervention.device = "leader_arm"  # the SO-101 leader; or keyboard, spacemouse, gamepad
    c.actor.intervention.leader_arm.update(arm="so101", port="/dev/ttyACM1", calibration="leader.json",
                                           pos_scale=sim.env.pos_scale)
    c.lock()
    return c
