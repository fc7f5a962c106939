"""Peg insertion (PandaPegInsert-v0): the hole's clearance is real, the force/torque reading is the
contact's, success is depth in the hole, the force-guided expert succeeds, and the experiment
trains in the in-process loop."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import sim_envs  # noqa: F401  (registers the envs)
from experiments.launch import SMOKE_SETTINGS
from experiments.mappings import apply_overrides, load_experiment
from sim_envs.experts import PegInsertExpert, PickCubeExpert, run_expert_episode
from sim_envs.panda_peg_insert import BOARD_HEIGHT


def descend(env, offset_xy, steps=40, push=-0.3):
    """Holds the peg's tip `offset_xy` from the hole's axis while pushing down; the last obs."""
    u = env.unwrapped
    obs = None
    for _ in range(steps):
        tip, hole = u.peg_tip(), u.hole_pos()
        action = np.zeros(4, np.float32)
        action[:2] = np.clip((hole[:2] + offset_xy - tip[:2]) / u.config.pos_scale, -1, 1)
        action[2] = push
        obs, _, terminated, _, _ = env.step(action)
        if terminated:
            break
    return obs


def test_state_fields_choose_the_state_and_the_hole_offset_is_hole_minus_tip():
    env = gym.make("PandaPegInsert-v0", state_fields=("hole_offset", "tcp_vel", "gripper_pose", "tcp_pose"))
    u = env.unwrapped
    assert u.state_layout.names == ("tcp_pose", "tcp_vel", "gripper_pose", "hole_offset")  # the task's order
    assert env.observation_space["state"].shape == (7 + 6 + 1 + 3,)
    obs, _ = env.reset(seed=1)
    for _ in range(3):
        assert env.observation_space.contains(obs)
        np.testing.assert_allclose(u.state_layout.unpack(obs["state"])["hole_offset"], u.hole_pos() - u.peg_tip(), atol=1e-6)
        obs, *_ = env.step(np.array([0.5, -0.3, -0.2, 0.0], np.float32))
    env.close()
    for bad, problem in ((("tcp_pose", "hole_offset"), r"missing \['tcp_vel', 'gripper_pose'\]"),
                         (("tcp_pose", "tcp_vel", "gripper_pose", "cube_pos"), r"unknown \['cube_pos'\]"),
                         (("tcp_pose", "tcp_vel", "gripper_pose", "hole_pos", "hole_pos"), r"given twice \['hole_pos'\]")):
        with pytest.raises(ValueError, match=f"state_fields .*{problem}.*PandaPegInsert offers"):
            gym.make("PandaPegInsert-v0", state_fields=bad)


def test_the_peg_goes_in_on_the_axis_and_stops_on_the_board_off_it():
    env = gym.make("PandaPegInsert-v0")
    u = env.unwrapped
    layout = u.state_layout
    assert layout.names == ("tcp_pose", "tcp_vel", "gripper_pose", "tcp_force", "tcp_torque", "hole_pos")
    obs, info = env.reset(seed=3, options={"hole_xy": (0.5, 0.05), "hole_yaw": 0.3})
    fields = layout.unpack(obs["state"])
    np.testing.assert_allclose(fields["hole_pos"], [0.5, 0.05, BOARD_HEIGHT], atol=1e-6)
    assert np.abs(fields["tcp_force"]).max() < 1.0  # in the air: the peg's weight is compensated
    assert u.peg_tip()[2] - BOARD_HEIGHT == pytest.approx(u.config.start_height, abs=2e-3)
    assert info["success"] is False and info["insertion"] == 0.0

    obs = descend(env, np.zeros(2))
    assert u.is_success() and u.insertion() >= u.config.insert_depth

    # 1.5 mm off the axis: wider than the half clearance (0.5 mm), so the board holds the peg up
    # and pushes back, and the force/torque reading shows it.
    env.reset(seed=3, options={"hole_xy": (0.5, 0.05)})
    obs = descend(env, np.array([0.0015, 0.0]))
    fields = layout.unpack(obs["state"])
    assert not u.is_success() and u.insertion() == 0.0
    assert abs(u.peg_tip()[2] - BOARD_HEIGHT) < 5e-4  # resting on the top face
    assert fields["tcp_force"][2] > 10.0  # the board pushes up on the peg (base frame, N)
    assert np.linalg.norm(fields["tcp_torque"]) > 0.05  # the contact is off the tool's centre
    np.testing.assert_allclose(fields["tcp_force"], np.clip(u.tcp_wrench()[0], -500, 500), atol=1e-4)
    env.close()


def test_a_wider_hole_takes_the_peg_that_a_1mm_hole_refuses():
    offset = np.array([0.0012, 0.0])
    tight = gym.make("PandaPegInsert-v0")
    tight.reset(seed=0, options={"hole_xy": (0.45, 0.0)})
    descend(tight, offset)
    assert not tight.unwrapped.is_success()
    loose = gym.make("PandaPegInsert-v0", hole_clearance=0.004)
    loose.reset(seed=0, options={"hole_xy": (0.45, 0.0)})
    descend(loose, offset)
    assert loose.unwrapped.is_success()


def test_the_hole_is_drawn_in_its_range_and_seeds_repeat():
    env = gym.make("PandaPegInsert-v0")
    holes = []
    for seed in range(8):
        env.reset(seed=seed)
        holes.append(env.unwrapped.hole_pos())
    holes = np.array(holes)
    c = env.unwrapped.config
    assert np.all(holes[:, :2] >= c.hole_xy_low) and np.all(holes[:, :2] <= c.hole_xy_high)
    assert len({tuple(h) for h in holes.round(6)}) == 8
    env.reset(seed=5)
    np.testing.assert_array_equal(env.unwrapped.hole_pos(), holes[5])


def test_the_vision_variant_has_cameras_and_no_hole_position():
    env = gym.make("PandaPegInsertVision-v0", image_height=32, image_width=48)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"state", "front", "wrist"} and obs["front"].shape == (32, 48, 3)
    assert "hole_pos" not in env.unwrapped.state_layout.names
    assert "tcp_force" in env.unwrapped.state_layout.names
    env.close()


def test_bad_peg_configs_are_refused():
    with pytest.raises(ValueError, match="hole_clearance"):
        gym.make("PandaPegInsert-v0", hole_clearance=0.0)
    with pytest.raises(ValueError, match="insert_depth"):
        gym.make("PandaPegInsert-v0", insert_depth=0.05)
    with pytest.raises(KeyError, match="unknown PandaPegInsert config key 'cube_xy_low'"):
        gym.make("PandaPegInsert-v0", cube_xy_low=(0.3, 0.0))


def test_the_force_guided_expert_inserts_in_at_least_95_of_100_episodes():
    env = gym.make("PandaPegInsert-v0")
    expert = PegInsertExpert(env, seed=0)  # its idea of the hole is up to 2 mm off, per axis
    results = [run_expert_episode(env, expert, seed=seed) for seed in range(100)]
    assert sum(r["success"] for r in results) >= 95
    # It finds the hole by touch: without the force reading it would not stop on the board.
    blind = PegInsertExpert(env, seed=0, contact_force=1e9)
    assert sum(run_expert_episode(env, blind, seed=s)["success"] for s in range(10)) <= 3
    with pytest.raises(TypeError, match="PandaPegInsertEnv"):
        PegInsertExpert(gym.make("PandaPickCube-v0"))
    with pytest.raises(TypeError, match="pick-cube env"):
        PickCubeExpert(env)


def test_the_peg_experiment_records_demos_and_trains_in_process():
    from serl_launcher.inprocess import run_inprocess

    exp = load_experiment("peg_insert_sim")
    config = exp.get_config()
    apply_overrides(config, [*SMOKE_SETTINGS, "demos.successes_needed=2", "actor.max_env_steps=200",
                             "eval.episodes=2", "eval.every_s=0.0"])
    summary = run_inprocess(exp, config, progress=False)
    assert summary["env_steps"] == 200 and summary["updates"] > 0 and summary["history"][-1]["episodes"] == 2


def test_demos_recorded_with_the_holes_position_are_refused_by_a_learner_that_reads_its_offset(
        tmp_path, python, subprocess_env):
    """The two layouts have the same size: without the file naming its fields, the learner would
    train on positions read as offsets. record_demos.py and the learner, as a user runs them."""
    import subprocess

    from conftest import REPO

    from experiments.launch import role_args

    old_fields = '("tcp_pose","tcp_vel","gripper_pose","tcp_force","tcp_torque","hole_pos")'
    demo = tmp_path / "old_demos" / "peg.npz"
    recorded = subprocess.run(
        [python, str(REPO / "scripts/record_demos.py"), "--exp_name", "peg_insert_sim", "--successes_needed", "1",
         "--output", str(demo), "--set", f"env.state_fields={old_fields}"],
        env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    learner = subprocess.run(
        [python, str(REPO / "scripts/train_rlpd.py"), "--exp_name", "peg_insert_sim", "--learner",
         *role_args(str(tmp_path / "run"), [*SMOKE_SETTINGS, f'demos.paths=["{demo.parent}"]'])],
        env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert learner.returncode != 0
    assert "recorded with the state fields [tcp_pose (7), tcp_vel (6), gripper_pose (1), tcp_force (3), " \
           "tcp_torque (3), hole_pos (3)]" in learner.stderr, learner.stderr[-3000:]
    assert "hole_offset (3)]" in learner.stderr and "record the demos again" in learner.stderr


def test_the_vision_experiment_labels_insertions_and_its_classifier_gives_the_reward(tmp_path, python,
                                                                                    subprocess_env):
    """peg_insert_sim_vision's learned reward through its entry points: frames the simulator
    labels (the tip 2 cm deep), a classifier trained on them, the experiment's env rewarded by it."""
    import subprocess

    from conftest import REPO

    from serl_launcher.classifier import load_frames

    frames, checkpoint = tmp_path / "frames.npz", tmp_path / "classifier"
    record = subprocess.run(
        [python, str(REPO / "scripts/record_success_fail.py"), "--exp_name", "peg_insert_sim_vision",
         "--successes_needed", "10", "--failures_needed", "30", "--hold_steps", "3", "--output", str(frames)],
        env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert record.returncode == 0, record.stderr[-3000:]
    data = load_frames([frames])
    assert data["success"].sum() >= 10 and (~data["success"]).sum() >= 30
    assert set(data["images"]) == {"front", "wrist"}
    train = subprocess.run(
        [python, str(REPO / "scripts/train_classifier.py"), "--exp_name", "peg_insert_sim_vision", "--data",
         str(frames), "--output", str(checkpoint), "--set", "classifier.steps=40"],
        env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]

    exp = load_experiment("peg_insert_sim_vision")
    config = exp.get_config()
    config.classifier.checkpoint = str(checkpoint)
    env = exp.make_env(config)
    try:
        assert env.unwrapped.config.terminate_on_success is False  # the classifier ends episodes
        assert "hole_pos" not in env.unwrapped.state_layout.names and "tcp_force" in env.unwrapped.state_layout.names
        env.reset(seed=0)
        _, reward, _, _, info = env.step(np.zeros(4, np.float32))
        assert reward in (0.0, 1.0) and 0.0 <= info["classifier_probability"] <= 1.0
    finally:
        env.close()
