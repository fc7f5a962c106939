"""Cameras from an experiment's config: one ConfigDict per camera, keyed by the observation name.

    cameras = config_dict.ConfigDict()
    cameras.wrist = camera_config("realsense", "123456789012", crop=(120, 40, 400, 400),
                                  size=(128, 128))
    cameras.front = camera_config("opencv", 0, size=(128, 128), fourcc="MJPG")

    with make_cameras(cameras) as rig:
        frames = rig.read()       # {"wrist": (128, 128, 3) uint8, "front": ...}

Per camera: ``kind`` ("opencv" or "realsense"), ``source`` (see each kind), ``crop`` and
``size`` (see :mod:`robot_infra.cameras.base`), and any other argument of the kind's class
(``fps``, ``resolution``, ``fourcc``, ``exposure``, ``loop``, ``timeout`` ...); a misspelt key is
an error naming the camera and the keys that kind takes.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from ml_collections import config_dict

from robot_infra.cameras.base import Camera, CameraError
from robot_infra.cameras.opencv import OpenCVCamera
from robot_infra.cameras.realsense import RealSenseCamera

CAMERA_KINDS: dict[str, type[Camera]] = {"opencv": OpenCVCamera, "realsense": RealSenseCamera}


def camera_config(kind: str = "opencv", source: int | str = 0, crop=None, size=None,
                  **options: Any) -> config_dict.ConfigDict:
    """One camera's ConfigDict. `crop` and `size` stay None-typed unless given, so an experiment
    can set either later (a ConfigDict keeps a field's first non-None type)."""
    if kind not in CAMERA_KINDS:
        raise CameraError(f"unknown camera kind {kind!r}; known: {', '.join(CAMERA_KINDS)}")
    cfg = config_dict.ConfigDict()
    cfg.kind = kind
    cfg.source = source
    cfg.crop = tuple(crop) if crop is not None and not callable(crop) else crop
    cfg.size = tuple(size) if size is not None else None
    for key, value in options.items():
        cfg[key] = value
    return cfg


def _as_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, config_dict.ConfigDict):
        return cfg.to_dict()
    return dict(cfg)


def make_camera(name: str, cfg: Mapping[str, Any] | config_dict.ConfigDict) -> Camera:
    """Opens the camera `cfg` describes (see the module doc)."""
    options = _as_dict(cfg)
    kind = options.pop("kind", "opencv")
    if kind not in CAMERA_KINDS:
        raise CameraError(f"camera {name!r}: unknown kind {kind!r}; known: {', '.join(CAMERA_KINDS)}")
    cls = CAMERA_KINDS[kind]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "name")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise CameraError(f"camera {name!r}: unknown config keys {unknown} for a {kind} camera; "
                          f"it takes kind and {', '.join(accepted)}")
    return cls(name, **options)


class MultiCamera(Mapping[str, Camera]):
    """Named cameras read together; a read-only mapping name -> camera, and a context manager."""

    def __init__(self, cameras: Mapping[str, Camera]):
        self._cameras = dict(cameras)

    def __getitem__(self, name: str) -> Camera:
        return self._cameras[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cameras)

    def __len__(self) -> int:
        return len(self._cameras)

    def read(self, timeout: float | None = None) -> dict[str, np.ndarray]:
        """{name: the camera's newest (h, w, 3) uint8 RGB frame}."""
        return {name: camera.read(timeout) for name, camera in self._cameras.items()}

    def close(self) -> None:
        """Closes every camera; raises the first error after trying all of them."""
        errors = []
        for camera in self._cameras.values():
            try:
                camera.close()
            except CameraError as error:
                errors.append(error)
        if errors:
            raise errors[0]

    def __enter__(self) -> MultiCamera:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_cameras(config: Mapping[str, Any] | config_dict.ConfigDict) -> MultiCamera:
    """Opens every camera of `config` (name -> camera config); if one fails, closes the others."""
    names = list(config.keys())
    opened: dict[str, Camera] = {}
    try:
        for name in names:
            opened[name] = make_camera(name, config[name])
    except BaseException:
        MultiCamera(opened).close()
        raise
    return MultiCamera(opened)
