"""A scripted expert as a simulated person: it watches the policy and takes over when it stalls.

A person correcting a robot does not drive every step: they step in when the robot is stuck,
hold on until it is back on track, and step in less as it gets better. :class:`StallTakeover`
wraps any always-on expert device with that behaviour:

- the policy "stalls" when ``patience`` steps pass (since the episode began or the last takeover
  ended) without the episode finishing;
- a takeover then lasts ``hold_steps`` steps (or to the episode's end);
- the person is attentive in an episode with probability
  ``p = clip(1 - recent_success_rate, p_min, 1)`` over the last ``window`` episodes, so
  interventions fade as the policy succeeds on its own.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from serl_launcher.human.base import DeviceAction, InterventionDevice


class StallTakeover:
    """InterventionDevice that lets the policy act and takes over from `expert` when it stalls.

    Call :meth:`episode_end` with the episode's success (the actor does) so the schedule can fade.
    """

    def __init__(
        self,
        expert: InterventionDevice,
        patience: int = 15,
        hold_steps: int = 30,
        window: int = 20,
        min_probability: float = 0.0,
        seed: int | None = None,
    ):
        if patience < 1 or hold_steps < 1:
            raise ValueError("patience and hold_steps must be positive")
        self.expert = expert
        self.patience, self.hold_steps, self.min_probability = patience, hold_steps, min_probability
        self._recent = deque(maxlen=window)
        self._rng = np.random.default_rng(seed)
        self._since_takeover = 0
        self._holding = 0
        self._allowed = True

    @property
    def takeover_probability(self) -> float:
        success = float(np.mean(self._recent)) if self._recent else 0.0
        return float(np.clip(1.0 - success, self.min_probability, 1.0))

    def reset(self) -> None:
        self.expert.reset()
        self._since_takeover = 0
        self._holding = 0
        self._allowed = bool(self._rng.uniform() < self.takeover_probability)

    def episode_end(self, success: bool) -> None:
        self._recent.append(bool(success))

    def get_action(self, observation) -> DeviceAction:
        proposal = self.expert.get_action(observation)  # keeps the expert's internal state current
        if self._holding > 0:
            self._holding -= 1
            return DeviceAction(proposal.action, True)
        self._since_takeover += 1
        if self._allowed and self._since_takeover > self.patience:
            self._holding = self.hold_steps - 1
            self._since_takeover = 0
            return DeviceAction(proposal.action, True)
        return DeviceAction(proposal.action, False)

    def close(self) -> None:
        self.expert.close()
