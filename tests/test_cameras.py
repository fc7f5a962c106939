"""Cameras against real sources: generated video files (lossless FFV1, so pixels are exact) and a
live MJPEG stream served over loopback HTTP. Every frame carries its number as a row of black and
white cells, so a test can tell which frame a camera handed out."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
import time
import types

import cv2
import numpy as np
import pytest
from ml_collections import config_dict

from robot_infra.cameras import (
    Camera,
    CameraError,
    OpenCVCamera,
    RealSenseCamera,
    camera_config,
    make_camera,
    make_cameras,
)

HEIGHT, WIDTH = 96, 128
CELL = 8  # frame-number cells: CELL x CELL pixels along the top row, 16 bits
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def make_frame(number: int) -> np.ndarray:
    """(96, 128, 3) uint8 RGB: the frame number in binary on top, four coloured quadrants below.

    Quadrants (rows 16.., split at row 56 and column 64): red | green over blue | white.
    """
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for bit in range(WIDTH // CELL):
        if number >> bit & 1:
            frame[:CELL, bit * CELL:(bit + 1) * CELL] = 255
    frame[16:56, :64], frame[16:56, 64:] = RED, GREEN
    frame[56:, :64], frame[56:, 64:] = BLUE, WHITE
    return frame


def frame_number(frame: np.ndarray) -> int:
    centres = frame[CELL // 2, CELL // 2::CELL].astype(np.float32).mean(axis=-1)
    return int(sum(1 << bit for bit, value in enumerate(centres) if value > 127))


def write_video(path, count: int, fps: float) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for number in range(count):
        writer.write(cv2.cvtColor(make_frame(number), cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def video(tmp_path):
    """3 s of frames at 50 fps."""
    return write_video(tmp_path / "frames.avi", 150, 50.0)


class MjpegStream:
    """A live camera over HTTP (multipart MJPEG, as IP cameras serve it), generating frames at
    `fps` from the moment a client connects; `frames` > 0 ends the stream after that many, or
    with `linger` keeps the connection open without sending anything more."""

    def __init__(self, fps: float = 50.0, frames: int = 0, linger: bool = False):
        self.sent = 0
        stream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                number = 0
                try:
                    while not stream.stopped.is_set() and (not frames or number < frames):
                        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(make_frame(number),
                                                                     cv2.COLOR_RGB2BGR))
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n"
                                         + jpeg.tobytes() + b"\r\n")
                        number += 1
                        stream.sent = number
                        stream.stopped.wait(1.0 / fps)
                    if linger:
                        stream.stopped.wait()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.stopped = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stream():
    server = MjpegStream()
    yield server
    server.close()


# -- frames, order, colours -----------------------------------------------------------------------


def test_frame_pattern_round_trips():
    assert [frame_number(make_frame(n)) for n in (0, 1, 5, 149, 40000)] == [0, 1, 5, 149, 40000]


def test_file_camera_gives_rgb_frames_from_the_start(video):
    with OpenCVCamera("front", video) as camera:
        frame = camera.read()
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
        assert frame_number(frame) < 10
        assert tuple(frame[30, 10]) == RED and tuple(frame[80, 10]) == BLUE  # RGB, not BGR
        assert camera.frame_rate == pytest.approx(50.0)


def test_slow_reader_gets_the_newest_frame_not_a_backlog(video):
    with OpenCVCamera("front", video) as camera:
        first = frame_number(camera.read())
        time.sleep(0.5)  # 25 frames arrive meanwhile
        received = camera.frames_received
        later = frame_number(camera.read())
        assert later >= received - 1  # the newest one the reader had, not first + 1
        assert later - first >= 12
        assert frame_number(camera.read()) >= later  # never back in time


def test_stream_slow_reader_gets_the_newest_frame(stream):
    with OpenCVCamera("wrist", stream.url) as camera:
        assert camera.source_description == f"stream {stream.url!r}"
        first = frame_number(camera.read())
        time.sleep(0.5)
        sent = stream.sent
        later = frame_number(camera.read())
        assert later - first >= 12
        assert later >= sent - 3  # at most a frame or two in flight, no queue of old frames
        assert tuple(camera.read()[80, 120]) == pytest.approx(WHITE, abs=12)  # JPEG: nearly exact


def test_stream_end_is_an_error_naming_the_camera():
    server = MjpegStream(fps=100.0, frames=5)
    try:
        camera = OpenCVCamera("wrist", server.url)
        assert wait_until(lambda: not camera.reader_alive)
        with pytest.raises(CameraError, match=r"camera 'wrist' \(stream .*\): the stream ended"):
            camera.read()
        camera.close()
    finally:
        server.close()


def test_a_silent_stream_fails_after_the_timeout_instead_of_hanging():
    server = MjpegStream(fps=100.0, frames=3, linger=True)
    try:
        camera = OpenCVCamera("wrist", server.url, timeout=0.5, stale_after=None)
        camera.read()
        assert wait_until(lambda: not camera.reader_alive, timeout=5.0)
        with pytest.raises(CameraError, match=r"the stream ended \(or sent nothing for 0.5 s\) "
                                              "after 3 frames"):
            camera.read()
        camera.close()
    finally:
        server.close()


# -- crop and resize --------------------------------------------------------------------------------


def test_roi_crop_and_resize(video):
    # 16 x 16 at the blue | white border, shrunk 4x: two blue columns, two white ones.
    with OpenCVCamera("front", video, crop=(56, 60, 16, 16), size=(4, 4)) as camera:
        frame = camera.read()
    assert frame.shape == (4, 4, 3)
    expected = np.zeros((4, 4, 3), np.uint8)
    expected[:, :2], expected[:, 2:] = BLUE, WHITE
    np.testing.assert_array_equal(frame, expected)


def test_roi_crop_without_resize_and_enlarging(video):
    with OpenCVCamera("front", video, crop=(0, 0, WIDTH, CELL)) as camera:
        strip = camera.read()
        assert strip.shape == (CELL, WIDTH, 3)
        # The number row survives a crop to just that row: the decoded number is a real frame's.
        assert 0 <= frame_number(strip) < 150 and frame_number(strip) <= camera.frames_received
    with OpenCVCamera("front", video, crop=(100, 70, 4, 4), size=(12, 8)) as camera:
        frame = camera.read()
        assert frame.shape == (12, 8, 3) and (frame == 255).all()


def test_callable_crop(video):
    with OpenCVCamera("front", video, crop=lambda f: f[16:56, 64:], size=(10, 10)) as camera:
        frame = camera.read()
    assert frame.shape == (10, 10, 3) and (frame == np.array(GREEN, np.uint8)).all()


def test_bad_crops_are_named_errors(video):
    with OpenCVCamera("front", video, crop=(100, 0, 64, 10)) as camera:
        with pytest.raises(CameraError, match=r"'front'.*reaches past the 128x96"):
            camera.read()
    with OpenCVCamera("front", video, crop=lambda f: f[..., 0]) as camera:
        with pytest.raises(CameraError, match="crop function returned an array of shape"):
            camera.read()
    with pytest.raises(CameraError, match="w, h > 0"):
        OpenCVCamera("front", video, crop=(0, 0, 0, 5))
    with pytest.raises(CameraError, match="size must be None or"):
        OpenCVCamera("front", video, size=(5,))


# -- ends and failures ------------------------------------------------------------------------------


def test_end_of_file_is_an_error_naming_the_camera(tmp_path):
    path = write_video(tmp_path / "short.avi", 5, 100.0)
    camera = OpenCVCamera("front", path)
    assert wait_until(lambda: not camera.reader_alive)
    with pytest.raises(CameraError, match=r"camera 'front' \(video file .*short.avi'\): the video "
                                          r"file ended after 5 frames"):
        camera.read()
    camera.close()


def test_loop_plays_a_file_again(tmp_path):
    path = write_video(tmp_path / "short.avi", 5, 100.0)
    with OpenCVCamera("front", path, loop=True) as camera:
        assert wait_until(lambda: camera.frames_received > 12)
        assert frame_number(camera.read()) < 5


def test_unopenable_sources(tmp_path):
    with pytest.raises(CameraError, match=r"camera 'front': video file .*missing.avi' does not exist"):
        OpenCVCamera("front", tmp_path / "missing.avi")
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(CameraError, match=r"camera 'front': OpenCV could not open video file"):
        OpenCVCamera("front", garbage)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CameraError, match=r"camera 'ip': OpenCV could not open stream"):
        OpenCVCamera("ip", f"http://127.0.0.1:{port}/stream.mjpg")


class ScriptedSource(Camera):
    """A source whose frames come from a list; None blocks until closed, an exception fails."""

    kind = "scripted"

    def __init__(self, name, script, **kwargs):
        super().__init__(name, **kwargs)
        self.script = list(script)
        self.released = threading.Event()
        self._start()

    @property
    def source_description(self):
        return "a scripted source"

    def _open(self):
        pass

    def _grab(self):
        item = self.script.pop(0) if self.script else None
        if item is None:
            self._stop.wait()  # a source that delivers nothing, until close()
            return None
        if isinstance(item, Exception):
            raise item
        return item

    def _release(self):
        self.released.set()


def test_no_first_frame_is_a_timeout_naming_the_camera():
    with ScriptedSource("side", [None]) as camera:
        start = time.monotonic()
        with pytest.raises(CameraError, match=r"camera 'side' \(a scripted source\): no frame within "
                                              r"0.2 s"):
            camera.read(timeout=0.2)
        assert time.monotonic() - start < 2.0


def test_a_stalled_source_is_an_error_not_an_old_frame():
    with ScriptedSource("side", [make_frame(3), None], stale_after=0.2) as camera:
        assert frame_number(camera.read()) == 3
        time.sleep(0.3)
        with pytest.raises(CameraError, match="no new frame for"):
            camera.read()


def test_a_failing_source_is_reported():
    camera = ScriptedSource("side", [make_frame(1), OSError("USB reset")])
    assert wait_until(lambda: not camera.reader_alive)
    assert camera.released.is_set()
    with pytest.raises(CameraError, match=r"'side'.*reading failed after 1 frames: OSError\('USB reset'"):
        camera.read()
    camera.close()


def test_close_stops_the_reader_thread(video, stream):
    for source in (video, stream.url):
        camera = OpenCVCamera("front", source)
        camera.read()
        assert camera.reader_alive
        camera.close()
        assert not camera.reader_alive
        assert "camera-front" not in [t.name for t in threading.enumerate()]
        with pytest.raises(CameraError, match="camera 'front' is closed"):
            camera.read()
        camera.close()  # twice is fine
    blocked = ScriptedSource("side", [None])
    blocked.close()  # a source blocked waiting for a frame stops too
    assert not blocked.reader_alive and blocked.released.is_set()


# -- configs -----------------------------------------------------------------------------------------


def test_make_cameras_from_config(video):
    cameras = config_dict.ConfigDict()
    cameras.wrist = camera_config("opencv", video, crop=(56, 60, 16, 16), size=(4, 4))
    cameras.front = camera_config("opencv", video, size=(48, 64))
    cameras.front.crop = (0, 16, WIDTH, HEIGHT - 16)  # None-typed fields accept a tuple later
    cameras.lock()
    with make_cameras(cameras) as rig:
        assert set(rig) == {"wrist", "front"} and isinstance(rig["wrist"], OpenCVCamera)
        frames = rig.read()
        assert frames["wrist"].shape == (4, 4, 3) and frames["front"].shape == (48, 64, 3)
        assert tuple(frames["front"][5, 5]) == RED
    assert not rig["wrist"].reader_alive and not rig["front"].reader_alive


def test_camera_config_errors_name_the_camera(video, tmp_path):
    with pytest.raises(CameraError, match=r"camera 'front': unknown config keys \['cropp'\] for an? "
                                          r"opencv camera"):
        make_camera("front", {"kind": "opencv", "source": video, "cropp": (0, 0, 1, 1)})
    with pytest.raises(CameraError, match="unknown kind 'kinect'"):
        make_camera("front", {"kind": "kinect", "source": 0})
    # A camera that fails to open closes the ones opened before it.
    before = set(threading.enumerate())
    with pytest.raises(CameraError, match="'side'.*does not exist"):
        make_cameras({"front": camera_config("opencv", video),
                      "side": camera_config("opencv", str(tmp_path / "nope.avi"))})
    assert wait_until(lambda: not [t for t in set(threading.enumerate()) - before
                                   if t.name.startswith("camera-")])


# -- RealSense ------------------------------------------------------------------------------------


def test_realsense_without_pyrealsense2_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # `import pyrealsense2` fails
    with pytest.raises(CameraError, match="camera 'wrist' is a RealSense camera, which needs the "
                                          "pyrealsense2 package"):
        RealSenseCamera("wrist", "123")


def fake_pyrealsense2(serials, frames):
    """A stand-in for the pyrealsense2 API (no device behind it): checks the calls the camera
    makes and hands out `frames`. It tests this module's use of the API, not a RealSense."""
    rs = types.SimpleNamespace(
        camera_info=types.SimpleNamespace(serial_number="serial"),
        stream=types.SimpleNamespace(color="color"),
        format=types.SimpleNamespace(rgb8="rgb8"),
        option=types.SimpleNamespace(exposure="exposure", enable_auto_exposure="auto"),
        calls=[],
    )

    class Device:
        def __init__(self, serial):
            self.serial = serial

        def get_info(self, what):
            assert what == "serial"
            return self.serial

    class Context:
        def query_devices(self):
            return [Device(s) for s in serials]

    class Config:
        def enable_device(self, serial):
            rs.calls.append(("device", serial))

        def enable_stream(self, stream, width, height, fmt, fps):
            rs.calls.append(("stream", stream, width, height, fmt, fps))

    class ColorFrame:
        def __init__(self, image):
            self.image = image

        def __bool__(self):
            return True

        def get_data(self):
            return self.image

    class Pipeline:
        def start(self, config):
            return self

        def wait_for_frames(self, timeout_ms):
            if not frames:
                time.sleep(timeout_ms / 1000)
                raise RuntimeError(f"Frame didn't arrive within {timeout_ms}")
            return types.SimpleNamespace(get_color_frame=lambda: ColorFrame(frames.pop(0)))

        def stop(self):
            rs.calls.append(("stop",))

    rs.context, rs.config, rs.pipeline = Context, Config, Pipeline
    return rs


