"""A gamepad as an intervention device (hidapi), with the report layout given as data.

Raw HID reports differ between gamepads, so where each control sits in a report is a
:class:`GamepadLayout`. Two are included, written from the devices' published report formats
(neither was tried on hardware here):

``XBOX_BLUETOOTH`` (default)
    Xbox Wireless Controller (One S, Series X|S, Elite 2) over Bluetooth with firmware 5 or later,
    report id 1, 17 bytes: sticks LX, LY, RX, RY as uint16 at bytes 1, 3, 5, 7 (centre 32768);
    triggers LT, RT as 10 bits at 9, 11; hat at 13 (1 = up, clockwise, 0 = centred); buttons from
    byte 14 (A 0, B 1, X 3, Y 4, LB 6, RB 7, View 10, Menu 11). A *wired* Xbox controller on Linux
    is driven by the ``xpad`` kernel driver and has no hidraw node, so hidapi cannot see it; the
    same holds for 8BitDo pads in X-input mode. Pair over Bluetooth, or write a layout.
``DUALSHOCK4_USB``
    Sony DualShock 4 over USB, report id 1: sticks as uint8 at 1-4 (centre 128), hat in the low
    nibble of byte 5 (0 = up, clockwise, 8 = centred), buttons from byte 5 (square 4, cross 5,
    circle 6, triangle 7, L1 8, R1 9, share 12, options 13), L2, R2 as uint8 at 8, 9.

The action (Xbox names; on a DualShock cross = A, options = Menu, L2 / R2 = LT / RT):

    left stick up / down      +x / -x          right stick up / down     +z / -z
    left stick left / right   +y / -y          right stick left / right  +yaw / -yaw  (7-dim)
    d-pad up / down           +pitch / -pitch  d-pad right / left        +roll / -roll (7-dim)
    RT (past half)            close gripper    LT (past half)            open gripper
    A                         toggle the gripper (close if last commanded open, and back)
    Menu                      take over / hand back (latched: the arm holds still while idle)

Episode buttons (``episode_buttons``, from ``actor.intervention.episode.gamepad``; by default
Y: success, B: failure, X: re-record, View: the scene is ready) mark episodes and never move
the arm or take over.

Otherwise the gripper component is 0, which keeps the gripper's current command. The device
intervenes on a step where a stick or trigger is beyond the deadzone, the d-pad or a button other
than Menu is down, or the Menu latch is on.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from serl_launcher import conventions
from serl_launcher.human.base import DeviceAction, check_episode_map
from serl_launcher.human.hid_device import HidDevice, HidMatch, apply_deadzone, gripper_command

BUTTONS = ("a", "b", "x", "y", "lb", "rb", "view", "menu")  # bit i of GamepadState.buttons
GAMEPAD_USAGES = ((0x01, 0x05), (0x01, 0x04))  # generic desktop: game pad, joystick
# (up, right) of the hat's eight positions, clockwise from up
HAT_DIRECTIONS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))


@dataclasses.dataclass(frozen=True)
class GamepadLayout:
    """Where a gamepad's input report keeps each control. Offsets count the report id as byte 0."""

    name: str
    matches: tuple[HidMatch, ...]
    report_id: int
    length: int  # shortest report that carries every control below
    sticks: tuple[int, int, int, int]  # offsets of LX, LY, RX, RY (HID: right and down positive)
    stick_bits: int  # 8 or 16, unsigned little-endian, centred at 2 ** (bits - 1)
    triggers: tuple[int, int]  # offsets of LT, RT (little-endian, 16 bits read, then masked)
    trigger_max: int  # full pull; also the mask applied to the 16 bits read
    hat: int  # offset of the hat switch (low nibble)
    hat_up: int  # the value meaning "up"; the next seven run clockwise; anything else: centred
    buttons: int  # offset of a little-endian button bit field
    button_bits: tuple[int, ...]  # bit of each of BUTTONS in that field


XBOX_BLUETOOTH = GamepadLayout(
    name="Xbox Wireless Controller (Bluetooth)", matches=(HidMatch(0x045E),), report_id=1,
    length=16, sticks=(1, 3, 5, 7), stick_bits=16, triggers=(9, 11), trigger_max=0x3FF, hat=13,
    hat_up=1, buttons=14, button_bits=(0, 1, 3, 4, 6, 7, 10, 11),
)
DUALSHOCK4_USB = GamepadLayout(
    name="DualShock 4 (USB)", matches=(HidMatch(0x054C),), report_id=1, length=10,
    sticks=(1, 2, 3, 4), stick_bits=8, triggers=(8, 9), trigger_max=0xFF, hat=5, hat_up=0,
    buttons=5, button_bits=(5, 6, 4, 7, 8, 9, 12, 13),
)
LAYOUTS = {"xbox_bluetooth": XBOX_BLUETOOTH, "dualshock4_usb": DUALSHOCK4_USB}


class GamepadState(NamedTuple):
    sticks: tuple[float, float, float, float]  # LX, LY, RX, RY in [-1, 1]; right and down positive
    triggers: tuple[float, float]  # LT, RT in [0, 1]
    hat: tuple[int, int]  # (up, right), each -1, 0 or 1
    buttons: int  # bit i set: BUTTONS[i] is down


EMPTY_STATE = GamepadState((0.0,) * 4, (0.0, 0.0), (0, 0), 0)


