"""The intervention wrapper and the scripted expert as a simulated person."""

import subprocess

import gymnasium as gym
import numpy as np
import pytest
from conftest import REPO

import sim_envs  # noqa: F401
from serl_launcher.data import load_demos
from serl_launcher.human.scripted import StallTakeover
from serl_launcher.wrappers.intervention import InterventionWrapper
from sim_envs.experts import PickCubeExpert


def test_stalled_policy_is_taken_over_and_transitions_are_marked():
    base = gym.make("PandaPickCube-v0", max_episode_steps=60)
    device = StallTakeover(PickCubeExpert(base), patience=5, hold_steps=10, seed=0)
    env = InterventionWrapper(base, device)
    obs, _ = env.reset(seed=0)
    idle = np.zeros(4, np.float32)  # a policy that never moves
    flags, executed = [], []
    for _ in range(60):
        obs, reward, terminated, truncated, info = env.step(idle)
        flags.append(info["intervened"])
        executed.append(info.get("intervene_action"))
        if terminated or truncated:
            break
    assert flags[:5] == [False] * 5 and flags[5:15] == [True] * 10
    assert all(a is not None and np.abs(a[:3]).max() > 0 for a, f in zip(executed, flags, strict=True) if f)
    stats = info["episode_interventions"]
    assert stats["intervention_steps"] == sum(flags) and stats["interventions"] >= 1
    assert stats["intervention_rate"] == pytest.approx(sum(flags) / len(flags))
    assert terminated and info["success"], "the expert's takeovers should finish the task"


def test_takeovers_fade_as_the_policy_succeeds():
    base = gym.make("PandaPickCube-v0")
    device = StallTakeover(PickCubeExpert(base), patience=1, hold_steps=1, window=10, seed=0)
    assert device.takeover_probability == 1.0
    for _ in range(10):
        device.episode_end(True)
    assert device.takeover_probability == 0.0
    env = InterventionWrapper(base, device)
    env.reset(seed=0)
    assert not any(env.step(np.zeros(4, np.float32))[-1]["intervened"] for _ in range(20))
    for _ in range(5):
        device.episode_end(False)
    assert device.takeover_probability == pytest.approx(0.5)


def test_record_demos_script(tmp_path, python, subprocess_env):
    out = tmp_path / "demos.npz"
    result = subprocess.run(
        [python, str(REPO / "scripts/record_demos.py"), "--exp_name", "pick_cube_sim",
         "--successes_needed", "2", "--output", str(out)],
        capture_output=True, text=True, env=subprocess_env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"from 2 successful episodes to {out}" in result.stdout
    transitions = load_demos(out)
    assert all(t["intervened"] for t in transitions)
    assert sum(t["rewards"] for t in transitions) == 2.0 and sum(bool(t["dones"]) for t in transitions) == 2
    # pick_cube_sim has a learned gripper: each transition carries its toggle penalty, and the
    # expert's grasp (closing the open gripper) is penalised at least once per episode
    penalties = np.array([t["grasp_penalty"] for t in transitions])
    assert set(np.unique(penalties)) <= {0.0, np.float32(-0.02)} and (penalties < 0).sum() >= 2


def test_unknown_experiment_lists_the_known_ones(python, subprocess_env):
    result = subprocess.run(
        [python, str(REPO / "scripts/record_demos.py"), "--exp_name", "pick_cube_simm"],
        capture_output=True, text=True, env=subprocess_env, timeout=120,
    )
    assert result.returncode != 0
    assert "unknown experiment 'pick_cube_simm'; known experiments: " in result.stderr
    known = result.stderr.split("known experiments: ")[1].split(";")[0].split(", ")
    assert {"pick_cube_sim", "peg_insert_sim", "so101_real"} <= set(known)
