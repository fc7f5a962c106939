"""The MuJoCo pick-cube task: API conformance, determinism, control, rendering and the expert."""

import warnings
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim_envs
from sim_envs.experts import PickCubeExpert, run_expert_episode
from sim_envs.panda_pick_cube import CUBE_HALF_SIZE, PandaPickCubeEnv, make_config
from sim_envs.viewer import KEY_END, KEY_HOME, KEY_INSERT, KEY_PAGE_DOWN, KEY_UP, ViewerKeyboard

XML_DIR = Path(sim_envs.__file__).parent / "xmls"


@pytest.mark.parametrize("env_id", sim_envs.ENV_IDS)
def test_env_checker_passes_without_warnings(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=False)
    assert [str(w.message) for w in caught] == []
    env.close()


def test_observation_layout():
    state_env = gym.make("PandaPickCube-v0")
    obs, info = state_env.reset(seed=0)
    assert set(obs) == {"state"}
    layout = state_env.unwrapped.state_layout
    assert layout.names == ("tcp_pose", "tcp_vel", "gripper_pose", "cube_pos")
    fields = layout.unpack(obs["state"])
    np.testing.assert_allclose(fields["cube_pos"], state_env.unwrapped.cube_pos(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fields["tcp_pose"][3:]), 1.0, atol=1e-5)
    assert fields["gripper_pose"][0] == pytest.approx(0.0, abs=1e-6)  # starts open
    assert info == {"success": False, "cube_lift": pytest.approx(0.0, abs=1e-3), "grasped": False}

    vision_env = gym.make("PandaPickCubeVision-v0", image_height=64, image_width=96)
    obs, _ = vision_env.reset(seed=0)
    assert set(obs) == {"state", "front", "wrist"}
    assert "cube_pos" not in vision_env.unwrapped.state_layout.names
    assert obs["state"].shape == (14,)
    for cam in ("front", "wrist"):
        assert obs[cam].shape == (64, 96, 3) and obs[cam].dtype == np.uint8
    vision_env.close()


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    trajectory = [obs["state"]]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        trajectory.append(np.append(obs["state"], [reward, terminated, truncated]))
    return trajectory


