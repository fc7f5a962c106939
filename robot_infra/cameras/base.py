"""What every camera shares: a reader thread with latest-frame semantics, crop and resize.

A camera opens its source in the constructor (so a bad source fails there, naming the camera),
then a reader thread grabs frames as fast as the source delivers them and keeps only the newest
one. :meth:`Camera.read` never sees a backlog: it returns the newest frame, cropped and resized
for the policy, waiting (up to ``timeout``) only for the very first frame. If the source ends or
fails, or stops delivering for ``stale_after`` seconds, ``read`` raises :class:`CameraError`
naming the camera and its source instead of handing out an old frame.

Crop and resize, per camera:

- ``crop``: None, a region of interest ``(x, y, w, h)`` in pixels of the raw frame (what
  ``python -m robot_infra.tools.pick_roi`` and ``scripts/crop_dataset.py`` give), or a callable taking the
  raw (H, W, 3) RGB frame and returning the cropped one.
- ``size``: None, or ``(height, width)`` of the frames ``read`` returns (the array's shape, as in
  the env's observation space); area interpolation when shrinking, bilinear when enlarging.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from serl_launcher.utils import images

Crop = tuple[int, int, int, int] | Callable[[np.ndarray], np.ndarray] | None


class CameraError(RuntimeError):
    """A camera cannot be opened, delivers nothing, or its source ended or failed."""


def parse_crop(crop, name: str = "camera") -> Crop:
    """None, a callable, or four non-negative ints (x, y, w, h) with w, h > 0."""
    if crop is None or callable(crop):
        return crop
    try:
        x, y, w, h = (int(v) for v in crop)
    except (TypeError, ValueError) as error:
        raise CameraError(f"camera {name!r}: crop must be None, a callable or (x, y, w, h), got "
                          f"{crop!r}") from error
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise CameraError(f"camera {name!r}: crop (x, y, w, h) = {(x, y, w, h)} needs x, y >= 0 and "
                          "w, h > 0")
    return (x, y, w, h)


def parse_size(size, name: str = "camera") -> tuple[int, int] | None:
    """None or (height, width) with both positive."""
    if size is None:
        return None
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError) as error:
        raise CameraError(f"camera {name!r}: size must be None or (height, width), got "
                          f"{size!r}") from error
    if height <= 0 or width <= 0:
        raise CameraError(f"camera {name!r}: size (height, width) = {(height, width)} must be positive")
    return (height, width)


def crop_and_resize(frame: np.ndarray, crop: Crop, size: tuple[int, int] | None,
                    name: str = "camera") -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the cropped and resized (h, w, 3) uint8 RGB frame (a new array)."""
    if callable(crop):
        out = np.asarray(crop(frame))
        if out.ndim != 3 or out.shape[2] != 3 or out.dtype != np.uint8 or 0 in out.shape:
            raise CameraError(f"camera {name!r}: the crop function returned an array of shape "
                              f"{out.shape} and dtype {out.dtype}; it must return (h, w, 3) uint8")
    elif crop is not None:
        x, y, w, h = crop
        height, width = frame.shape[:2]
        if x + w > width or y + h > height:
            raise CameraError(f"camera {name!r}: crop (x, y, w, h) = {crop} reaches past the "
                              f"{width}x{height} (width x height) frame")
        out = frame[y:y + h, x:x + w]
    else:
        out = frame
    return images.resize(out, size)


