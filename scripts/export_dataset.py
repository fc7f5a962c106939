"""Export an experiment's demos, or a run's episodes, as a LeRobot (v3.0) or RLDS dataset.

    python scripts/export_dataset.py --exp_name pick_cube_sim_vision --output /tmp/pick_demos
    python scripts/export_dataset.py --exp_name pick_cube_sim_vision --run first_run --output /tmp/run1
    python scripts/export_dataset.py --exp_name pick_cube_sim --format rlds --output ~/tensorflow_datasets

Sources: by default the demo files the learner would read (``demos.paths`` and demos/*.npz);
``--input FILE`` (repeatable) for other demo files; ``--run RUN`` (repeatable) for a run's
online buffer as of its last snapshot (the learner writes one every learner.checkpoint_period
steps and when it stops), interventions flagged per step.

``--format lerobot`` (default; extra [lerobot], serl_launcher.data.lerobot): a new folder whose
frames carry the observation (state; cameras as AV1 videos like LeRobot's own), action,
next.reward, next.done, next.truncated, next.success, complementary_info.is_intervention and, with
a learned gripper, complementary_info.discrete_penalty. LeRobot loads it with
``LeRobotDataset(repo_id, root=<folder>)``; publishing it on the hub is its tools' job
(``huggingface-cli upload --repo-type dataset <id> <folder>``).

``--format rlds`` (extra [rlds], serl_launcher.data.rlds): the TFDS dataset ``--name`` in
``<output>/<name>/1.0.0`` (``tfds.builder_from_directory`` reads it), every observation kept.
"""

from __future__ import annotations

import time

from absl import app, flags

from experiments import cli

_OUTPUT = flags.DEFINE_string("output", None, "LeRobot: the dataset folder to create (must not exist); RLDS: the data folder.", required=True)
_INPUT = flags.DEFINE_multi_string("input", [], "A demo file to export (repeatable; default: the experiment's demos).")
_RUN = flags.DEFINE_multi_string("run", [], "A run folder (relative: under experiments/<exp>/runs/) whose episodes to export.")
_TASK = flags.DEFINE_string("task", None, "The task's text in the dataset (default: the experiment's name).")
_FPS = flags.DEFINE_float("fps", None, "Frames per second (default: env.control_hz).")
_CODEC = flags.DEFINE_string("codec", "libsvtav1", "LeRobot video codec (its default libsvtav1; libx264 for H.264).")
_FORMAT = flags.DEFINE_enum("format", "lerobot", ["lerobot", "rlds"], "Dataset format.")
_NAME = flags.DEFINE_string("name", None, "RLDS dataset name (default: the experiment's name).")


def main(argv: list[str]) -> None:
    del argv
    from pathlib import Path

    from tqdm import tqdm

    from experiments.mappings import (
        demo_files,
        experiment_label,
        experiment_spaces,
        resolve_path,
        run_dir,
    )
    from serl_launcher.data import BufferFormatError, DemoFormatError, DemoReading
    from serl_launcher.data.episodes import gather_episodes
    from serl_launcher.data.lerobot import export_lerobot

    exp, config = cli.load()
    fps = _FPS.value or config.get("env", {}).get("control_hz")
    if not fps and _FORMAT.value == "lerobot":
        raise app.UsageError("this experiment's config has no env.control_hz: pass --fps")
    obs_space, act_space, state_layout = experiment_spaces(exp, config)
    demos = [resolve_path(cli.exp_name(), p) for p in _INPUT.value]
    if not demos and not _RUN.value:
        demos = demo_files(config)
    runs = [run_dir(cli.exp_name(), r) / "buffers" / "online" for r in _RUN.value]
    try:
        episodes, sources = gather_episodes(demos, runs, obs_space, act_space, DemoReading.from_config(config),
                                            state_layout)
    except (DemoFormatError, BufferFormatError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from None
    if not episodes:
        raise app.UsageError(f"nothing to export: no demo files for {cli.exp_name()!r} (record them with "
                             f"scripts/record_demos.py) and no --run")
    for line in sources:
        print(f"[export] {line}", flush=True)
    output = Path(_OUTPUT.value).expanduser()
    frames = sum(map(len, episodes))
    started = time.perf_counter()
    if _FORMAT.value == "rlds":
        from serl_launcher.data.rlds import export_rlds

        try:
            folder = export_rlds(output, episodes, _NAME.value or experiment_label(cli.exp_name()), source="; ".join(sources))
        except (FileExistsError, ValueError, ImportError, OSError) as error:
            raise app.UsageError(str(error)) from None
        seconds = time.perf_counter() - started
        print(f"[export] {len(episodes)} episodes, {frames} transitions -> RLDS {folder} in {seconds:.1f} s "
              f"({frames / seconds:.0f} transitions/s)")
        return
    cameras = sum(1 for space in obs_space.spaces.values() if len(space.shape) == 3)
    with tqdm(total=frames * cameras, desc="video frames encoded", unit="frame", disable=not cameras) as bar:
        try:
            summary = export_lerobot(output, episodes, fps=fps, task=_TASK.value or experiment_label(cli.exp_name()),
                                     robot_type=config.get("env_id") or experiment_label(cli.exp_name()), codec=_CODEC.value,
                                     progress=bar.update)
        except (FileExistsError, ValueError, ImportError, OSError) as error:
            raise app.UsageError(str(error)) from None
    seconds = time.perf_counter() - started
    print(f"[export] {summary['episodes']} episodes, {summary['frames']} frames, cameras "
          f"{summary['cameras'] or 'none'} -> {output} in {seconds:.1f} s ({summary['frames'] / seconds:.0f} "
          f"transitions/s)")

if __name__ == "__main__":
    cli.run(main)
