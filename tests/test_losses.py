"""Each loss against a value computed by hand here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from serl_launcher.agents import losses


def test_td_target_min_over_subset_and_entropy_backup():
    rewards, masks = jnp.array([1.0, 0.0]), jnp.array([1.0, 0.0])
    next_q = jnp.array([[2.0, 3.0], [1.0, 5.0]])  # (M=2, B=2): min per column = [1, 3]
    log_probs = jnp.array([-1.0, -2.0])
    # backup: v = min q - 0.5 * log pi = [1.5, 4.0]; y = r + 0.9 * m * v = [1 + 1.35, 0 + 0]
    y = losses.td_target(rewards, masks, next_q, log_probs, 0.9, 0.5, backup_entropy=True)
    np.testing.assert_allclose(y, [2.35, 0.0], rtol=1e-6)
    y = losses.td_target(rewards, masks, next_q, log_probs, 0.9, 0.5, backup_entropy=False)
    np.testing.assert_allclose(y, [1.9, 0.0], rtol=1e-6)


def test_critic_loss_is_mean_squared_error_over_ensemble_and_batch():
    q = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    loss, info = losses.critic_loss(q, jnp.array([2.0, 2.0]))
    assert float(loss) == pytest.approx((1 + 0 + 1 + 4) / 4)
    assert float(info["q_mean"]) == pytest.approx(2.5)
    # No gradient flows into the target.
    grad = jax.grad(lambda t: losses.critic_loss(q, t)[0])(jnp.array([2.0, 2.0]))
    np.testing.assert_array_equal(grad, [0.0, 0.0])


def test_actor_loss_uses_ensemble_mean_and_temperature():
    q = jnp.array([[1.0, 2.0], [3.0, 4.0]])  # ensemble mean = [2, 3]
    log_probs = jnp.array([-1.0, -2.0])
    loss, info = losses.actor_loss(q, log_probs, 0.5)
    assert float(loss) == pytest.approx(((0.5 * -1 - 2) + (0.5 * -2 - 3)) / 2)  # -3.25
    assert float(info["entropy"]) == pytest.approx(1.5)


def test_temperature_loss_value_and_direction():
    loss, _ = losses.temperature_loss(jnp.asarray(0.2), jnp.asarray(1.5), -2.0)
    assert float(loss) == pytest.approx(0.2 * 3.5)
    # d/d(log alpha) = alpha * (H - H_target): positive when the entropy is above target,
    # so gradient descent lowers alpha; negative below target, raising it.
    grad = lambda h: jax.grad(lambda la: losses.temperature_loss(jnp.exp(la), h, -2.0)[0])(jnp.log(0.2))  # noqa: E731
    assert float(grad(jnp.asarray(1.5))) == pytest.approx(0.7, rel=1e-5)
    assert float(grad(jnp.asarray(-3.0))) == pytest.approx(-0.2, rel=1e-5)


def test_grasp_double_dqn_target_picks_online_argmax_and_target_value():
    rewards, penalty, masks = jnp.array([0.0, 1.0]), jnp.array([-0.02, 0.0]), jnp.array([1.0, 1.0])
    online = jnp.array([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])  # argmax = [1, 0]
    target = jnp.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])  # picks [20, 40], not the max
    y = losses.grasp_double_dqn_target(rewards, penalty, masks, online, target, 0.9)
    np.testing.assert_allclose(y, [-0.02 + 18.0, 1.0 + 36.0], rtol=1e-6)


def test_grasp_critic_loss_on_taken_actions():
    q = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    loss, info = losses.grasp_critic_loss(q, jnp.array([2, 0]), jnp.array([2.0, 5.0]))
    assert float(loss) == pytest.approx(((3 - 2) ** 2 + (4 - 5) ** 2) / 2)
    assert float(info["grasp_q_mean"]) == pytest.approx(3.5)


def test_bc_loss_and_polyak():
    loss, info = losses.bc_loss(jnp.array([-1.0, -3.0]), jnp.array([[0.0], [1.0]]), jnp.array([[1.0], [1.0]]))
    assert float(loss) == pytest.approx(2.0)
    assert float(info["mse"]) == pytest.approx(0.5)
    assert float(losses.polyak(jnp.asarray(10.0), jnp.asarray(0.0), 0.1)) == pytest.approx(9.0)
