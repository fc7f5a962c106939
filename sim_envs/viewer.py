"""Interactive MuJoCo viewer with keyboard teleoperation (needs a display).

Keys (GLFW codes, delivered by ``mujoco.viewer``'s key callback on each press; the viewer's own
letter hotkeys are left alone):

    Up / Down        +x / -x (away from / towards the robot base)
    Left / Right     +y / -y
    Page Up / Down   +z / -z
    Home / End       close / open the gripper
    Insert           take over from the policy / hand back (intervention toggle)

Each press moves the tool one full step in that direction on the next env step.
"""

from __future__ import annotations

import threading

import numpy as np

from serl_launcher import conventions
from serl_launcher.human.base import DeviceAction
from sim_envs.rendering import has_display

KEY_UP, KEY_DOWN, KEY_LEFT, KEY_RIGHT = 265, 264, 263, 262
KEY_PAGE_UP, KEY_PAGE_DOWN, KEY_HOME, KEY_END, KEY_INSERT = 266, 267, 268, 269, 260

TRANSLATION_KEYS: dict[int, tuple[int, float]] = {
    KEY_UP: (0, 1.0),
    KEY_DOWN: (0, -1.0),
    KEY_LEFT: (1, 1.0),
    KEY_RIGHT: (1, -1.0),
    KEY_PAGE_UP: (2, 1.0),
    KEY_PAGE_DOWN: (2, -1.0),
}


class ViewerKeyboard:
    """Intervention device fed by the viewer's key callback.

    Args:
        action_dim: 4 ([dx, dy, dz, gripper]) or 7 (with rotations, which stay zero here).
        intervening: whether the device starts in control (True when teleoperating alone).
    """

    def __init__(self, action_dim: int = 4, intervening: bool = True):
        if action_dim not in (4, 7):
            raise ValueError(f"action_dim must be 4 or 7, got {action_dim}")
        self.action_dim = action_dim
        self._lock = threading.Lock()
        self._translation = np.zeros(3)
        self._gripper = conventions.GRIPPER_OPEN
        self._intervening = intervening

    def key_callback(self, keycode: int) -> None:
        with self._lock:
            if keycode in TRANSLATION_KEYS:
                axis, sign = TRANSLATION_KEYS[keycode]
                self._translation[axis] = np.clip(self._translation[axis] + sign, -1.0, 1.0)
            elif keycode == KEY_HOME:
                self._gripper = conventions.GRIPPER_CLOSE
            elif keycode == KEY_END:
                self._gripper = conventions.GRIPPER_OPEN
            elif keycode == KEY_INSERT:
                self._intervening = not self._intervening

    def reset(self) -> None:
        with self._lock:
            self._translation[:] = 0.0
            self._gripper = conventions.GRIPPER_OPEN

    def get_action(self, observation: dict[str, np.ndarray] | None = None) -> DeviceAction:
        with self._lock:
            action = np.zeros(self.action_dim, dtype=np.float32)
            action[:3] = self._translation
            action[-1] = self._gripper
            self._translation[:] = 0.0  # presses are impulses: one step each
            return DeviceAction(action=action, intervening=self._intervening)

    def close(self) -> None:
        pass


def run_viewer(env_id: str = "PandaPickCube-v0", seed: int = 0, **env_kwargs) -> None:
    """Opens the viewer and lets the keyboard drive the arm until the window is closed."""
    if not has_display():
        raise RuntimeError(
            "the interactive viewer needs a display (DISPLAY is unset); use offscreen rendering "
            "(render_mode='rgb_array') or scripts/quickstart.py to get a video instead"
        )
    import time

    import gymnasium as gym
    import mujoco.viewer

    import sim_envs  # noqa: F401

    env = gym.make(env_id, **env_kwargs)
    base = env.unwrapped
    keyboard = ViewerKeyboard(action_dim=env.action_space.shape[0])
    obs, _ = env.reset(seed=seed)
    period = 1.0 / base.config.control_hz
    with mujoco.viewer.launch_passive(base.model, base.data, key_callback=keyboard.key_callback) as viewer:
        while viewer.is_running():
            start = time.monotonic()
            obs, reward, terminated, truncated, info = env.step(keyboard.get_action(obs).action)
            viewer.sync()
            if terminated or truncated:
                print(f"episode ended: success={info['success']}")
                obs, _ = env.reset()
                keyboard.reset()
            time.sleep(max(0.0, period - (time.monotonic() - start)))
    env.close()
