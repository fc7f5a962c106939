"""Behaviour cloning (baselines and HG-DAgger): maximise log pi(a|s) over demonstrations.

Unlike the original, the image encoder is trained by the BC loss (the original stop-gradiented it
and left the image heads at their random initialisation). The policy is the same tanh-Gaussian
as SAC's, so a BC checkpoint acts through the same :class:`~serl_launcher.agents.sac.Policy`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from flax.training.train_state import TrainState
from gymnasium import spaces
from ml_collections import FrozenConfigDict, config_dict

from serl_launcher.agents import losses
from serl_launcher.agents.sac import Batch, Policy, image_keys_of, make_train_state
from serl_launcher.networks.actor_critic import TanhGaussianPolicy
from serl_launcher.networks.encoders import ObservationEncoder, random_shift

# Demonstrated actions at exactly +-1 have infinite tanh pre-image; pull them inside slightly.
ACTION_EPS = 1e-4


def bc_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.hidden_dims = (256, 256, 256)
    c.activation = "relu"
    c.layer_norm = True
    c.lr = 3e-4
    c.batch_size = 256
    c.image_keys = ()
    c.augmentation = "none"
    c.shift_pad = 4
    c.encoder = config_dict.ConfigDict(
        {"backbone": "small", "freeze_backbone": False, "pooling": "spatial_embeddings",
         "num_spatial_features": 8, "bottleneck_dim": 64, "state_dim": 64}
    )
    c.lock()
    return c


class BCAgent(struct.PyTreeNode):
    state: TrainState  # params {"encoder": ..., "actor": ...}
    rng: jax.Array
    config: FrozenConfigDict = struct.field(pytree_node=False)
    encoder_def: nn.Module = struct.field(pytree_node=False)
    actor_def: nn.Module = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng: jax.Array, observation_space: spaces.Dict, action_space: spaces.Box,
               config: config_dict.ConfigDict) -> BCAgent:
        c = config_dict.ConfigDict(config.to_dict())
        if not c.image_keys:
            c.image_keys = image_keys_of(observation_space)
        e = c.encoder
        encoder_def = ObservationEncoder(
            image_keys=tuple(c.image_keys), backbone=e.backbone, freeze_backbone=e.freeze_backbone,
            pooling=e.pooling, num_spatial_features=e.num_spatial_features,
            bottleneck_dim=e.bottleneck_dim, state_dim=e.state_dim,
        )
        actor_def = TanhGaussianPolicy(int(action_space.shape[-1]), tuple(c.hidden_dims), c.activation, c.layer_norm)
        obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), dict(observation_space.spaces))
        rng, k_enc, k_actor = jax.random.split(rng, 3)
        encoder_params = encoder_def.init(k_enc, obs).get("params", {})
        features = encoder_def.apply({"params": encoder_params}, obs)
        params = {"encoder": encoder_params, "actor": actor_def.init(k_actor, features)["params"]}
        return cls(make_train_state(params, c.lr), rng, FrozenConfigDict(c), encoder_def, actor_def)

    def policy(self) -> Policy:
        params = {"encoder": self.state.params["encoder"], "actor": self.state.params["actor"]}
        return Policy(params, self.encoder_def, self.actor_def)

    @functools.partial(jax.jit, donate_argnums=0)
    def update(self, batch: Batch) -> tuple[BCAgent, dict[str, jax.Array]]:
        """One gradient step on a (B, ...) batch with `observations` and `actions`."""
        rng, k_aug = jax.random.split(self.rng)
        observations = dict(batch["observations"])
        if self.config.augmentation == "random_shift":
            for cam in self.config.image_keys:
                k_aug, sub = jax.random.split(k_aug)
                observations[cam] = random_shift(sub, observations[cam], self.config.shift_pad)
        actions = jnp.clip(batch["actions"], -1 + ACTION_EPS, 1 - ACTION_EPS)

        def loss_fn(params):
            features = self.encoder_def.apply({"params": params["encoder"]}, observations)
            dist = self.actor_def.apply({"params": params["actor"]}, features)
            return losses.bc_loss(dist.log_prob(actions), dist.mode(), actions)

        grads, info = jax.grad(loss_fn, has_aux=True)(self.state.params)
        return self.replace(state=self.state.apply_gradients(grads=grads), rng=rng), info
