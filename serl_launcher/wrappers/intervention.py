"""The intervention wrapper: a device may take over; the transition records what was executed.

Each step the wrapper asks its device (:class:`~serl_launcher.human.base.InterventionDevice`) for
a proposal. If the device is intervening, its action replaces the policy's, and ``info`` gets
``intervened=True`` and ``intervene_action`` (the action that was executed, which is the one
to store and learn from). Per episode it counts intervention steps and contiguous intervention
segments, reported in ``info["episode_interventions"]`` at the episode's end.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from serl_launcher.human.base import InterventionDevice


class InterventionWrapper(gym.Wrapper):
    def __init__(self, env: gym.Env, device: InterventionDevice):
        super().__init__(env)
        self.device = device
        self._obs: Any = None
        self._steps = self._intervention_steps = self._segments = 0
        self._was_intervening = False

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.device.reset()
        self._obs = obs
        self._steps = self._intervention_steps = self._segments = 0
        self._was_intervening = False
        return obs, info

    def step(self, action: np.ndarray):
        proposal = self.device.get_action(self._obs)
        intervening = bool(proposal.intervening)
        executed = np.asarray(proposal.action, dtype=np.float32) if intervening else action
        obs, reward, terminated, truncated, info = self.env.step(executed)
        self._obs = obs
        self._steps += 1
        if intervening:
            self._intervention_steps += 1
            self._segments += not self._was_intervening
            info["intervene_action"] = executed
        self._was_intervening = intervening
        info["intervened"] = intervening
        if terminated or truncated:
            info["episode_interventions"] = {
                "intervention_steps": self._intervention_steps,
                "interventions": self._segments,
                "intervention_rate": self._intervention_steps / max(1, self._steps),
            }
        return obs, reward, terminated, truncated, info

    def close(self):
        self.device.close()
        super().close()
