"""Every entry point, end to end at smoke size, in a subprocess as a user would run it."""

import json
import subprocess

from conftest import REPO


def test_quickstart_pipeline_at_smoke_size(python, subprocess_env):
    """The README's main command, tiny: demos, learner + actor processes, evaluation, video."""
    import shutil

    name = "pytest-quickstart-smoke"
    folder = REPO / "experiments/pick_cube_sim/runs" / name
    shutil.rmtree(folder, ignore_errors=True)
    try:
        result = subprocess.run(
            [python, str(REPO / "scripts/quickstart.py"), "--smoke", "--minutes", "0.25",
             "--eval_n_trajs", "2", "--run_name", name],
            capture_output=True, text=True, env=subprocess_env, timeout=600,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert "success rate:" in result.stdout
        assert f"run folder: {folder}" in result.stdout
        evals = list(folder.glob("eval_*.json"))
        assert len(evals) == 1 and json.loads(evals[0].read_text())["step"] > 0
        assert (folder / f"eval_{json.loads(evals[0].read_text())['step']}.mp4").stat().st_size > 10_000
        assert (folder / "policy" / "policy.json").is_file()
        assert (folder / "buffers" / "online" / "manifest.json").is_file()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
