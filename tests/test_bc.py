"""scripts/train_bc.py end to end (demos + HG-DAgger interventions, evaluation, checkpoint the actor
evaluates, exported policy) and the learner process starting SAC from a BC policy."""

import json
import subprocess

import gymnasium as gym
import numpy as np
from conftest import REPO

from experiments.launch import SMOKE_SETTINGS, role_args, start_role, stop
from experiments.mappings import apply_overrides, load_experiment
from serl_launcher.data import ReplayBuffer, save_demos
from serl_launcher.wrappers.grasp_penalty import with_grasp_penalty
from sim_envs.experts import collect_expert_demos

EXP = REPO / "experiments" / "pick_cube_sim"
SMALL = ["agent.hidden_dims=(32,32)", "agent.num_qs=2"]


def sets(settings):
    return [a for s in settings for a in ("--set", s)]


def recorded(config, n, seed):
    env = with_grasp_penalty(gym.make("PandaPickCube-v0", config=config.env), config)
    try:
        return collect_expert_demos(env, n, seed=seed), env.observation_space, env.action_space
    finally:
        env.close()


def test_bc_with_hg_dagger_then_the_actor_evaluates_its_checkpoint(tmp_path, python, subprocess_env):
    config = load_experiment("pick_cube_sim").get_config()
    demos, obs_space, act_space = recorded(config, 2, seed=0)
    save_demos(tmp_path / "demos.npz", demos)
    # A run folder whose online buffer holds one more expert episode, every other step marked
    # as an intervention (what a person's takeovers leave in a run).
    more, _, _ = recorded(config, 1, seed=7)
    for i, t in enumerate(more):
        t["intervened"] = i % 2 == 0
    online = ReplayBuffer(obs_space, act_space, 1000, include_grasp_penalty=True)
    online.insert_many(more)
    online.save(tmp_path / "run" / "buffers" / "online")
    interventions = sum(t["intervened"] for t in more)

    bc = tmp_path / "bc"
    result = subprocess.run(
        [python, str(REPO / "scripts/train_bc.py"), "--exp_name", "pick_cube_sim", "--checkpoint_path", str(bc),
         "--hg_dagger", str(tmp_path / "run"), "--eval_n_trajs", "2",
         *sets([*SMALL, f"demos.paths=({str(tmp_path / 'demos.npz')!r},)", "bc.steps=40", "bc.log_period=10"])],
        capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"[bc] {len(demos) + interventions} transitions: {len(demos)} from" in result.stdout
    assert f"{interventions} interventions of {len(more)} transitions in {tmp_path / 'run'}" in result.stdout
    assert "over 2 deterministic episodes" in result.stdout and "agent.init_actor_from=" in result.stdout
    records = [json.loads(line) for line in (bc / "metrics.jsonl").read_text().splitlines()]
    losses = [r["bc/bc_loss"] for r in records if "bc/bc_loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert any("eval/success_rate" in r for r in records) and (bc / "policy" / "policy.json").is_file()
    again = subprocess.run(  # a second run into the same folder is refused, nothing overwritten
        [python, str(REPO / "scripts/train_bc.py"), "--exp_name", "pick_cube_sim", "--checkpoint_path", str(bc)],
        capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert again.returncode != 0 and "already holds a trained policy" in again.stderr

    evaluated = subprocess.run(
        ["bash", str(EXP / "run_actor.sh"), "--checkpoint_path", str(bc), "--eval_checkpoint_step", "-1",
         "--eval_n_trajs", "1"], capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "[eval] step 40: success rate" in evaluated.stdout


def test_the_learner_process_starts_sac_from_a_bc_policy(tmp_path, subprocess_env):
    import jax

    from serl_launcher.agents.bc import BCAgent, bc_config_for
    from serl_launcher.utils.checkpoints import export_policy, load_policy

    exp = load_experiment("pick_cube_sim")
    config = exp.get_config()
    apply_overrides(config, list(SMOKE_SETTINGS))
    env = exp.make_env(config)
    agent = BCAgent.create(jax.random.PRNGKey(3), env.observation_space, env.action_space, bc_config_for(config.agent))
    policy_dir = export_policy(tmp_path / "bc_policy", agent, env.observation_space, env.action_space, step=0)
    env.close()
    bad = subprocess.run(
        ["bash", str(EXP / "run_learner.sh"), "--checkpoint_path", str(tmp_path / "bad"),
         *sets([*SMOKE_SETTINGS, f"agent.init_actor_from={str(tmp_path)!r}"])],
        capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert bad.returncode != 0 and "is not an exported policy folder" in bad.stderr

    run = tmp_path / "run"
    args = role_args(str(run), [*SMOKE_SETTINGS, f"agent.init_actor_from={str(policy_dir)!r}",
                                "learner.checkpoint_period=1000000"])
    learner = start_role("pick_cube_sim", "learner", [*args, "--set", "learner.max_steps=1"], tmp_path / "learner.log",
                         subprocess_env)
    actor = start_role("pick_cube_sim", "actor", ["--actor_id", "a0", *args, "--set", "actor.max_env_steps=150"],
                       tmp_path / "actor.log", subprocess_env)
    try:
        learner.wait(timeout=300)
        actor.wait(timeout=300)
    finally:
        stop([learner, actor], timeout=60)
    log = (tmp_path / "learner.log").read_text()
    assert learner.returncode == 0, log[-3000:]
    assert f"[warm start] encoder, actor and gripper head from {policy_dir}" in log
    # After one learner step the exported actor is still (nearly) the BC actor it started from.
    exported, meta = load_policy(run / "policy")
    assert meta["step"] == 1
    for a, b in zip(jax.tree.leaves(exported.params["actor"]), jax.tree.leaves(agent.state.params["actor"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-3)
