"""The SO-101 arm: its MJCFs, the kinematics module (fk/ik), the pick-cube task and its expert."""

import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim_envs  # noqa: F401  (registers the envs)
from sim_envs import kinematics
from sim_envs.experts import PickCubeExpert, run_expert_episode
from sim_envs.so101_pick_cube import CUBE_HALF_SIZE, SO101PickCubeEnv, make_config

SO101_XMLS = ("so101.xml", "so101_pick_cube.xml", "koch.xml")


@pytest.mark.parametrize("name", SO101_XMLS)
def test_xml_compiles_and_holds_its_home_posture(name):
    model = mujoco.MjModel.from_xml_path(str(kinematics.XML_DIR / name))
    data = mujoco.MjData(model)
    kind = "koch" if name == "koch.xml" else "so101"
    _, joints, home = kinematics.ARM_KINDS[kind]
    qpos = [model.joint(j).qposadr[0] for j in joints]
    data.qpos[qpos] = home
    if model.nu:
        data.ctrl[[model.actuator(j).id for j in joints]] = home
    if "cube" in name:
        data.qpos[model.joint("cube").qposadr[0] + 2] = CUBE_HALF_SIZE
    for _ in range(1000):
        mujoco.mj_step(model, data)
    assert [int(w.number) for w in data.warning] == [0] * len(data.warning)
    assert np.all(np.isfinite(data.qpos))
    if model.nu:  # the servos hold the posture
        np.testing.assert_allclose(data.qpos[qpos], home, atol=0.02)


@pytest.mark.parametrize("env_id", ["SO101PickCube-v0", "SO101PickCubeVision-v0"])
def test_env_checker_passes_without_warnings(env_id):
    env = gym.make(env_id, render_mode="rgb_array", image_height=32, image_width=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=False)
    assert [str(w.message) for w in caught] == []
    obs, info = env.reset(seed=0)
    assert set(obs) == ({"state", "front", "wrist"} if "Vision" in env_id else {"state"})
    assert info == {"success": False, "cube_lift": pytest.approx(0.0, abs=1e-3), "grasped": False}
    fields = env.unwrapped.state_layout.unpack(obs["state"])
    assert fields["gripper_pose"][0] == pytest.approx(0.0, abs=1e-6)  # starts open
    np.testing.assert_allclose(fields["tcp_pose"][3:], kinematics.TOOL_DOWN_QUAT_XYZW, atol=1e-3)
    env.close()


def _random_tool_down_q(kin, rng, n):
    """n joint vectors within the limits with the tool pointing down and above the table."""
    out = []
    while len(out) < n:
        q = rng.uniform(kin.q_low, kin.q_high)
        q[3] = np.pi / 2 - q[1] - q[2]  # the pitch joints sum to pi/2: pointing down
        if np.all((q >= kin.q_low) & (q <= kin.q_high)) and kin.fk(q)[0][2] > 0.0:
            out.append(q)
    return out


@pytest.mark.parametrize("kind", ["so101", "koch"])
def test_ik_of_fk_reaches_the_same_tool_position(kind):
    kin = kinematics.arm_kinematics(kind)
    rng = np.random.default_rng(0)
    if kind == "so101":
        samples = [(q, None) for q in _random_tool_down_q(kin, rng, 20)]
    else:  # any reachable pose, its own orientation as the target
        qs = kin.clip(rng.uniform(kin.home_qpos - 0.5, kin.home_qpos + 0.5, (20, 5)))
        samples = [(q, kin.fk(q)[1]) for q in qs]
    for q, quat in samples:
        pos, _ = kin.fk(q)
        solution = kin.ik(kin.home_qpos, pos, quat, dt=2.0, iterations=100, tolerance=2e-4)
        assert np.linalg.norm(kin.fk(solution)[0] - pos) < 2e-3, (q, solution)


