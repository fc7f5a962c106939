"""Pretrained ResNet-10 converters (scripts/convert_resnet10.py): files written here in HIL-SERL's
flax pickle layout and in LeRobot's PyTorch (safetensors) layout convert to exactly the weights
they hold, the PyTorch kernels keep their meaning (checked against the convolution as PyTorch
defines it), hostile or foreign files are refused, and a frozen backbone needs weights."""

import pickle
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO
from flax import traverse_util
from flax.core import FrozenDict
from gymnasium import spaces

from serl_launcher.networks.encoders import ResNet10, load_backbone_params
from serl_launcher.networks.pretrained import WeightsFormatError, convert, from_torch

SCRIPT = str(REPO / "scripts/convert_resnet10.py")
OURS_TO_HIL_SERL = {"conv1": "Conv_0", "GroupNorm_0": "MyGroupNorm_0", "conv2": "Conv_1",
                    "GroupNorm_1": "MyGroupNorm_1", "proj": "conv_proj", "proj_norm": "norm_proj"}
OURS_TO_TORCH = {"conv1": "conv1.conv", "GroupNorm_0": "norm1.group_norm", "conv2": "conv2.conv",
                 "GroupNorm_1": "norm2.group_norm", "proj": "shortcut.0.conv", "proj_norm": "shortcut.1.group_norm"}


@pytest.fixture(scope="module")
def weights():
    params = ResNet10().init(jax.random.PRNGKey(3), jnp.zeros((1, 32, 32, 3), jnp.uint8))["params"]
    # Random norms too (init is ones / zeros, which would hide a scale <-> bias swap).
    rng = np.random.default_rng(0)
    return {k: (rng.normal(size=v.shape).astype(np.float32) if not k.endswith("kernel") else np.asarray(v))
            for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def hil_serl_tree(flat):
    """The original's parameter tree: FrozenDict of jax arrays, its module names."""
    tree = {"conv_init": {"kernel": jnp.asarray(flat["stem/kernel"])},
            "norm_init": {"scale": jnp.asarray(flat["stem_norm/scale"]), "bias": jnp.asarray(flat["stem_norm/bias"])}}
    for key, value in flat.items():
        if key.startswith("ResNetBlock_"):
            block, module, leaf = key.split("/")
            tree.setdefault(block, {}).setdefault(OURS_TO_HIL_SERL[module], {})[leaf] = jnp.asarray(value)
    return FrozenDict(tree)


def torch_state(flat, prefix=""):
    """LeRobot's PyTorch ResNet-10 state dict: (out, in, H, W) kernels, its module names."""
    oihw = lambda k: np.ascontiguousarray(np.transpose(k, (3, 2, 0, 1)))  # noqa: E731
    state = {"embedder.0.weight": oihw(flat["stem/kernel"]), "embedder.1.group_norm.weight": flat["stem_norm/scale"],
             "embedder.1.group_norm.bias": flat["stem_norm/bias"]}
    for key, value in flat.items():
        if key.startswith("ResNetBlock_"):
            block, module, leaf = key.split("/")
            base = f"encoder.stages.{block.split('_')[1]}.{OURS_TO_TORCH[module]}"
            if leaf == "kernel":
                state[base + ".weight"] = oihw(value)
            else:
                state[base + (".weight" if leaf == "scale" else ".bias")] = value
    return {prefix + k: v for k, v in state.items()}


def converted(path, python, subprocess_env, tmp_path):
    out = tmp_path / f"{path.stem}.npz"
    result = subprocess.run([python, SCRIPT, "--input", str(path), "--output", str(out)],
                            capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4,905,792 parameters" in result.stdout and "agent.encoder.pretrained_path" in result.stdout
    like = ResNet10().init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.uint8))["params"]
    return traverse_util.flatten_dict(load_backbone_params(out, like), sep="/")


def test_hil_serl_pickle_converts_to_the_weights_it_holds(tmp_path, weights, python, subprocess_env):
    path = tmp_path / "resnet10_params.pkl"
    path.write_bytes(pickle.dumps(hil_serl_tree(weights)))
    loaded = converted(path, python, subprocess_env, tmp_path)
    assert set(loaded) == set(weights)
    for key in weights:
        np.testing.assert_array_equal(np.asarray(loaded[key]), weights[key], err_msg=key)
    # numpy arrays in a plain dict under "params" (another way such a file is saved) work too
    plain = {"params": {k: {kk: {kkk: np.asarray(vvv) for kkk, vvv in vv.items()} if isinstance(vv, dict) else np.asarray(vv)
                            for kk, vv in v.items()} for k, v in hil_serl_tree(weights).unfreeze().items()}}
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps(plain))
    again = convert(tmp_path / "plain.pkl")
    np.testing.assert_array_equal(again["ResNetBlock_2/proj/kernel"], weights["ResNetBlock_2/proj/kernel"])


