"""Critic ensemble, tanh-squashed Gaussian policy and the discrete grasp critic.

All heads take encoded observation features (B, F) (see `encoders.ObservationEncoder`).
"""

from __future__ import annotations

from collections.abc import Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from serl_launcher.networks.mlp import MLP, default_init


class StateActionValue(nn.Module):
    """Q(s, a): (B, F), (B, A) -> (B,)."""

    hidden_dims: Sequence[int]
    activation: str = "relu"
    use_layer_norm: bool = False

    @nn.compact
    def __call__(self, features: jax.Array, actions: jax.Array, train: bool = False) -> jax.Array:
        x = jnp.concatenate([features, actions], axis=-1)
        x = MLP(self.hidden_dims, self.activation, activate_final=True, use_layer_norm=self.use_layer_norm)(x, train)
        return nn.Dense(1, kernel_init=default_init())(x)[..., 0]


class CriticEnsemble(nn.Module):
    """`num` independent critics (each with its own output layer), vmapped: -> (num, B)."""

    num: int
    hidden_dims: Sequence[int]
    activation: str = "relu"
    use_layer_norm: bool = False

    @nn.compact
    def __call__(self, features: jax.Array, actions: jax.Array, train: bool = False) -> jax.Array:
        ensemble = nn.vmap(
            StateActionValue,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num,
        )
        return ensemble(self.hidden_dims, self.activation, self.use_layer_norm)(features, actions, train)


class TanhGaussianPolicy(nn.Module):
    """pi(a|s) = tanh(N(mu(s), diag(sigma(s)^2))): (B, F) -> distribution over (B, A) in (-1, 1)."""

    action_dim: int
    hidden_dims: Sequence[int]
    activation: str = "relu"
    use_layer_norm: bool = False
    log_std_min: float = -10.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, features: jax.Array, train: bool = False) -> distrax.Distribution:
        x = MLP(self.hidden_dims, self.activation, activate_final=True, use_layer_norm=self.use_layer_norm)(features, train)
        mean = nn.Dense(self.action_dim, kernel_init=default_init())(x)
        log_std = nn.Dense(self.action_dim, kernel_init=default_init())(x)
        log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        base = distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))
        return TanhTransformed(base)


class TanhTransformed(distrax.Transformed):
    """tanh-squashed distribution whose mode is tanh(mode of the base)."""

    def __init__(self, distribution: distrax.Distribution):
        super().__init__(distribution, distrax.Block(distrax.Tanh(), ndims=1))

    def mode(self) -> jax.Array:
        return self.bijector.forward(self.distribution.mode())


class GraspCritic(nn.Module):
    """Q(s, g) for the 3 gripper actions {open, stay, close}: (B, F) -> (B, 3)."""

    hidden_dims: Sequence[int]
    activation: str = "relu"
    use_layer_norm: bool = False
    num_actions: int = 3

    @nn.compact
    def __call__(self, features: jax.Array, train: bool = False) -> jax.Array:
        x = MLP(self.hidden_dims, self.activation, activate_final=True, use_layer_norm=self.use_layer_norm)(features, train)
        return nn.Dense(self.num_actions, kernel_init=default_init())(x)
