"""Every entry point, end to end at smoke size, in a subprocess as a user would run it."""

import json
import subprocess

from conftest import REPO


def test_quickstart_writes_video_and_summary(tmp_path, python, subprocess_env):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [python, str(REPO / "scripts/quickstart.py"), "--episodes", "2", "--run_dir", str(run_dir)],
        capture_output=True, text=True, env=subprocess_env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    video = run_dir / "expert.mp4"
    assert f"video: {video}" in result.stdout
    assert video.stat().st_size > 10_000
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["success_rate"] == 1.0


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
