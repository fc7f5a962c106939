"""Pretrained ResNet-10 weights from the files users have, into this project's backbone .npz.

Two sources, the same network (ResNet-10 v1, GroupNorm(4), 4,905,792 parameters; ours is
:class:`serl_launcher.networks.encoders.ResNet10`):

- **HIL-SERL's released flax parameters** (``resnet10_params.pkl``, what the original downloads
  from SERL's GitHub release): a pickle of ``{"conv_init", "norm_init", "ResNetBlock_0".."_3"}``
  with flax kernels (H, W, in, out); blocks hold ``Conv_0``, ``MyGroupNorm_0``, ``Conv_1``,
  ``MyGroupNorm_1`` and, where the shape changes, ``conv_proj`` / ``norm_proj``. A pickle can run
  code, so it is read with an unpickler that builds only dicts and numpy / jax arrays and refuses
  anything else, naming it.
- **LeRobot's PyTorch port** (the ``helper2424/resnet10`` model its SAC uses; ``model.safetensors``,
  or a PyTorch ``.bin`` / ``.pt`` state dict when torch is installed): ``embedder.0.weight``,
  ``embedder.1.group_norm.{weight,bias}``, ``encoder.stages.<i>.{conv1.conv, norm1.group_norm,
  conv2.conv, norm2.group_norm, shortcut.0.conv, shortcut.1.group_norm}.*`` with torch kernels
  (out, in, H, W). Keys may carry a prefix (a checkpoint that embeds the model); it is found and
  stripped.

:func:`convert` returns the flat ``{path: array}`` that :func:`encoders.load_backbone_params`
reads (``stem/kernel``, ``ResNetBlock_1/proj/kernel``, ...), checked against a freshly built
ResNet-10: every parameter present once, shapes equal, values finite.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

BLOCKS = 4
HIL_SERL_BLOCK = {"Conv_0": "conv1", "MyGroupNorm_0": "GroupNorm_0", "Conv_1": "conv2",
                  "MyGroupNorm_1": "GroupNorm_1", "conv_proj": "proj", "norm_proj": "proj_norm"}
TORCH_BLOCK = {"conv1.conv": "conv1", "norm1.group_norm": "GroupNorm_0", "conv2.conv": "conv2",
               "norm2.group_norm": "GroupNorm_1", "shortcut.0.conv": "proj", "shortcut.1.group_norm": "proj_norm"}


class WeightsFormatError(ValueError):
    """A weight file that is not one of the known ResNet-10 layouts; the message says why."""


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """{flat path: shape} of this project's ResNet-10 backbone."""
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from serl_launcher.networks.encoders import ResNet10

    shapes = jax.eval_shape(lambda: ResNet10().init(jax.random.PRNGKey(0), jnp.zeros((1, 128, 128, 3), jnp.uint8)))
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes["params"], sep="/").items()}


# ----------------------------------------------------------------------------- HIL-SERL pickle


class _ArraysOnly(pickle.Unpickler):
    """Builds dicts and arrays only: numpy's array reconstruction, jax arrays (as numpy), flax
    FrozenDicts and OrderedDicts (as dicts). Any other global is refused before it is imported."""

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _reconstruct
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _scalar
        if module == "numpy" and name == "ndarray":
            return _NDARRAY
        if module == "numpy" and name == "dtype":
            return _dtype
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return _frombuffer  # numpy arrays pickled with protocol 5
        if module == "jax._src.array" and name == "_reconstruct_array":
            return _jax_array_as_numpy
        if (module, name) in (("flax.core.frozen_dict", "FrozenDict"), ("collections", "OrderedDict")):
            return _as_dict
        raise WeightsFormatError(f"the pickle wants {module}.{name}, which is not an array or a dict: refusing to "
                                 f"load it (it could run code)")


_NDARRAY = object()  # what the pickle gets for numpy.ndarray: usable only as _reconstruct's first argument
_NUMPY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray


