"""An Intel RealSense camera's colour stream (pyrealsense2, imported when a camera is opened).

``source`` is the camera's serial number (printed on it, and by ``rs-enumerate-devices``); an
empty source takes the only connected RealSense and is an error when several are connected, so
that two cameras cannot silently swap places. The colour stream is requested as RGB8 at
``resolution`` (height, width) and ``fps``; ``exposure`` (microseconds) turns auto-exposure
off, which keeps images stable for a reward classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robot_infra.cameras.base import Camera, CameraError, Crop


def import_realsense(name: str):
    try:
        import pyrealsense2 as rs
    except ImportError as error:
        raise CameraError(
            f"camera {name!r} is a RealSense camera, which needs the pyrealsense2 package (pip "
            f"install pyrealsense2; Intel publishes wheels for x86-64 Linux and Windows); "
            f"importing it failed: {error}") from error
    return rs


class RealSenseCamera(Camera):
    """See the module doc; crop, size, timeout, stale_after as in :class:`Camera`."""

    kind = "realsense"

    def __init__(
        self,
        name: str,
        source: str | int = "",
        crop: Crop | Sequence[int] = None,
        size: Sequence[int] | None = None,
        resolution: Sequence[int] = (480, 640),
        fps: int = 30,
        exposure: float | None = None,
        timeout: float = 5.0,
        stale_after: float | None = 2.0,
    ):
        super().__init__(name, crop, size, timeout, stale_after)
        self.serial = str(source).strip()
        self.resolution = tuple(int(v) for v in resolution)
        self.fps, self.exposure = int(fps), exposure
        self._pipeline = None
        self._start()

    @property
    def source_description(self) -> str:
        return f"RealSense {self.serial}" if self.serial else "the only RealSense"

    def _end_message(self) -> str:
        return "the RealSense stopped delivering frames"

    def _open(self) -> None:
        rs = import_realsense(self.name)
        connected = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
        if self.serial and self.serial not in connected:
            raise CameraError(f"camera {self.name!r}: no RealSense with serial {self.serial!r}; "
                              f"connected: {connected or 'none'}")
        if not self.serial:
            if len(connected) != 1:
                raise CameraError(f"camera {self.name!r}: give the RealSense's serial number as its "
                                  f"source ({len(connected)} connected: {connected or 'none'})")
            self.serial = connected[0]
        config = rs.config()
        config.enable_device(self.serial)
        height, width = self.resolution
        config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, self.fps)
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(config)
        except RuntimeError as error:
            raise CameraError(f"camera {self.name!r}: could not start {self.source_description} at "
                              f"{width}x{height} {self.fps} fps: {error}") from error
        try:
            if self.exposure is not None:
                sensor = profile.get_device().first_color_sensor()
                sensor.set_option(rs.option.enable_auto_exposure, 0)
                sensor.set_option(rs.option.exposure, float(self.exposure))
        except RuntimeError as error:
            pipeline.stop()
            raise CameraError(f"camera {self.name!r}: could not set the exposure of "
                              f"{self.source_description}: {error}") from error
        self._pipeline = pipeline

    def _grab(self) -> np.ndarray | None:
        while True:
            # wait_for_frames raises RuntimeError when nothing comes in time: the reader reports it.
            frames = self._pipeline.wait_for_frames(int(self.timeout * 1000))
            color = frames.get_color_frame()
            if color:
                return np.array(np.asanyarray(color.get_data()), dtype=np.uint8, copy=True)

    def _release(self) -> None:
        if self._pipeline is not None:
            self._pipeline.stop()
