"""The in-process loop (env + actor + learner in one process) learns a small task."""

import json

from serl_launcher.inprocess import reach_config, run_inprocess
from serl_launcher.utils.metrics import read_metrics


def test_inprocess_loop_learns_reach_within_a_minute(tmp_path):
    config = reach_config()
    config.run_dir = str(tmp_path)
    config.progress = False
    config.max_seconds = 90.0  # a bound for slow machines; it needs ~30 s here
    summary = run_inprocess(config)
    first, last = summary["history"][0], summary["history"][-1]
    assert summary["env_steps"] == 3000, "ran out of time before 3000 steps"
    assert last["success_rate"] >= 0.4, summary["history"]
    assert last["return"] > first["return"] + 0.5, summary["history"]
    # Evaluation, training metrics and the summary are on disk.
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert any("eval/success_rate" in r for r in records)
    assert any("train/critic_loss" in r for r in records)
    assert json.loads((tmp_path / "summary.json").read_text())["updates"] == summary["updates"]
