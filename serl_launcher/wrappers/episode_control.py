"""A person's episode buttons: end an episode as a success or a failure, ask to re-record it,
and hold the next reset until the scene is ready.

``EpisodeControl(env, sources, pause_before_reset)`` polls every source's
``take_episode_events()`` (the intervention device, and a keyboard alongside one without
buttons; :mod:`serl_launcher.human.base`) after each step:

- ``success``: the episode ends here as a success (terminated, reward 1.0, ``info["success"]``
  True), whatever the env's or the classifier's reward said;
- ``failure``: it ends as a failure (truncated: the person stopped it, which says nothing about
  the value of the state; reward 0.0, ``info["success"]`` False), also over a classifier's success;
- ``rerecord``: it ends (truncated) and ``info["rerecord"]`` asks a recorder to discard it
  (record_demos does; in training its transitions stay, they are real experience).

One press per step counts; if several come together, re-record beats failure beats success. The
step's ``info["episode_label"]`` names the label, and every episode end carries
``info["episode_labels"]`` (0/1 flags ``labelled_success``, ``labelled_failure``, ``rerecord``)
for the actor's metrics. With ``pause_before_reset``, each reset after the first waits until a
``ready`` press (a prompt says which key), so a person can put the scene back; :meth:`cancel_pause`
(the actor stopping) ends the wait. Events pressed before a reset do not carry into the episode.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import gymnasium as gym

LABELS = ("rerecord", "failure", "success")  # priority when pressed together


class EpisodeControl(gym.Wrapper):
    def __init__(self, env: gym.Env, sources: Sequence[Any], pause_before_reset: bool = False,
                 ready_hint: str = "the ready button", owned: Sequence[Any] = (), poll_s: float = 0.05):
        super().__init__(env)
        self.sources, self.owned = list(sources), list(owned)
        self.pause_before_reset, self.ready_hint, self.poll_s = pause_before_reset, ready_hint, poll_s
        self._cancel = threading.Event()
        self._episodes = 0
        self.labels = dict.fromkeys(LABELS, 0)  # counts over this env's life

    def _events(self) -> set[str]:
        events: set[str] = set()
        for source in self.sources:
            events |= source.take_episode_events()
        return events

    def cancel_pause(self) -> None:
        self._cancel.set()

    def reset(self, **kwargs):
        if self.pause_before_reset and self._episodes:
            print(f"[episode] set the scene up for the next episode, then press {self.ready_hint}", flush=True)
            while "ready" not in self._events() and not self._cancel.wait(self.poll_s):
                pass
        self._episodes += 1
        obs, info = self.env.reset(**kwargs)
        self._events()  # presses from before this episode do not count in it
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        events = self._events()
        label = next((name for name in LABELS if name in events), None)
        if label is not None:
            self.labels[label] += 1
            info["episode_label"] = label
            if label == "success":
                reward, terminated, truncated, info["success"] = 1.0, True, False, True
            else:
                reward, terminated, truncated, info["success"] = 0.0, False, True, False
                info["rerecord"] = label == "rerecord"
            print(f"[episode] marked by the person: {label}", flush=True)
        if terminated or truncated:
            info["episode_labels"] = {"labelled_success": float(label == "success"),
                                      "labelled_failure": float(label == "failure"),
                                      "rerecord": float(label == "rerecord")}
        return obs, reward, terminated, truncated, info

    def close(self):
        self.cancel_pause()
        for source in self.owned:
            source.close()
        super().close()


PERSON_DEVICES = ("keyboard", "spacemouse", "gamepad", "leader_arm")


def with_episode_control(env: gym.Env, device: Any, config) -> gym.Env:
    """`env` with the episode buttons of ``actor.intervention.episode`` when a person's device
    (``actor.intervention.device``) drives it: the device's own buttons, and the keyboard's
    episode keys alongside a device that has none (``keyboard_alongside``). `env` itself when no
    person is there (scripted expert, none). Closes `env` on a bad config."""
    intervention = config.actor.intervention
    e = intervention.episode
    if device is None or intervention.device not in PERSON_DEVICES:
        return env
    try:
        sources, owned, hint = [], [], None
        if hasattr(device, "take_episode_events") and e.get(intervention.device):
            sources.append(device)
            hint = e[intervention.device].get("ready")
        elif e.keyboard_alongside and intervention.device != "keyboard":
            from serl_launcher.human.keyboard import KeyboardDevice

            keyboard = KeyboardDevice(int(env.action_space.shape[-1]), episode_keys=dict(e.keyboard))
            sources.append(keyboard)
            owned.append(keyboard)
            hint = f"{e.keyboard.get('ready')} on the keyboard"
        if not sources:
            return env
        return EpisodeControl(env, sources, e.pause_before_reset, ready_hint=str(hint or "the ready button"),
                              owned=owned)
    except BaseException:
        env.close()
        raise
