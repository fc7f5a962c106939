"""Behaviour cloning (baselines, HG-DAgger, SAC warm starts): maximise log pi(a|s) over demos.

The networks are SAC's, built from the same experiment config (:func:`bc_config_for`): the
observation encoder, the tanh-Gaussian actor over the arm dimensions and, with a learned
gripper, a 3-way gripper head of the grasp critic's shape trained as a classifier
(cross-entropy on g = round(a_grip) + 1: open / stay / close). A BC policy therefore acts
through the same :class:`~serl_launcher.agents.sac.Policy` (argmax of the head for the gripper),
and SAC can start from it (:meth:`SACAgent.with_actor_from`).

Unlike the original, the image encoder is trained by the BC loss (the original stop-gradiented it
and left the image heads at their random initialisation).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState
from gymnasium import spaces
from ml_collections import FrozenConfigDict, config_dict

from serl_launcher.agents import losses
from serl_launcher.agents.sac import (
    Batch,
    Policy,
    image_keys_of,
    init_encoder,
    make_encoder,
    make_train_state,
    sac_config,
)
from serl_launcher.conventions import check_spaces
from serl_launcher.networks.actor_critic import GraspCritic, TanhGaussianPolicy
from serl_launcher.networks.encoders import random_shift

# Demonstrated actions at exactly +-1 have infinite tanh pre-image; pull them inside slightly.
ACTION_EPS = 1e-4
# What a BC agent shares with the SAC agent config it is built from (the architecture).
SHARED_WITH_SAC = ("hidden_dims", "activation", "actor_layer_norm", "critic_layer_norm", "learned_gripper",
                   "image_keys", "augmentation", "shift_pad", "encoder")


def bc_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    s = sac_config()
    for key in SHARED_WITH_SAC:
        c[key] = config_dict.ConfigDict(s[key].to_dict()) if key == "encoder" else s[key]
    c.lr = 3e-4
    c.batch_size = 256
    c.lock()
    return c


def bc_config_for(agent_config: config_dict.ConfigDict, lr: float | None = None,
                  batch_size: int | None = None) -> config_dict.ConfigDict:
    """The BC config whose networks are those of the SAC `agent_config` (so SAC can start from
    the BC policy); the learning rate is the actor's and the batch SAC's unless given."""
    c = bc_config()
    for key in SHARED_WITH_SAC:
        value = agent_config[key]
        c[key] = config_dict.ConfigDict(value.to_dict()) if key == "encoder" else value
    c.lr = float(agent_config.actor_lr if lr is None else lr)
    c.batch_size = int(agent_config.batch_size if batch_size is None else batch_size)
    return c


class BCAgent(struct.PyTreeNode):
    state: TrainState  # params {"encoder": ..., "actor": ...[, "grasp_critic": ...]}
    rng: jax.Array
    config: FrozenConfigDict = struct.field(pytree_node=False)
    encoder_def: nn.Module = struct.field(pytree_node=False)
    actor_def: nn.Module = struct.field(pytree_node=False)
    grasp_def: nn.Module | None = struct.field(pytree_node=False, default=None)

    @classmethod
    def create(cls, rng: jax.Array, observation_space: spaces.Dict, action_space: spaces.Box,
               config: config_dict.ConfigDict) -> BCAgent:
        check_spaces(observation_space, action_space)
        c = config_dict.ConfigDict(config.to_dict())
        if not c.image_keys:
            c.image_keys = image_keys_of(observation_space)
        action_dim = int(action_space.shape[-1])
        arm_dim = action_dim - 1 if c.learned_gripper else action_dim
        if arm_dim < 1:
            raise ValueError(f"action space {action_space.shape} too small for learned_gripper={c.learned_gripper}")
        encoder_def = make_encoder(c)
        actor_def = TanhGaussianPolicy(arm_dim, tuple(c.hidden_dims), c.activation, c.actor_layer_norm)
        grasp_def = GraspCritic(tuple(c.hidden_dims), c.activation, c.critic_layer_norm) if c.learned_gripper else None
        obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), dict(observation_space.spaces))
        rng, k_enc, k_actor, k_grasp = jax.random.split(rng, 4)
        encoder_params = init_encoder(encoder_def, c.encoder, k_enc, obs)
        features = encoder_def.apply({"params": encoder_params}, obs)
        params = {"encoder": encoder_params, "actor": actor_def.init(k_actor, features)["params"]}
        if grasp_def is not None:
            params["grasp_critic"] = grasp_def.init(k_grasp, features)["params"]
        return cls(make_train_state(params, c.lr), rng, FrozenConfigDict(c), encoder_def, actor_def, grasp_def)

    def policy(self) -> Policy:
        return Policy(dict(self.state.params), self.encoder_def, self.actor_def, self.grasp_def)

    @functools.partial(jax.jit, donate_argnums=0)
    def update(self, batch: Batch) -> tuple[BCAgent, dict[str, jax.Array]]:
        """One gradient step on a (B, ...) batch with `observations` and `actions`."""
        rng, k_aug = jax.random.split(self.rng)
        observations = dict(batch["observations"])
        if self.config.augmentation == "random_shift":
            for cam in self.config.image_keys:
                k_aug, sub = jax.random.split(k_aug)
                observations[cam] = random_shift(sub, observations[cam], self.config.shift_pad)
        actions = batch["actions"]
        arm = jnp.clip(actions[..., :-1] if self.grasp_def is not None else actions, -1 + ACTION_EPS, 1 - ACTION_EPS)

        def loss_fn(params):
            features = self.encoder_def.apply({"params": params["encoder"]}, observations)
            dist = self.actor_def.apply({"params": params["actor"]}, features)
            loss, info = losses.bc_loss(dist.log_prob(arm), dist.mode(), arm)
            if self.grasp_def is not None:
                logits = self.grasp_def.apply({"params": params["grasp_critic"]}, features)
                labels = jnp.clip(jnp.round(actions[..., -1]) + 1, 0, 2).astype(jnp.int32)
                grip_loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
                loss = loss + grip_loss
                info = {**info, "gripper_loss": grip_loss, "gripper_accuracy": accuracy}
            return loss, info

        grads, info = jax.grad(loss_fn, has_aux=True)(self.state.params)
        return self.replace(state=self.state.apply_gradients(grads=grads), rng=rng), info
