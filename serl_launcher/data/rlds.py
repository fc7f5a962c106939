"""RLDS export (optional extra ``[rlds]``: tensorflow-datasets and TensorFlow, which nothing
else here needs): demos and a run's episodes as a TFDS dataset in the RLDS layout, the format
Open X-Embodiment and Octo read.

One TFDS example per episode: ``steps`` (a nested dataset) and ``episode_metadata``. An episode
of N transitions is N + 1 steps, RLDS's convention: step i < N holds observation o_i, the action
taken there, the reward that followed and ``discount`` (0 when that step ended the episode in a
terminal state, else 1); the last step holds the final observation with ``is_last`` and, when the
episode terminated (not truncated, not still open), ``is_terminal``; its action, reward and
discount are zeros. So nothing is lost: every observation, next observation included, comes back.
Step metadata: ``is_intervention`` (a person's action) and, with a learned gripper,
``grasp_penalty``. Episode metadata: ``episode_id``, ``complete`` (it ended; False for an episode
a run was still in when its buffer was saved), ``success`` (some step was rewarded), ``source``.

Camera frames are PNG-encoded (lossless), state and actions float32 tensors. Written with
``tfds.dataset_builders.store_as_tfds_dataset`` into ``<output>/<name>/1.0.0``; read back with
``tfds.builder_from_directory(that folder).as_dataset(split="train")``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serl_launcher.data.episodes import Episode
from serl_launcher.data.lerobot import is_image_spec
from serl_launcher.data.transitions import TransitionSpec

VERSION = "1.0.0"


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(f"RLDS export needs tensorflow-datasets and TensorFlow ({error}): "
                          f"pip install -e '.[rlds]' (not installed by scripts/setup.sh: TensorFlow is large)") from None
    return tfds


def export_rlds(output: str | os.PathLike, episodes: Sequence[Episode], name: str,
                source: str = "", description: str = "") -> Path:
    """Write `episodes` as the RLDS dataset `name` under `output` (module docstring); returns the
    dataset's folder (``<output>/<name>/1.0.0``), which must not exist yet."""
    tfds = _tfds()
    episodes = [e for e in episodes if len(e)]
    if not episodes:
        raise ValueError("no episodes to export")
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"the RLDS dataset name must be lower-case letters, digits and _, got {name!r}")
    folder = Path(output) / name / VERSION
    if folder.exists():
        raise FileExistsError(f"{folder} already exists: give another --output or dataset name")
    first = episodes[0].transitions[0]
    spec = TransitionSpec.infer(first, grasp_penalty=first.get("grasp_penalty") is not None)
    observation = {}
    for key, (shape, dtype) in spec.observation.items():
        observation[key] = (tfds.features.Image(shape=shape, encoding_format="png") if is_image_spec(shape, dtype)
                            else tfds.features.Tensor(shape=shape, dtype=np.dtype(dtype)))
    step_metadata = {"is_intervention": tfds.features.Scalar(np.bool_)}
    if spec.grasp_penalty:
        step_metadata["grasp_penalty"] = tfds.features.Scalar(np.float32)
    features = tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset({
            "observation": tfds.features.FeaturesDict(observation),
            "action": tfds.features.Tensor(shape=spec.action[0], dtype=np.float32),
            "reward": tfds.features.Scalar(np.float32),
            "discount": tfds.features.Scalar(np.float32),
            "is_first": tfds.features.Scalar(np.bool_),
            "is_last": tfds.features.Scalar(np.bool_),
            "is_terminal": tfds.features.Scalar(np.bool_),
            **step_metadata,
        }),
        "episode_metadata": tfds.features.FeaturesDict({
            "episode_id": tfds.features.Scalar(np.int64),
            "complete": tfds.features.Scalar(np.bool_),
            "success": tfds.features.Scalar(np.bool_),
            "source": tfds.features.Text(),
        }),
    })

    def examples():
        for index, episode in enumerate(episodes):
            yield index, _example(index, episode, spec, source)

    Path(output).mkdir(parents=True, exist_ok=True)
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=VERSION, features=features, split_datasets={"train": examples()},
        data_dir=str(output), description=description or "Robot episodes exported by serl-jax (RLDS layout).",
        disable_shuffling=True)
    return folder


def _example(index: int, episode: Episode, spec: TransitionSpec, source: str) -> dict[str, Any]:
    checked = [spec.check(t) for t in episode.transitions]
    last = checked[-1]
    terminal = bool(last["dones"]) and float(last["masks"]) == 0.0 and episode.complete
    steps = []
    for i, t in enumerate(checked):
        step = {"observation": t["observations"], "action": t["actions"], "reward": np.float32(t["rewards"]),
                "discount": np.float32(t["masks"]), "is_first": i == 0, "is_last": False, "is_terminal": False,
                "is_intervention": bool(t["intervened"])}
        if spec.grasp_penalty:
            step["grasp_penalty"] = np.float32(t["grasp_penalty"])
        steps.append(step)
    final = {"observation": last["next_observations"], "action": np.zeros(spec.action[0], np.float32),
             "reward": np.float32(0.0), "discount": np.float32(0.0), "is_first": False, "is_last": True,
             "is_terminal": terminal, "is_intervention": False}
    if spec.grasp_penalty:
        final["grasp_penalty"] = np.float32(0.0)
    steps.append(final)
    return {"steps": steps, "episode_metadata": {
        "episode_id": index, "complete": bool(episode.complete),
        "success": any(float(t["rewards"]) > 0 for t in checked), "source": source}}


def read_rlds(folder: str | os.PathLike) -> list[Episode]:
    """The episodes of an RLDS dataset this module wrote, through tensorflow-datasets' reader,
    as transitions again (the inverse of :func:`export_rlds`)."""
    tfds = _tfds()
    builder = tfds.builder_from_directory(str(folder))
    episodes = []
    for example in tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)):
        steps = list(example["steps"])
        transitions = []
        for i, step in enumerate(steps[:-1]):
            following = steps[i + 1]
            ended = i == len(steps) - 2
            t = {"observations": dict(step["observation"]), "next_observations": dict(following["observation"]),
                 "actions": step["action"], "rewards": np.float32(step["reward"]),
                 "masks": np.float32(step["discount"]),
                 "dones": bool(ended and (example["episode_metadata"]["complete"])),
                 "intervened": bool(step["is_intervention"])}
            if "grasp_penalty" in step:
                t["grasp_penalty"] = np.float32(step["grasp_penalty"])
            transitions.append(t)
        episodes.append(Episode(transitions, complete=bool(example["episode_metadata"]["complete"])))
    return episodes
