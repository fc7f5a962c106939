"""Learner updates/s on whatever devices JAX sees, through the learner's own data path.

    python benchmarks/learner_device.py                       # full size (a GPU machine)
    python benchmarks/learner_device.py --size reduced        # this CPU: a few minutes
    python benchmarks/learner_device.py --size smoke          # seconds (the tests run it)
    python benchmarks/learner_device.py --devices 1,all --workloads W2,IMG

Workloads: W1, W2, W3 of benchmarks/learner_throughput.py (state: obs 20, action 4, MLP 256x256,
batch 256) and IMG, the HIL-SERL paper's image learner: the agent of pick_cube_sim_vision_gpu
(two 128x128 cameras, frozen ResNet-10 (random weights unless --weights: speed does not depend on
them), spatial embeddings, 256-d bottleneck, batch 256, its UTD). Each runs as the learner runs
it (serl_launcher.learner): a ReplayBuffer of random transitions sampled by the Prefetcher thread,
each batch split over the mesh of --devices (learner.devices: 1, N or all) and put on the
devices a step ahead, `update_for_step` on the replicated agent. Reported per workload and
device count: updates/s (critic updates), ms per learner step, compile s, and the data-wait
share (the time the devices sat idle waiting for a batch, as the learner logs it in
timer/data_wait_share). Also the ResNet-10 encoder's forward images/s at the workload's batch.

--size reduced (for a CPU) shrinks batch and images (64 and 64x64) and the seconds; smoke is
tiny. Results: printed table, and JSON to --out.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

_SIZE = flags.DEFINE_enum("size", "full", ["full", "reduced", "smoke"], "Problem size.")
_DEVICES = flags.DEFINE_string("devices", "1,all", "Comma-separated learner.devices values to measure.")
_WORKLOADS = flags.DEFINE_string("workloads", "W1,W2,W3,IMG", "Workloads to measure.")
_SECONDS = flags.DEFINE_float("seconds", None, "Timed seconds per (workload, devices) (default by --size).")
_WEIGHTS = flags.DEFINE_string("weights", None, "A ResNet-10 .npz (scripts/convert_resnet10.py) for IMG.")
_OUT = flags.DEFINE_string("out", None, "Write the results here (JSON).")

SIZES = {  # batch, image side, buffer rows, seconds, hidden (state workloads)
    "full": {"batch": 256, "image": 128, "rows": 20_000, "seconds": 20.0, "hidden": (256, 256)},
    "reduced": {"batch": 64, "image": 64, "rows": 5_000, "seconds": 8.0, "hidden": (256, 256)},
    "smoke": {"batch": 8, "image": 32, "rows": 200, "seconds": 0.5, "hidden": (16, 16)},
}


def agent_config(workload: str, size: dict):
    from learner_throughput import LR, WORKLOADS

    from experiments.mappings import load_experiment
    from serl_launcher.agents.sac import sac_config

    if workload == "IMG":
        config = load_experiment("pick_cube_sim_vision_gpu").get_config().agent
        with config.unlocked():
            config.batch_size = size["batch"]
            config.encoder.pretrained_path = _WEIGHTS.value or ""
            config.encoder.allow_random_frozen = not _WEIGHTS.value
            if size is SIZES["smoke"]:
                config.hidden_dims = (16, 16)
                config.encoder.bottleneck_dim = 8
        return config
    w = WORKLOADS[workload]
    config = sac_config()
    config.hidden_dims = size["hidden"]
    config.num_qs, config.num_min_qs, config.critic_layer_norm = w["num_qs"], w["num_min_qs"], w["layer_norm"]
    config.utd_ratio, config.batch_size = w["utd"], size["batch"] if size is SIZES["smoke"] else 256
    config.actor_lr = config.critic_lr = config.temp_lr = LR
    return config


def spaces_for(workload: str, size: dict):
    import numpy as np
    from gymnasium import spaces
    from learner_throughput import ACTION_DIM, OBS_DIM

    if workload == "IMG":
        side = size["image"]
        return (spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (14,), np.float32),
                             "front": spaces.Box(0, 255, (side, side, 3), np.uint8),
                             "wrist": spaces.Box(0, 255, (side, side, 3), np.uint8)}),
                spaces.Box(-1.0, 1.0, (4,), np.float32))
    return (spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)}),
            spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32))


def filled_buffer(obs_space, act_space, rows: int, penalty: bool):
    import numpy as np

    from serl_launcher.data import ReplayBuffer

    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(obs_space, act_space, rows + 10, penalty, seed=0)

    def frame():
        return {k: (rng.integers(0, 256, s.shape, dtype=np.uint8) if s.dtype == np.uint8
                    else rng.standard_normal(s.shape).astype(np.float32)) for k, s in obs_space.spaces.items()}

    obs = frame()
    for i in range(rows):
        nxt = frame()
        end = i % 100 == 99
        t = {"observations": obs, "next_observations": nxt, "actions": rng.uniform(-1, 1, act_space.shape).astype(np.float32),
             "rewards": np.float32(end), "masks": np.float32(not end), "dones": end, "intervened": False}
        if penalty:
            t["grasp_penalty"] = np.float32(0.0)
        buffer.insert(t)
        obs = frame() if end else nxt
    return buffer


def run_one(workload: str, devices: str, size: dict, seconds: float) -> dict:
    import jax

    from serl_launcher.agents.sac import SACAgent
    from serl_launcher.data import Prefetcher, sample_mixed
    from serl_launcher.utils.sharding import CompletionClock, learner_mesh, replicate, shard_batch

    config = agent_config(workload, size)
    obs_space, act_space = spaces_for(workload, size)
    mesh = learner_mesh(devices, config.batch_size)
    agent = replicate(SACAgent.create(jax.random.PRNGKey(0), obs_space, act_space, config), mesh)
    buffer = filled_buffer(obs_space, act_space, size["rows"], bool(config.learned_gripper))
    utd, batch = config.utd_ratio, config.batch_size

    def sample():
        return sample_mixed(buffer, buffer, utd * batch, demo_fraction=0.5, num_minibatches=utd)

    with Prefetcher(sample, depth=2, transform=lambda b: shard_batch(b, mesh, utd)) as batches:
        t0 = time.perf_counter()
        agent, metrics = agent.update_for_step(batches.get(), 10**9)
        jax.block_until_ready(metrics)
        first = time.perf_counter() - t0
        steps, waited, t_start, clock = 0, 0.0, time.perf_counter(), CompletionClock()
        clock.watch(-1, metrics)
        while time.perf_counter() - t_start < seconds or steps < 3:
            t1 = time.perf_counter()
            b = batches.get()
            t2 = time.perf_counter()
            agent, metrics = agent.update_for_step(b, 10**9)
            clock.watch(steps, metrics)
            done = clock.finished(steps - 1)  # as the learner counts it: the devices idle since then
            waited += max(0.0, t2 - max(t1, done)) if done is not None else 0.0
            steps += 1
        jax.block_until_ready(metrics)
        wall = time.perf_counter() - t_start
        clock.close()
    step_s = wall / steps
    result = {"workload": workload, "devices": int(mesh.devices.size), "batch": batch, "utd": utd,
              "updates_per_s": steps * utd / wall, "step_ms": 1e3 * step_s, "compile_s": max(0.0, first - step_s),
              "data_wait_share": waited / wall, "steps": steps}
    if workload == "IMG":
        result["encoder_images_per_s"] = encoder_rate(config, obs_space, mesh, batch, seconds)
    return result


def encoder_rate(config, obs_space, mesh, batch: int, seconds: float) -> float:
    """Forward images/s of the image backbone alone (both cameras count), on the mesh."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from serl_launcher.networks.encoders import ResNet10
    from serl_launcher.utils.sharding import replicate, shard_batch

    side = obs_space["front"].shape[0]
    model = ResNet10()
    params = replicate(model.init(jax.random.PRNGKey(0), jnp.zeros((1, side, side, 3), jnp.uint8))["params"], mesh)
    images = shard_batch({"x": np.random.default_rng(0).integers(0, 256, (2 * batch, side, side, 3), dtype=np.uint8)},
                         mesh, 1)["x"][0]
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x).sum())
    jax.block_until_ready(forward(params, images))
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or count < 3:
        # One call at a time: independent programs with collectives in flight together deadlock
        # XLA:CPU's fake devices (each waits in a rendezvous the other device's thread never joins).
        jax.block_until_ready(forward(params, images))
        count += 1
    return count * 2 * batch / (time.perf_counter() - t0)


def main(argv: list[str]) -> None:
    del argv
    import jax

    size = SIZES[_SIZE.value]
    seconds = _SECONDS.value or size["seconds"]
    results = []
    print(f"JAX {jax.__version__} on {jax.default_backend()}: {[str(d) for d in jax.local_devices()]}", flush=True)
    for workload in _WORKLOADS.value.split(","):
        for devices in dict.fromkeys(_DEVICES.value.split(",")):
            result = run_one(workload.strip(), devices.strip(), size, seconds)
            results.append(result)
            print(f"{result['workload']:4s} {result['devices']} device(s) batch {result['batch']:3d} UTD {result['utd']:2d}: "
                  f"{result['updates_per_s']:8.1f} updates/s, {result['step_ms']:7.1f} ms/step, compile "
                  f"{result['compile_s']:5.1f} s, data wait {100 * result['data_wait_share']:4.1f} %"
                  + (f", encoder {result['encoder_images_per_s']:.0f} images/s" if "encoder_images_per_s" in result else ""),
                  flush=True)
    if _OUT.value:
        Path(_OUT.value).write_text(json.dumps({"size": _SIZE.value, "backend": jax.default_backend(),
                                                "devices": [str(d) for d in jax.local_devices()],
                                                "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
