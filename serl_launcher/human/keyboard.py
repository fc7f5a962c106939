"""A keyboard as an intervention device (pynput), with held-key semantics.

Keys (names as pynput gives them; letters are case-insensitive):

    space        take over / hand back (toggle; the arm holds still while taken over and idle)
    w / s        +x / -x  (away from / towards the robot base)
    a / d        +y / -y
    r / f        +z / -z
    u / o        +roll / -roll    (7-dimensional actions only)
    i / k        +pitch / -pitch  (7-dimensional actions only)
    j / l        +yaw / -yaw      (7-dimensional actions only)
    c / v        close / open the gripper

Episode keys (``episode_keys``, from ``actor.intervention.episode.keyboard``; by default enter:
success, esc: failure, backspace: re-record, n: the scene is ready) count whether or not the
person has taken over: marking an episode is not moving the robot.

A movement key contributes a full step (|a| = 1) on its axis for every env step it is held;
opposite keys cancel. A key tapped between two env steps still counts for one step. With no
gripper key the gripper component is 0, which keeps the gripper's current command (see
:mod:`serl_launcher.conventions`), so taking over never opens a gripper the policy closed.
Keys act only while taken over: pynput listens to the whole desktop, and typing elsewhere must
not move the robot.

pynput is imported when a device is made, never at import of this module. Without a display
(Linux, ``DISPLAY`` unset) and with ``PYNPUT_BACKEND`` unset, the dummy backend is selected: the
device then receives no key events of its own (a warning says so) but still works when fed with
:meth:`KeyboardDevice.on_press` / :meth:`KeyboardDevice.on_release`. On a headless robot
computer run as root, ``PYNPUT_BACKEND=uinput`` reads the keyboard directly instead.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from typing import Any

import numpy as np

from serl_launcher import conventions
from serl_launcher.human.base import DeviceAction, check_episode_map

TAKEOVER_KEY = "space"
# key name -> (action index in the 7-dimensional layout, sign)
MOVE_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0),
    "a": (1, 1.0), "d": (1, -1.0),
    "r": (2, 1.0), "f": (2, -1.0),
    "u": (3, 1.0), "o": (3, -1.0),
    "i": (4, 1.0), "k": (4, -1.0),
    "j": (5, 1.0), "l": (5, -1.0),
}
GRIPPER_KEYS: dict[str, float] = {"c": conventions.GRIPPER_CLOSE, "v": conventions.GRIPPER_OPEN}


def import_pynput_keyboard():
    """Imports ``pynput.keyboard``, choosing the dummy backend when no display can be reached."""
    headless = sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
    if headless:
        os.environ.setdefault("PYNPUT_BACKEND", "dummy")
    try:
        from pynput import keyboard
    except ImportError as error:
        raise ImportError(
            f"the keyboard device needs pynput with a working backend (pip install pynput, or the "
            f"[robot] extra; PYNPUT_BACKEND={os.environ.get('PYNPUT_BACKEND')!r}): {error}"
        ) from error
    return keyboard


def key_name(key: Any) -> str | None:
    """A pynput ``Key`` / ``KeyCode`` or a name ("w", "space") -> its name (None: it has none)."""
    if isinstance(key, str):
        return key.lower() if len(key) == 1 else key
    char = getattr(key, "char", None)
    if char is not None:
        return char.lower()
    name = getattr(key, "name", None)  # pynput.keyboard.Key members
    return name if isinstance(name, str) else None


class KeyboardDevice:
    """Intervention device driven by key presses and releases.

    Args:
        action_dim: 4 (``[dx, dy, dz, gripper]``) or 7 (with roll, pitch, yaw).
        intervening: whether the device is in control at the start and after every reset (True to
            drive every step, e.g. to record demonstrations; False to let the policy act until
            the person takes over).
        listen: start a pynput listener (False: events come only through :meth:`on_press` /
            :meth:`on_release`).
        episode_keys: episode event -> key name (``serl_launcher.human.base.EPISODE_EVENTS``).
    """

    def __init__(self, action_dim: int = 4, intervening: bool = False, listen: bool = True,
                 episode_keys: dict[str, str] | None = None):
        if action_dim not in (4, 7):
            raise ValueError(f"action_dim must be 4 or 7, got {action_dim}")
        taken = {TAKEOVER_KEY, *MOVE_KEYS, *GRIPPER_KEYS}
        self._event_of_key = {key_name(k): e for e, k in
                              check_episode_map(episode_keys, None, taken, "keyboard").items()}
        self._events: set[str] = set()
        self.action_dim = action_dim
        self._initially_intervening = intervening
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._tapped: set[str] = set()  # pressed since the last get_action (short taps count)
        self._intervening = intervening
        self._listener = None
        if listen:
            keyboard = import_pynput_keyboard()
            if keyboard.Listener.__module__.endswith("._base"):  # the dummy backend cannot listen
                warnings.warn(
                    "keyboard device: no display, so pynput's dummy backend is in use and no key "
                    "events will arrive; set DISPLAY, or run as root with PYNPUT_BACKEND=uinput",
                    stacklevel=2,
                )
            else:
                self._listener = keyboard.Listener(self.on_press, self.on_release)
                self._listener.start()

    @property
    def intervening(self) -> bool:
        return self._intervening

    def on_press(self, key: Any) -> None:
        name = key_name(key)
        if name is None:
            return
        with self._lock:
            if name == TAKEOVER_KEY and name not in self._held:  # auto-repeat must not re-toggle
                self._intervening = not self._intervening
            if name in self._event_of_key and name not in self._held:
                self._events.add(self._event_of_key[name])
            self._held.add(name)
            self._tapped.add(name)

    def on_release(self, key: Any) -> None:
        name = key_name(key)
        with self._lock:
            self._held.discard(name)

    def keys_to_action(self, keys: set[str]) -> np.ndarray:
        """Names of the active keys -> (action_dim,) float32 action."""
        action = np.zeros(7, dtype=np.float32)
        for name in keys & MOVE_KEYS.keys():
            index, sign = MOVE_KEYS[name]
            action[index] += sign
        grips = {GRIPPER_KEYS[name] for name in keys & GRIPPER_KEYS.keys()}
        action[6] = grips.pop() if len(grips) == 1 else 0.0  # both keys: keep the current command
        action = np.clip(action, -1.0, 1.0)
        return action if self.action_dim == 7 else action[[0, 1, 2, 6]]

    def take_episode_events(self) -> set[str]:
        """Episode events whose key went down since the last call."""
        with self._lock:
            events, self._events = self._events, set()
        return events

    def reset(self) -> None:
        with self._lock:
            self._intervening = self._initially_intervening
            self._tapped.clear()  # held keys stay held: they are what the person's fingers do

    def get_action(self, observation: dict[str, np.ndarray] | None = None) -> DeviceAction:
        with self._lock:
            keys = self._held | self._tapped
            self._tapped = set()
            intervening = self._intervening
        if not intervening:
            keys = set()
        return DeviceAction(action=self.keys_to_action(keys), intervening=intervening)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
