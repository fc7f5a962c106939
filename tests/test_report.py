"""The run report (plots and summary from a run folder's metrics files) and the learner's
intervention-rate metric that it plots."""

import json
import math

import numpy as np
import pytest

from serl_launcher.utils.metrics import MetricsWriter, NonFiniteMetricError
from serl_launcher.utils.report import (
    PLOT_FILES,
    read_records,
    rolling_mean,
    rolling_ratio,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Actor "a0" has its own folder; actor "remote" ran on another machine, so only the copies of its
# episode stats that the learner received are here.
LOCAL = {"success": [0, 0, 1, 0, 1, 1, 1, 1], "length": [10] * 8, "intervention_steps": [5, 5, 4, 3, 2, 1, 0, 0]}
REMOTE = {"success": [0, 1], "length": [20, 20], "intervention_steps": [2, 0]}
NAN_RETURN_EPISODE = 2  # of a0: its return is NaN (the writer then raises, after writing it)


def episode_stats(data: dict, i: int) -> dict:
    steps, length = data["intervention_steps"][i], data["length"][i]
    return {"return": float(data["success"][i]), "length": length, "success": float(data["success"][i]),
            "intervention_steps": steps, "interventions": int(steps > 0), "intervention_rate": steps / length}


def write_synthetic_run(folder) -> None:
    """A run folder as the roles write it, through the real MetricsWriter."""
    learner = MetricsWriter(folder / "metrics.jsonl", config={"seed": 0})
    with MetricsWriter(folder / "actor-a0" / "metrics.jsonl", config={"seed": 0}) as actor:
        env_steps = 0
        for i in range(len(LOCAL["success"])):
            stats = episode_stats(LOCAL, i)
            env_steps += stats["length"]
            if i == NAN_RETURN_EPISODE:
                stats["return"] = math.nan
                with pytest.raises(NonFiniteMetricError):
                    actor.write(env_steps, stats, prefix="actor/")
                learner.write(0, {k: v for k, v in stats.items() if k != "return"}, prefix="actor/a0/")
            else:
                actor.write(env_steps, stats, prefix="actor/")
                learner.write(0, stats, prefix="actor/a0/")  # relayed copy: must not count twice
            actor.write(env_steps, {"timer/env_ms": 1.0})  # not an episode
            learner.write(i + 1, {"train/critic_loss": 0.5})
            learner.write(i + 1, {"replay/online": env_steps, "replay/received": env_steps,
                                  "replay/intervened_total": sum(LOCAL["intervention_steps"][: i + 1]),
                                  "replay/intervention_rate": LOCAL["intervention_steps"][i] / 10})
    for i in range(len(REMOTE["success"])):
        learner.write(20 + i, episode_stats(REMOTE, i), prefix="actor/remote/")
    learner.close()
    (folder / "eval_5.json").write_text(json.dumps({"step": 5, "success_rate": 0.5, "return": 0.5}))
    (folder / "eval_5.mp4").write_bytes(b"not really a video")


def assert_valid_png(path) -> None:
    from matplotlib.image import imread

    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = imread(path).shape[:2]
    assert height > 100 and width > 100


def test_rolling_means_by_hand():
    np.testing.assert_allclose(rolling_mean([1, math.nan, 0, 1], 2), [1, 1, 0, 0.5])
    np.testing.assert_allclose(rolling_mean([1, 0, 0, 1], 3), [1, 0.5, 1 / 3, 1 / 3])
    assert np.isnan(rolling_mean([math.nan], 5)[0])
    # Step-weighted: (4 + 0) / (10 + 30) in the last window of two episodes.
    np.testing.assert_allclose(rolling_ratio([5, 4, 0], [10, 10, 30], 2), [0.5, 0.45, 0.1])
    assert rolling_mean([], 3).shape == (0,)
    with pytest.raises(ValueError, match="window"):
        rolling_mean([1.0], 0)


def test_report_from_a_synthetic_run(tmp_path):
    write_synthetic_run(tmp_path)
    summary = write_report(tmp_path, window=4)

    for name, file in PLOT_FILES.items():
        assert summary["plots"][name] == str(tmp_path / file)
        assert_valid_png(tmp_path / file)
    assert json.loads((tmp_path / "report.json").read_text()) == summary
    markdown = (tmp_path / "report.md").read_text()
    assert all(f"]({file})" in markdown for file in PLOT_FILES.values())

    # Merged in wall-clock order: a0's 8 episodes, then remote's 2 (a0's relayed copies ignored).
    success = LOCAL["success"] + REMOTE["success"]  # 0 0 1 0 1 1 1 1 0 1
    assert summary["episodes"] == 10 and summary["actors"] == ["a0", "remote"]
    assert summary["env_steps"] == 8 * 10 + 2 * 20
    assert summary["success_rate"]["final_rolling"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert summary["success_rate"]["overall"] == pytest.approx(sum(success) / 10)
    # Returns equal successes except a0's NaN episode, which is left out.
    assert summary["episode_return"]["final_rolling"] == pytest.approx(0.75)
    assert summary["episode_return"]["overall"] == pytest.approx((sum(success) - 1) / 9)
    # Share of steps intervened: first 4 episodes (5+5+4+3)/40; last 4: a0's (0, 0) of 10 steps
    # each and remote's (2, 0) of 20 each.
    rate = summary["intervention_rate"]
    assert rate["first_window"] == pytest.approx(17 / 40)
    assert rate["last_window"] == pytest.approx(2 / 60)
    assert rate["change"] == pytest.approx(2 / 60 - 17 / 40)
    assert rate["trend"] == "falling" and rate["windows_overlap"] is False
    assert rate["learner_last"] == pytest.approx(0.0) and rate["learner_intervened_total"] == 20
    assert summary["learner_steps"] == 8

    # The evaluation of learner step 5 sits where the learner reached step 5: after a0's 5th
    # episode (50 env steps) and before its 6th.
    (evaluation,) = summary["evaluations"]
    assert evaluation["source"] == "eval_5.json" and evaluation["success_rate"] == 0.5
    assert evaluation["learner_step"] == 5 and 50 <= evaluation["env_steps"] <= 60
    assert 0 <= evaluation["wall_clock_min"] <= summary["wall_clock_min"]

    assert summary["video"] == str(tmp_path / "eval_5.mp4")
    assert summary["metrics"] == [str(tmp_path / "metrics.jsonl"), str(tmp_path / "actor-a0" / "metrics.jsonl")]
    assert summary["problems"] == []


def test_live_evaluations_are_reported_with_interval_and_cycle_time(tmp_path):
    """eval/ records appended to the run's metrics.jsonl by the evaluator (a second writer)."""
    from serl_launcher.utils.rollouts import wilson_interval

    write_synthetic_run(tmp_path)
    low, high = wilson_interval(45, 50)
    with MetricsWriter(tmp_path / "metrics.jsonl") as evaluator:
        evaluator.write(7, {"success_rate": 0.9, "success_ci_low": low, "success_ci_high": high, "episodes": 50,
                            "cycle_steps": 14.5, "cycle_s": 0.07, "learner_step": 7, "env_steps": 70,
                            "seconds": 3.0}, prefix="eval/")
    summary = write_report(tmp_path, window=4)
    live = [ev for ev in summary["evaluations"] if ev["source"] == "eval/ record"]
    assert len(live) == 1 and live[0]["learner_step"] == 7 and live[0]["env_steps"] == 70
    assert (live[0]["success_ci_low"], live[0]["success_ci_high"]) == (low, high)
    assert live[0]["cycle_steps"] == 14.5 and live[0]["episodes"] == 50
    assert_valid_png(tmp_path / PLOT_FILES["cycle_time"])
    assert "| 90% (79%-96%) | 14.5 / 0.07 |" in (tmp_path / "report.md").read_text()


def test_wilson_interval_by_hand():
    from serl_launcher.utils.rollouts import wilson_interval

    # p = 0.9, n = 50, z = 1.96: centre (0.9 + z^2/100) / (1 + z^2/50), half-width
    # z sqrt(p(1-p)/n + z^2/(4 n^2)) / (1 + z^2/50).
    z = 1.959964
    centre = (0.9 + z * z / 100) / (1 + z * z / 50)
    half = z * math.sqrt(0.09 / 50 + z * z / 10000) / (1 + z * z / 50)
    assert wilson_interval(45, 50) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_a_crashed_run_with_a_truncated_last_line_is_reported(tmp_path):
    write_synthetic_run(tmp_path)
    actor_file = tmp_path / "actor-a0" / "metrics.jsonl"
    with actor_file.open("a") as f:
        f.write('{"step": 90, "time": 17000000')  # the process died mid-line
    problems = []
    assert len(read_records(actor_file, problems)) == 8 + 8  # episodes + timer records
    assert len(problems) == 1 and "truncated last line" in problems[0]

    summary = write_report(tmp_path, window=4)
    assert summary["episodes"] == 10
    assert len(summary["problems"]) == 1 and str(actor_file) in summary["problems"][0]
    assert all((tmp_path / file).stat().st_size > 0 for file in PLOT_FILES.values())


def test_empty_files_give_an_empty_report(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "actor-a0").mkdir()
    (tmp_path / "actor-a0" / "metrics.jsonl").write_text("")
    summary = write_report(tmp_path)
    assert summary["episodes"] == 0 and summary["env_steps"] == 0
    assert summary["success_rate"]["final_rolling"] is None
    assert summary["intervention_rate"]["trend"] is None
    assert summary["video"] is None and summary["evaluations"] == []
    for file in PLOT_FILES.values():
        assert_valid_png(tmp_path / file)


def test_missing_run_folder_or_metrics_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no run folder at {tmp_path / 'nope'}"):
        write_report(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} has neither metrics.jsonl"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match="window"):
        write_report(tmp_path, window=0)


def test_learner_logs_the_intervention_rate_of_received_transitions(tmp_path):
    from experiments.mappings import load_experiment
    from serl_launcher.learner import Learner
    from serl_launcher.transport import LocalHub
    from serl_launcher.utils.rollouts import make_transition

    exp = load_experiment("pick_cube_sim")
    config = exp.get_config()
    config.agent.hidden_dims, config.agent.num_qs = (32, 32), 2
    env = exp.make_env(config)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    hub = LocalHub()
    learner = Learner(config, obs_space, act_space, tmp_path / "run", make_server=hub.server)
    learner.server.start()
    clients = {name: hub.client(name).start() for name in ("a0", "a1")}
    obs_space.seed(0)

    def send(actor_id, batch):  # the actor's way in: client -> server -> data store
        for t in batch:
            clients[actor_id].send_transition(t)

    def transitions(flags):
        return [make_transition(obs_space.sample(), act_space.sample(), obs_space.sample(), 0.0, False, False,
                                intervened=flag, grasp_penalty=0.0) for flag in flags]  # a learned gripper

    try:
        metrics = learner.replay_metrics()
        assert metrics["replay/intervened_total"] == 0 and "replay/intervention_rate" not in metrics

        send("a0", transitions([True] * 3 + [False] * 7))
        metrics = learner.replay_metrics()
        assert metrics["replay/intervention_rate"] == pytest.approx(0.3)
        assert (metrics["replay/intervened_total"], metrics["replay/received"]) == (3, 10)
        assert (metrics["replay/online"], metrics["replay/demo"]) == (10, 3)

        # The rate covers only what arrived since the previous record, from every actor.
        send("a0", transitions([True] * 5))
        send("a1", transitions([False] * 5))
        metrics = learner.replay_metrics()
        assert metrics["replay/intervention_rate"] == pytest.approx(0.5)
        assert (metrics["replay/intervened_total"], metrics["replay/received"]) == (8, 20)

        # Nothing new: no rate (0/0), the totals stay.
        metrics = learner.replay_metrics()
        assert "replay/intervention_rate" not in metrics and metrics["replay/intervened_total"] == 8
    finally:
        learner.close()
