"""The reward classifier: labelled camera frames -> a trained success detector -> the env's reward.

Three pieces, used by ``scripts/record_success_fail.py``, ``scripts/train_classifier.py`` and
:class:`serl_launcher.wrappers.classifier_reward.ClassifierReward`:

- **Frames files** (``.npz``, no pickle): one file per recording session with, per frame, the
  camera images (``image/<camera>``, uint8 (N, H, W, 3)), the proprio ``state``, the binary
  ``success`` label, a ``stage`` label for multi-class classifiers (0 .. K-1, the last stage is
  success) and the ``episode`` index the frame came from. :func:`save_frames` /
  :func:`load_frames` write and check them; a bad file gets an error naming it.
- **Training** (:func:`train_classifier`): the images-only :class:`~serl_launcher.networks.
  encoders.Classifier` (one shared backbone for all cameras, as in the agents), class-balanced
  minibatches, DrQ random-shift augmentation, Adam. The held-out split is by *episode*
  (neighbouring frames of one episode are near copies, so a split by frame would overstate
  accuracy). :func:`classification_metrics` gives accuracy, precision and recall of the success
  decision at a threshold.
- **Checkpoints** (:func:`save_classifier` / :func:`load_classifier`): orbax parameters plus a
  ``classifier.json`` with everything needed to rebuild the network and check the observations.
  :class:`RewardClassifier` is the loaded, jitted predictor: ``success_probability(obs)``.

Binary classifiers output one logit (p = sigmoid); K-class classifiers output K logits and the
success probability is the softmax probability of the last class.
"""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict

from serl_launcher.networks.encoders import Classifier, ObservationEncoder, random_shift
from serl_launcher.utils.npz import check_declared_size

FRAMES_FORMAT = 1
CLASSIFIER_FORMAT = 1
IMAGE_PREFIX = "image/"


class FramesFormatError(ValueError):
    """A classifier frames file that cannot be used (names the file and the problem)."""


def classifier_config() -> config_dict.ConfigDict:
    """Defaults of an experiment's ``classifier`` section (CPU-sized)."""
    return config_dict.ConfigDict({
        "image_keys": (),  # cameras the classifier sees (default: all cameras of the frames)
        "num_classes": 2,  # 2: success / not; K > 2: stages 0..K-1, the last is success
        "threshold": 0.75,  # success when p(success) >= threshold (reward 1, episode ends) ...
        "success_confirm": 1,  # ... on this many consecutive steps
        "backbone": "small",  # better held-out precision than "patch" here; trained once
        "freeze_backbone": False,  # True: the backbone is not trained (use with pretrained_path)
        "pretrained_path": "",  # .npz of backbone weights (scripts/convert_resnet10.py)
        "allow_random_frozen": False,  # freeze_backbone without pretrained_path: an error unless True
        "pooling": "spatial_embeddings",
        "bottleneck_dim": 64,
        "hidden_dim": 128,
        "steps": 1500,
        "batch_size": 64,
        "learning_rate": 3e-4,
        "shift_pad": 4,  # random-shift augmentation, pixels (0: none)
        "holdout_fraction": 0.2,  # share of episodes held out for the metrics
        "checkpoint": "classifier",  # folder, relative to the experiment folder
        "data_dir": "classifier_data",  # where record_success_fail.py writes frames files
    })


# ---------------------------------------------------------------------------------- frames files


def save_frames(path: str | Path, images: dict[str, np.ndarray], state: np.ndarray, success: np.ndarray,
                stage: np.ndarray, episode: np.ndarray, meta: dict[str, Any] | None = None) -> Path:
    """Writes one frames file atomically (``.npz``; see the module docstring)."""
    path = Path(path)
    n = len(success)
    arrays = {f"{IMAGE_PREFIX}{k}": np.asarray(v, np.uint8) for k, v in images.items()}
    arrays.update(state=np.asarray(state, np.float32), success=np.asarray(success, bool),
                  stage=np.asarray(stage, np.int32), episode=np.asarray(episode, np.int32))
    for name, value in arrays.items():
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} rows, success has {n}")
    header = {"format": FRAMES_FORMAT, **(meta or {})}
    arrays["meta"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)
    tmp.replace(path)
    return path


