"""gymnasium spaces <-> JSON specs, so checkpoints describe the observations they expect."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


def space_to_spec(space: spaces.Space) -> dict[str, Any]:
    if isinstance(space, spaces.Dict):
        return {"type": "dict", "spaces": {k: space_to_spec(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        low, high = np.asarray(space.low), np.asarray(space.high)
        bound = lambda a: a.flat[0].item() if np.all(a == a.flat[0]) else a.tolist()  # noqa: E731
        return {"type": "box", "shape": list(space.shape), "dtype": np.dtype(space.dtype).name,
                "low": bound(low), "high": bound(high)}
    raise TypeError(f"cannot describe space {space!r}; only Dict and Box are supported")


def spec_to_space(spec: dict[str, Any]) -> spaces.Space:
    kind = spec.get("type")
    if kind == "dict":
        return spaces.Dict({k: spec_to_space(s) for k, s in spec["spaces"].items()})
    if kind == "box":
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        bound = lambda b: np.broadcast_to(np.asarray(b, dtype), shape).copy()  # noqa: E731
        return spaces.Box(bound(spec["low"]), bound(spec["high"]), shape, dtype)
    raise ValueError(f"unknown space spec type {kind!r}")


def check_same_space(expected: spaces.Space, actual: spaces.Space, what: str) -> None:
    """Raises ValueError describing the first difference in keys, shapes or dtypes."""
    if isinstance(expected, spaces.Dict) != isinstance(actual, spaces.Dict):
        raise ValueError(f"{what}: expected {expected}, got {actual}")
    if isinstance(expected, spaces.Dict):
        if set(expected.spaces) != set(actual.spaces):
            raise ValueError(f"{what}: keys {sorted(expected.spaces)} expected, got {sorted(actual.spaces)}")
        for key in expected.spaces:
            check_same_space(expected[key], actual[key], f"{what}[{key!r}]")
        return
    if expected.shape != actual.shape or np.dtype(expected.dtype) != np.dtype(actual.dtype):
        raise ValueError(
            f"{what}: expected shape {expected.shape} {np.dtype(expected.dtype).name}, "
            f"got {actual.shape} {np.dtype(actual.dtype).name}"
        )
