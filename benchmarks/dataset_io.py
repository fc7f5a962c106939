"""Dataset import / export speed through the scripts users run, on 20 two-camera episodes.

    python benchmarks/dataset_io.py [--size 128] [--episodes 20] [--rlds_python /path/to/venv/bin/python]

Records `--episodes` successful expert episodes of pick_cube_sim_vision's simulator (front and
wrist cameras at --size x --size, state, learned-gripper penalty) into a demo file, then times
scripts/export_dataset.py (LeRobot v3.0, AV1 videos), scripts/import_lerobot.py (back into a demo
file) and, with --rlds_python (an interpreter with the [rlds] extra), the RLDS export. Prints
transitions per second as each script measures itself (its own work, without interpreter and
JAX start-up) and the whole command's wall time, and writes them to --out as JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
_SIZE = flags.DEFINE_integer("size", 128, "Camera frames are size x size.")
_EPISODES = flags.DEFINE_integer("episodes", 20, "Successful episodes in the dataset.")
_RLDS_PYTHON = flags.DEFINE_string("rlds_python", None, "An interpreter with the [rlds] extra installed.")
_OUT = flags.DEFINE_string("out", None, "Write the results here (JSON).")


def record(path: Path, size: int, episodes: int) -> int:
    sys.path.insert(0, str(REPO))
    from experiments.mappings import apply_overrides, env_spaces, load_experiment
    from serl_launcher.data import save_demos
    from serl_launcher.utils.rollouts import demonstrator_config, record_demos
    from serl_launcher.wrappers.grasp_penalty import with_grasp_penalty

    exp = load_experiment("pick_cube_sim_vision")
    config = exp.get_config()
    apply_overrides(config, [f"env.image_height={size}", f"env.image_width={size}"])
    config = demonstrator_config(config)
    env = with_grasp_penalty(exp.make_env(config, classifier=False), config)
    transitions = record_demos(env, exp.make_expert(env, config), episodes, seed=1000)
    env.close()
    save_demos(path, transitions, env_spaces(env).state_layout)
    return len(transitions)


def timed(command: list[str]) -> tuple[float, float]:
    """(the script's own transitions/s, the command's wall seconds)."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command[1]} failed:\n{result.stderr[-3000:]}")
    rate = re.findall(r"\((\d+) transitions/s\)", result.stdout)
    return float(rate[-1]), wall


def main(argv: list[str]) -> None:
    del argv
    size, n = _SIZE.value, _EPISODES.value
    sets = ["--set", f"env.image_height={size}", "--set", f"env.image_width={size}"]
    results = {"size": size, "episodes": n}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        demos = folder / "demos.npz"
        results["transitions"] = record(demos, size, n)
        python = sys.executable
        results["export_lerobot"] = timed([python, "scripts/export_dataset.py", "--exp_name", "pick_cube_sim_vision",
                                           *sets, "--input", str(demos), "--output", str(folder / "lerobot")])
        results["import_lerobot"] = timed([python, "scripts/import_lerobot.py", "--exp_name", "pick_cube_sim_vision",
                                           *sets, "--dataset", str(folder / "lerobot"), "--output", str(folder / "back.npz")])
        if _RLDS_PYTHON.value:
            results["export_rlds"] = timed([_RLDS_PYTHON.value, "scripts/export_dataset.py", "--exp_name",
                                            "pick_cube_sim_vision", *sets, "--input", str(demos), "--format", "rlds",
                                            "--output", str(folder / "rlds")])
        sizes = {name: sum(p.stat().st_size for p in (folder / name).rglob("*") if p.is_file())
                 for name in ("lerobot", "rlds") if (folder / name).exists()}
        results["bytes"] = {"demo_file": demos.stat().st_size, **sizes}
    print(f"{n} episodes, {results['transitions']} transitions, two {size}x{size} cameras:")
    for step in ("export_lerobot", "import_lerobot", "export_rlds"):
        if step in results:
            rate, wall = results[step]
            print(f"  {step:15s} {rate:7.0f} transitions/s (the script's own work), {wall:5.1f} s wall")
    print("  bytes: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in results["bytes"].items()))
    if _OUT.value:
        Path(_OUT.value).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