def _read_frames_file(path: Path) -> dict[str, Any]:
    try:
        check_declared_size(path)  # before loading: a forged header must not exhaust memory
        with np.load(path, allow_pickle=False) as data:
            content = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise FramesFormatError(f"{path}: not a readable frames file ({error})") from error
    if "meta" not in content:
        raise FramesFormatError(f"{path}: no 'meta' entry; not written by record_success_fail.py")
    try:
        meta = json.loads(bytes(content.pop("meta")).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FramesFormatError(f"{path}: unreadable 'meta' entry ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != FRAMES_FORMAT:
        meta = meta if isinstance(meta, dict) else {}
        raise FramesFormatError(f"{path}: frames format {meta.get('format')!r}, this code reads {FRAMES_FORMAT}")
    for key in ("state", "success", "stage", "episode"):
        if key not in content:
            raise FramesFormatError(f"{path}: missing {key!r}")
    images = {k[len(IMAGE_PREFIX):]: v for k, v in content.items() if k.startswith(IMAGE_PREFIX)}
    if not images:
        raise FramesFormatError(f"{path}: no camera images")
    n = len(content["success"])
    for name, value in [*images.items(), *((k, content[k]) for k in ("state", "stage", "episode"))]:
        if len(value) != n:
            raise FramesFormatError(f"{path}: {name} has {len(value)} rows, success has {n}")
    for cam, value in images.items():
        if value.dtype != np.uint8 or value.ndim != 4 or value.shape[-1] != 3:
            raise FramesFormatError(f"{path}: camera {cam!r} must be uint8 (N, H, W, 3), got {value.dtype} {value.shape}")
    return {"images": images, "state": content["state"], "success": content["success"].astype(bool),
            "stage": content["stage"], "episode": content["episode"], "meta": meta}


def load_frames(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Concatenates frames files (episode ids made unique per file); checks they agree."""
    if not paths:
        raise FileNotFoundError("no classifier frames files given (record some with record_success_fail.py)")
    parts = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"classifier frames file not found: {path}")
        parts.append((path, _read_frames_file(path)))
    first_path, first = parts[0]
    shapes = {k: v.shape[1:] for k, v in first["images"].items()}
    offset, episodes = 0, []
    for path, part in parts:
        part_shapes = {k: v.shape[1:] for k, v in part["images"].items()}
        if part_shapes != shapes or part["state"].shape[1:] != first["state"].shape[1:]:
            raise FramesFormatError(f"{path}: cameras/shapes {part_shapes} differ from {first_path}'s {shapes}")
        episodes.append(part["episode"] + offset)
        offset += int(part["episode"].max(initial=-1)) + 1
    cat = lambda key: np.concatenate([part[key] for _, part in parts])  # noqa: E731
    return {
        "images": {k: np.concatenate([part["images"][k] for _, part in parts]) for k in shapes},
        "state": cat("state"), "success": cat("success"), "stage": cat("stage"),
        "episode": np.concatenate(episodes), "meta": first["meta"],
    }


def split_by_episode(episode: np.ndarray, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): whole episodes go to one side or the other."""
    ids = np.unique(episode)
    if len(ids) < 2:
        raise ValueError(f"need frames from at least 2 episodes for a held-out split, got {len(ids)}")
    n_held = min(len(ids) - 1, max(1, round(holdout_fraction * len(ids))))
    held = np.random.default_rng(seed).choice(ids, n_held, replace=False)
    mask = np.isin(episode, held)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# ---------------------------------------------------------------------------------- the model


def build_model(image_keys: Sequence[str], c: config_dict.ConfigDict | dict) -> Classifier:
    encoder = ObservationEncoder(image_keys=tuple(image_keys), backbone=c["backbone"], pooling=c["pooling"],
                                 bottleneck_dim=c["bottleneck_dim"], use_state=False,
                                 freeze_backbone=bool(c.get("freeze_backbone", False)))
    return Classifier(encoder, num_classes=c["num_classes"], hidden_dim=c["hidden_dim"])


def success_probability(logits: jax.Array, num_classes: int) -> jax.Array:
    if num_classes == 2:
        return jax.nn.sigmoid(logits)
    return jax.nn.softmax(logits, axis=-1)[..., -1]


def labels_of(frames: dict[str, Any], num_classes: int) -> np.ndarray:
    if num_classes == 2:
        return frames["success"].astype(np.int32)
    stage = frames["stage"].astype(np.int32)
    if stage.min() < 0 or stage.max() >= num_classes:
        raise ValueError(f"stage labels span {stage.min()}..{stage.max()}, outside 0..{num_classes - 1}")
    return stage


def classification_metrics(probability: np.ndarray, success: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision and recall of `probability >= threshold` as the success decision."""
    predicted, truth = np.asarray(probability) >= threshold, np.asarray(success, bool)
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    tn = int(np.sum(~predicted & ~truth))
    return {
        "accuracy": (tp + tn) / max(1, len(truth)),
        "precision": tp / (tp + fp) if tp + fp else math.nan,
        "recall": tp / (tp + fn) if tp + fn else math.nan,
        "true_positives": tp, "false_positives": fp, "false_negatives": fn, "true_negatives": tn,
    }


def _batched(fn: Callable, params: Any, images: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """fn(params, chunk) over `images` in chunks of `batch_size`; the last chunk is padded so a
    jitted fn compiles once."""
    n = len(next(iter(images.values())))
    out = []
    for i in range(0, n, batch_size):
        chunk = {k: v[i:i + batch_size] for k, v in images.items()}
        m = len(next(iter(chunk.values())))
        if m < batch_size:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - m, axis=0)]) for k, v in chunk.items()}
        out.append(np.asarray(fn(params, chunk))[:m])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def predict(model: Classifier, params: Any, images: dict[str, np.ndarray], num_classes: int,
            batch_size: int = 256) -> np.ndarray:
    """p(success) for every frame of `images` (dict of (N, H, W, 3))."""
    fn = jax.jit(lambda p, obs: success_probability(model.apply({"params": p}, obs), num_classes))
    return _batched(fn, params, images, batch_size)


def train_classifier(
    frames: dict[str, Any],
    c: config_dict.ConfigDict,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[Classifier, Any, dict[str, Any]]:
    """Trains on the training episodes; returns (model, params, report with held-out metrics)."""
    image_keys = tuple(c.image_keys) or tuple(sorted(frames["images"]))
    missing = [k for k in image_keys if k not in frames["images"]]
    if missing:
        raise ValueError(f"cameras {missing} are not in the frames (have {sorted(frames['images'])})")
    labels = labels_of(frames, c.num_classes)
    train_idx, held_idx = split_by_episode(frames["episode"], c.holdout_fraction, seed)
    classes = np.unique(labels[train_idx])
    if len(classes) < 2:
        raise ValueError(f"the training episodes hold only class {classes.tolist()}; record successes and failures")
    by_class = [train_idx[labels[train_idx] == k] for k in classes]

    from serl_launcher.networks.encoders import check_frozen_backbone

    check_frozen_backbone(c, "classifier")
    model = build_model(image_keys, c)
    images = {k: frames["images"][k] for k in image_keys}
    rng = jax.random.PRNGKey(seed)
    rng, init_key = jax.random.split(rng)
    params = model.init(init_key, {k: v[:1] for k, v in images.items()})["params"]
    if c.pretrained_path:
        from serl_launcher.networks.encoders import FROZEN_BACKBONE, load_backbone_params

        name = FROZEN_BACKBONE if c.freeze_backbone else "backbone"
        encoder = dict(params["encoder"])
        encoder[name] = load_backbone_params(c.pretrained_path, encoder[name])
        params = {**params, "encoder": encoder}
    from serl_launcher.agents.sac import make_optimizer

    tx = make_optimizer(c.learning_rate, params)  # Adam; a frozen backbone gets neither updates nor state
    opt_state = tx.init(params)

    def loss_fn(p, obs, y, key):
        logits = model.apply({"params": p}, obs, train=True, rngs={"dropout": key})
        if c.num_classes == 2:
            loss = optax.sigmoid_binary_cross_entropy(logits, y.astype(jnp.float32)).mean()
            correct = (logits > 0) == (y == 1)
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            correct = logits.argmax(-1) == y
        return loss, correct.mean()

    @jax.jit
    def step(p, opt, obs, y, key):
        k_shift, k_drop = jax.random.split(key)
        if c.shift_pad:
            keys = jax.random.split(k_shift, len(image_keys))
            obs = {k: random_shift(kk, v, c.shift_pad) for kk, (k, v) in zip(keys, obs.items(), strict=True)}
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, obs, y, k_drop)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, loss, acc

    sampler = np.random.default_rng(seed)
    per_class = -(-c.batch_size // len(by_class))
    history = []
    for i in range(c.steps):
        idx = np.concatenate([sampler.choice(ids, per_class) for ids in by_class])  # class-balanced
        rng, key = jax.random.split(rng)
        params, opt_state, loss, acc = step(params, opt_state, {k: v[idx] for k, v in images.items()},
                                            labels[idx], key)
        if (i + 1) % 100 == 0 or i + 1 == c.steps:
            history.append({"step": i + 1, "loss": float(loss), "train_batch_accuracy": float(acc)})
            if not np.isfinite(float(loss)):
                raise FloatingPointError(f"classifier loss became {float(loss)} at step {i + 1}")
            if progress is not None:
                progress(i + 1, float(loss))

    held_images = {k: v[held_idx] for k, v in images.items()}
    probability = predict(model, params, held_images, c.num_classes)
    truth = frames["success"][held_idx]
    report = {
        "image_keys": list(image_keys), "num_classes": c.num_classes,
        "train_frames": len(train_idx), "heldout_frames": len(held_idx),
        "train_episodes": int(len(np.unique(frames["episode"][train_idx]))),
        "heldout_episodes": int(len(np.unique(frames["episode"][held_idx]))),
        "heldout_success_frames": int(truth.sum()),
        "threshold": float(c.threshold),
        "heldout": classification_metrics(probability, truth, c.threshold),
        "heldout_by_threshold": {f"{t:.2f}": classification_metrics(probability, truth, t)
                                 for t in (0.5, 0.75, 0.9, 0.95)},
        "history": history,
    }
    if c.num_classes > 2:
        stage_fn = jax.jit(lambda p, o: model.apply({"params": p}, o).argmax(-1))
        stage_pred = _batched(stage_fn, params, held_images, 256)
        report["heldout_stage_accuracy"] = float(np.mean(stage_pred == labels[held_idx])) if len(held_idx) else math.nan
    return model, params, report


# ---------------------------------------------------------------------------------- checkpoints


def save_classifier(directory: str | Path, params: Any, image_keys: Sequence[str],
                    image_shapes: dict[str, tuple[int, ...]], c: config_dict.ConfigDict,
                    report: dict[str, Any] | None = None) -> Path:
    """Writes parameters (orbax) and classifier.json to `directory` (replaced if it exists)."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(staging / "params", jax.device_get(params))
    model_keys = ("num_classes", "backbone", "pooling", "bottleneck_dim", "hidden_dim", "freeze_backbone")
    meta = {
        "format": CLASSIFIER_FORMAT,
        "image_keys": list(image_keys),
        "image_shapes": {k: list(v) for k, v in image_shapes.items()},
        "model": {k: c[k] for k in model_keys},
        "report": report or {},
    }
    (staging / "classifier.json").write_text(json.dumps(meta, indent=2, default=float) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return directory


class RewardClassifier:
    """A loaded classifier: ``success_probability(observation)`` for one observation dict."""

    def __init__(self, model: Classifier, params: Any, meta: dict[str, Any]):
        self.model, self.params, self.meta = model, params, meta
        self.image_keys = tuple(meta["image_keys"])
        self.image_shapes = {k: tuple(v) for k, v in meta["image_shapes"].items()}
        self.num_classes = int(meta["model"]["num_classes"])
        self._fn = jax.jit(lambda p, obs: success_probability(model.apply({"params": p}, obs), self.num_classes))

    def check_observation_space(self, space: Any) -> None:
        """Raises if the env's cameras do not match what the classifier was trained on."""
        for key in self.image_keys:
            if key not in space.spaces:
                raise ValueError(f"classifier camera {key!r} is not in the observation space {sorted(space.spaces)}")
            if tuple(space[key].shape) != self.image_shapes[key]:
                raise ValueError(f"camera {key!r}: the classifier was trained on {self.image_shapes[key]} images, "
                                 f"the env gives {tuple(space[key].shape)}")

    def success_probability(self, observation: dict[str, np.ndarray]) -> float:
        obs = {k: np.asarray(observation[k])[None] for k in self.image_keys}
        return float(self._fn(self.params, obs)[0])


def load_classifier(directory: str | Path) -> RewardClassifier:
    """A :class:`RewardClassifier` from a folder written by :func:`save_classifier`."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    meta_path = directory / "classifier.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no trained reward classifier in {directory} (no classifier.json); "
                                "train one with scripts/train_classifier.py")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"{meta_path}: classifier format {meta.get('format')!r}, this code reads {CLASSIFIER_FORMAT}")
    model = build_model(meta["image_keys"], meta["model"])
    dummy = {k: jnp.zeros((1, *v), jnp.uint8) for k, v in meta["image_shapes"].items() if k in meta["image_keys"]}
    template = model.init(jax.random.PRNGKey(0), dummy)["params"]
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(directory / "params", abstract)
    return RewardClassifier(model, params, meta)
