"""A person's episode buttons, with synthetic device events: success / failure / re-record on the
transition stream (over a learned reward too), the pause before a reset, record_demos' handling,
and the experiment config reaching the actor's env."""

import struct
import threading
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest

import sim_envs  # noqa: F401
from experiments.mappings import load_experiment
from serl_launcher.human.gamepad import BUTTONS, Gamepad
from serl_launcher.human.keyboard import KeyboardDevice
from serl_launcher.human.spacemouse import SpaceMouse
from serl_launcher.utils.rollouts import record_demos
from serl_launcher.wrappers.episode_control import EpisodeControl
from sim_envs.experts import PickCubeExpert

KEYS = {"success": "enter", "failure": "esc", "rerecord": "backspace", "ready": "n"}
STILL = np.zeros(4, np.float32)


def keyboard():
    return KeyboardDevice(4, listen=False, episode_keys=KEYS)


class SaysSuccess(gym.Wrapper):
    """Stands in for a learned reward that calls every step a success (a classifier's mistake)."""

    def step(self, action):
        obs, _, _, truncated, info = self.env.step(action)
        return obs, 1.0, True, truncated, {**info, "success": True}


def test_success_and_failure_end_the_episode_with_the_persons_label():
    kb = keyboard()
    env = EpisodeControl(gym.make("PandaPickCube-v0"), [kb])
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(STILL)
    assert (reward, terminated, truncated) == (0.0, False, False) and "episode_label" not in info
    kb.on_press("enter")
    kb.on_release("enter")
    _, reward, terminated, truncated, info = env.step(STILL)
    assert (reward, terminated, truncated) == (1.0, True, False) and info["success"]
    assert info["episode_label"] == "success"
    assert info["episode_labels"] == {"labelled_success": 1.0, "labelled_failure": 0.0, "rerecord": 0.0}
    env.close()

    over = EpisodeControl(SaysSuccess(gym.make("PandaPickCube-v0")), [kb])
    over.reset(seed=0)
    kb.on_press("esc")
    _, reward, terminated, truncated, info = over.step(STILL)  # the person overrules the reward
    assert (reward, terminated, truncated) == (0.0, False, True) and not info["success"]
    assert info["episode_label"] == "failure" and not info["rerecord"]
    assert over.labels == {"rerecord": 0, "failure": 1, "success": 0}
    over.close()


def test_presses_before_a_reset_do_not_count_and_rerecord_wins():
    kb = keyboard()
    env = EpisodeControl(gym.make("PandaPickCube-v0"), [kb])
    env.reset(seed=0)
    kb.on_press("enter")  # pressed between episodes
    env.reset(seed=1)
    assert "episode_label" not in env.step(STILL)[-1]
    for key in ("enter", "esc", "backspace"):
        kb.on_press(key)
        kb.on_release(key)
    *_, truncated, info = env.step(STILL)
    assert truncated and info["episode_label"] == "rerecord" and info["rerecord"]
    env.close()


def test_the_next_reset_waits_until_the_scene_is_ready():
    kb = keyboard()
    env = EpisodeControl(gym.make("PandaPickCube-v0"), [kb], pause_before_reset=True, ready_hint="n")
    env.reset(seed=0)  # the first episode does not wait
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (env.reset(seed=1), done.set()), daemon=True)
    waiter.start()
    assert not done.wait(0.5), "the reset must wait for the person"
    kb.on_press("enter")  # not the ready key
    assert not done.wait(0.3)
    kb.on_press("n")
    assert done.wait(10), "the ready key ends the pause"
    waiter = threading.Thread(target=lambda: env.reset(seed=2), daemon=True)
    waiter.start()
    time.sleep(0.2)
    env.cancel_pause()  # the actor stopping ends a wait too
    waiter.join(10)
    assert not waiter.is_alive()
    env.close()


