"""The gripper toggle penalty: the wrapper on the real sim, on intervention actions, in demo files."""

import gymnasium as gym
import numpy as np
import pytest

import sim_envs  # noqa: F401
from serl_launcher.human.base import DeviceAction
from serl_launcher.wrappers.grasp_penalty import GraspPenalty, toggles
from serl_launcher.wrappers.intervention import InterventionWrapper

CLOSE, KEEP, OPEN = 1.0, 0.0, -1.0


def grip(command):
    return np.array([0.0, 0.0, 0.0, command], np.float32)


def test_toggle_rule():
    assert toggles(0.5, closed=False) and toggles(-0.5, closed=True)
    assert not toggles(1.0, closed=True) and not toggles(-1.0, closed=False)
    assert not toggles(0.49, closed=False) and not toggles(-0.49, closed=True)  # the dead band keeps


def test_penalty_on_each_command_that_changes_the_gripper():
    env = GraspPenalty(gym.make("PandaPickCube-v0"), value=-0.02, closed_above=0.1)
    layout = env.unwrapped.state_layout.slice("gripper_pose")
    obs, _ = env.reset(seed=0)
    assert obs["state"][layout][0] == pytest.approx(0.0, abs=1e-3)  # open at reset
    penalties, poses = [], []
    for command in [KEEP, OPEN, CLOSE] + [CLOSE] * 15 + [KEEP, OPEN] + [OPEN] * 15 + [CLOSE]:
        obs, reward, *_, info = env.step(grip(command))
        penalties.append(info["grasp_penalty"])
        poses.append(float(obs["state"][layout][0]))
    # keep and open on an open gripper cost nothing, the first close does, closing a closed one
    # does not; then keep, open (a toggle), open again (not), and close (a toggle)
    assert penalties == [0.0, 0.0, -0.02] + [0.0] * 15 + [0.0, -0.02] + [0.0] * 15 + [-0.02]
    assert poses[2] > 0.9 and poses[19] < 0.1  # the fingers did move (nothing between them)
    env.close()


class AlwaysClose:
    def reset(self):
        pass

    def get_action(self, observation):
        return DeviceAction(grip(CLOSE), True)

    def close(self):
        pass


def test_the_intervention_command_is_the_one_judged():
    base = gym.make("PandaPickCube-v0")
    env = GraspPenalty(InterventionWrapper(base, AlwaysClose()), value=-0.5, closed_above=0.1)
    env.reset(seed=0)
    *_, info = env.step(grip(KEEP))  # the policy keeps; the person closes
    assert info["intervened"] and info["grasp_penalty"] == -0.5
    env.close()


def test_bad_settings_and_envs_without_a_gripper_state():
    with pytest.raises(ValueError, match="<= 0"):
        GraspPenalty(gym.make("PandaPickCube-v0"), value=0.02, closed_above=0.1)
    with pytest.raises(ValueError, match="closed_above"):
        GraspPenalty(gym.make("PandaPickCube-v0"), value=-0.02, closed_above=1.0)
    with pytest.raises(ValueError, match="no 'gripper_pose'"):
        GraspPenalty(gym.make("Pendulum-v1"), value=-0.02, closed_above=0.1)
    with pytest.raises(gym.error.ResetNeeded):
        GraspPenalty(gym.make("PandaPickCube-v0"), value=-0.02, closed_above=0.1).step(grip(KEEP))
