"""Cameras for real-arm envs: OpenCV capture (device, file, URL) and Intel RealSense, each with a
reader thread keeping only the newest frame, and per-camera crop and resize from the config."""

from robot_infra.cameras.base import Camera, CameraError, crop_and_resize
from robot_infra.cameras.factory import (
    CAMERA_KINDS,
    MultiCamera,
    camera_config,
    make_camera,
    make_cameras,
)
from robot_infra.cameras.opencv import OpenCVCamera
from robot_infra.cameras.realsense import RealSenseCamera

__all__ = [
    "CAMERA_KINDS", "Camera", "CameraError", "MultiCamera", "OpenCVCamera", "RealSenseCamera",
    "camera_config", "crop_and_resize", "make_camera", "make_cameras",
]
