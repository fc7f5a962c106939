"""Record camera frames labelled success / failure, to train an experiment's reward classifier.

    cd experiments/pick_cube_sim_vision
    python ../../scripts/record_success_fail.py --exp_name pick_cube_sim_vision \
        --successes_needed 300 --failures_needed 1200

Every frame the env produces (after reset and after each step) is kept with its labels:
``success`` (binary) and ``stage`` (multi-class; for pick-cube 0 = cube not held, 1 = held,
2 = lifted, i.e. success) and the episode it came from. Where the labels come from:

- ``--labels env`` (simulation): from the simulator's ``info`` (``success``, ``grasped``). A
  frame counts as a success only from the ``--success_confirm``-th consecutive success step on,
  as a careful person would press the key a moment after the cube is up: a policy trained on the
  classifier's reward learns to stop exactly where the classifier fires, and a classifier whose
  line sits on the simulator's own line fired on half-lifted cubes (7-10 cm of 10; benchmarks/
  README.md, "End to end, from pixels").
  The scripted expert drives. So that both classes and the hard cases near the boundary appear,
  half of the episodes are expert-only (a success, then ``--hold_steps`` frames holding the cube
  up) and in the other half random actions take over at a random step (a dropped cube, a half
  lift, a miss).
- ``--labels keyboard`` (a person at a real arm or the sim): the experiment's intervention
  device drives and a frame is a success while Enter is held (pynput; needs a desktop
  session; stages are not labelled: 2 for success frames, 0 for the others).

Recording stops when both counts are reached; the file (``.npz``, see
:mod:`serl_launcher.classifier`) goes to ``experiments/<exp>/<classifier.data_dir>/`` or
``--output``. Ctrl-C saves what was recorded so far; any other error (a dropped robot server, a
camera) saves it too, as ``<name>.partial.npz``, and then stops with the error.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from experiments import cli

_SUCCESSES = flags.DEFINE_integer("successes_needed", 300, "Success frames to record.")
_FAILURES = flags.DEFINE_integer("failures_needed", 1200, "Failure frames to record.")
_LABELS = flags.DEFINE_enum("labels", "env", ["env", "keyboard"], "Where labels come from.")
_HOLD_STEPS = flags.DEFINE_integer("hold_steps", 5, "Frames kept after a success (env labels).")
_CONFIRM = flags.DEFINE_integer(
    "success_confirm", 2, "Env labels: a frame is a success once the env has reported success this "
    "many steps in a row (earlier ones are failures), so the classifier fires clearly past the line.")
_MAX_EPISODES = flags.DEFINE_integer("max_episodes", 2000, "Give up after this many episodes.")
_OUTPUT = flags.DEFINE_string("output", None, "Output .npz (default: experiments/<exp>/<data_dir>/<exp>_<time>.npz).")
_SEED = flags.DEFINE_integer("seed", 5000, "Seed of the first episode.")


class KeyLabel:
    """Success label from a person: true while Enter is held (pynput). Enter, not space: space is
    the keyboard device's take-over key, and a person may drive with the keyboard."""

    def __init__(self):
        from serl_launcher.human.keyboard import import_pynput_keyboard

        keyboard = import_pynput_keyboard()
        if keyboard.Listener.__module__.endswith("._base"):
            raise app.UsageError(
                "--labels keyboard needs key events, and without a display pynput has only its dummy "
                "backend: run it in a desktop session (DISPLAY set), or set PYNPUT_BACKEND=uinput as root")
        self._keyboard = keyboard
        self._held = threading.Event()
        self._listener = keyboard.Listener(on_press=self.on_press, on_release=self.on_release)
        self._listener.start()

    def on_press(self, key) -> None:
        if key == self._keyboard.Key.enter:
            self._held.set()

    def on_release(self, key) -> None:
        if key == self._keyboard.Key.enter:
            self._held.clear()

    @property
    def success(self) -> bool:
        return self._held.is_set()

    def close(self) -> None:
        try:
            self._listener.stop()
        except Exception as error:  # never let a listener problem cost the recorded frames
            print(f"warning: stopping the key listener failed: {error}", flush=True)


def _stage(info: dict) -> int:
    """0: cube not held, 1: held (or lifted but not yet confirmed); 2 is set for success frames."""
    return 1 if info.get("grasped") or info.get("success") else 0


