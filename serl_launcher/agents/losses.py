"""SAC / RLPD / grasp-critic / BC losses as pure functions. Each is unit-tested against values
computed by hand in tests/test_losses.py.

Notation: Q_i critics (i = 1..N), Q-bar target critics, pi the tanh-Gaussian policy,
alpha the temperature, gamma the discount, m = mask = 1 - terminal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def td_target(
    rewards: jax.Array,
    masks: jax.Array,
    next_q: jax.Array,
    next_log_probs: jax.Array,
    discount: float,
    temperature: jax.Array | float,
    backup_entropy: bool,
) -> jax.Array:
    """Soft Bellman target (Haarnoja et al. 2018, eq. 3; REDQ/RLPD min over a subset).

        y = r + gamma * m * (min_{i in S} Q-bar_i(s', a') - [backup_entropy] alpha * log pi(a'|s'))

    with a' ~ pi(.|s'). Unlike the original HIL-SERL code, the entropy term sits inside the
    discount, as in the soft value function it comes from.

    Shapes: rewards, masks, next_log_probs (B,); next_q (M, B) for the M sampled target critics.
    """
    next_v = next_q.min(axis=0)
    if backup_entropy:
        next_v = next_v - temperature * next_log_probs
    return rewards + discount * masks * next_v


def critic_loss(q: jax.Array, target: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_Q = 1/(N B) sum_i sum_b (Q_i(s_b, a_b) - y_b)^2. q (N, B), target (B,) (no gradient)."""
    target = jax.lax.stop_gradient(target)
    loss = jnp.mean((q - target[None]) ** 2)
    return loss, {"critic_loss": loss, "q_mean": q.mean(), "target_mean": target.mean()}


def actor_loss(
    q: jax.Array, log_probs: jax.Array, temperature: jax.Array | float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_pi = 1/B sum_b [alpha log pi(a~_b|s_b) - 1/N sum_i Q_i(s_b, a~_b)], a~ reparameterised.

    Haarnoja et al. 2018 eq. 7 with the ensemble mean of Q (as RLPD). q (N, B), log_probs (B,).
    """
    loss = jnp.mean(temperature * log_probs - q.mean(axis=0))
    return loss, {"actor_loss": loss, "entropy": -log_probs.mean()}


def temperature_loss(
    temperature: jax.Array, entropy: jax.Array, target_entropy: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Lagrangian form (Haarnoja et al. 2018b eq. 18): L_alpha = alpha * (H - H_target).

    Minimising it raises alpha while the policy entropy H is below the target and lowers it above.
    `entropy` is the batch estimate -mean log pi (no gradient).
    """
    loss = temperature * (jax.lax.stop_gradient(entropy) - target_entropy)
    return loss, {"temperature_loss": loss, "temperature": temperature}


def grasp_double_dqn_target(
    rewards: jax.Array,
    grasp_penalty: jax.Array,
    masks: jax.Array,
    next_q_online: jax.Array,
    next_q_target: jax.Array,
    discount: float,
) -> jax.Array:
    """Double DQN (van Hasselt et al. 2016) for the gripper critic:

        g* = argmax_g Q_theta(s', g),   y = r + p_grasp + gamma * m * Q-bar(s', g*).

    The toggle penalty p_grasp (<= 0 when the gripper command changes its state) enters only this
    critic's reward. next_q_online, next_q_target (B, G); others (B,).
    """
    best = jnp.argmax(next_q_online, axis=-1)
    next_q = jnp.take_along_axis(next_q_target, best[:, None], axis=-1)[:, 0]
    return rewards + grasp_penalty + discount * masks * next_q


def grasp_critic_loss(
    q: jax.Array, actions: jax.Array, target: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_g = 1/B sum_b (Q(s_b, g_b) - y_b)^2. q (B, G), actions (B,) int in [0, G), target (B,)."""
    q_taken = jnp.take_along_axis(q, actions[:, None], axis=-1)[:, 0]
    loss = jnp.mean((q_taken - jax.lax.stop_gradient(target)) ** 2)
    return loss, {"grasp_critic_loss": loss, "grasp_q_mean": q_taken.mean()}


def bc_loss(log_probs: jax.Array, mode: jax.Array, actions: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Behaviour cloning: L = -1/B sum_b log pi(a_b|s_b). Also reports mse(mode, a)."""
    loss = -log_probs.mean()
    return loss, {"bc_loss": loss, "mse": jnp.mean((mode - actions) ** 2)}


def polyak(target: jax.Array, online: jax.Array, tau: float) -> jax.Array:
    """theta-bar <- tau * theta + (1 - tau) * theta-bar (one leaf; use with jax.tree.map)."""
    return tau * online + (1.0 - tau) * target
