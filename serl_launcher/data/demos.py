"""Demo files: this project's archive format, and the pickles of older versions and of the
original HIL-SERL behind an explicit opt-in.

Ours (``.npz``, what ``record_demos.py`` writes): a numpy archive of plain arrays, read with
``allow_pickle=False``, so loading one cannot run code. It holds ``manifest`` (JSON bytes:
format, version, transition count, spec) and one array per transition field, stacked over the
transitions: ``observations/<key>``, ``next_observations/<key>``, ``actions``, ``rewards``,
``masks``, ``dones``, ``intervened`` and, when recorded with a learned gripper,
``grasp_penalty``. Written atomically (a temporary file, fsync, rename). The manifest also names
the state's fields (``state_layout``: ``[[name, size], ...]``, the env's
:class:`~serl_launcher.conventions.StateLayout`), so a file recorded with other fields (say a
task's ``env.state_fields`` changed since) is refused on load instead of read silently into a
layout of the same size; files written before layouts were recorded load with a warning.

Pickles (this project's demo files before the archive format, and HIL-SERL's): unpickling runs
whatever code the file contains, so they are refused unless :class:`DemoReading` allows them
(config ``demos.allow_pickle``); loading one then warns. Convert a trusted one once with
``scripts/convert_demos.py`` and keep the archive.

HIL-SERL's layout (its ``record_demos.py``): a flat list of dicts with
``observations``/``next_observations`` whose arrays carry the chunking wrapper's leading axis of 1
(state (1, S), images (1, H, W, 3)), ``actions``, ``rewards`` (int 0/1), ``masks``, ``dones`` and
``infos``. On load the leading axis is dropped, ``infos["grasp_penalty"]`` becomes a top-level
``grasp_penalty``, ``infos`` is dropped, and a missing ``intervened`` means True (demos are
human actions). Its gripper sign depends on where it was recorded: its real Franka env closes at
-1, its simulation at +1; this project closes at +1 everywhere
(:mod:`serl_launcher.conventions`). Such a file therefore needs
``DemoReading.hil_serl_gripper_close`` (config ``demos.hil_serl_gripper_close``: -1 or +1), and
-1 negates the last action component (the gripper) on load. Episode ends marked only by a change
of observation (no ``dones``) are found by the replay buffer, which starts a new chain whenever
frames do not continue.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from serl_launcher.conventions import StateLayout
from serl_launcher.data.replay_buffer import ReplayBuffer
from serl_launcher.data.transitions import OBS_KEYS, ArraySpec, TransitionSpec, observation_spec
from serl_launcher.utils.npz import check_declared_size

Transition = dict[str, Any]
FORMAT, VERSION = "serl-demos", 1
SCALAR_FIELDS = ("actions", "rewards", "masks", "dones", "intervened")
ZIP_MAGIC = b"PK\x03\x04"


class DemoFormatError(ValueError):
    """An unusable demo file; the message names the file, the transition and the problem."""


@dataclasses.dataclass(frozen=True)
class DemoReading:
    """How demo files may be read: ``allow_pickle`` opts in to pickles (they run code when
    loaded); ``hil_serl_gripper_close`` is the gripper command that closed the gripper where an
    original HIL-SERL file was recorded (-1: its real Franka env, +1: its simulation; 0: not
    said, and such a file is refused)."""

    allow_pickle: bool = False
    hil_serl_gripper_close: float = 0.0

    def __post_init__(self):
        if self.hil_serl_gripper_close not in (-1.0, 0.0, 1.0):
            raise ValueError(f"demos.hil_serl_gripper_close is -1 (HIL-SERL's real Franka files) or +1 "
                             f"(its simulation), not {self.hil_serl_gripper_close}")

    @classmethod
    def from_config(cls, config) -> DemoReading:
        return cls(bool(config.demos.allow_pickle), float(config.demos.hil_serl_gripper_close))


def check_demo_supply(config, count: int, role: str) -> None:
    """Training from no demonstration at all must be meant: raises DemoFormatError when `count`
    (demo files, or transitions) is 0 and ``demos.allow_none`` is not set; warns loudly when it
    is. `role` names who is starting ("learner", "in-process loop")."""
    if count:
        return
    if not config.demos.allow_none:
        raise DemoFormatError(
            f"no demonstrations for {config.exp_name!r}: record them with scripts/record_demos.py "
            f"--exp_name {config.exp_name} (written to experiments/{config.exp_name}/demos/), list files "
            f"in demos.paths, or set demos.allow_none=True to train without any")
    print(f"[{role}] WARNING: training WITHOUT demonstrations (demos.allow_none=True): the demo buffer "
          f"starts empty and only interventions fill it", flush=True)


def save_demos(path: str | os.PathLike, transitions: Sequence[Mapping[str, Any]],
               state_layout: StateLayout | None = None) -> Path:
    """Check `transitions` (consistent keys, shapes and dtypes, finite numbers) and write them as
    a demo archive (``.npz``, module docstring), atomically, naming the state's fields when
    `state_layout` is given (the env's ``state_layout``; it must match the state's size)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: demo files are numpy archives ending in .npz")
    if not transitions:
        raise DemoFormatError(f"{path}: no transitions to save")
    checked = _normalise_all(transitions, str(path), None)
    with_penalty = sum("grasp_penalty" in t for t in checked)
    if with_penalty not in (0, len(checked)):
        raise DemoFormatError(f"{path}: grasp_penalty on {with_penalty} of {len(checked)} transitions only")
    spec = TransitionSpec.infer(checked[0], grasp_penalty=bool(with_penalty))
    state = spec.observation.get("state")
    if state_layout is not None and (state is None or state[0] != (state_layout.size,)):
        raise DemoFormatError(f"{path}: the state layout {state_layout} holds {state_layout.size} values, the "
                              f"transitions' state is {None if state is None else state[0]}")
    fields = [*SCALAR_FIELDS, *(["grasp_penalty"] if spec.grasp_penalty else [])]
    arrays = {f"{name}/{key}": np.stack([t[name][key] for t in checked]) for name in OBS_KEYS for key in spec.observation}
    arrays |= {key: np.stack([np.asarray(t[key]) for t in checked]) for key in fields}
    manifest = {"format": FORMAT, "version": VERSION, "count": len(checked), "spec": spec.to_json()}
    if state_layout is not None:
        manifest["state_layout"] = state_layout.to_json()
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_demos(
    path: str | os.PathLike,
    observation_space: spaces.Dict | None = None,
    action_space: spaces.Box | None = None,
    require_grasp_penalty: bool = False,
    reading: DemoReading = DemoReading(),
    state_layout: StateLayout | None = None,
) -> list[Transition]:
    """Load a demo file (our archive; a pickle, ours or HIL-SERL's, only when `reading` allows)
    as a list of transitions in our format.

    Each transition is checked against the spaces when given (else against the first
    transition): keys, shapes, dtypes, finite numbers; and the file's state fields against
    `state_layout` when given (a file that names none: a warning). Raises DemoFormatError naming
    the file (and the transition index) and the problem, also for a file with no transitions;
    FileNotFoundError if the file does not exist.
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        raise DemoFormatError(f"{path}: empty file (0 bytes)")
    if magic != ZIP_MAGIC and path.suffix == ".npz":
        raise DemoFormatError(f"{path}: not a zip archive, so not a demo archive: the file is corrupt or "
                              f"something else named .npz")
    data, recorded = _read_archive(path) if magic == ZIP_MAGIC else (_read_pickle(path, reading), None)
    check_state_layout(path, recorded, state_layout)
    if isinstance(data, (list, tuple)) and len(data) == 0:
        raise DemoFormatError(f"{path}: no transitions")
    spec = None
    if observation_space is not None and action_space is not None:
        spec = TransitionSpec.from_spaces(observation_space, action_space, require_grasp_penalty)
    return _normalise_all(data, str(path), spec, observation_space, require_grasp_penalty, reading)


def load_demos_into(
    buffer: ReplayBuffer, paths: str | os.PathLike | Iterable[str | os.PathLike],
    reading: DemoReading = DemoReading(), state_layout: StateLayout | None = None,
) -> int:
    """Load demo files in the given order into `buffer`; returns the number of transitions.

    Each file is fully checked against the buffer's spaces (and `state_layout`, when given)
    before any of it is inserted.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    total = 0
    for p in paths:
        transitions = load_demos(
            p, buffer.observation_space, buffer.action_space, buffer.include_grasp_penalty, reading, state_layout
        )
        total += buffer.insert_many(transitions)
    return total