def main(argv: list[str]) -> None:
    del argv
    from tqdm import tqdm

    from experiments.mappings import (
        experiment_dir,
        experiment_label,
        resolve_path,
    )
    from serl_launcher.classifier import save_frames
    from serl_launcher.utils.rollouts import make_expert

    exp, config = cli.load()
    if _SUCCESSES.value < 1 or _FAILURES.value < 1:
        raise app.UsageError("--successes_needed and --failures_needed must be at least 1")
    if "classifier" not in config:
        raise app.UsageError(f"experiment {cli.exp_name()!r} has no reward classifier (no 'classifier' config)")
    env = exp.make_env(config, classifier=False)  # labels from the env or a person, not a classifier
    cameras = [k for k, s in env.observation_space.spaces.items() if len(s.shape) == 3]
    if not cameras:
        raise app.UsageError(f"experiment {cli.exp_name()!r} has no camera observations to classify")
    driver = make_expert(exp, env, config)
    if driver is None:
        raise app.UsageError(f"experiment {cli.exp_name()!r} has no device to drive the robot with")
    labeler = KeyLabel() if _LABELS.value == "keyboard" else None
    rng = np.random.default_rng(_SEED.value)
    env.action_space.seed(_SEED.value)  # the random-action episodes are reproducible too

    frames: dict[str, list] = {"state": [], "success": [], "stage": [], "episode": [], **{c: [] for c in cameras}}

    def keep(obs: dict, info: dict, episode: int, streak: int = 0) -> None:
        success = labeler.success if labeler is not None else streak >= _CONFIRM.value
        record = {c: obs[c] for c in cameras} | {  # built first, appended together (Ctrl-C safe)
            "state": obs["state"], "success": success, "episode": episode,
            "stage": 2 if success else (0 if labeler is not None else _stage(info))}
        for key, value in record.items():
            frames[key].append(value)

    data_dir = experiment_dir(cli.exp_name()) / config.classifier.data_dir
    path = (resolve_path(cli.exp_name(), _OUTPUT.value) if _OUTPUT.value
            else data_dir / f"{experiment_label(cli.exp_name())}_{time.strftime('%Y%m%d-%H%M%S')}.npz")

    def save(episodes: int, partial: bool = False) -> Path:
        target = path.with_name(path.stem + ".partial.npz") if partial else path
        return save_frames(target, {c: np.stack(frames[c]) for c in cameras}, np.stack(frames["state"]),
                           np.array(frames["success"]), np.array(frames["stage"]), np.array(frames["episode"]),
                           meta={"exp_name": cli.exp_name(), "labels": _LABELS.value, "episodes": episodes})

    counts = lambda: (int(np.sum(frames["success"])), len(frames["success"]) - int(np.sum(frames["success"])))  # noqa: E731
    bar = tqdm(desc="frames (success/failure)", unit="episode")
    episode = 0
    try:
        while min(counts()[0] - _SUCCESSES.value, counts()[1] - _FAILURES.value) < 0:
            if episode >= _MAX_EPISODES.value:
                raise RuntimeError(f"only {counts()} success/failure frames after {episode} episodes")
            obs, info = env.reset(seed=_SEED.value + episode)
            driver.reset()
            keep(obs, {}, episode)
            random_from = rng.integers(0, 40) if labeler is None and rng.random() < 0.5 else None
            streak, after_success, done, t = 0, 0, False, 0
            while not done:
                if random_from is not None and t >= random_from:
                    action = env.action_space.sample()
                else:
                    action = np.asarray(driver.get_action(obs).action, np.float32)
                obs, _, terminated, truncated, info = env.step(action)
                streak = streak + 1 if info.get("success") else 0
                keep(obs, info, episode, streak)
                t += 1
                after_success += bool(info.get("success"))
                done = terminated or truncated or (labeler is None and after_success > _HOLD_STEPS.value)
            episode += 1
            bar.update(1)
            bar.set_postfix_str("{}/{}".format(*counts()))
    except KeyboardInterrupt:
        print("interrupted: saving what was recorded", flush=True)
    except Exception:
        if frames["success"]:  # a person's labels are worth keeping whatever broke
            partial = save(episode, partial=True)
            print(f"error: the {len(frames['success'])} frames recorded so far are in {partial}", flush=True)
        raise
    finally:
        bar.close()
        for resource in (labeler, driver, env):
            if resource is not None:
                resource.close()
    if not frames["success"]:
        raise app.UsageError("nothing was recorded")
    path = save(episode)
    ok, bad = counts()
    print(f"saved {ok} success and {bad} failure frames from {episode} episodes to {path}")


if __name__ == "__main__":
    cli.run(main)
