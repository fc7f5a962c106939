"""Human intervention devices: raw input (key events, HID reports) to actions, and their errors.

Key events and HID reports are synthetic bytes and names fed to the devices' own entry points;
no device here is mocked. The headless keyboard starts in a subprocess with no display.
"""

import struct
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import REPO

import sim_envs  # noqa: F401
from experiments.base import base_config
from serl_launcher.human import InterventionDevice, device_kinds, make_device, register_device
from serl_launcher.human import devices as devices_module
from serl_launcher.human import gamepad as gp
from serl_launcher.human import spacemouse as sm
from serl_launcher.human.devices import device_from_config
from serl_launcher.human.hid_device import DeviceNotFoundError, apply_deadzone
from serl_launcher.human.keyboard import KeyboardDevice, import_pynput_keyboard
from serl_launcher.human.scripted import StallTakeover
from serl_launcher.wrappers.intervention import InterventionWrapper
from sim_envs.experts import PickCubeExpert
from sim_envs.viewer import ViewerKeyboard

# ---------------------------------------------------------------- keyboard


def test_keyboard_held_keys_move_only_while_taken_over():
    kb = KeyboardDevice(action_dim=7, listen=False)
    kb.on_press("w")
    assert not kb.get_action(None).intervening
    assert not kb.get_action(None).action.any(), "keys act only while taken over"
    kb.on_press("space")
    for _ in range(3):  # held: a full step on every env step
        proposal = kb.get_action(None)
        assert proposal.intervening
        np.testing.assert_array_equal(proposal.action, [1, 0, 0, 0, 0, 0, 0])
    kb.on_press("s")  # opposite keys cancel
    kb.on_press("a")
    kb.on_press("r")
    kb.on_press("j")
    kb.on_press("k")
    kb.on_press("u")
    np.testing.assert_array_equal(kb.get_action(None).action, [0, 1, 1, 1, -1, 1, 0])
    for key in "wsarjku":
        kb.on_release(key)
    proposal = kb.get_action(None)
    assert proposal.intervening and not proposal.action.any(), "taken over and idle: hold still"
    kb.on_release("space")
    kb.on_press("space")  # hand back
    assert not kb.get_action(None).intervening


def test_keyboard_toggle_ignores_auto_repeat_and_taps_count_once():
    kb = KeyboardDevice(action_dim=4, listen=False)
    for _ in range(5):  # the OS repeats on_press while a key is held
        kb.on_press("space")
    assert kb.intervening
    kb.on_release("space")
    kb.on_press("d")
    kb.on_release("d")  # a tap between two env steps
    np.testing.assert_array_equal(kb.get_action(None).action, [0, -1, 0, 0])
    np.testing.assert_array_equal(kb.get_action(None).action, [0, 0, 0, 0])


def test_keyboard_gripper_keys_and_rotations_dropped_for_four_dims():
    kb = KeyboardDevice(action_dim=4, intervening=True, listen=False)
    kb.on_press("j")  # yaw: no component in [dx, dy, dz, gripper]
    kb.on_press("c")
    np.testing.assert_array_equal(kb.get_action(None).action, [0, 0, 0, 1])
    kb.on_release("c")
    np.testing.assert_array_equal(kb.get_action(None).action, [0, 0, 0, 0])  # 0: keep the command
    kb.on_press("v")
    assert kb.get_action(None).action[-1] == -1
    kb.on_press("c")
    assert kb.get_action(None).action[-1] == 0, "close and open together: keep"


def test_keyboard_reset_restores_the_initial_control():
    kb = KeyboardDevice(action_dim=4, listen=False)
    kb.on_press("space")
    kb.on_release("space")
    assert kb.get_action(None).intervening
    kb.reset()
    assert not kb.get_action(None).intervening, "the next episode starts with the policy in control"
    teleop = KeyboardDevice(action_dim=4, intervening=True, listen=False)
    teleop.on_press("space")
    teleop.reset()
    assert teleop.get_action(None).intervening