class Camera(abc.ABC):
    """A camera with a reader thread; see the module doc.

    Subclasses implement :meth:`_open` (called once, in the constructor, by :meth:`_start`),
    :meth:`_grab` (called by the reader thread: the next raw (H, W, 3) uint8 RGB frame, or None
    when the source has ended; raising means it failed), :meth:`_release` (called by the reader
    thread as it exits) and :attr:`source_description`.

    Args:
        name: the camera's name (the observation key), used in every error.
        crop, size: see the module doc.
        timeout: seconds :meth:`read` waits for the first frame.
        stale_after: seconds without a new frame after which :meth:`read` raises (None: never).
    """

    kind = "camera"

    def __init__(self, name: str, crop: Crop | Sequence[int] = None,
                 size: Sequence[int] | None = None, timeout: float = 5.0,
                 stale_after: float | None = 2.0):
        self.name = str(name)
        self.crop = parse_crop(crop, self.name)
        self.size = parse_size(size, self.name)
        if timeout <= 0 or (stale_after is not None and stale_after <= 0):
            raise CameraError(f"camera {self.name!r}: timeout and stale_after must be positive")
        self.timeout, self.stale_after = float(timeout), stale_after
        self._condition = threading.Condition()
        self._stop = threading.Event()
        self._frame: np.ndarray | None = None
        self._frame_time = 0.0
        self._count = 0
        self._error: str | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- for subclasses ---------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def source_description(self) -> str:
        """What the camera reads from, for messages (e.g. "video file 'a.mp4'")."""

    @abc.abstractmethod
    def _open(self) -> None:
        """Opens the source; raises CameraError if it cannot."""

    @abc.abstractmethod
    def _grab(self) -> np.ndarray | None:
        """The next raw RGB frame; None at the end of the source."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Closes the source (called from the reader thread)."""

    def _end_message(self) -> str:
        return "the source ended"

    def _start(self) -> None:
        """Opens the source and starts the reader thread; subclasses call it last in __init__."""
        self._open()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    # -- reader thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    frame = self._grab()
                except Exception as error:  # the source failed: read() reports it
                    self._finish(f"reading failed after {self._count} frames: {error!r}")
                    return
                if self._stop.is_set():
                    return
                if frame is None:
                    self._finish(f"{self._end_message()} after {self._count} frames")
                    return
                with self._condition:
                    self._frame, self._frame_time = frame, time.monotonic()
                    self._count += 1
                    self._condition.notify_all()
        finally:
            try:
                self._release()
            except Exception:  # releasing a failed source; the first error is what matters
                pass

    def _finish(self, reason: str) -> None:
        with self._condition:
            self._error = f"camera {self.name!r} ({self.source_description}): {reason}"
            self._condition.notify_all()

    # -- public -----------------------------------------------------------------------------------

    @property
    def frames_received(self) -> int:
        """How many frames the reader thread has taken from the source so far."""
        with self._condition:
            return self._count

    @property
    def reader_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def read_raw(self, timeout: float | None = None) -> np.ndarray:
        """The newest frame as the source gave it, (H, W, 3) uint8 RGB (not cropped or resized),
        a copy; waits and raises as :meth:`read` does."""
        return self._newest(timeout).copy()

    def _newest(self, timeout: float | None) -> np.ndarray:
        """The reader's newest frame itself (not a copy: callers must not change it)."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._condition:
            while True:
                if self._closed:
                    raise CameraError(f"camera {self.name!r} is closed")
                if self._error is not None:
                    raise CameraError(self._error)
                if self._frame is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraError(f"camera {self.name!r} ({self.source_description}): no frame "
                                      f"within {wait:.1f} s of waiting")
                self._condition.wait(remaining)
            age = time.monotonic() - self._frame_time
            if self.stale_after is not None and age > self.stale_after:
                raise CameraError(f"camera {self.name!r} ({self.source_description}): no new frame "
                                  f"for {age:.1f} s (the source stalled after {self._count} frames)")
            return self._frame

    def read(self, timeout: float | None = None) -> np.ndarray:
        """The newest frame, cropped and resized: (h, w, 3) uint8 RGB, a new array every call.

        Waits up to `timeout` (default: the camera's) for the first frame; raises CameraError if
        none comes, or if the source has ended, failed or stalled.
        """
        return crop_and_resize(self._newest(timeout), self.crop, self.size, self.name)

    def close(self, join_timeout: float = 2.0) -> None:
        """Stops the reader thread (which releases the source). Safe to call twice."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(join_timeout)
            if self._thread.is_alive():
                raise CameraError(f"camera {self.name!r} ({self.source_description}): the reader "
                                  f"thread did not stop within {join_timeout:.1f} s (the source is "
                                  "blocking a read)")

    def __enter__(self) -> Camera:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.source_description})"
