"""Our SAC learner (serl_launcher.agents.sac) throughput on one workload; prints one JSON line.

Runs in the project's .venv; started by benchmarks/learner_throughput.py. Builds SACAgent with
the workload's critics (num_qs, num_min_qs, critic_layer_norm) and utd_ratio, keeps a 100k-row
numpy buffer of random transitions, and per call samples utd_ratio x 256 rows (as the peers do),
runs the jitted `agent.update` (utd_ratio critic updates in lax.scan + one actor and one
temperature update) and blocks on its metrics.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

T_START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/learner_throughput.py

from learner_throughput import (  # noqa: E402
    ACTION_DIM,
    BATCH,
    BUFFER_ROWS,
    HIDDEN,
    LR,
    OBS_DIM,
    WORKLOADS,
    emit,
    measure,
    runner_args,
)


def main() -> None:
    args = runner_args()
    import jax
    import numpy as np
    from gymnasium import spaces

    from serl_launcher.agents.sac import SACAgent, sac_config

    w = WORKLOADS[args.workload]
    utd = w["utd"]
    config = sac_config()
    config.hidden_dims = HIDDEN
    config.num_qs = w["num_qs"]
    config.num_min_qs = w["num_min_qs"]
    config.critic_layer_norm = w["layer_norm"]
    config.utd_ratio = utd
    config.batch_size = BATCH
    config.actor_lr = config.critic_lr = config.temp_lr = LR
    observation_space = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)})
    action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
    agent = SACAgent.create(jax.random.PRNGKey(args.seed), observation_space, action_space, config)

    rng = np.random.default_rng(args.seed)
    dones = (rng.random(BUFFER_ROWS) < 0.01).astype(np.float32)
    buffer = {
        "observations": rng.standard_normal((BUFFER_ROWS, OBS_DIM), dtype=np.float32),
        "next_observations": rng.standard_normal((BUFFER_ROWS, OBS_DIM), dtype=np.float32),
        "actions": rng.uniform(-1, 1, (BUFFER_ROWS, ACTION_DIM)).astype(np.float32),
        "rewards": rng.standard_normal(BUFFER_ROWS, dtype=np.float32),
        "masks": 1.0 - dones,
        "dones": dones,
    }
    rows = utd * BATCH

    def sample():
        idx = rng.integers(0, BUFFER_ROWS, rows)
        return {
            "observations": {"state": buffer["observations"][idx]},
            "next_observations": {"state": buffer["next_observations"][idx]},
            "actions": buffer["actions"][idx],
            "rewards": buffer["rewards"][idx],
            "masks": buffer["masks"][idx],
            "dones": buffer["dones"][idx],
        }

    state = {"agent": agent}

    def step():
        state["agent"], metrics = state["agent"].update(sample())
        jax.block_until_ready(metrics)

    setup_s = time.perf_counter() - T_START
    result = measure(step, utd, args.seconds, args.repeats)
    emit("ours", args.workload, setup_s, result, jax=jax.__version__,
         target_min_over=w["num_min_qs"] or w["num_qs"])


if __name__ == "__main__":
    main()
