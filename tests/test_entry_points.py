"""Every entry point, end to end at smoke size, in a subprocess as a user would run it."""

import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from serl_launcher.utils.report import PLOT_FILES, read_records


@pytest.mark.parametrize("exp_name", ["pick_cube_sim", "pick_cube_sim_vision"])
def test_quickstart_pipeline_at_smoke_size(exp_name, python, subprocess_env):
    """The README's main command, tiny: demos, learner + actor + evaluator processes, a target of
    0 % (stops at the first evaluation), video; for the vision experiment first the reward
    classifier (labelled frames, training)."""
    import shutil

    name = "pytest-quickstart-smoke"
    folder = REPO / "experiments" / exp_name / "runs" / name
    shutil.rmtree(folder, ignore_errors=True)
    try:
        result = subprocess.run(
            [python, str(REPO / "scripts/quickstart.py"), "--smoke", "--until_success", "0", "--minutes", "4",
             "--eval_n_trajs", "2", "--video_episodes", "1", "--run_name", name, "--exp_name", exp_name],
            capture_output=True, text=True, env=subprocess_env, timeout=600,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        printed = result.stdout.strip().splitlines()
        assert printed[-1] == f"run folder: {folder}"
        assert printed[-2].startswith("target 0% reached: ") and "env steps (learner step" in printed[-2], printed[-2]
        plots = [Path(line.removeprefix("plot: ")) for line in printed if line.startswith("plot: ")]
        assert len(plots) == 4
        for plot in plots:
            assert plot.parent == folder and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        report = json.loads((folder / "report.json").read_text())
        assert (folder / "report.md").is_file() and report["episodes"] > 0 and report["env_steps"] > 0
        assert f"video: {report['video']}" in printed and Path(report["video"]).parent == folder
        assert f"metrics: {folder / 'metrics.jsonl'}" in printed
        assert f"metrics: {folder / 'actor-sim-0' / 'metrics.jsonl'}" in printed
        # The evaluator's one evaluation (the target stopped the run), then the video's.
        live = [ev for ev in report["evaluations"] if ev["source"] == "eval/ record"]
        assert len(live) == 1 and live[0]["episodes"] == 2 and live[0]["env_steps"] > 0, report["evaluations"]
        assert live[0]["success_ci_low"] <= live[0]["success_rate"] <= live[0]["success_ci_high"]
        records = read_records(folder / "metrics.jsonl")
        replay = [r for r in records if "replay/received" in r]
        assert replay and all("replay/intervened_total" in r for r in replay)
        assert any(0.0 <= r.get("replay/intervention_rate", -1) <= 1.0 for r in replay)
        reached = json.loads((folder / "target_reached.json").read_text())
        assert reached["target"] == 0.0 and reached["learner_step"] == live[0]["learner_step"]
        assert "[learner] the evaluator reached the target" in (folder / "learner.log").read_text()
        evals = list(folder.glob("eval_*.json"))
        assert len(evals) == 1 and json.loads(evals[0].read_text())["step"] >= reached["learner_step"]
        assert (folder / f"eval_{json.loads(evals[0].read_text())['step']}.mp4").stat().st_size > 5_000
        assert (folder / "policy" / "policy.json").is_file()
        assert (folder / "buffers" / "online" / "manifest.json").is_file()
        if exp_name == "pick_cube_sim_vision":  # the reward came from the classifier trained here
            meta = json.loads((folder / "classifier" / "classifier.json").read_text())
            assert meta["image_keys"] == ["front", "wrist"] and meta["report"]["heldout_frames"] > 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_report_script_regenerates_a_report(tmp_path, python, subprocess_env):
    from test_report import write_synthetic_run

    write_synthetic_run(tmp_path)
    result = subprocess.run([python, str(REPO / "scripts/report.py"), str(tmp_path), "--window", "4"],
                            capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"run folder: {tmp_path}"
    assert "training: 10 episodes, 120 env steps; rolling success rate 75%" in result.stdout
    assert all((tmp_path / file).stat().st_size > 0 for file in PLOT_FILES.values())
    assert json.loads((tmp_path / "report.json").read_text())["window"] == 4
    missing = subprocess.run([python, str(REPO / "scripts/report.py"), str(tmp_path / "nope")],
                             capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert missing.returncode != 0 and f"no run folder at {tmp_path / 'nope'}" in missing.stderr


def test_env_throughput_benchmark_smoke(tmp_path, python, subprocess_env):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [python, str(REPO / "benchmarks/env_throughput.py"), "--steps", "60", "--repeats", "1",
         "--json_out", str(out)],
        capture_output=True, text=True, env=subprocess_env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert {row["variant"] for row in rows} == {"state", "vision"}
    assert all(row["steps_per_s"] > 0 for row in rows)


def test_sim_viewer_without_display_fails_clearly(python, subprocess_env):
    result = subprocess.run(
        [python, str(REPO / "scripts/sim_viewer.py")],
        capture_output=True, text=True, env=subprocess_env, timeout=120,
    )
    assert result.returncode != 0
    assert "needs a display" in result.stderr


def test_transport_benchmark_smoke(tmp_path, python, subprocess_env):
    out = tmp_path / "transport.json"
    result = subprocess.run(
        [python, str(REPO / "benchmarks/transport.py"), "--transitions", "40", "--repeats", "1", "--actors", "1",
         "--state_factor", "2", "--restart_state", "500", "--restart_image", "50", "--image_size", "32",
         "--latency_samples", "2", "--json_out", str(out)],
        capture_output=True, text=True, env=subprocess_env, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = {(r["payload"], r["sink"]): r for r in data["throughput"]}
    assert set(rows) == {(p, s) for p in ("state", "image") for s in ("count", "memory", "durable")}
    assert all(r["transitions_per_s"]["median"] > 0 for r in rows.values())
    assert rows["image", "durable"]["log_bytes_per_transition"] > 2 * 32 * 32 * 3  # both cameras, once
    assert [r["transitions"] for r in data["restart"]] == [500, 50]
    assert data["learner_restart"]["to_first_update_s"] > 0
    assert "[learner] recovered 500 online" in data["learner_restart"]["recovery_line"]
