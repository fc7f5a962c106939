"""Find the workspace box for a real-arm config by moving the arm around the space it may use.

Move the arm (by hand in a compliant mode, or by teleoperation) through every corner of the
region the policy should reach while this tool records the tool-centre-point poses; it prints
the smallest box holding them, grown by ``--margin`` metres on each side, as config lines:

    python -m robot_infra.tools.find_workspace_bounds --url http://127.0.0.1:5000/state
    python -m robot_infra.tools.find_workspace_bounds --from_file poses.jsonl --margin 0.01

``--url`` polls an HTTP endpoint answering ``{"pose": [x, y, z, qx, qy, qz, qw]}`` (an object
with ``tcp_pose`` instead, such as the robot server's ``GET /state``, works too) at ``--rate`` Hz until ``--duration`` seconds pass or Ctrl-C; ``--from_file``
reads a JSON-lines file with one such object (or a bare list) per line. Positions are metres in
the robot's base frame, quaternions (x, y, z, w), as in :mod:`serl_launcher.conventions`. When
poses carry orientations, a comment line also gives the range of rotation seen, as a rotation
vector relative to the first pose, in degrees.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from dm_robotics.transformations import transformations as tr

from serl_launcher import conventions


@dataclasses.dataclass(frozen=True)
class WorkspaceBounds:
    low: np.ndarray  # (3,) metres, margin included
    high: np.ndarray  # (3,)
    count: int  # poses seen
    margin: float
    rotation_low: np.ndarray | None = None  # (3,) degrees, rotation vector from the first pose
    rotation_high: np.ndarray | None = None


def parse_pose(value, where: str) -> np.ndarray:
    """A pose from one JSON value: {"pose": [...]}, {"tcp_pose": [...], ...} or a bare list."""
    if isinstance(value, dict):
        key = "pose" if "pose" in value else "tcp_pose"  # tcp_pose: the robot server's GET /state
        if key not in value:
            raise ValueError(f"{where}: expected an object with a 'pose' key, got keys "
                             f"{sorted(value)}")
        value = value[key]
    try:
        pose = np.asarray(value, np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: the pose {value!r} is not a list of numbers") from error
    if pose.ndim != 1 or pose.size < 3 or not np.all(np.isfinite(pose)):
        raise ValueError(f"{where}: a pose needs at least 3 finite numbers (x, y, z[, qx, qy, qz, "
                         f"qw]), got {value!r}")
    if pose.size == 7 and np.linalg.norm(pose[3:]) < 1e-6:
        raise ValueError(f"{where}: the quaternion (qx, qy, qz, qw) of {value!r} is zero")
    return pose


def poses_from_file(path: str | Path) -> Iterator[np.ndarray]:
    """Poses from a JSON-lines file; blank lines are skipped, a bad line names its number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"poses file {str(path)!r} does not exist")
    with path.open() as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not JSON ({error.msg})") from error
            yield parse_pose(value, where)


def http_pose_getter(url: str, timeout: float = 2.0) -> Callable[[], np.ndarray]:
    """A callable that GETs `url` and returns the pose in its JSON answer."""

    def get() -> np.ndarray:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            value = json.loads(response.read())
        return parse_pose(value, url)

    return get


def poll_poses(get_pose: Callable[[], Sequence[float]], rate_hz: float = 20.0,
               duration_s: float | None = None, max_failures: int = 5) -> Iterator[np.ndarray]:
    """Calls `get_pose` at `rate_hz` for `duration_s` seconds (None: until interrupted).

    A failing call is retried; `max_failures` in a row raise the last error.
    """
    period = 1.0 / rate_hz
    start = next_due = time.monotonic()
    failures = 0
    while duration_s is None or time.monotonic() - start < duration_s:
        try:
            pose = np.asarray(get_pose(), np.float64)
            failures = 0
            yield pose
        except (OSError, ValueError) as error:  # urllib's URLError is an OSError
            failures += 1
            if failures >= max_failures:
                raise RuntimeError(f"reading the pose failed {failures} times in a row; the last "
                                   f"error: {error}") from error
        next_due += period
        time.sleep(max(0.0, next_due - time.monotonic()))


