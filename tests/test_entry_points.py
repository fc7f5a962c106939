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
    classifier (labelled frames, training), and no video (the state run checks it; a vision
    video is one more process compiling the image policy)."""
    import shutil

    name = "pytest-quickstart-smoke"
    folder = REPO / "experiments" / exp_name / "runs" / name
    shutil.rmtree(folder, ignore_errors=True)
    # The state run also writes every metric to wandb (offline) and TensorBoard, with a shared
    # transport key that must reach neither.
    secret = "pytest-transport-key-0123456789abcdef"
    sinks = ["--set", "logging.wandb.project=pytest", "--set", "logging.wandb.mode=offline",
             "--set", "logging.tensorboard=tb", "--set", f"transport.key={secret}"] if exp_name == "pick_cube_sim" else []
    subprocess_env.pop("WANDB_MODE", None)
    video = exp_name == "pick_cube_sim"
    try:
        result = subprocess.run(
            [python, str(REPO / "scripts/quickstart.py"), "--smoke", "--until_success", "0", "--minutes", "4",
             "--eval_n_trajs", "2", "--video_episodes", "1" if video else "0", "--run_name", name, "--exp_name", exp_name, *sinks],
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
        if video:
            assert f"video: {report['video']}" in printed and Path(report["video"]).parent == folder
        assert f"metrics: {folder / 'metrics.jsonl'}" in printed
        assert f"metrics: {folder / 'actor-sim-0' / 'metrics.jsonl'}" in printed
        # The evaluator's one evaluation (the target stopped the run), then the video's (state run).
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
        evals = list(folder.glob("eval_*.json"))  # the video's evaluation of the final checkpoint
        assert len(evals) == int(video)
        if video:
            assert json.loads(evals[0].read_text())["step"] >= reached["learner_step"]
            assert (folder / f"eval_{json.loads(evals[0].read_text())['step']}.mp4").stat().st_size > 5_000
        assert (folder / "policy" / "policy.json").is_file()
        assert (folder / "buffers" / "online" / "manifest.json").is_file()
        if sinks:
            check_metric_sinks(folder, name, secret, checkpoint_step=json.loads(evals[0].read_text())["step"])
        else:
            assert not (folder / "wandb").exists() and not (folder / "tb").exists()
        if exp_name == "pick_cube_sim_vision":  # the reward came from the classifier trained here
            meta = json.loads((folder / "classifier" / "classifier.json").read_text())
            assert meta["image_keys"] == ["front", "wrist"] and meta["report"]["heldout_frames"] > 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_wandb_records(path):
    """The records of a wandb run file (.wandb: LevelDB-log framing of wandb's own protobuf
    Records), read with wandb's protobuf definitions."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks, pending = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind in (2, 3):
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
            pending = b""
    records = []
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records


def check_metric_sinks(folder, name, secret, checkpoint_step):
    """wandb (offline) and TensorBoard hold what the run's processes logged; the key is nowhere."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = {}
    for path in (folder / "wandb").glob("offline-run-*/run-*.wandb"):
        records = read_wandb_records(path)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
                   for r in records if r.WhichOneof("record_type") == "history"]
        runs[run.job_type] = (run, history)
    roles = {"learner", "actor-sim-0", "evaluator", f"eval-checkpoint-{checkpoint_step}"}
    assert set(runs) == roles, sorted(runs)
    for role, (run, _) in runs.items():
        assert run.run_group == name and run.display_name == f"{name}-{role}" and run.project == "pytest"
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["exp_name"] == "pick_cube_sim" and config["transport"]["key"] == "<redacted>"
    keys = {role: set().union(*history) for role, (_, history) in runs.items()}
    assert {"train/critic_loss", "replay/received"} <= keys["learner"], sorted(keys["learner"])
    assert any(k.startswith("timer/") for k in keys["learner"])
    assert any(k.startswith("actor/") for k in keys["actor-sim-0"]), sorted(keys["actor-sim-0"])
    assert "eval/success_rate" in keys["evaluator"]
    checkpoint = runs[f"eval-checkpoint-{checkpoint_step}"][1]
    assert "eval_checkpoint/success_rate" in keys[f"eval-checkpoint-{checkpoint_step}"]
    video = next(row for row in checkpoint if "eval_checkpoint/video/_type" in row)  # flattened by wandb
    assert video["eval_checkpoint/video/_type"] == "video-file"
    assert list((folder / "wandb").glob(f"offline-run-*/files/{video['eval_checkpoint/video/path']}"))
    learner_steps = [row["_step"] for row in runs["learner"][1] if "train/critic_loss" in row]
    assert learner_steps == sorted(learner_steps) and learner_steps

    for role, wanted in (("learner", "train/critic_loss"), ("actor-sim-0", "actor/"), ("evaluator", "eval/success_rate")):
        events = EventAccumulator(str(folder / "tb" / role))
        events.Reload()
        tags = events.Tags()["scalars"]
        assert any(tag.startswith(wanted) for tag in tags), (role, tags)
    scalars = EventAccumulator(str(folder / "tb" / "learner"))
    scalars.Reload()
    jsonl = [r for r in read_records(folder / "metrics.jsonl") if "train/critic_loss" in r]
    logged = scalars.Scalars("train/critic_loss")
    assert [e.step for e in logged] == [r["step"] for r in jsonl]
    assert [round(e.value, 4) for e in logged] == [round(r["train/critic_loss"], 4) for r in jsonl]
    for path in [*(folder / "wandb").rglob("*"), *(folder / "tb").rglob("*"), folder / "config.json"]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


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
