"""LeRobot datasets, both ways: import one as demonstrations, export demos or a run's episodes.

Supported: LeRobot's dataset format **v3.0** (``meta/info.json`` ``codebase_version`` "v3.0", what
LeRobot 0.4 writes and reads), read and written with pyarrow (parquet) and PyAV (video); no
network access. Older versions (v2.0 / v2.1: one parquet and one mp4 per episode, ``meta/*.jsonl``)
are refused with the command that converts them (LeRobot's own converter); a newer major version
is refused too. Install with ``pip install -e '.[lerobot]'`` (the set-up script does).

Layout (one dataset folder)::

    meta/info.json                  version, fps, features, path templates, totals
    meta/stats.json                 min / max / mean / std / count / quantiles per feature
    meta/tasks.parquet              task text (the index) -> task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, where its rows and
                                    video frames are (dataset_from/to_index, videos/<key>/
                                    from_timestamp ...), per-episode stats
    data/chunk-000/file-000.parquet one row per frame
    videos/<key>/chunk-000/file-000.mp4        each camera's frames, episodes end to end

A frame of an episode holds the observation before a step and what the step did: ``action``,
``next.reward``, ``next.done`` (the episode ended: terminated or truncated) and, in what this
project writes, ``next.truncated``, ``next.success``, ``complementary_info.is_intervention`` and
``complementary_info.discrete_penalty`` (the grasp penalty, LeRobot's HIL-SERL name). One
observation per step means the observation after an episode's last step is not stored (LeRobot's
convention): an import gives the last transition its own observation as next observation, which
only matters where that step was a truncation (terminal steps are not bootstrapped).

Names (:func:`feature_name`): observation key ``state`` is ``observation.state``, a camera ``k``
is ``observation.images.k`` (a video), any other key ``observation.<key>``. An import maps the
dataset onto an experiment through ``demos.lerobot`` in its config (:class:`LeRobotMapping`).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from serl_launcher.data.episodes import Episode
from serl_launcher.data.transitions import TransitionSpec
from serl_launcher.utils import images
from serl_launcher.utils.npz import memory_bytes

CODEBASE_VERSION = "v3.0"
SUPPORTED_MAJOR = 3
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200  # LeRobot's defaults, recorded in info.json
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
TIME_TOLERANCE_S = 1e-3  # a decoded frame's time may be this far from frame_index / fps
CONVERT_HINT = ("convert it with LeRobot's own converter first (pip install lerobot; python -m "
                "lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=<id> --root=<folder>)")

# The frame-level features this project writes besides observations (name: dtype).
REWARD, DONE, TRUNCATED, SUCCESS = "next.reward", "next.done", "next.truncated", "next.success"
INTERVENTION, PENALTY = "complementary_info.is_intervention", "complementary_info.discrete_penalty"
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")


class LeRobotFormatError(ValueError):
    """A dataset this module cannot read as asked; the message names the file and the problem."""


def _require_libraries():
    try:
        import av
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise ImportError(f"LeRobot datasets need pyarrow and PyAV ({error}): pip install -e '.[lerobot]' "
                          f"(scripts/setup.sh installs them)") from None
    return pyarrow, av


MIN_SVT_WIDTH = 32  # libsvtav1 crashes the process (SIGFPE) on narrower frames
VIDEO_DEMUXER = "mov"  # LeRobot's videos are mp4; never let ffmpeg sniff (ffconcat could read other files)


def _open_video(av, path: Path):
    """An mp4 for reading: a regular file (not a FIFO or device), demuxed as mp4 only."""
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing or not a regular file")
    return av.open(str(path), format=VIDEO_DEMUXER)


def check_encoder(av, codec: str, width: int, height: int) -> None:
    """ValueError unless `codec` is a video encoder of this PyAV build that takes frames of
    this size (yuv420p: even sides; libsvtav1: at least 32 pixels wide)."""
    try:
        encoder = av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - PyAV raises its own error kinds for unknown names
        raise ValueError(f"video codec {codec!r} is not an encoder in this PyAV build; try libsvtav1 or "
                         f"libx264") from None
    if encoder.type != "video":
        raise ValueError(f"codec {codec!r} is a {encoder.type} codec, not a video one; try libsvtav1 or libx264")
    if width % 2 or height % 2 or width < 2 or height < 2:
        raise ValueError(f"frames of {width}x{height}: yuv420p video needs an even width and height")
    if codec == "libsvtav1" and width < MIN_SVT_WIDTH:
        raise ValueError(f"frames {width} pixels wide: libsvtav1 needs at least {MIN_SVT_WIDTH} (it crashes on "
                         f"narrower ones); use another codec (--codec libx264) or larger frames")


def _staging(dst: Path) -> Path:
    """A new folder beside `dst` to write into before the rename; removes what an interrupted
    earlier run left for the same `dst` (its name must not exist yet, so nothing else uses it)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in dst.parent.glob(f".{dst.name}.tmp-*"):
        if stale.is_dir() and not stale.is_symlink():
            print(f"[lerobot] removing {stale}, left by an interrupted run", flush=True)
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.tmp-"))


def _video_fps(fps: float) -> Fraction:
    """The frame rate as a fraction (LeRobot stores an int; anything else stays exact enough)."""
    return Fraction(str(float(fps))).limit_denominator(1001)


def feature_name(key: str, is_image: bool) -> str:
    """The LeRobot feature an observation key is stored as."""
    if key == "state":
        return "observation.state"
    return f"observation.images.{key}" if is_image else f"observation.{key}"