def test_gamepad_and_spacemouse_episode_buttons_never_take_over():
    pad = Gamepad(4, connect=False, episode_buttons={"success": "y", "failure": "b", "ready": "view"})
    y = 1 << 4  # XBOX_BLUETOOTH: Y is bit 4 of the button field
    pad.feed(struct.pack("<B4H2HBHB", 1, 32768, 32768, 32768, 32768, 0, 0, 0, y, 0))
    assert not pad.get_action().intervening
    pad.feed(struct.pack("<B4H2HBHB", 1, 32768, 32768, 32768, 32768, 0, 0, 0, 0, 0))
    assert pad.take_episode_events() == {"success"} and pad.take_episode_events() == set()
    with pytest.raises(ValueError, match="already drive the robot"):
        Gamepad(4, connect=False, episode_buttons={"success": "a"})
    with pytest.raises(ValueError, match="unknown button"):
        Gamepad(4, connect=False, episode_buttons={"success": "start"})
    with pytest.raises(ValueError, match="unknown episode event"):
        Gamepad(4, connect=False, episode_buttons={"win": "y"})
    assert "y" in BUTTONS
    mouse = SpaceMouse(4, connect=False, episode_buttons={"success": 2})
    mouse.feed(bytes([3, 0b100]))
    assert not mouse.get_action().intervening and mouse.take_episode_events() == {"success"}
    with pytest.raises(ValueError, match="already drive the robot"):
        SpaceMouse(4, connect=False, episode_buttons={"failure": 0})  # the close button
    with pytest.raises(ValueError, match="already drive the robot"):
        KeyboardDevice(4, listen=False, episode_keys={"success": "c"})  # closes the gripper


class PressesDuring:
    """The expert drives; on the episodes in `rerecord` the person presses re-record at step 5."""

    def __init__(self, expert, kb, rerecord):
        self.expert, self.kb, self.rerecord, self.episode, self.steps = expert, kb, rerecord, -1, 0

    def reset(self):
        self.expert.reset()
        self.episode, self.steps = self.episode + 1, 0

    def get_action(self, obs):
        self.steps += 1
        if self.episode in self.rerecord and self.steps == 5:
            self.kb.on_press("backspace")
            self.kb.on_release("backspace")
        return self.expert.get_action(obs)


def test_record_demos_discards_the_episodes_the_person_rerecords(capsys):
    kb = keyboard()
    base = gym.make("PandaPickCube-v0")
    env = EpisodeControl(base, [kb])
    device = PressesDuring(PickCubeExpert(base, noise=0.0, seed=0), kb, rerecord={0, 2})
    seen = []
    transitions = record_demos(env, device, 2, seed=0, max_episodes=2, progress=lambda ok, n: seen.append((ok, n)))
    assert seen == [(0, 1), (1, 2), (1, 3), (2, 4)]  # re-recorded episodes do not count against max_episodes
    assert sum(bool(t["dones"]) for t in transitions) == 2 and all(t["rewards"] <= 1 for t in transitions)
    assert capsys.readouterr().out.count("discarded: the person asked to re-record it") == 2
    env.close()


def test_the_config_gives_the_actors_keyboard_its_episode_keys(monkeypatch):
    from serl_launcher.actor import make_acting_env

    monkeypatch.delenv("PYNPUT_BACKEND", raising=False)
    exp = load_experiment("pick_cube_sim")
    config = exp.get_config()
    config.actor.intervention.device = "keyboard"
    config.actor.intervention.episode.keyboard.success = "y"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # headless: pynput's dummy backend
        env, device = make_acting_env(exp, config, seed=0)
    env.reset(seed=0)
    device.on_press("y")
    _, reward, terminated, _, info = env.step(STILL)
    assert terminated and reward == 1.0 and info["episode_labels"]["labelled_success"] == 1.0
    assert "grasp_penalty" in info  # the grasp penalty wraps the buttons, which wrap the intervention
    env.close()
    config.actor.intervention.episode.keyboard.success = "w"  # moves the arm
    with warnings.catch_warnings(), pytest.raises(ValueError, match="already drive the robot"):
        warnings.simplefilter("ignore")
        make_acting_env(exp, config, seed=0)
