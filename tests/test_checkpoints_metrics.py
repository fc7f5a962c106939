"""Checkpoints (resume and policy export), the metrics writer and its NaN guard, multi-device."""

import json
import subprocess
import textwrap

import jax
import numpy as np
import pytest
from gymnasium import spaces
from test_agents import ACTION_SPACE, STATE_SPACE, random_batch, small

from serl_launcher.agents.bc import BCAgent, bc_config
from serl_launcher.agents.sac import SACAgent, rlpd_config, sac_config
from serl_launcher.utils.checkpoints import CheckpointManager, export_policy, load_policy
from serl_launcher.utils.metrics import MetricsWriter, NonFiniteMetricError, read_metrics

OBS = {"state": np.linspace(-0.9, 0.9, 6).astype(np.float32)}


def actions_of(policy, seeds=(0, 1, 2)):
    return [policy.sample_actions(OBS, jax.random.PRNGKey(s), deterministic=d) for s in seeds for d in (True, False)]


@pytest.mark.parametrize("learned_gripper", [False, True])
def test_save_load_gives_identical_actions_and_resumes_exactly(tmp_path, learned_gripper):
    config = small(rlpd_config(), utd_ratio=2, learned_gripper=learned_gripper)
    agent = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, config)
    agent, _ = agent.update(random_batch(STATE_SPACE, 16, seed=0, gripper=learned_gripper))
    manager = CheckpointManager(tmp_path / "checkpoints")
    manager.save(7, agent, STATE_SPACE, ACTION_SPACE, extra={"env_steps": 123})
    manager.wait()
    expected_actions = actions_of(agent.policy())

    template = SACAgent.create(jax.random.PRNGKey(99), STATE_SPACE, ACTION_SPACE, config)
    restored, meta = manager.restore(template, observation_space=STATE_SPACE)
    assert manager.latest_step() == 7 and meta["extra"] == {"env_steps": 123}
    for a, b in zip(expected_actions, actions_of(restored.policy()), strict=True):
        np.testing.assert_array_equal(a, b)

    # Training continues exactly as if never interrupted (optimizer state and RNG restored).
    batch = random_batch(STATE_SPACE, 16, seed=1, gripper=learned_gripper)
    continued, _ = agent.update(batch)
    resumed, _ = restored.update(batch)
    for a, b in zip(jax.tree.leaves(continued), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_restore_rejects_a_different_observation_space(tmp_path):
    agent = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, small(sac_config()))
    manager = CheckpointManager(tmp_path / "ckpt")
    manager.save(1, agent, STATE_SPACE, ACTION_SPACE)
    manager.wait()
    other = spaces.Dict({"state": spaces.Box(-1, 1, (7,), np.float32)})
    with pytest.raises(ValueError, match=r"observation space\['state'\]: expected shape \(6,\)"):
        manager.restore(agent, observation_space=other)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        CheckpointManager(tmp_path / "empty").restore(agent)


@pytest.mark.parametrize("kind", ["sac", "bc"])
def test_exported_policy_loads_from_the_folder_alone(tmp_path, kind):
    if kind == "sac":
        agent = SACAgent.create(jax.random.PRNGKey(3), STATE_SPACE, ACTION_SPACE, small(sac_config(), learned_gripper=True))
    else:
        agent = BCAgent.create(jax.random.PRNGKey(3), STATE_SPACE, ACTION_SPACE, small(bc_config()))
    folder = export_policy(tmp_path / "policy", agent, STATE_SPACE, ACTION_SPACE, step=5)
    assert sorted(p.name for p in folder.iterdir()) == ["params", "policy.json"]
    policy, meta = load_policy(folder)
    assert meta["agent"] == kind and meta["step"] == 5
    for a, b in zip(actions_of(agent.policy()), actions_of(policy), strict=True):
        np.testing.assert_array_equal(a, b)
    # Only acting parameters are exported: no critic, no optimizer state.
    assert set(policy.params) <= {"encoder", "actor", "grasp_critic"}


def test_load_policy_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no policy.json"):
        load_policy(tmp_path)
    agent = SACAgent.create(jax.random.PRNGKey(3), STATE_SPACE, ACTION_SPACE, small(sac_config()))
    folder = export_policy(tmp_path / "p", agent, STATE_SPACE, ACTION_SPACE)
    meta = json.loads((folder / "policy.json").read_text())
    (folder / "policy.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(ValueError, match="policy format 99"):
        load_policy(folder)


def test_metrics_writer_jsonl_and_nan_guard(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    with MetricsWriter(path, config={"lr": 3e-4}) as writer:
        writer.write(1, {"critic_loss": np.float32(0.5), "nested": {"q": 2}}, prefix="train/")
        with pytest.raises(NonFiniteMetricError, match=r"step 2: metric 'train/critic_loss' is nan"):
            writer.write(2, {"critic_loss": float("nan")}, prefix="train/")
        with pytest.raises(ValueError, match="not a scalar"):
            writer.write(3, {"vector": np.zeros(3)})
    first_line = json.loads(path.read_text().splitlines()[0])
    assert first_line == {"config": {"lr": 3e-4}}
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2]  # the bad record is kept as evidence
    assert records[0]["train/critic_loss"] == 0.5 and records[0]["train/nested/q"] == 2


MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from test_agents import ACTION_SPACE, STATE_SPACE, random_batch, small
    from serl_launcher.agents.sac import SACAgent, rlpd_config
    from serl_launcher.utils.sharding import make_mesh, replicate, shard_batch
    assert len(jax.devices()) == 2, jax.devices()
    config = small(rlpd_config(), utd_ratio=2)
    batch = random_batch(STATE_SPACE, 2 * 8, seed=0)
    single, single_metrics = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, config).update(batch)
    mesh = make_mesh()
    sharded_batch = shard_batch(batch, mesh, utd_ratio=2)
    assert len(sharded_batch["actions"].sharding.device_set) == 2
    agent = replicate(SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, config), mesh)
    multi, multi_metrics = agent.update(sharded_batch)
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for k in single_metrics:
        np.testing.assert_allclose(float(single_metrics[k]), float(multi_metrics[k]), rtol=1e-5, atol=1e-6)
    print("MATCH", len(jax.tree.leaves(single)))
""")


def test_multi_device_update_matches_single_device(python, subprocess_env):
    from conftest import REPO

    env = {**subprocess_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": str(REPO / "tests")}
    result = subprocess.run([python, "-c", MULTI_DEVICE_SCRIPT], capture_output=True, text=True,
                            env=env, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MATCH" in result.stdout


def test_re_export_replaces_the_policy_without_leftovers(tmp_path):
    agent = SACAgent.create(jax.random.PRNGKey(3), STATE_SPACE, ACTION_SPACE, small(sac_config()))
    export_policy(tmp_path / "policy", agent, STATE_SPACE, ACTION_SPACE, step=1)
    agent, _ = agent.update(random_batch(STATE_SPACE, 8))
    export_policy(tmp_path / "policy", agent, STATE_SPACE, ACTION_SPACE, step=2)
    policy, meta = load_policy(tmp_path / "policy")
    assert meta["step"] == 2
    for a, b in zip(actions_of(agent.policy()), actions_of(policy), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]
