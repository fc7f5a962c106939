"""Import a LeRobot dataset (format v3.0, a local folder) as demonstrations for an experiment.

    python scripts/import_lerobot.py --exp_name pick_cube_sim_vision --dataset ~/data/my_demos
    python scripts/import_lerobot.py --exp_name so101_real --dataset ~/.cache/huggingface/lerobot/me/pick \\
        --episodes 0:20

The dataset's features are mapped onto the experiment's observations and actions by
``demos.lerobot`` in its config (experiments/base.py lists the entries; override with --set);
cameras are cropped (``demos.lerobot.crops``, see scripts/crop_dataset.py) and resized to the
experiment's image size. Every transition is checked against the experiment's spaces, then all
of them are written as one demo file (default experiments/<exp>/demos/<dataset>_lerobot.npz),
which the learner reads like any recorded demos. Nothing is downloaded: fetch a hub dataset
first with ``huggingface-cli download --repo-type dataset <id> --local-dir <folder>``.
"""

from __future__ import annotations

import time

from absl import app, flags

from experiments import cli

_DATASET = flags.DEFINE_string("dataset", None, "The LeRobot dataset folder (with meta/info.json).", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Output demo file, .npz (default: experiments/<exp>/demos/<dataset>_lerobot.npz).")
_EPISODES = flags.DEFINE_string("episodes", None, "Episodes to import: 'a:b' (b excluded) or 'i,j,k' (default: all).")


MAX_EPISODES = 1_000_000


def parse_episodes(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        if ":" in text:
            start, stop = (int(v) for v in text.split(":"))
            if start < 0 or stop <= start or stop - start > MAX_EPISODES or stop > 2**62:
                raise ValueError
            return list(range(start, stop))
        episodes = sorted({int(v) for v in text.split(",")})
        if not episodes or episodes[0] < 0 or episodes[-1] > 2**62:
            raise ValueError
        return episodes
    except ValueError:
        raise app.UsageError(f"--episodes {text!r}: expected a:b (0 <= a < b, at most {MAX_EPISODES:,} "
                             f"episodes) or i,j,k") from None


def main(argv: list[str]) -> None:
    del argv
    from pathlib import Path

    from tqdm import tqdm

    from experiments.mappings import (
        experiment_dir,
        experiment_spaces,
        resolve_path,
    )
    from serl_launcher.data import DemoFormatError, save_demos
    from serl_launcher.data.lerobot import (
        LeRobotFormatError,
        LeRobotMapping,
        check_fps,
        import_lerobot,
    )

    exp, config = cli.load()
    if _OUTPUT.value and not _OUTPUT.value.endswith(".npz"):
        raise app.UsageError(f"--output {_OUTPUT.value}: demo files are numpy archives ending in .npz")
    dataset = Path(_DATASET.value).expanduser()
    try:
        mapping = LeRobotMapping.from_config(config.demos.lerobot)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    obs_space, act_space, state_layout = experiment_spaces(exp, config)
    started = time.perf_counter()
    bar = tqdm(desc="video frames decoded", unit="frame")
    try:
        episodes, report = import_lerobot(dataset, obs_space, act_space, mapping,
                                          grasp_penalty=bool(config.agent.learned_gripper),
                                          episodes=parse_episodes(_EPISODES.value), progress=bar.update)
    except (LeRobotFormatError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from None
    finally:
        bar.close()
    warning = check_fps({"fps": report["fps"]}, config.get("env", {}).get("control_hz"))
    if warning:
        print(f"[import] WARNING: {warning}", flush=True)
    transitions = [t for episode in episodes for t in episode]
    if not transitions:
        raise app.UsageError(f"{dataset} holds no episodes to import")
    name = f"{dataset.name}_lerobot.npz"
    path = resolve_path(cli.exp_name(), _OUTPUT.value) if _OUTPUT.value else experiment_dir(cli.exp_name()) / "demos" / name
    if path.exists():
        raise app.UsageError(f"{path} exists; pass --output for another file (or delete it first)")
    try:
        save_demos(path, transitions, state_layout)
    except (DemoFormatError, OSError) as error:
        raise app.UsageError(f"cannot write {path}: {error}") from None
    seconds = time.perf_counter() - started
    print(f"[import] {report['episodes']} episodes, {len(transitions)} transitions from {dataset} "
          f"(LeRobot {report['version']}, {report['fps']} fps) in {seconds:.1f} s "
          f"({len(transitions) / seconds:.0f} transitions/s)")
    print("[import] observations: " + ", ".join(f"{k} <- {v}" for k, v in report["observations"].items())
          + f"; actions <- {report['action']}; rewards <- {report['reward']}")
    print(f"saved {len(transitions)} transitions to {path}")


if __name__ == "__main__":
    cli.run(main)