def _plain(dtype: np.dtype) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in "biuf":
        raise WeightsFormatError(f"an array of dtype {dtype!r} in the pickle: weights are numbers only")
    return dtype


def _dtype(*args):
    return _plain(np.dtype(*args))


def _reconstruct(cls, shape, typecode):
    """numpy's array reconstruction for plain ndarrays only (the state is checked by _Array)."""
    if cls is not _NDARRAY:
        raise WeightsFormatError("the pickle rebuilds an array of another class than numpy.ndarray")
    return _Array(_NUMPY._reconstruct(np.ndarray, shape, typecode))


class _Array:
    """An array being unpickled: BUILD sets its state, which must be a numeric dtype."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise WeightsFormatError("an array state in the pickle is not numpy's")
        _plain(state[2])
        self.array.__setstate__(state)


def _frombuffer(buffer, dtype, shape, order):
    return np.frombuffer(buffer, dtype=_plain(np.dtype(dtype))).reshape(shape, order="F" if order == "F" else "C")


def _scalar(dtype, data):
    return _NUMPY.scalar(_plain(dtype), data)


def _jax_array_as_numpy(fun, args, arr_state, aval_state):
    """What jax's own reconstruction does, without putting the array on a device."""
    if fun is not _reconstruct:
        raise WeightsFormatError("a jax array in the pickle is rebuilt by something other than numpy")
    array = fun(*args)
    array.__setstate__(arr_state)
    return array.array


def _as_dict(*args, **kwargs):
    """A FrozenDict / OrderedDict as a plain dict; from a mapping or (key, value) pairs only."""
    if len(args) > 1 or (args and not isinstance(args[0], (Mapping, list, tuple))):
        raise WeightsFormatError("a dict in the pickle is built from something other than a dict")
    return dict(*args, **kwargs)


def read_hil_serl_pickle(path: str | Path) -> dict[str, Any]:
    data = Path(path).read_bytes()
    try:
        tree = _ArraysOnly(io.BytesIO(data)).load()
    except WeightsFormatError as error:
        raise WeightsFormatError(f"{path}: {error}") from None
    except Exception as error:  # noqa: BLE001 - a truncated or foreign pickle raises many kinds
        raise WeightsFormatError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
    tree = _unwrap(tree)
    if isinstance(tree, Mapping) and "params" in tree and "conv_init" not in tree:
        tree = tree["params"]
    if not isinstance(tree, Mapping):
        raise WeightsFormatError(f"{path}: the pickle holds a {type(tree).__name__}, not a parameter dict")
    return dict(tree)


def _unwrap(tree: Any) -> Any:
    """Arrays still in their unpickling wrapper (a bare array at the top) become numpy arrays."""
    if isinstance(tree, _Array):
        return tree.array
    if isinstance(tree, Mapping):
        return {k: _unwrap(v) for k, v in tree.items()}
    return tree


def from_hil_serl(tree: Mapping[str, Any], source: str = "the pickle") -> dict[str, np.ndarray]:
    """HIL-SERL's flax ResNet-10 parameters -> our flat backbone parameters."""
    out = {}

    def take(node: Any, keys: tuple[str, ...]) -> Any:
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                raise WeightsFormatError(f"{source}: no {'/'.join(keys)} (not HIL-SERL's ResNet-10 layout; it has "
                                         f"{sorted(tree)[:8]})")
            node = node[key]
        return node

    out["stem/kernel"] = take(tree, ("conv_init", "kernel"))
    for leaf in ("scale", "bias"):
        out[f"stem_norm/{leaf}"] = take(tree, ("norm_init", leaf))
    for i in range(BLOCKS):
        block = take(tree, (f"ResNetBlock_{i}",))
        for theirs, ours in HIL_SERL_BLOCK.items():
            if theirs not in block:
                continue  # projections exist only where the shape changes; checked below
            for leaf in (("kernel",) if theirs.startswith(("Conv", "conv")) else ("scale", "bias")):
                out[f"ResNetBlock_{i}/{ours}/{leaf}"] = take(block, (theirs, leaf))
    return out


