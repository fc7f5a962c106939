"""Cropping a recorded dataset (scripts/crop_dataset.py): a LeRobot folder and a demo file, from
--roi, the config lines it prints, the cropped copies (read back), the headless error, and the
interactive picker driven by mouse and key events on matplotlib's Agg canvas."""

import subprocess

import numpy as np
import pytest
from conftest import REPO
from test_lerobot import (
    ACT_SPACE,
    OBS_SPACE,
    assert_same_frames,
    episode_transitions,
    write_lerobot_fixture,
)

from serl_launcher.data import load_demos, save_demos
from serl_launcher.data.lerobot import LeRobotMapping, import_lerobot, read_info
from serl_launcher.utils import images

pytest.importorskip("av")

SCRIPT = str(REPO / "scripts/crop_dataset.py")


def test_a_lerobot_dataset_is_cropped_from_roi_and_its_copy_imports(tmp_path, python, subprocess_env):
    source = [episode_transitions(e, n, terminal=True) for e, n in enumerate([5, 4])]
    write_lerobot_fixture(tmp_path / "hil", source)  # its top camera is 64 x 48
    out = tmp_path / "cropped"
    result = subprocess.run([python, SCRIPT, "--dataset", str(tmp_path / "hil"), "--roi", "top=8,4,48,40",
                             "--roi", "wrist=none", "--size", "32,32", "--output", str(out)],
                            capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "c.demos.lerobot.crops = {'top': (8, 4, 48, 40)}" in result.stdout
    assert f"wrote the cropped copy {out} (observation.images.top: [32, 32, 3])" in result.stdout
    info = read_info(out)
    assert info["features"]["observation.images.top"]["shape"] == [32, 32, 3]
    assert info["features"]["observation.images.wrist"]["shape"] == [32, 32, 3]  # untouched
    base = dict(observations={"state": "observation.state[0:5]", "front": "observation.images.top"},
                action_low=(-1, -1, -1, 0), action_high=(1, 1, 1, 2), gripper_close=-1)
    original, _ = import_lerobot(tmp_path / "hil", OBS_SPACE, ACT_SPACE,
                                 LeRobotMapping(**base, crops={"front": (8, 4, 48, 40)}), grasp_penalty=True)
    copy, _ = import_lerobot(out, OBS_SPACE, ACT_SPACE, LeRobotMapping(**base), grasp_penalty=True)
    for camera in ("front", "wrist"):
        assert_same_frames(np.stack([t["observations"][camera] for e in copy for t in e]).astype(int),
                           np.stack([t["observations"][camera] for e in original for t in e]).astype(int))
    np.testing.assert_array_equal(np.stack([t["actions"] for e in copy for t in e]),
                                  np.stack([t["actions"] for e in original for t in e]))

    # With the experiment: the crop is keyed by its camera names.
    named = subprocess.run([python, SCRIPT, "--dataset", str(tmp_path / "hil"), "--roi", "top=8,4,48,40",
                            "--roi", "wrist=none", "--exp_name", "pick_cube_sim_vision",
                            "--set", "demos.lerobot.observations={'front': 'observation.images.top'}"],
                           capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert named.returncode == 0, named.stderr[-3000:]
    assert "c.demos.lerobot.crops = {'front': (8, 4, 48, 40)}" in named.stdout

    for args, message in ((["--roi", "top=60,0,10,10", "--roi", "wrist=none"], "reaches past the image"),
                          (["--roi", "side=0,0,4,4"], "CAMERA one of ['top', 'wrist']"),
                          (["--roi", "top=0,0,48,40"], "pass --roi CAMERA=x,y,w,h (or CAMERA=none) for wrist 32x32"),
                          (["--roi", "top=0,0,47,40", "--roi", "wrist=none", "--output", str(tmp_path / "odd")],
                           "needs an even width and height")):
        bad = subprocess.run([python, SCRIPT, "--dataset", str(tmp_path / "hil"), *args],
                             capture_output=True, text=True, env=subprocess_env, timeout=120)
        assert bad.returncode == 1 and message in bad.stderr, (args, bad.stderr[-2000:])
    assert not (tmp_path / "odd").exists()


def test_a_demo_file_is_cropped_and_resized_back_to_its_frame_size(tmp_path, python, subprocess_env):
    demos = save_demos(tmp_path / "d.npz", episode_transitions(0, 6, terminal=True))
    out = tmp_path / "d_cropped.npz"
    result = subprocess.run([python, SCRIPT, "--dataset", str(demos), "--roi", "front=4,6,20,16", "--roi",
                             "wrist=none", "--output", str(out)],
                            capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "camera 'front': region (4, 6, 20, 16) (x, y, w, h) of the recorded 32x32 frames" in result.stdout
    before, after = load_demos(demos), load_demos(out)
    for a, b in zip(before, after, strict=True):
        for name in ("observations", "next_observations"):
            expected = images.resize(a[name]["front"][6:22, 4:24], (32, 32))
            np.testing.assert_array_equal(b[name]["front"], expected)
            np.testing.assert_array_equal(b[name]["wrist"], a[name]["wrist"])
        np.testing.assert_array_equal(b["actions"], a["actions"])


def test_the_picker_turns_a_drag_and_enter_into_a_region():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backend_bases import KeyEvent
    from matplotlib.testing.widgets import click_and_drag

    from robot_infra.tools.pick_roi import RoiPicker

    image = np.zeros((48, 64, 3), np.uint8)
    picker = RoiPicker(image, "test")
    KeyEvent("key_press_event", picker.figure.canvas, "enter")._process()
    assert picker.roi is None  # nothing selected: Enter does nothing
    click_and_drag(picker.selector, start=(7.5, 3.5), end=(55.5, 43.5))  # pixel edges of columns 8..55
    KeyEvent("key_press_event", picker.figure.canvas, "enter")._process()
    assert picker.roi == (8, 4, 48, 40)
    past = RoiPicker(image, "test")
    click_and_drag(past.selector, start=(-0.4, -0.4), end=(70, 50))  # dragged past the edge: clipped
    KeyEvent("key_press_event", past.figure.canvas, "enter")._process()
    assert past.roi == (0, 0, 64, 48)
    cancelled = RoiPicker(image, "test")
    click_and_drag(cancelled.selector, start=(1, 1), end=(20, 20))
    KeyEvent("key_press_event", cancelled.figure.canvas, "escape")._process()
    assert cancelled.roi is None
