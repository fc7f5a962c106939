"""Soft actor-critic as one immutable pytree, with RLPD, DrQ and a learned gripper as configurations.

- Critic: an ensemble of N independent critics (optionally LayerNorm); the target is the min over a
  random subset of M of them, drawn without replacement each update (REDQ / RLPD).
- Actor: tanh-squashed Gaussian; temperature learned in Lagrangian form towards a target entropy.
- One call of :meth:`SACAgent.update` = ``utd_ratio`` critic updates inside ``lax.scan``, then one
  actor and one temperature update on the last minibatch. Pure and jitted; returns
  ``(new_agent, metrics)``.
- Images (DrQ): the critic owns the observation encoder and trains it; the actor and the grasp
  critic read its features with stop-gradient; target critics are EMA copies of the critic heads
  and use the online encoder's features for s' (as in DrQ-v2). Random-shift augmentation is
  applied inside the update. A frozen backbone gets no gradient and no optimizer state.
- Learned gripper (``learned_gripper=True``): SAC over the arm dimensions plus a discrete
  (open / stay / close) double-DQN grasp critic for the last action dimension, trained with the
  toggle penalty. Index g = round(a_grip) + 1, so 0 = open (-1), 1 = stay (0), 2 = close (+1).

Every network has its own ``TrainState`` and optimizer; a network that is not updated is untouched.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct, traverse_util
from flax.training.train_state import TrainState
from gymnasium import spaces
from ml_collections import FrozenConfigDict, config_dict

from serl_launcher.agents import losses
from serl_launcher.conventions import check_spaces
from serl_launcher.networks.actor_critic import CriticEnsemble, GraspCritic, TanhGaussianPolicy
from serl_launcher.networks.encoders import ObservationEncoder, is_frozen_path, random_shift

Params = Any
Batch = dict[str, Any]


def sac_config() -> config_dict.ConfigDict:
    """Defaults of plain SAC. Locked: a typo raises."""
    c = config_dict.ConfigDict()
    c.hidden_dims = (256, 256)
    c.activation = "relu"
    c.num_qs = 2
    c.num_min_qs = config_dict.placeholder(int)  # M of REDQ; None: min over all N
    c.critic_layer_norm = False
    c.actor_layer_norm = False
    c.discount = 0.99
    c.tau = 0.005
    c.actor_lr = 3e-4
    c.critic_lr = 3e-4
    c.temp_lr = 3e-4
    c.init_temperature = 1.0
    # Warm start: an exported BC policy folder (scripts/train_bc.py writes <run>/policy; relative
    # paths are in the experiment folder) whose encoder, actor and gripper head a fresh learner
    # starts from (SACAgent.with_actor_from); "" starts from scratch. Ignored when resuming.
    c.init_actor_from = ""
    # Continue another run (sim to real: the sim run's folder, e.g.
    # "../so101_pick_cube_sim/runs/RUN"; relative paths are in the experiment folder): a fresh
    # learner starts from that run's latest checkpoint, the whole agent (encoder, actor, critics,
    # targets, temperature, optimiser states), at step 0 with its own buffers. The observation
    # and action spaces must match. "" starts from scratch; ignored when resuming.
    c.init_from = ""
    # Learner steps at the start of a run that update only the critics (update_for_step): a
    # warm-started actor keeps the BC behaviour while the critics learn its values, instead of
    # following the gradient of random critics. 0: none.
    c.critic_warmup_steps = 0
    c.target_entropy = config_dict.placeholder(float)  # None: -action_dim / 2
    c.backup_entropy = True
    c.reward_bias = 0.0
    c.utd_ratio = 1
    c.batch_size = 256
    # Learned gripper: discrete grasp critic for the last action dimension.
    c.learned_gripper = False
    c.grasp_epsilon = 0.1  # epsilon-greedy exploration of the gripper when sampling (not eval)
    # Images.
    c.image_keys = ()  # filled from the observation space by SACAgent.create when left empty
    c.augmentation = "none"  # or "random_shift" (DrQ)
    c.shift_pad = 4
    c.encoder = config_dict.ConfigDict(
        {
            "backbone": "small",
            "freeze_backbone": False,
            "pretrained_path": "",  # .npz (scripts/convert_resnet10.py, or encoders.save_backbone_params)
            # freeze_backbone without pretrained_path is an error unless this says a random frozen
            # backbone is meant (networks.encoders.check_frozen_backbone).
            "allow_random_frozen": False,
            "pooling": "spatial_embeddings",
            "num_spatial_features": 8,
            "bottleneck_dim": 64,
            "state_dim": 64,
        }
    )
    c.lock()
    return c


def rlpd_config() -> config_dict.ConfigDict:
    """RLPD (Ball et al. 2023): 10 LayerNorm critics, min over 2 sampled, UTD 20."""
    c = sac_config()
    c.num_qs, c.num_min_qs, c.critic_layer_norm, c.utd_ratio = 10, 2, True, 20
    return c


def drq_config() -> config_dict.ConfigDict:
    """DrQ: SAC from pixels with random-shift augmentation (REDQ ensemble as in SERL)."""
    c = rlpd_config()
    c.augmentation = "random_shift"
    c.utd_ratio = 1
    return c


def image_keys_of(observation_space: spaces.Dict) -> tuple[str, ...]:
    """Camera keys: uint8 (H, W, 3) boxes, in sorted order."""
    return tuple(
        sorted(
            k for k, s in observation_space.spaces.items()
            if isinstance(s, spaces.Box) and s.dtype == np.uint8 and len(s.shape) == 3
        )
    )


def make_train_state(params: Params, lr: float) -> TrainState:
    """TrainState with a strongly typed step counter (a Python int would retrace after step 1)."""
    state = TrainState.create(apply_fn=None, params=params, tx=make_optimizer(lr, params))
    return state.replace(step=jnp.zeros((), jnp.int32))


def make_optimizer(lr: float, params: Params) -> optax.GradientTransformation:
    """Adam for trainable leaves; frozen-backbone leaves get no update and no optimizer state."""
    labels = traverse_util.path_aware_map(lambda path, _: "frozen" if is_frozen_path(path) else "train", params)
    return optax.multi_transform({"train": optax.adam(lr), "frozen": optax.set_to_zero()}, labels)


def make_encoder(c: config_dict.ConfigDict) -> ObservationEncoder:
    """The observation encoder of an agent config (``image_keys`` filled, ``encoder``)."""
    e = c.encoder
    return ObservationEncoder(
        image_keys=tuple(c.image_keys), backbone=e.backbone, freeze_backbone=e.freeze_backbone,
        pooling=e.pooling, num_spatial_features=e.num_spatial_features,
        bottleneck_dim=e.bottleneck_dim, state_dim=e.state_dim,
    )


def init_encoder(encoder_def: ObservationEncoder, e: config_dict.ConfigDict, key: jax.Array, obs: dict) -> Params:
    """Initial encoder parameters, with the backbone from ``e.pretrained_path`` when given; a
    frozen backbone without one is refused (encoders.check_frozen_backbone)."""
    if encoder_def.image_keys:
        from serl_launcher.networks.encoders import check_frozen_backbone

        check_frozen_backbone(e, "agent.encoder")
    params = encoder_def.init(key, obs).get("params", {})
    if e.pretrained_path:
        from serl_launcher.networks.encoders import load_backbone_params

        name = "frozen_backbone" if e.freeze_backbone else "backbone"
        params = {**params, name: load_backbone_params(e.pretrained_path, params[name])}
    return params


class Policy(struct.PyTreeNode):
    """What an actor needs to act: encoder + actor (+ grasp critic) params and their modules."""

    params: Params  # {"encoder": ..., "actor": ..., ["grasp_critic": ...]}
    encoder_def: nn.Module = struct.field(pytree_node=False)
    actor_def: nn.Module = struct.field(pytree_node=False)
    grasp_def: nn.Module | None = struct.field(pytree_node=False, default=None)
    grasp_epsilon: float = struct.field(pytree_node=False, default=0.0)

    @functools.partial(jax.jit, static_argnames=("deterministic",))
    def act(self, observations: dict, key: jax.Array, deterministic: bool = False) -> jax.Array:
        """Batched observations (B, ...) -> actions (B, A) in [-1, 1]."""
        features = self.encoder_def.apply({"params": self.params["encoder"]}, observations)
        dist = self.actor_def.apply({"params": self.params["actor"]}, features)
        k_act, k_eps, k_rand = jax.random.split(key, 3)
        actions = dist.mode() if deterministic else dist.sample(seed=k_act)
        if self.grasp_def is not None:
            q = self.grasp_def.apply({"params": self.params["grasp_critic"]}, features)
            grip = jnp.argmax(q, axis=-1)
            if not deterministic and self.grasp_epsilon > 0:
                explore = jax.random.uniform(k_eps, grip.shape) < self.grasp_epsilon
                grip = jnp.where(explore, jax.random.randint(k_rand, grip.shape, 0, 3), grip)
            actions = jnp.concatenate([actions, (grip - 1).astype(actions.dtype)[:, None]], axis=-1)
        return actions

    def sample_actions(self, observation: dict, key: jax.Array, deterministic: bool = False) -> np.ndarray:
        """One unbatched observation -> (A,) numpy action."""
        batched = jax.tree.map(lambda x: jnp.asarray(x)[None], observation)
        return np.asarray(self.act(batched, key, deterministic)[0])


class SACAgent(struct.PyTreeNode):
    actor: TrainState  # params {"actor": ...}
    critic: TrainState  # params {"encoder": ..., "critic": ...}
    target_critic: Params  # EMA of critic.params["critic"]
    temperature: TrainState  # params {"log_alpha": ()}
    grasp_critic: TrainState | None  # params {"grasp_critic": ...}
    target_grasp_critic: Params | None
    rng: jax.Array
    config: FrozenConfigDict = struct.field(pytree_node=False)
    encoder_def: nn.Module = struct.field(pytree_node=False)
    actor_def: nn.Module = struct.field(pytree_node=False)
    critic_def: nn.Module = struct.field(pytree_node=False)
    target_critic_def: nn.Module = struct.field(pytree_node=False)
    grasp_def: nn.Module | None = struct.field(pytree_node=False)
    target_entropy: float = struct.field(pytree_node=False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        rng: jax.Array,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        config: config_dict.ConfigDict,
    ) -> SACAgent:
        check_spaces(observation_space, action_space)
        c = config_dict.ConfigDict(config.to_dict())  # resolved copy; the caller's stays as is
        if not c.image_keys:
            c.image_keys = image_keys_of(observation_space)
        action_dim = int(action_space.shape[-1])
        arm_dim = action_dim - 1 if c.learned_gripper else action_dim
        if arm_dim < 1:
            raise ValueError(f"action space {action_space.shape} too small for learned_gripper={c.learned_gripper}")
        num_min_qs = c.num_min_qs or c.num_qs
        if not 1 <= num_min_qs <= c.num_qs:
            raise ValueError(f"num_min_qs={c.num_min_qs} must be in [1, num_qs={c.num_qs}]")
        target_entropy = -arm_dim / 2 if c.target_entropy is None else float(c.target_entropy)

        encoder_def = make_encoder(c)
        critic_kwargs = dict(hidden_dims=tuple(c.hidden_dims), activation=c.activation, use_layer_norm=c.critic_layer_norm)
        critic_def = CriticEnsemble(num=c.num_qs, **critic_kwargs)
        target_critic_def = CriticEnsemble(num=num_min_qs, **critic_kwargs)
        actor_def = TanhGaussianPolicy(arm_dim, tuple(c.hidden_dims), c.activation, c.actor_layer_norm)
        grasp_def = GraspCritic(tuple(c.hidden_dims), c.activation, c.critic_layer_norm) if c.learned_gripper else None

        obs = jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), dict(observation_space.spaces))
        rng, k_enc, k_actor, k_critic, k_grasp = jax.random.split(rng, 5)
        encoder_params = init_encoder(encoder_def, c.encoder, k_enc, obs)
        features = encoder_def.apply({"params": encoder_params}, obs)
        actor_params = {"actor": actor_def.init(k_actor, features)["params"]}
        critic_params = {
            "encoder": encoder_params,
            "critic": critic_def.init(k_critic, features, jnp.zeros((1, arm_dim)))["params"],
        }
        temp_params = {"log_alpha": jnp.asarray(np.log(c.init_temperature), jnp.float32)}

        state = make_train_state
        grasp_state = target_grasp = None
        if grasp_def is not None:
            grasp_params = {"grasp_critic": grasp_def.init(k_grasp, features)["params"]}
            grasp_state = state(grasp_params, c.critic_lr)
            target_grasp = jax.tree.map(jnp.copy, grasp_params["grasp_critic"])
        return cls(
            actor=state(actor_params, c.actor_lr),
            critic=state(critic_params, c.critic_lr),
            target_critic=jax.tree.map(jnp.copy, critic_params["critic"]),  # own buffers (donation)
            temperature=state(temp_params, c.temp_lr),
            grasp_critic=grasp_state,
            target_grasp_critic=target_grasp,
            rng=rng,
            config=FrozenConfigDict(c),
            encoder_def=encoder_def,
            actor_def=actor_def,
            critic_def=critic_def,
            target_critic_def=target_critic_def,
            grasp_def=grasp_def,
            target_entropy=target_entropy,
        )

    # ------------------------------------------------------------------ acting

    def policy(self) -> Policy:
        """The actor's view (only what acting needs: no critics, no optimizer state)."""
        params = {"encoder": self.critic.params["encoder"], "actor": self.actor.params["actor"]}
        if self.grasp_critic is not None:
            params["grasp_critic"] = self.grasp_critic.params["grasp_critic"]
        return Policy(params, self.encoder_def, self.actor_def, self.grasp_def, float(self.config.grasp_epsilon))

    def with_actor_from(self, policy: Policy) -> SACAgent:
        """This agent acting as `policy` does (a BC policy of the same architecture: the warm
        start of ``agent.init_actor_from``): its encoder becomes the critic's encoder, its actor
        the actor, and its gripper head's outputs the grasp critic's initial Q-values (online and
        target), so the gripper starts with BC's choice. Critics and temperature stay as
        initialised; optimizer states stay fresh."""
        mine = {"encoder": self.critic.params["encoder"], "actor": self.actor.params["actor"]}
        if self.grasp_critic is not None:
            mine["grasp_critic"] = self.grasp_critic.params["grasp_critic"]
        shapes = lambda tree: jax.tree.map(lambda x: (tuple(np.shape(x)), str(np.asarray(x).dtype)), tree)  # noqa: E731
        if set(policy.params) != set(mine) or shapes({k: policy.params[k] for k in mine}) != shapes(mine):
            raise ValueError(
                "the policy to start the actor from does not fit this agent: train it with the same "
                "experiment config (agent.hidden_dims, activation, actor_layer_norm, encoder, image "
                "keys and learned_gripper)")
        own = lambda tree: jax.tree.map(jnp.array, tree)  # noqa: E731  (own buffers: updates donate them)
        agent = self.replace(critic=self.critic.replace(params={**self.critic.params, "encoder": own(policy.params["encoder"])}),
                             actor=self.actor.replace(params={"actor": own(policy.params["actor"])}))
        if self.grasp_critic is not None:
            head = policy.params["grasp_critic"]
            agent = agent.replace(grasp_critic=self.grasp_critic.replace(params={"grasp_critic": own(head)}),
                                  target_grasp_critic=own(head))
        return agent

    # ------------------------------------------------------------------ learning

    def _encode(self, encoder_params: Params, observations: dict) -> jax.Array:
        return self.encoder_def.apply({"params": encoder_params}, observations)

    def _arm_actions(self, actions: jax.Array) -> jax.Array:
        return actions[..., :-1] if self.grasp_def is not None else actions

    def _augment(self, key: jax.Array, batch: Batch) -> Batch:
        if self.config.augmentation == "none" or not self.config.image_keys:
            return batch
        if self.config.augmentation != "random_shift":
            raise ValueError(f"unknown augmentation {self.config.augmentation!r}")
        new = dict(batch)
        for field in ("observations", "next_observations"):
            obs = dict(batch[field])
            for cam in self.config.image_keys:
                key, sub = jax.random.split(key)
                obs[cam] = random_shift(sub, obs[cam], self.config.shift_pad)
            new[field] = obs
        return new

    def _target_q(self, features: jax.Array, actions: jax.Array, key: jax.Array) -> jax.Array:
        """Target critics on a random subset of M distinct members (REDQ): -> (M, B)."""
        params = self.target_critic
        if self.target_critic_def.num < self.config.num_qs:  # M == N: all of them, no gather
            subset = jax.random.choice(key, self.config.num_qs, (self.target_critic_def.num,), replace=False)
            params = jax.tree.map(lambda p: p[subset], params)
        return self.target_critic_def.apply({"params": params}, features, actions)

    def _update_critic(self, batch: Batch, key: jax.Array) -> tuple[SACAgent, dict]:
        c = self.config
        k_next, k_subset = jax.random.split(key)
        encoder_params = self.critic.params["encoder"]
        next_features = jax.lax.stop_gradient(self._encode(encoder_params, batch["next_observations"]))
        next_dist = self.actor_def.apply({"params": self.actor.params["actor"]}, next_features)
        next_actions, next_log_probs = next_dist.sample_and_log_prob(seed=k_next)
        next_q = self._target_q(next_features, next_actions, k_subset)
        rewards = batch["rewards"] + c.reward_bias
        target = losses.td_target(
            rewards, batch["masks"], next_q, next_log_probs, c.discount,
            jnp.exp(self.temperature.params["log_alpha"]), c.backup_entropy,
        )
        arm_actions = self._arm_actions(batch["actions"])

        def loss_fn(params):
            features = self._encode(params["encoder"], batch["observations"])
            q = self.critic_def.apply({"params": params["critic"]}, features, arm_actions)
            return losses.critic_loss(q, target)

        grads, info = jax.grad(loss_fn, has_aux=True)(self.critic.params)
        critic = self.critic.apply_gradients(grads=grads)
        target_critic = jax.tree.map(
            functools.partial(losses.polyak, tau=c.tau), self.target_critic, critic.params["critic"]
        )
        agent = self.replace(critic=critic, target_critic=target_critic)
        if self.grasp_def is not None:
            agent, grasp_info = agent._update_grasp_critic(batch, next_features)
            info = {**info, **grasp_info}
        return agent, info

    def _update_grasp_critic(self, batch: Batch, next_features: jax.Array) -> tuple[SACAgent, dict]:
        c = self.config
        features = jax.lax.stop_gradient(self._encode(self.critic.params["encoder"], batch["observations"]))
        grasp_actions = jnp.clip(jnp.round(batch["actions"][..., -1]) + 1, 0, 2).astype(jnp.int32)
        penalty = batch.get("grasp_penalty", jnp.zeros_like(batch["rewards"]))
        apply = self.grasp_def.apply
        target = losses.grasp_double_dqn_target(
            batch["rewards"] + c.reward_bias, penalty, batch["masks"],
            apply({"params": self.grasp_critic.params["grasp_critic"]}, next_features),
            apply({"params": self.target_grasp_critic}, next_features),
            c.discount,
        )

        def loss_fn(params):
            return losses.grasp_critic_loss(apply({"params": params["grasp_critic"]}, features), grasp_actions, target)

        grads, info = jax.grad(loss_fn, has_aux=True)(self.grasp_critic.params)
        info = {**info, "grasp_penalty_mean": penalty.mean()}  # shows the penalty reached the update
        grasp = self.grasp_critic.apply_gradients(grads=grads)
        target_grasp = jax.tree.map(
            functools.partial(losses.polyak, tau=c.tau), self.target_grasp_critic, grasp.params["grasp_critic"]
        )
        return self.replace(grasp_critic=grasp, target_grasp_critic=target_grasp), info

    def _update_actor(self, batch: Batch, key: jax.Array) -> tuple[SACAgent, dict]:
        features = jax.lax.stop_gradient(self._encode(self.critic.params["encoder"], batch["observations"]))
        temperature = jnp.exp(self.temperature.params["log_alpha"])

        def loss_fn(params):
            dist = self.actor_def.apply({"params": params["actor"]}, features)
            actions, log_probs = dist.sample_and_log_prob(seed=key)
            q = self.critic_def.apply({"params": self.critic.params["critic"]}, features, actions)
            return losses.actor_loss(q, log_probs, temperature)

        grads, info = jax.grad(loss_fn, has_aux=True)(self.actor.params)
        return self.replace(actor=self.actor.apply_gradients(grads=grads)), info

    def _update_temperature(self, entropy: jax.Array) -> tuple[SACAgent, dict]:
        def loss_fn(params):
            return losses.temperature_loss(jnp.exp(params["log_alpha"]), entropy, self.target_entropy)

        grads, info = jax.grad(loss_fn, has_aux=True)(self.temperature.params)
        return self.replace(temperature=self.temperature.apply_gradients(grads=grads)), info

    @functools.partial(jax.jit, donate_argnums=0)
    def update(self, batch: Batch) -> tuple[SACAgent, dict[str, jax.Array]]:
        """`utd_ratio` critic updates (lax.scan) + one actor and one temperature update.

        `batch` leaves have a leading axis of utd_ratio * batch_size, or are already split as
        (utd_ratio, batch_size, ...). Returns the new agent and a flat dict of scalar metrics
        (critic metrics averaged over the UTD steps).
        """
        utd = self.config.utd_ratio
        if batch["actions"].ndim == 2:
            batch = jax.tree.map(lambda x: x.reshape(utd, x.shape[0] // utd, *x.shape[1:]), batch)
        rng, k_aug, k_critic, k_actor = jax.random.split(self.rng, 4)
        batch = jax.vmap(self._augment)(jax.random.split(k_aug, utd), batch)

        def critic_step(agent, inputs):
            minibatch, key = inputs
            return agent._update_critic(minibatch, key)

        agent, critic_info = jax.lax.scan(critic_step, self, (batch, jax.random.split(k_critic, utd)))
        last = jax.tree.map(lambda x: x[-1], batch)
        agent, actor_info = agent._update_actor(last, k_actor)
        agent, temp_info = agent._update_temperature(actor_info["entropy"])
        metrics = {**jax.tree.map(jnp.mean, critic_info), **actor_info, **temp_info}
        return agent.replace(rng=rng), metrics

    def update_for_step(self, batch: Batch, step: int) -> tuple[SACAgent, dict[str, jax.Array]]:
        """The update of learner step `step` (0-based): :meth:`update_critics_only` during the
        first ``critic_warmup_steps``, :meth:`update` after them."""
        if step < self.config.critic_warmup_steps:
            return self.update_critics_only(batch)
        return self.update(batch)

    @functools.partial(jax.jit, donate_argnums=0)
    def update_critics_only(self, batch: Batch) -> tuple[SACAgent, dict[str, jax.Array]]:
        """Critic (and grasp critic) updates only, over a (utd, B, ...) or flat batch."""
        utd = self.config.utd_ratio
        if batch["actions"].ndim == 2:
            batch = jax.tree.map(lambda x: x.reshape(utd, x.shape[0] // utd, *x.shape[1:]), batch)
        rng, k_aug, k_critic = jax.random.split(self.rng, 3)
        batch = jax.vmap(self._augment)(jax.random.split(k_aug, utd), batch)
        agent, info = jax.lax.scan(
            lambda a, inp: a._update_critic(*inp), self, (batch, jax.random.split(k_critic, utd))
        )
        return agent.replace(rng=rng), jax.tree.map(jnp.mean, info)
