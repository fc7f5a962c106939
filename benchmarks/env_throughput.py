"""Env steps per second of pick-cube, state-only and with both cameras rendered offscreen.

    python benchmarks/env_throughput.py [--steps 2000] [--repeats 5] [--image_size 128]

Random actions, episodes reset as they end (resets are part of the cost). The variants run
interleaved (state, vision, state, vision, ...) so machine noise hits both alike; the table shows
the median and range over repeats, and the process-CPU / wall ratio of each repeat. Results go to
benchmarks/results/env_throughput.json (or --json_out). Goals on a 2-core CPU: >= 1000 steps/s
state-only, >= 60 steps/s with two 128x128 cameras.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from absl import app, flags

_STEPS = flags.DEFINE_integer("steps", 2000, "Env steps per repeat (vision runs a quarter of these).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved repeats of each variant.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Camera image height and width.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Where to write the results JSON.")

GOALS = {"state": 1000.0, "vision": 60.0}


def _measure(env, steps: int, seed: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, env.action_space.shape[0])).astype(np.float32)
    env.reset(seed=seed)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"steps_per_s": steps / wall, "cpu_over_wall": cpu / wall}


def main(argv: list[str]) -> None:
    del argv
    import gymnasium as gym
    import numpy as np

    import sim_envs  # noqa: F401

    size = _IMAGE_SIZE.value
    envs = {
        "state": gym.make("PandaPickCube-v0"),
        "vision": gym.make("PandaPickCubeVision-v0", image_height=size, image_width=size),
    }
    steps = {"state": _STEPS.value, "vision": max(10, _STEPS.value // 4)}
    for env in envs.values():  # warm-up: renderer creation, caches
        _measure(env, 20, seed=0)
    runs: dict[str, list[dict]] = {name: [] for name in envs}
    for repeat in range(_REPEATS.value):
        for name, env in envs.items():
            runs[name].append(_measure(env, steps[name], seed=repeat))

    results = []
    print(f"\npick-cube env throughput ({platform.processor() or platform.machine()}, images {size}x{size})")
    print(f"{'variant':<8} {'median steps/s':>15} {'range':>17} {'cpu/wall':>9} {'goal':>6}")
    for name, repeats in runs.items():
        rates = [r["steps_per_s"] for r in repeats]
        median = float(np.median(rates))
        cpu = float(np.median([r["cpu_over_wall"] for r in repeats]))
        results.append({
            "variant": name, "steps_per_s": median, "min": min(rates), "max": max(rates),
            "cpu_over_wall": cpu, "goal": GOALS[name], "meets_goal": median >= GOALS[name],
            "steps_per_repeat": steps[name], "repeats": len(rates),
        })
        print(f"{name:<8} {median:>15.0f} {min(rates):>8.0f}-{max(rates):<8.0f} {cpu:>9.2f} {GOALS[name]:>6.0f}")
    for env in envs.values():
        env.close()

    out = Path(_JSON_OUT.value or Path(__file__).parent / "results" / "env_throughput.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"image_size": size, "results": results}, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    app.run(main)