def test_ik_respects_joint_limits_and_the_velocity_limit():
    kin = kinematics.arm_kinematics("so101")
    rng = np.random.default_rng(1)
    for _ in range(20):
        q_now = rng.uniform(kin.q_low, kin.q_high)
        target = rng.uniform([-0.5, -0.5, -0.3], [0.5, 0.5, 0.6])  # often out of reach
        q = kin.ik(q_now, target, dt=0.05)
        assert np.all(q >= kin.q_low - 1e-9) and np.all(q <= kin.q_high + 1e-9)
        assert np.all(np.abs(q - q_now) <= kin.max_joint_velocity * 0.05 + 1e-6)
        far = kin.ik(q_now, target, dt=5.0, iterations=50)
        assert np.all(far >= kin.q_low - 1e-9) and np.all(far <= kin.q_high + 1e-9)
    with pytest.raises(ValueError, match="shape"):
        kin.fk(np.zeros(6))
    with pytest.raises(ValueError, match="unknown arm kind"):
        kinematics.arm_model("so102")


def test_kinematics_matches_the_simulated_arm():
    """The standalone arm model and the task's scene agree on the tool pose."""
    kin = kinematics.arm_kinematics("so101")
    env = SO101PickCubeEnv()
    env.reset(seed=0)
    q = env.data.qpos[env.kinematics.qpos_ids]
    pos, quat = kin.fk(q)
    np.testing.assert_allclose(pos, env.tcp_pos(), atol=1e-9)
    np.testing.assert_allclose(np.abs(quat @ env.kinematics.fk(q)[1]), 1.0, atol=1e-9)
    # SO-100 shares the SO-101's model.
    np.testing.assert_allclose(kinematics.arm_kinematics("so100").fk(q)[0], pos)


def test_reset_with_a_seed_is_deterministic():
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 4)).astype(np.float32)
    env_a, env_b = gym.make("SO101PickCube-v0"), gym.make("SO101PickCube-v0")

    def rollout(env, seed):
        states = [env.reset(seed=seed)[0]["state"]]
        states += [env.step(a)[0]["state"] for a in actions]
        return np.array(states)

    first = rollout(env_a, 7)
    rollout(env_a, 3)  # an episode in between must not leak into the next
    np.testing.assert_array_equal(first, rollout(env_a, 7))
    np.testing.assert_array_equal(first, rollout(env_b, 7))
    cubes = {tuple(env_a.reset(seed=s)[0]["state"][-3:-1]) for s in range(5)}
    assert len(cubes) == 5


def test_actions_stay_in_the_workspace_and_config_errors_are_clear():
    env = SO101PickCubeEnv()
    env.reset(seed=0)
    for _ in range(30):  # push down and out: the tool target is clipped to the box
        env.step(np.array([1.0, 1.0, -1.0, -1.0], dtype=np.float32))
    low, high = np.array(env.config.workspace_low), np.array(env.config.workspace_high)
    assert np.all(env.tcp_pos() >= low - 0.01) and np.all(env.tcp_pos() <= high + 0.01)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(7))
    with pytest.raises(ValueError, match="action_mode"):
        make_config({"action_mode": "xyz_rpy"})  # the 5-DoF arm takes no rotation actions
    with pytest.raises(KeyError, match="SO101PickCube"):
        make_config({"lift_hieght": 0.1})


def test_expert_picks_the_cube():
    env = gym.make("SO101PickCube-v0")
    expert = PickCubeExpert(env)
    results = [run_expert_episode(env, expert, seed=seed) for seed in range(8)]
    assert all(r["success"] for r in results), [r["length"] for r in results]
    noisy = PickCubeExpert(env, noise=0.1, seed=0)
    assert sum(run_expert_episode(env, noisy, seed=seed)["success"] for seed in range(8, 12)) >= 3
    # Success is a lift by the gripper: the jaws hold the cube at the end.
    env.reset(seed=0)
    unwrapped = env.unwrapped
    expert.reset()
    for _ in range(unwrapped.config.max_episode_steps):
        _, _, terminated, _, info = env.step(expert.get_action().action)
        if terminated:
            break
    assert info["success"] and info["grasped"] and unwrapped.gripper_pose() > 0.2
