"""The one interface every intervention device shares.

A device (keyboard, SpaceMouse, gamepad, leader arm, viewer keys, or a scripted expert standing in
for a person) is asked once per env step for a proposal: an action in the env's action space and
whether it is taking over this step. The intervention wrapper executes the proposal when
`intervening` is true and marks the transition; otherwise the policy's action runs.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


class DeviceAction(NamedTuple):
    action: np.ndarray  # (action_dim,) float32 in [-1, 1], same layout as the env's action
    intervening: bool  # True: the device takes over this step


@runtime_checkable
class InterventionDevice(Protocol):
    def reset(self) -> None:
        """Called at every episode start (clears latched buttons, plans, noise state)."""

    def get_action(self, observation: dict[str, np.ndarray]) -> DeviceAction:
        """Proposes an action for the current step. Human devices may ignore `observation`."""

    def close(self) -> None:
        """Releases threads, windows and handles."""