def test_keyboard_accepts_pynput_key_objects(monkeypatch):
    monkeypatch.delenv("PYNPUT_BACKEND", raising=False)  # restored after the test
    keyboard = import_pynput_keyboard()
    kb = KeyboardDevice(action_dim=4, listen=False)
    if keyboard.Listener.__module__.endswith("._base"):
        kb.on_press("space")  # the dummy backend's special keys are all one placeholder value
    else:
        kb.on_press(keyboard.Key.space)
    kb.on_press(keyboard.KeyCode.from_char("W"))  # shift held: still w
    kb.on_press(keyboard.KeyCode.from_vk(0xFFFF))  # no character: ignored
    proposal = kb.get_action(None)
    assert proposal.intervening
    np.testing.assert_array_equal(proposal.action, [1, 0, 0, 0])
    kb.on_release(keyboard.KeyCode.from_char("w"))
    assert not kb.get_action(None).action.any()
    with pytest.raises(ValueError, match="action_dim must be 4 or 7"):
        KeyboardDevice(action_dim=6, listen=False)


def test_keyboard_starts_headless_with_the_dummy_backend(python, subprocess_env):
    env = {k: v for k, v in subprocess_env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "PYNPUT_BACKEND")}
    code = (
        "import os, sys, warnings\n"
        "import serl_launcher.human as human\n"
        "assert 'pynput' not in sys.modules and 'hid' not in sys.modules, 'imported at import time'\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    kb = human.make_device('keyboard', 7)\n"
        "print('backend', os.environ['PYNPUT_BACKEND'])\n"
        "print('warned', any('no key events' in str(w.message) for w in caught))\n"
        "kb.on_press('space'); kb.on_press('r')\n"
        "proposal = kb.get_action(None)\n"
        "print('action', proposal.action.tolist(), proposal.intervening)\n"
        "kb.close()\n"
    )
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "backend dummy" in result.stdout
    assert "warned True" in result.stdout
    assert "action [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0] True" in result.stdout


def test_keyboard_intervention_marks_transitions_in_pick_cube():
    base = gym.make("PandaPickCube-v0", max_episode_steps=8)
    kb = KeyboardDevice(action_dim=base.action_space.shape[0], listen=False)
    env = InterventionWrapper(base, kb)
    env.reset(seed=0)
    policy = np.array([0.0, 0.0, -1.0, 0.0], np.float32)  # a policy that pushes down
    flags = []
    _, _, _, _, info = env.step(policy)
    flags.append(info["intervened"])
    assert "intervene_action" not in info
    kb.on_press("space")  # the person takes over and drives away from the base
    kb.on_press("w")
    x_before = base.unwrapped.tcp_pos()[0]
    for _ in range(3):
        _, _, _, _, info = env.step(policy)
        flags.append(info["intervened"])
        np.testing.assert_array_equal(info["intervene_action"], [1, 0, 0, 0])
    assert base.unwrapped.tcp_pos()[0] > x_before + 0.005, "the keyboard's action was executed"
    kb.on_release("w")
    kb.on_press("c")
    _, _, _, _, info = env.step(policy)
    flags.append(info["intervened"])
    np.testing.assert_array_equal(info["intervene_action"], [0, 0, 0, 1])
    assert base.unwrapped.gripper_closed
    kb.on_release("c")
    kb.on_release("space")
    kb.on_press("space")  # hand back
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(policy)
        flags.append(info["intervened"])
    assert flags == [False, True, True, True, True, False, False, False]
    assert info["episode_interventions"] == {"intervention_steps": 4, "interventions": 1, "intervention_rate": 0.5}
    env.close()


# ---------------------------------------------------------------- SpaceMouse


def spacemouse_report(report_id: int, *values: int) -> bytes:
    return struct.pack(f"<B{len(values)}h", report_id, *values)


def test_spacemouse_parses_split_and_combined_reports():
    state = sm.parse_report(spacemouse_report(1, 10, -20, 30))  # older: translation only
    assert state == sm.SpaceMouseState((10, -20, 30, 0, 0, 0), 0)
    state = sm.parse_report(spacemouse_report(2, -1, 2, -350), state)  # then rotation
    assert state.axes == (10, -20, 30, -1, 2, -350)
    state = sm.parse_report(spacemouse_report(1, 5, 6, 7), state)  # translation keeps the rotation
    assert state.axes == (5, 6, 7, -1, 2, -350)
    combined = spacemouse_report(1, 100, -200, 300, -400, 500, -32768)  # newer: 13 bytes, all six
    assert len(combined) == 13
    assert sm.parse_report(combined, state).axes == (100, -200, 300, -400, 500, -32768)
    state = sm.parse_report(bytes([3, 0b10]), state)
    assert state.buttons == 0b10 and state.axes == (5, 6, 7, -1, 2, -350)
    assert sm.parse_report(bytes([3, 0, 1]), state).buttons == 1 << 8  # more buttons: little-endian
    assert sm.parse_report(bytes([0x17, 100]), state) == state  # battery level: ignored
    assert sm.parse_report(bytes([1, 0, 0]), state) == state  # truncated: ignored
    assert sm.parse_report(b"", state) == state


