"""Pick a camera's crop (region of interest) on a saved frame and print it as a config line.

    python -m robot_infra.tools.pick_roi --image camera_check/wrist_raw.png --camera wrist
    python -m robot_infra.tools.pick_roi --image frame.png --roi 120,40,400,400 --camera wrist

Without ``--roi`` it opens OpenCV's ROI selector (drag a rectangle, then Enter or Space; c
cancels); that needs a display and an OpenCV built with GUI support (``opencv-python``, not the
headless wheel). Without either, pass the numbers. The region is checked against the image size,
the crop is saved (``--out``, default ``<image>_crop.png`` beside the image; resized too when
``--size`` is given, i.e. what the policy would see) and the config line is printed. Frames for
this tool come from ``python -m robot_infra.tools.check_cameras`` (its ``<name>_raw.png``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from robot_infra.cameras.base import crop_and_resize

WINDOW = "pick_roi: drag a rectangle, Enter / Space to accept, c to cancel"


def parse_ints(text: str, count: int, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError as error:
        raise ValueError(f"{what} must be {count} integers separated by commas, got {text!r}") from error
    if len(values) != count:
        raise ValueError(f"{what} must be {count} integers separated by commas, got {text!r}")
    return values


def validate_roi(roi: Sequence[int], image_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """(x, y, w, h) inside an image of shape (H, W, ...); raises ValueError saying what is wrong."""
    x, y, w, h = (int(v) for v in roi)
    height, width = image_shape[:2]
    if w <= 0 or h <= 0:
        raise ValueError(f"the region (x, y, w, h) = {(x, y, w, h)} is empty: w and h must be > 0")
    if x < 0 or y < 0:
        raise ValueError(f"the region (x, y, w, h) = {(x, y, w, h)} starts outside the image: x and "
                         "y must be >= 0")
    if x + w > width or y + h > height:
        raise ValueError(f"the region (x, y, w, h) = {(x, y, w, h)} reaches past the image, which is "
                         f"{width} wide and {height} high (x + w <= {width}, y + h <= {height})")
    return (x, y, w, h)


def display_available() -> bool:
    """A display to open a window on, and an OpenCV that can open one."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("pick_roi probe")
        cv2.destroyWindow("pick_roi probe")
    except cv2.error:
        return False  # the headless OpenCV wheel: no GUI
    return True


def select_roi_interactively(image_bgr: np.ndarray) -> tuple[int, int, int, int]:
    roi = cv2.selectROI(WINDOW, image_bgr, showCrosshair=True, fromCenter=False)
    cv2.destroyAllWindows()
    if roi is None or int(roi[2]) <= 0 or int(roi[3]) <= 0:
        raise ValueError("no region was selected")
    return tuple(int(v) for v in roi)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m robot_infra.tools.pick_roi",
        description="Pick a crop region on a camera frame; print it as a config line.")
    parser.add_argument("--image", required=True, help="a frame from the camera (png, jpg ...)")
    parser.add_argument("--roi", help="x,y,w,h in pixels (default: select it in a window)")
    parser.add_argument("--camera", default=None, help="the camera's name in the config")
    parser.add_argument("--size", default=None, help="height,width the crop is resized to")
    parser.add_argument("--out", default=None, help="where to save the crop preview")
    args = parser.parse_args(argv)

    image_path = Path(args.image)
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if image is None:
        parser.error(f"cannot read an image from {str(image_path)!r} (missing, or not an image)")
    height, width = image.shape[:2]
    try:
        size = parse_ints(args.size, 2, "--size") if args.size else None
        if size is not None and min(size) <= 0:
            raise ValueError(f"--size must be positive, got {args.size!r}")
        if args.roi:
            roi = parse_ints(args.roi, 4, "--roi")
        elif display_available():
            roi = select_roi_interactively(image)
        else:
            parser.error("no display to select a region on (or OpenCV has no GUI support): pass "
                         f"the region as --roi x,y,w,h (the image is {width} wide, {height} high)")
        roi = validate_roi(roi, image.shape)
    except ValueError as error:
        parser.error(str(error))

    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    crop = crop_and_resize(rgb, roi, size)
    out = Path(args.out) if args.out else image_path.with_name(f"{image_path.stem}_crop.png")
    if not cv2.imwrite(str(out), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
        print(f"error: could not write the crop preview to {str(out)!r}", file=sys.stderr)
        return 1
    x, y, w, h = roi
    print(f"# {w}x{h} (w x h) region of the {width}x{height} frame {str(image_path)!r}; "
          f"preview: {out}")
    key = f"cameras.{args.camera}.crop" if args.camera else "crop"
    print(f"{key} = ({x}, {y}, {w}, {h})")
    if size is not None:
        print(f"{key[:-len('crop')]}size = ({size[0]}, {size[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
