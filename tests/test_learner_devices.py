"""learner.devices and learner.distributed through the run script, and the device benchmark."""

import shutil

import jax
import numpy as np
import pytest

from experiments.launch import SMOKE_SETTINGS, role_args, start_role, stop


def filled_run(folder, transitions=300):
    """A run folder whose data store already holds `transitions` (what actors would have sent)."""
    from experiments.mappings import apply_overrides, load_experiment
    from serl_launcher.data.store import DataStore

    exp = load_experiment("pick_cube_sim")
    config = exp.get_config()
    apply_overrides(config, list(SMOKE_SETTINGS))
    env = exp.make_env(config)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    rng = np.random.default_rng(0)
    store = DataStore(folder / "buffers", obs_space, act_space, config.learner.replay_capacity, seed=config.seed,
                      include_grasp_penalty=config.agent.learned_gripper, sync="write")
    batch, obs = [], {"state": rng.normal(size=obs_space["state"].shape).astype(np.float32)}
    for i in range(transitions):
        nxt = {"state": rng.normal(size=obs_space["state"].shape).astype(np.float32)}
        end = i % 25 == 24
        batch.append({"observations": obs, "next_observations": nxt,
                      "actions": rng.uniform(-1, 1, act_space.shape).astype(np.float32),
                      "rewards": np.float32(end), "masks": np.float32(not end), "dones": end,
                      "intervened": bool(i % 7 == 0), "grasp_penalty": np.float32(-0.02 * (i % 5 == 0))})
        obs = {"state": rng.normal(size=obs_space["state"].shape).astype(np.float32)} if end else nxt
    store.deliver("a0", "s0", 0, batch)
    store.commit()
    store.snapshot()
    store.close()
    return exp, config, obs_space, act_space


@pytest.mark.slow
def test_two_devices_and_two_processes_learn_what_one_device_learns(tmp_path, subprocess_env):
    """Three learners through run_learner.sh on copies of one filled run folder (so all sample
    the same batches): one device; two fake CPU devices in one process (learner.devices=2);
    two processes of one device each (learner.distributed: jax.distributed, gloo collectives).
    All three end with the same parameters (float reduction order aside), and they trained."""
    from experiments.launch import free_port

    exp, config, obs_space, act_space = filled_run(tmp_path / "one")
    for name in ("two", "multi"):
        shutil.copytree(tmp_path / "one", tmp_path / name)
    steps = [*SMOKE_SETTINGS, "learner.max_steps=8", "learner.samples_per_insert=0", "learner.log_period=4"]
    two_devices = {**subprocess_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    coordinator = f"127.0.0.1:{free_port()}"
    distributed = [f"learner.distributed.coordinator={coordinator!r}", "learner.distributed.num_processes=2"]
    launches = [("one", ["learner.devices=1"], subprocess_env, "one"), ("two", ["learner.devices=2"], two_devices, "two"),
                *((f"multi{i}", [*distributed, f"learner.distributed.process_id={i}"], subprocess_env, "multi")
                  for i in (0, 1))]
    processes = []
    try:
        for log, settings, env, folder in launches:
            processes.append((log, start_role("pick_cube_sim", "learner", role_args(str(tmp_path / folder), [*steps, *settings]),
                                              tmp_path / f"{log}.log", env)))
            if log in ("one", "two"):  # one at a time: both cores for each
                processes[-1][1].wait(timeout=300)
        for _, process in processes:
            process.wait(timeout=300)
    finally:
        stop([p for _, p in processes], timeout=30)
    for log, process in processes:
        assert process.returncode == 0, (tmp_path / f"{log}.log").read_text()[-3000:]
    assert "[learner] training on 1 device(s)" in (tmp_path / "one.log").read_text()
    assert "training on 2 device(s): cpu:0, cpu:1" in (tmp_path / "two.log").read_text()
    assert "[learner] training on 2 device(s)" in (tmp_path / "multi0.log").read_text()
    assert "[learner 1] done: 8 steps" in (tmp_path / "multi1.log").read_text()

    from serl_launcher.agents.sac import SACAgent
    from serl_launcher.utils.checkpoints import CheckpointManager

    template = SACAgent.create(jax.random.PRNGKey(config.seed), obs_space, act_space, config.agent)
    agents = {}
    for name in ("one", "two", "multi"):
        manager = CheckpointManager(tmp_path / name / "checkpoints")
        assert manager.latest_step() == 8
        agents[name], _ = manager.restore(template, observation_space=obs_space)
        manager.close()
    for field in ("critic", "actor", "temperature"):
        trained = jax.tree.leaves(getattr(agents["one"], field).params)
        start = jax.tree.leaves(getattr(template, field).params)
        assert max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(trained, start, strict=True)) > 1e-3
        for other in ("two", "multi"):
            for a, b in zip(trained, jax.tree.leaves(getattr(agents[other], field).params), strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=f"{other} {field}")


def test_the_device_benchmark_runs_at_smoke_size(tmp_path, python, subprocess_env):
    """benchmarks/learner_device.py (the GPU benchmark) at smoke size: the state and image
    workloads through the learner's data path, a result per workload with its data-wait share."""
    import json
    import subprocess

    from conftest import REPO

    out = tmp_path / "device.json"
    result = subprocess.run([python, str(REPO / "benchmarks/learner_device.py"), "--size", "smoke", "--devices", "1",
                             "--workloads", "W1,IMG", "--seconds", "0.3", "--out", str(out)],
                            capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [r["workload"] for r in results] == ["W1", "IMG"]
    for r in results:
        assert r["updates_per_s"] > 0 and 0.0 <= r["data_wait_share"] <= 1.0 and r["devices"] == 1
    assert results[1]["encoder_images_per_s"] > 0 and results[1]["utd"] == 2