def test_spacemouse_axes_map_to_the_base_frame_with_a_deadzone():
    mouse = sm.SpaceMouse(action_dim=7, deadzone=0.1, connect=False)
    rest = mouse.state_to_action(sm.EMPTY_STATE)
    assert not rest.intervening and not rest.action.any()
    # Cap pushed away (device y < 0), left (x < 0) and lifted (z < 0): +x, +y, +z in the base frame.
    state = sm.SpaceMouseState((-175, -350, -700, 0, 0, 0), 0)
    proposal = mouse.state_to_action(state)
    assert proposal.intervening
    half = (0.5 - 0.1) / 0.9  # rescaled past the deadzone
    np.testing.assert_allclose(proposal.action, [1, half, 1, 0, 0, 0, 0], rtol=1e-6)
    # Rotations: droll = -ry, dpitch = -rx, dyaw = -rz.
    np.testing.assert_allclose(mouse.state_to_action(sm.SpaceMouseState((0, 0, 0, 350, -350, 350), 0)).action,
                               [0, 0, 0, 1, -1, -1, 0])
    drift = mouse.state_to_action(sm.SpaceMouseState((20, -30, 35, -35, 10, 0), 0))  # <= 10 % of 350
    assert not drift.intervening and not drift.action.any()
    flipped = sm.SpaceMouse(action_dim=7, axis_signs=(-1, 1, 1, 1, 1, 1), connect=False)
    assert flipped.state_to_action(sm.SpaceMouseState((0, -350, 0, 0, 0, 0), 0)).action[0] == -1
    four = sm.SpaceMouse(action_dim=4, connect=False)
    twist = four.state_to_action(sm.SpaceMouseState((0, 0, 0, 0, 0, 350), 0))
    assert twist.intervening and not twist.action.any(), "a hand on the cap takes over, even to hold still"
    assert twist.action.shape == (4,)


def test_spacemouse_buttons_drive_the_gripper_and_clicks_are_not_lost():
    mouse = sm.SpaceMouse(action_dim=4, connect=False)
    np.testing.assert_array_equal(mouse.state_to_action(sm.SpaceMouseState((0,) * 6, 0b01)).action, [0, 0, 0, 1])
    np.testing.assert_array_equal(mouse.state_to_action(sm.SpaceMouseState((0,) * 6, 0b10)).action, [0, 0, 0, -1])
    both = mouse.state_to_action(sm.SpaceMouseState((0,) * 6, 0b11))
    assert both.intervening and both.action[-1] == 0
    # A click (press and release) between two env steps still closes the gripper, once.
    mouse.feed(spacemouse_report(1, 0, -350, 0, 0, 0, 0))
    mouse.feed(bytes([3, 1]))
    mouse.feed(bytes([3, 0]))
    proposal = mouse.get_action(None)
    assert proposal.intervening
    np.testing.assert_array_equal(proposal.action, [1, 0, 0, 1])
    mouse.feed(spacemouse_report(1, 0, 0, 0, 0, 0, 0))  # let go: hand back
    proposal = mouse.get_action(None)
    assert not proposal.intervening and not proposal.action.any()


def test_deadzone_rescales_continuously():
    values = np.array([-1.0, -0.5, -0.1, 0.0, 0.05, 0.1, 0.55, 1.0], np.float32)
    np.testing.assert_allclose(apply_deadzone(values, 0.1), [-1, -4 / 9, 0, 0, 0, 0, 0.5, 1], atol=1e-6)


# ---------------------------------------------------------------- gamepad


def xbox_report(lx=32768, ly=32768, rx=32768, ry=32768, lt=0, rt=0, hat=0, buttons=0, report_id=1) -> bytes:
    return struct.pack("<B4H2HBHB", report_id, lx, ly, rx, ry, lt, rt, hat, buttons, 0)


