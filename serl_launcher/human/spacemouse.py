"""A 3Dconnexion SpaceMouse as an intervention device (hidapi, no 3Dconnexion driver needed).

Input reports (report id first, axes as little-endian int16, about +-350 at full deflection):

    id 1, 7 bytes    translation x, y, z   (older devices; rotation comes in report 2)
    id 1, 13 bytes   x, y, z, rx, ry, rz   (newer devices, e.g. SpaceMouse Wireless / Compact)
    id 2, 7 bytes    rotation rx, ry, rz
    id 3             buttons, a little-endian bit field (bit 0 left, bit 1 right)

Other report ids (battery level, ...) are ignored. The device's frame has x to the right, y
towards the person and z down, rotations about those axes. With the person behind the robot,
facing the way it reaches (the base frame's +x), the action is

    dx = -y   (push the cap away: +x)        droll  = -ry
    dy = -x   (push it left: +y)             dpitch = -rx
    dz = -z   (lift it: +z)                  dyaw   = -rz   (twist it anticlockwise: +yaw)
    gripper   left button: close (+1), right button: open (-1), neither: keep (0)

Its two buttons drive the gripper, so by default a person marks episodes with the keyboard
alongside (``actor.intervention.episode.keyboard_alongside``); a model with more buttons maps
them with ``episode_buttons`` (event -> button bit). ``axis_signs`` flips any of the six if a
device (or a person standing elsewhere) disagrees. The
device intervenes on every step where an axis is beyond the deadzone or a button is down, so a
person takes over by touching it and hands back by letting go.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from serl_launcher.human.base import DeviceAction, check_episode_map
from serl_launcher.human.hid_device import HidDevice, HidMatch, apply_deadzone, gripper_command

# 3Dconnexion's own vendor id, and Logitech's for the older devices (products 0xc6xx).
SPACEMOUSE_MATCHES = (HidMatch(0x256F), HidMatch(0x046D, (0xC600, 0xC6FF)))
SPACEMOUSE_USAGES = ((0x01, 0x08), (0x01, 0x04))  # generic desktop: multi-axis controller, joystick
FULL_SCALE = 350.0

# action component i (dx, dy, dz, droll, dpitch, dyaw) = sign * device axis (x, y, z, rx, ry, rz)
AXIS_SOURCE = (1, 0, 2, 4, 3, 5)
AXIS_SIGN = (-1.0, -1.0, -1.0, -1.0, -1.0, -1.0)


class SpaceMouseState(NamedTuple):
    axes: tuple[int, ...]  # raw (x, y, z, rx, ry, rz) counts in the device's frame
    buttons: int  # bit i set: button i is down


EMPTY_STATE = SpaceMouseState((0,) * 6, 0)


def parse_report(report: bytes, previous: SpaceMouseState = EMPTY_STATE) -> SpaceMouseState:
    """One input report -> the device's new state (what the report does not carry is kept)."""
    report = bytes(report)
    if len(report) >= 13 and report[0] == 1:
        return previous._replace(axes=struct.unpack_from("<6h", report, 1))
    if len(report) >= 7 and report[0] == 1:
        return previous._replace(axes=struct.unpack_from("<3h", report, 1) + previous.axes[3:])
    if len(report) >= 7 and report[0] == 2:
        return previous._replace(axes=previous.axes[:3] + struct.unpack_from("<3h", report, 1))
    if len(report) >= 2 and report[0] == 3:
        return previous._replace(buttons=int.from_bytes(report[1:], "little"))
    return previous


class SpaceMouse(HidDevice):
    """SpaceMouse intervention device.

    Args:
        action_dim: 4 (``[dx, dy, dz, gripper]``; rotations dropped) or 7.
        deadzone: fraction of full scale below which an axis reads 0.
        full_scale: raw count that maps to |a| = 1 (larger readings are clipped).
        axis_signs: multiplies the six motion components of the action (see the module doc).
        close_button, open_button: button bits that close / open the gripper.
        connect: open the first SpaceMouse found (False: reports come only through :meth:`feed`).
        episode_buttons: episode event -> button bit (not the gripper's).
    """

    name = "SpaceMouse"
    matches = SPACEMOUSE_MATCHES
    usages = SPACEMOUSE_USAGES

    def __init__(
        self,
        action_dim: int = 4,
        deadzone: float = 0.1,
        full_scale: float = FULL_SCALE,
        axis_signs: tuple[float, ...] = (1.0,) * 6,
        close_button: int = 0,
        open_button: int = 1,
        connect: bool = True,
        episode_buttons: dict[str, int] | None = None,
    ):
        if action_dim not in (4, 7):
            raise ValueError(f"action_dim must be 4 or 7, got {action_dim}")
        if not 0.0 <= deadzone < 1.0 or full_scale <= 0 or len(axis_signs) != 6:
            raise ValueError("need 0 <= deadzone < 1, full_scale > 0 and six axis_signs")
        self.action_dim, self.deadzone, self.full_scale = action_dim, deadzone, full_scale
        self._signs = np.asarray(AXIS_SIGN, np.float32) * np.asarray(axis_signs, np.float32)
        self.close_button, self.open_button = close_button, open_button
        self._episode_bits = check_episode_map(episode_buttons, range(32), (close_button, open_button), "SpaceMouse")
        super().__init__(connect)

    def empty_state(self) -> SpaceMouseState:
        return EMPTY_STATE

    def parse_report(self, report: bytes, previous: SpaceMouseState) -> SpaceMouseState:
        return parse_report(report, previous)

    def state_to_action(self, state: SpaceMouseState) -> DeviceAction:
        raw = np.asarray(state.axes, np.float32) / self.full_scale
        axes = apply_deadzone(np.clip(raw, -1.0, 1.0), self.deadzone)
        grip = gripper_command(close=bool(state.buttons >> self.close_button & 1),
                               open_=bool(state.buttons >> self.open_button & 1))
        motion = axes[list(AXIS_SOURCE)] * self._signs + 0.0  # + 0.0: no -0
        action = np.append(motion, grip).astype(np.float32)
        if self.action_dim == 4:
            action = action[[0, 1, 2, 6]]
        episode_mask = sum(1 << bit for bit in self._episode_bits.values())
        return DeviceAction(action=action, intervening=bool(np.any(axes != 0) or state.buttons & ~episode_mask))

    def get_action(self, observation: dict[str, np.ndarray] | None = None) -> DeviceAction:
        state, _ = self.take_state()
        return self.state_to_action(state)

    def take_episode_events(self) -> set[str]:
        return self.episode_events(self._episode_bits)
