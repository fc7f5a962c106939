"""The reward classifier: frames files, the held-out split, metrics, training on sim frames, the
record / train entry points, and the classifier as the env's reward."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from serl_launcher.classifier import (
    FramesFormatError,
    classification_metrics,
    classifier_config,
    load_classifier,
    load_frames,
    save_frames,
    split_by_episode,
    train_classifier,
)

REPO = Path(__file__).resolve().parents[1]


def _frames(n: int = 12, size: int = 8, episodes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return dict(
        images={"front": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)},
        state=rng.standard_normal((n, 5)).astype(np.float32),
        success=np.arange(n) % 3 == 0,
        stage=np.arange(n) % 3,
        episode=np.arange(n) % episodes,
    )


def test_frames_file_round_trip_and_concatenation(tmp_path):
    a, b = _frames(seed=0), _frames(seed=1)
    save_frames(tmp_path / "a.npz", **a, meta={"labels": "env"})
    save_frames(tmp_path / "b.npz", **b)
    frames = load_frames([tmp_path / "a.npz", tmp_path / "b.npz"])
    np.testing.assert_array_equal(frames["images"]["front"][:12], a["images"]["front"])
    np.testing.assert_array_equal(frames["success"], np.concatenate([a["success"], b["success"]]))
    # Episode ids of the second file are shifted so episodes of different files stay apart.
    np.testing.assert_array_equal(frames["episode"], np.concatenate([a["episode"], b["episode"] + 3]))
    assert frames["meta"]["labels"] == "env"


def test_bad_frames_files_get_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(FramesFormatError, match="garbage.npz"):
        load_frames([garbage])
    no_meta = tmp_path / "no_meta.npz"
    np.savez(no_meta, success=np.zeros(3, bool))
    with pytest.raises(FramesFormatError, match="no 'meta'"):
        load_frames([no_meta])
    save_frames(tmp_path / "small.npz", **_frames(size=8))
    save_frames(tmp_path / "big.npz", **_frames(size=16))
    with pytest.raises(FramesFormatError, match="big.npz"):
        load_frames([tmp_path / "small.npz", tmp_path / "big.npz"])
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_frames([tmp_path / "missing.npz"])
    with pytest.raises(FileNotFoundError, match="no classifier frames"):
        load_frames([])
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((tmp_path / "small.npz").read_bytes()[:200])
    with pytest.raises(FramesFormatError, match="truncated.npz"):
        load_frames([truncated])
    forged = tmp_path / "forged.npz"  # a header claiming 2**50 bytes: refused before any allocation
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {"descr": "|u1", "fortran_order": False, "shape": (1 << 50,)})
    with zipfile.ZipFile(forged, "w") as archive:
        archive.writestr("success.npy", header.getvalue())
    with pytest.raises(FramesFormatError, match="forged.npz.*declare .* GiB"):
        load_frames([forged])


def test_held_out_split_keeps_episodes_whole():
    episode = np.repeat(np.arange(10), 7)
    train, held = split_by_episode(episode, 0.2, seed=0)
    assert set(train).isdisjoint(held) and len(train) + len(held) == len(episode)
    assert set(episode[train]).isdisjoint(set(episode[held]))
    assert len(set(episode[held])) == 2
    with pytest.raises(ValueError, match="at least 2 episodes"):
        split_by_episode(np.zeros(5, int), 0.2, seed=0)


def test_metrics_against_hand_counts():
    probability = np.array([0.9, 0.8, 0.3, 0.6, 0.1, 0.95])
    success = np.array([True, False, True, True, False, True])
    m = classification_metrics(probability, success, threshold=0.7)
    # predicted: T T F F F T -> tp 2 (0, 5), fp 1 (1), fn 2 (2, 3), tn 1 (4)
    assert (m["true_positives"], m["false_positives"], m["false_negatives"], m["true_negatives"]) == (2, 1, 2, 1)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)


def test_multiclass_classifier_learns_stages_and_refuses_one_class_data():
    # Stage k is drawn as a bright square in row-band k; success is the last stage.
    rng = np.random.default_rng(0)
    n = 240
    stage = rng.integers(0, 3, n)
    images = rng.integers(0, 40, (n, 16, 16, 3), dtype=np.uint8)
    for i, s in enumerate(stage):
        images[i, 5 * s : 5 * s + 5, 4:12] = 250
    frames = {"images": {"front": images}, "state": np.zeros((n, 1), np.float32), "success": stage == 2,
              "stage": stage, "episode": np.arange(n) // 12}
    c = classifier_config()
    c.num_classes, c.steps, c.batch_size, c.shift_pad, c.hidden_dim = 3, 300, 48, 0, 32
    _, _, report = train_classifier(frames, c, seed=0)
    assert report["heldout_stage_accuracy"] > 0.9
    assert report["heldout"]["accuracy"] > 0.9
    frames["success"] = np.zeros(n, bool)
    c.num_classes = 2
    with pytest.raises(ValueError, match="only class"):
        train_classifier(frames, c, seed=0)


def test_frozen_pretrained_backbone_loads_and_stays_put(tmp_path):
    import jax

    from serl_launcher.classifier import build_model
    from serl_launcher.networks.encoders import FROZEN_BACKBONE, save_backbone_params

    rng = np.random.default_rng(0)
    n = 48
    success = np.arange(n) % 2 == 0
    images = rng.integers(0, 60, (n, 16, 16, 3), dtype=np.uint8)
    images[success, 4:12, 4:12] = 250
    frames = {"images": {"front": images}, "state": np.zeros((n, 1), np.float32), "success": success,
              "stage": success.astype(int), "episode": np.arange(n) // 6}
    c = classifier_config()
    c.steps, c.batch_size, c.shift_pad, c.hidden_dim, c.freeze_backbone = 30, 16, 0, 16, True
    donor = build_model(("front",), c).init(jax.random.PRNGKey(7), {"front": images[:1]})["params"]
    weights = save_backbone_params(tmp_path / "backbone.npz", donor["encoder"][FROZEN_BACKBONE])
    c.pretrained_path = str(weights)
    _, params, _ = train_classifier(frames, c, seed=0)
    jax.tree.map(np.testing.assert_array_equal, params["encoder"][FROZEN_BACKBONE], donor["encoder"][FROZEN_BACKBONE])
    c.pretrained_path = str(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        train_classifier(frames, c, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Frames recorded in the vision sim and a classifier trained on them, by the entry points."""
    root = tmp_path_factory.mktemp("classifier")
    subprocess_env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    frames, checkpoint = root / "frames.npz", root / "classifier"
    base = [sys.executable]
    record = subprocess.run(
        [*base, "scripts/record_success_fail.py", "--exp_name", "pick_cube_sim_vision",
         "--successes_needed", "80", "--failures_needed", "200", "--hold_steps", "3", "--output", str(frames)],
        cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=300,
    )
    assert record.returncode == 0, record.stderr[-3000:]
    train = subprocess.run(
        [*base, "scripts/train_classifier.py", "--exp_name", "pick_cube_sim_vision", "--data", str(frames),
         "--output", str(checkpoint), "--set", "classifier.steps=600"],
        cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    return {"frames": frames, "checkpoint": checkpoint, "record": record.stdout, "train": train.stdout}


def test_classifier_from_sim_frames_is_accurate_on_held_out_episodes(trained):
    assert "saved" in trained["record"] and trained["frames"].is_file()
    frames = load_frames([trained["frames"]])
    assert frames["success"].sum() >= 80 and (~frames["success"]).sum() >= 200
    assert set(np.unique(frames["stage"])) == {0, 1, 2}  # not held, held, lifted all appear
    summary = json.loads(trained["train"].strip().splitlines()[-1])
    assert summary["heldout"]["accuracy"] >= 0.9, summary
    meta = json.loads((trained["checkpoint"] / "classifier.json").read_text())
    assert meta["image_keys"] == ["front", "wrist"] and meta["report"]["heldout_frames"] > 0


def test_classifier_reward_drives_the_env(trained):
    import gymnasium as gym

    import sim_envs  # noqa: F401
    from experiments.pick_cube_sim_vision.config import get_config
    from serl_launcher.wrappers.classifier_reward import ClassifierReward
    from sim_envs.experts import PickCubeExpert

    config = get_config()
    classifier = load_classifier(trained["checkpoint"])
    env = ClassifierReward(gym.make(config.env_id, config=config.env), classifier, config.classifier.threshold)
    expert = PickCubeExpert(env, seed=0)
    obs, _ = env.reset(seed=3)
    rewards, infos, done = [], [], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(expert.get_action(obs).action)
        rewards.append(reward)
        infos.append(info)
        done = terminated or truncated
    assert set(rewards) <= {0.0, 1.0}
    assert all(0.0 <= i["classifier_probability"] <= 1.0 for i in infos)
    # The expert lifts the cube; the classifier, not the simulator, ends the episode: with the
    # cube off the table (a smoke-sized classifier may fire a step before the full lift height).
    assert terminated and rewards[-1] == 1.0 and infos[-1]["classifier_success"]
    assert sum(rewards) == 1.0 and not any(i["classifier_success"] for i in infos[:-1])
    assert infos[-1]["cube_lift"] >= 0.5 * config.env.lift_height, infos[-1]
    env.close()

    config.env.image_height = config.env.image_width = config.env.image_height // 2  # not the trained size
    other = gym.make(config.env_id, config=config.env)
    with pytest.raises(ValueError, match="trained on"):
        ClassifierReward(other, classifier, threshold=0.5)
    other.close()


def test_classifier_success_needs_confirm_consecutive_steps():
    """With confirm=2 a single frame over the threshold (a classifier's false positive on the way
    up) neither rewards nor ends the episode; two in a row do, and reset clears the streak."""
    import gymnasium as gym

    import sim_envs  # noqa: F401
    from serl_launcher.wrappers.classifier_reward import ClassifierReward

    class Scripted:  # the classifier's answers, in order (the wrapper's logic is under test)
        def __init__(self, probabilities):
            self.probabilities = list(probabilities)

        def check_observation_space(self, space):
            pass

        def success_probability(self, observation):
            return self.probabilities.pop(0)

    base = gym.make("PandaPickCube-v0", max_episode_steps=50)
    env = ClassifierReward(base, Scripted([0.95, 0.2, 0.95, 0.95, 0.95, 0.1, 0.95]), threshold=0.9, confirm=2)
    env.reset(seed=0)
    steps = [env.step(env.action_space.sample()) for _ in range(4)]
    assert [s[1] for s in steps] == [0.0, 0.0, 0.0, 1.0]
    assert [s[2] for s in steps] == [False, False, False, True]
    assert [s[4]["classifier_streak"] for s in steps] == [1, 0, 1, 2]
    assert [s[4]["classifier_success"] for s in steps] == [False, False, False, True]
    env.reset(seed=1)  # one over-threshold step before the reset does not count after it
    assert env.step(env.action_space.sample())[1:3] == (0.0, False)  # 0.95: streak 1
    with pytest.raises(ValueError, match="success_confirm"):
        ClassifierReward(base, Scripted([]), threshold=0.9, confirm=0)
    env.close()


def test_inprocess_runs_the_vision_experiment_at_smoke_size(trained, tmp_path):
    """pick_cube_sim_vision's own config in the in-process loop (classifier reward, cameras,
    patch encoder), tiny: it trains, evaluates and writes its records."""
    from experiments.launch import SMOKE_SETTINGS
    from experiments.mappings import apply_overrides, load_experiment
    from serl_launcher.inprocess import run_inprocess

    exp = load_experiment("pick_cube_sim_vision")
    config = exp.get_config()
    apply_overrides(config, [*SMOKE_SETTINGS, f"classifier.checkpoint={str(trained['checkpoint'])!r}",
                             "demos.successes_needed=1", "actor.max_env_steps=150", "eval.every_s=0.0",
                             "eval.episodes=1", "learner.training_starts=50"])
    summary = run_inprocess(exp, config, run_dir=tmp_path, progress=False)
    assert summary["env_steps"] == 150 and summary["updates"] > 0
    assert summary["history"][-1]["episodes"] == 1
    assert (tmp_path / "summary.json").is_file()


def test_train_classifier_without_frames_says_what_to_do(tmp_path, subprocess_env):
    result = subprocess.run(
        [sys.executable, "scripts/train_classifier.py", "--exp_name", "pick_cube_sim_vision",
         "--data", str(tmp_path / "none.npz")],
        cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "none.npz" in result.stderr
    result = subprocess.run(
        [sys.executable, "scripts/record_success_fail.py", "--exp_name", "pick_cube_sim"],
        cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "no reward classifier" in result.stderr
    headless = {k: v for k, v in subprocess_env.items() if k not in ("DISPLAY", "PYNPUT_BACKEND")}
    result = subprocess.run(
        [sys.executable, "scripts/record_success_fail.py", "--exp_name", "pick_cube_sim_vision",
         "--labels", "keyboard", "--output", str(tmp_path / "k.npz")],
        cwd=REPO, env=headless, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "needs key events" in result.stderr
    assert not (tmp_path / "k.npz").exists()