def test_identical_seeds_give_identical_episodes():
    actions = np.random.default_rng(0).uniform(-1, 1, (30, 4)).astype(np.float32)
    env_a, env_b = gym.make("PandaPickCube-v0"), gym.make("PandaPickCube-v0")
    first = _rollout(env_a, 7, actions)
    _rollout(env_a, 3, actions)  # an episode in between must not leak into the next
    again = _rollout(env_a, 7, actions)
    other_env = _rollout(env_b, 7, actions)
    for x, y, z in zip(first, again, other_env, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    cubes = {tuple(env_a.reset(seed=s)[0]["state"][-3:-1]) for s in range(5)}
    assert len(cubes) == 5, "different seeds must place the cube differently"


def test_cube_placement_within_configured_range():
    env = gym.make("PandaPickCube-v0", cube_xy_low=(0.4, -0.05), cube_xy_high=(0.45, 0.05))
    for seed in range(10):
        env.reset(seed=seed)
        x, y, z = env.unwrapped.cube_pos()
        assert 0.4 <= x <= 0.45 and -0.05 <= y <= 0.05
        assert z == pytest.approx(CUBE_HALF_SIZE, abs=1e-3)


@pytest.mark.parametrize("action_mode", ["xyz", "xyz_rpy"])
def test_expert_solves_most_seeds(action_mode):
    env = gym.make("PandaPickCube-v0", action_mode=action_mode)
    expert = PickCubeExpert(env, noise=0.1, seed=0)
    results = [run_expert_episode(env, expert, seed=seed) for seed in range(50)]
    success = np.mean([r["success"] for r in results])
    assert success >= 0.95, f"expert solved {success:.0%} of 50 seeds"
    assert max(r["length"] for r in results) < 100


def test_success_terminates_with_reward_and_time_limit_truncates():
    env = gym.make("PandaPickCube-v0", max_episode_steps=12)
    env.reset(seed=0)
    for step in range(1, 13):
        _, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
        assert reward == 0.0 and not terminated and not info["success"]
        assert truncated == (step == 12)

    env = gym.make("PandaPickCube-v0")
    expert = PickCubeExpert(env)
    obs, _ = env.reset(seed=1)
    for _ in range(100):
        obs, reward, terminated, truncated, info = env.step(expert.get_action(obs).action)
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert reward == 1.0 and info["success"] and info["grasped"]
    assert info["cube_lift"] >= env.unwrapped.config.lift_height


def test_images_change_when_the_arm_moves():
    env = gym.make("PandaPickCubeVision-v0")
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        moved, *_ = env.step(np.array([0.0, 1.0, -1.0, 0.0], np.float32))
    for cam in ("front", "wrist"):
        diff = np.abs(moved[cam].astype(np.int16) - obs[cam].astype(np.int16)).mean()
        assert diff > 2.0, f"{cam} image barely changed ({diff:.2f}) after moving the arm"
        assert obs[cam].std() > 10, f"{cam} image is nearly uniform"
    # The same state renders the same image (no stale buffers between cameras).
    again, _ = env.reset(seed=0)
    np.testing.assert_array_equal(again["front"], obs["front"])
    np.testing.assert_array_equal(again["wrist"], obs["wrist"])


@pytest.mark.parametrize(
    "action, axis, bound",
    [((1, 0, 0, 0), 0, "high"), ((0, -1, 0, 0), 1, "low"), ((0, 0, -1, 0), 2, "low"), ((0, 0, 1, 0), 2, "high")],
)
def test_tool_is_clipped_to_the_workspace_box(action, axis, bound):
    low, high = (0.35, -0.1, 0.05), (0.5, 0.1, 0.35)
    env = gym.make("PandaPickCube-v0", workspace_low=low, workspace_high=high, max_episode_steps=1000)
    env.reset(seed=0, options={"cube_xy": (0.6, 0.25)})  # out of the way
    for _ in range(40):
        env.step(np.array(action, np.float32) * 5.0)  # beyond [-1, 1] is clipped too
    tcp = env.unwrapped.tcp_pos()
    limit = high[axis] if bound == "high" else low[axis]
    assert tcp[axis] == pytest.approx(limit, abs=0.01)
    assert np.all(tcp >= np.array(low) - 0.01) and np.all(tcp <= np.array(high) + 0.01)


def test_rotation_actions_turn_the_tool_within_limits():
    env = gym.make("PandaPickCube-v0", action_mode="xyz_rpy", rot_limit=(0.3, 0.3, 0.5))
    obs, _ = env.reset(seed=0)
    q0 = obs["state"][3:7].copy()
    for _ in range(15):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 1, 0], np.float32))
    angle = 2 * np.arccos(np.clip(abs(np.dot(q0, obs["state"][3:7])), 0, 1))
    assert angle == pytest.approx(0.5, abs=0.05), "yaw must stop at its 0.5 rad limit"


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(3), r"shape \(4,\)"),
        (np.zeros((1, 4)), r"shape \(4,\)"),
        (np.array([0.0, np.nan, 0.0, 0.0]), "NaN or Inf"),
        (np.array([0.0, 0.0, np.inf, 0.0]), "NaN or Inf"),
    ],
)
def test_bad_actions_raise_clear_errors(bad, message):
    env = gym.make("PandaPickCube-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.unwrapped.step(bad)


def test_bad_config_raises():
    with pytest.raises(KeyError, match="unknown PandaPickCube config key 'lift_hieght'"):
        gym.make("PandaPickCube-v0", lift_hieght=0.1)
    with pytest.raises(ValueError, match="positive integer"):
        make_config({"control_hz": 20.0})  # 12.5 physics steps of 4 ms
    with pytest.raises(ValueError, match="workspace_low"):
        make_config({"workspace_low": (0.5, 0, 0), "workspace_high": (0.4, 1, 1)})
    with pytest.raises(ValueError, match="action_mode"):
        make_config({"action_mode": "joint"})


def test_control_rate_is_configurable():
    env = PandaPickCubeEnv(control_hz=25.0)
    env.reset(seed=0)
    t0 = env.data.time
    env.step(np.zeros(4, np.float32))
    assert env.data.time - t0 == pytest.approx(0.04)
    assert env.metadata["render_fps"] == 25


def test_gripper_closes_and_opens():
    env = PandaPickCubeEnv()
    env.reset(seed=0, options={"cube_xy": (0.6, 0.2)})
    env.step(np.array([0, 0, 0, 1.0], np.float32))
    env.step(np.array([0, 0, 0, 0.2], np.float32))  # inside the dead band: keeps closing
    assert env.gripper_closed and env.gripper_pose() > 0.95
    env.step(np.array([0, 0, 0, -1.0], np.float32))
    env.step(np.array([0, 0, 0, 0.0], np.float32))
    assert not env.gripper_closed and env.gripper_pose() < 0.05


@pytest.mark.parametrize("xml", [XML_DIR / "panda.xml", XML_DIR / "pick_cube.xml"], ids=lambda p: p.name)
def test_scene_xml_compiles_and_steps_without_warnings(xml):  # the SO-101 / Koch XMLs: test_so101_sim.py
    model = mujoco.MjModel.from_xml_path(str(xml))
    data = mujoco.MjData(model)
    mujoco.mj_resetData(model, data)
    home = (0.0, -0.2681, 0.0, -2.4318, 0.0, 2.163, 0.785)
    data.qpos[:7] = home
    data.ctrl[:7] = home
    for _ in range(2000):
        mujoco.mj_step(model, data)
    assert [int(w.number) for w in data.warning] == [0] * len(data.warning)
    assert np.all(np.isfinite(data.qpos))


def test_expert_rejects_other_envs_and_bad_noise():
    with pytest.raises(TypeError, match="PandaPickCubeEnv"):
        PickCubeExpert(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="noise"):
        PickCubeExpert(gym.make("PandaPickCube-v0"), noise=-1)


def test_viewer_keyboard_maps_keys_to_actions():
    keyboard = ViewerKeyboard(action_dim=4)
    keyboard.key_callback(KEY_UP)
    keyboard.key_callback(KEY_PAGE_DOWN)
    keyboard.key_callback(KEY_HOME)
    action, intervening = keyboard.get_action()
    np.testing.assert_array_equal(action, [1, 0, -1, 1])
    assert intervening
    action, _ = keyboard.get_action()  # presses are one-step impulses; the gripper latches
    np.testing.assert_array_equal(action, [0, 0, 0, 1])
    keyboard.key_callback(KEY_END)
    keyboard.key_callback(KEY_INSERT)
    action, intervening = keyboard.get_action()
    assert action[-1] == -1 and not intervening


def test_human_render_mode_without_display_fails_clearly(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="needs a display"):
        PandaPickCubeEnv(render_mode="human")
    assert PandaPickCubeEnv().metadata["render_modes"] == ["rgb_array"]


def test_zero_action_holds_the_tool_still():
    """The posture (null-space) pull must not move the tool: no drift while idle."""
    env = PandaPickCubeEnv(max_episode_steps=200)
    env.reset(seed=0, options={"cube_xy": (0.6, 0.2)})
    for _ in range(5):
        env.step(np.array([-0.5, 0.5, 1.0, 0.0], np.float32))
    env.step(np.zeros(4, np.float32))  # let the last motion settle
    start = env.tcp_pos()
    for _ in range(100):
        env.step(np.zeros(4, np.float32))
    assert np.linalg.norm(env.tcp_pos() - start) < 0.003


@pytest.mark.parametrize("physics_dt", [0.002, 0.004])
def test_tracking_follows_commands(physics_dt):
    env = PandaPickCubeEnv(physics_dt=physics_dt)
    env.reset(seed=0, options={"cube_xy": (0.6, 0.2)})
    start = env.tcp_pos()
    for _ in range(5):
        env.step(np.array([0.0, 0.0, -1.0, 0.0], np.float32))
    moved = start[2] - env.tcp_pos()[2]
    assert 0.8 * 5 * 0.04 <= moved <= 1.05 * 5 * 0.04, f"moved {moved:.3f} m for 0.20 m commanded"


@pytest.mark.parametrize("backend", ["egl", "osmesa"])
def test_headless_backends_render_and_exit_cleanly(backend, python, subprocess_env):
    import ctypes.util
    import subprocess

    if not ctypes.util.find_library({"egl": "EGL", "osmesa": "OSMesa"}[backend]):
        pytest.skip(f"{backend} library not installed (scripts/setup.sh installs it)")
    code = (
        "import sim_envs, gymnasium as gym\n"
        "env = gym.make('PandaPickCubeVision-v0', image_height=32, image_width=32)\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(obs['front'].std() > 10, obs['wrist'].std() > 10)\n"
    )
    env = {**subprocess_env, "MUJOCO_GL": backend}
    env.pop("PYOPENGL_PLATFORM", None)
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "True"]
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_reach_task_succeeds_when_the_tool_reaches_the_cube():
    env = gym.make("PandaPickCube-v0", task="reach", max_episode_steps=40)
    expert = PickCubeExpert(env)
    obs, _ = env.reset(seed=0)
    for steps in range(1, 41):  # noqa: B007 (read after the loop)
        obs, reward, terminated, truncated, info = env.step(expert.get_action(obs).action)
        if terminated or truncated:
            break
    assert terminated and reward == 1.0 and info["success"] and steps < 15
    base = env.unwrapped
    assert np.linalg.norm(base.tcp_pos() - base.reach_target()) <= base.config.reach_tolerance
    np.testing.assert_allclose(base.reach_target(), base.cube_pos() + [0, 0, base.config.reach_height])
    with pytest.raises(ValueError, match="task"):
        make_config({"task": "stack"})


def test_dense_reward_is_minus_the_distance_to_go():
    env = PandaPickCubeEnv(task="reach", reward_type="dense")
    env.reset(seed=0)
    _, reward, *_ = env.step(np.zeros(4, np.float32))
    assert reward == pytest.approx(-np.linalg.norm(env.tcp_pos() - env.reach_target()), abs=1e-6)
    pick = PandaPickCubeEnv(reward_type="dense")
    pick.reset(seed=0)
    _, reward, *_ = pick.step(np.zeros(4, np.float32))
    expected = np.linalg.norm(pick.tcp_pos() - pick.cube_pos()) + pick.config.lift_height - pick.cube_lift()
    assert reward == pytest.approx(-expected, abs=1e-6)
