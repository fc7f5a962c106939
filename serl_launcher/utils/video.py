"""Writing videos of rollouts (H.264 mp4 through imageio's bundled ffmpeg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Writes (H, W, 3) uint8 frames to an mp4 file, creating parent folders. Returns the path."""
    if len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
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
