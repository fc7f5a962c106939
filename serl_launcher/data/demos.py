"""Demo files: pickled lists of transitions, in this project's format and in the original
HIL-SERL one.

Ours: a list of transition dicts exactly as in :mod:`serl_launcher.data.transitions`.

HIL-SERL (``record_demos.py``): a flat list of dicts with ``observations``/``next_observations``
whose arrays carry the chunking wrapper's leading axis of 1 (state (1, S), images (1, H, W, 3)),
``actions``, ``rewards`` (int 0/1), ``masks``, ``dones`` and ``infos``. On load the leading axis
is dropped, ``infos["grasp_penalty"]`` becomes a top-level ``grasp_penalty``, ``infos`` is dropped,
and a missing ``intervened`` means True (demos are human actions). Episode ends marked only by a
change of observation (no ``dones``) are found by the replay buffer, which starts a new chain
whenever frames do not continue.

Security: unpickling can run arbitrary code. These functions read only local files that the user
names; nothing here fetches demos over the network. Load only files you recorded or trust.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from serl_launcher.data.replay_buffer import ReplayBuffer
from serl_launcher.data.transitions import OBS_KEYS, ArraySpec, TransitionSpec, observation_spec

Transition = dict[str, Any]


class DemoFormatError(ValueError):
    """An unusable demo file; the message names the file, the transition and the problem."""


def save_demos(path: str | os.PathLike, transitions: Sequence[Mapping[str, Any]]) -> Path:
    """Check `transitions` (consistent keys, shapes and dtypes, finite numbers) and pickle them
    as a list of dicts of numpy arrays. Written atomically (temporary file, then rename)."""
    path = Path(path)
    checked = _normalise_all(transitions, str(path), None)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(checked, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_demos(
    path: str | os.PathLike,
    observation_space: spaces.Dict | None = None,
    action_space: spaces.Box | None = None,
    require_grasp_penalty: bool = False,
) -> list[Transition]:
    """Load a demo pickle (ours or HIL-SERL's) as a list of transitions in our format.

    Each transition is checked against the spaces when given (else against the first
    transition): keys, shapes, dtypes, finite numbers. Raises DemoFormatError naming the file,
    the transition index and the problem; FileNotFoundError if the file does not exist.
    Only for local files you trust (see the module docstring).
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            data = pickle.load(f)
        except Exception as error:  # unpickling raises many unrelated types
            raise DemoFormatError(
                f"{path}: cannot unpickle ({type(error).__name__}: {error}); "
                "the file is truncated, corrupt or not a pickle"
            ) from error
    spec = None
    if observation_space is not None and action_space is not None:
        spec = TransitionSpec.from_spaces(observation_space, action_space, require_grasp_penalty)
    return _normalise_all(data, str(path), spec, observation_space, require_grasp_penalty)


def load_demos_into(
    buffer: ReplayBuffer, paths: str | os.PathLike | Iterable[str | os.PathLike]
) -> int:
    """Load demo files in the given order into `buffer`; returns the number of transitions.

    Each file is fully checked against the buffer's spaces before any of it is inserted.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    total = 0
    for p in paths:
        transitions = load_demos(
            p, buffer.observation_space, buffer.action_space, buffer.include_grasp_penalty
        )
        total += buffer.insert_many(transitions)
    return total


def _normalise_all(
    data: Any,
    source: str,
    spec: TransitionSpec | None,
    observation_space: spaces.Dict | None = None,
    require_grasp_penalty: bool = False,
) -> list[Transition]:
    """Check every transition against `spec`, or against the first transition's (with
    observations from `observation_space` when given)."""
    if not isinstance(data, (list, tuple)):
        raise DemoFormatError(
            f"{source}: expected a list of transition dicts, got {type(data).__name__}"
        )
    obs_spec = (
        spec.observation
        if spec
        else observation_spec(observation_space)
        if observation_space
        else None
    )
    out = []
    for i, item in enumerate(data):
        try:
            t = _from_hil_serl(item, obs_spec)
            if spec is None:
                spec = TransitionSpec.infer(t, observation_space, require_grasp_penalty)
            out.append(spec.check(t))
        except ValueError as error:
            raise DemoFormatError(f"{source}: transition {i}: {error}") from None
    return out


def _from_hil_serl(item: Any, obs_spec: dict[str, ArraySpec] | None) -> Any:
    """Undo the HIL-SERL layout differences (a no-op for transitions in our format)."""
    if not isinstance(item, Mapping):
        return item  # spec.check reports it
    t = dict(item)
    for name in OBS_KEYS:
        obs = t.get(name)
        if isinstance(obs, Mapping):
            t[name] = {
                k: _drop_chunk_axis(v, obs_spec.get(k) if obs_spec else None)
                for k, v in obs.items()
            }
    infos = t.pop("infos", None)
    if t.get("grasp_penalty") is None and isinstance(infos, Mapping) and "grasp_penalty" in infos:
        t["grasp_penalty"] = infos["grasp_penalty"]
    t.setdefault("intervened", True)
    return t


def _drop_chunk_axis(value: Any, expected: ArraySpec | None) -> Any:
    arr = np.asarray(value)
    if expected is not None:
        return arr[0] if arr.shape == (1, *expected[0]) else arr
    # Without a space: the wrapper's axis makes vectors 2-D and images 4-D.
    return arr[0] if arr.ndim in (2, 4) and arr.shape[0] == 1 else arr
