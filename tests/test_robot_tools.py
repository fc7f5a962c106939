"""The set-up tools with recorded inputs (a poses file, a pose server on loopback, an image, a video
file), each run as ``python -m robot_infra.tools.<tool>`` in a subprocess at least once."""

from __future__ import annotations

import http.server
import json
import math
import re
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from robot_infra.tools import check_cameras, find_workspace_bounds, pick_roi
from robot_infra.tools.find_workspace_bounds import WorkspaceBounds, format_bounds

REPO = Path(__file__).resolve().parent.parent
S = math.sqrt(0.5)
POSES = [  # x, y, z, qx, qy, qz, qw: the second is turned 90 degrees about z
    [0.30, -0.10, 0.05, 0.0, 0.0, 0.0, 1.0],
    [0.50, 0.10, 0.20, 0.0, 0.0, S, S],
    [0.40, 0.00, 0.10, 0.0, 0.0, 0.0, 1.0],
    [0.35, -0.05, 0.30, 0.0, 0.0, 0.0, 1.0],
]
LOW_LINE = "c.env.workspace_low = (0.2900, -0.1100, 0.0400)"  # margin 0.01 around POSES
HIGH_LINE = "c.env.workspace_high = (0.5100, 0.1100, 0.3100)"


def run_tool(python, env, tool, *args, timeout=60):
    return subprocess.run([python, "-m", f"robot_infra.tools.{tool}", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def poses_file(tmp_path):
    path = tmp_path / "poses.jsonl"
    lines = [json.dumps({"pose": p}) for p in POSES[:2]] + ["", json.dumps(POSES[2]),
                                                           json.dumps({"pose": POSES[3]})]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- find_workspace_bounds --------------------------------------------------------------------------


def test_bounds_from_poses_by_hand():
    bounds = find_workspace_bounds.find_workspace_bounds(POSES, margin=0.01)
    np.testing.assert_allclose(bounds.low, [0.29, -0.11, 0.04])
    np.testing.assert_allclose(bounds.high, [0.51, 0.11, 0.31])
    assert bounds.count == 4
    np.testing.assert_allclose(bounds.rotation_low, [0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(bounds.rotation_high, [0.0, 0.0, 90.0], atol=1e-6)
    text = format_bounds(bounds, prefix="env.", source="test")
    assert "env.workspace_low = (0.2900, -0.1100, 0.0400)" in text
    assert "# 4 poses from test; margin 0.010 m" in text
    positions_only = find_workspace_bounds.find_workspace_bounds(iter([[0, 0, 0], [1, 2, 3]]), 0.0)
    assert positions_only.rotation_low is None
    assert "rotation" not in format_bounds(positions_only)
    assert isinstance(positions_only, WorkspaceBounds)


def test_bounds_from_a_callable_polled():
    readings = iter(POSES * 100)
    poses = find_workspace_bounds.poll_poses(lambda: next(readings), rate_hz=200.0, duration_s=0.1)
    bounds = find_workspace_bounds.find_workspace_bounds(poses, margin=0.01)
    assert 4 <= bounds.count <= 30  # about 20 polls in 0.1 s
    np.testing.assert_allclose(bounds.high, [0.51, 0.11, 0.31])
    flaky = iter([OSError("refused")] * 2 + POSES)

    def get_pose():
        item = next(flaky)
        if isinstance(item, Exception):
            raise item
        return item

    poses = find_workspace_bounds.poll_poses(get_pose, rate_hz=1000.0, duration_s=None)
    np.testing.assert_allclose([next(poses) for _ in range(4)], POSES)  # two failures retried

    def down():
        raise OSError("down")

    failing = find_workspace_bounds.poll_poses(down, rate_hz=1000.0, max_failures=3)
    with pytest.raises(RuntimeError, match="failed 3 times in a row; the last error: down"):
        next(failing)


def test_bad_pose_files_name_the_line(tmp_path):
    path = tmp_path / "poses.jsonl"
    path.write_text(json.dumps({"pose": POSES[0]}) + "\n\n{not json\n")
    with pytest.raises(ValueError, match=r"poses.jsonl:3: not JSON"):
        list(find_workspace_bounds.poses_from_file(path))
    path.write_text(json.dumps({"position": [1, 2, 3]}) + "\n")
    with pytest.raises(ValueError, match=r"poses.jsonl:1: expected an object with a 'pose' key"):
        list(find_workspace_bounds.poses_from_file(path))
    path.write_text(json.dumps([1, 2]) + "\n")
    with pytest.raises(ValueError, match="at least 3 finite numbers"):
        list(find_workspace_bounds.poses_from_file(path))
    path.write_text("\n")
    with pytest.raises(ValueError, match="no poses were read"):
        find_workspace_bounds.find_workspace_bounds(find_workspace_bounds.poses_from_file(path))


def test_find_workspace_bounds_from_file_subprocess(python, subprocess_env, poses_file, tmp_path):
    result = run_tool(python, subprocess_env, "find_workspace_bounds", "--from_file", poses_file)
    assert result.returncode == 0, result.stderr
    assert LOW_LINE in result.stdout and HIGH_LINE in result.stdout
    assert "# 4 poses from" in result.stdout
    missing = run_tool(python, subprocess_env, "find_workspace_bounds",
                       "--from_file", tmp_path / "nope.jsonl")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


class PoseServer:
    """Answers GET with {"pose": ...}, cycling through `poses`, on a loopback port."""

    def __init__(self, poses):
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"pose": poses[server.requests % len(poses)]}).encode()
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/pose"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_find_workspace_bounds_from_url_subprocess(python, subprocess_env):
    server = PoseServer(POSES)
    try:
        result = run_tool(python, subprocess_env, "find_workspace_bounds", "--url", server.url,
                          "--duration", 1.0, "--rate", 20)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert server.requests >= len(POSES)
    assert LOW_LINE in result.stdout and HIGH_LINE in result.stdout
    assert "recording poses from" in result.stderr


def test_find_workspace_bounds_url_down_is_an_error():
    server = PoseServer(POSES)
    url = server.url
    server.close()  # nobody listens any more
    code = find_workspace_bounds.main(["--url", url, "--duration", "5", "--rate", "100"])
    assert code == 1


# -- pick_roi -----------------------------------------------------------------------------------------


@pytest.fixture
def frame_png(tmp_path):
    """A 96 x 128 frame: left half blue, right half white (BGR on disk, as cv2.imwrite wants)."""
    image = np.zeros((96, 128, 3), np.uint8)
    image[:, :64] = (255, 0, 0)  # blue in BGR
    image[:, 64:] = 255
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), image)
    return path


