"""Template for a task on a real arm: copy this folder, rename it, register it in
experiments/mappings.py, then fill in what the steps below measure. README.md (this folder)
walks through every step; in short, from this folder:

    python -m robot_infra.robot_server --backend franka --robot_ip 172.16.0.2   # the arm's PC
    python -m robot_infra.tools.check_cameras --source front=/dev/video0 --out camera_check
    python -m robot_infra.tools.pick_roi --image camera_check/front_raw.png --camera front
    python -m robot_infra.tools.find_workspace_bounds --url http://127.0.0.1:5000/state
    python ../../scripts/record_success_fail.py --exp_name real_arm_template --labels keyboard
    python ../../scripts/train_classifier.py --exp_name real_arm_template
    python ../../scripts/record_demos.py --exp_name real_arm_template --successes_needed 20
    bash run_learner.sh          # on the GPU machine
    bash run_actor.sh            # next to the arm; a person holds the SpaceMouse

Only this config changes between the simulator and hardware: ``env.server_url`` points at a
robot server (its MuJoCo backend, ``--backend mujoco``, runs the same path without hardware) and
``cameras`` at real cameras (or video files).
"""

from __future__ import annotations

import gymnasium as gym
from ml_collections import config_dict

from experiments.base import base_config, with_classifier_reward
from serl_launcher.classifier import classifier_config


def get_config() -> config_dict.ConfigDict:
    from robot_infra.cameras.factory import camera_config
    from robot_infra.envs.real_arm_env import default_config as env_config

    c = base_config()
    c.exp_name = "real_arm_template"
    c.env = env_config()
    c.env.server_url = "http://127.0.0.1:5000"
    # From find_workspace_bounds (metres, base frame) and the reset pose you want.
    c.env.workspace_low = (0.35, -0.15, 0.02)
    c.env.workspace_high = (0.6, 0.15, 0.25)
    c.env.reset_position = (0.45, 0.0, 0.2)
    c.env.reset_noise_xy = 0.02
    c.env.max_episode_steps = 100
    c.env.image_height = c.env.image_width = 128
    # One entry per camera, keyed by its observation name; crops from pick_roi (x, y, w, h).
    c.cameras = config_dict.ConfigDict({
        "front": camera_config("opencv", "/dev/video0", crop=(0, 0, 640, 480), size=(128, 128)),
        "wrist": camera_config("realsense", "000000000000", size=(128, 128)),
    })
    c.classifier = classifier_config()
    c.classifier.image_keys = ("front", "wrist")
    c.classifier.threshold = 0.85  # choose from train_classifier.py's precision / recall table
    # A GPU learner, sized as the HIL-SERL paper (see pick_cube_sim_vision_gpu): frozen
    # ResNet-10 from an .npz you give (agent.encoder.pretrained_path), batch 256, ratio 2.
    a = c.agent
    a.augmentation = "random_shift"
    a.encoder.backbone = "resnet10"
    a.encoder.freeze_backbone = True
    a.encoder.pretrained_path = ""
    a.encoder.bottleneck_dim = 256
    a.learned_gripper = True
    a.num_qs = 2
    a.num_min_qs = None
    a.utd_ratio = 2
    a.batch_size = 256
    a.discount = 0.97
    c.actor.intervention.device = "spacemouse"  # a person: keyboard, spacemouse, gamepad, leader_arm
    c.learner.samples_per_insert = 512.0  # batch 256 x UTD 2: at most one learner step per env step
    c.actor.backpressure = False  # the arm paces itself (control_hz) and never waits for the learner
    c.simulated = False  # no live evaluator, no in-process loop: one process drives the arm
    c.lock()
    return c


def make_env(config: config_dict.ConfigDict, render_mode: str | None = None, classifier: bool = True) -> gym.Env:
    """The arm through its robot server, with the configured cameras; the reward and the
    episode's success from the classifier (`classifier=False`: none, for recording frames)."""
    from robot_infra.cameras.factory import make_cameras
    from robot_infra.envs.real_arm_env import RealArmEnv

    cameras = make_cameras(config.cameras)
    env = _ClosesCameras(RealArmEnv(config.env, cameras=cameras, render_mode=render_mode), cameras)
    return with_classifier_reward(env, config) if classifier else env


class _Unplugged:
    """A camera placeholder for building spaces only; reading it is a bug."""

    def read(self):
        raise RuntimeError("make_spaces() envs have no cameras to read")


def make_spaces(config: config_dict.ConfigDict):
    """The spaces and state layout for the learner, which may run on a machine with neither
    the arm's cameras nor the classifier: nothing is opened and no request is made."""
    from experiments.mappings import env_spaces
    from robot_infra.envs.real_arm_env import RealArmEnv

    return env_spaces(RealArmEnv(config.env, cameras={name: _Unplugged() for name in config.cameras}))


class _ClosesCameras(gym.Wrapper):
    """Stops the camera reader threads when the env closes (the env itself does not own them)."""

    def __init__(self, env: gym.Env, cameras):
        super().__init__(env)
        self._cameras = cameras

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._cameras.close()


def make_expert(env: gym.Env, config: config_dict.ConfigDict, seed: int | None = None):
    """The person's device drives demos and frame recording (there is no scripted expert, so
    there is nothing to seed)."""
    from experiments.mappings import resolve_path
    from serl_launcher.human.devices import device_kwargs, make_device

    intervention = config.actor.intervention
    kind = intervention.device
    kwargs = device_kwargs(kind, intervention)
    if kwargs.get("calibration"):  # a leader arm's calibration file: relative to this folder
        kwargs["calibration"] = str(resolve_path(config.exp_name, kwargs["calibration"]))
    return make_device(kind, int(env.action_space.shape[-1]), **kwargs)
