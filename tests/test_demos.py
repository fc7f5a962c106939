"""Demo files: our archive format, pickles only behind the opt-in, the original HIL-SERL layout
with its gripper conventions, and clear errors for bad files."""

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
from gymnasium import spaces

from serl_launcher.data import (
    DemoFormatError,
    DemoReading,
    ReplayBuffer,
    load_demos,
    load_demos_into,
    save_demos,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*loading a pickle demo file:UserWarning")  # tested once below
IMG, STATE, ACT = 8, 5, 4
OBS_SPACE = spaces.Dict(
    {
        "state": spaces.Box(-np.inf, np.inf, (STATE,), np.float32),
        "front": spaces.Box(0, 255, (IMG, IMG, 3), np.uint8),
        "wrist": spaces.Box(0, 255, (IMG, IMG, 3), np.uint8),
    }
)
ACT_SPACE = spaces.Box(-1.0, 1.0, (ACT,), np.float32)


def frame(ep, step, lead=()):
    """State and pixels encode (ep, step); `lead=(1,)` adds HIL-SERL's chunk axis."""
    state = np.array([ep, step, 0.0, 1.0, 2.0], np.float32)
    image = np.broadcast_to(np.array([ep, step, 7], np.uint8), (IMG, IMG, 3))
    return {
        "state": state.reshape(lead + state.shape),
        "front": image.reshape(lead + image.shape).copy(),
        "wrist": (255 - image).reshape(lead + image.shape),
    }


def ours(ep, length):
    return [
        {
            "observations": frame(ep, s),
            "next_observations": frame(ep, s + 1),
            "actions": np.full(ACT, 0.1 * s, np.float32),
            "rewards": np.float32(s == length - 1),
            "masks": np.float32(s != length - 1),
            "dones": s == length - 1,
            "intervened": s % 2 == 0,
            "grasp_penalty": np.float32(-0.02 * s),
        }
        for s in range(length)
    ]


def hil_serl(ep, length):
    """record_demos.py's layout: (1, ...) observations, int rewards, infos, no intervened."""
    return [
        {
            "observations": frame(ep, s, lead=(1,)),
            "next_observations": frame(ep, s + 1, lead=(1,)),
            "actions": np.full(ACT, 0.1 * s),  # float64
            "rewards": int(s == length - 1),
            "masks": 1.0 - (s == length - 1),
            "dones": s == length - 1,
            "infos": {
                "succeed": s == length - 1,
                "grasp_penalty": -0.02 * s,
                "intervene_action": None,
            },
        }
        for s in range(length)
    ]


PICKLES = DemoReading(allow_pickle=True)
HIL_SIM = DemoReading(allow_pickle=True, hil_serl_gripper_close=1.0)
HIL_REAL = DemoReading(allow_pickle=True, hil_serl_gripper_close=-1.0)


def write_pickle(path, obj):
    path.write_bytes(pickle.dumps(obj))
    return path


def check_pairs(batch):
    s, n = batch["observations"]["state"], batch["next_observations"]["state"]
    np.testing.assert_array_equal(n[:, 0], s[:, 0])
    np.testing.assert_array_equal(n[:, 1], s[:, 1] + 1)
    np.testing.assert_array_equal(batch["observations"]["front"][:, 0, 0, 1], s[:, 1])
    np.testing.assert_array_equal(batch["next_observations"]["wrist"][:, 0, 0, 1], 255 - n[:, 1])


def test_round_trip_in_our_format(tmp_path):
    demos = ours(0, 6) + ours(1, 4)
    path = save_demos(tmp_path / "sub" / "demos.npz", demos)
    assert path.read_bytes()[:4] == b"PK\x03\x04"  # a zip of plain arrays, nothing to unpickle
    with np.load(path, allow_pickle=False) as npz:
        assert json.loads(bytes(npz["manifest"]))["count"] == 10 and npz["observations/front"].shape == (10, IMG, IMG, 3)
    loaded = load_demos(path, OBS_SPACE, ACT_SPACE)
    assert len(loaded) == len(demos)
    for a, b in zip(demos, loaded, strict=True):
        for key in ("actions", "rewards", "masks", "dones", "intervened", "grasp_penalty"):
            np.testing.assert_array_equal(a[key], b[key])
            assert np.asarray(b[key]).dtype == np.asarray(a[key]).dtype
        for key in ("observations", "next_observations"):
            for k in OBS_SPACE.spaces:
                np.testing.assert_array_equal(a[key][k], b[key][k])
    assert not list(path.parent.glob(".*tmp*"))


def test_hil_serl_format_loads(tmp_path):
    path = write_pickle(
        tmp_path / "pick_cube_2_demos_2024-01-01_00-00-00.pkl", hil_serl(0, 5) + hil_serl(1, 3)
    )
    for loaded in (
        load_demos(path, OBS_SPACE, ACT_SPACE, reading=HIL_SIM),
        load_demos(path, OBS_SPACE, reading=HIL_SIM),
        load_demos(path, reading=HIL_SIM),
    ):
        assert len(loaded) == 8
        t = loaded[3]
        assert set(t) == {
            "observations",
            "next_observations",
            "actions",
            "rewards",
            "masks",
            "dones",
            "intervened",
            "grasp_penalty",
        }
        assert (
            t["observations"]["state"].shape == (STATE,)
            and t["observations"]["state"].dtype == np.float32
        )
        assert t["next_observations"]["front"].shape == (IMG, IMG, 3)
        assert t["actions"].dtype == np.float32 and t["rewards"].dtype == np.float32
        assert t["intervened"] and t["grasp_penalty"] == np.float32(-0.06)
        assert loaded[4]["dones"] and loaded[4]["rewards"] == 1.0 and loaded[4]["masks"] == 0.0
    buf = ReplayBuffer(OBS_SPACE, ACT_SPACE, capacity=32, include_grasp_penalty=True, seed=0)
    assert load_demos_into(buf, [path], HIL_SIM) == 8
    assert len(buf) == 8 and buf.rows == 10
    batch = buf.sample(200)
    check_pairs(batch)
    assert batch["intervened"].all()


def test_split_dumps_loaded_out_of_order_are_not_stitched(tmp_path):
    # The original's bug B2: dumps cut mid-episode, loaded in the wrong order.
    demos = hil_serl(0, 7) + hil_serl(1, 7)
    paths = [
        write_pickle(tmp_path / f"transitions_{i}.pkl", demos[i : i + 5]) for i in range(0, 14, 5)
    ]
    buf = ReplayBuffer(OBS_SPACE, ACT_SPACE, capacity=64, seed=0)
    assert load_demos_into(buf, reversed(paths), HIL_SIM) == 14
    assert len(buf) == 14
    check_pairs(buf.sample(500))


def _mutated(index, mutate):
    demos = ours(0, 6)
    mutate(demos[index])
    return demos


BAD_FILES = {
    "not_a_pickle": (lambda: b"this is not a pickle\n", "cannot unpickle"),
    "truncated": (lambda: pickle.dumps(ours(0, 3))[:-200], "cannot unpickle"),
    "empty_file": (lambda: b"", r"empty file \(0 bytes\)"),
    "empty_list": (lambda: pickle.dumps([]), "no transitions"),
    "top_level_dict": (
        lambda: pickle.dumps({"observations": []}),
        "expected a list of transition dicts, got dict",
    ),
    "list_of_ints": (lambda: pickle.dumps([1, 2]), "transition 0: expected a transition dict"),
    "missing_key": (
        lambda: pickle.dumps(_mutated(3, lambda t: t.pop("actions"))),
        r"transition 3: missing key\(s\) \['actions'\]",
    ),
    "missing_camera": (
        lambda: pickle.dumps(_mutated(1, lambda t: t["next_observations"].pop("wrist"))),
        r"transition 1: next_observations: missing key\(s\) \['wrist'\]",
    ),
    "wrong_image_shape": (
        lambda: pickle.dumps(
            _mutated(2, lambda t: t["observations"].update(front=np.zeros((4, 4, 3), np.uint8)))
        ),
        r"transition 2: observations\['front'\]: shape \(4, 4, 3\)",
    ),
    "float_image": (
        lambda: pickle.dumps(
            _mutated(4, lambda t: t["observations"].update(wrist=np.zeros((IMG, IMG, 3))))
        ),
        r"transition 4: observations\['wrist'\]: dtype float64",
    ),
    "nan_action": (
        lambda: pickle.dumps(_mutated(5, lambda t: t["actions"].__setitem__(1, np.nan))),
        "transition 5: actions: contains NaN",
    ),
    "wrong_action_size": (
        lambda: pickle.dumps(_mutated(0, lambda t: t.update(actions=np.zeros(7)))),
        r"transition 0: actions: shape \(7,\)",
    ),
    "string_reward": (
        lambda: pickle.dumps(_mutated(2, lambda t: t.update(rewards="1"))),
        "transition 2: rewards: dtype <U1 is not numeric",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
@pytest.mark.parametrize("with_spaces", [True, False])
def test_bad_files_name_the_file_and_the_problem(tmp_path, name, with_spaces):
    payload, match = BAD_FILES[name]
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(payload())
    if name in ("wrong_action_size",) and not with_spaces:
        match = (
            r"transition 1: actions: shape \(4,\), expected \(7,\)"  # checked against transition 0
        )
    with pytest.raises(DemoFormatError, match=f"{path.name}: {match}"):
        load_demos(path, *((OBS_SPACE, ACT_SPACE) if with_spaces else ()), reading=PICKLES)


def test_missing_grasp_penalty_and_missing_file(tmp_path):
    demos = ours(0, 3)
    del demos[1]["grasp_penalty"]
    path = write_pickle(tmp_path / "no_penalty.pkl", demos)
    buf = ReplayBuffer(OBS_SPACE, ACT_SPACE, capacity=16, include_grasp_penalty=True)
    with pytest.raises(
        DemoFormatError, match="no_penalty.pkl: transition 1: missing key 'grasp_penalty'"
    ):
        load_demos_into(buf, path, PICKLES)
    assert buf.rows == 0
    with pytest.raises(FileNotFoundError):
        load_demos(tmp_path / "absent.pkl")


def test_save_demos_rejects_bad_transitions(tmp_path):
    demos = ours(0, 3)
    demos[2]["observations"]["state"] = np.array([np.inf] * STATE, np.float32)
    with pytest.raises(
        DemoFormatError,
        match=r"bad.npz: transition 2: observations\['state'\]: contains NaN or inf",
    ):
        save_demos(tmp_path / "bad.npz", demos)
    assert not (tmp_path / "bad.npz").exists()
    with pytest.raises(DemoFormatError, match="no transitions to save"):
        save_demos(tmp_path / "none.npz", [])
    with pytest.raises(ValueError, match="ending in .npz"):
        save_demos(tmp_path / "demos.pkl", ours(0, 3))
    partial = ours(0, 3)
    del partial[0]["grasp_penalty"]
    with pytest.raises(DemoFormatError, match="grasp_penalty on 2 of 3 transitions only"):
        save_demos(tmp_path / "partial.npz", partial)
    assert not list(tmp_path.iterdir())


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('the pickle ran code')",))


def test_pickles_need_the_opt_in_and_warn(tmp_path):
    path = write_pickle(tmp_path / "old.pkl", ours(0, 4))
    with pytest.raises(DemoFormatError, match="old.pkl: not a demo archive .*runs any code.*convert_demos.py"):
        load_demos(path)
    with pytest.warns(UserWarning, match="pickles run any code"):
        assert len(load_demos(path, OBS_SPACE, ACT_SPACE, reading=PICKLES)) == 4
    hostile = write_pickle(tmp_path / "hostile.pkl", [Boom()])
    with pytest.raises(DemoFormatError, match="not a demo archive"):
        load_demos(hostile)  # refused before anything is unpickled: no SystemExit


def test_original_files_need_their_gripper_convention(tmp_path):
    demos = hil_serl(0, 4)
    for t in demos:
        t["actions"][-1] = -1.0  # recorded on HIL-SERL's real Franka: -1 closed the gripper
    path = write_pickle(tmp_path / "franka.pkl", demos)
    with pytest.raises(DemoFormatError, match=r"franka.pkl: transition 0: .*hil_serl_gripper_close=-1"):
        load_demos(path, OBS_SPACE, ACT_SPACE, reading=PICKLES)
    real = load_demos(path, OBS_SPACE, ACT_SPACE, reading=HIL_REAL)
    assert all(t["actions"][-1] == 1.0 for t in real)  # closes here: +1
    np.testing.assert_allclose(real[2]["actions"][:-1], 0.2)  # the arm's components are untouched
    sim = load_demos(path, OBS_SPACE, ACT_SPACE, reading=HIL_SIM)
    assert all(t["actions"][-1] == -1.0 for t in sim)
    assert demos[0]["actions"][-1] == -1.0  # the caller's data is not modified
    ours_file = save_demos(tmp_path / "ours.npz", ours(0, 3))  # our files have no convention to give
    assert len(load_demos(ours_file, reading=HIL_REAL)) == 3
    np.testing.assert_allclose([t["actions"][-1] for t in load_demos(ours_file, reading=HIL_REAL)], [0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="-1 .* or \\+1"):
        DemoReading(hil_serl_gripper_close=0.5)


def _archive(tmp_path, name, mutate):
    path = save_demos(tmp_path / "good.npz", ours(0, 4))
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    mutate(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (tmp_path / name).write_bytes(buffer.getvalue())
    return tmp_path / name


@pytest.mark.parametrize("name, mutate, match", [
    ("no_manifest.npz", lambda a: a.pop("manifest"), "not a readable demo archive"),
    ("other_format.npz", lambda a: a.update(manifest=np.frombuffer(b'{"format": "x"}', np.uint8)),
     "no serl-demos manifest"),
    ("future.npz", lambda a: a.update(manifest=np.frombuffer(
        json.dumps({"format": "serl-demos", "version": 99, "count": 4}).encode(), np.uint8)), "format version 99"),
    ("object_array.npz", lambda a: a.update(actions=np.array([Boom()] * 4, dtype=object)), "not a readable"),
    ("short_field.npz", lambda a: a.update(rewards=a["rewards"][:3]), "'rewards' holds \\(3,\\) rows"),
    ("nan.npz", lambda a: a["actions"].__setitem__((2, 0), np.nan), "transition 2: actions: contains NaN"),
    ("no_camera.npz", lambda a: a.pop("next_observations/wrist"), r"missing key\(s\) \['wrist'\]"),
])
def test_bad_archives_name_the_file_and_the_problem(tmp_path, name, mutate, match):
    path = _archive(tmp_path, name, mutate)
    with pytest.raises(DemoFormatError, match=f"{name}: .*{match}"):
        load_demos(path, OBS_SPACE, ACT_SPACE)


def test_an_archive_declaring_more_than_memory_is_refused_before_loading(tmp_path):
    """A forged .npy header (a huge shape over a few bytes) is caught from the headers alone."""
    path = save_demos(tmp_path / "good.npz", ours(0, 2))
    buffer = io.BytesIO()
    header = {"descr": "|u1", "fortran_order": False, "shape": (1 << 50,)}
    np.lib.format.write_array_header_2_0(buffer, header)
    forged = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path) as good, zipfile.ZipFile(forged, "w") as out:
        for info in good.infolist():
            if info.filename != "observations/front.npy":
                out.writestr(info.filename, good.read(info))
        out.writestr("observations/front.npy", buffer.getvalue() + b"\0" * 16)
    with pytest.raises(DemoFormatError, match=r"bomb.npz: not a readable demo archive .*declare .* GiB"):
        load_demos(forged)


def test_garbage_named_npz_is_called_corrupt(tmp_path):
    (tmp_path / "demos.npz").write_bytes(b"garbage, not a zip")
    with pytest.raises(DemoFormatError, match="demos.npz: not a zip archive"):
        load_demos(tmp_path / "demos.npz")


def test_a_truncated_archive_is_refused(tmp_path):
    path = save_demos(tmp_path / "demos.npz", ours(0, 4))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DemoFormatError, match="demos.npz: not a readable demo archive"):
        load_demos(path)


def test_convert_script_turns_an_original_franka_file_into_an_archive(tmp_path, python, subprocess_env):
    """Real pick_cube_sim demos, rewritten in HIL-SERL's real-Franka layout (chunk axis, infos,
    -1 closes), converted by the script: the archive holds our actions and the penalties."""
    import subprocess

    import gymnasium as gym
    from conftest import REPO

    from experiments.mappings import load_experiment
    from serl_launcher.wrappers.grasp_penalty import with_grasp_penalty
    from sim_envs.experts import collect_expert_demos

    config = load_experiment("pick_cube_sim").get_config()
    env = with_grasp_penalty(gym.make("PandaPickCube-v0", config=config.env), config)
    demos = collect_expert_demos(env, 1, seed=0)
    env.close()
    original = [{
        "observations": {k: v[None] for k, v in t["observations"].items()},
        "next_observations": {k: v[None] for k, v in t["next_observations"].items()},
        "actions": np.concatenate([t["actions"][:-1], -t["actions"][-1:]]).astype(np.float64),
        "rewards": int(t["rewards"]), "masks": float(t["masks"]), "dones": bool(t["dones"]),
        "infos": {"grasp_penalty": float(t["grasp_penalty"])},
    } for t in demos]
    source = write_pickle(tmp_path / "franka.pkl", original)
    out = tmp_path / "franka.npz"
    command = [python, str(REPO / "scripts/convert_demos.py"), "--exp_name", "pick_cube_sim",
               "--input", str(source), "--output", str(out)]
    refused = subprocess.run(command, capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert refused.returncode != 0 and "hil_serl_gripper_close=-1" in refused.stderr and not out.exists()
    done = subprocess.run([*command, "--hil_serl_gripper_close", "-1"], capture_output=True, text=True,
                          env=subprocess_env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"converted {len(demos)} transitions (1 episode ends)" in done.stdout
    converted = load_demos(out)
    np.testing.assert_array_equal([t["actions"] for t in converted], [t["actions"] for t in demos])
    np.testing.assert_array_equal([t["grasp_penalty"] for t in converted], [t["grasp_penalty"] for t in demos])
    assert min(t["grasp_penalty"] for t in converted) < 0


def test_the_learner_refuses_to_start_without_demos_unless_told(tmp_path, subprocess_env):
    import subprocess

    from conftest import REPO

    exp = REPO / "experiments" / "pick_cube_sim"
    if any((exp / "demos").glob("*")):
        pytest.skip("this checkout has demo files of its own in experiments/pick_cube_sim/demos")
    result = subprocess.run(["bash", str(exp / "run_learner.sh"), "--checkpoint_path", str(tmp_path / "run")],
                            capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert result.returncode != 0
    assert "no demonstrations for 'pick_cube_sim'" in result.stderr and "demos.allow_none=True" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "old.pkl").write_bytes(pickle.dumps([]))
    result = subprocess.run(["bash", str(exp / "run_learner.sh"), "--checkpoint_path", str(tmp_path / "run2"),
                             "--set", f"demos.paths=({str(tmp_path / 'old.pkl')!r},)"],
                            capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert result.returncode != 0 and "old.pkl: not a demo archive" in result.stderr, result.stderr[-2000:]


def test_a_file_names_its_state_fields_and_one_recorded_with_other_fields_is_refused(tmp_path):
    """Two layouts of the same size (a task's env.state_fields changed since recording): read
    silently, every value would sit in another field's place."""
    from serl_launcher.conventions import StateLayout
    from serl_launcher.data import demo_state_layout

    recorded = StateLayout((("tcp_pos", 3), ("hole_pos", 2)))
    now = StateLayout((("tcp_pos", 3), ("hole_offset", 2)))
    path = save_demos(tmp_path / "demos.npz", ours(0, 4), recorded)
    assert demo_state_layout(path) == recorded
    assert len(load_demos(path, OBS_SPACE, ACT_SPACE, state_layout=recorded)) == 4
    with pytest.raises(DemoFormatError, match=r"hole_pos \(2\)\]; this env's state is .*hole_offset \(2\)\].*"
                                              r"env.state_fields=\('tcp_pos', 'hole_pos'\)"):
        load_demos(path, OBS_SPACE, ACT_SPACE, state_layout=now)
    buf = ReplayBuffer(OBS_SPACE, ACT_SPACE, capacity=32)
    with pytest.raises(DemoFormatError, match="recorded with the state fields"):
        load_demos_into(buf, [path], state_layout=now)
    assert len(buf) == 0  # nothing of the file went in

    # A file written before layouts were recorded loads, with a warning that it was not checked.
    old = save_demos(tmp_path / "old.npz", ours(0, 3))
    assert demo_state_layout(old) is None
    with pytest.warns(UserWarning, match="does not name its state's fields"):
        assert len(load_demos(old, OBS_SPACE, ACT_SPACE, state_layout=now)) == 3
    # A layout that does not fit the state, or a forged one, is an error.
    with pytest.raises(DemoFormatError, match="holds 4 values"):
        save_demos(tmp_path / "bad.npz", ours(0, 3), StateLayout((("tcp_pos", 4),)))
    forged = tmp_path / "forged.npz"
    with np.load(path) as npz:
        arrays = dict(npz)
    manifest = json.loads(bytes(arrays["manifest"]))
    manifest["state_layout"] = [["tcp_pos", "3"]]
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    np.savez(forged, **arrays)
    with pytest.raises(DemoFormatError, match="a state layout is a non-empty list"):
        load_demos(forged, OBS_SPACE, ACT_SPACE, state_layout=now)