def demo_state_layout(path: str | os.PathLike) -> StateLayout | None:
    """The state fields a demo archive names (None: a file written before they were recorded).
    Reads the manifest only; DemoFormatError for a file that is not a readable archive."""
    try:
        check_declared_size(Path(path))
        with np.load(path, allow_pickle=False) as npz:
            return _manifest_layout(json.loads(bytes(npz["manifest"])))
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise DemoFormatError(f"{path}: not a readable demo archive ({type(error).__name__}: {error})") from None


def check_state_layout(path, recorded: StateLayout | None, expected: StateLayout | None) -> None:
    """DemoFormatError when a file's state fields are not the env's; a warning when the file names
    none (an archive from before layouts were recorded, or a pickle), since it cannot be checked."""
    if expected is None:
        return
    if recorded is None:
        warnings.warn(f"{path}: the file does not name its state's fields (written before demo files recorded "
                      f"them, or a pickle), so they are taken to be this env's {expected} unchecked; record it "
                      f"again, or convert it, to have them checked", stacklevel=3)
    elif recorded != expected:
        raise DemoFormatError(
            f"{path}: recorded with the state fields {recorded}; this env's state is {expected}. Reading it would "
            f"put each value in another field's place: record the demos again, or set env.state_fields="
            f"{recorded.names!r} to train on the recorded layout")


