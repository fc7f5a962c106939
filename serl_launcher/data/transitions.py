"""The transition contract (DESIGN.md "Data contracts") as a checkable spec.

A transition is a dict::

    observations, next_observations: {key: array}  e.g. state float32 (S,), front uint8 (H, W, 3)
    actions: float32 (A,)      rewards: float32 ()      masks: float32 () = 1 - terminated
    dones: bool () (episode ended for any reason)      intervened: bool ()
    grasp_penalty: float32 () (optional)

:class:`TransitionSpec` holds the shapes and dtypes one buffer (or one demo file) uses and turns
an incoming transition into arrays of exactly those dtypes, raising ``ValueError`` that names the
offending key otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

REQUIRED_KEYS = ("observations", "next_observations", "actions", "rewards", "masks", "dones")
OBS_KEYS = ("observations", "next_observations")
ArraySpec = tuple[tuple[int, ...], np.dtype]


def _array(name: str, value: Any, shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """`value` as an array of `shape` and `dtype`; 0-d results come back as numpy scalars."""
    arr = np.asarray(value)
    if arr.shape != shape:
        raise ValueError(f"{name}: shape {arr.shape}, expected {shape}")
    kind = dtype.kind
    if kind == "f":
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name}: dtype {arr.dtype} is not numeric (expected {dtype})")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"{name}: contains NaN or inf")
    elif kind == "b":
        # Flags may arrive as 0/1 integers (e.g. from older pickles), never as other numbers.
        if arr.dtype.kind not in "biu" or (
            arr.dtype.kind != "b" and not ((arr == 0) | (arr == 1)).all()
        ):
            raise ValueError(f"{name}: expected a bool, got {arr.dtype} value {arr!r}")
    elif arr.dtype != dtype:
        # Integer data (uint8 images) must match exactly: a float image cast to uint8 is garbage.
        raise ValueError(f"{name}: dtype {arr.dtype}, expected {dtype}")
    narrowing = kind == "f" and arr.dtype.kind == "f" and arr.dtype.itemsize > dtype.itemsize
    with np.errstate(over="ignore"):
        arr = arr.astype(dtype, copy=False)
    if narrowing and not np.isfinite(arr).all():  # e.g. float64 1e39 is finite, float32 inf
        raise ValueError(f"{name}: contains values beyond {dtype}'s range")
    return arr[()] if arr.ndim == 0 else arr


def observation_spec(observation_space: spaces.Dict) -> dict[str, ArraySpec]:
    """{key: (shape, dtype)} of a Dict of Boxes."""
    if not isinstance(observation_space, spaces.Dict):
        raise TypeError(
            f"observation_space must be a spaces.Dict, got {type(observation_space).__name__}"
        )
    out = {}
    for key, space in observation_space.spaces.items():
        if not isinstance(space, spaces.Box):
            raise TypeError(f"observation_space[{key!r}] must be a Box, got {type(space).__name__}")
        out[key] = (tuple(space.shape), np.dtype(space.dtype))
    return out


@dataclasses.dataclass(frozen=True)
class TransitionSpec:
    """Shapes and dtypes of one transition stream.

    observation: {key: (shape, dtype)} for every observation key (the same for next_observations);
    action: ((A,), float32); grasp_penalty: whether a ``grasp_penalty`` scalar is required.
    """

    observation: dict[str, ArraySpec]
    action: ArraySpec
    grasp_penalty: bool = False

    @classmethod
    def from_spaces(
        cls, observation_space: spaces.Dict, action_space: spaces.Box, grasp_penalty: bool = False
    ) -> TransitionSpec:
        if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
            raise TypeError(f"action_space must be a 1-D Box, got {action_space}")
        action = ((action_space.shape[0],), np.dtype(np.float32))
        return cls(observation_spec(observation_space), action, grasp_penalty)

    @classmethod
    def infer(
        cls,
        transition: Any,
        observation_space: spaces.Dict | None = None,
        grasp_penalty: bool = False,
    ) -> TransitionSpec:
        """The spec of an example transition (float observations become float32); observations
        come from `observation_space` instead when it is given."""
        if not isinstance(transition, Mapping):
            raise ValueError(f"expected a transition dict, got {type(transition).__name__}")
        if observation_space is not None:
            observation = observation_spec(observation_space)
        else:
            obs = transition.get("observations")
            if not isinstance(obs, Mapping):
                raise ValueError(
                    f"observations: expected a dict of arrays, got {type(obs).__name__}"
                )
            observation = {}
            for key, value in obs.items():
                arr = np.asarray(value)
                if arr.dtype.kind not in "biuf":
                    raise ValueError(f"observations[{key!r}]: dtype {arr.dtype} is not numeric")
                observation[key] = (
                    arr.shape,
                    np.dtype(np.float32 if arr.dtype.kind == "f" else arr.dtype),
                )
        actions = np.asarray(transition.get("actions"))
        if actions.ndim != 1:
            raise ValueError(f"actions: expected a 1-D vector, got shape {actions.shape}")
        return cls(observation, (actions.shape, np.dtype(np.float32)), grasp_penalty)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able description (stored in buffer manifests and compared on load)."""
        return {
            "observation": {
                k: {"shape": list(s), "dtype": d.name} for k, (s, d) in self.observation.items()
            },
            "action": {"shape": list(self.action[0]), "dtype": self.action[1].name},
            "grasp_penalty": self.grasp_penalty,
        }

    def check(self, transition: Any) -> dict[str, Any]:
        """Validate `transition` and return it with every array in this spec's dtype.

        Missing ``intervened`` means False. ``grasp_penalty`` is kept when present, required when
        ``self.grasp_penalty``. Unknown top-level keys (e.g. ``infos``) are dropped.
        """
        if not isinstance(transition, Mapping):
            raise ValueError(f"expected a transition dict, got {type(transition).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in transition]
        if missing:
            raise ValueError(f"missing key(s) {missing}")
        out: dict[str, Any] = {name: self._observation(name, transition[name]) for name in OBS_KEYS}
        out["actions"] = _array("actions", transition["actions"], *self.action)
        for key in ("rewards", "masks"):
            out[key] = _array(key, transition[key], (), np.dtype(np.float32))
        for key in ("dones", "intervened"):
            out[key] = _array(key, transition.get(key, False), (), np.dtype(bool))
        if transition.get("grasp_penalty") is not None:
            out["grasp_penalty"] = _array(
                "grasp_penalty", transition["grasp_penalty"], (), np.dtype(np.float32)
            )
        elif self.grasp_penalty:
            raise ValueError("missing key 'grasp_penalty' (required: include_grasp_penalty=True)")
        return out

    def _observation(self, name: str, obs: Any) -> dict[str, np.ndarray]:
        if not isinstance(obs, Mapping):
            raise ValueError(f"{name}: expected a dict of arrays, got {type(obs).__name__}")
        if obs.keys() != self.observation.keys():
            missing = sorted(set(self.observation) - set(obs))
            extra = sorted(set(obs) - set(self.observation))
            raise ValueError(f"{name}: missing key(s) {missing}, unexpected key(s) {extra}")
        return {k: _array(f"{name}[{k!r}]", obs[k], *spec) for k, spec in self.observation.items()}
