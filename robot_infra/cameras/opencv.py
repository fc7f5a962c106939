"""A camera read through OpenCV's VideoCapture: a device index, a video file, or a stream URL.

- Device (``source`` an int, or a string of digits): a USB / V4L2 camera. ``resolution``
  (height, width), ``fps`` and ``fourcc`` (e.g. "MJPG", which many USB cameras need for full
  frame rate) are requested from the driver, which may pick the nearest it supports.
- Video file (a path): played at the file's own frame rate (``fps`` overrides it) so that it
  behaves like a live camera and latest-frame semantics hold; ``realtime=False`` decodes as fast
  as possible instead. At the end of the file the camera reports that the source ended, or starts
  over with ``loop=True``.
- Stream URL (``rtsp://``, ``http://`` ...): whatever FFmpeg opens; frames come as the stream
  sends them. Opening and each read wait at most ``timeout`` seconds, so a stream that goes
  silent fails the camera (``read`` raises) rather than blocking its reader thread.

Frames are converted from OpenCV's BGR to RGB.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from robot_infra.cameras.base import Camera, CameraError, Crop


def parse_source(source: int | str | Path) -> int | str:
    """A device index (int, or digits) or a path / URL string."""
    if isinstance(source, bool):
        raise CameraError(f"camera source must be a device index, a path or a URL, got {source!r}")
    if isinstance(source, int):
        return source
    text = str(source).strip()
    return int(text) if text.isdigit() else text


def is_device_path(source: int | str) -> bool:
    """A V4L2 device node (``/dev/video0``, ``/dev/v4l/by-id/...``), opened as a device, not a file."""
    return isinstance(source, str) and (source.startswith("/dev/") or Path(source).is_char_device())


class OpenCVCamera(Camera):
    """See the module doc; crop, size, timeout, stale_after as in :class:`Camera`."""

    kind = "opencv"

    def __init__(
        self,
        name: str,
        source: int | str | Path = 0,
        crop: Crop | Sequence[int] = None,
        size: Sequence[int] | None = None,
        fps: float | None = None,
        resolution: Sequence[int] | None = None,
        fourcc: str | None = None,
        realtime: bool = True,
        loop: bool = False,
        timeout: float = 5.0,
        stale_after: float | None = 2.0,
    ):
        super().__init__(name, crop, size, timeout, stale_after)
        self.source = parse_source(source)
        self.is_device = isinstance(self.source, int) or is_device_path(self.source)
        self.is_file = not self.is_device and "://" not in self.source
        if fps is not None and fps <= 0:
            raise CameraError(f"camera {self.name!r}: fps must be positive, got {fps}")
        if fourcc is not None and len(fourcc) != 4:
            raise CameraError(f"camera {self.name!r}: fourcc must have 4 characters, got {fourcc!r}")
        self.fps, self.resolution, self.fourcc = fps, resolution, fourcc
        self.realtime, self.loop = bool(realtime), bool(loop)
        self._capture: cv2.VideoCapture | None = None
        self._period = 0.0
        self._next_due = 0.0
        self._start()

    @property
    def source_description(self) -> str:
        if self.is_device:
            return f"video device {self.source}"  # an index or a /dev path
        return f"video file {self.source!r}" if self.is_file else f"stream {self.source!r}"

    def _end_message(self) -> str:
        if self.is_device:
            return "the device stopped delivering frames (unplugged, or used by another program?)"
        if self.is_file:
            return "the video file ended"
        return f"the stream ended (or sent nothing for {self.timeout:.1f} s)"

    def _open(self) -> None:
        if self.is_file and not Path(self.source).is_file():
            raise CameraError(f"camera {self.name!r}: video file {self.source!r} does not exist")
        if self.is_device:
            capture = cv2.VideoCapture(self.source)
        else:
            # Bounded waits: a stream that stops answering fails the reader instead of hanging it.
            waits = int(self.timeout * 1000)
            capture = cv2.VideoCapture(self.source, cv2.CAP_ANY, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, waits, cv2.CAP_PROP_READ_TIMEOUT_MSEC, waits])
        if not capture.isOpened():
            capture.release()
            hint = {True: " (no such device, no permission for /dev/video*, or in use)",
                    False: " (not a video OpenCV's FFmpeg can decode, or unreachable)"}[self.is_device]
            raise CameraError(f"camera {self.name!r}: OpenCV could not open "
                              f"{self.source_description}{hint}")
        if self.is_device:
            if self.fourcc:
                capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
            if self.resolution is not None:
                height, width = (int(v) for v in self.resolution)
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if self.fps:
                capture.set(cv2.CAP_PROP_FPS, float(self.fps))
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer old frames queued in the driver
        if self.is_file and self.realtime:
            file_fps = capture.get(cv2.CAP_PROP_FPS)
            rate = self.fps or (file_fps if file_fps and file_fps > 0 else 30.0)
            self._period = 1.0 / rate
        self._capture = capture

    def _grab(self) -> np.ndarray | None:
        ok, frame = self._capture.read()
        if not ok and self.is_file and self.loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
        if not ok or frame is None:
            return None
        if self._period:
            now = time.monotonic()
            if self._next_due < now - self._period:  # fell behind (slow machine): do not catch up
                self._next_due = now
            self._stop.wait(max(0.0, self._next_due - now))
            self._next_due += self._period
        if frame.ndim == 2:
            return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()

    @property
    def frame_rate(self) -> float | None:
        """The rate a file is played at (frames per second), None for devices and streams."""
        return 1.0 / self._period if self._period else None
