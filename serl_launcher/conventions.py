"""Conventions shared by every environment, simulated or real. One place, one meaning.

Poses
    Position in metres in the robot base frame, orientation as a unit quaternion ordered
    **(x, y, z, w)**. The quaternion's sign is chosen so that its dot product with the reset
    orientation is non-negative, so observations do not jump between q and -q near the reset pose.

Actions (end-effector deltas, every component in [-1, 1])
    ``[dx, dy, dz, gripper]`` or ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``.
    Translations are in the base frame and scaled by the env's ``pos_scale`` (metres per step at
    |a| = 1). Rotations are a base-frame rotation vector scaled by ``rot_scale`` (radians per step)
    and pre-multiply the current orientation. The commanded pose is clipped to the env's workspace.

Gripper
    Action: ``+1`` closes, ``-1`` opens; ``|a| < 0.5`` keeps the current command (a binary gripper
    with a dead band, as on the real hand). Observation ``gripper_pose``: 0 fully open, 1 fully
    closed (fraction of the stroke).

State vector
    ``observations["state"]`` is a float32 vector built from named fields in the order a
    :class:`StateLayout` gives. Code that needs one field asks the layout for its slice instead of
    using magic indices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

GRIPPER_CLOSE = 1.0
GRIPPER_OPEN = -1.0
GRIPPER_DEAD_BAND = 0.5

# The action layouts of the arm envs (sim and real), by ``action_mode``.
ACTION_LAYOUTS = {"xyz": "[dx, dy, dz, gripper]", "xyz_rpy": "[dx, dy, dz, droll, dpitch, dyaw, gripper]"}


def check_action(action, shape: tuple[int, ...], action_mode: str) -> np.ndarray:
    """An env's action as float64 clipped to [-1, 1]; ValueError for a wrong shape (naming the
    layout of `action_mode`) or a NaN / Inf."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"action must have shape {shape} {ACTION_LAYOUTS[action_mode]}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action contains NaN or Inf: {a.tolist()}")
    return np.clip(a, -1.0, 1.0)

ADAPTER_HINT = ("wrap the env in serl_launcher.wrappers.adapter.SpaceAdapter (config "
                "serl_launcher.wrappers.adapter.adapter_config()) to map it onto the contract")


def check_spaces(observation_space, action_space) -> None:
    """ValueError, saying what to set, unless the spaces are the contract every agent takes: a
    flat Dict of ``state`` (a float vector) and uint8 (H, W, 3) cameras, and a 1-D Box in [-1, 1]."""
    from gymnasium import spaces

    if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
        raise ValueError(f"the action space is {action_space}; the agent acts in a 1-D Box in [-1, 1]: {ADAPTER_HINT}")
    if not (np.all(action_space.low == -1.0) and np.all(action_space.high == 1.0)):
        raise ValueError(f"the action space is Box({action_space.low.tolist()}, {action_space.high.tolist()}); the agent "
                         f"acts in [-1, 1] and would command the wrong values: {ADAPTER_HINT}, with "
                         "adapter.action_low / action_high the env's bounds")
    if not isinstance(observation_space, spaces.Dict):
        raise ValueError(f"the observation space is {observation_space}; the agent takes a Dict of 'state' and "
                         f"cameras: {ADAPTER_HINT}, with adapter.state_keys=('',) for a Box")
    nested = [k for k, s in observation_space.spaces.items() if not isinstance(s, spaces.Box)]
    if nested or "state" not in observation_space.spaces:
        raise ValueError(f"the observations {list(observation_space.spaces)} are not 'state' plus cameras"
                         f"{' (nested: ' + str(nested) + ')' if nested else ''}: {ADAPTER_HINT}, choosing the "
                         "state leaves (adapter.state_keys) and cameras (adapter.image_keys)")


