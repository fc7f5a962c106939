"""The one interface every intervention device shares.

A device (keyboard, SpaceMouse, gamepad, leader arm, viewer keys, or a scripted expert standing in
for a person) is asked once per env step for a proposal: an action in the env's action space and
whether it is taking over this step. The intervention wrapper executes the proposal when
`intervening` is true and marks the transition; otherwise the policy's action runs.

A person's device may also have episode buttons (:data:`EPISODE_EVENTS`): it then has
``take_episode_events() -> set[str]``, the events whose button went down since the last call,
which :class:`~serl_launcher.wrappers.episode_control.EpisodeControl` turns into episode ends
(success, failure, re-record) and the end of a pause before the next reset (ready). Which button
means what comes from the experiment config (``actor.intervention.episode``).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

EPISODE_EVENTS = ("success", "failure", "rerecord", "ready")


def check_episode_map(mapping, known, taken, device: str) -> dict[str, object]:
    """An event -> button/key map checked: known events, known buttons (`known`: None means
    any), none of the device's own controls (`taken`) and no button for two events."""
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(EPISODE_EVENTS))
    if unknown:
        raise ValueError(f"{device}: unknown episode event(s) {unknown}; known: {list(EPISODE_EVENTS)}")
    buttons = list(mapping.values())
    if known is not None and set(buttons) - set(known):
        raise ValueError(f"{device}: unknown button(s) {sorted(set(buttons) - set(known), key=str)} for episode "
                         f"events; known: {list(known)}")
    clash = sorted(set(buttons) & set(taken), key=str)
    if clash:
        raise ValueError(f"{device}: {clash} already drive the robot and cannot mark episodes")
    if len(set(buttons)) != len(buttons):
        raise ValueError(f"{device}: one button for two episode events in {mapping}")
    return mapping


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
