"""SAC / RLPD / DrQ / learned-gripper / BC agents: mechanics, not just that they run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util
from gymnasium import spaces

from serl_launcher.agents.bc import BCAgent, bc_config
from serl_launcher.agents.sac import SACAgent, drq_config, rlpd_config, sac_config
from serl_launcher.networks.encoders import (
    FROZEN_BACKBONE,
    ResNet10,
    load_backbone_params,
    random_shift,
    save_backbone_params,
)

STATE_SPACE = spaces.Dict({"state": spaces.Box(-1, 1, (6,), np.float32)})
ACTION_SPACE = spaces.Box(-1, 1, (4,), np.float32)


def image_space(size=32):
    return spaces.Dict({
        "state": spaces.Box(-1, 1, (6,), np.float32),
        "front": spaces.Box(0, 255, (size, size, 3), np.uint8),
        "wrist": spaces.Box(0, 255, (size, size, 3), np.uint8),
    })


def random_batch(obs_space, n, action_dim=4, seed=0, gripper=False):
    rng = np.random.default_rng(seed)

    def obs():
        out = {}
        for key, space in obs_space.spaces.items():
            if space.dtype == np.uint8:
                out[key] = rng.integers(0, 256, (n, *space.shape), dtype=np.uint8)
            else:
                out[key] = rng.uniform(-1, 1, (n, *space.shape)).astype(np.float32)
        return out

    actions = rng.uniform(-1, 1, (n, action_dim)).astype(np.float32)
    if gripper:
        actions[:, -1] = rng.integers(-1, 2, n)
    return {
        "observations": obs(), "next_observations": obs(), "actions": actions,
        "rewards": rng.integers(0, 2, n).astype(np.float32), "masks": np.ones(n, np.float32),
        "dones": np.zeros(n, bool), "grasp_penalty": np.where(rng.uniform(size=n) < 0.3, -0.02, 0.0).astype(np.float32),
    }


def small(config, **overrides):
    config.hidden_dims = (32, 32)
    config.batch_size = 8
    for key, value in overrides.items():
        config[key] = value
    return config


def leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_update_changes_every_network_and_reports_finite_metrics():
    agent = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, small(rlpd_config(), utd_ratio=3))
    before = agent.replace()  # shallow copy of the pytree (donation invalidates the original)
    before = jax.tree.map(np.asarray, before)
    agent, metrics = agent.update(random_batch(STATE_SPACE, 3 * 8))
    assert set(metrics) >= {"critic_loss", "actor_loss", "temperature", "entropy", "q_mean"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    for name in ("actor", "critic", "temperature"):
        assert not leaves_equal(getattr(before, name).params, getattr(agent, name).params), name
    assert not leaves_equal(before.target_critic, agent.target_critic)
    assert int(agent.critic.step) == 3 and int(agent.actor.step) == 1 and int(agent.temperature.step) == 1


def test_critic_only_update_leaves_actor_and_temperature_untouched():
    agent = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, small(sac_config(), utd_ratio=2))
    before = jax.tree.map(np.asarray, agent)
    agent, _ = agent.update_critics_only(random_batch(STATE_SPACE, 16))
    assert leaves_equal(before.actor, agent.actor)  # params and optimizer state
    assert leaves_equal(before.temperature, agent.temperature)
    assert not leaves_equal(before.critic.params, agent.critic.params)


def test_target_uses_m_distinct_critics():
    agent = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, small(rlpd_config()))
    num_qs = agent.config.num_qs

    def constant_critic(path, leaf):  # critic i outputs exactly i: zero weights, output bias i
        if path[-1] == "bias" and leaf.shape[-1] == 1:
            return jnp.arange(num_qs, dtype=leaf.dtype).reshape(num_qs, 1)
        return jnp.zeros_like(leaf)

    agent = agent.replace(target_critic=traverse_util.path_aware_map(constant_critic, agent.target_critic))
    features, actions = jnp.zeros((5, 6)), jnp.zeros((5, 4))
    target_q = jax.jit(agent._target_q)
    seen = set()
    for i in range(300):
        q = np.asarray(target_q(features, actions, jax.random.PRNGKey(i)))
        assert q.shape == (2, 5)
        members = tuple(q[:, 0].astype(int))
        assert members[0] != members[1], f"key {i} drew critic {members[0]} twice"
        seen.update(members)
    assert seen == set(range(num_qs))


def test_no_recompilation_after_first_step():
    agent = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, small(sac_config(), utd_ratio=2))
    policy = agent.policy()
    act = type(policy).act
    sizes = []
    for seed in range(4):
        agent, _ = agent.update(random_batch(STATE_SPACE, 16, seed=seed))
        policy = policy.replace(params=agent.policy().params)  # as an actor swaps in new params
        policy.sample_actions({"state": np.full(6, 0.1 * seed, np.float32)}, jax.random.PRNGKey(seed))
        sizes.append((SACAgent.update._cache_size(), act._cache_size()))
    assert sizes[1:] == [sizes[0]] * 3, f"recompiled after the first step: {sizes}"


def test_learned_gripper_agent():
    agent = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE,
                            small(sac_config(), learned_gripper=True, grasp_epsilon=0.0))
    assert agent.actor_def.action_dim == 3 and agent.target_entropy == -1.5
    before = jax.tree.map(np.asarray, agent.grasp_critic.params)
    agent, metrics = agent.update(random_batch(STATE_SPACE, 8, gripper=True))
    assert "grasp_critic_loss" in metrics and np.isfinite(float(metrics["grasp_critic_loss"]))
    assert not leaves_equal(before, agent.grasp_critic.params)
    actions = agent.policy().act({"state": jnp.zeros((16, 6))}, jax.random.PRNGKey(0))
    assert actions.shape == (16, 4)
    assert set(np.asarray(actions[:, -1]).tolist()) <= {-1.0, 0.0, 1.0}


def test_grasp_critic_learns_toggle_penalty():
    """With only the penalty as reward, the grasp critic must prefer the un-penalised action."""
    agent = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE,
                            small(sac_config(), learned_gripper=True, utd_ratio=4, discount=0.0))
    batch = random_batch(STATE_SPACE, 32, gripper=True)
    batch["rewards"][:] = 0.0
    batch["grasp_penalty"] = np.where(batch["actions"][:, -1] != 0, -1.0, 0.0).astype(np.float32)
    batch = jax.tree.map(lambda x: np.concatenate([x] * 4), batch)
    for _ in range(150):
        agent, _ = agent.update(batch)
    q = agent.grasp_def.apply({"params": agent.grasp_critic.params["grasp_critic"]}, jnp.asarray(batch["observations"]["state"]))
    assert np.mean(np.argmax(np.asarray(q), -1) == 1) > 0.9  # "stay"


def test_drq_image_agent_trains_encoder_and_freezes_backbone(tmp_path):
    obs_space = image_space(16)
    config = small(drq_config(), utd_ratio=2)
    config.encoder.backbone = "resnet10"
    config.encoder.freeze_backbone = True
    config.encoder.bottleneck_dim = 16
    config.encoder.state_dim = 8
    # Pretrained weights from a file the user gives: write some, then load them.
    weights = ResNet10().init(jax.random.PRNGKey(7), jnp.zeros((1, 16, 16, 3), jnp.uint8))["params"]
    config.encoder.pretrained_path = str(save_backbone_params(tmp_path / "resnet10.npz", weights))
    agent = SACAgent.create(jax.random.PRNGKey(0), obs_space, ACTION_SPACE, config)
    assert agent.config.image_keys == ("front", "wrist")
    frozen = jax.tree.map(np.asarray, agent.critic.params["encoder"][FROZEN_BACKBONE])
    assert leaves_equal(frozen, weights)
    trainable = jax.tree.map(np.asarray, {k: v for k, v in agent.critic.params["encoder"].items() if k != FROZEN_BACKBONE})
    # The frozen backbone has no optimizer state (no Adam moments for 4.9 M unused weights).
    opt_leaves = sum(x.size for x in jax.tree.leaves(agent.critic.opt_state))
    trainable_size = sum(x.size for x in jax.tree.leaves(agent.critic.params)) - sum(x.size for x in jax.tree.leaves(frozen))
    assert opt_leaves <= 2 * trainable_size + 10

    for seed in range(2):
        agent, metrics = agent.update(random_batch(obs_space, 16, seed=seed))
    assert np.isfinite(float(metrics["critic_loss"]))
    assert leaves_equal(frozen, agent.critic.params["encoder"][FROZEN_BACKBONE])
    after = {k: v for k, v in agent.critic.params["encoder"].items() if k != FROZEN_BACKBONE}
    assert not leaves_equal(trainable, after)


def test_pretrained_weights_file_errors(tmp_path):
    weights = ResNet10().init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.uint8))["params"]
    with pytest.raises(FileNotFoundError, match="not found"):
        load_backbone_params(tmp_path / "missing.npz", weights)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        load_backbone_params(tmp_path / "junk.npz", weights)
    other = ResNet10(num_filters=32).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.uint8))["params"]
    path = save_backbone_params(tmp_path / "small.npz", other)
    with pytest.raises(ValueError, match="shape"):
        load_backbone_params(path, weights)


def test_resnet10_output_shape():
    out = ResNet10().apply(
        ResNet10().init(jax.random.PRNGKey(0), jnp.zeros((1, 128, 128, 3), jnp.uint8)),
        jnp.zeros((2, 128, 128, 3), jnp.uint8),
    )
    assert out.shape == (2, 4, 4, 512)


def test_random_shift_is_a_crop_of_the_edge_padded_image():
    images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (6, 12, 12, 3)), jnp.uint8)
    shifted = np.asarray(random_shift(jax.random.PRNGKey(0), images, pad=2))
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    offsets = []
    for i in range(6):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if np.array_equal(padded[i, dy:dy + 12, dx:dx + 12], shifted[i])]
        assert matches, f"image {i} is not a crop of its padded version"
        offsets.append(matches[0])
    assert len(set(offsets)) > 1  # independent per image


def test_bc_agent_fits_demonstrations():
    agent = BCAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, small(bc_config()))
    rng = np.random.default_rng(0)
    states = rng.uniform(-1, 1, (64, 6)).astype(np.float32)
    actions = np.tanh(states[:, :4] * 2).astype(np.float32)  # a function of the state
    batch = {"observations": {"state": states}, "actions": actions}
    _, first = agent.update(batch)
    agent = BCAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, small(bc_config(), lr=3e-3))
    for _ in range(600):
        agent, metrics = agent.update(batch)
    assert float(metrics["bc_loss"]) < float(first["bc_loss"]) - 1.0
    predicted = agent.policy().act({"state": jnp.asarray(states)}, jax.random.PRNGKey(0), deterministic=True)
    assert float(jnp.mean((predicted - actions) ** 2)) < 0.02


def test_bc_trains_the_image_encoder_and_the_gripper_head():
    """BC from pixels with a learned gripper: the encoder's weights move (the BC loss trains
    them), and the gripper head learns which of open / stay / close the demos chose."""
    space = image_space(16)
    config = small(bc_config(), learned_gripper=True, lr=3e-3)
    config.encoder.backbone, config.encoder.pooling = "patch", "avg"
    agent = BCAgent.create(jax.random.PRNGKey(0), space, ACTION_SPACE, config)
    before = jax.tree.map(np.array, agent.state.params["encoder"])
    rng = np.random.default_rng(0)
    n = 48
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    grip = np.where(images[:, :, :, 0].mean(axis=(1, 2)) > 127, 1.0, -1.0)  # seen only in the image
    states = rng.uniform(-1, 1, (n, 6)).astype(np.float32)
    batch = {"observations": {"state": states, "front": images, "wrist": images},
             "actions": np.concatenate([np.zeros((n, 3)), grip[:, None]], axis=1).astype(np.float32)}
    for _ in range(300):
        agent, metrics = agent.update(batch)
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before),
                                                    jax.tree.leaves(agent.state.params["encoder"]), strict=True)]
    assert all(moved), "every encoder weight should be trained by the BC loss"
    assert float(metrics["gripper_accuracy"]) > 0.95
    acted = agent.policy().act(batch["observations"], jax.random.PRNGKey(1), deterministic=True)
    np.testing.assert_array_equal(np.asarray(acted[:, -1]), grip)


def test_sac_starts_from_a_bc_policy():
    from serl_launcher.agents.bc import bc_config_for

    sac = small(sac_config(), learned_gripper=True)
    bc = BCAgent.create(jax.random.PRNGKey(5), STATE_SPACE, ACTION_SPACE, bc_config_for(sac))
    agent = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, sac)
    obs = {"state": jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (16, 6)), jnp.float32)}
    key = jax.random.PRNGKey(2)
    assert not np.allclose(agent.policy().act(obs, key, True), bc.policy().act(obs, key, True))
    started = agent.with_actor_from(bc.policy())
    np.testing.assert_array_equal(started.policy().act(obs, key, True), bc.policy().act(obs, key, True))
    assert leaves_equal(started.target_critic, agent.target_critic)  # the critics are untouched
    started, _ = started.update(random_batch(STATE_SPACE, 16, gripper=True))  # and it trains
    warm = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE,
                           small(sac_config(), learned_gripper=True, critic_warmup_steps=2)).with_actor_from(bc.policy())
    actor = jax.tree.map(np.array, warm.actor.params)
    critic = jax.tree.map(np.array, warm.critic.params)
    for step in range(2):  # the critic warm-up: the BC actor is kept while the critics learn
        warm, _ = warm.update_for_step(random_batch(STATE_SPACE, 16, seed=step, gripper=True), step)
    assert leaves_equal(warm.actor.params, actor) and not leaves_equal(warm.critic.params, critic)
    warm, _ = warm.update_for_step(random_batch(STATE_SPACE, 16, seed=2, gripper=True), 2)
    assert not leaves_equal(warm.actor.params, actor)
    other = BCAgent.create(jax.random.PRNGKey(5), STATE_SPACE, ACTION_SPACE, small(bc_config(), hidden_dims=(16, 16)))
    with pytest.raises(ValueError, match="does not fit this agent"):
        agent.with_actor_from(other.policy())


def test_adam_state_is_per_network():
    agent = SACAgent.create(jax.random.PRNGKey(0), STATE_SPACE, ACTION_SPACE, small(sac_config()))
    # Each TrainState's optimizer state covers exactly its own parameters.
    for name in ("actor", "critic", "temperature"):
        state = getattr(agent, name)
        adam_states = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
                       if isinstance(s, optax.ScaleByAdamState)]
        assert adam_states, name
        mu_size = sum(x.size for s in adam_states for x in jax.tree.leaves(s.mu))
        assert mu_size == sum(x.size for x in jax.tree.leaves(state.params)), name


@pytest.mark.parametrize("num_classes", [2, 3])
def test_classifier_head_shapes_and_learns_a_visual_rule(num_classes):
    import optax

    from serl_launcher.networks.encoders import Classifier, ObservationEncoder

    model = Classifier(ObservationEncoder(image_keys=("front",), bottleneck_dim=16, use_state=False),
                       num_classes=num_classes, hidden_dim=32)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, 64)
    images = np.zeros((64, 16, 16, 3), np.uint8)
    images[..., 0] = (labels * 100)[:, None, None]  # the label is the red level
    obs = {"front": jnp.asarray(images)}
    params = model.init(jax.random.PRNGKey(0), obs)["params"]
    logits = model.apply({"params": params}, obs)
    assert logits.shape == ((64,) if num_classes == 2 else (64, num_classes))
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    def loss_fn(p):
        out = model.apply({"params": p}, obs)
        if num_classes == 2:
            return optax.sigmoid_binary_cross_entropy(out, labels).mean()
        return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()

    step = jax.jit(lambda p, o: (lambda g: (optax.apply_updates(p, tx.update(g, o, p)[0]), tx.update(g, o, p)[1]))(jax.grad(loss_fn)(p)))
    for _ in range(100):
        params, opt = step(params, opt)
    out = np.asarray(model.apply({"params": params}, obs))
    predicted = (out > 0).astype(int) if num_classes == 2 else out.argmax(-1)
    assert (predicted == labels).mean() > 0.95
