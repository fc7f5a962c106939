"""Multi-layer perceptrons."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": nn.tanh,
    "gelu": nn.gelu,
    "silu": nn.silu,
}


def default_init(scale: float = 1.0) -> nn.initializers.Initializer:
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


class MLP(nn.Module):
    """Dense -> [Dropout] -> [LayerNorm] -> activation, per hidden layer.

    (..., D_in) -> (..., hidden_dims[-1]); the last layer is activated only if `activate_final`.
    """

    hidden_dims: Sequence[int]
    activation: str = "relu"
    activate_final: bool = False
    use_layer_norm: bool = False
    dropout_rate: float | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for i, size in enumerate(self.hidden_dims):
            x = nn.Dense(size, kernel_init=default_init())(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                if self.dropout_rate:
                    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
                if self.use_layer_norm:
                    x = nn.LayerNorm()(x)
                x = act(x)
        return x


def concat_features(*xs: jax.Array) -> jax.Array:
    return jnp.concatenate(xs, axis=-1)
