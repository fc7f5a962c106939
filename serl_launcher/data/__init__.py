"""Replay buffers, mixed RLPD sampling, background prefetch and demo files."""

from serl_launcher.data.demos import (
    DemoFormatError,
    DemoReading,
    demo_state_layout,
    load_demos,
    load_demos_into,
    save_demos,
)
from serl_launcher.data.prefetch import Prefetcher
from serl_launcher.data.replay_buffer import (
    BufferFormatError,
    ReplayBuffer,
    concat_batches,
    sample_mixed,
)
from serl_launcher.data.transitions import TransitionSpec

__all__ = [
    "BufferFormatError",
    "DemoFormatError",
    "DemoReading",
    "Prefetcher",
    "ReplayBuffer",
    "TransitionSpec",
    "concat_batches",
    "demo_state_layout",
    "load_demos",
    "load_demos_into",
    "sample_mixed",
    "save_demos",
]
