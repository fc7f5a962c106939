"""Pick a camera's crop (region of interest) on a saved frame and print it as a config line.

    python -m robot_infra.tools.pick_roi --image camera_check/wrist_raw.png --camera wrist
    python -m robot_infra.tools.pick_roi --image frame.png --roi 120,40,400,400 --camera wrist

Without ``--roi`` it opens a window (matplotlib's rectangle selector, so it works with the
headless OpenCV wheel the project installs): drag a rectangle, adjust its handles, Enter accepts,
Esc cancels. That needs a display and an interactive matplotlib backend (Tk, which CPython ships,
or Qt; ``MPLBACKEND`` picks one); without them, pass the numbers. The region is checked against
the image size, the crop is saved (``--out``, default ``<image>_crop.png`` beside the image;
resized too when ``--size`` is given, i.e. what the policy would see) and the config line is
printed. Frames for this tool come from ``python -m robot_infra.tools.check_cameras`` (its
``<name>_raw.png``); for a recorded dataset use ``scripts/crop_dataset.py``.
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


GUI_BACKENDS = ("TkAgg", "QtAgg", "GTK4Agg")


def display_available() -> bool:
    """A display to open a window on, and an interactive matplotlib backend for it (the one
    ``MPLBACKEND`` names, else the first of GUI_BACKENDS that starts)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import matplotlib.pyplot as plt

    for backend in ([os.environ["MPLBACKEND"]] if os.environ.get("MPLBACKEND") else GUI_BACKENDS):
        try:
            plt.switch_backend(backend)
            plt.close(plt.figure())
            return True
        except Exception:  # noqa: BLE001 - ImportError, TclError, RuntimeError ... all mean "not this one"
            continue
    return False


class RoiPicker:
    """A figure showing an RGB image with a rectangle selector. Drag (and adjust the handles),
    then Enter: :attr:`roi` is the (x, y, w, h) pixel region, clipped to the image. Esc, or
    closing the window, leaves it None."""

    def __init__(self, image_rgb: np.ndarray, title: str):
        import matplotlib.pyplot as plt
        from matplotlib.widgets import RectangleSelector

        self.shape = image_rgb.shape
        self.roi: tuple[int, int, int, int] | None = None
        self.figure, self.axes = plt.subplots()
        self.axes.imshow(image_rgb)
        self.axes.set_title(f"{title}\ndrag a rectangle, Enter to accept, Esc to cancel", fontsize=9)
        self.selector = RectangleSelector(self.axes, lambda press, release: None, interactive=True,
                                          useblit=False, button=[1], minspanx=2, minspany=2, spancoords="pixels")
        self.figure.canvas.mpl_connect("key_press_event", self._key)

    def region(self) -> tuple[int, int, int, int] | None:
        """The selector's rectangle as whole pixels: pixel i covers [i - 0.5, i + 0.5] in data units."""
        x0, x1, y0, y1 = self.selector.extents
        height, width = self.shape[:2]
        left, right = max(0, int(round(x0 + 0.5))), min(width, int(round(x1 + 0.5)))
        top, bottom = max(0, int(round(y0 + 0.5))), min(height, int(round(y1 + 0.5)))
        return (left, top, right - left, bottom - top) if right > left and bottom > top else None

    def _key(self, event) -> None:
        import matplotlib.pyplot as plt

        if event.key == "enter":
            self.roi = self.region()
            if self.roi is None:
                return  # nothing selected yet: keep the window open
        elif event.key != "escape":
            return
        plt.close(self.figure)


def select_roi_interactively(image_rgb: np.ndarray, title: str = "pick_roi") -> tuple[int, int, int, int]:
    """Shows the image until Enter / Esc (needs :func:`display_available`); ValueError on cancel."""
    import matplotlib.pyplot as plt

    picker = RoiPicker(image_rgb, title)
    plt.show()
    if picker.roi is None:
        raise ValueError("no region was selected")
    return picker.roi


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
            roi = select_roi_interactively(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), f"pick_roi: {image_path.name}")
        else:
            parser.error("no display to select a region on (or no interactive matplotlib backend): pass "
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