def test_lerobot_safetensors_converts_and_keeps_the_convolutions_meaning(tmp_path, weights, python, subprocess_env):
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file(torch_state(weights, prefix="encoder.image_enc_layers."), str(path))  # embedded in a checkpoint
    loaded = converted(path, python, subprocess_env, tmp_path)
    for key in weights:
        np.testing.assert_array_equal(np.asarray(loaded[key]), weights[key], err_msg=key)

    # The stem as PyTorch defines Conv2d(3, 64, 7, stride=2, padding=3, bias=False) on a (C, H, W)
    # image, against our flax conv with the converted kernel.
    import flax.linen as nn

    torch_weight = torch_state(weights)["embedder.0.weight"]  # (out, in, 7, 7)
    image = np.random.default_rng(1).normal(size=(3, 12, 12)).astype(np.float32)
    padded = np.pad(image, ((0, 0), (3, 3), (3, 3)))
    expected = np.zeros((64, 6, 6), np.float32)
    for y in range(6):
        for x in range(6):
            expected[:, y, x] = np.einsum("oikl,ikl->o", torch_weight, padded[:, 2 * y:2 * y + 7, 2 * x:2 * x + 7])
    stem = nn.Conv(64, (7, 7), strides=2, use_bias=False, padding=[(3, 3), (3, 3)])
    ours = stem.apply({"params": {"kernel": loaded["stem/kernel"]}}, image.transpose(1, 2, 0)[None])[0]
    np.testing.assert_allclose(np.asarray(ours).transpose(2, 0, 1), expected, rtol=1e-4, atol=1e-4)


def convert_fails_cleanly(path) -> bool:
    try:
        convert(path)
    except WeightsFormatError:
        return True
    return False


class Hostile:
    def __reduce__(self):
        return (subprocess.call, (["touch", "/tmp/pwned-by-pickle"],))


def test_foreign_and_hostile_weight_files_are_refused(tmp_path, weights):
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"conv_init": Hostile()}))
    with pytest.raises(WeightsFormatError, match="wants subprocess.call.*refusing to load it"):
        convert(bad)
    from collections import OrderedDict

    for hostile in (np.array([1, "x"], dtype=object),  # object arrays hold pointers: never built
                    OrderedDict([("conv_init", np.zeros(2, np.float32))])):
        (tmp_path / "objects.pkl").write_bytes(pickle.dumps({"conv_init": {"kernel": hostile}}))
        if hostile.__class__ is OrderedDict:
            assert convert_fails_cleanly(tmp_path / "objects.pkl")  # a dict of arrays is fine, the layout is not
        else:
            with pytest.raises(WeightsFormatError, match="dtype .*weights are numbers only"):
                convert(tmp_path / "objects.pkl")
    (tmp_path / "p5.pkl").write_bytes(pickle.dumps(hil_serl_tree(weights).unfreeze(), protocol=5))
    np.testing.assert_array_equal(convert(tmp_path / "p5.pkl")["stem/kernel"], weights["stem/kernel"])
    tree = hil_serl_tree(weights).unfreeze()
    del tree["ResNetBlock_3"]["conv_proj"]
    (tmp_path / "short.pkl").write_bytes(pickle.dumps(tree))
    with pytest.raises(WeightsFormatError, match="missing \\['ResNetBlock_3/proj/kernel'\\]"):
        convert(tmp_path / "short.pkl")
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps(hil_serl_tree(weights))[:5000])
    with pytest.raises(WeightsFormatError, match="not a readable pickle"):
        convert(tmp_path / "cut.pkl")
    state = torch_state(weights)
    state["encoder.stages.1.conv1.conv.weight"] = state["encoder.stages.1.conv1.conv.weight"][:, :32]
    with pytest.raises(WeightsFormatError, match="ResNetBlock_1/conv1/kernel has shape"):
        from serl_launcher.networks.pretrained import check

        check(from_torch(state), "x")
    with pytest.raises(WeightsFormatError, match="no 'embedder.0.weight'"):
        from_torch({"fc.weight": np.zeros((2, 2))})
    nan = dict(weights)
    nan["stem/kernel"] = np.full_like(nan["stem/kernel"], np.nan)
    with pytest.raises(WeightsFormatError, match="not finite"):
        check(nan, "x")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsFormatError, match="not a readable safetensors file"):
        convert(tmp_path / "junk.safetensors")


def test_a_frozen_backbone_without_weights_is_refused_unless_allowed():
    from serl_launcher.agents.sac import SACAgent, drq_config

    obs_space = spaces.Dict({"state": spaces.Box(-1, 1, (3,), np.float32),
                             "front": spaces.Box(0, 255, (16, 16, 3), np.uint8)})
    act_space = spaces.Box(-1, 1, (2,), np.float32)
    config = drq_config()
    config.encoder.backbone = "resnet10"
    config.encoder.freeze_backbone = True
    with pytest.raises(ValueError, match="without agent.encoder.pretrained_path.*convert_resnet10.py"):
        SACAgent.create(jax.random.PRNGKey(0), obs_space, act_space, config)
    config.encoder.allow_random_frozen = True
    SACAgent.create(jax.random.PRNGKey(0), obs_space, act_space, config)
