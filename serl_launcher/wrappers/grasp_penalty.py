"""The gripper toggle penalty of HIL-SERL's learned-gripper set-ups, for every env, sim or real.

``GraspPenalty(env, value, closed_above)`` sets ``info["grasp_penalty"]`` on every step: `value`
(negative, e.g. -0.02) when the executed gripper command would change the gripper's state, else
0.0. The state is the ``gripper_pose`` field of the observation the command was given on
(0 open .. 1 closed, :mod:`serl_launcher.conventions`): closed when above `closed_above`. A close
command (>= the dead band) on an open gripper, or an open command (<= minus the dead band) on a
closed one, is a toggle; a command inside the dead band keeps the state and is never penalised.

The executed command is the intervention's when a person (or the scripted expert) took over
(``info["intervene_action"]``), so the wrapper goes outside the intervention wrapper. The reward
is not changed: only the grasp critic sees the penalty (its target is reward + penalty).

HIL-SERL's rule (task wrapper of its USB pick-up) is the same with its real hand's opposite sign
and width (open when the width is above 0.9, i.e. ``closed_above=0.1`` here).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from serl_launcher import conventions


class GraspPenalty(gym.Wrapper):
    def __init__(self, env: gym.Env, value: float, closed_above: float):
        super().__init__(env)
        if not np.isfinite(value) or value > 0:
            raise ValueError(f"grasp_penalty.value must be a finite number <= 0 (a cost), not {value}")
        if not 0.0 <= closed_above < 1.0:
            raise ValueError(f"grasp_penalty.closed_above must be in [0, 1), not {closed_above}")
        layout = wrapper_attr(env, "state_layout")  # the env's own, or an adapter's
        if layout is None or "gripper_pose" not in layout.names:
            raise ValueError(
                f"{type(env.unwrapped).__name__} has no 'gripper_pose' in its state_layout: the grasp "
                f"penalty needs the gripper's state in observations['state'] (or set "
                f"agent.learned_gripper=False)")
        self._slice = layout.slice("gripper_pose")
        self.value, self.closed_above = float(value), float(closed_above)
        self._closed: bool | None = None

    def _read(self, obs: Any) -> bool:
        return bool(np.asarray(obs["state"], np.float32)[self._slice][0] > self.closed_above)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._closed = self._read(obs)
        return obs, info

    def step(self, action):
        if self._closed is None:
            raise gym.error.ResetNeeded("GraspPenalty: call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        executed = np.asarray(info.get("intervene_action", action), np.float32)
        info["grasp_penalty"] = self.value if toggles(float(executed[-1]), self._closed) else 0.0
        self._closed = self._read(obs)
        return obs, reward, terminated, truncated, info


def toggles(command: float, closed: bool) -> bool:
    """Whether gripper `command` would change a gripper that is `closed` (or open)."""
    if command >= conventions.GRIPPER_DEAD_BAND:
        return not closed
    if command <= -conventions.GRIPPER_DEAD_BAND:
        return closed
    return False


def with_grasp_penalty(env: gym.Env, config) -> gym.Env:
    """`env` wrapped with the experiment's ``grasp_penalty`` when its agent has a learned gripper
    (the buffers then store the penalty); `env` itself otherwise. Closes `env` on a bad config."""
    if not config.agent.learned_gripper or wrapper_attr(env, "provides_grasp_penalty"):
        return env  # no learned gripper, or the env's own penalty (SpaceAdapter's penalty_key)
    try:
        return GraspPenalty(env, config.grasp_penalty.value, config.grasp_penalty.closed_above)
    except BaseException:
        env.close()
        raise


def wrapper_attr(env: gym.Env, name: str) -> Any:
    """`name` from the outermost wrapper of `env` (or the env) that has it; None if none has."""
    try:
        return env.get_wrapper_attr(name)
    except AttributeError:
        return None