def test_pick_roi_numeric_subprocess(python, subprocess_env, frame_png):
    result = run_tool(python, subprocess_env, "pick_roi", "--image", frame_png,
                      "--roi", "56,10,16,16", "--camera", "wrist", "--size", "4,4")
    assert result.returncode == 0, result.stderr
    assert "cameras.wrist.crop = (56, 10, 16, 16)" in result.stdout
    assert "cameras.wrist.size = (4, 4)" in result.stdout
    preview = cv2.imread(str(frame_png.with_name("frame_crop.png")))
    assert preview.shape == (4, 4, 3)
    assert (preview[:, :2] == (255, 0, 0)).all() and (preview[:, 2:] == 255).all()


@pytest.mark.parametrize("roi, message", [
    ("100,0,64,10", "reaches past the image, which is 128 wide and 96 high"),
    ("0,0,0,10", "is empty"),
    ("-1,0,5,5", "starts outside the image"),
    ("1,2,3", "must be 4 integers"),
])
def test_pick_roi_rejects_bad_regions(frame_png, tmp_path, capsys, roi, message):
    with pytest.raises(SystemExit) as exit_info:
        pick_roi.main(["--image", str(frame_png), f"--roi={roi}"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not frame_png.with_name("frame_crop.png").exists()


def test_pick_roi_without_display_asks_for_numbers(python, subprocess_env, frame_png, tmp_path):
    result = run_tool(python, subprocess_env, "pick_roi", "--image", frame_png)  # no DISPLAY
    assert result.returncode == 2
    assert "pass the region as --roi x,y,w,h (the image is 128 wide, 96 high)" in result.stderr
    missing = run_tool(python, subprocess_env, "pick_roi", "--image", tmp_path / "nope.png",
                       "--roi", "0,0,1,1")
    assert missing.returncode == 2 and "cannot read an image" in missing.stderr


def test_pick_roi_writes_where_asked(frame_png, tmp_path, capsys):
    out = tmp_path / "sub.png"
    assert pick_roi.main(["--image", str(frame_png), "--roi", "60, 0, 8, 96", "--out", str(out)]) == 0
    assert cv2.imread(str(out)).shape == (96, 8, 3)
    assert "crop = (60, 0, 8, 96)" in capsys.readouterr().out


# -- check_cameras ------------------------------------------------------------------------------------


@pytest.fixture
def video(tmp_path):
    """3 s at 50 fps of 96 x 128 frames: red top half, green bottom half."""
    path = tmp_path / "front.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 50.0, (128, 96))
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[:48], frame[48:] = (0, 0, 255), (0, 255, 0)  # BGR
    for _ in range(150):
        writer.write(frame)
    writer.release()
    return path


def test_check_cameras_subprocess(python, subprocess_env, video, tmp_path):
    out = tmp_path / "check"
    result = run_tool(python, subprocess_env, "check_cameras", "--source", f"front={video}",
                      "--source", tmp_path / "missing.avi", "--out", out, "--seconds", 0.5)
    assert result.returncode == 1  # one camera failed
    assert "cam1: FAILED: camera 'cam1': video file" in result.stdout
    assert "1 of 2 cameras OK" in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("front:"))
    assert "raw 96x128, output 96x128 (height x width)" in line
    fps = float(re.search(r"([\d.]+) fps", line).group(1))
    assert 20.0 < fps < 80.0  # the file plays at its own 50 fps
    saved = cv2.imread(str(out / "front.png"))
    assert saved.shape == (96, 128, 3) and tuple(saved[10, 10]) == (0, 0, 255)
    assert (out / "front_raw.png").is_file()


def test_check_cameras_from_a_config_file(video, tmp_path, capsys):
    config = tmp_path / "my_config.py"
    config.write_text(
        "from ml_collections import config_dict\n"
        "from robot_infra.cameras import camera_config\n\n"
        "def get_config():\n"
        "    c = config_dict.ConfigDict()\n"
        "    c.env = config_dict.ConfigDict()\n"
        "    c.env.cameras = config_dict.ConfigDict()\n"
        f"    c.env.cameras.wrist = camera_config('opencv', {str(video)!r}, crop=(0, 40, 16, 16),\n"
        "                                        size=(4, 4))\n"
        "    return c\n")
    out = tmp_path / "frames"
    code = check_cameras.main(["--config", f"{config}:env.cameras", "--out", str(out),
                               "--seconds", "0.2"])
    assert code == 0
    assert "raw 96x128, output 4x4" in capsys.readouterr().out
    crop = cv2.imread(str(out / "wrist.png"))
    assert (crop[:2] == (0, 0, 255)).all() and (crop[2:] == (0, 255, 0)).all()
    with pytest.raises(SystemExit):
        check_cameras.main(["--config", f"{config}:env.lights"])
    assert "has no field 'env.lights'" in capsys.readouterr().err


@pytest.mark.parametrize("arm", ["so101", "koch"])
def test_emulate_arm_serves_the_arms_bus_in_a_process_until_sigterm(python, subprocess_env, tmp_path, arm):
    from services import start_service

    from robot_infra.calibration import ARMS, make_arm, uncalibrated_motors

    processes: list[subprocess.Popen] = []
    try:
        line = start_service([python, "-m", "robot_infra.tools.emulate_arm", f"--arm={arm}"],
                             f"emulated {arm} bus ({ARMS[arm].bus}) on /dev/", tmp_path / "bus.log",
                             subprocess_env, processes)
        driver = make_arm(ARMS[arm].bus, line.rsplit(" ", 1)[-1], uncalibrated_motors(ARMS[arm].motors),
                          timeout_ms=500).open()  # a loaded machine late in the suite: not about timing
        try:  # every servo of the arm answers, reads and writes its memory
            for motor_id in ARMS[arm].motors.values():
                driver.ping(motor_id)
            assert not driver.torque_enabled().any()  # as after power-on
            driver.set_torque(True)
            assert driver.torque_enabled().all()
        finally:
            driver.close()
        processes[0].terminate()
        assert processes[0].wait(timeout=10) == 0
        closing = (tmp_path / "bus.log").read_text()
        assert "emulated bus closed" in closing and "line settings changed since start: no raw-mode flag" in closing
    finally:
        for process in processes:
            process.kill()


@pytest.mark.parametrize("arm", ["so101", "koch"])
def test_a_port_put_back_to_cooked_mode_by_another_program_is_restored_and_logged(arm, caplog):
    """`stty sane` (or ModemManager probing a ttyACM) turns on output processing that rewrites
    byte 0x0A: an SO-101's sync read of six servos (length byte 0x0A) then never reaches the
    servos. The driver notices on the retry, restores raw mode, says so, and the read goes on."""
    import termios

    from robot_infra.calibration import ARMS, make_arm, uncalibrated_motors
    from robot_infra.tools.emulate_arm import make_emulator

    emulator = make_emulator(arm)
    try:
        # A generous timeout: this test is about the line settings, not about a loaded machine.
        driver = make_arm(ARMS[arm].bus, emulator.port, uncalibrated_motors(ARMS[arm].motors),
                          timeout_ms=500).open()
        try:
            before = driver.read_present_ticks()
            subprocess.run(f"stty sane < {emulator.port}", shell=True, check=True)
            cooked = termios.tcgetattr(emulator.slave_fd)
            assert cooked[1] & termios.OPOST and cooked[3] & termios.ICANON
            with caplog.at_level("WARNING", logger="robot_infra.servo_bus"):
                np.testing.assert_array_equal(driver.read_present_ticks(), before)
                driver.set_torque(True)
                assert driver.torque_enabled().all()
            assert driver.line_restores == 1
            assert "another program changed the serial port's settings" in caplog.text
            assert "+OPOST" in caplog.text and "+ICANON" in caplog.text
            restored = termios.tcgetattr(emulator.slave_fd)
            assert not restored[1] & termios.OPOST and not restored[3] & termios.ICANON
        finally:
            driver.close()
    finally:
        emulator.close()


@pytest.mark.parametrize("arm", ["so101", "koch"])
def test_a_reply_that_arrived_while_the_driver_was_not_running_is_read_not_timed_out(arm):
    """The SDKs declare a timeout when the clock says so after an empty read; a driver thread
    descheduled between the two (a loaded machine) timed out on a reply already in the buffer."""
    import time

    from robot_infra.calibration import ARMS, make_arm, uncalibrated_motors
    from robot_infra.tools.emulate_arm import make_emulator

    emulator = make_emulator(arm)
    try:
        # A timeout a loaded machine's emulator thread meets (it shares this process), and retries
        # while opening; the read below then gets no retry, so a timeout would raise.
        timeout_s = 0.5
        driver = make_arm(ARMS[arm].bus, emulator.port, uncalibrated_motors(ARMS[arm].motors),
                          timeout_ms=1000 * timeout_s).open()
        driver.retries = 0
        try:
            serial_port = driver._port_handler.ser
            read, stalls = serial_port.read, [1]

            def stalled_read(size=1):  # an empty read, then off the CPU past the timeout: the reply lands meanwhile
                if stalls:
                    stalls.pop()
                    start = time.monotonic()  # the bus's thread may be slow on a loaded machine: wait for it
                    while serial_port.in_waiting == 0 and time.monotonic() - start < 10.0:
                        time.sleep(0.005)
                    assert serial_port.in_waiting > 0, "the emulator did not answer within 10 s"
                    time.sleep(max(0.0, 1.5 * timeout_s - (time.monotonic() - start)))  # well past the timeout
                    return b""
                return read(size)

            serial_port.read = stalled_read
            ticks = driver.read_present_ticks()
            assert not stalls and len(ticks) == len(ARMS[arm].motors)
            emulator.inject_fault("no_reply")  # a reply that never comes still times out
            with pytest.raises(Exception, match="no reply"):
                driver.read_present_ticks()
        finally:
            driver.close()
    finally:
        emulator.close()
