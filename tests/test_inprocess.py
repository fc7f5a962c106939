"""The in-process loop (env + actor + learner in one process) on the experiments' own configs."""

import json

import pytest

from experiments.launch import SMOKE_SETTINGS
from experiments.mappings import apply_overrides, load_experiment
from serl_launcher.inprocess import run_inprocess
from serl_launcher.utils.metrics import read_metrics

# pick_cube_sim as a task that learns in well under a minute of CPU: reach above the cube (dense
# reward, narrow cube range, 25-step episodes), SAC with 2 critics and UTD 2, nobody intervening.
# Overrides of the experiment, not a second recipe; pinned where the test was verified.
REACH = (
    "env.task='reach'", "env.reward_type='dense'", "env.max_episode_steps=25",
    "env.cube_xy_low=(0.42,-0.08)", "env.cube_xy_high=(0.58,0.08)",
    "env.workspace_low=(0.3,-0.2,0.06)",  # the tool cannot dive into the table
    "agent.num_qs=2", "agent.num_min_qs=2", "agent.utd_ratio=2", "agent.learned_gripper=False",
    "agent.backup_entropy=True", "agent.init_temperature=0.05", "agent.hidden_dims=(256,256)",
    "agent.actor_lr=3e-4", "agent.critic_lr=3e-4", "agent.batch_size=128",
    "learner.samples_per_insert=256.0", "learner.training_starts=100", "learner.rate_tolerance=1",
    "actor.max_env_steps=3000", "actor.intervention.enabled=False",
    "eval.every_s=2.0", "eval.episodes=10", "learner.max_seconds=120.0",
)


def config_of(exp_name, overrides):
    exp = load_experiment(exp_name)
    config = exp.get_config()
    apply_overrides(config, overrides)
    return exp, config


def test_inprocess_loop_learns_reach_within_a_minute(tmp_path):
    exp, config = config_of("pick_cube_sim", REACH)
    summary = run_inprocess(exp, config, run_dir=tmp_path, progress=False)
    first, last = summary["history"][0], summary["history"][-1]
    assert summary["env_steps"] == 3000, "ran out of time before 3000 steps"
    assert last["success_rate"] >= 0.4, summary["history"]
    assert last["return"] > first["return"] + 0.5, summary["history"]
    # Evaluation, training metrics and the summary are on disk.
    records = read_metrics(tmp_path / "metrics.jsonl")
    evals = [r for r in records if "eval/success_rate" in r]
    assert evals and all(r["eval/success_ci_low"] <= r["eval/success_rate"] <= r["eval/success_ci_high"]
                         for r in evals)
    assert evals[-1]["eval/env_steps"] == 3000 and evals[-1]["step"] == summary["updates"]
    assert any("train/critic_loss" in r for r in records)
    assert json.loads((tmp_path / "summary.json").read_text())["updates"] == summary["updates"]


def test_inprocess_runs_the_state_experiment_at_smoke_size_and_stops_at_its_target(tmp_path):
    """pick_cube_sim's own config (demos recorded by its expert, the scripted person
    intervening) at smoke size; a target of 0 % stops at the first evaluation."""
    exp, config = config_of("pick_cube_sim", [*SMOKE_SETTINGS, "demos.successes_needed=2", "actor.max_env_steps=1000",
                                              "eval.every_s=3.0", "eval.episodes=2", "eval.until_success=0.0"])
    summary = run_inprocess(exp, config, run_dir=tmp_path, progress=False)
    assert summary["target_reached"] is not None and len(summary["history"]) == 1, summary
    assert summary["target_reached"]["success_rate"] >= 0.0
    assert summary["env_steps"] < 1000
    assert summary["intervened"] > 0  # the experiment's scripted person took over now and then
    header = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert header["config"]["exp_name"] == "pick_cube_sim"


def test_inprocess_refuses_what_the_learner_refuses():
    exp, config = config_of("pick_cube_sim", ["learner.rate_tolerance=0", "actor.max_env_steps=10"])
    with pytest.raises(ValueError, match="rate tolerance"):
        run_inprocess(exp, config, progress=False)
    # A real arm is driven by its actor alone: refused before anything connects to it.
    exp = load_experiment("real_arm_template")
    with pytest.raises(ValueError, match="real arm"):
        run_inprocess(exp, exp.get_config(), progress=False)
