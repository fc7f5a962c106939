"""One metrics writer: JSON lines always; wandb and TensorBoard as optional extra sinks.

Keys are namespaced (``train/``, ``eval/``, ``actor/``, ``replay/``, ``timer/``). Every record is
checked for NaN/Inf first: a non-finite value stops the run with the step and the metric's name
(:class:`NonFiniteMetricError`), after the record has been written so the evidence is on disk.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


class NonFiniteMetricError(FloatingPointError):
    """A metric was NaN or Inf."""


def to_scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flat dict of Python floats/ints/bools from (possibly jax/numpy) scalar values."""
    out = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(to_scalars(value, prefix=f"{name}/"))
            continue
        array = np.asarray(value)
        if array.size != 1:
            raise ValueError(f"metric {name!r} is not a scalar (shape {array.shape})")
        out[name] = array.item()
    return out


SECRET_NAMES = ("key", "secret", "password", "token")
REDACTED = "<redacted>"


def redact_secrets(tree: Any) -> Any:
    """A copy of a config dict whose secret-looking entries (named key, secret, password or
    token, or ending in _key / _secret / _token) are replaced by "<redacted>" when set, so that
    a shared key never reaches config.json or metrics files."""
    if isinstance(tree, Mapping):
        out = {}
        for name, value in tree.items():
            secret = isinstance(name, str) and (
                name.lower() in SECRET_NAMES
                or name.lower().endswith(tuple(f"_{s}" for s in SECRET_NAMES)))
            if secret and value not in (None, "") and not isinstance(value, Mapping):
                out[name] = REDACTED
            else:
                out[name] = redact_secrets(value)
        return out
    return tree


def check_finite(step: int, metrics: Mapping[str, float]) -> None:
    """Raises NonFiniteMetricError naming the step and the first non-finite metric."""
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise NonFiniteMetricError(f"step {step}: metric {key!r} is {value}; stopping")


class MetricsWriter:
    """Appends ``{"step": ..., "time": ..., **metrics}`` lines to ``path`` (metrics.jsonl);
    ``time`` is wall-clock Unix seconds (what run reports plot against).

    Args:
        path: the JSON-lines file (parent folders are created).
        wandb_project: log to Weights & Biases too (needs `wandb` installed and configured).
        tensorboard_dir: log to TensorBoard too (needs `tensorboardX` or `torch.utils.tensorboard`).
        config: written once as the first record (``{"config": ...}``) when the file is new.
    """

    def __init__(self, path: str | Path, wandb_project: str | None = None,
                 tensorboard_dir: str | Path | None = None, config: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self._file = self.path.open("a", buffering=1)  # line-buffered: nothing lost on a crash
        config = redact_secrets(config) if config is not None else None
        if new and config is not None:
            self._file.write(json.dumps({"config": config}, default=str) + "\n")
        self._wandb = self._tensorboard = None
        if wandb_project:
            import wandb

            self._wandb = wandb.init(project=wandb_project, config=dict(config or {}))
        if tensorboard_dir:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                from torch.utils.tensorboard import SummaryWriter
            self._tensorboard = SummaryWriter(str(tensorboard_dir))

    def write(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
        scalars = to_scalars(metrics, prefix)
        record = {"step": int(step), "time": time.time(), **scalars}
        self._file.write(json.dumps(record) + "\n")
        check_finite(step, scalars)
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))
        if self._tensorboard is not None:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(key, value, int(step))
        return scalars

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tensorboard is not None:
            self._tensorboard.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All step records of a metrics.jsonl (skips the config line)."""
    records = []
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if "step" in record:
            records.append(record)
    return records
