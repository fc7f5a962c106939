"""Every registered experiment: its config loads locked, its env matches its agent, its run
scripts exist, and bad names get clear errors."""

from __future__ import annotations

import jax
import pytest

from experiments.mappings import CONFIG_MAPPING, apply_overrides, experiment_dir, load_experiment


@pytest.mark.parametrize("exp_name", sorted(CONFIG_MAPPING))
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
