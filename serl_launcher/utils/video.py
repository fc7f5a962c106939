"""Writing videos of rollouts (H.264 mp4 through imageio's bundled ffmpeg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def tile(frame: Any) -> np.ndarray:
    """One (H, W, 3) image of a render: the frame itself, or the frames of several cameras (a
    list, tuple or dict, as some envs' ``render()`` returns) side by side, bottoms padded black."""
    if isinstance(frame, dict):
        frame = list(frame.values())
    if not isinstance(frame, (list, tuple)):
        return np.asarray(frame)
    parts = [np.asarray(f) for f in frame]
    if not parts or any(p.ndim != 3 for p in parts):
        raise ValueError(f"a render of several cameras must be (H, W, 3) images, got {[p.shape for p in parts]}")
    height = max(p.shape[0] for p in parts)
    return np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0))) for p in parts], axis=1)


def write_video(path: str | Path, frames: Sequence[Any], fps: float) -> Path:
    """Writes (H, W, 3) uint8 frames (or several cameras' frames per step, tiled) to an mp4 file,
    creating parent folders. Returns the path."""
    if len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
    frames = [tile(f) for f in frames]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
        raise ValueError(f"frames must all be (H, W, 3) uint8 arrays of one shape, got {sorted(shapes)}")
    import imageio.v2 as imageio  # imported here: only video-writing code pays for it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # macro_block_size=1 keeps odd sizes as they are instead of resizing with a warning.
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(np.asarray(frame, dtype=np.uint8))
    return path
