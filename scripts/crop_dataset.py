"""Pick each camera's crop on the first frame of a recorded dataset; print the config lines, and
optionally write a cropped copy.

    python scripts/crop_dataset.py --dataset ~/data/my_lerobot_demos --exp_name so101_real
    python scripts/crop_dataset.py --dataset ~/data/my_lerobot_demos --roi top=120,40,400,400 \\
        --roi wrist=none --size 128,128 --output ~/data/my_lerobot_demos_cropped
    python scripts/crop_dataset.py --dataset experiments/pick_cube_sim_vision/demos/d.npz --roi front=4,4,24,24

The dataset: a LeRobot folder (v3.0; its video features are the cameras) or one of this
project's demo files (.npz; its image observations). Each camera's region is picked in a window
(matplotlib's rectangle selector: drag, Enter; needs a display) or given with ``--roi
CAMERA=x,y,w,h`` (``none``: keep that camera whole); without a display every camera needs one.

Printed: for a LeRobot dataset, ``demos.lerobot.crops`` for scripts/import_lerobot.py, keyed by
the experiment's camera names when ``--exp_name`` says how its cameras map onto the dataset's
(``demos.lerobot.observations``); for the live arm, the same region as ``cameras.<cam>.crop``
where the experiment has such a camera (its frames are the raw camera's, as LeRobot records them).
For a demo file, whose frames are already what the policy saw, the region in its pixels and,
where the experiment's camera has a crop and size, that region in the raw camera's pixels.

``--output``: the cropped copy (a LeRobot folder, videos re-encoded; or a .npz demo file), each
camera resized to ``--size`` (height,width) when given, else for a demo file back to its frame
size (so the experiment still reads it) and for a LeRobot dataset kept at the crop's size.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from experiments import cli

_DATASET = flags.DEFINE_string("dataset", None, "A LeRobot dataset folder or a demo file (.npz).", required=True)
_ROI = flags.DEFINE_multi_string("roi", [], "CAMERA=x,y,w,h (or CAMERA=none), repeatable; default: pick in a window.")
_SIZE = flags.DEFINE_string("size", None, "height,width the cropped copy's frames are resized to.")
_OUTPUT = flags.DEFINE_string("output", None, "Write a cropped copy here (a new folder, or a .npz file).")


def parse_rois(items: list[str], frames: dict) -> dict[str, tuple[int, int, int, int] | None]:
    from robot_infra.tools.pick_roi import parse_ints, validate_roi

    rois = {}
    for item in items:
        camera, sep, value = item.partition("=")
        if not sep or camera not in frames:
            raise app.UsageError(f"--roi {item!r}: expected CAMERA=x,y,w,h with CAMERA one of {sorted(frames)}")
        if camera in rois:
            raise app.UsageError(f"--roi {camera}: given twice")
        try:
            rois[camera] = (None if value.strip().lower() in ("none", "full")
                            else validate_roi(parse_ints(value, 4, f"--roi {camera}"), frames[camera].shape))
        except ValueError as error:
            raise app.UsageError(f"--roi {camera}: {error}") from None
    return rois


def main(argv: list[str]) -> None:
    del argv
    from robot_infra.tools.pick_roi import display_available, parse_ints, select_roi_interactively
    from serl_launcher.data import lerobot

    dataset = Path(_DATASET.value).expanduser()
    size = None
    if _SIZE.value:
        try:
            size = parse_ints(_SIZE.value, 2, "--size")
        except ValueError as error:
            raise app.UsageError(str(error)) from None
        if min(size) <= 0 or max(size) > 4096:
            raise app.UsageError(f"--size must be from 1 to 4096 pixels a side, got {_SIZE.value!r}")
    _, config = cli.load(required=False)  # the experiment, when named, says how its cameras map
    if config is None and cli.overrides():
        raise app.UsageError("--set changes an experiment's config: name the experiment (--exp_name or --config)")

    is_lerobot = dataset.is_dir()
    try:
        if is_lerobot:
            frames = {name.removeprefix("observation.images."): image
                      for name, image in lerobot.first_frames(dataset).items()}
        else:
            frames = first_demo_frames(dataset)
    except (lerobot.LeRobotFormatError, ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from None
    if not frames:
        raise app.UsageError(f"{dataset} has no camera frames to crop")
    rois = parse_rois(_ROI.value, frames)
    missing = [c for c in frames if c not in rois]
    if missing and not display_available():
        sizes = ", ".join(f"{c} {frames[c].shape[1]}x{frames[c].shape[0]}" for c in missing)
        raise app.UsageError(f"no display to pick regions on (or no interactive matplotlib backend): pass "
                             f"--roi CAMERA=x,y,w,h (or CAMERA=none) for {sizes} (width x height)")
    for camera in missing:
        try:
            rois[camera] = select_roi_interactively(frames[camera], f"{dataset.name}: camera {camera!r}")
        except ValueError:
            raise app.UsageError(f"no region selected for camera {camera!r}") from None
    chosen = {c: r for c, r in rois.items() if r is not None}

    for line in config_lines(chosen, frames, is_lerobot, config):
        print(line)
    if not _OUTPUT.value:
        return
    output = Path(_OUTPUT.value).expanduser()
    try:
        if is_lerobot:
            shapes = lerobot.crop_lerobot(dataset, output, {f"observation.images.{c}": r for c, r in chosen.items()}, size)
            print(f"wrote the cropped copy {output} (" + ", ".join(f"{k}: {v}" for k, v in shapes.items()) + ")")
        else:
            count = crop_demo_file(dataset, output, chosen, size)
            print(f"wrote the cropped copy {output} ({count} transitions)")
    except (lerobot.LeRobotFormatError, ValueError, OSError) as error:
        raise app.UsageError(str(error)) from None


def first_demo_frames(path: Path) -> dict:
    """{camera: first frame} of a demo file, read without loading the rest."""
    import json

    import numpy as np

    from serl_launcher.data.demos import FORMAT
    from serl_launcher.utils.npz import check_declared_size

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dataset (a LeRobot folder or a .npz demo file)")
    try:
        check_declared_size(path)
        with np.load(path, allow_pickle=False) as npz:
            manifest = json.loads(bytes(npz["manifest"]))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise ValueError("no demo archive manifest")
            spec = manifest["spec"]["observation"]
            cameras = [k for k, s in spec.items() if len(s["shape"]) == 3 and s["dtype"] == "uint8"]
            frames = {k: npz[f"observations/{k}"][0] for k in cameras}
    except Exception as error:  # noqa: BLE001 - zip, npy, JSON and key errors all mean "not a demo archive"
        raise ValueError(f"{path}: not a readable demo archive of this project ({type(error).__name__}: "
                         f"{error})") from None
    if any(f.ndim != 3 or f.shape[2] != 3 for f in frames.values()):
        raise ValueError(f"{path}: its camera frames are not (H, W, 3)")
    return frames


def crop_demo_file(src: Path, dst: Path, rois: dict, size) -> int:
    from serl_launcher.data import demo_state_layout, load_demos, save_demos
    from serl_launcher.utils import images

    if dst.suffix != ".npz":
        raise ValueError(f"--output {dst}: a cropped demo file is a .npz")
    if dst.exists():
        raise FileExistsError(f"{dst} already exists")
    transitions = load_demos(src)
    for t in transitions:
        for name in ("observations", "next_observations"):
            for camera, roi in rois.items():
                frame = t[name][camera]
                t[name][camera] = images.resize(images.crop(frame, roi), size or frame.shape[:2])
    save_demos(dst, transitions, demo_state_layout(src))  # the same state fields as the source
    return len(transitions)


def config_lines(rois: dict, frames: dict, is_lerobot: bool, config) -> list[str]:
    lines = []
    if not rois:
        return ["# no camera cropped"]
    cameras = config.cameras.to_dict() if config is not None and "cameras" in config else {}
    if is_lerobot:
        ours = {}  # dataset camera -> the experiment's observation key
        if config is not None:
            mapping = dict(config.demos.lerobot.observations)
            for camera in rois:
                feature = f"observation.images.{camera}"
                ours[camera] = next((k for k, v in mapping.items() if v == feature), camera)
        crops = {ours.get(c, c): r for c, r in rois.items()}
        lines.append("# the regions in the dataset's frames; for scripts/import_lerobot.py (experiment config):")
        lines.append(f"c.demos.lerobot.crops = {crops!r}")
        lines.append(f'#   or on the command line: --set "demos.lerobot.crops={crops!r}"')
        for camera, roi in crops.items():
            if camera in cameras:
                lines.append(f"# the live camera (its raw frames, as LeRobot records them): cameras.{camera}.crop")
                lines.append(f"c.cameras.{camera}.crop = {roi!r}")
        return lines
    for camera, roi in rois.items():
        height, width = frames[camera].shape[:2]
        lines.append(f"# camera {camera!r}: region {roi!r} (x, y, w, h) of the recorded {width}x{height} frames")
        raw = cameras.get(camera) or {}
        if raw.get("crop"):  # the recorded frames are that region of the raw frame, resized
            x0, y0, w0, h0 = raw["crop"]
            sy, sx = h0 / height, w0 / width
            composed = (round(x0 + roi[0] * sx), round(y0 + roi[1] * sy), round(roi[2] * sx), round(roi[3] * sy))
            lines.append(f"c.cameras.{camera}.crop = {composed!r}  # in the raw camera's pixels")
    return lines


if __name__ == "__main__":
    cli.run(main)
