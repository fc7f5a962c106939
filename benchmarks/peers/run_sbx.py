"""sbx (JAX Stable-Baselines) SAC learner throughput on one workload; prints one JSON line.

Runs in benchmarks/.peers/sbx (see setup_peers.sh); started by benchmarks/learner_throughput.py.
Builds sbx's SAC with the workload's critics (n_critics, layer_norm), gradient_steps = UTD and
policy_delay = UTD (one actor + temperature update per call), fills its replay buffer with 100k
random transitions and times `model.train(gradient_steps, batch_size)` directly, so only learner
work is measured: sampling UTD x 256 rows, the jitted fori_loop of critic updates, the actor /
temperature update, and the losses read back (.item(), which blocks).

Difference from the workload: sbx takes the target min over all critics (W3: all 10, not a
random subset of 2), and evaluates all 10 target critics either way.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

T_START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/learner_throughput.py

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from learner_throughput import (  # noqa: E402
    ACTION_DIM,
    BATCH,
    BUFFER_ROWS,
    HIDDEN,
    LR,
    OBS_DIM,
    WORKLOADS,
    bench_threads,
    emit,
    measure,
    runner_args,
)


class _SyntheticEnv(gym.Env):
    """Only carries the spaces; never stepped."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(OBS_DIM, np.float32), {}

    def step(self, action):
        return np.zeros(OBS_DIM, np.float32), 0.0, False, False, {}


def main() -> None:
    args = runner_args()
    threads = bench_threads()
    import torch  # stable-baselines3's buffers return torch tensors

    if threads:
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    import importlib.metadata

    from sbx import SAC
    from stable_baselines3.common.logger import Logger

    w = WORKLOADS[args.workload]
    utd = w["utd"]
    model = SAC(
        "MlpPolicy", _SyntheticEnv(), learning_rate=LR, buffer_size=BUFFER_ROWS,
        batch_size=BATCH, gradient_steps=utd, policy_delay=utd, seed=args.seed,
        policy_kwargs={"net_arch": list(HIDDEN), "n_critics": w["num_qs"],
                       "layer_norm": w["layer_norm"]},
    )
    model.set_logger(Logger(None, []))
    rb = model.replay_buffer
    rng = np.random.default_rng(args.seed)
    shape = rb.observations.shape  # (rows, n_envs, obs_dim)
    rb.observations[:] = rng.standard_normal(shape, dtype=np.float32)
    rb.next_observations[:] = rng.standard_normal(shape, dtype=np.float32)
    rb.actions[:] = rng.uniform(-1, 1, rb.actions.shape).astype(np.float32)
    rb.rewards[:] = rng.standard_normal(rb.rewards.shape, dtype=np.float32)
    rb.dones[:] = (rng.random(rb.dones.shape) < 0.01).astype(np.float32)
    rb.pos, rb.full = 0, True

    def step():
        model.train(gradient_steps=utd, batch_size=BATCH)

    setup_s = time.perf_counter() - T_START
    result = measure(step, utd, args.seconds, args.repeats)
    emit("sbx", args.workload, setup_s, result, version=importlib.metadata.version("sbx-rl"),
         threads=threads, target_min_over=w["num_qs"])


if __name__ == "__main__":
    main()
