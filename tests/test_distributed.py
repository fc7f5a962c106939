"""Learner and actor as separate processes through the experiment's real run scripts."""

import json
import signal
import subprocess
import time

from conftest import REPO

from experiments.launch import SMOKE_SETTINGS, role_args, start_role, stop

EXP = REPO / "experiments" / "pick_cube_sim"
def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_learner_resumes_from_checkpoint_and_buffers(tmp_path, subprocess_env):
    run = tmp_path / "run"
    args = role_args(str(run), SMOKE_SETTINGS)
    env = {**subprocess_env, "SERL_TRANSPORT_KEY": "test-secret"}
    learner = start_role("pick_cube_sim", "learner", [*args, "--set", "learner.max_steps=100000"],
                         tmp_path / "learner1.log", env)
    actor = start_role("pick_cube_sim", "actor", ["--actor_id", "a0", *args], tmp_path / "actor.log", env)
    try:
        checkpoints = run / "checkpoints"
        wait_for(lambda: checkpoints.is_dir() and any(p.name.isdigit() and int(p.name) >= 100 for p in checkpoints.iterdir()),
                 240, "a learner checkpoint at step >= 100")
        time.sleep(1.0)  # let the checkpoint's buffers finish writing
        learner.send_signal(signal.SIGKILL)  # a crash: no chance to save
        learner.wait(timeout=30)
        saved = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
        assert actor.poll() is None, "the actor must survive the learner's crash"

        restarted = subprocess.run(
            ["bash", str(EXP / "run_learner.sh"), *args, "--set", f"learner.max_steps={saved + 60}"],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
        out = restarted.stdout + restarted.stderr
        assert f"resumed from step {saved}" in out
        resumed_online = int(out.split(f"resumed from step {saved} (")[1].split(" online")[0])
        assert resumed_online > 0
        summary = json.loads(out.split("[learner] done: ")[1].split("; run folder")[0])
        assert summary["step"] == saved + 60
        assert summary["received"] > 0, "the running actor's transitions reach the restarted learner"
        assert summary["online"] >= resumed_online
        assert (run / "policy" / "policy.json").is_file()
    finally:
        stop([learner, actor], timeout=60)
    assert actor.returncode == 0, (tmp_path / "actor.log").read_text()[-3000:]
    metrics = [json.loads(line) for line in (run / "actor-a0" / "metrics.jsonl").read_text().splitlines()]
    assert any("actor/success" in m for m in metrics)


def test_evaluation_mode_reports_success_rate(tmp_path, subprocess_env):
    """--eval_checkpoint_step on a run folder trained a few steps (in-process, to be quick)."""
    import jax

    from experiments.mappings import load_experiment
    from serl_launcher.agents.sac import SACAgent
    from serl_launcher.utils.checkpoints import CheckpointManager

    exp = load_experiment("pick_cube_sim")
    config = exp.get_config()
    config.agent.hidden_dims, config.agent.num_qs = (32, 32), 2
    env = exp.make_env(config)
    agent = SACAgent.create(jax.random.PRNGKey(config.seed), env.observation_space, env.action_space, config.agent)
    manager = CheckpointManager(tmp_path / "run" / "checkpoints")
    manager.save(7, agent, env.observation_space, env.action_space)
    manager.wait()
    result = subprocess.run(
        ["bash", str(EXP / "run_actor.sh"), "--checkpoint_path", str(tmp_path / "run"), "--eval_checkpoint_step", "7",
         "--eval_n_trajs", "2", "--set", "agent.hidden_dims=(32,32)", "--set", "agent.num_qs=2"],
        env=subprocess_env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[eval] step 7: success rate 0% over 2 episodes" in result.stdout
    assert json.loads((tmp_path / "run" / "eval_7.json").read_text())["length"] == 100.0
    missing = subprocess.run(
        ["bash", str(EXP / "run_actor.sh"), "--checkpoint_path", str(tmp_path / "run"), "--eval_checkpoint_step", "8",
         "--set", "agent.hidden_dims=(32,32)", "--set", "agent.num_qs=2"],
        env=subprocess_env, capture_output=True, text=True, timeout=300,
    )
    assert missing.returncode != 0 and "no checkpoint at step 8" in missing.stderr and "available: [7]" in missing.stderr
