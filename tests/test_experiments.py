"""Every registered experiment: its config loads locked, its env matches its agent, its run
scripts exist, and bad names get clear errors."""

from __future__ import annotations

import jax
import pytest

from experiments.mappings import (
    CONFIG_MAPPING,
    apply_overrides,
    env_spaces,
    experiment_dir,
    load_experiment,
)

REAL_EXPERIMENTS = ("real_arm_template", "so101_real")  # below, and tests/test_sim_to_real.py
SIM_EXPERIMENTS = sorted(n for n in CONFIG_MAPPING if n not in REAL_EXPERIMENTS)


@pytest.mark.parametrize("exp_name", SIM_EXPERIMENTS)
def test_experiment_config_env_and_agent_fit(exp_name):
    from serl_launcher.agents.sac import SACAgent

    exp = load_experiment(exp_name)
    config = exp.get_config()
    assert config.exp_name == exp_name
    with pytest.raises(AttributeError):
        config.no_such_key = 1  # locked: a typo in a config file is an error
    for role in ("learner", "actor"):
        assert (experiment_dir(exp_name) / f"run_{role}.sh").is_file()
    kwargs = {"classifier": False} if "classifier" in config else {}
    env = exp.make_env(config, **kwargs)
    try:
        cameras = [k for k, s in env.observation_space.spaces.items() if len(s.shape) == 3]
        assert ("classifier" in config) == bool(cameras)  # image tasks get their reward from a classifier
        for cam in cameras:
            assert env.observation_space[cam].shape == (config.env.image_height, config.env.image_width, 3)
        if config.agent.encoder.freeze_backbone and not config.agent.encoder.pretrained_path:
            # A frozen backbone needs weights (scripts/convert_resnet10.py), none here: refused ...
            with pytest.raises(ValueError, match="convert_resnet10.py"):
                SACAgent.create(jax.random.PRNGKey(0), env.observation_space, env.action_space, config.agent)
            config.agent.encoder.allow_random_frozen = True  # ... unless a random one is meant
        agent = SACAgent.create(jax.random.PRNGKey(0), env.observation_space, env.action_space, config.agent)
        obs, _ = env.reset(seed=0)
        action = agent.policy().sample_actions(obs, jax.random.PRNGKey(1))
        assert env.action_space.contains(action.astype(env.action_space.dtype))
    finally:
        env.close()


def test_vision_experiment_without_a_classifier_says_how_to_get_one(tmp_path):
    exp = load_experiment("pick_cube_sim_vision")
    config = exp.get_config()
    config.classifier.checkpoint = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="record_success_fail.py"):
        exp.make_env(config)


def test_unknown_experiment_and_override_errors():
    with pytest.raises(KeyError, match="known experiments"):
        load_experiment("pick_cube_sm")
    config = load_experiment("pick_cube_sim").get_config()
    apply_overrides(config, ["agent.batch_size=32", "learner.max_seconds=1.5", "transport.key=secret"])
    assert (config.agent.batch_size, config.learner.max_seconds, config.transport.key) == (32, 1.5, "secret")
    with pytest.raises(KeyError, match="no config key 'batch_sise'"):
        apply_overrides(config, ["agent.batch_sise=32"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(config, ["agent.batch_size"])


def test_real_arm_template_runs_against_the_mujoco_robot_server(tmp_path):
    """The real-arm path without hardware: the template's env talks to the robot server (MuJoCo
    backend) over loopback and reads its cameras from a video file; only the config changed."""
    import cv2
    import numpy as np

    from robot_infra.cameras.factory import camera_config
    from robot_infra.robot_server import RobotServer, make_backend
    from serl_launcher.agents.sac import SACAgent

    video = str(tmp_path / "scene.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"FFV1"), 30.0, (160, 120))
    for i in range(60):
        writer.write(np.full((120, 160, 3), 4 * i, np.uint8))
    writer.release()

    exp = load_experiment("real_arm_template")
    config = exp.get_config()
    assert (experiment_dir("real_arm_template") / "README.md").is_file()
    backend = make_backend("mujoco", seed=0)
    server = RobotServer(backend, port=0).start()
    try:
        config.env.server_url = server.url
        config.env.control_hz = 20.0
        with config.unlocked():
            config.cameras = {name: camera_config("opencv", video, size=(128, 128), loop=True)
                              for name in ("front", "wrist")}
        env = exp.make_env(config, classifier=False)
        obs, _ = env.reset(seed=0)
        assert obs["front"].shape == obs["wrist"].shape == (128, 128, 3)
        assert env.observation_space.contains(obs)
        # The learner's view: the same spaces without opening a camera or asking the server.
        assert exp.make_spaces(config) == env_spaces(env) and env_spaces(env).state_layout is not None
        config.agent.encoder.allow_random_frozen = True  # no pretrained weights in the tests
        agent = SACAgent.create(jax.random.PRNGKey(0), env.observation_space, env.action_space, config.agent)
        del agent  # the paper-sized agent builds for this env's spaces
        low, high = np.array(config.env.workspace_low), np.array(config.env.workspace_high)
        for _ in range(5):
            obs, reward, terminated, truncated, info = env.step(np.array([1.0, 1.0, 1.0, -1.0], np.float32))
            assert reward == 0.0 and not terminated and "success" not in info
        assert np.all(obs["state"][:3] >= low - 0.01) and np.all(obs["state"][:3] <= high + 0.01)
        env.close()
        config.classifier.checkpoint = str(tmp_path / "no_classifier")
        with pytest.raises(FileNotFoundError, match="train_classifier.py"):
            exp.make_env(config)
    finally:
        server.stop()
        backend.close()