def test_gamepad_parses_xbox_bluetooth_reports():
    assert len(xbox_report()) == 17
    state = gp.parse_report(xbox_report())
    assert state.sticks == pytest.approx((0, 0, 0, 0), abs=1e-4) and state.hat == (0, 0) and state.buttons == 0
    state = gp.parse_report(xbox_report(lx=0, ly=65535, rt=1023, lt=0xFC00 | 512, hat=1, buttons=0b1000_0000_1001))
    assert state.sticks[:2] == (-1.0, 1.0)
    assert state.triggers == pytest.approx((512 / 1023, 1.0)), "padding bits above the 10 are masked"
    assert state.hat == (1, 0)
    assert state.buttons == (1 << gp.BUTTONS.index("a")) | (1 << gp.BUTTONS.index("x")) | (1 << gp.BUTTONS.index("menu"))
    assert gp.parse_report(xbox_report(hat=4)).hat == (-1, 1)  # down-right
    assert gp.parse_report(xbox_report(hat=8)).hat == (1, -1)  # up-left
    assert gp.parse_report(xbox_report(lx=0, report_id=2), previous=state) == state  # other report id
    assert gp.parse_report(xbox_report()[:12], previous=state) == state  # too short


def test_gamepad_parses_dualshock4_reports():
    report = bytes([1, 128, 0, 255, 128, 0x08 | 0x20, 0x02, 0, 255, 0])  # LY up, RX right, cross, R1
    state = gp.parse_report(report, gp.DUALSHOCK4_USB)
    assert state.sticks == pytest.approx((0, -1, 1, 0), abs=1e-2)
    assert state.hat == (0, 0), "8 is centred"
    assert state.triggers == (1.0, 0.0)
    assert state.buttons == (1 << gp.BUTTONS.index("a")) | (1 << gp.BUTTONS.index("rb"))
    assert gp.parse_report(bytes([1, 128, 128, 128, 128, 0x02, 0, 0, 0, 0]), gp.DUALSHOCK4_USB).hat == (0, 1)


def test_gamepad_sticks_dpad_and_triggers_to_action():
    pad = gp.Gamepad(action_dim=7, connect=False)
    rest = pad.state_to_action(gp.EMPTY_STATE)
    assert not rest.intervening and not rest.action.any()
    # Left stick up-left, right stick down and right, d-pad up-right, RT pulled.
    state = gp.GamepadState((-1.0, -1.0, 1.0, 1.0), (0.0, 1.0), (1, 1), 0)
    proposal = pad.state_to_action(state)
    assert proposal.intervening
    np.testing.assert_array_equal(proposal.action, [1, 1, -1, 1, 1, -1, 1])
    np.testing.assert_array_equal(pad.state_to_action(gp.GamepadState((0.0,) * 4, (0.9, 0.0), (0, 0), 0)).action,
                                  [0, 0, 0, 0, 0, 0, -1])
    slight = pad.state_to_action(gp.GamepadState((0.1, -0.15, 0.05, 0.0), (0.1, 0.0), (0, 0), 0))
    assert not slight.intervening and not slight.action.any(), "stick drift stays in the deadzone"
    light = pad.state_to_action(gp.GamepadState((0.0,) * 4, (0.0, 0.4), (0, 0), 0))
    assert light.intervening and light.action[-1] == 0, "a light pull takes over without closing"
    four = gp.Gamepad(action_dim=4, connect=False)
    np.testing.assert_array_equal(four.state_to_action(state).action, [1, 1, -1, 1])
    b_only = four.state_to_action(gp.GamepadState((0.0,) * 4, (0.0, 0.0), (0, 0), 1 << gp.BUTTONS.index("b")))
    assert b_only.intervening and not b_only.action.any()