def is_image_spec(shape: Sequence[int], dtype: np.dtype) -> bool:
    return len(shape) == 3 and shape[-1] == 3 and np.dtype(dtype) == np.uint8


# ------------------------------------------------------------------------------------- export


def export_lerobot(
    root: str | os.PathLike,
    episodes: Sequence[Episode],
    fps: float,
    task: str,
    robot_type: str | None = None,
    codec: str = "libsvtav1",
    crf: int = 30,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write `episodes` as a LeRobot v3.0 dataset folder at `root` (which must not exist yet;
    written beside it and renamed into place, so an interrupted export leaves nothing half
    written). Cameras become videos in `codec` (LeRobot's default: AV1 via libsvtav1, yuv420p,
    keyframe every 2 frames, CRF 30: lossy). `progress(frames)` is called as frames are written.
    Returns counts and the features written."""
    pa, av = _require_libraries()
    import pyarrow.parquet as pq

    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} already exists: give a new folder for the dataset")
    episodes = [e for e in episodes if len(e)]
    if not episodes:
        raise ValueError("no episodes to export")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 1 <= fps <= 10_000 and int(fps) == fps):
        raise ValueError(f"fps must be a whole number from 1 to 10000 (LeRobot stores an int), got {fps}")
    fps = int(fps)
    first = episodes[0].transitions[0]
    spec = TransitionSpec.infer(first, grasp_penalty=first.get("grasp_penalty") is not None)
    cameras = [k for k, (shape, dtype) in spec.observation.items() if is_image_spec(shape, dtype)]
    vectors = [k for k in spec.observation if k not in cameras]
    for key in cameras:
        height, width = spec.observation[key][0][:2]
        try:
            check_encoder(av, codec, width, height)
        except ValueError as error:
            raise ValueError(f"camera {key!r}: {error}") from None
    for key in vectors:
        shape, _ = spec.observation[key]
        if len(shape) != 1:
            raise ValueError(f"observation {key!r} has shape {shape}: only vectors and (H, W, 3) uint8 "
                             f"camera frames can be exported")

    columns: dict[str, list] = {name: [] for name in (
        *[feature_name(k, False) for k in vectors], "action", REWARD, DONE, TRUNCATED, SUCCESS,
        INTERVENTION, *([PENALTY] if spec.grasp_penalty else []), *INDEX_FEATURES)}
    frames = {k: [] for k in cameras}
    lengths = []
    for e, episode in enumerate(episodes):
        start = sum(lengths)
        for i, raw in enumerate(episode.transitions):
            t = spec.check(raw)
            for key in vectors:
                columns[feature_name(key, False)].append(t["observations"][key])
            for key in cameras:
                frames[key].append(t["observations"][key])
            last = i == len(episode) - 1
            # A run stopped mid-episode: its last frame ends the recording, so a truncation.
            done = bool(t["dones"]) or (last and not episode.complete)
            truncated = done and float(t["masks"]) == 1.0
            columns["action"].append(t["actions"])
            columns[REWARD].append(float(t["rewards"]))
            columns[DONE].append(done)
            columns[TRUNCATED].append(truncated)
            columns[SUCCESS].append(float(t["rewards"]) > 0)
            columns[INTERVENTION].append(bool(t["intervened"]))
            if spec.grasp_penalty:
                columns[PENALTY].append(float(t["grasp_penalty"]))
            columns["timestamp"].append(i / fps)
            columns["frame_index"].append(i)
            columns["episode_index"].append(e)
            columns["index"].append(start + i)
            columns["task_index"].append(0)
        lengths.append(len(episode))
    total = sum(lengths)

    features: dict[str, dict[str, Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    for key in vectors:
        name = feature_name(key, False)
        arrays[name] = np.asarray(columns.pop(name), np.float32)
        features[name] = {"dtype": "float32", "shape": [arrays[name].shape[1]], "names": None}
    arrays["action"] = np.asarray(columns.pop("action"), np.float32)
    features["action"] = {"dtype": "float32", "shape": [arrays["action"].shape[1]], "names": None}
    for name, dtype in ((REWARD, np.float32), (DONE, bool), (TRUNCATED, bool), (SUCCESS, bool),
                        (INTERVENTION, bool), (PENALTY, np.float32)):
        if name in columns:
            arrays[name] = np.asarray(columns.pop(name), dtype)[:, None]
            features[name] = {"dtype": np.dtype(dtype).name, "shape": [1], "names": None}
    arrays["timestamp"] = np.asarray(columns.pop("timestamp"), np.float32)
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        arrays[name] = np.asarray(columns.pop(name), np.int64)
        features[name] = {"dtype": "int64", "shape": [1], "names": None}

    tmp = _staging(root)
    try:
        table = pa.table({name: _arrow_column(pa, arrays[name]) for name in arrays})
        data_file = tmp / DATA_PATH.format(chunk_index=0, file_index=0)
        data_file.parent.mkdir(parents=True)
        pq.write_table(table, data_file, compression="snappy")
        if progress:
            progress(0)

        bounds = np.cumsum([0, *lengths])
        video_meta = {}
        for key in cameras:
            name = feature_name(key, True)
            stack = np.stack(frames.pop(key))
            path = tmp / VIDEO_PATH.format(video_key=name, chunk_index=0, file_index=0)
            _encode_video(av, path, stack, fps, codec, crf, progress)
            height, width = stack.shape[1:3]
            features[name] = {
                "dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
                "info": {"video.height": height, "video.width": width, "video.codec": _codec_name(av, path),
                         "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                         "video.channels": 3, "has_audio": False}}
            arrays[name] = stack  # for the stats
            video_meta[name] = {"from": bounds[:-1] / fps, "to": bounds[1:] / fps}

        order = [*(n for n in features if n in arrays and n not in INDEX_FEATURES)]
        stats = {name: _stats(arrays[name], features[name]["dtype"] == "video") for name in order}
        episode_rows = []
        for e, length in enumerate(lengths):
            row = {"episode_index": e, "tasks": [task], "length": length,
                   "data/chunk_index": 0, "data/file_index": 0,
                   "dataset_from_index": int(bounds[e]), "dataset_to_index": int(bounds[e + 1])}
            for name, meta in video_meta.items():
                row |= {f"videos/{name}/chunk_index": 0, f"videos/{name}/file_index": 0,
                        f"videos/{name}/from_timestamp": float(meta["from"][e]),
                        f"videos/{name}/to_timestamp": float(meta["to"][e])}
            for name in order:
                part = arrays[name][bounds[e]:bounds[e + 1]]
                for stat, value in _stats(part, features[name]["dtype"] == "video").items():
                    row[f"stats/{name}/{stat}"] = np.asarray(value).tolist()
            row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            episode_rows.append(row)
        episodes_file = tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_file.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(episode_rows), episodes_file, compression="snappy")
        _write_tasks(pa, pq, tmp / TASKS_PATH, [task])
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": robot_type,
            "total_episodes": len(lengths), "total_frames": total, "total_tasks": 1,
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB,
            "video_files_size_in_mb": VIDEO_FILE_MB, "fps": fps,
            "splits": {"train": f"0:{len(lengths)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if cameras else None, "features": features,
        }
        _write_json(tmp / INFO_PATH, info)
        _write_json(tmp / STATS_PATH, {name: {k: np.asarray(v).tolist() for k, v in s.items()}
                                      for name, s in stats.items()})
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"episodes": len(lengths), "frames": total, "cameras": cameras,
            "features": sorted(features), "path": str(root)}


def _arrow_column(pa, values: np.ndarray):
    """A fixed-size list column for vectors (what LeRobot's ``Sequence(length=n)`` reads), a
    scalar column for (n, 1) and (n,) arrays."""
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 1:
        return pa.array(values)
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def _stats(values: np.ndarray, video: bool) -> dict[str, np.ndarray]:
    """LeRobot's per-feature statistics. Frames: per channel, scaled to [0, 1], shaped (3, 1, 1),
    from at most 20 frames spread over the range and every 4th pixel each way (as LeRobot
    samples images for its statistics too)."""
    count = len(values)
    if video:
        step = max(1, count // 20)
        pixels = values[::step, ::4, ::4].reshape(-1, 3).astype(np.float64) / 255.0
        shape = (3, 1, 1)
    else:
        pixels = values.reshape(count, -1).astype(np.float64)
        shape = values.shape[1:] or (1,)
    out = {"min": pixels.min(0), "max": pixels.max(0), "mean": pixels.mean(0), "std": pixels.std(0)}
    quantiles = np.quantile(pixels, QUANTILES, axis=0)
    out |= {f"q{int(round(q * 100)):02d}": quantiles[i] for i, q in enumerate(QUANTILES)}
    out = {k: v.reshape(shape) for k, v in out.items()}
    out["count"] = np.array([count])
    return out


def _encode_video(av, path: Path, frames: np.ndarray, fps: int, codec: str, crf: int,
                  progress: Callable[[int], None] | None) -> None:
    os.environ.setdefault("SVT_LOG", "1")  # libsvtav1: errors only, not its banner per file
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"g": "2", "crf": str(crf)} | ({"preset": "12"} if codec == "libsvtav1" else {})
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = i
            for packet in stream.encode(video_frame):
                container.mux(packet)
            if progress and i % 100 == 99:
                progress(100)
        for packet in stream.encode():
            container.mux(packet)
        if progress:
            progress(len(frames) % 100)


def _codec_name(av, path: Path) -> str:
    with _open_video(av, path) as container:
        return container.streams.video[0].codec_context.codec.canonical_name


def _write_tasks(pa, pq, path: Path, tasks: Sequence[str]) -> None:
    """meta/tasks.parquet as pandas writes LeRobot's DataFrame (task text as the index), without
    needing pandas here."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(list(tasks), pa.string())})
    pandas_meta = {
        "index_columns": ["__index_level_0__"], "column_indexes": [],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                     "numpy_type": "int64", "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                     "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n")


# ------------------------------------------------------------------------------------- import


@dataclasses.dataclass(frozen=True)
class LeRobotMapping:
    """How a LeRobot dataset becomes an experiment's transitions (config ``demos.lerobot``).

    observations: {observation key: source}; a source is a feature name, optionally sliced
        (``observation.state[0:7]``), or several joined with ``+`` (concatenated). Keys left out
        follow :func:`feature_name` (``state`` <- ``observation.state``, camera ``front`` <-
        ``observation.images.front``).
    action: the action feature. action_low / action_high: the dataset's action bounds, mapped
        linearly onto the experiment's action space (empty: already in it); an action outside
        them is an error. gripper_close: the sign (after that mapping) that closes the gripper in
        the dataset; -1 negates the last component (this project closes at +1).
    reward: a feature, or "success_at_end" (1 on each episode's last frame, 0 elsewhere: for
        teleoperated datasets of successful demonstrations that carry no reward).
    done, truncated, intervention, grasp_penalty: features, each used when the dataset has it.
        Without `done` an episode ends (terminal) at its last frame; without `truncated` no end
        is a truncation; without `intervention` every step counts as a human's (demos).
    crops: {camera: (x, y, w, h)} in the dataset's frames, applied before resizing to the
        experiment's image size (``scripts/crop_dataset.py`` picks them).
    """

    observations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    action: str = "action"
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    gripper_close: float = 1.0
    reward: str = REWARD
    done: str = DONE
    truncated: str = TRUNCATED
    intervention: str = INTERVENTION
    grasp_penalty: str = PENALTY
    crops: Mapping[str, tuple[int, int, int, int]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.gripper_close not in (-1.0, 1.0):
            raise ValueError(f"demos.lerobot.gripper_close is +1 or -1, not {self.gripper_close}")
        if len(self.action_low) != len(self.action_high):
            raise ValueError("demos.lerobot.action_low and action_high need the same length")
        if any(lo >= hi for lo, hi in zip(self.action_low, self.action_high, strict=True)):
            raise ValueError(f"demos.lerobot.action_low {self.action_low} must be below action_high "
                             f"{self.action_high} everywhere")

    @classmethod
    def from_config(cls, section) -> LeRobotMapping:
        c = section.to_dict() if hasattr(section, "to_dict") else dict(section)
        return cls(observations=dict(c.get("observations") or {}), action=c["action"],
                   action_low=tuple(float(v) for v in c["action_low"]),
                   action_high=tuple(float(v) for v in c["action_high"]),
                   gripper_close=float(c["gripper_close"]), reward=c["reward"], done=c["done"],
                   truncated=c["truncated"], intervention=c["intervention"],
                   grasp_penalty=c["grasp_penalty"],
                   crops={k: tuple(int(x) for x in v) for k, v in (c.get("crops") or {}).items()})


_SOURCE = re.compile(r"^(?P<name>[^\[\]]+?)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")


def _parse_source(source: str) -> list[tuple[str, slice]]:
    parts = []
    for item in source.split("+"):
        match = _SOURCE.match(item.strip())
        if not match:
            raise ValueError(f"demos.lerobot source {source!r}: expected feature, feature[i:j] or a+b")
        start, stop = match.group("start"), match.group("stop")
        parts.append((match.group("name"), slice(int(start) if start else None, int(stop) if stop else None)))
    return parts


def read_info(root: str | os.PathLike) -> dict[str, Any]:
    """meta/info.json of a supported dataset; LeRobotFormatError otherwise, saying why."""
    root = Path(root)
    path = root / INFO_PATH
    if not path.is_file():
        hint = (" (it looks like LeRobot's v1 layout)" if (root / "meta_data").is_dir() else "")
        raise LeRobotFormatError(f"{root}: no {INFO_PATH}, so not a LeRobot dataset folder{hint}")
    try:
        info = json.loads(path.read_text())
        version = str(info["codebase_version"])
        features = info["features"]
        fps = info["fps"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LeRobotFormatError(f"{path}: unreadable ({type(error).__name__}: {error})") from None
    match = re.match(r"^v?(\d+)\.(\d+)", version)
    if not match:
        raise LeRobotFormatError(f"{path}: codebase_version {version!r} is not a LeRobot version")
    major = int(match.group(1))
    if major < SUPPORTED_MAJOR:
        raise LeRobotFormatError(f"{root} is a LeRobot {version} dataset; this project reads {CODEBASE_VERSION}: "
                                 f"{CONVERT_HINT}")
    if major > SUPPORTED_MAJOR:
        raise LeRobotFormatError(f"{root} is a LeRobot {version} dataset, newer than the {CODEBASE_VERSION} "
                                 f"this project reads")
    if (not isinstance(features, dict) or isinstance(fps, bool) or not isinstance(fps, (int, float))
            or not math.isfinite(fps) or not 0 < fps <= 10_000):
        raise LeRobotFormatError(f"{path}: features must be a dict and fps a positive number, got fps {fps!r}")
    for name, feature in features.items():
        if not isinstance(feature, dict) or not isinstance(feature.get("dtype"), str):
            raise LeRobotFormatError(f"{path}: feature {name!r} is not a dict with a dtype")
        if "/" in name or "\\" in name or name.startswith(".") or not name:
            raise LeRobotFormatError(f"{path}: feature name {name!r} is not allowed (LeRobot names have no '/'; "
                                     f"video files are found by name)")
    # Files are found where v3.0 puts them; a dataset naming other places is not read (a template
    # could point outside the folder).
    for key, standard in (("data_path", DATA_PATH), ("video_path", VIDEO_PATH)):
        if info.get(key) not in (None, standard):
            raise LeRobotFormatError(f"{path}: {key} {info.get(key)!r} is not LeRobot v3.0's {standard!r}")
    return info


def import_lerobot(
    root: str | os.PathLike,
    observation_space: spaces.Dict,
    action_space: spaces.Box,
    mapping: LeRobotMapping = LeRobotMapping(),
    grasp_penalty: bool = False,
    episodes: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[list[dict[str, Any]]], dict[str, Any]]:
    """The dataset's episodes as transitions checked against the experiment's spaces, and a
    report (episodes, frames, what came from where). Raises LeRobotFormatError naming the file,
    episode and frame for anything that does not fit."""
    pa, av = _require_libraries()
    root = Path(root)
    info = read_info(root)
    features = info["features"]
    spec = TransitionSpec.from_spaces(observation_space, action_space, grasp_penalty)
    sources = {}
    for key, (shape, dtype) in spec.observation.items():
        image = is_image_spec(shape, dtype)
        try:
            sources[key] = _parse_source(mapping.observations.get(key) or feature_name(key, image))
        except ValueError as error:
            raise LeRobotFormatError(str(error)) from None
        for name, _ in sources[key]:
            if name not in features:
                raise LeRobotFormatError(
                    f"{root}: observation {key!r} maps to feature {name!r}, which the dataset does not "
                    f"have; its features: {', '.join(sorted(features))}. Set demos.lerobot.observations "
                    f"in the experiment config")
            if image and (features[name].get("dtype") not in ("video", "image") or len(sources[key]) > 1):
                raise LeRobotFormatError(f"{root}: camera {key!r} needs one video or image feature, got "
                                         f"{mapping.observations.get(key) or name!r}")
    for camera in mapping.crops:
        if camera not in spec.observation or not is_image_spec(*spec.observation[camera]):
            raise LeRobotFormatError(f"demos.lerobot.crops names {camera!r}, not a camera of this experiment")
    if mapping.action not in features:
        raise LeRobotFormatError(f"{root}: no action feature {mapping.action!r}; its features: "
                                 f"{', '.join(sorted(features))}")
    reward_at_end = mapping.reward == "success_at_end"
    if not reward_at_end and mapping.reward not in features:
        raise LeRobotFormatError(
            f"{root}: no reward feature {mapping.reward!r}. Map one (demos.lerobot.reward), or for "
            f"successful demonstrations without rewards set demos.lerobot.reward='success_at_end'")
    if grasp_penalty and mapping.grasp_penalty not in features:
        raise LeRobotFormatError(
            f"{root}: this experiment's agent learns the gripper and needs a grasp penalty per step, but "
            f"the dataset has no {mapping.grasp_penalty!r}; map one with demos.lerobot.grasp_penalty")
    action_dim = spec.action[0][0]
    if mapping.action_low and len(mapping.action_low) != action_dim:
        raise LeRobotFormatError(f"demos.lerobot.action_low has {len(mapping.action_low)} values, the "
                                 f"experiment's actions {action_dim}")

    if episodes is not None:
        episodes = list(episodes)
        if not all(_is_count(e) and e < 2**62 for e in episodes):
            raise LeRobotFormatError(f"episodes to import must be integers >= 0, got {episodes[:5]}")
    table, meta = _read_frames(pa, root, info, episodes)
    indices, lengths = meta["episode_index"], meta["length"]
    if not all(_is_count(e) for e in indices) or len(set(indices)) != len(indices):
        raise LeRobotFormatError(f"{root}: the episode metadata's episode_index must be distinct integers >= 0")
    wanted = sorted(set(indices) if episodes is None else set(episodes))
    missing = sorted(set(wanted) - set(indices))
    if missing:
        raise LeRobotFormatError(f"{root}: no episode(s) {missing[:10]} (it has {info.get('total_episodes')})")
    by_episode = {int(e): i for i, e in enumerate(indices)}
    episode_of = np.asarray(table.column("episode_index").to_numpy(zero_copy_only=False))
    frame_of = np.asarray(table.column("frame_index").to_numpy(zero_copy_only=False))
    if episode_of.dtype.kind not in "iu" or frame_of.dtype.kind not in "iu":
        raise LeRobotFormatError(f"{root}: episode_index and frame_index in the data files must be integers")
    present, rows_per_episode = np.unique(episode_of, return_counts=True)
    rows_per_episode = dict(zip(present.tolist(), rows_per_episode.tolist(), strict=True))
    for e in wanted:  # before anything is allocated by the metadata's word
        length = lengths[by_episode[e]]
        if not _is_count(length) or length < 1 or length != rows_per_episode.get(e, 0):
            raise LeRobotFormatError(f"{root}: episode {e}'s metadata says {length!r} frames, the data files hold "
                                     f"{rows_per_episode.get(e, 0)} rows of it")

    columns = {}
    needed = {name for parts in sources.values() for name, _ in parts if features[name]["dtype"] != "video"}
    needed |= {mapping.action} | ({mapping.reward} if not reward_at_end else set())
    optional = {mapping.done, mapping.truncated, mapping.intervention} | ({mapping.grasp_penalty} if grasp_penalty else set())
    for name in needed | {n for n in optional if n in table.column_names}:
        if name not in table.column_names:
            raise LeRobotFormatError(f"{root}: feature {name!r} is in info.json but not in the data files")
        columns[name] = _column_array(table.column(name), name, root)

    cameras = {k: parts[0][0] for k, parts in sources.items() if features[parts[0][0]]["dtype"] == "video"}
    videos = {key: _decode_episodes(av, root, info, meta, by_episode, wanted, name, key,
                                    spec.observation[key][0][:2], mapping.crops.get(key), progress)
              for key, name in cameras.items()}

    out, low, high = [], action_space.low.astype(np.float64), action_space.high.astype(np.float64)
    for e in wanted:
        rows = np.flatnonzero(episode_of == e)
        rows = rows[np.argsort(frame_of[rows], kind="stable")]
        length = int(meta["length"][by_episode[e]])
        if len(rows) != length or not np.array_equal(frame_of[rows], np.arange(length)):
            raise LeRobotFormatError(f"{root}: episode {e} has {len(rows)} rows with frame_index "
                                     f"{frame_of[rows][:5].tolist()}..., its metadata says {length} frames 0..")
        obs = {}
        for key, parts in sources.items():
            if key in videos:
                obs[key] = videos[key][e]
            else:
                obs[key] = np.concatenate([_as_2d(columns[n][rows])[:, s] for n, s in parts], axis=1)
                if obs[key].shape[1:] != spec.observation[key][0]:
                    raise LeRobotFormatError(
                        f"{root}: observation {key!r} from {mapping.observations.get(key) or parts[0][0]!r} has "
                        f"shape {obs[key].shape[1:]}, the experiment's is {spec.observation[key][0]}; pick the "
                        f"components with demos.lerobot.observations (feature[i:j], a+b)")
        actions = _as_2d(columns[mapping.action][rows]).astype(np.float64)
        if actions.shape[1] != action_dim:
            raise LeRobotFormatError(f"{root}: episode {e}: actions have {actions.shape[1]} components, the "
                                     f"experiment's {action_dim}")
        if mapping.action_low:
            src_low, src_high = np.asarray(mapping.action_low), np.asarray(mapping.action_high)
            outside = np.flatnonzero(((actions < src_low - 1e-6) | (actions > src_high + 1e-6)).any(1))
            if len(outside):
                raise LeRobotFormatError(
                    f"{root}: episode {e}: {len(outside)} action(s) outside demos.lerobot.action_low/high "
                    f"(first: frame {outside[0]}, {actions[outside[0]].round(4).tolist()})")
            actions = low + (np.clip(actions, src_low, src_high) - src_low) / (src_high - src_low) * (high - low)
        if mapping.gripper_close < 0:
            actions[:, -1] = -actions[:, -1]
        outside = np.flatnonzero(((actions < low - 1e-6) | (actions > high + 1e-6)).any(1))
        if len(outside):
            raise LeRobotFormatError(
                f"{root}: episode {e}: {len(outside)} action(s) outside the experiment's action space "
                f"[{low.min():g}, {high.max():g}] (first: frame {outside[0]}, {actions[outside[0]].round(4).tolist()}); "
                f"give the dataset's bounds in demos.lerobot.action_low / action_high")
        if reward_at_end:
            rewards = np.zeros(length, np.float32)
            rewards[-1] = 1.0
        else:
            rewards = _as_2d(columns[mapping.reward][rows])[:, 0].astype(np.float32)
        dones = (_as_2d(columns[mapping.done][rows])[:, 0].astype(bool) if mapping.done in columns
                 else np.zeros(length, bool))
        dones[-1] = True
        truncated = (_as_2d(columns[mapping.truncated][rows])[:, 0].astype(bool) & dones
                     if mapping.truncated in columns else np.zeros(length, bool))
        intervened = (_as_2d(columns[mapping.intervention][rows])[:, 0].astype(bool)
                      if mapping.intervention in columns else np.ones(length, bool))
        penalty = _as_2d(columns[mapping.grasp_penalty][rows])[:, 0] if grasp_penalty else None
        transitions = []
        for i in range(length):
            j = i + 1 if i + 1 < length and not dones[i] else i
            t = {"observations": {k: v[i] for k, v in obs.items()},
                 "next_observations": {k: v[j] for k, v in obs.items()},
                 "actions": actions[i].astype(np.float32), "rewards": rewards[i],
                 "masks": np.float32(0.0 if dones[i] and not truncated[i] else 1.0),
                 "dones": bool(dones[i]), "intervened": bool(intervened[i])}
            if penalty is not None:
                t["grasp_penalty"] = np.float32(penalty[i])
            try:
                transitions.append(spec.check(t))
            except ValueError as error:
                raise LeRobotFormatError(f"{root}: episode {e}, frame {i}: {error}") from None
        out.append(transitions)
    report = {"episodes": len(out), "transitions": sum(map(len, out)), "fps": info["fps"],
              "version": info["codebase_version"],
              "observations": {k: mapping.observations.get(k) or "+".join(n for n, _ in p) for k, p in sources.items()},
              "action": mapping.action, "reward": mapping.reward,
              "used": sorted(set(columns) | set(cameras.values()))}
    return out, report


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _as_2d(values: np.ndarray) -> np.ndarray:
    return values.reshape(len(values), -1)


def _column_array(column, name: str, root: Path) -> np.ndarray:
    """A parquet column (scalars, or lists of one length) as a numpy array (n,) or (n, k)."""
    import pyarrow as pa

    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type):
        if column.null_count:
            raise LeRobotFormatError(f"{root}: feature {name!r} has {column.null_count} empty rows")
        lengths = np.asarray(column.value_lengths().to_numpy(zero_copy_only=False))
        if len(lengths) and (lengths != lengths[0]).any():
            raise LeRobotFormatError(f"{root}: feature {name!r} has rows of different lengths")
        flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False))
        if flat.dtype == object:
            raise LeRobotFormatError(f"{root}: feature {name!r} is nested deeper than a vector")
        return flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 0)
    if column.null_count:
        raise LeRobotFormatError(f"{root}: feature {name!r} has {column.null_count} empty rows")
    values = np.asarray(column.to_numpy(zero_copy_only=False))
    if values.dtype == object:
        raise LeRobotFormatError(f"{root}: feature {name!r} holds {column.type}, not numbers")
    return values


def _read_frames(pa, root: Path, info: dict[str, Any], episodes: Sequence[int] | None):
    """(the data table, the episodes metadata as {column: list}) from their parquet files."""
    import pyarrow.parquet as pq

    def read(folder: Path, what: str):
        files = sorted(folder.glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotFormatError(f"{root}: no {what} files under {folder.relative_to(root)}/chunk-*/")
        tables, declared = [], 0
        for path in files:
            try:
                meta = pq.ParquetFile(path).metadata
                declared += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
                if declared > memory_bytes() // 2:  # before reading: a small file can unpack to gigabytes
                    raise LeRobotFormatError(f"{path}: the {what} files declare {declared / 2**30:.1f} GiB once "
                                             f"read, more than half of this machine's memory")
                tables.append(pq.read_table(path))
            except (OSError, pa.ArrowException) as error:
                raise LeRobotFormatError(f"{path}: not a readable parquet file ({error})") from None
        try:
            return pa.concat_tables(tables, promote_options="default")
        except pa.ArrowException as error:
            raise LeRobotFormatError(f"{root}: the {what} files do not share one schema ({error})") from None

    meta_table = read(root / EPISODES_DIR, "episode metadata")
    for column in ("episode_index", "length"):
        if column not in meta_table.column_names:
            raise LeRobotFormatError(f"{root}: the episode metadata has no {column!r} column")
    meta = {name: meta_table.column(name).to_pylist() for name in meta_table.column_names
            if not name.startswith("stats/")}
    data = read(root / "data", "data")
    for column in ("episode_index", "frame_index"):
        if column not in data.column_names:
            raise LeRobotFormatError(f"{root}: the data files have no {column!r} column")
    if episodes is not None:
        import pyarrow.compute as pc

        data = data.filter(pc.is_in(data.column("episode_index"), value_set=pa.array(list(episodes), pa.int64())))
    return data, meta


def _decode_episodes(av, root: Path, info: dict[str, Any], meta: dict[str, list], by_episode: dict[int, int],
                     wanted: Sequence[int], name: str, key: str, size: tuple[int, int],
                     roi: tuple[int, int, int, int] | None, progress: Callable[[int], None] | None
                     ) -> dict[int, np.ndarray]:
    """{episode: (length, h, w, 3) uint8} of one camera, cropped and resized to `size`; each
    episode's frames are found in its video file by time (from_timestamp + frame_index / fps)."""
    fps = float(info["fps"])
    template = VIDEO_PATH  # read_info refused any other
    needed: dict[Path, list[int]] = {}
    for e in wanted:
        m = by_episode[e]
        try:
            chunk, file = meta[f"videos/{name}/chunk_index"][m], meta[f"videos/{name}/file_index"][m]
            start = float(meta[f"videos/{name}/from_timestamp"][m])
            if not (_is_count(chunk) and _is_count(file) and math.isfinite(start) and start >= 0):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise LeRobotFormatError(f"{root}: the episode metadata does not say where episode {e}'s "
                                     f"{name} frames are (videos/{name}/chunk_index, file_index: integers >= 0; "
                                     f"from_timestamp: seconds >= 0)") from None
        needed.setdefault(root / template.format(video_key=name, chunk_index=chunk, file_index=file), []).append(e)
    out: dict[int, np.ndarray] = {}
    for path, eps in needed.items():
        if not path.is_file():
            raise LeRobotFormatError(f"{path}: missing (episodes {eps[:5]} have their {name} frames there)")
        starts = {e: float(meta[f"videos/{name}/from_timestamp"][by_episode[e]]) for e in eps}
        lengths = {e: int(meta["length"][by_episode[e]]) for e in eps}
        frames = {e: [None] * lengths[e] for e in eps}
        order = sorted(eps, key=starts.get)
        start_times = [starts[e] for e in order]
        remaining = sum(lengths.values())
        try:
            with _open_video(av, path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    if remaining == 0:
                        break  # every wanted frame is found: the rest of the file is not read
                    t = float(frame.pts * stream.time_base) if frame.pts is not None else frame.time
                    e = _episode_at(order, start_times, starts, lengths, fps, t)
                    if e is None:
                        continue
                    index = int(round((t - starts[e]) * fps))
                    if abs(starts[e] + index / fps - t) > TIME_TOLERANCE_S or frames[e][index] is not None:
                        continue
                    image = images.crop(frame.to_ndarray(format="rgb24"), roi)
                    frames[e][index] = images.resize(image, size)
                    remaining -= 1
                    if progress:
                        progress(1)
        except (av.error.FFmpegError, IndexError) as error:
            raise LeRobotFormatError(f"{path}: cannot decode ({type(error).__name__}: {error})") from None
        except ValueError as error:
            raise LeRobotFormatError(f"{path}: camera {key!r}: {error}; fix demos.lerobot.crops.{key}") from None
        for e in eps:
            lost = [i for i, f in enumerate(frames[e]) if f is None]
            if lost:
                raise LeRobotFormatError(
                    f"{path}: episode {e} has no {name} frame at {len(lost)} of its {lengths[e]} steps (first: "
                    f"frame {lost[0]}, time {starts[e] + lost[0] / fps:.4f} s)")
            out[e] = np.stack(frames[e])
    return out


def _episode_at(order: Sequence[int], start_times: Sequence[float], starts: Mapping[int, float],
                lengths: Mapping[int, int], fps: float, t: float) -> int | None:
    """The episode (of `order`, sorted by start time) whose frames span time `t`, if any."""
    i = bisect.bisect_right(start_times, t + TIME_TOLERANCE_S) - 1
    if i < 0:
        return None
    e = order[i]
    return e if t < starts[e] + (lengths[e] - 0.5) / fps else None


def check_fps(info: Mapping[str, Any], control_hz: float | None) -> str | None:
    """A warning when the dataset was recorded at another rate than the experiment's control."""
    if control_hz and not math.isclose(float(info["fps"]), float(control_hz), rel_tol=1e-3):
        return (f"the dataset was recorded at {info['fps']} fps and the experiment steps at {control_hz} Hz: "
                f"each action moved the arm for a different time than it will here")
    return None


# ------------------------------------------------------------------------------------- cropping


def video_features(info: Mapping[str, Any]) -> list[str]:
    return [name for name, ft in info["features"].items() if isinstance(ft, dict) and ft.get("dtype") == "video"]


def first_frames(root: str | os.PathLike) -> dict[str, np.ndarray]:
    """{video feature: the first frame of the first episode} (RGB uint8), what a crop is picked on."""
    _, av = _require_libraries()
    import pyarrow.parquet as pq

    root = Path(root)
    info = read_info(root)
    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{root}: no episode metadata under {EPISODES_DIR}/")
    try:
        meta = pq.read_table(files[0]).slice(0, 1).to_pylist()[0]
    except (OSError, IndexError, ValueError) as error:
        raise LeRobotFormatError(f"{files[0]}: not a readable episode metadata file ({error})") from None
    out = {}
    for name in video_features(info):
        chunk, file = meta.get(f"videos/{name}/chunk_index"), meta.get(f"videos/{name}/file_index")
        start = meta.get(f"videos/{name}/from_timestamp")
        if not (_is_count(chunk) and _is_count(file) and isinstance(start, (int, float)) and math.isfinite(start)):
            raise LeRobotFormatError(f"{files[0]}: the first episode's videos/{name}/... entries are missing or not numbers")
        path = root / VIDEO_PATH.format(video_key=name, chunk_index=chunk, file_index=file)
        try:
            with _open_video(av, path) as container:
                stream = container.streams.video[0]
                for frame in container.decode(stream):
                    if frame.pts is not None and float(frame.pts * stream.time_base) >= start - TIME_TOLERANCE_S:
                        out[name] = frame.to_ndarray(format="rgb24")
                        break
        except (av.error.FFmpegError, OSError, IndexError) as error:
            raise LeRobotFormatError(f"{path}: cannot decode ({type(error).__name__}: {error})") from None
        if name not in out:
            raise LeRobotFormatError(f"{path}: no frame at or after {start:.3f} s")
    return out


def crop_lerobot(src: str | os.PathLike, dst: str | os.PathLike,
                 rois: Mapping[str, tuple[int, int, int, int]], size: tuple[int, int] | None = None,
                 codec: str = "libsvtav1", crf: int = 30) -> dict[str, list[int]]:
    """A copy of the dataset at `src` in `dst` (which must not exist) whose videos named in `rois`
    (video feature -> (x, y, w, h)) are cropped, and resized to `size` (height, width) when given;
    every frame keeps its timestamp, everything else is copied as it is. Returns the new shapes."""
    _, av = _require_libraries()
    src, dst = Path(src), Path(dst)
    info = read_info(src)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists: give a new folder for the cropped copy")
    unknown = sorted(set(rois) - set(video_features(info)))
    if unknown:
        raise LeRobotFormatError(f"{src}: no video feature(s) {unknown}; it has {video_features(info)}")
    for name, roi in rois.items():
        height, width = size or (int(roi[3]), int(roi[2]))
        if height > 4096 or width > 4096:
            raise ValueError(f"{name}: {width}x{height} frames: at most 4096 pixels a side")
        try:
            check_encoder(av, codec, width, height)
        except ValueError as error:
            raise ValueError(f"{name}: the cropped frames: {error}; pick another region or give a size") from None
    shapes = {}
    tmp = _staging(dst)
    try:
        for path in sorted(src.rglob("*")):
            relative = path.relative_to(src)
            if relative.parts[0] == "videos" and len(relative.parts) > 1 and relative.parts[1] in rois:
                continue
            if path.is_dir():
                continue
            if not path.is_file():  # a FIFO, a device, a broken link: nothing a dataset holds
                raise LeRobotFormatError(f"{path}: not a regular file")
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / relative)
        for name, roi in rois.items():
            for path in sorted((src / "videos" / name).rglob("*.mp4")):
                out = tmp / path.relative_to(src)
                shapes[name] = _crop_video(av, path, out, roi, size, codec, crf, _video_fps(info["fps"]))
            height, width = shapes[name]
            feature = info["features"][name]
            feature["shape"] = [height, width, 3]
            feature.setdefault("names", ["height", "width", "channels"])
            if isinstance(feature.get("info"), dict):
                feature["info"] |= {"video.height": height, "video.width": width, "video.pix_fmt": "yuv420p"}
        _write_json(tmp / INFO_PATH, info)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {name: [*shape, 3] for name, shape in shapes.items()}


def _crop_video(av, path: Path, out: Path, roi, size, codec: str, crf: int, fps: Fraction) -> tuple[int, int]:
    """Re-encodes one video cropped (and resized), keeping each frame's time."""
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SVT_LOG", "1")
    options = {"g": "2", "crf": str(crf)} | ({"preset": "12"} if codec == "libsvtav1" else {})
    try:
        with _open_video(av, path) as source, av.open(str(out), "w") as target:
            stream = source.streams.video[0]
            encoder = None
            for frame in source.decode(stream):
                try:
                    image = images.resize(images.crop(frame.to_ndarray(format="rgb24"), roi), size)
                except ValueError as error:
                    raise LeRobotFormatError(f"{path}: {error}") from None
                if encoder is None:
                    encoder = target.add_stream(codec, rate=fps, options=options)
                    encoder.height, encoder.width = image.shape[:2]
                    encoder.pix_fmt = "yuv420p"
                    encoder.codec_context.time_base = 1 / fps
                    shape = image.shape[:2]
                cropped = av.VideoFrame.from_ndarray(image, format="rgb24")
                cropped.pts = int(round(float(frame.pts * stream.time_base) * fps))
                for packet in encoder.encode(cropped):
                    target.mux(packet)
            if encoder is None:
                raise LeRobotFormatError(f"{path}: no frames")
            for packet in encoder.encode():
                target.mux(packet)
    except (av.error.FFmpegError, IndexError) as error:
        raise LeRobotFormatError(f"{path}: cannot re-encode it cropped ({type(error).__name__}: {error})") from None
    return shape
