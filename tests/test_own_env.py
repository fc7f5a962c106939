"""A user's own env and experiment: the space adapter on flat, nested and Box envs, the checks
that refuse a mismatch instead of running wrongly, and the one-file experiment of
examples/own_env.py run from a folder outside the repository (in-process, and as learner and
actor processes through scripts/run_learner.sh and run_actor.sh)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import jax
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from experiments.launch import SMOKE_SETTINGS, role_args, start_role, stop
from experiments.mappings import (
    apply_overrides,
    experiment_dir,
    load_experiment,
    load_for_entry_point,
)
from serl_launcher.agents.sac import SACAgent, sac_config
from serl_launcher.utils.rollouts import evaluate
from serl_launcher.wrappers.adapter import SpaceAdapter, adapter_config
from serl_launcher.wrappers.grasp_penalty import with_grasp_penalty

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "own_env.py"


@pytest.fixture
def own_file(tmp_path) -> Path:
    """examples/own_env.py copied into a folder outside the repository."""
    folder = tmp_path / "my_task"
    folder.mkdir()
    return Path(shutil.copy(EXAMPLE, folder / "own_env.py"))


class FlatEnv(gym.Env):
    """A flat Dict with a camera, actions in [-2, 2] without a gripper, success as "is_success"."""

    def __init__(self):
        self.observation_space = spaces.Dict({"pos": spaces.Box(-1, 1, (2,), np.float32),
                                              "vel": spaces.Box(-5, 5, (2,), np.float32),
                                              "cam": spaces.Box(0, 255, (16, 16, 3), np.uint8)})
        self.action_space = spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.last_action = None

    def _obs(self):
        return {"pos": self.np_random.uniform(-1, 1, 2).astype(np.float32), "vel": np.zeros(2, np.float32),
                "cam": np.full((16, 16, 3), 7, np.uint8)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        self.last_action = np.asarray(action)
        return self._obs(), 0.0, False, False, {"is_success": False}


class BoxEnv(gym.Env):
    """A Box observation, actions in [0, 1] with the gripper first (1 closes)."""

    def __init__(self):
        self.observation_space = spaces.Box(-3, 3, (5,), np.float32)
        self.action_space = spaces.Box(0.0, 1.0, (3,), np.float32)
        self.last_action = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-3, 3, 5).astype(np.float32), {}

    def step(self, action):
        self.last_action = np.asarray(action)
        return self.np_random.uniform(-3, 3, 5).astype(np.float32), 0.0, True, False, {"success": True}


def expert_successes(env, expert, episodes: int) -> int:
    """Successful episodes of `expert` driving `env` (seeds 0..episodes-1); every step must
    carry the grasp penalty."""
    successes = 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        expert.reset()
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.get_action(obs).action)
            assert "grasp_penalty" in info
            done = terminated or truncated
        successes += info["success"]
    return successes


def flat_config():
    c = adapter_config()
    c.state_keys = ("pos", "vel")
    c.image_keys = {"front": "cam"}
    c.action_low, c.action_high = (-2.0, -2.0), (2.0, 2.0)
    c.success_key = "is_success"
    return c


def test_a_flat_dict_env_with_a_camera_is_adapted_and_passes_the_env_checker():
    env = SpaceAdapter(FlatEnv(), flat_config())
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"state", "front"} and obs["state"].shape == (4,) and obs["front"].dtype == np.uint8
    assert env.state_layout.names == ("pos", "vel")
    _, _, _, _, info = env.step(np.array([1.0, -0.5], np.float32))
    np.testing.assert_allclose(env.unwrapped.last_action, [2.0, -1.0])  # [-1, 1] onto [-2, 2]
    assert info["success"] is False  # from "is_success"
    agent = SACAgent.create(jax.random.PRNGKey(0), env.observation_space, env.action_space, sac_config())
    assert agent.config.image_keys == ("front",)


def test_a_box_env_is_adapted_with_its_gripper_moved_last_and_its_sign():
    c = adapter_config()
    c.state_keys = ("",)
    c.action_low, c.action_high = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    c.gripper_index = 0
    env = SpaceAdapter(BoxEnv(), c)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs["state"].shape == (5,)
    env.step(np.array([-1.0, 1.0, 1.0], np.float32))  # x low, y high, gripper closes (+1)
    np.testing.assert_allclose(env.unwrapped.last_action, [1.0, 0.0, 1.0])
    assert env.agent_action(env.env_action(np.array([0.2, -0.4, 0.6]))).tolist() == pytest.approx([0.2, -0.4, 0.6])
    c.gripper_close = -1.0  # an env whose low end closes
    env = SpaceAdapter(BoxEnv(), c)
    env.reset(seed=1)
    env.step(np.array([-1.0, 1.0, 1.0], np.float32))
    np.testing.assert_allclose(env.unwrapped.last_action, [0.0, 0.0, 1.0])


def test_the_nested_example_env_is_adapted_and_its_expert_succeeds(own_file):
    exp = load_experiment(str(own_file))
    config = exp.get_config()
    env = with_grasp_penalty(exp.make_env(config), config)  # the learned gripper's penalty reads the adapter's layout
    check_env(exp.make_env(config), skip_render_check=True)
    assert env.get_wrapper_attr("state_layout").names == ("robot/pos", "gripper_pose", "goal")
    assert expert_successes(env, exp.make_expert(env, config, seed=0), 20) == 20


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c, "state_keys", ()), r"state_keys is empty.*\('pos', 'vel'\)"),
    (lambda c: setattr(c, "state_keys", ("pos", "speed")), r"no observation leaf \['speed'\].*pos: \(2,\)"),
    (lambda c: setattr(c, "state_keys", ("cam",)), "not a numeric vector"),
    (lambda c: c.image_keys.update({"front": "pos"}), r"not a uint8 \(H, W, 3\) image"),
    (lambda c: setattr(c, "action_low", None), r"set adapter.action_low=\(-2.0, -2.0\)"),
    (lambda c: setattr(c, "action_high", (1.0, 1.0)), "not the env's action bounds"),
    (lambda c: setattr(c, "gripper_index", 5), "outside the env's 2 action components"),
    (lambda c: setattr(c, "gripper_close", 0.5), "gripper_close is"),
    (lambda c: setattr(c, "gripper_state_key", "gripper"), "not one of adapter.state_keys"),
])
def test_adapter_mismatches_are_errors_that_say_what_to_set(change, message):
    c = flat_config()
    change(c)
    with pytest.raises(ValueError, match=message):
        SpaceAdapter(FlatEnv(), c)


def test_a_success_or_penalty_key_the_env_lacks_fails_at_the_first_step():
    c = flat_config()
    c.success_key = "succeed"
    env = SpaceAdapter(FlatEnv(), c)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"no 'succeed' \(adapter.success_key\).*\['is_success'\]"):
        env.step(np.zeros(2, np.float32))
    c = flat_config()
    c.penalty_key = "discrete_penalty"
    env = SpaceAdapter(FlatEnv(), c)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="adapter.penalty_key"):
        env.step(np.zeros(2, np.float32))


def test_an_unadapted_env_is_refused_by_the_agent_and_by_evaluation(own_file):
    raw = load_experiment(str(own_file)).PointReach()
    box = spaces.Dict({"state": spaces.Box(-1, 1, (7,), np.float32)})
    with pytest.raises(ValueError, match=r"Box\(\[-0.1.*\[0.1.*acts in \[-1, 1\].*SpaceAdapter"):
        SACAgent.create(jax.random.PRNGKey(0), box, raw.action_space, sac_config())
    with pytest.raises(ValueError, match=r"nested: \['robot'\].*SpaceAdapter"):
        SACAgent.create(jax.random.PRNGKey(0), raw.observation_space, spaces.Box(-1, 1, (4,)), sac_config())
    with pytest.raises(ValueError, match="adapter.state_keys=\\('',\\) for a Box"):
        SACAgent.create(jax.random.PRNGKey(0), BoxEnv().observation_space, spaces.Box(-1, 1, (4,)), sac_config())
    no_success = gym.wrappers.TimeLimit(FlatEnv(), 3)  # reports "is_success", not "success"
    with pytest.raises(ValueError, match=r"no 'success' \(its keys: \['is_success'.*adapter.success_key"):
        evaluate(no_success, lambda obs: np.zeros(2, np.float32), 1)


def test_an_experiment_is_a_file_a_folder_or_a_module_anywhere(own_file, tmp_path, monkeypatch):
    exp = load_experiment(str(own_file))
    assert experiment_dir(str(own_file)) == own_file.parent
    assert experiment_dir("own_env") == own_file.parent  # its own exp_name, in this process
    _, config = load_for_entry_point(str(own_file), ["agent.batch_size=64"])
    assert config.exp_name == str(own_file) and config.agent.batch_size == 64
    folder = own_file.parent
    shutil.copy(own_file, folder / "config.py")
    assert load_experiment(str(folder)).get_config().exp_name == "own_env"
    monkeypatch.syspath_prepend(str(tmp_path))
    (folder / "__init__.py").write_text("")
    assert load_experiment("my_task.own_env").PointReach.__name__ == "PointReach"
    assert exp.make_env(exp.get_config()).action_space == spaces.Box(-1, 1, (4,), np.float32)
    for bad, message in [(str(tmp_path / "nowhere.py"), "no such file"), ("no_such_experiment", "known experiments: .*pick_cube_sim.*or give the path"),
                         ("my_task.nothing_here", "unknown experiment")]:
        with pytest.raises(KeyError, match=message):
            load_experiment(bad)
    (folder / "not_an_experiment.py").write_text("def get_config():\n    return None\n")
    with pytest.raises(KeyError, match="lacks make_env"):
        load_experiment(str(folder / "not_an_experiment.py"))
    (folder / "clash.py").write_text(EXAMPLE.read_text().replace('c.exp_name = "own_env"', 'c.exp_name = "pick_cube_sim"'))
    with pytest.raises(KeyError, match="name of a registered experiment"):
        load_experiment(str(folder / "clash.py"))


def test_the_in_process_loop_trains_the_outside_experiment(own_file):
    from serl_launcher.inprocess import run_inprocess

    exp = load_experiment(str(own_file))
    config = exp.get_config()
    apply_overrides(config, [*SMOKE_SETTINGS, "demos.successes_needed=2", "actor.max_env_steps=300",
                             "eval.episodes=3", "eval.every_s=0.0"])
    summary = run_inprocess(exp, config, progress=False)
    assert summary["env_steps"] == 300 and summary["updates"] > 0 and summary["history"][-1]["episodes"] == 3


def test_the_outside_experiment_records_demos_and_runs_through_the_run_scripts(own_file, subprocess_env):
    folder = own_file.parent
    subprocess.run([sys.executable, str(REPO / "scripts" / "record_demos.py"), "--exp_name", str(own_file),
                    "--successes_needed", "3"], check=True, env=subprocess_env, cwd=folder, capture_output=True)
    assert len(list((folder / "demos").glob("*.npz"))) == 1  # beside the experiment's file
    args = role_args("smoke", [*SMOKE_SETTINGS, "demos.allow_none=False"])
    learner = start_role(str(own_file), "learner", args, folder / "learner.log", subprocess_env)
    actor = start_role(str(own_file), "actor", args, folder / "actor.log", subprocess_env)
    metrics = folder / "runs" / "smoke" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 240
        while True:
            records = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
            if any("train/critic_loss" in r for r in records):
                break
            for process, name in ((learner, "learner"), (actor, "actor")):
                assert process.poll() is None, f"the {name} exited: " + (folder / f"{name}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (folder / "learner.log").read_text()[-3000:]
            time.sleep(0.5)
    finally:
        stop([actor, learner])
    assert records[0]["config"]["exp_name"] == str(own_file)  # what every process of the run resolves
    replay = [r for r in records if "replay/demo" in r]
    assert replay and replay[-1]["replay/demo"] > 0 and replay[-1]["replay/online"] > 0
    assert (folder / "runs" / "smoke" / "checkpoints").is_dir()


def test_a_render_of_several_cameras_is_written_as_one_tiled_video(tmp_path):
    import imageio.v3 as iio

    from serl_launcher.utils.video import write_video

    frames = [[np.full((16, 16, 3), 200, np.uint8), np.full((8, 24, 3), 50, np.uint8)] for _ in range(4)]
    path = write_video(tmp_path / "two_cameras.mp4", frames, fps=10)
    video = iio.imread(path)
    assert video.shape == (4, 16, 40, 3)  # side by side, the shorter one padded
    assert abs(int(video[0, 4, 4, 0]) - 200) < 20 and abs(int(video[0, 4, 30, 0]) - 50) < 20
    assert video[0, 14, 30].max() < 30  # the padding is black
    with pytest.raises(ValueError, match="several cameras"):
        write_video(tmp_path / "bad.mp4", [[np.zeros((4, 4))]], fps=10)


def test_the_gym_hil_example_is_an_experiment_with_its_adapter_declared():
    exp = load_experiment(str(REPO / "examples" / "gym_hil_pick_cube.py"))
    config = exp.get_config()
    assert config.adapter.success_key == "succeed" and config.adapter.penalty_key == "discrete_penalty"
    assert config.adapter.action_high == (1.0, 1.0, 1.0, 2.0)


def test_the_gym_hil_example_env_is_adapted_and_its_expert_succeeds():
    """Runs where gym-hil is installed (its own environment: examples/setup_gym_hil.sh)."""
    pytest.importorskip("gym_hil")
    exp = load_experiment(str(REPO / "examples" / "gym_hil_pick_cube.py"))
    config = exp.get_config()
    env = with_grasp_penalty(exp.make_env(config), config)  # its own penalty: our wrapper steps aside
    assert env.observation_space["state"].shape == (21,) and env.action_space.shape == (4,)
    successes = expert_successes(env, exp.make_expert(env, config, seed=0), 10)
    env.close()
    assert successes == 10