# ----------------------------------------------------------------------------- PyTorch / safetensors


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ImportError("reading .safetensors needs the safetensors package (pip install safetensors)") from None
        try:
            return dict(load_file(str(path)))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own and OSError kinds
            raise WeightsFormatError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        import torch
    except ImportError:
        raise WeightsFormatError(f"{path}: a PyTorch state dict needs torch installed; or convert it to "
                                 f".safetensors first (safetensors.torch.save_file)") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # tensors only: no code runs
    except Exception as error:  # noqa: BLE001
        raise WeightsFormatError(f"{path}: not a readable PyTorch state dict ({error})") from None
    state = state.get("state_dict", state) if isinstance(state, Mapping) else state
    if not isinstance(state, Mapping):
        raise WeightsFormatError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}


def from_torch(state: Mapping[str, np.ndarray], source: str = "the state dict") -> dict[str, np.ndarray]:
    """LeRobot's PyTorch ResNet-10 state dict -> our flat backbone parameters (kernels from
    (out, in, H, W) to (H, W, in, out))."""
    anchors = [k for k in state if k == "embedder.0.weight" or k.endswith(".embedder.0.weight")]
    if len(anchors) != 1:
        raise WeightsFormatError(f"{source}: {'no' if not anchors else 'several'} 'embedder.0.weight' (not LeRobot's "
                                 f"ResNet-10 layout; keys start {sorted(state)[:6]})")
    prefix = anchors[0][: -len("embedder.0.weight")]

    def take(key: str) -> np.ndarray:
        if prefix + key not in state:
            raise WeightsFormatError(f"{source}: no {prefix + key}")
        return np.asarray(state[prefix + key])

    conv = lambda w: np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))  # noqa: E731
    out = {"stem/kernel": conv(take("embedder.0.weight")),
           "stem_norm/scale": take("embedder.1.group_norm.weight"), "stem_norm/bias": take("embedder.1.group_norm.bias")}
    for i in range(BLOCKS):
        for theirs, ours in TORCH_BLOCK.items():
            base = f"encoder.stages.{i}.{theirs}"
            if theirs.startswith("shortcut") and prefix + base + ".weight" not in state:
                continue
            if theirs.endswith(".conv"):
                out[f"ResNetBlock_{i}/{ours}/kernel"] = conv(take(base + ".weight"))
            else:
                out[f"ResNetBlock_{i}/{ours}/scale"] = take(base + ".weight")
                out[f"ResNetBlock_{i}/{ours}/bias"] = take(base + ".bias")
    return out


# ----------------------------------------------------------------------------- both


def convert(path: str | Path, kind: str | None = None) -> dict[str, np.ndarray]:
    """Our flat ResNet-10 parameters from a weight file; `kind` "hil_serl" or "torch" (default:
    by extension: .pkl is HIL-SERL's, .safetensors / .bin / .pt / .pth PyTorch)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file {path}")
    kind = kind or ("hil_serl" if path.suffix in (".pkl", ".pickle") else "torch")
    if kind == "hil_serl":
        params = from_hil_serl(read_hil_serl_pickle(path), str(path))
    elif kind == "torch":
        params = from_torch(read_torch_state_dict(path), str(path))
    else:
        raise ValueError(f"kind is 'hil_serl' or 'torch', not {kind!r}")
    return check(params, str(path))


def check(params: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    expected = expected_shapes()
    arrays = {k: np.asarray(v) for k, v in params.items()}
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        raise WeightsFormatError(f"{source}: not a ResNet-10 like ours: missing {missing[:4]}, unexpected {extra[:4]}")
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise WeightsFormatError(f"{source}: {key} has shape {arrays[key].shape}, ResNet-10 needs {shape}")
        if arrays[key].dtype.kind != "f" or not np.isfinite(arrays[key]).all():
            raise WeightsFormatError(f"{source}: {key} is not finite floating point ({arrays[key].dtype})")
    return {k: arrays[k].astype(np.float32) for k in expected}