def _manifest_layout(manifest) -> StateLayout | None:
    if not isinstance(manifest, dict) or manifest.get("state_layout") is None:
        return None
    return StateLayout.from_json(manifest["state_layout"])


def _read_archive(path: Path) -> tuple[list[Transition], StateLayout | None]:
    try:
        check_declared_size(path)
        with np.load(path, allow_pickle=False) as npz:
            manifest = json.loads(bytes(npz["manifest"]))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise ValueError("no serl-demos manifest")
            if manifest.get("version") != VERSION:
                raise ValueError(f"format version {manifest.get('version')!r}; this version reads {VERSION}")
            count = manifest["count"]
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"bad transition count {count!r}")
            layout = _manifest_layout(manifest)
            arrays = {name: npz[name] for name in npz.files if name != "manifest"}
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise DemoFormatError(f"{path}: not a readable demo archive ({type(error).__name__}: {error})") from None
    for name, array in arrays.items():
        if array.ndim == 0 or array.shape[0] != count:
            raise DemoFormatError(f"{path}: field {name!r} holds {array.shape[:1]} rows, the manifest says {count}")
    observations = {name: {key.split("/", 1)[1]: arr for key, arr in arrays.items() if key.startswith(name + "/")}
                    for name in OBS_KEYS}
    flat = {key: arr for key, arr in arrays.items() if "/" not in key}
    return [{**{name: {k: v[i] for k, v in obs.items()} for name, obs in observations.items()},
             **{k: v[i] for k, v in flat.items()}} for i in range(count)], layout


def _read_pickle(path: Path, reading: DemoReading) -> Any:
    if not reading.allow_pickle:
        raise DemoFormatError(
            f"{path}: not a demo archive (.npz). If it is a pickle demo file (this project's before "
            f"archives, or the original HIL-SERL's), loading it runs any code it contains: convert a "
            f"file you trust once with scripts/convert_demos.py, or set demos.allow_pickle=True")
    warnings.warn(f"{path}: loading a pickle demo file; pickles run any code they contain, so load only "
                  f"files you recorded or trust (convert it with scripts/convert_demos.py)", stacklevel=3)
    with open(path, "rb") as f:
        try:
            return pickle.load(f)
        except Exception as error:  # unpickling raises many unrelated types
            raise DemoFormatError(
                f"{path}: cannot unpickle ({type(error).__name__}: {error}); "
                "the file is truncated, corrupt or not a pickle"
            ) from error


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _normalise_all(
    data: Any,
    source: str,
    spec: TransitionSpec | None,
    observation_space: spaces.Dict | None = None,
    require_grasp_penalty: bool = False,
    reading: DemoReading = DemoReading(),
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
            t = _from_hil_serl(item, obs_spec, reading)
            if spec is None:
                spec = TransitionSpec.infer(t, observation_space, require_grasp_penalty)
            out.append(spec.check(t))
        except ValueError as error:
            raise DemoFormatError(f"{source}: transition {i}: {error}") from None
    return out


def _from_hil_serl(item: Any, obs_spec: dict[str, ArraySpec] | None, reading: DemoReading) -> Any:
    """Undo the HIL-SERL layout and gripper differences (a no-op for transitions in our format;
    HIL-SERL's carry ``infos``)."""
    if not isinstance(item, Mapping):
        return item  # spec.check reports it
    t = dict(item)
    if "infos" in t:
        if reading.hil_serl_gripper_close == 0.0:
            raise ValueError(
                "an original HIL-SERL transition (it has 'infos'): say which gripper sign closed the "
                "gripper where it was recorded: demos.hil_serl_gripper_close=-1 (HIL-SERL's real Franka "
                "env) or +1 (its simulation); this project closes at +1")
        if reading.hil_serl_gripper_close < 0 and t.get("actions") is not None:
            actions = np.asarray(t["actions"])  # the gripper is the last component
            if actions.ndim == 1 and actions.size and actions.dtype.kind in "if":  # else spec.check reports it
                actions = actions.astype(np.float64)  # a copy
                actions[-1] = -actions[-1]
            t["actions"] = actions
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
