"""Observation encoders: image backbones, pooling, and the fusion of images with proprio state.

An observation is a dict: ``state`` (B, S) float32 and one (B, H, W, 3) uint8 image per camera.
:class:`ObservationEncoder` maps it to a feature vector (B, F). With no cameras it passes the
state through unchanged (no parameters), which is what state-based SAC/RLPD uses.

Backbones:
- ``small``: a 3-layer strided conv net.
- ``patch``: patch-embedding stages (space-to-depth + Dense), the fastest on a CPU.
- ``resnet10``: ResNet-10 (v1, GroupNorm), the HIL-SERL backbone. Pretrained weights load from a
  file the user gives (:func:`load_backbone_params`); with ``freeze_backbone`` its output is
  stop-gradiented and its parameters live under ``frozen_backbone``, which optimizers skip.

One backbone instance is shared by all cameras (cameras are stacked on the batch axis, so the
backbone runs once); each camera has its own pooling and bottleneck.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from serl_launcher.networks.mlp import default_init

FROZEN_BACKBONE = "frozen_backbone"  # parameter-path component that marks frozen weights
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class SmallConvEncoder(nn.Module):
    """(B, H, W, 3) uint8 -> (B, h, w, C) float32. VALID padding (XLA:CPU is slow on tiny SAME maps)."""

    features: Sequence[int] = (32, 32, 32)
    strides: Sequence[int] = (2, 2, 2)
    kernel_size: int = 3

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images.astype(jnp.float32) / 255.0 - 0.5
        for features, stride in zip(self.features, self.strides, strict=True):
            x = nn.Conv(features, (self.kernel_size,) * 2, strides=stride, padding="VALID",
                        kernel_init=nn.initializers.he_normal())(x)
            x = nn.relu(x)
        return x


class PatchEncoder(nn.Module):
    """(B, H, W, 3) uint8 -> (B, H / prod(patches), W / prod(patches), features[-1]) float32.

    Each stage cuts the map into non-overlapping p x p patches (space-to-depth) and mixes each
    patch with a Dense layer (a stride-p, p x p convolution written as one matrix multiply),
    then LayerNorm and ReLU. On a CPU this is several times faster than the strided 3x3 convs of
    ``small``: XLA:CPU runs matrix multiplies near peak but convolutions and their gradients far
    below it (benchmarks/README.md, "image encoders").
    """

    patches: Sequence[int] = (4, 2)
    features: Sequence[int] = (32, 64)

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images.astype(jnp.float32) / 255.0 - 0.5
        for p, features in zip(self.patches, self.features, strict=True):
            b, h, w, c = x.shape
            if h % p or w % p:
                raise ValueError(f"patch encoder: a {h}x{w} map does not split into {p}x{p} patches; "
                                 f"image sides must be multiples of {int(np.prod(self.patches))}")
            x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // p, w // p, p * p * c)
            x = nn.Dense(features, kernel_init=nn.initializers.he_normal())(x)
            x = nn.relu(nn.LayerNorm()(x))
        return x


class ResNetBlock(nn.Module):
    filters: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda f, k, s, name: nn.Conv(f, (k, k), strides=s, use_bias=False, padding="SAME",  # noqa: E731
                                             kernel_init=nn.initializers.he_normal(), name=name)
        y = nn.relu(nn.GroupNorm(4, epsilon=1e-5)(conv(self.filters, 3, self.strides, "conv1")(x)))
        y = nn.GroupNorm(4, epsilon=1e-5)(conv(self.filters, 3, 1, "conv2")(y))
        if x.shape != y.shape:
            x = nn.GroupNorm(4, epsilon=1e-5, name="proj_norm")(conv(self.filters, 1, self.strides, "proj")(x))
        return nn.relu(x + y)


class ResNet10(nn.Module):
    """ResNet-10 v1: 7x7/2 conv, max-pool, four one-block stages. 128x128 -> (4, 4, 512)."""

    num_filters: int = 64
    stage_sizes: Sequence[int] = (1, 1, 1, 1)

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = (images.astype(jnp.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        x = nn.Conv(self.num_filters, (7, 7), strides=2, use_bias=False, padding=[(3, 3), (3, 3)],
                    kernel_init=nn.initializers.he_normal(), name="stem")(x)
        x = nn.relu(nn.GroupNorm(4, epsilon=1e-5, name="stem_norm")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, blocks in enumerate(self.stage_sizes):
            for j in range(blocks):
                x = ResNetBlock(self.num_filters * 2**i, strides=2 if i > 0 and j == 0 else 1)(x)
        return x


class SpatialLearnedEmbeddings(nn.Module):
    """z[b, c, n] = sum_{h,w} f[b, h, w, c] K[h, w, c, n]: (B, H, W, C) -> (B, C * num_features)."""

    num_features: int = 8

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        _, h, w, c = features.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (h, w, c, self.num_features))
        z = jnp.einsum("bhwc,hwcn->bcn", features, kernel)
        return z.reshape(features.shape[0], -1)


def make_backbone(kind: str, name: str) -> nn.Module:
    if kind == "small":
        return SmallConvEncoder(name=name)
    if kind == "patch":
        return PatchEncoder(name=name)
    if kind == "resnet10":
        return ResNet10(name=name)
    raise ValueError(f"unknown image encoder {kind!r}; choose 'small', 'patch' or 'resnet10'")


class ObservationEncoder(nn.Module):
    """Observation dict -> (B, F) features. See the module docstring.

    Attributes:
        image_keys: camera names, in a fixed order.
        backbone: "small", "patch" or "resnet10".
        freeze_backbone: stop gradients through the backbone and keep its params out of optimizers.
        pooling: "spatial_embeddings" (HIL-SERL) or "avg".
        num_spatial_features: kernels per channel for spatial embeddings.
        bottleneck_dim: per-camera feature size after Dense -> LayerNorm -> tanh.
        state_dim: size of the proprio projection when cameras are present (0: raw state).
        use_state: include observations["state"] (the reward classifier does not).
    """

    image_keys: tuple[str, ...] = ()
    backbone: str = "small"
    freeze_backbone: bool = False
    pooling: str = "spatial_embeddings"
    num_spatial_features: int = 8
    bottleneck_dim: int = 64
    state_dim: int = 64
    use_state: bool = True

    @nn.compact
    def __call__(self, observations: dict[str, jax.Array], train: bool = False) -> jax.Array:
        if not self.image_keys:
            if not self.use_state:
                raise ValueError("ObservationEncoder needs image_keys or use_state=True")
            return observations["state"].astype(jnp.float32)

        batch = observations[self.image_keys[0]].shape[0]
        images = jnp.concatenate([observations[k] for k in self.image_keys], axis=0)
        backbone = make_backbone(self.backbone, FROZEN_BACKBONE if self.freeze_backbone else "backbone")
        maps = backbone(images)
        if self.freeze_backbone:
            maps = jax.lax.stop_gradient(maps)
        parts = []
        for i, key in enumerate(self.image_keys):
            x = maps[i * batch : (i + 1) * batch]
            if self.pooling == "spatial_embeddings":
                x = SpatialLearnedEmbeddings(self.num_spatial_features, name=f"pool_{key}")(x)
            elif self.pooling == "avg":
                x = x.mean(axis=(1, 2))
            else:
                raise ValueError(f"unknown pooling {self.pooling!r}")
            x = nn.Dense(self.bottleneck_dim, kernel_init=default_init(), name=f"bottleneck_{key}")(x)
            parts.append(nn.tanh(nn.LayerNorm(name=f"bottleneck_norm_{key}")(x)))
        if self.use_state:
            state = observations["state"].astype(jnp.float32)
            if self.state_dim:
                state = nn.Dense(self.state_dim, kernel_init=default_init(), name="state_proj")(state)
                state = nn.tanh(nn.LayerNorm(name="state_norm")(state))
            parts.append(state)
        return jnp.concatenate(parts, axis=-1)


class Classifier(nn.Module):
    """Reward classifier: images (and optionally state) -> logits (B,) if binary else (B, K)."""

    encoder: ObservationEncoder
    num_classes: int = 2
    hidden_dim: int = 256
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, observations: dict[str, jax.Array], train: bool = False) -> jax.Array:
        x = self.encoder(observations, train)
        x = nn.Dense(self.hidden_dim, kernel_init=default_init())(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        x = nn.relu(nn.LayerNorm()(x))
        logits = nn.Dense(1 if self.num_classes == 2 else self.num_classes, kernel_init=default_init())(x)
        return logits[..., 0] if self.num_classes == 2 else logits


def random_shift(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """DrQ augmentation: edge-pad by `pad`, crop back at a random offset per image. (B, H, W, C)."""
    b, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
    crop = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))  # noqa: E731
    return jax.vmap(crop)(padded, offsets)


def check_frozen_backbone(section, name: str) -> None:
    """A frozen backbone needs weights: ValueError when `section` (an encoder or classifier
    config: freeze_backbone, pretrained_path, allow_random_frozen) freezes one without a file,
    unless allow_random_frozen says a random, never-trained backbone is meant."""
    if section.freeze_backbone and not section.pretrained_path and not section.get("allow_random_frozen", False):
        raise ValueError(
            f"{name}.freeze_backbone=True without {name}.pretrained_path: the backbone would stay at its random "
            f"initialisation, which nothing trains. Convert pretrained ResNet-10 weights with "
            f"scripts/convert_resnet10.py (HIL-SERL's resnet10_params.pkl or LeRobot's model.safetensors) and set "
            f"{name}.pretrained_path, train the backbone ({name}.freeze_backbone=False), or set "
            f"{name}.allow_random_frozen=True if a random frozen backbone is what you want")


def is_frozen_path(path: tuple[str, ...]) -> bool:
    return FROZEN_BACKBONE in path


def save_backbone_params(path: str | Path, params: dict) -> Path:
    """Writes backbone parameters (the tree under `backbone`/`frozen_backbone`) to an .npz file."""
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})
    return path


def load_backbone_params(path: str | Path, like: dict) -> dict:
    """Reads an .npz of backbone parameters and checks it against the tree `like` (same keys/shapes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained backbone weights not found: {path}")
    try:
        with np.load(path) as data:
            loaded = {k: data[k] for k in data.files}
    except Exception as error:
        raise ValueError(f"{path}: not a readable .npz of backbone weights ({error})") from error
    expected = traverse_util.flatten_dict(like, sep="/")
    missing = sorted(set(expected) - set(loaded))
    extra = sorted(set(loaded) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: parameter names differ from the backbone: missing {missing[:5]}, unexpected {extra[:5]}")
    for key, value in expected.items():
        if loaded[key].shape != tuple(value.shape):
            raise ValueError(f"{path}: {key} has shape {loaded[key].shape}, backbone expects {tuple(value.shape)}")
    return traverse_util.unflatten_dict({k: jnp.asarray(v, dtype=expected[k].dtype) for k, v in loaded.items()}, sep="/")
