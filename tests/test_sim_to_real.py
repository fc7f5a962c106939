"""Sim to real on the SO-101: a run of the simulated task (its checkpoint and its demos) continued
by ``so101_real``'s learner and actor, as processes through the run scripts, against the robot
server (``python -m robot_infra.robot_server``) driving an SO-101 follower on an emulated Feetech
bus in a process of its own (``python -m robot_infra.tools.emulate_arm``; the real arm's backend
code: IK, calibration, servo writes), with cameras read from a video file."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
from services import start_service
from test_followers import write_calibration

import sim_envs  # noqa: F401
from experiments.launch import SMOKE_SETTINGS, role_args, start_role, stop
from experiments.mappings import apply_overrides, env_spaces, load_experiment
from serl_launcher.agents.sac import SACAgent
from serl_launcher.classifier import build_model, save_classifier
from serl_launcher.data import save_demos
from serl_launcher.utils.checkpoints import CheckpointManager, continue_from
from serl_launcher.utils.rollouts import make_transition
from serl_launcher.wrappers.grasp_penalty import with_grasp_penalty

SIM, REAL = "so101_pick_cube_sim_vision", "so101_real"
SMALL = [*SMOKE_SETTINGS, "learner.training_starts=40", "learner.checkpoint_period=20"]


def make_sim_run(folder, config) -> None:
    """What a sim run leaves behind: a checkpoint of its agent (the learner's CheckpointManager)
    and a demo file of the simulated task (the format record_demos.py writes)."""
    exp = load_experiment(SIM)
    observation_space, action_space, _ = exp.make_spaces(config)
    agent = SACAgent.create(jax.random.PRNGKey(7), observation_space, action_space, config.agent)
    manager = CheckpointManager(folder / "run" / "checkpoints")
    manager.save(500, agent, observation_space, action_space)
    manager.wait()
    manager.close()
    env = with_grasp_penalty(exp.make_env(config, classifier=False), config)
    obs, _ = env.reset(seed=0)
    transitions = []
    for _ in range(30):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, info = env.step(action)
        transitions.append(make_transition(obs, action, next_obs, reward, terminated, truncated, True,
                                           info["grasp_penalty"]))
        obs = next_obs if not (terminated or truncated) else env.reset()[0]
    env.close()
    save_demos(folder / "demos" / "sim_demos.npz", transitions, env_spaces(env).state_layout)


def test_so101_real_has_the_sim_tasks_spaces_and_refuses_another_runs_checkpoint(tmp_path):
    sim, real = load_experiment(SIM), load_experiment(REAL)
    sim_config, real_config = sim.get_config(), real.get_config()
    sim_spaces = sim.make_spaces(sim_config)
    assert sim_spaces == real.make_spaces(real_config) and sim_spaces.state_layout is not None  # and the fields
    assert real_config.agent.to_dict() == sim_config.agent.to_dict()
    # A state-based sim run has other spaces: continuing from it is refused, naming them.
    state = load_experiment("so101_pick_cube_sim")
    state_config = state.get_config()
    env = state.make_env(state_config)
    agent = SACAgent.create(jax.random.PRNGKey(0), env.observation_space, env.action_space, state_config.agent)
    manager = CheckpointManager(tmp_path / "state_run" / "checkpoints")
    manager.save(10, agent, env.observation_space, env.action_space)
    manager.wait()
    manager.close()
    env.close()
    spaces = real.make_spaces(real_config)[:2]
    real_agent = SACAgent.create(jax.random.PRNGKey(0), *spaces, real_config.agent)
    with pytest.raises(ValueError, match="observation space"):
        continue_from(real_agent, tmp_path / "state_run", *spaces)


def test_a_sim_run_continues_on_the_so101_through_the_run_scripts(tmp_path, subprocess_env):
    sim_config = load_experiment(SIM).get_config()
    apply_overrides(sim_config, SMALL)
    make_sim_run(tmp_path / "sim", sim_config)

    # An untrained classifier of the sim recipe's shape stands in for the one trained on the arm.
    c = sim_config.classifier
    shapes = {k: (sim_config.env.image_height, sim_config.env.image_width, 3) for k in c.image_keys}
    model = build_model(c.image_keys, c)
    params = model.init(jax.random.PRNGKey(0), {k: np.zeros((1, *s), np.uint8) for k, s in shapes.items()})["params"]
    save_classifier(tmp_path / "classifier", params, c.image_keys, shapes, c)

    video = str(tmp_path / "scene.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"FFV1"), 30.0, (64, 48))
    for i in range(30):
        writer.write(np.full((48, 64, 3), 8 * i, np.uint8))
    writer.release()

    # The arm's bus and the robot server run as processes of their own, as on a real set-up (a bus
    # is hardware: its replies do not wait on this process's threads or garbage collections).
    services = []
    # In full-suite runs on a 2-core machine the bus went silent for sync reads: its emulator
    # process was not scheduled for up to 2.4 s (its report's longest pause; line flags unchanged,
    # nothing dropped). 3 attempts of 1 s each ride that out; a real bus does not pause. The
    # driver also restores raw mode on a retry if something cooked the pty (OPOST rewrites the
    # length byte 0x0A of a six-servo sync read). A failure here shows the bus's counts, pauses
    # and line flags, both logs and who has the pty open.
    try:
        bus = start_service([sys.executable, "-m", "robot_infra.tools.emulate_arm", "--arm=so101"],
                            "emulated so101 bus", tmp_path / "bus.log", subprocess_env, services)
        port = bus.rsplit(" ", 1)[-1]
        calibration = tmp_path / "follower.json"
        write_calibration(calibration, "so101", port)
        served = start_service(
            [sys.executable, "-m", "robot_infra.robot_server", "--backend=so101", f"--serial_port={port}",
             f"--calibration={calibration}", f"--exp_name={REAL}", "--port=0", "--bus_timeout_ms=1000"],
            "listening on http://", tmp_path / "server.log", subprocess_env, services)
        server_url = served.rsplit(" ", 1)[-1]
        try:
            run_real(tmp_path, video, server_url, subprocess_env, sim_config)
        except AssertionError as failure:  # the bus's threads as they are now, and what the server saw
            services[0].send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            logs = "".join(f"\n--- {name}:\n" + (tmp_path / name).read_text()[-4000:] for name in ("bus.log", "server.log"))
            raise AssertionError(f"{failure}{logs}\n--- processes with {port} open: {holders(port)}") from None
    finally:
        stop(services, timeout=30)


def holders(path: str) -> list[str]:
    """'pid: command line' of every process with `path` open (from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if any(os.readlink(fd) == path for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {command[:200]}")
        except (OSError, ValueError):
            continue
    return found


def run_real(tmp_path, video: str, server_url: str, subprocess_env, sim_config) -> None:
    """so101_real's learner and actor from the sim run, until the learner has trained; then checks
    what they left: the sim checkpoint and demos carried over, transitions from the arm."""
    real_config = load_experiment(REAL).get_config()
    run = tmp_path / "real_run"
    settings = [
        *SMALL, f"agent.init_from={tmp_path / 'sim' / 'run'}", f"demos.paths=('{tmp_path / 'sim' / 'demos'}',)",
        f"classifier.checkpoint={tmp_path / 'classifier'}", f"env.server_url={server_url}",
        f"cameras.front.source={video}", f"cameras.wrist.source={video}", "cameras.front.loop=True",
        "cameras.wrist.loop=True", "actor.intervention.device=none", "env.control_hz=20.0",
        "env.max_episode_steps=30", "env.gripper_sleep=0.0", "env.joint_reset_period=1",
        "env.request_timeout=5.0",  # outlasts the server's 3 bus attempts of 1 s (a paused emulator)
    ]
    args = role_args(str(run), settings)
    # The bus stands in for hardware: training must not starve it (nice from the start, so that
    # every thread XLA starts inherits it).
    learner = start_role(REAL, "learner", args, tmp_path / "learner.log", subprocess_env, niceness=10)
    actor = start_role(REAL, "actor", args, tmp_path / "actor.log", subprocess_env, niceness=10)
    try:
        deadline = time.monotonic() + 300
        metrics = run / "metrics.jsonl"

        def trained() -> bool:
            if not metrics.exists():
                return False
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            return any("train/critic_loss" in r for r in records)

        while not trained():
            for process, name in ((learner, "learner"), (actor, "actor")):
                assert process.poll() is None, f"the {name} exited: " + (tmp_path / f"{name}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "learner.log").read_text()[-3000:]
            time.sleep(0.5)
    finally:
        stop([actor, learner])
    learner_log = (tmp_path / "learner.log").read_text()
    assert f"[continue] the whole agent from {tmp_path / 'sim' / 'run'} (step 500)" in learner_log
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    replay = [r for r in records if "replay/demo" in r]
    assert replay and replay[-1]["replay/demo"] == 30  # the sim demos, in the real run's demo buffer
    assert replay[-1]["replay/online"] > 0  # transitions from the (emulated) arm
    # The real run's spaces are the sim run's: its own checkpoint restores into the sim agent's shape.
    real_spaces = load_experiment(REAL).make_spaces(real_config)[:2]
    sim_agent = SACAgent.create(jax.random.PRNGKey(0), *real_spaces, sim_config.agent)
    continue_from(sim_agent, run, *real_spaces)
