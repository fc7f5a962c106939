"""Pick-and-place into a bin (PandaPickPlace-v0): the stages are real (a held cube over the bin is not
a success, a released one inside it is), the objects are drawn apart, the scripted expert goes
through every stage, and both experiments (state; vision with a learned reward) run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import sim_envs  # noqa: F401  (registers the envs)
from experiments.launch import SMOKE_SETTINGS
from experiments.mappings import apply_overrides, load_experiment
from serl_launcher.classifier import load_frames
from sim_envs.experts import PickPlaceExpert, run_expert_episode
from sim_envs.panda_pick_cube import CUBE_HALF_SIZE

REPO = Path(__file__).resolve().parents[1]


def drive(env, expert, until, max_steps=100):
    """Steps the expert until `until(info)`; the info of that step (None: never)."""
    obs = None
    for _ in range(max_steps):
        obs, _, terminated, truncated, info = env.step(expert.get_action(obs).action)
        if until(info):
            return info
        if terminated or truncated:
            return None
    return None


def test_the_objects_are_drawn_apart_in_their_ranges_and_seeds_repeat():
    env = gym.make("PandaPickPlace-v0")
    u = env.unwrapped
    c = u.config
    assert u.state_layout.names == ("tcp_pose", "tcp_vel", "gripper_pose", "cube_pos", "bin_pos")
    places = []
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        cube, floor = u.cube_pos(), u.bin_pos()
        fields = u.state_layout.unpack(obs["state"])
        np.testing.assert_allclose(fields["bin_pos"], floor, atol=1e-6)
        np.testing.assert_allclose(fields["cube_pos"], cube, atol=1e-6)
        assert np.linalg.norm(cube[:2] - floor[:2]) >= c.min_separation
        assert np.all(floor[:2] >= c.bin_xy_low) and np.all(floor[:2] <= c.bin_xy_high)
        assert np.all(cube[:2] >= c.cube_xy_low) and np.all(cube[:2] <= c.cube_xy_high)
        assert info == {"success": False, "cube_lift": pytest.approx(0.0, abs=1e-3), "grasped": False, "in_bin": False}
        places.append((*cube[:2], *floor[:2]))
    assert len({tuple(np.round(p, 6)) for p in places}) == 30
    env.reset(seed=7)
    np.testing.assert_allclose((*u.cube_pos()[:2], *u.bin_pos()[:2]), places[7])


def test_held_over_the_bin_is_not_a_success_and_let_go_inside_it_is():
    env = gym.make("PandaPickPlace-v0")
    u = env.unwrapped
    env.reset(seed=0, options={"cube_xy": (0.45, -0.15), "bin_xy": (0.5, 0.1)})
    expert = PickPlaceExpert(env, seed=0)
    # Carried to above the bin, still held: the cube's xy is inside the walls but it is above the rim.
    over = drive(env, expert, lambda info: info["grasped"] and np.linalg.norm(u.cube_pos()[:2] - u.bin_pos()[:2]) < 0.01)
    assert over is not None and not over["success"] and not over["in_bin"]
    assert u.cube_pos()[2] - CUBE_HALF_SIZE > u.config.bin_wall_height
    placed = drive(env, expert, lambda info: info["success"])
    assert placed is not None and placed["in_bin"] and not placed["grasped"]
    assert u.cube_pos()[2] == pytest.approx(u.bin_pos()[2] + CUBE_HALF_SIZE, abs=2e-3)  # on the bin's floor

    # Lifted, carried away from the bin and let go there: no success.
    env.reset(seed=0, options={"cube_xy": (0.45, -0.15), "bin_xy": (0.5, 0.1)})
    lifted = drive(env, PickPlaceExpert(env, seed=0), lambda info: info["cube_lift"] > 0.06)
    assert lifted is not None and lifted["grasped"] and not lifted["success"]
    for action in [[0, -1, 0, 1]] * 3 + [[0, 0, 0, -1]] * 10:
        *_, info = env.step(np.array(action, np.float32))
    assert not info["grasped"] and not info["success"] and not info["in_bin"]
    assert u.cube_pos()[2] == pytest.approx(CUBE_HALF_SIZE, abs=2e-3)  # back on the table


def test_the_expert_places_the_cube_in_at_least_95_of_100_episodes_and_waits_when_it_does_not_end():
    env = gym.make("PandaPickPlace-v0")
    expert = PickPlaceExpert(env, noise=0.1, seed=0)
    results = [run_expert_episode(env, expert, seed=seed) for seed in range(100)]
    assert sum(r["success"] for r in results) >= 95
    assert np.median([r["length"] for r in results]) < 40  # the stages take ~25 steps, not the whole episode
    # Success that does not end the episode (a classifier decides): the expert stays away, so the
    # cube stays in the bin until the episode truncates.
    waiting = gym.make("PandaPickPlace-v0", terminate_on_success=False)
    expert = PickPlaceExpert(waiting, seed=0)
    obs, _ = waiting.reset(seed=1)
    successes = []
    for _ in range(waiting.unwrapped.config.max_episode_steps):
        obs, reward, terminated, truncated, info = waiting.step(expert.get_action(obs).action)
        successes.append(info["success"])
    assert truncated and not terminated and successes[-1]
    first = successes.index(True)
    assert all(successes[first:])
    with pytest.raises(TypeError, match="PandaPickPlaceEnv"):
        PickPlaceExpert(gym.make("PandaPickCube-v0"))


def test_the_vision_variant_has_cameras_and_no_object_positions_and_bad_configs_are_refused():
    env = gym.make("PandaPickPlaceVision-v0", image_height=32, image_width=32)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"state", "front", "wrist"} and obs["state"].shape == (14,)
    assert "cube_pos" not in env.unwrapped.state_layout.names and "bin_pos" not in env.unwrapped.state_layout.names
    env.close()
    with pytest.raises(ValueError, match="min_separation"):
        gym.make("PandaPickPlace-v0", min_separation=0.05)
    with pytest.raises(ValueError, match="never lie"):
        gym.make("PandaPickPlace-v0", cube_xy_low=(0.4, 0.0), cube_xy_high=(0.4, 0.0),
                 bin_xy_low=(0.45, 0.0), bin_xy_high=(0.45, 0.0))
    with pytest.raises(KeyError, match="unknown PandaPickPlace config key 'lift_height'"):
        gym.make("PandaPickPlace-v0", lift_height=0.1)


def test_the_state_experiment_records_demos_and_trains_in_process():
    from serl_launcher.inprocess import run_inprocess

    exp = load_experiment("pick_place_sim")
    config = exp.get_config()
    apply_overrides(config, [*SMOKE_SETTINGS, "demos.successes_needed=2", "actor.max_env_steps=150",
                             "eval.episodes=1", "eval.every_s=0.0"])
    summary = run_inprocess(exp, config, progress=False)
    assert summary["env_steps"] == 150 and summary["updates"] > 0 and summary["history"][-1]["episodes"] == 1


def test_the_vision_experiment_labels_every_stage_and_its_classifier_gives_the_reward(tmp_path):
    """The learned-reward variant through its entry points: frames labelled by stage, a classifier
    trained on them, and the experiment's env taking its reward from that classifier."""
    subprocess_env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    frames, checkpoint = tmp_path / "frames.npz", tmp_path / "classifier"
    record = subprocess.run(
        [sys.executable, "scripts/record_success_fail.py", "--exp_name", "pick_place_sim_vision",
         "--successes_needed", "30", "--failures_needed", "90", "--hold_steps", "3", "--output", str(frames)],
        cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=300,
    )
    assert record.returncode == 0, record.stderr[-3000:]
    data = load_frames([frames])
    assert data["success"].sum() >= 30 and (~data["success"]).sum() >= 90
    assert set(np.unique(data["stage"])) == {0, 1, 2}  # not held, held (lifted, carried), placed
    train = subprocess.run(
        [sys.executable, "scripts/train_classifier.py", "--exp_name", "pick_place_sim_vision", "--data", str(frames),
         "--output", str(checkpoint), "--set", "classifier.steps=60"],
        cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=300,
    )
    assert train.returncode == 0, train.stderr[-3000:]

    exp = load_experiment("pick_place_sim_vision")
    config = exp.get_config()
    config.classifier.checkpoint = str(checkpoint)
    env = exp.make_env(config)
    assert env.unwrapped.config.terminate_on_success is False  # the classifier ends episodes
    obs, _ = env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(4, np.float32))
    assert reward in (0.0, 1.0) and 0.0 <= info["classifier_probability"] <= 1.0
    env.close()
