"""The evaluator role on the in-process transport twin (the subprocess path is in
test_entry_points' quickstart test): what it writes, and the target that stops a run."""

import json
import time

import numpy as np
import pytest

from experiments.launch import SMOKE_SETTINGS
from experiments.mappings import apply_overrides, load_experiment
from serl_launcher.evaluator import TARGET_FILE, Evaluator, TargetWatch, target_reached
from serl_launcher.learner import policy_params_numpy
from serl_launcher.transport import LocalHub
from serl_launcher.utils.metrics import read_metrics


def test_evaluator_scores_published_params_and_writes_the_target(tmp_path):
    import jax

    from serl_launcher.agents.sac import SACAgent

    exp = load_experiment("pick_cube_sim")
    config = exp.get_config()
    apply_overrides(config, [*SMOKE_SETTINGS, "eval.episodes=3", "eval.every_s=0.0", "eval.until_success=0.0"])
    env = exp.make_env(config)
    agent = SACAgent.create(jax.random.PRNGKey(1), env.observation_space, env.action_space, config.agent)
    hub = LocalHub()
    server = hub.server(lambda *a: None).start()
    watch = TargetWatch(tmp_path, enabled=True, period=0.0, epoch=lambda: server.epoch)
    restarted = TargetWatch(tmp_path, enabled=True, period=0.0, epoch=lambda: "another learner")
    evaluator = Evaluator(config, env, hub.client("evaluator"), tmp_path)
    (tmp_path / "config.json").write_text("{}")  # the learner's run folder
    try:
        server.publish_params(0, policy_params_numpy(agent), env_steps=0)  # untrained: skipped
        server.publish_params(7, policy_params_numpy(agent), env_steps=123)
        assert watch() is None
        summary = evaluator.run(max_evaluations=5)
    finally:
        evaluator.close()
        server.close()
    (record,) = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/success_rate" in r]
    assert summary["evaluations"] == 1 and record["step"] == 7 and record["eval/learner_step"] == 7
    assert record["eval/env_steps"] == 123 and record["eval/episodes"] == 3
    assert record["eval/success_ci_low"] <= record["eval/success_rate"] <= record["eval/success_ci_high"]
    assert record["eval/length"] > 0 and record["eval/seconds"] > 0
    # The evaluated parameters are the published ones: the same deterministic actions.
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(evaluator.policy.sample_actions(obs, jax.random.PRNGKey(0), deterministic=True),
                               agent.policy().sample_actions(obs, jax.random.PRNGKey(0), deterministic=True))
    # A target of 0 %: reached at the first evaluation; the run's other roles see it.
    reached = json.loads((tmp_path / TARGET_FILE).read_text())
    assert reached["learner_step"] == 7 and reached["env_steps"] == 123 and reached["target"] == 0.0
    assert reached["epoch"] == server.epoch
    assert watch()["learner_step"] == 7
    # A learner restarted (new epoch) while its predecessor's policy was evaluated is not stopped.
    assert restarted() is None


def test_a_target_from_an_earlier_session_is_ignored(tmp_path):
    (tmp_path / TARGET_FILE).write_text(json.dumps({"time": time.time() - 60, "learner_step": 3}))
    assert target_reached(tmp_path, since=time.time()) is None
    assert target_reached(tmp_path, since=0)["learner_step"] == 3
    (tmp_path / TARGET_FILE).write_text("{not json")
    assert target_reached(tmp_path, since=0) is None  # being written, or not ours: not a stop
    assert TargetWatch(tmp_path, enabled=False)() is None


def test_an_evaluation_stops_once_the_target_is_out_of_reach():
    from serl_launcher.evaluator import max_failures
    from serl_launcher.utils.rollouts import evaluate

    assert max_failures(0.9, 50) == 5 and max_failures(0.0, 50) == 50 and max_failures(-1.0, 50) is None
    assert max_failures(1.0, 20) == 0
    exp = load_experiment("pick_cube_sim")
    config = exp.get_config()
    apply_overrides(config, ["env.max_episode_steps=5"])
    env = exp.make_env(config)
    try:  # standing still never picks the cube: the 3rd failure ends an evaluation that allows 2
        stats = evaluate(env, lambda obs: np.zeros(env.action_space.shape, np.float32), 10, seed=0, max_failures=2)
    finally:
        env.close()
    assert stats["episodes"] == 3 and stats["success_rate"] == 0.0 and stats["success_ci_high"] < 0.6
    assert stats["failed_truncated"] == 3 and stats["failed_terminated"] == 0  # all at the time limit


def test_only_a_complete_evaluation_meets_the_target():
    from serl_launcher.evaluator import meets_target

    assert meets_target({"episodes": 20, "success_rate": 0.9}, 0.9, 20)
    assert not meets_target({"episodes": 20, "success_rate": 0.85}, 0.9, 20)
    assert not meets_target({"episodes": 3, "success_rate": 1.0}, 0.9, 20)  # stopped early
    assert not meets_target({"episodes": 20, "success_rate": 1.0}, -1.0, 20)  # no target


def test_forged_target_files_and_bad_eval_settings(tmp_path):
    from serl_launcher.evaluator import check_eval_config

    for body in ("[" * 100_000, json.dumps({"time": 1e300}), '{"time": Infinity}', json.dumps({"time": True}),
                 "x" * (70 << 10)):
        (tmp_path / TARGET_FILE).write_text(body)
        assert target_reached(tmp_path, since=0) is None, body[:40]
    config = load_experiment("pick_cube_sim").get_config()
    for bad in (["eval.until_success=90.0"], ["eval.episodes=0"]):
        c = load_experiment("pick_cube_sim").get_config()
        apply_overrides(c, bad)
        with pytest.raises(ValueError, match="eval"):
            check_eval_config(c)
    check_eval_config(config)
    from serl_launcher.evaluator import check_simulated

    check_simulated(config, "the live evaluator")
    with pytest.raises(ValueError, match="real arm"):  # a second process driving the actor's arm
        check_simulated(load_experiment("real_arm_template").get_config(), "the live evaluator")


def test_an_evaluator_outside_a_learners_folder_is_refused(tmp_path):
    """A mistyped --checkpoint_path: nothing written where nobody reads it, no target that stops nothing."""
    import jax

    from serl_launcher.agents.sac import SACAgent
    from serl_launcher.evaluator import EvaluatorFolderError

    exp = load_experiment("pick_cube_sim")
    config = exp.get_config()
    apply_overrides(config, [*SMOKE_SETTINGS, "eval.episodes=1", "eval.until_success=0.0"])
    env = exp.make_env(config)
    agent = SACAgent.create(jax.random.PRNGKey(1), env.observation_space, env.action_space, config.agent)
    hub = LocalHub()
    server = hub.server(lambda *a: None).start()
    evaluator = Evaluator(config, env, hub.client("evaluator"), tmp_path / "typo")
    try:
        server.publish_params(3, policy_params_numpy(agent), env_steps=10)
        with pytest.raises(EvaluatorFolderError, match="config.json"):
            evaluator.run(max_evaluations=1)
    finally:
        evaluator.close()
        server.close()
    assert not (tmp_path / "typo").exists()
