"""LeRobot datasets (format v3.0): export read back through the format's reference readers (HF
datasets on the parquet files with the features LeRobot derives from info.json, PyAV on the
videos by timestamp, as LeRobotDataset does), a dataset written in LeRobot's layout by this test
imported with a mapping, the two scripts end to end, and every malformed dataset refused."""

import json
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from conftest import REPO
from gymnasium import spaces

av = pytest.importorskip("av")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from serl_launcher.data import load_demos, save_demos  # noqa: E402
from serl_launcher.data.episodes import Episode, split_episodes  # noqa: E402
from serl_launcher.data.lerobot import (  # noqa: E402
    LeRobotFormatError,
    LeRobotMapping,
    export_lerobot,
    import_lerobot,
)

H = W = 32
OBS_SPACE = spaces.Dict({
    "state": spaces.Box(-np.inf, np.inf, (5,), np.float32),
    "front": spaces.Box(0, 255, (H, W, 3), np.uint8),
    "wrist": spaces.Box(0, 255, (H, W, 3), np.uint8),
})
ACT_SPACE = spaces.Box(-1.0, 1.0, (4,), np.float32)


def frame(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth image (video codecs keep smooth images close) that differs with `seed`."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.03, 0.12, 2)
    return np.stack([(127 + 100 * np.sin(a * x + seed)), (127 + 100 * np.cos(b * y + seed)),
                     np.full((h, w), 40 + (seed * 7) % 170)], -1).astype(np.uint8)


def episode_transitions(e: int, length: int, terminal: bool, penalty: bool = True) -> list[dict]:
    rng = np.random.default_rng(e)
    obs = [{"state": rng.normal(size=5).astype(np.float32), "front": frame(1000 * e + i),
            "wrist": frame(1000 * e + i + 500)} for i in range(length + 1)]
    out = []
    for i in range(length):
        last = i == length - 1
        t = {"observations": obs[i], "next_observations": obs[i + 1],
             "actions": rng.uniform(-1, 1, 4).astype(np.float32),
             "rewards": np.float32(1.0 if last and terminal else 0.0),
             "masks": np.float32(0.0 if last and terminal else 1.0), "dones": last,
             "intervened": bool(i % 3 == 0)}
        if penalty:
            t["grasp_penalty"] = np.float32(-0.02 if i % 4 == 0 else 0.0)
        out.append(t)
    return out


@pytest.fixture
def episodes():
    return [Episode(episode_transitions(e, n, terminal), complete=True)
            for e, (n, terminal) in enumerate([(7, True), (5, False), (9, True)])]


def lerobot_hf_features(info):
    """What LeRobot's get_hf_features_from_features builds from info.json (video features are
    not in the parquet files)."""
    import datasets

    out = {}
    for name, ft in info["features"].items():
        if ft["dtype"] == "video":
            continue
        shape = tuple(ft["shape"])
        out[name] = (datasets.Value(ft["dtype"]) if shape == (1,)
                     else datasets.Sequence(length=shape[0], feature=datasets.Value(ft["dtype"])))
    return datasets.Features(out)


def assert_same_frames(decoded, original, tolerance=8.0):
    """Lossy video: each decoded frame is close to its original (mean absolute error in 0..255)
    and closer to it than to any other frame (so none is shifted)."""
    error = np.abs(decoded[:, None] - original[None]).mean(axis=(2, 3, 4))  # decoded x original
    assert error.diagonal().max() < tolerance, error.diagonal()
    np.testing.assert_array_equal(error.argmin(axis=1), np.arange(len(decoded)))


def decode_at(path, times, tolerance=1e-4):
    """Frames nearest to `times` (seconds), as LeRobot's pyav decoder picks them."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    stamps = np.array([t for t, _ in decoded])
    out = []
    for t in times:
        i = int(np.argmin(np.abs(stamps - t)))
        assert abs(stamps[i] - t) < tolerance, (t, stamps[i])
        out.append(decoded[i][1])
    return np.stack(out)


def test_an_export_reads_back_through_the_formats_reference_readers(tmp_path, episodes):
    datasets = pytest.importorskip("datasets")
    root = tmp_path / "ds"
    summary = export_lerobot(root, episodes, fps=10, task="pick the cube", robot_type="panda", codec="libx264")
    assert summary["episodes"] == 3 and summary["frames"] == 21 and summary["cameras"] == ["front", "wrist"]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_frames"] == 21
    assert info["total_episodes"] == 3 and info["splits"] == {"train": "0:3"}
    assert info["features"]["observation.images.front"]["dtype"] == "video"
    assert info["features"]["observation.images.front"]["shape"] == [H, W, 3]
    assert info["features"]["observation.state"] == {"dtype": "float32", "shape": [5], "names": None}

    # The frames, as LeRobotDataset loads them: HF datasets over data/*/*.parquet with its features.
    files = sorted(str(p) for p in (root / "data").glob("*/*.parquet"))
    loaded = datasets.Dataset.from_parquet(files, features=lerobot_hf_features(info), cache_dir=str(tmp_path / "hf"))
    table = {name: np.asarray(loaded.with_format("numpy")[name]) for name in loaded.column_names}
    assert len(loaded) == 21
    flat = [t for e in episodes for t in e.transitions]
    np.testing.assert_array_equal(table["action"], np.stack([t["actions"] for t in flat]))
    np.testing.assert_array_equal(table["observation.state"], np.stack([t["observations"]["state"] for t in flat]))
    np.testing.assert_array_equal(table["next.reward"], [t["rewards"] for t in flat])
    np.testing.assert_array_equal(table["next.done"], [t["dones"] for t in flat])
    np.testing.assert_array_equal(table["next.truncated"], [t["dones"] and t["masks"] == 1 for t in flat])
    np.testing.assert_array_equal(table["complementary_info.is_intervention"], [t["intervened"] for t in flat])
    np.testing.assert_allclose(table["complementary_info.discrete_penalty"], [t["grasp_penalty"] for t in flat])
    np.testing.assert_array_equal(table["index"], np.arange(21))
    np.testing.assert_array_equal(table["episode_index"], np.repeat([0, 1, 2], [7, 5, 9]))
    np.testing.assert_array_equal(table["frame_index"], np.concatenate([np.arange(7), np.arange(5), np.arange(9)]))
    np.testing.assert_allclose(table["timestamp"], table["frame_index"] / 10, atol=1e-6)

    # Episode metadata and tasks, as LeRobotDatasetMetadata reads them.
    meta = datasets.Dataset.from_parquet(sorted(str(p) for p in (root / "meta/episodes").glob("*/*.parquet")),
                                         cache_dir=str(tmp_path / "hf"))
    assert meta["length"] == [7, 5, 9] and meta["dataset_from_index"] == [0, 7, 12]
    assert meta["dataset_to_index"] == [7, 12, 21] and meta["tasks"] == [["pick the cube"]] * 3
    pandas = pytest.importorskip("pandas")
    tasks = pandas.read_parquet(root / "meta/tasks.parquet")
    assert tasks.loc["pick the cube"].task_index == 0 and tasks.iloc[0].name == "pick the cube"
    stats = json.loads((root / "meta/stats.json").read_text())
    np.testing.assert_allclose(stats["action"]["mean"], np.stack([t["actions"] for t in flat]).mean(0), rtol=1e-5)
    assert np.asarray(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)

    # Each frame from its episode's video at from_timestamp + timestamp, within LeRobot's 1e-4 s.
    for camera in ("front", "wrist"):
        key = f"observation.images.{camera}"
        path = root / info["video_path"].format(video_key=key, chunk_index=0, file_index=0)
        times = [meta[f"videos/{key}/from_timestamp"][e] + ts
                 for e, ts in zip(table["episode_index"], table["timestamp"], strict=True)]
        decoded = decode_at(path, times).astype(int)
        original = np.stack([t["observations"][camera] for t in flat]).astype(int)
        assert_same_frames(decoded, original)


def test_the_export_then_import_round_trip_gives_back_the_transitions(tmp_path, episodes):
    root = tmp_path / "ds"
    export_lerobot(root, episodes, fps=10, task="t", codec="libsvtav1")
    imported, report = import_lerobot(root, OBS_SPACE, ACT_SPACE, grasp_penalty=True)
    for camera in ("front", "wrist"):
        assert_same_frames(np.stack([t["observations"][camera] for e in imported for t in e]).astype(int),
                           np.stack([t["observations"][camera] for e in episodes for t in e.transitions]).astype(int))
    assert report["episodes"] == 3 and report["transitions"] == 21 and [len(e) for e in imported] == [7, 5, 9]
    for ours, back in zip(episodes, imported, strict=True):
        for i, (a, b) in enumerate(zip(ours.transitions, back, strict=True)):
            for key in ("actions", "rewards", "masks", "dones", "intervened", "grasp_penalty"):
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            np.testing.assert_array_equal(a["observations"]["state"], b["observations"]["state"])
            if i < len(back) - 1:  # the observation after an episode's last step is not stored
                np.testing.assert_array_equal(a["next_observations"]["state"], b["next_observations"]["state"])
            else:
                np.testing.assert_array_equal(b["next_observations"]["state"], b["observations"]["state"])


def write_lerobot_fixture(root, episodes, size=(48, 64), list_type="list", files=2):
    """A dataset in LeRobot v3.0's layout, written here with pyarrow and PyAV the way LeRobot's
    recorder does: per episode an mp4 concatenated into one file per camera (from_timestamp =
    the duration so far), variable-length list columns (what `datasets` writes for Sequence),
    the frames split over `files` parquet files, extra state components, the gripper in [0, 2]
    with 0 = close (gym-hil), a 'top' camera at another size. Returns the source frames."""
    root.mkdir(parents=True)
    fps, rows, meta_rows, sources = 10, [], [], {"top": [], "wrist": []}
    start = 0
    for e, episode in enumerate(episodes):
        for i, t in enumerate(episode):
            action = t["actions"].astype(np.float64).copy()
            action[3] = 1.0 - action[3]  # this project's +1 (close) -> 0
            rows.append({"observation.state": np.concatenate([t["observations"]["state"], [9.0, 9.0]]).tolist(),
                         "action": action.tolist(), "next.reward": float(t["rewards"]),
                         "next.done": bool(t["dones"]), "complementary_info.discrete_penalty": float(t["grasp_penalty"]),
                         "timestamp": i / fps, "frame_index": i, "episode_index": e, "index": start + i, "task_index": 0})
            sources["top"].append(frame(3 * (start + i), *size))
            sources["wrist"].append(t["observations"]["wrist"])
        meta_rows.append({"episode_index": e, "tasks": ["pick"], "length": len(episode),
                          "data/chunk_index": 0, "data/file_index": min(e, files - 1),
                          "dataset_from_index": start, "dataset_to_index": start + len(episode)})
        start += len(episode)
    bounds = np.cumsum([0, *[len(e) for e in episodes]])
    for camera, stack in sources.items():
        key = f"observation.images.{camera}"
        path = root / f"videos/{key}/chunk-000/file-000.mp4"
        path.parent.mkdir(parents=True)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps, options={"crf": "18", "g": "2"})
            stream.height, stream.width = stack[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = Fraction(1, fps)
            for i, image in enumerate(stack):
                video_frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                video_frame.pts = i
                for packet in stream.encode(video_frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        for e, row in enumerate(meta_rows):
            row |= {f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": bounds[e] / fps, f"videos/{key}/to_timestamp": bounds[e + 1] / fps}
    vector = pa.list_(pa.float32()) if list_type == "list" else None
    schema = pa.schema([("observation.state", vector), ("action", vector), ("next.reward", pa.float32()),
                        ("next.done", pa.bool_()), ("complementary_info.discrete_penalty", pa.float32()),
                        ("timestamp", pa.float32()), ("frame_index", pa.int64()), ("episode_index", pa.int64()),
                        ("index", pa.int64()), ("task_index", pa.int64())])
    for f in range(files):
        part = [r for r in rows if min(r["episode_index"], files - 1) == f]
        path = root / f"data/chunk-000/file-{f:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(part, schema=schema), path)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(meta_rows), root / "meta/episodes/chunk-000/file-000.parquet")
    video = {"dtype": "video", "shape": [*size, 3], "names": ["height", "width", "channels"]}
    info = {"codebase_version": "v3.0", "robot_type": "panda", "total_episodes": len(episodes),
            "total_frames": int(bounds[-1]), "total_tasks": 1, "chunks_size": 1000, "fps": fps,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": {"observation.state": {"dtype": "float32", "shape": [7], "names": None},
                         "observation.images.top": video, "observation.images.wrist": {**video, "shape": [H, W, 3]},
                         "action": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "gripper"]},
                         "next.reward": {"dtype": "float32", "shape": [1], "names": None},
                         "next.done": {"dtype": "bool", "shape": [1], "names": None},
                         "complementary_info.discrete_penalty": {"dtype": "float32", "shape": [1], "names": None},
                         **{k: {"dtype": "int64", "shape": [1], "names": None}
                            for k in ("frame_index", "episode_index", "index", "task_index")},
                         "timestamp": {"dtype": "float32", "shape": [1], "names": None}}}
    (root / "meta/info.json").write_text(json.dumps(info))
    return sources


GYM_HIL = LeRobotMapping(observations={"state": "observation.state[0:5]", "front": "observation.images.top"},
                         action_low=(-1, -1, -1, 0), action_high=(1, 1, 1, 2), gripper_close=-1,
                         crops={"front": (8, 4, 48, 40)})


def test_a_dataset_in_lerobots_layout_imports_with_a_mapping(tmp_path):
    import cv2

    source = [episode_transitions(e, n, terminal=True) for e, n in enumerate([6, 4, 8])]
    frames = write_lerobot_fixture(tmp_path / "hil", source)
    imported, report = import_lerobot(tmp_path / "hil", OBS_SPACE, ACT_SPACE, GYM_HIL, grasp_penalty=True)
    assert [len(e) for e in imported] == [6, 4, 8] and report["observations"]["front"] == "observation.images.top"
    flat_in, flat_out = [t for e in source for t in e], [t for e in imported for t in e]
    for a, b in zip(flat_in, flat_out, strict=True):
        np.testing.assert_allclose(b["actions"], a["actions"], atol=1e-6)  # [0, 2] with 0 = close, mapped back
        np.testing.assert_array_equal(b["observations"]["state"], a["observations"]["state"])
        assert b["rewards"] == a["rewards"] and b["dones"] == a["dones"] and b["masks"] == a["masks"]
        assert b["intervened"] and b["grasp_penalty"] == a["grasp_penalty"]  # no intervention feature: demos
    expected = np.stack([cv2.resize(f[4:44, 8:56], (W, H), interpolation=cv2.INTER_AREA) for f in frames["top"]])
    assert_same_frames(np.stack([t["observations"]["front"] for t in flat_out]).astype(int), expected.astype(int))
    assert_same_frames(np.stack([t["observations"]["wrist"] for t in flat_out]).astype(int),
                       np.stack([t["observations"]["wrist"] for t in flat_in]).astype(int))
    # Only some episodes, and the same frames for them.
    some, _ = import_lerobot(tmp_path / "hil", OBS_SPACE, ACT_SPACE, GYM_HIL, grasp_penalty=True, episodes=[2])
    assert len(some) == 1 and len(some[0]) == 8
    np.testing.assert_array_equal(some[0][3]["observations"]["front"], imported[2][3]["observations"]["front"])


def test_malformed_datasets_and_mappings_are_refused_naming_the_problem(tmp_path):
    source = [episode_transitions(e, n, terminal=True) for e, n in enumerate([4, 3])]
    good = tmp_path / "good"
    write_lerobot_fixture(good, source, files=1)

    def variant(name, edit):
        root = tmp_path / name
        shutil.copytree(good, root)
        edit(root)
        return root

    def info_edit(change):
        def edit(root):
            info = json.loads((root / "meta/info.json").read_text())
            change(info)
            (root / "meta/info.json").write_text(json.dumps(info))
        return edit

    def refused(root, match, mapping=GYM_HIL, **kw):
        with pytest.raises(LeRobotFormatError, match=match):
            import_lerobot(root, OBS_SPACE, ACT_SPACE, mapping, **kw)

    refused(tmp_path / "nothing", "no meta/info.json")
    refused(variant("v21", info_edit(lambda i: i.update(codebase_version="v2.1"))), "v2.1 dataset.*convert_dataset_v21_to_v30")
    refused(variant("v4", info_edit(lambda i: i.update(codebase_version="v4.0"))), "newer than the v3.0")
    refused(variant("junk", lambda r: (r / "meta/info.json").write_text("{not json")), "unreadable")
    refused(good, "'observation.images.front'.*its features: action", mapping=LeRobotMapping())
    refused(good, "needs a grasp penalty", mapping=dataclass_replace(GYM_HIL, grasp_penalty="nope"), grasp_penalty=True)
    refused(good, "outside demos.lerobot.action_low/high",
            mapping=dataclass_replace(GYM_HIL, action_low=(-1, -1, -1, 0.5), action_high=(1, 1, 1, 2)))
    refused(good, "outside the experiment's action space",
            mapping=dataclass_replace(GYM_HIL, action_low=(), action_high=()))  # [0, 2] taken as is
    refused(good, "shape \\(7,\\), the experiment's is \\(5,\\)",
            mapping=dataclass_replace(GYM_HIL, observations={**GYM_HIL.observations, "state": "observation.state"}))
    refused(good, "not inside the 64x48", mapping=dataclass_replace(GYM_HIL, crops={"front": (40, 0, 48, 40)}))
    refused(good, "no reward feature.*success_at_end", mapping=dataclass_replace(GYM_HIL, reward="r"))
    refused(good, "no episode\\(s\\) \\[7\\]", episodes=[7], grasp_penalty=True)
    refused(variant("novideo", lambda r: (r / "videos/observation.images.top/chunk-000/file-000.mp4").unlink()),
            "file-000.mp4: missing", grasp_penalty=True)
    refused(variant("badvideo", lambda r: (r / "videos/observation.images.top/chunk-000/file-000.mp4").write_bytes(b"junk" * 100)),
            "cannot decode", grasp_penalty=True)
    refused(variant("badparquet", lambda r: (r / "data/chunk-000/file-000.parquet").write_bytes(b"PAR1junk")),
            "not a readable parquet file", grasp_penalty=True)
    refused(_shorter_video(tmp_path, good), "no observation.images.top frame at", grasp_penalty=True)
    with pytest.raises(ValueError, match="gripper_close is \\+1 or -1"):
        LeRobotMapping(gripper_close=0.5)
    # Without a reward: each episode's last frame is the success.
    no_reward = variant("noreward", lambda r: None)
    got, _ = import_lerobot(no_reward, OBS_SPACE, ACT_SPACE, dataclass_replace(GYM_HIL, reward="success_at_end"),
                            grasp_penalty=True)
    assert [float(t["rewards"]) for t in got[0]] == [0, 0, 0, 1]


def dataclass_replace(mapping, **changes):
    import dataclasses

    return dataclasses.replace(mapping, **changes)


def _shorter_video(tmp_path, good):
    """The top camera's video one frame short (an interrupted recording)."""
    root = tmp_path / "short"
    shutil.copytree(good, root)
    path = root / "videos/observation.images.top/chunk-000/file-000.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        images = [f.to_ndarray(format="rgb24") for f in container.decode(stream)][:-1]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 10)
        for i, image in enumerate(images):
            f = av.VideoFrame.from_ndarray(image, format="rgb24")
            f.pts = i
            for packet in stream.encode(f):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return root


def test_episodes_are_split_from_interleaved_actors_and_open_ones_kept():
    a, b = episode_transitions(1, 4, True, penalty=False), episode_transitions(2, 3, False, penalty=False)
    b[-1]["dones"] = False  # still running when the buffer was saved
    mixed = [a[0], b[0], a[1], b[1], a[2], b[2], a[3]]
    found = split_episodes(mixed)
    assert [len(e) for e in found] == [4, 3] and [e.complete for e in found] == [True, False]
    for episode, original in zip(found, (a, b), strict=True):
        for got, sent in zip(episode.transitions, original, strict=True):
            np.testing.assert_array_equal(got["actions"], sent["actions"])


@pytest.mark.slow
def test_export_and_import_scripts_end_to_end(tmp_path, python, subprocess_env):
    """The two scripts as a user runs them: demos of pick_cube_sim_vision (its spaces) to a LeRobot
    folder and back to a demo file the learner would read."""
    from experiments.mappings import load_experiment

    exp = load_experiment("pick_cube_sim_vision")
    config = exp.get_config()
    obs_space, act_space, _ = exp.make_spaces(config)
    rng = np.random.default_rng(0)
    transitions = []
    for _ in range(2):
        frames = [{k: (rng.integers(0, 255, s.shape).astype(np.uint8) if s.dtype == np.uint8
                       else rng.normal(size=s.shape).astype(np.float32)) for k, s in obs_space.spaces.items()}
                  for _ in range(6)]
        for i in range(5):
            transitions.append({"observations": frames[i], "next_observations": frames[i + 1],
                                "actions": rng.uniform(-1, 1, act_space.shape).astype(np.float32),
                                "rewards": np.float32(i == 4), "masks": np.float32(i != 4), "dones": i == 4,
                                "intervened": True, "grasp_penalty": np.float32(0.0)})
    demos = save_demos(tmp_path / "demos.npz", transitions)
    out = tmp_path / "exported"
    result = subprocess.run([python, str(REPO / "scripts/export_dataset.py"), "--exp_name", "pick_cube_sim_vision",
                             "--input", str(demos), "--output", str(out), "--task", "pick"],
                            capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "2 episodes, 10 frames, cameras ['front', 'wrist']" in result.stdout
    again = subprocess.run([python, str(REPO / "scripts/export_dataset.py"), "--exp_name", "pick_cube_sim_vision",
                            "--input", str(demos), "--output", str(out)],
                           capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert again.returncode == 1 and "already exists" in again.stderr
    back = tmp_path / "back.npz"
    result = subprocess.run([python, str(REPO / "scripts/import_lerobot.py"), "--exp_name", "pick_cube_sim_vision",
                             "--dataset", str(out), "--output", str(back)],
                            capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"saved 10 transitions to {back}" in result.stdout
    loaded = load_demos(back, obs_space, act_space, require_grasp_penalty=True)
    np.testing.assert_array_equal(np.stack([t["actions"] for t in loaded]), np.stack([t["actions"] for t in transitions]))
    bad = subprocess.run([python, str(REPO / "scripts/import_lerobot.py"), "--exp_name", "pick_cube_sim_vision",
                          "--dataset", str(tmp_path / "nope"), "--output", str(tmp_path / "x.npz")],
                         capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert bad.returncode == 1 and "no meta/info.json, so not a LeRobot dataset folder" in bad.stderr


def test_hostile_files_and_settings_found_by_attack_are_refused(tmp_path, episodes, monkeypatch):
    import os

    from serl_launcher.data import lerobot

    # libsvtav1 crashes the process on frames narrower than 32 pixels: refused before encoding.
    narrow = [Episode([{**t, "observations": {**t["observations"], "front": t["observations"]["front"][:, :16]},
                        "next_observations": {**t["next_observations"],
                                              "front": t["next_observations"]["front"][:, :16]}}
                       for t in e.transitions], True) for e in episodes]
    with pytest.raises(ValueError, match="libsvtav1 needs at least 32"):
        export_lerobot(tmp_path / "narrow", narrow, fps=10, task="t")
    for fps in (float("inf"), float("nan"), 1e300, 0.5):
        with pytest.raises(ValueError, match="fps must be a whole number"):
            export_lerobot(tmp_path / "fps", episodes, fps=fps, task="t")
    with pytest.raises(ValueError, match="audio codec, not a video one"):
        export_lerobot(tmp_path / "aac", episodes, fps=10, task="t", codec="aac")
    assert not list(tmp_path.glob(".narrow.tmp-*")) and not (tmp_path / "narrow").exists()

    source = [episode_transitions(e, n, terminal=True) for e, n in enumerate([4, 3])]
    good = tmp_path / "good"
    write_lerobot_fixture(good, source, files=1)
    top = good / "videos/observation.images.top/chunk-000/file-000.mp4"

    fifo = tmp_path / "fifo"
    shutil.copytree(good, fifo)
    fifo_video = fifo / top.relative_to(good)
    fifo_video.unlink()
    os.mkfifo(fifo_video)
    with pytest.raises(LeRobotFormatError, match="not a regular file"):
        lerobot.first_frames(fifo)  # would block forever in av.open
    with pytest.raises(LeRobotFormatError, match="file-000.mp4: missing"):
        import_lerobot(fifo, OBS_SPACE, ACT_SPACE, GYM_HIL, grasp_penalty=True)

    concat = tmp_path / "concat"  # an ffconcat text file named .mp4: never demuxed as one
    shutil.copytree(good, concat)
    shutil.copy(top, concat / "real.mp4")
    (concat / top.relative_to(good)).write_text("ffconcat version 1.0\n" + "file ../../../real.mp4\n" * 50)
    with pytest.raises(LeRobotFormatError, match="cannot decode"):
        import_lerobot(concat, OBS_SPACE, ACT_SPACE, GYM_HIL, grasp_penalty=True)

    device = tmp_path / "device"
    shutil.copytree(good, device)
    (device / "meta/notes.txt").symlink_to("/dev/zero")
    with pytest.raises(LeRobotFormatError, match="notes.txt: not a regular file"):
        lerobot.crop_lerobot(device, tmp_path / "device_crop", {"observation.images.top": (0, 0, 48, 40)},
                             codec="libx264")
    assert not (tmp_path / "device_crop").exists() and not list(tmp_path.glob(".device_crop.tmp-*"))

    monkeypatch.setattr(lerobot, "memory_bytes", lambda: 2000)  # as if the parquet files unpacked to more
    with pytest.raises(LeRobotFormatError, match="declare .* GiB once read, more than half"):
        import_lerobot(good, OBS_SPACE, ACT_SPACE, GYM_HIL, grasp_penalty=True)
    monkeypatch.undo()

    big = tmp_path / "big"
    shutil.copytree(good, big)
    path = big / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    states = np.asarray(table.column("observation.state").to_pylist(), np.float64)
    states[2, 0] = 1e39  # finite in float64, inf in the float32 the experiment stores
    column = pa.array(list(states), pa.list_(pa.float64()))
    pq.write_table(table.set_column(table.schema.get_field_index("observation.state"), "observation.state", column), path)
    with pytest.raises(LeRobotFormatError, match="episode 0, frame 1: next_observations.*beyond float32's range"):
        import_lerobot(big, OBS_SPACE, ACT_SPACE, GYM_HIL, grasp_penalty=True)
    with pytest.raises(LeRobotFormatError, match="integers >= 0"):
        import_lerobot(good, OBS_SPACE, ACT_SPACE, GYM_HIL, grasp_penalty=True, episodes=[2**70])
    with pytest.raises(LeRobotFormatError, match="expected feature, feature\\[i:j\\]"):
        import_lerobot(good, OBS_SPACE, ACT_SPACE,
                       dataclass_replace(GYM_HIL, observations={**GYM_HIL.observations, "state": "observation.state[::2]"}),
                       grasp_penalty=True)
