"""learner.devices through the run script: the learner trained on two (fake CPU) devices, batch
split over them and agent replicated, learns the same parameters as on one device from the same
batches (a run folder whose buffers are filled beforehand, so both runs sample the same data)."""

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
def test_two_devices_learn_what_one_device_learns(tmp_path, subprocess_env):
    exp, config, obs_space, act_space = filled_run(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    env = {**subprocess_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    for name, devices in (("one", "1"), ("two", "2")):
        args = role_args(str(tmp_path / name), [*SMOKE_SETTINGS, "learner.max_steps=12", "learner.samples_per_insert=0",
                                                f"learner.devices={devices}", "learner.log_period=4"])
        learner = start_role("pick_cube_sim", "learner", args, tmp_path / f"{name}.log", env)
        try:
            learner.wait(timeout=300)
        finally:
            stop([learner], timeout=30)
        log = (tmp_path / f"{name}.log").read_text()
        assert learner.returncode == 0, log[-3000:]
        assert f"[learner] training on {devices} device(s)" in log
    assert "training on 2 device(s): cpu:0, cpu:1" in (tmp_path / "two.log").read_text()

    from serl_launcher.agents.sac import SACAgent
    from serl_launcher.utils.checkpoints import CheckpointManager

    template = SACAgent.create(jax.random.PRNGKey(config.seed), obs_space, act_space, config.agent)
    agents = {}
    for name in ("one", "two"):
        manager = CheckpointManager(tmp_path / name / "checkpoints")
        assert manager.latest_step() == 12
        agents[name], _ = manager.restore(template, observation_space=obs_space)
        manager.close()
    one, two = (jax.tree.map(np.asarray, agents[n].critic.params) for n in ("one", "two"))
    start = jax.tree.map(np.asarray, template.critic.params)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(start), strict=True))
    assert moved > 1e-3  # it trained
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # float reduction order only
    for field in ("actor", "temperature"):
        for a, b in zip(jax.tree.leaves(getattr(agents["one"], field).params),
                        jax.tree.leaves(getattr(agents["two"], field).params), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


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


@pytest.mark.slow
def test_two_learner_processes_learn_what_one_two_device_process_learns(tmp_path, subprocess_env):
    """learner.distributed: two learner processes (one CPU device each, JAX's runtime with gloo
    collectives) started through run_learner.sh against one process with two devices, on the
    same filled run folder: the same parameters."""
    from experiments.launch import free_port

    exp, config, obs_space, act_space = filled_run(tmp_path / "single")
    shutil.copytree(tmp_path / "single", tmp_path / "multi")
    steps = ["learner.max_steps=8", "learner.samples_per_insert=0", "learner.log_period=4"]
    args = role_args(str(tmp_path / "single"), [*SMOKE_SETTINGS, *steps, "learner.devices=2"])
    single = start_role("pick_cube_sim", "learner", args, tmp_path / "single.log",
                        {**subprocess_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    coordinator = f"127.0.0.1:{free_port()}"
    args = role_args(str(tmp_path / "multi"), [*SMOKE_SETTINGS, *steps, f"learner.distributed.coordinator={coordinator!r}",
                                                "learner.distributed.num_processes=2"])
    processes = [start_role("pick_cube_sim", "learner", [*args, "--set", f"learner.distributed.process_id={i}"],
                            tmp_path / f"multi{i}.log", subprocess_env) for i in (0, 1)]
    try:
        for process in (single, *processes):
            process.wait(timeout=300)
    finally:
        stop([single, *processes], timeout=30)
    for name, process in (("single", single), ("multi0", processes[0]), ("multi1", processes[1])):
        assert process.returncode == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    assert "[learner] training on 2 device(s)" in (tmp_path / "multi0.log").read_text()
    assert "[learner 1] done: 8 steps" in (tmp_path / "multi1.log").read_text()
    assert not (tmp_path / "multi" / "checkpoints" / "9").exists()

    from serl_launcher.agents.sac import SACAgent
    from serl_launcher.utils.checkpoints import CheckpointManager

    template = SACAgent.create(jax.random.PRNGKey(config.seed), obs_space, act_space, config.agent)
    agents = {}
    for name in ("single", "multi"):
        manager = CheckpointManager(tmp_path / name / "checkpoints")
        assert manager.latest_step() == 8
        agents[name], _ = manager.restore(template, observation_space=obs_space)
        manager.close()
    for field in ("critic", "actor", "temperature"):
        for a, b in zip(jax.tree.leaves(getattr(agents["single"], field).params),
                        jax.tree.leaves(getattr(agents["multi"], field).params), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