def test_gamepad_a_toggles_the_gripper_and_menu_latches_takeover():
    pad = gp.Gamepad(action_dim=4, connect=False)
    a, menu = 1 << 0, 1 << 11  # bits in the Xbox report
    pad.feed(xbox_report(buttons=a))
    pad.feed(xbox_report())
    proposal = pad.get_action(None)
    assert proposal.intervening and proposal.action[-1] == 1, "first A: close"
    proposal = pad.get_action(None)
    assert not proposal.intervening and proposal.action[-1] == 0
    pad.feed(xbox_report(buttons=a))
    assert pad.get_action(None).action[-1] == -1, "second A: open"
    assert pad.get_action(None).action[-1] == 0, "A held: one toggle per press"
    pad.feed(xbox_report())
    pad.feed(xbox_report(buttons=menu))
    pad.feed(xbox_report())
    for _ in range(3):
        proposal = pad.get_action(None)
        assert proposal.intervening and not proposal.action.any(), "latched: the arm holds still"
    pad.feed(xbox_report(ly=0))
    np.testing.assert_array_equal(pad.get_action(None).action, [1, 0, 0, 0])
    pad.feed(xbox_report(buttons=menu))
    pad.feed(xbox_report())
    assert not pad.get_action(None).intervening, "Menu again hands back"
    pad.feed(xbox_report(rt=1023))
    assert pad.get_action(None).action[-1] == 1
    pad.feed(xbox_report())
    pad.feed(xbox_report(buttons=a))
    assert pad.get_action(None).action[-1] == -1, "the toggle follows the trigger's last command"
    pad.feed(xbox_report(buttons=menu))
    pad.reset()
    assert not pad.get_action(None).intervening, "presses before a reset do not carry over"


def test_unplugged_gamepad_drops_a_latched_takeover():
    class Unplugged:  # a hid.device whose read fails as an unplugged one does
        def read(self, size, timeout_ms):
            raise OSError("read error")

    pad = gp.Gamepad(action_dim=4, connect=False)
    pad.feed(xbox_report(buttons=1 << 11))  # Menu: latched takeover
    pad.feed(xbox_report())
    assert pad.get_action(None).intervening
    pad._handle = Unplugged()
    with pytest.warns(UserWarning, match="stopped reporting"):
        pad._read_loop()  # returns once the read fails
    assert pad.lost
    proposal = pad.get_action(None)
    assert not proposal.intervening and not proposal.action.any()


def test_gamepad_layout_by_name():
    assert gp.Gamepad(connect=False, layout="dualshock4_usb").layout is gp.DUALSHOCK4_USB
    with pytest.raises(KeyError):
        gp.Gamepad(connect=False, layout="nes")


# ---------------------------------------------------------------- no device, factory


def test_missing_hid_devices_raise_a_clear_error(monkeypatch):
    import hid

    monkeypatch.setattr(hid, "enumerate", lambda *args: [])
    with pytest.raises(DeviceNotFoundError) as error:
        sm.SpaceMouse()
    message = str(error.value)
    for needle in ("no SpaceMouse found", "0x256f", "0x046d:0xc600-0xc6ff", "udev", "hidraw", 'ATTRS{idVendor}=="256f"'):
        assert needle in message, (needle, message)
    # A Logitech mouse is not a SpaceMouse, and a Microsoft keyboard is not a gamepad.
    present = [{"vendor_id": 0x046D, "product_id": 0xC077, "usage_page": 1, "usage": 2, "path": b"/dev/x"},
               {"vendor_id": 0x045E, "product_id": 0x07A5, "usage_page": 1, "usage": 6, "path": b"/dev/y"}]
    monkeypatch.setattr(hid, "enumerate", lambda *args: present)
    with pytest.raises(DeviceNotFoundError, match="no SpaceMouse found: hid.enumerate\\(\\) lists 2"):
        make_device("spacemouse", 7)
    with pytest.raises(DeviceNotFoundError) as error:
        make_device("gamepad", 4)
    assert "0x045e:any product" in str(error.value) and "xpad" in str(error.value) and "udev" in str(error.value)
    with pytest.raises(DeviceNotFoundError, match="0x054c"):
        gp.Gamepad(layout="dualshock4_usb")


def test_a_device_that_cannot_be_opened_names_the_permission_fix(monkeypatch, tmp_path):
    import hid

    path = str(tmp_path / "hidraw-missing").encode()
    found = {"vendor_id": 0x256F, "product_id": 0xC635, "usage_page": 1, "usage": 8, "path": path}
    monkeypatch.setattr(hid, "enumerate", lambda *args: [found])
    with pytest.raises(DeviceNotFoundError) as error:
        sm.SpaceMouse()
    assert "could not open it" in str(error.value) and "0x256f:0xc635" in str(error.value)
    assert "udev" in str(error.value)


