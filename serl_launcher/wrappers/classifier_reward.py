"""A learned reward: the reward classifier decides the reward and when the episode succeeds.

``ClassifierReward(env, classifier, threshold, confirm=1)`` replaces the env's reward with 1.0
once ``p(success | camera frames) >= threshold`` on `confirm` consecutive steps (else 0.0) and
ends the episode (terminated) there. ``confirm > 1`` is for a policy that would otherwise learn
to pass through a frame the classifier wrongly calls a success on its way up (measured in
benchmarks/README.md, "End to end, from pixels"): a true success holds, a false one rarely does. The wrapped env should not end episodes on success itself (the
sim's ``terminate_on_success=False``); its own terminations still end the episode.

``info`` gets ``classifier_probability``, ``classifier_streak`` (consecutive steps at or above
the threshold) and ``classifier_success``. An env that knows the truth
(the simulator) keeps its ``info["success"]``, so success rates measured in sim stay ground truth
while the learner only ever sees the classifier's reward; an env without ground truth (a real
arm) gets ``info["success"]`` from the classifier.
"""

from __future__ import annotations

import gymnasium as gym

from serl_launcher.classifier import RewardClassifier


class ClassifierReward(gym.Wrapper):
    def __init__(self, env: gym.Env, classifier: RewardClassifier, threshold: float, confirm: int = 1):
        super().__init__(env)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"classifier threshold must be in (0, 1), got {threshold}")
        if int(confirm) != confirm or confirm < 1:
            raise ValueError(f"classifier success_confirm must be an integer >= 1, got {confirm}")
        classifier.check_observation_space(env.observation_space)
        self.classifier, self.threshold, self.confirm = classifier, float(threshold), int(confirm)
        self._streak = 0

    def reset(self, **kwargs):
        self._streak = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        probability = self.classifier.success_probability(obs)
        self._streak = self._streak + 1 if probability >= self.threshold else 0
        success = self._streak >= self.confirm
        info["classifier_probability"] = probability
        info["classifier_streak"] = self._streak
        info["classifier_success"] = bool(success)
        info.setdefault("success", bool(success))
        terminated = bool(terminated or success)
        return obs, float(success), terminated, bool(truncated and not terminated), info
