"""Record successful demonstrations for an experiment.

    cd experiments/pick_cube_sim
    python ../../scripts/record_demos.py --exp_name pick_cube_sim --successes_needed 20

In simulation the scripted expert drives; the file goes to experiments/<exp>/demos/ (or --output)
and its name and transition count are printed. The learner reads every demos/*.npz (a numpy
archive of plain arrays: loading it cannot run code; serl_launcher.data.demos has the format).
"""

from __future__ import annotations

import time

from absl import app, flags

from experiments import cli

_SUCCESSES = flags.DEFINE_integer("successes_needed", 20, "Successful episodes to record.")
_OUTPUT = flags.DEFINE_string("output", None, "Output file, .npz (default: experiments/<exp>/demos/<exp>_<N>_demos_<time>.npz).")
_SEED = flags.DEFINE_integer("seed", 1000, "Seed of the first episode.")


def main(argv: list[str]) -> None:
    del argv
    from tqdm import tqdm

    from experiments.mappings import (
        env_spaces,
        experiment_dir,
        experiment_label,
        resolve_path,
    )
    from serl_launcher.data import save_demos
    from serl_launcher.utils.rollouts import demonstrator_config, make_expert, record_demos
    from serl_launcher.wrappers.episode_control import EpisodeControl, with_episode_control
    from serl_launcher.wrappers.grasp_penalty import with_grasp_penalty

    exp, config = cli.load()
    if _SUCCESSES.value < 1:
        raise app.UsageError("--successes_needed must be at least 1")
    if _OUTPUT.value and not _OUTPUT.value.endswith(".npz"):
        raise app.UsageError(f"--output {_OUTPUT.value}: demo files are numpy archives ending in .npz")
    config = demonstrator_config(config)  # the demonstrator's noise, not the helper's
    env = with_grasp_penalty(exp.make_env(config), config)  # demo files carry the penalty the learner stores
    device = make_expert(exp, env, config)
    if device is None:
        raise app.UsageError(f"experiment {cli.exp_name()!r} has no device to record demonstrations with")
    env = with_episode_control(env, device, config)  # a person's success / failure / re-record / ready buttons
    if isinstance(env, EpisodeControl):
        keys = dict(config.actor.intervention.episode.get(config.actor.intervention.device) or {})
        keys = keys or dict(config.actor.intervention.episode.keyboard)
        print("[demos] episode buttons: " + ", ".join(f"{event}: {key}" for event, key in keys.items()), flush=True)
    bar = tqdm(total=_SUCCESSES.value, desc="successful demos")
    transitions = record_demos(env, device, _SUCCESSES.value, seed=_SEED.value,
                               progress=lambda ok, _: bar.update(ok - bar.n))
    bar.close()
    name = f"{experiment_label(cli.exp_name())}_{_SUCCESSES.value}_demos_{time.strftime('%Y%m%d-%H%M%S')}.npz"
    path = resolve_path(cli.exp_name(), _OUTPUT.value) if _OUTPUT.value else experiment_dir(cli.exp_name()) / "demos" / name
    save_demos(path, transitions, env_spaces(env).state_layout)
    print(f"saved {len(transitions)} transitions from {_SUCCESSES.value} successful episodes to {path}")


if __name__ == "__main__":
    cli.run(main)