def test_missing_hidapi_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "hid", None)  # `import hid` raises ImportError
    with pytest.raises(DeviceNotFoundError, match="gamepad .* needs hidapi"):
        gp.Gamepad()


def test_make_device_kinds():
    assert set(device_kinds()) == {"scripted", "keyboard", "spacemouse", "gamepad", "viewer", "leader_arm", "none"}
    assert make_device("none", 4) is None
    viewer = make_device("viewer", 7)
    assert isinstance(viewer, ViewerKeyboard) and viewer.action_dim == 7
    env = gym.make("PandaPickCube-v0")
    scripted = make_device("scripted", 4, expert=PickCubeExpert(env), patience=3, seed=0)
    assert isinstance(scripted, StallTakeover) and scripted.patience == 3
    for device in (viewer, scripted, gp.Gamepad(connect=False), sm.SpaceMouse(connect=False),
                   KeyboardDevice(listen=False)):
        assert isinstance(device, InterventionDevice)
    with pytest.raises(ValueError, match="needs expert="):
        make_device("scripted", 4)
    with pytest.raises(ValueError, match="unknown intervention device 'joystick'; known: scripted, keyboard"):
        make_device("joystick", 4)
    with pytest.raises(TypeError):
        make_device("spacemouse", 4, dead_zone=0.2, connect=False)  # misspelt: an error, not ignored
    env.close()


def test_the_library_imports_no_device_package_and_kinds_register_themselves(subprocess_env):
    # serl_launcher.human names no module of sim_envs or robot_infra: their devices come from
    # entry points (setup.py), loaded when their kind is first asked for.
    code = (
        "import sys\n"
        "from serl_launcher.human import devices\n"
        "kinds = devices.device_kinds()\n"
        "assert 'viewer' in kinds and 'leader_arm' in kinds, kinds\n"
        "assert not [m for m in sys.modules if m.startswith(('sim_envs', 'robot_infra'))]\n"
        "devices.make_device('viewer', 4)\n"
        "assert 'sim_envs.viewer' in sys.modules\n"
        "assert not [m for m in sys.modules if m.startswith('robot_infra')]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    source = Path(devices_module.__file__).read_text()
    assert "import sim_envs" not in source and "import robot_infra" not in source
    assert "from sim_envs" not in source and "from robot_infra" not in source


def test_register_device_adds_a_kind():
    made = []

    def factory(action_dim, **kwargs):
        made.append((action_dim, kwargs))
        return None

    register_device("my_pedal", factory)
    try:
        assert "my_pedal" in device_kinds()
        make_device("my_pedal", 4, sensitivity=2)
        assert made == [(4, {"sensitivity": 2})]
        register_device("my_pedal_by_path", "serl_launcher.human.keyboard:KeyboardDevice")
        assert isinstance(make_device("my_pedal_by_path", 4, listen=False), KeyboardDevice)
    finally:
        devices_module._REGISTRY.pop("my_pedal", None)
        devices_module._REGISTRY.pop("my_pedal_by_path", None)


def test_device_from_config(monkeypatch):
    monkeypatch.delenv("PYNPUT_BACKEND", raising=False)  # restored after the test
    env = gym.make("PandaPickCube-v0")
    config = base_config()
    assert config.actor.intervention.device == "scripted"
    device = device_from_config(config.actor.intervention, 4, lambda: PickCubeExpert(env), seed=1)
    assert isinstance(device, StallTakeover) and device.patience == config.actor.intervention.patience
    assert device_from_config(config.actor.intervention, 4, lambda: None) is None  # no expert: nobody
    config.actor.intervention.device = "keyboard"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # headless: the dummy backend's warning
        keyboard = device_from_config(config.actor.intervention, 4, lambda: PickCubeExpert(env))
    assert isinstance(keyboard, KeyboardDevice) and not keyboard.intervening
    keyboard.close()
    config.actor.intervention.device = "viewer"
    with pytest.raises(ValueError, match="viewer window"):
        device_from_config(config.actor.intervention, 4, lambda: None)
    config.actor.intervention.device = "none"
    assert device_from_config(config.actor.intervention, 4, lambda: PickCubeExpert(env)) is None
    config.actor.intervention.device = "scripted"
    config.actor.intervention.enabled = False
    assert device_from_config(config.actor.intervention, 4, lambda: PickCubeExpert(env)) is None
    env.close()