# Proprioceptive fields with their sizes. Envs pick a subset, in this order.
PROPRIO_FIELD_SIZES: dict[str, int] = {
    "tcp_pose": 7,  # position (3) + quaternion xyzw (4)
    "tcp_vel": 6,  # linear (3) + angular (3), base frame
    "gripper_pose": 1,  # 0 open .. 1 closed
    "tcp_force": 3,
    "tcp_torque": 3,
}


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """Ordered named fields of a flat state vector."""

    fields: tuple[tuple[str, int], ...]

    def __post_init__(self):
        names = [name for name, _ in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate state field names in {names}")
        for name, size in self.fields:
            if size <= 0:
                raise ValueError(f"state field {name!r} has non-positive size {size}")

    @classmethod
    def from_names(cls, names: tuple[str, ...], extra: Mapping[str, int] | None = None) -> StateLayout:
        sizes = {**PROPRIO_FIELD_SIZES, **(extra or {})}
        unknown = [n for n in names if n not in sizes]
        if unknown:
            raise ValueError(f"unknown state fields {unknown}; known: {sorted(sizes)}")
        return cls(tuple((n, sizes[n]) for n in names))

    @classmethod
    def choose(cls, names, known, *, required=(), extra: Mapping[str, int] | None = None,
               owner: str = "the env") -> StateLayout:
        """The layout of the fields `names` an env's config chose, in `known`'s order whatever
        order they were given in: ValueError unless each is one of `known` (the fields `owner`
        offers), given once, and every `required` one is among them."""
        if isinstance(names, str):
            raise ValueError(f"state_fields {names!r} is one string; give a tuple of field names, e.g. "
                             f"state_fields=('tcp_pose', 'tcp_vel', 'gripper_pose') (with --set, quoted)")
        names = tuple(names)
        unknown = [n for n in names if n not in known]
        repeated = sorted({n for n in names if names.count(n) > 1})
        missing = [n for n in required if n not in names]
        if not names or unknown or repeated or missing:
            problems = [f"unknown {unknown}" if unknown else "", f"given twice {repeated}" if repeated else "",
                        f"missing {missing}" if missing else "", "" if names else "empty"]
            raise ValueError(f"state_fields {names}: {', '.join(p for p in problems if p)}; {owner} offers "
                             f"{list(known)}" + (f" and needs {list(required)}" if required else ""))
        return cls.from_names(tuple(n for n in known if n in names), extra)

    def to_json(self) -> list[list]:
        """``[[name, size], ...]``: what demo files record of the state they hold."""
        return [[name, size] for name, size in self.fields]

    @classmethod
    def from_json(cls, value) -> StateLayout:
        """The inverse of :meth:`to_json`; ValueError for anything else."""
        if not isinstance(value, list) or not value or not all(
                isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) and type(f[1]) is int for f in value):
            raise ValueError(f"a state layout is a non-empty list of [name, size] pairs, not {value!r:.200}")
        return cls(tuple((name, size) for name, size in value))

    def __str__(self) -> str:
        return "[" + ", ".join(f"{name} ({size})" for name, size in self.fields) + "]"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fields)

    @property
    def size(self) -> int:
        return sum(size for _, size in self.fields)

    def slice(self, name: str) -> slice:
        start = 0
        for field, size in self.fields:
            if field == name:
                return slice(start, start + size)
            start += size
        raise KeyError(f"no state field {name!r}; fields are {self.names}")

    def pack(self, values: Mapping[str, np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        """Named values -> (size,) float32 vector."""
        if out is None:
            out = np.empty(self.size, dtype=np.float32)
        start = 0
        for name, size in self.fields:
            out[start : start + size] = values[name]
            start += size
        return out

    def unpack(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """(..., size) vector -> dict of (..., field size) views."""
        if state.shape[-1] != self.size:
            raise ValueError(f"state has {state.shape[-1]} entries, layout {self.names} needs {self.size}")
        out, start = {}, 0
        for name, size in self.fields:
            out[name] = state[..., start : start + size]
            start += size
        return out


def wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    return np.concatenate([q[..., 3:], q[..., :3]], axis=-1)


def align_quat_sign(q: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Returns q or -q, whichever has a non-negative dot product with `reference` (same order)."""
    return -q if float(np.dot(q, reference)) < 0.0 else q
