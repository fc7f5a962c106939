"""Resizing camera frames: one rule for cameras, recorded datasets and imports alike."""

from __future__ import annotations

import cv2
import numpy as np


def resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """(H, W, C) uint8 -> (height, width, C) for `size` = (height, width): area interpolation
    when shrinking, bilinear when enlarging; a C-contiguous copy either way."""
    if size is not None and frame.shape[:2] != tuple(size):
        shrinking = size[0] * size[1] < frame.shape[0] * frame.shape[1]
        frame = cv2.resize(frame, (int(size[1]), int(size[0])),
                           interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.array(frame, dtype=np.uint8, copy=True, order="C")


def crop(frame: np.ndarray, roi: tuple[int, int, int, int] | None) -> np.ndarray:
    """The (x, y, w, h) region of `frame` (a view); ValueError when it reaches past the frame."""
    if roi is None:
        return frame
    x, y, w, h = (int(v) for v in roi)
    height, width = frame.shape[:2]
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width or y + h > height:
        raise ValueError(f"crop (x, y, w, h) = {(x, y, w, h)} is not inside the {width}x{height} "
                         f"(width x height) frame")
    return frame[y:y + h, x:x + w]
