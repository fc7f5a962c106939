"""Any gymnasium env on the project's contract: observations ``{"state": float32 vector, <camera>:
uint8 (H, W, 3)}``, actions in [-1, 1] with the gripper last (+1 closes), ``info["success"]`` and,
for a learned gripper, ``info["grasp_penalty"]``.

``SpaceAdapter(env, config)`` with ``config`` as :func:`adapter_config` makes it (an
experiment's ``make_env`` wraps its env: ``return SpaceAdapter(gym.make(...), config.adapter)``):

- ``state_keys``: the observation leaves concatenated, in order, into ``state``, each flattened
  to float32. A leaf is named by its path: ``agent_pos`` in a flat Dict, ``robot/joint_pos`` in
  a nested one; ``""`` is a Box observation itself.
- ``image_keys``: ``{camera name: leaf path}`` of uint8 (H, W, 3) leaves (the names the agent's
  ``image_keys`` and the cameras' crops use).
- ``action_low`` / ``action_high``: the env's action bounds as you expect them; checked against
  the env's action space, which is then driven linearly from [-1, 1]. ``gripper_index``: which
  of the env's action components is the gripper (-1: the last; None: no gripper), moved last;
  ``gripper_close``: +1 when the env's high end closes the gripper, -1 when its low end does;
  ``gripper_state_key``: the state leaf that says how closed the gripper is (0 open .. 1 closed),
  which the project's grasp penalty of a learned gripper reads (``state_layout`` "gripper_pose").
- ``success_key``: the info key that says the task succeeded (copied to ``info["success"]``);
  ``penalty_key``: the info key of the env's own gripper penalty, if any (copied to
  ``info["grasp_penalty"]``, and the project's own penalty wrapper then steps aside).

Every mismatch is a ValueError at construction (or at the first step, for info keys) that says
what the env has and what to set; nothing is dropped or rescaled silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from ml_collections import config_dict

from serl_launcher.conventions import StateLayout


def adapter_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.state_keys = ()
    c.image_keys = config_dict.ConfigDict()  # camera name -> leaf path
    c.action_low = config_dict.placeholder(tuple)
    c.action_high = config_dict.placeholder(tuple)
    c.gripper_index = config_dict.placeholder(int)  # None: the env's actions have no gripper
    c.gripper_close = 1.0
    c.gripper_state_key = ""  # the state leaf that is the gripper's state, 0 open .. 1 closed (for the grasp penalty)
    c.success_key = "success"
    c.penalty_key = ""
    return c


def leaves(space: spaces.Space, prefix: str = "") -> dict[str, spaces.Space]:
    """{path: leaf space} of a (nested) Dict space; a non-Dict space is the one leaf ``""``."""
    if not isinstance(space, spaces.Dict):
        return {prefix: space}
    out: dict[str, spaces.Space] = {}
    for key, sub in space.spaces.items():
        out.update(leaves(sub, f"{prefix}/{key}" if prefix else str(key)))
    return out


def leaf_value(obs: Any, path: str) -> Any:
    for part in path.split("/") if path else ():
        obs = obs[part]
    return obs


def is_image(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3


def describe(found: Mapping[str, spaces.Space]) -> str:
    return ", ".join(f"{path or '<the Box itself>'}: {s.shape} {s.dtype}" for path, s in found.items())


class SpaceAdapter(gym.Wrapper):
    def __init__(self, env: gym.Env, config: config_dict.ConfigDict):
        super().__init__(env)
        c = config
        found = leaves(env.observation_space)
        state_keys, image_keys = tuple(c.state_keys), dict(c.image_keys)
        if not state_keys:
            suggestion = [p for p, s in found.items() if not is_image(s)]
            raise ValueError(f"adapter.state_keys is empty; the env's observation leaves are {describe(found)}. "
                             f"Set adapter.state_keys={tuple(suggestion)!r} (the leaves to concatenate into "
                             f"'state') and adapter.image_keys={{camera: leaf}} for its images")
        unknown = [p for p in (*state_keys, *image_keys.values()) if p not in found]
        if unknown:
            raise ValueError(f"adapter: no observation leaf {unknown}; the env has {describe(found)}")
        for path in state_keys:
            s = found[path]
            if not isinstance(s, spaces.Box) or is_image(s):
                raise ValueError(f"adapter.state_keys: {path!r} is {s}, not a numeric vector; images go in "
                                 "adapter.image_keys")
        for camera, path in image_keys.items():
            if not is_image(found[path]):
                raise ValueError(f"adapter.image_keys.{camera}: {path!r} is {found[path]}, not a uint8 (H, W, 3) image")
        self._state_keys, self._image_keys = state_keys, image_keys
        sizes = [int(np.prod(found[p].shape)) for p in state_keys]
        low = np.concatenate([np.broadcast_to(found[p].low, found[p].shape).ravel() for p in state_keys])
        high = np.concatenate([np.broadcast_to(found[p].high, found[p].shape).ravel() for p in state_keys])
        if c.gripper_state_key and c.gripper_state_key not in state_keys:
            raise ValueError(f"adapter.gripper_state_key {c.gripper_state_key!r} is not one of adapter.state_keys "
                             f"{state_keys}")
        names = ["gripper_pose" if p == c.gripper_state_key else (p or "state") for p in state_keys]
        self.state_layout = StateLayout(tuple(zip(names, sizes, strict=True)))
        self.observation_space = spaces.Dict({
            "state": spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32),
            **{camera: found[path] for camera, path in image_keys.items()},
        })

        action = env.action_space
        if not isinstance(action, spaces.Box) or len(action.shape) != 1:
            raise ValueError(f"the env's action space is {action}: the agent drives a 1-D Box (continuous actions)")
        if c.action_low is None or c.action_high is None:
            raise ValueError(f"set adapter.action_low={tuple(action.low.tolist())!r} and adapter.action_high="
                             f"{tuple(action.high.tolist())!r} (the env's action bounds, as you expect them: "
                             "the agent's [-1, 1] is mapped onto them)")
        want_low, want_high = np.asarray(c.action_low, np.float64), np.asarray(c.action_high, np.float64)
        if want_low.shape != action.shape or want_high.shape != action.shape or not (
                np.allclose(want_low, action.low) and np.allclose(want_high, action.high)):
            raise ValueError(f"adapter.action_low/high {tuple(want_low.tolist())} / {tuple(want_high.tolist())} are "
                             f"not the env's action bounds {tuple(action.low.tolist())} / "
                             f"{tuple(action.high.tolist())}: check what each component means, then set them")
        if not np.all(np.isfinite(want_low) & np.isfinite(want_high) & (want_high > want_low)):
            raise ValueError("adapter: every action component needs finite bounds with high > low")
        if c.gripper_close not in (1.0, -1.0):
            raise ValueError(f"adapter.gripper_close is +1 (the high end closes) or -1 (the low end does), "
                             f"not {c.gripper_close}")
        n = action.shape[0]
        order = list(range(n))
        if c.gripper_index is not None:
            g = c.gripper_index % n if -n <= c.gripper_index < n else None
            if g is None:
                raise ValueError(f"adapter.gripper_index {c.gripper_index} is outside the env's {n} action components")
            order = [i for i in range(n) if i != g] + [g]
        self._order = np.asarray(order)  # our component k drives the env's component order[k]
        self._sign = np.ones(n)
        if c.gripper_index is not None:
            self._sign[-1] = c.gripper_close
        self._low, self._high = want_low, want_high
        self.action_space = spaces.Box(-1.0, 1.0, (n,), np.float32)
        self._success_key, self._penalty_key = str(c.success_key), str(c.penalty_key)
        self.provides_grasp_penalty = bool(self._penalty_key)
        self._checked_info = False

    def observation(self, obs: Any) -> dict[str, np.ndarray]:
        state = [np.asarray(leaf_value(obs, p), np.float32).ravel() for p in self._state_keys]
        out = {"state": np.concatenate(state)}
        for camera, path in self._image_keys.items():
            out[camera] = np.asarray(leaf_value(obs, path), np.uint8)
        return out

    def env_action(self, action: np.ndarray) -> np.ndarray:
        """The env's action for the agent's `action` in [-1, 1]."""
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0) * self._sign
        ours = np.empty_like(a)
        ours[self._order] = a
        out = self._low + (ours + 1.0) * 0.5 * (self._high - self._low)
        return out.astype(self.env.action_space.dtype)

    def agent_action(self, env_action: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`env_action` (an env's own intervention or a recorded action)."""
        e = np.asarray(env_action, np.float64)
        unit = 2.0 * (e - self._low) / (self._high - self._low) - 1.0
        return (unit[self._order] * self._sign).astype(np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self.observation(obs), info

    def step(self, action):
        a = np.asarray(action, np.float64)
        if a.shape != self.action_space.shape or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be a finite vector of shape {self.action_space.shape}, got {a.tolist()}")
        obs, reward, terminated, truncated, info = self.env.step(self.env_action(a))
        info = dict(info)
        self._check_info(info)
        info["success"] = bool(info[self._success_key])
        if self._penalty_key:
            info["grasp_penalty"] = float(info[self._penalty_key])
        if "intervene_action" in info:  # an env's own intervention, in its units: ours
            info["intervene_action"] = self.agent_action(info["intervene_action"])
        return self.observation(obs), reward, terminated, truncated, info

    def _check_info(self, info: dict) -> None:
        if self._checked_info:
            return
        for setting, key in (("success_key", self._success_key), ("penalty_key", self._penalty_key)):
            if key and key not in info:
                raise ValueError(f"the env's step info has no {key!r} (adapter.{setting}); its keys are "
                                 f"{sorted(info)}: set adapter.{setting} to the one that says it")
        self._checked_info = True
