"""Learner and actor as separate processes through the experiment's real run scripts: crashes of
the learner at awkward moments, two actors, a keyed run whose key must not reach the disk."""

import json
import re
import signal
import subprocess
import time

import numpy as np
from conftest import REPO

from experiments.launch import SMOKE_SETTINGS, role_args, start_role, stop
from serl_launcher.utils.faults import ENV_VAR as FAULT_ENV

EXP = REPO / "experiments" / "pick_cube_sim"


def wait_for(predicate, timeout, what, processes=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for process in processes:
            assert process.poll() is None, f"a process exited (code {process.returncode}) while waiting for {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def text(path):
    return path.read_text() if path.exists() else ""


def kill9(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_learner_killed_mid_insert_mid_snapshot_mid_checkpoint_loses_and_duplicates_nothing(tmp_path, subprocess_env):
    """kill -9 of the learner at three points of one run, a restart after each; the actor (one
    process throughout) must end with every transition it produced in the learner's buffer
    exactly once, and neither side may wait for the other for good, also when the restored
    checkpoint is far behind what the buffers hold (the first learner never checkpoints)."""
    run = tmp_path / "run"
    args = role_args(str(run), SMOKE_SETTINGS)
    env = {**subprocess_env, "SERL_TRANSPORT_KEY": "test-secret"}
    logs = [tmp_path / f"learner{k}.log" for k in range(4)]
    actor_log = tmp_path / "actor.log"
    kills = [  # (fault point, extra settings)
        ("store.deliver:40", ["--set", "learner.checkpoint_period=1000000"]),  # mid-insert, no checkpoint yet
        ("store.snapshot:1", []),  # between the online and the demo buffer's snapshot
        ("learner.checkpoint:1", []),  # while orbax writes the checkpoint
    ]
    actor = start_role("pick_cube_sim", "actor", ["--actor_id", "a0", "--flush_timeout_s", "120", *args],
                       actor_log, env)
    learner = None
    try:
        for k, (point, extra) in enumerate(kills):
            learner = start_role("pick_cube_sim", "learner", [*args, *extra], logs[k], {**env, FAULT_ENV: point})
            if k:  # the restarted learner recovered what the killed one had acknowledged
                wait_for(lambda k=k: "[learner] recovered" in text(logs[k]), 120, f"learner {k} to recover",
                         [learner, actor])
            wait_for(lambda k=k: "[fault] paused at" in text(logs[k]), 240, f"learner {k} to reach {point}",
                     [learner, actor])
            # A restarted learner may reach its fault point before the actor is back (its programs
            # come from the compilation cache); the fault pauses one thread, so the actor can still
            # meet it: wait for that, so each restart is checked below.
            wait_for(lambda k=k: text(actor_log).count("learner restarted") >= k, 120,
                     f"the actor to meet learner {k}", [learner, actor])
            kill9(learner)
            assert actor.poll() is None, "the actor must survive the learner's crash"
        learner = start_role("pick_cube_sim", "learner", args, logs[3], env)
        # Training goes on (no deadlock): a checkpoint well past the last one, the actor stepping.
        wait_for(lambda: "[learner] recovered" in text(logs[3]), 120, "the last learner to recover", [learner, actor])
        steps_before = sum(1 for line in text(run / "actor-a0" / "metrics.jsonl").splitlines() if "actor/success" in line)
        checkpoints = run / "checkpoints"
        first = max((int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()), default=0)
        wait_for(lambda: any(p.name.isdigit() and int(p.name) >= first + 100 for p in checkpoints.iterdir()),
                 240, "the restarted learner to train 100 steps further", [learner, actor])
        wait_for(lambda: sum(1 for line in text(run / "actor-a0" / "metrics.jsonl").splitlines()
                             if "actor/success" in line) > steps_before, 120, "the actor to finish another episode",
                 [learner, actor])
        actor.send_signal(signal.SIGTERM)  # the actor stops, waits for its last acks, reports
        actor.wait(timeout=180)
        learner.send_signal(signal.SIGTERM)
        learner.wait(timeout=180)
    finally:
        stop([p for p in (learner, actor) if p is not None], timeout=60)
    assert actor.returncode == 0 and learner.returncode == 0, text(actor_log)[-3000:] + text(logs[3])[-3000:]

    # Each restart recovered at least what the actor had been told was acknowledged.
    restarts = re.findall(r"it holds up to seq (-?\d+), this actor had (-?\d+) acknowledged", text(actor_log))
    assert len(restarts) == 3, text(actor_log)[-3000:]
    for holds, acked in restarts:
        assert int(holds) >= int(acked), restarts
    recovered = [int(re.search(r"recovered (\d+) online", text(log)).group(1)) for log in logs[1:]]
    assert recovered == sorted(recovered) and recovered[0] > 0, recovered
    assert "LOST" not in "".join(text(log) for log in logs)

    # In the end: every transition the actor produced is in the buffer exactly once.
    done = json.loads(text(actor_log).split("[actor] done: ")[1].splitlines()[0])
    summary = json.loads(text(logs[3]).split("[learner] done: ")[1].split("; run folder")[0])
    assert done["acknowledged"] == done["env_steps"] and done["rejected"] == 0, done
    assert summary["inserted"] == done["env_steps"], (summary, done)

    from experiments.mappings import load_experiment
    from serl_launcher.data import ReplayBuffer

    exp = load_experiment("pick_cube_sim")
    probe = exp.make_env(exp.get_config())
    buffer = ReplayBuffer.load(run / "buffers" / "online", probe.observation_space, probe.action_space)
    probe.close()
    assert buffer.num_inserted == done["env_steps"]
    rows = buffer._frames["state"][: buffer.rows]  # every frame the actor observed, once
    valid = buffer._valid[: buffer.rows]
    keys = {np.concatenate([rows[i], buffer._fields["actions"][i]]).tobytes() for i in np.flatnonzero(valid)}
    assert len(keys) == int(valid.sum()), "a transition is in the buffer twice"


def test_two_actors_get_their_own_seeds_and_first_actions(tmp_path, subprocess_env):
    from serl_launcher.data.transition_log import read_log
    from serl_launcher.transport.codec import unpack_value

    run = tmp_path / "run"
    args = role_args(str(run), [*SMOKE_SETTINGS, "learner.checkpoint_period=1000000"])
    learner = start_role("pick_cube_sim", "learner", args, tmp_path / "learner.log", subprocess_env)
    actors = [start_role("pick_cube_sim", "actor", ["--actor_id", name, *args, "--set", "actor.max_env_steps=30"],
                         tmp_path / f"{name}.log", subprocess_env) for name in ("arm-a", "arm-b")]
    try:
        for actor in actors:
            actor.wait(timeout=240)
            assert actor.returncode == 0, text(tmp_path / "arm-a.log")[-3000:]
        kill9(learner)  # no final snapshot: the store's log still has every message, with its actor
    finally:
        stop([learner, *actors], timeout=60)
    seeds = [re.search(r"seed (\d+) \(from seed 0", text(tmp_path / f"{n}.log")).group(1) for n in ("arm-a", "arm-b")]
    assert seeds[0] != seeds[1]
    first = {}
    for _, body in read_log(run / "buffers" / "log"):
        record = unpack_value(body)
        if record["items"] and record["actor"] not in first:
            first[record["actor"]] = record["items"][0]
    a, b = first["arm-a"], first["arm-b"]
    assert not np.array_equal(a["actions"], b["actions"])
    assert not np.array_equal(a["observations"]["state"], b["observations"]["state"])


def test_the_key_never_reaches_the_run_folder(tmp_path, subprocess_env):
    secret = "k3y-" + "9f2c41d7e8a6b5"
    run = tmp_path / "run"
    args = role_args(str(run), [*SMOKE_SETTINGS, f"transport.key={secret!r}"])
    learner = start_role("pick_cube_sim", "learner", [*args, "--set", "learner.max_steps=60"], tmp_path / "learner.log",
                         subprocess_env)
    actor = start_role("pick_cube_sim", "actor", ["--actor_id", "a0", *args, "--set", "actor.max_env_steps=300"],
                       tmp_path / "actor.log", subprocess_env)
    try:
        learner.wait(timeout=300)
        actor.wait(timeout=300)
    finally:
        stop([learner, actor], timeout=60)
    assert learner.returncode == 0, text(tmp_path / "learner.log")[-3000:]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "config.json" for p in files) and any(p.name == "metrics.jsonl" for p in files)
    config = json.loads((run / "config.json").read_text())
    assert config["transport"]["key"] == "<redacted>"
    leaks = [p for p in files + [tmp_path / "learner.log", tmp_path / "actor.log"] if secret.encode() in p.read_bytes()]
    assert not leaks, leaks


def test_the_grasp_penalty_goes_from_the_env_through_the_actor_and_transport_into_the_update(
        tmp_path, subprocess_env):
    """Learner and actor processes: the toggles the actor's env penalised are in the learner's
    buffer, each exactly where the rule puts it, and the sampled batches' mean penalty that the
    learner logs from its grasp-critic update is negative."""
    from experiments.mappings import load_experiment
    from serl_launcher.data import ReplayBuffer
    from serl_launcher.wrappers.grasp_penalty import toggles

    run = tmp_path / "run"
    args = role_args(str(run), SMOKE_SETTINGS)
    learner = start_role("pick_cube_sim", "learner", [*args, "--set", "learner.max_steps=60"], tmp_path / "learner.log",
                         subprocess_env)
    actor = start_role("pick_cube_sim", "actor", ["--actor_id", "a0", *args, "--set", "actor.max_env_steps=300"],
                       tmp_path / "actor.log", subprocess_env)
    try:
        learner.wait(timeout=300)
        actor.wait(timeout=300)
    finally:
        stop([learner, actor], timeout=60)
    assert learner.returncode == 0, text(tmp_path / "learner.log")[-3000:]
    logged = [json.loads(line) for line in text(run / "metrics.jsonl").splitlines()]
    means = [r["train/grasp_penalty_mean"] for r in logged if "train/grasp_penalty_mean" in r]
    assert means and min(means) < 0.0 and max(means) <= 0.0, means

    exp = load_experiment("pick_cube_sim")
    config = exp.get_config()
    probe = exp.make_env(config)
    gripper = probe.unwrapped.state_layout.slice("gripper_pose")
    buffer = ReplayBuffer.load(run / "buffers" / "online", probe.observation_space, probe.action_space)
    probe.close()
    assert buffer.include_grasp_penalty and len(buffer) > 100
    batch = buffer.sample(2000)
    closed = batch["observations"]["state"][:, gripper][:, 0] > config.grasp_penalty.closed_above
    expected = [config.grasp_penalty.value if toggles(a, c) else 0.0
                for a, c in zip(batch["actions"][:, -1], closed, strict=True)]
    np.testing.assert_allclose(batch["grasp_penalty"], expected, rtol=1e-6)
    assert (batch["grasp_penalty"] < 0).any()


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
    again = subprocess.run(result.args, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "eval_7-2.json").read_text())["step"] == 7  # the first one kept
    assert (tmp_path / "run" / "eval_7.json").is_file()
    missing = subprocess.run(
        ["bash", str(EXP / "run_actor.sh"), "--checkpoint_path", str(tmp_path / "run"), "--eval_checkpoint_step", "8",
         "--set", "agent.hidden_dims=(32,32)", "--set", "agent.num_qs=2"],
        env=subprocess_env, capture_output=True, text=True, timeout=300,
    )
    assert missing.returncode != 0 and "no checkpoint at step 8" in missing.stderr and "available: [7]" in missing.stderr
