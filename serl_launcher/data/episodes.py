"""Transitions back into episodes, for the dataset exporters (LeRobot, RLDS).

Demo files and a run's online buffer hold transitions, not episodes. A transition continues an
episode when its observation is that episode's last next-observation (the frames chain) and the
episode has not ended (``dones``); several actors' interleaved transitions are told apart this
way. An episode still open when the transitions run out (a run stopped mid-episode) is kept and
flagged ``complete=False``; one whose first transitions were evicted from a full buffer simply
starts later.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Transition = dict[str, Any]


@dataclasses.dataclass
class Episode:
    transitions: list[Transition]
    complete: bool  # it ended (its last transition has dones=True)

    def __len__(self) -> int:
        return len(self.transitions)


def _frame_key(observation: Mapping[str, np.ndarray]) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for key in sorted(observation):
        value = np.ascontiguousarray(observation[key])
        digest.update(key.encode() + str(value.shape).encode() + value.dtype.str.encode())
        digest.update(value.tobytes())
    return digest.digest()


def split_episodes(transitions: Sequence[Mapping[str, Any]]) -> list[Episode]:
    """The episodes in `transitions` (oldest first), ordered by their first transition."""
    open_by_frame: dict[bytes, Episode] = {}
    episodes: list[Episode] = []
    for t in transitions:
        t = dict(t)
        episode = open_by_frame.pop(_frame_key(t["observations"]), None)
        if episode is None:
            episode = Episode([], complete=False)
            episodes.append(episode)
        episode.transitions.append(t)
        if bool(t["dones"]):
            episode.complete = True
        else:
            open_by_frame[_frame_key(t["next_observations"])] = episode
    return episodes


def gather_episodes(demo_paths, run_buffers, observation_space, action_space, reading=None, state_layout=None):
    """(episodes, a line per source) from demo files and runs' online buffers (``<run>/buffers/
    online``, as of the run's last snapshot), each checked against the spaces (demo files also
    against `state_layout`, when given); what the exporters read. DemoFormatError /
    BufferFormatError / FileNotFoundError name a bad source."""
    from serl_launcher.data.demos import DemoReading, load_demos
    from serl_launcher.data.replay_buffer import ReplayBuffer
    from serl_launcher.data.store import check_buffer_layout

    episodes, sources = [], []
    for path in demo_paths:
        found = split_episodes(load_demos(path, observation_space, action_space, reading=reading or DemoReading(),
                                           state_layout=state_layout))
        episodes += found
        sources.append(f"{len(found)} episodes from {path}")
    for folder in run_buffers:
        check_buffer_layout(Path(folder).parent, state_layout)  # <run>/buffers names the state's fields
        buffer = ReplayBuffer.load(folder, observation_space, action_space)
        found = split_episodes(buffer.transitions())
        episodes += found
        open_ = sum(not e.complete for e in found)
        sources.append(f"{len(found)} episodes ({len(buffer)} transitions) from {folder}"
                       + (f", {open_} still open when it was saved" if open_ else ""))
    return episodes, sources
