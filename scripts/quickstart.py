"""The main job, on the default simulated task.

For now: the scripted expert solves pick-cube for a few seeds, the success rate is printed, and a
video of the episodes is written to the run folder, whose path is printed at the end. Later
stages (demos, learner and actor processes, evaluation) grow from here.

    python scripts/quickstart.py [--episodes 5] [--run_dir runs/quickstart]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from absl import app, flags

_EPISODES = flags.DEFINE_integer("episodes", 5, "Expert episodes to run and film.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the first episode; episode i uses seed + i.")
_NOISE = flags.DEFINE_float("noise", 0.1, "Expert action noise (std, action units).")
_RUN_DIR = flags.DEFINE_string(
    "run_dir", None, "Output folder. Default: runs/quickstart-<timestamp> in the repository."
)
_ENV_ID = flags.DEFINE_string("env_id", "PandaPickCube-v0", "Registered sim_envs id.")


def main(argv: list[str]) -> None:
    del argv
    import gymnasium as gym
    import numpy as np
    from tqdm import trange

    import sim_envs  # noqa: F401  (registers the envs)
    from serl_launcher.utils.video import write_video
    from sim_envs.experts import PickCubeExpert, run_expert_episode

    if _EPISODES.value < 1:
        raise app.UsageError("--episodes must be at least 1")
    repo = Path(__file__).resolve().parent.parent
    run_dir = Path(_RUN_DIR.value or repo / "runs" / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)

    env = gym.make(_ENV_ID.value, render_mode="rgb_array")
    expert = PickCubeExpert(env, noise=_NOISE.value, seed=_SEED.value)
    frames, results = [], []
    for i in trange(_EPISODES.value, desc="expert episodes"):
        result = run_expert_episode(env, expert, seed=_SEED.value + i, render=True)
        frames += result.pop("frames")
        results.append(result)
    env.close()

    success = float(np.mean([r["success"] for r in results]))
    summary = {
        "env_id": _ENV_ID.value,
        "episodes": len(results),
        "success_rate": success,
        "mean_length": float(np.mean([r["length"] for r in results])),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    video = write_video(run_dir / "expert.mp4", frames, fps=env.metadata["render_fps"])
    print(f"expert success rate: {success:.0%} over {len(results)} episodes")
    print(f"video: {video}")
    print(f"run folder: {run_dir}")


if __name__ == "__main__":
    app.run(main)
