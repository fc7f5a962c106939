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


SECRET_NAMES = ("key", "secret", "password", "passwd", "passphrase", "token", "apikey", "api_key", "hmac",
                "credential", "credentials")
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
    if isinstance(tree, (list, tuple)):
        items = [redact_secrets(item) for item in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return tree


def check_finite(step: int, metrics: Mapping[str, float]) -> None:
    """Raises NonFiniteMetricError naming the step and the first non-finite metric."""
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise NonFiniteMetricError(f"step {step}: metric {key!r} is {value}; stopping")


class MetricsWriter:
    """Appends ``{"step": ..., "time": ..., **metrics}`` lines to ``path`` (metrics.jsonl);
    ``time`` is wall-clock Unix seconds (what run reports plot against). Processes of a run open
    theirs with :meth:`for_run`, which adds the sinks ``config.logging`` asks for.

    Args:
        path: the JSON-lines file (parent folders are created).
        config: written once as the first record (``{"config": ...}``) when the file is new (and
            `header`), and given to wandb; secret-looking entries are redacted first
            (:func:`redact_secrets`).
        wandb: keyword arguments of ``wandb.init`` (project, entity, mode, dir, name, group,
            job_type, id); None: no wandb (extra ``[monitoring]``).
        tensorboard_dir: where tensorboardX writes event files; None: no TensorBoard.
    """

    def __init__(self, path: str | Path, config: Mapping[str, Any] | None = None,
                 wandb: Mapping[str, Any] | None = None, tensorboard_dir: str | Path | None = None,
                 header: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        config = redact_secrets(config) if config is not None else None
        self._wandb = self._tensorboard = None
        if wandb:
            self._wandb = _open_wandb(wandb, config)
        if tensorboard_dir:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise ImportError("logging.tensorboard needs tensorboardX: pip install -e '.[monitoring]'") from None
            self._tensorboard = SummaryWriter(str(tensorboard_dir))
        self._file = self.path.open("a", buffering=1)  # line-buffered: nothing lost on a crash
        if new and header and config is not None:
            self._file.write(json.dumps({"config": config}, default=str) + "\n")

    @classmethod
    def for_run(cls, path: str | Path, config, run_dir: str | Path, role: str,
                header: bool = True) -> MetricsWriter:
        """The writer of one process (`role`: learner, actor-<id>, evaluator ...) of the run in
        `run_dir`, with the sinks of ``config.logging``:

        - ``logging.wandb.project`` set: a wandb run per process start (``<run>-<role>``; a
          restarted process starts a new one), grouped by the run folder's name, files in
          ``<run folder>/wandb``; ``mode`` online, offline (``wandb sync`` later) or disabled.
          The config goes with it (secrets redacted), never the command line.
        - ``logging.tensorboard`` set: event files in ``<run folder>/<it>/<role>`` for a relative
          folder, ``<it>/<exp>/<run>/<role>`` for an absolute one (``tensorboard --logdir``).

        `header`: write the config as the file's first record (False where another process of
        the run owns the file, e.g. the evaluator appending to the learner's)."""
        run_dir = Path(run_dir)
        public = redact_secrets(config.to_dict() if hasattr(config, "to_dict") else dict(config))
        sinks = public.get("logging") or {}
        exp = public.get("exp_name") or "run"
        wandb_settings, tensorboard_dir = None, None
        w = sinks.get("wandb") or {}
        if w.get("project"):
            if w.get("mode", "online") not in ("online", "offline", "disabled"):
                raise ValueError(f"logging.wandb.mode is online, offline or disabled, not {w.get('mode')!r}")
            wandb_settings = {"project": w["project"], "entity": w.get("entity") or None,
                              "mode": w.get("mode", "online"), "dir": str(run_dir),
                              "name": f"{run_dir.name}-{role}", "group": run_dir.name, "job_type": role}
        if sinks.get("tensorboard"):
            base = Path(str(sinks["tensorboard"])).expanduser()
            tensorboard_dir = (base / exp / run_dir.name / role) if base.is_absolute() else run_dir / base / role
        return cls(path, config=public, wandb=wandb_settings, tensorboard_dir=tensorboard_dir, header=header)

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

    def video(self, step: int, name: str, path: str | Path) -> None:
        """An mp4 already written (e.g. an evaluation's) to wandb, as `name`; TensorBoard has no
        video panel without moviepy, so the file stays where it is for it. The JSON lines get a
        record pointing at the file."""
        self._file.write(json.dumps({"step": int(step), "time": time.time(), f"{name}_file": str(path)}) + "\n")
        if self._wandb is not None:
            import wandb

            self._wandb.log({name: wandb.Video(str(path), format="mp4")}, step=int(step))

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


def _open_wandb(settings: Mapping[str, Any], config: Mapping[str, Any] | None):
    try:
        import wandb
    except ImportError:
        raise ImportError("logging.wandb needs wandb: pip install -e '.[monitoring]'") from None
    try:
        return wandb.init(**settings, config=dict(config or {}), reinit="create_new",
                          settings=wandb.Settings(x_disable_meta=True, save_code=False, console="off",
                                                  silent=True, disable_git=True))
    except wandb.errors.Error as error:
        raise RuntimeError(f"wandb could not start ({error}): run `wandb login` (or set WANDB_API_KEY in the "
                           f"environment, never in a config), or set logging.wandb.mode=offline and "
                           f"`wandb sync` the run's wandb/ folder later") from None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All step records of a metrics.jsonl (skips the config line)."""
    records = []
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if "step" in record:
            records.append(record)
    return records