def find_workspace_bounds(poses: Iterable[Sequence[float]], margin: float = 0.01,
                          progress: Callable[[int, np.ndarray, np.ndarray], None] | None = None
                          ) -> WorkspaceBounds:
    """The box (grown by `margin` metres) holding every pose's position.

    `progress(count, low, high)` is called after each pose (without the margin). Stops early,
    keeping what it has, on KeyboardInterrupt.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    low = high = None
    rot_low = rot_high = None
    first_rotation = None
    count = 0
    try:
        for pose in poses:
            pose = np.asarray(pose, np.float64)
            position = pose[:3]
            low = position.copy() if low is None else np.minimum(low, position)
            high = position.copy() if high is None else np.maximum(high, position)
            if pose.size == 7:
                quaternion = pose[3:7] / np.linalg.norm(pose[3:7])
                rotation = tr.quat_to_mat(conventions.xyzw_to_wxyz(quaternion))[:3, :3]
                if first_rotation is None:
                    first_rotation = rotation
                rotvec = np.degrees(tr.rmat_to_axisangle(rotation @ first_rotation.T))
                rot_low = rotvec if rot_low is None else np.minimum(rot_low, rotvec)
                rot_high = rotvec if rot_high is None else np.maximum(rot_high, rotvec)
            count += 1
            if progress is not None:
                progress(count, low, high)
    except KeyboardInterrupt:
        pass
    if count == 0:
        raise ValueError("no poses were read, so there is no box to print")
    return WorkspaceBounds(low - margin, high + margin, count, margin, rot_low, rot_high)


def _vector(values: np.ndarray, digits: int) -> str:
    return "(" + ", ".join(f"{v:.{digits}f}" for v in values) + ")"


def format_bounds(bounds: WorkspaceBounds, prefix: str = "config.", source: str = "") -> str:
    """Config lines (``{prefix}workspace_low = (x, y, z)``, same for high) with comments."""
    lines = [f"# {bounds.count} poses{' from ' + source if source else ''}; margin "
             f"{bounds.margin:.3f} m on each side"]
    size = bounds.high - bounds.low
    lines.append(f"# box size {_vector(size, 3)} m")
    if bounds.rotation_low is not None:
        lines.append(f"# rotation from the first pose (rotation vector, degrees): low "
                     f"{_vector(bounds.rotation_low, 1)}, high {_vector(bounds.rotation_high, 1)}")
    lines.append(f"{prefix}workspace_low = {_vector(bounds.low, 4)}")
    lines.append(f"{prefix}workspace_high = {_vector(bounds.high, 4)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m robot_infra.tools.find_workspace_bounds",
        description="Print the workspace box (config lines) that holds the arm's recorded poses.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from_file", help="JSON-lines file of {\"pose\": [...]} objects")
    source.add_argument("--url", help="HTTP endpoint answering {\"pose\": [...]}")
    parser.add_argument("--margin", type=float, default=0.01, help="metres added on each side")
    parser.add_argument("--rate", type=float, default=20.0, help="--url: polls per second")
    parser.add_argument("--duration", type=float, default=None,
                        help="--url: seconds to record (default: until Ctrl-C)")
    parser.add_argument("--timeout", type=float, default=2.0, help="--url: seconds per request")
    parser.add_argument("--prefix", default="c.env.", help="printed before each config key (an experiment config.py sets c.env.workspace_*)")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")

    progress = None
    if args.from_file:
        poses: Iterable[np.ndarray] = poses_from_file(args.from_file)
        where = args.from_file
    else:
        poses = poll_poses(http_pose_getter(args.url, args.timeout), args.rate, args.duration)
        where = args.url
        print(f"recording poses from {args.url}; move the arm through the workspace"
              + (f" for {args.duration:.0f} s" if args.duration else ", then press Ctrl-C"),
              file=sys.stderr)
        last_report = [0.0]

        def progress(count, low, high):
            if time.monotonic() - last_report[0] >= 1.0:
                last_report[0] = time.monotonic()
                print(f"  {count} poses, box {_vector(low, 3)} .. {_vector(high, 3)}",
                      file=sys.stderr)
    try:
        bounds = find_workspace_bounds(poses, args.margin, progress)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_bounds(bounds, args.prefix, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