def test_realsense_stream_through_the_api(monkeypatch):
    rs = fake_pyrealsense2(["111", "222"], [make_frame(7), make_frame(8)])
    monkeypatch.setitem(sys.modules, "pyrealsense2", rs)
    camera = make_camera("wrist", camera_config("realsense", "222", crop=(56, 60, 16, 16),
                                                size=(4, 4), resolution=(96, 128), fps=15,
                                                timeout=0.2))
    assert ("device", "222") in rs.calls and ("stream", "color", 128, 96, "rgb8", 15) in rs.calls
    assert wait_until(lambda: camera.frames_received == 2)
    frame = camera.read()
    assert frame.shape == (4, 4, 3) and tuple(frame[0, 0]) == BLUE
    assert frame_number(camera.read_raw()) == 8
    assert wait_until(lambda: not camera.reader_alive)  # wait_for_frames timed out
    with pytest.raises(CameraError, match=r"'wrist' \(RealSense 222\): reading failed after 2 frames"):
        camera.read()
    camera.close()
    assert ("stop",) in rs.calls
    with pytest.raises(CameraError, match=r"no RealSense with serial '333'; connected: \['111', '222'\]"):
        RealSenseCamera("wrist", "333")
    with pytest.raises(CameraError, match=r"give the RealSense's serial number as its source \(2 "
                                          "connected"):
        RealSenseCamera("wrist")


def test_dev_paths_are_devices_not_files():
    from robot_infra.cameras.opencv import is_device_path

    assert is_device_path("/dev/video0") and is_device_path("/dev/v4l/by-id/usb-cam-index0")
    assert not is_device_path("clip.mp4") and not is_device_path("rtsp://cam/stream")
    with pytest.raises(CameraError, match="video device /dev/video99"):
        OpenCVCamera("front", "/dev/video99", timeout=1.0)
