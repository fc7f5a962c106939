"""Check that every camera works: save one frame per camera and print its size and frame rate.

    python -m robot_infra.tools.check_cameras --source 0 --source wrist=/dev/video2
    python -m robot_infra.tools.check_cameras --config experiments/my_arm/config.py:env.cameras

``--source`` (repeatable) takes ``[name=]source`` with an OpenCV source (device index, video
file or URL; see :mod:`robot_infra.cameras.opencv`); unnamed ones are called cam0, cam1 ...
``--config FILE[:FIELD]`` loads ``get_config()`` from a Python file and takes the cameras
ConfigDict at the dotted FIELD (default: ``cameras`` if the config has one, else the whole
config), one camera config per name (see :mod:`robot_infra.cameras.factory`).

For each camera it saves ``<name>.png`` (cropped and resized, what the policy sees) and
``<name>_raw.png`` (the full frame, to pick a crop on with ``robot_infra.tools.pick_roi``) in
``--out``, and prints the raw and output sizes (height x width) and the frame rate measured
over ``--seconds``. A camera that fails is reported and the others are still checked; the exit
status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from robot_infra.cameras.base import CameraError
from robot_infra.cameras.factory import camera_config, make_camera


def cameras_from_sources(sources: Sequence[str]) -> dict[str, Any]:
    """``[name=]source`` strings -> {name: OpenCV camera config}."""
    cameras: dict[str, Any] = {}
    for index, item in enumerate(sources):
        name, sep, source = item.partition("=")
        if not sep or "://" in name or not name.isidentifier():
            name, source = f"cam{index}", item  # no name (an '=' inside a URL or path is data)
        if name in cameras:
            raise ValueError(f"camera name {name!r} is given twice")
        cameras[name] = camera_config("opencv", source)
    return cameras


def cameras_from_config(spec: str) -> Any:
    """``FILE[:FIELD]`` -> the cameras ConfigDict inside ``FILE``'s ``get_config()``."""
    path_text, _, field = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"config file {path_text!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_camera_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path_text} has no get_config()")
    node = module.get_config()
    if field:
        for part in field.split("."):
            if part not in node:
                raise ValueError(f"{path_text}: get_config() has no field {field!r} (no {part!r})")
            node = node[part]
    elif "cameras" in node:
        node = node["cameras"]
    if not hasattr(node, "keys") or not all(hasattr(node[k], "keys") for k in node.keys()):
        raise ValueError(f"{spec}: expected a config of cameras (name -> camera config)")
    return node


def check_camera(name: str, cfg: Any, out_dir: Path, seconds: float, timeout: float) -> str:
    """Opens one camera, saves its frames, measures its rate; returns the report line."""
    with make_camera(name, cfg) as camera:
        raw = camera.read_raw(timeout)
        frame = camera.read(timeout)
        first = camera.frames_received
        start = time.monotonic()
        time.sleep(seconds)
        camera.read(timeout)  # still alive after the wait
        fps = (camera.frames_received - first) / (time.monotonic() - start)
        description = camera.source_description
    for suffix, image in (("", frame), ("_raw", raw)):
        path = out_dir / f"{name}{suffix}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise CameraError(f"could not write {path}")
    return (f"{name}: {description}: raw {raw.shape[0]}x{raw.shape[1]}, output "
            f"{frame.shape[0]}x{frame.shape[1]} (height x width), {fps:.1f} fps -> "
            f"{out_dir / (name + '.png')}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m robot_infra.tools.check_cameras",
        description="Save one frame per camera and print sizes and frame rates.")
    parser.add_argument("--source", action="append", default=[],
                        help="[name=]source: device index, video file or URL (repeatable)")
    parser.add_argument("--config", help="FILE[:FIELD] with get_config() holding camera configs")
    parser.add_argument("--out", default="camera_check", help="folder for the saved frames")
    parser.add_argument("--seconds", type=float, default=2.0, help="how long to measure the rate")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a frame")
    args = parser.parse_args(argv)
    if bool(args.source) == bool(args.config):
        parser.error("give either --source (one or more) or --config")
    if args.seconds <= 0 or args.timeout <= 0:
        parser.error("--seconds and --timeout must be positive")
    try:
        cameras = (cameras_from_config(args.config) if args.config
                   else cameras_from_sources(args.source))
    except ValueError as error:
        parser.error(str(error))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    failed = 0
    for name in cameras.keys():
        try:
            print(check_camera(name, cameras[name], out_dir, args.seconds, args.timeout), flush=True)
        except CameraError as error:
            failed += 1
            print(f"{name}: FAILED: {error}", flush=True)
    print(f"{len(cameras) - failed} of {len(cameras)} cameras OK; frames in {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
