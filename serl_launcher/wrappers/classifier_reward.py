"""A learned reward: the reward classifier decides the reward and when the episode succeeds.

``ClassifierReward(env, classifier, threshold)`` replaces the env's reward with
``1.0 if p(success | camera frames) >= threshold else 0.0`` and ends the episode (terminated)
when the classifier says success. The wrapped env should not end episodes on success itself (the
sim's ``terminate_on_success=False``); its own terminations still end the episode.

``info`` gets ``classifier_probability`` and ``classifier_success``. An env that knows the truth
(the simulator) keeps its ``info["success"]``, so success rates measured in sim stay ground truth
while the learner only ever sees the classifier's reward; an env without ground truth (a real
arm) gets ``info["success"]`` from the classifier.
"""

from __future__ import annotations

import gymnasium as gym

from serl_launcher.classifier import RewardClassifier


class ClassifierReward(gym.Wrapper):
    def __init__(self, env: gym.Env, classifier: RewardClassifier, threshold: float):
        super().__init__(env)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"classifier threshold must be in (0, 1), got {threshold}")
        classifier.check_observation_space(env.observation_space)
        self.classifier, self.threshold = classifier, float(threshold)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        probability = self.classifier.success_probability(obs)
        success = probability >= self.threshold
        info["classifier_probability"] = probability
        info["classifier_success"] = bool(success)
        info.setdefault("success", bool(success))
        terminated = bool(terminated or success)
        return obs, float(success), terminated, bool(truncated and not terminated), info