def parse_report(report: bytes, layout: GamepadLayout = XBOX_BLUETOOTH,
                 previous: GamepadState = EMPTY_STATE) -> GamepadState:
    """One input report -> the pad's state (other report ids and short reports: `previous`)."""
    report = bytes(report)
    if len(report) < layout.length or report[0] != layout.report_id:
        return previous
    width, centre = layout.stick_bits // 8, 1 << (layout.stick_bits - 1)
    raw_sticks = [int.from_bytes(report[i:i + width], "little") for i in layout.sticks]
    sticks = tuple(float(np.clip((v - centre) / (centre - 1), -1.0, 1.0)) for v in raw_sticks)
    raw_triggers = [int.from_bytes(report[i:i + 2], "little") for i in layout.triggers]
    triggers = tuple((v & layout.trigger_max) / layout.trigger_max for v in raw_triggers)
    position = (report[layout.hat] & 0x0F) - layout.hat_up
    hat = HAT_DIRECTIONS[position] if 0 <= position < 8 else (0, 0)
    field = int.from_bytes(report[layout.buttons:layout.buttons + 2], "little")
    buttons = sum(1 << i for i, bit in enumerate(layout.button_bits) if field >> bit & 1)
    return GamepadState(sticks, triggers, hat, buttons)


class Gamepad(HidDevice):
    """Gamepad intervention device.

    Args:
        action_dim: 4 (``[dx, dy, dz, gripper]``; rotations dropped) or 7.
        layout: a :class:`GamepadLayout` or a name in ``LAYOUTS``.
        deadzone: stick and trigger readings at or below this magnitude read 0.
        connect: open the first matching pad (False: reports come only through :meth:`feed`).
        episode_buttons: episode event -> button name in ``BUTTONS`` (not A or Menu).
    """

    name = "gamepad"
    usages = GAMEPAD_USAGES

    def __init__(self, action_dim: int = 4, layout: GamepadLayout | str = XBOX_BLUETOOTH,
                 deadzone: float = 0.15, connect: bool = True, episode_buttons: dict[str, str] | None = None):
        if action_dim not in (4, 7):
            raise ValueError(f"action_dim must be 4 or 7, got {action_dim}")
        if not 0.0 <= deadzone < 1.0:
            raise ValueError(f"need 0 <= deadzone < 1, got {deadzone}")
        self.layout = LAYOUTS[layout] if isinstance(layout, str) else layout
        self.name = f"gamepad ({self.layout.name})"
        self.matches = self.layout.matches
        self.not_found_hint = (
            "A wired Xbox controller or an 8BitDo pad in X-input mode is driven by the xpad kernel "
            "driver and has no hidraw node; pair it over Bluetooth or pass a GamepadLayout. "
        )
        self.action_dim, self.deadzone = action_dim, deadzone
        events = check_episode_map(episode_buttons, BUTTONS, ("a", "menu"), "gamepad")
        self._episode_bits = {event: BUTTONS.index(name) for event, name in events.items()}
        self._takeover = False
        self._gripper_closed = False  # what the person last commanded (for the A toggle)
        super().__init__(connect)

    def empty_state(self) -> GamepadState:
        return EMPTY_STATE

    def parse_report(self, report: bytes, previous: GamepadState) -> GamepadState:
        return parse_report(report, self.layout, previous)

    def state_to_action(self, state: GamepadState) -> DeviceAction:
        """Sticks, d-pad and triggers -> action; intervening when any is in use or a button is down.

        The A toggle and the Menu latch need the press events and live in :meth:`get_action`.
        """
        lx, ly, rx, ry = apply_deadzone(np.asarray(state.sticks, np.float32), self.deadzone)
        lt, rt = apply_deadzone(np.asarray(state.triggers, np.float32), self.deadzone)
        up, right = state.hat
        half = conventions.GRIPPER_DEAD_BAND
        grip = gripper_command(close=bool(rt > half), open_=bool(lt > half))
        action = np.array([-ly, -lx, -ry, right, up, -rx, grip], dtype=np.float32) + 0.0  # no -0
        if self.action_dim == 4:
            action = action[[0, 1, 2, 6]]
        buttons = state.buttons & ~(1 << BUTTONS.index("menu"))  # Menu works through its latch
        for bit in self._episode_bits.values():  # episode buttons never take over
            buttons &= ~(1 << bit)
        active = bool(lx or ly or rx or ry or lt or rt or up or right or buttons)
        return DeviceAction(action=action, intervening=active)

    def get_action(self, observation: dict[str, np.ndarray] | None = None) -> DeviceAction:
        state, pressed = self.take_state()
        proposal = self.state_to_action(state)
        action = proposal.action
        if pressed >> BUTTONS.index("menu") & 1:
            self._takeover = not self._takeover
        if self.lost:  # unplugged while latched: hand back to the policy, never hold it frozen
            self._takeover = False
        if pressed >> BUTTONS.index("a") & 1:
            self._gripper_closed = not self._gripper_closed
            action[-1] = gripper_command(close=self._gripper_closed, open_=not self._gripper_closed)
        elif action[-1] != 0.0:
            self._gripper_closed = bool(action[-1] > 0)
        return DeviceAction(action=action, intervening=proposal.intervening or self._takeover)

    def take_episode_events(self) -> set[str]:
        return self.episode_events(self._episode_bits)

    def reset(self) -> None:
        super().reset()
        self._takeover = False
        self._gripper_closed = False  # every episode starts with the gripper open
