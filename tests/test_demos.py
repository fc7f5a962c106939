"""Demo files: our format, the original HIL-SERL pickle layout, and clear errors for bad files."""

import pickle

import numpy as np
import pytest
from gymnasium import spaces

from serl_launcher.data import (
    DemoFormatError,
    ReplayBuffer,
    load_demos,
    load_demos_into,
    save_demos,
)

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
    path = save_demos(tmp_path / "sub" / "demos.pkl", demos)
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
        load_demos(path, OBS_SPACE, ACT_SPACE),
        load_demos(path, OBS_SPACE),
        load_demos(path),
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
    assert load_demos_into(buf, [path]) == 8
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
    assert load_demos_into(buf, reversed(paths)) == 14
    assert len(buf) == 14
    check_pairs(buf.sample(500))


def _mutated(index, mutate):
    demos = ours(0, 6)
    mutate(demos[index])
    return demos


BAD_FILES = {
    "not_a_pickle": (lambda: b"this is not a pickle\n", "cannot unpickle"),
    "truncated": (lambda: pickle.dumps(ours(0, 3))[:-200], "cannot unpickle"),
    "empty_file": (lambda: b"", "cannot unpickle"),
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
        load_demos(path, *((OBS_SPACE, ACT_SPACE) if with_spaces else ()))


def test_missing_grasp_penalty_and_missing_file(tmp_path):
    demos = ours(0, 3)
    del demos[1]["grasp_penalty"]
    path = write_pickle(tmp_path / "no_penalty.pkl", demos)
    buf = ReplayBuffer(OBS_SPACE, ACT_SPACE, capacity=16, include_grasp_penalty=True)
    with pytest.raises(
        DemoFormatError, match="no_penalty.pkl: transition 1: missing key 'grasp_penalty'"
    ):
        load_demos_into(buf, path)
    assert buf.rows == 0
    with pytest.raises(FileNotFoundError):
        load_demos(tmp_path / "absent.pkl")


def test_save_demos_rejects_bad_transitions(tmp_path):
    demos = ours(0, 3)
    demos[2]["observations"]["state"] = np.array([np.inf] * STATE, np.float32)
    with pytest.raises(
        DemoFormatError,
        match=r"bad.pkl: transition 2: observations\['state'\]: contains NaN or inf",
    ):
        save_demos(tmp_path / "bad.pkl", demos)
    assert not (tmp_path / "bad.pkl").exists()
