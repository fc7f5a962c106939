"""The main job: the whole pipeline on the default simulated task, as a user runs it.

1. record expert demonstrations (if the experiment has none yet),
2. start the learner and one actor as separate processes through the experiment's
   run_learner.sh / run_actor.sh, the scripted expert intervening when the policy stalls,
3. train for --minutes of wall-clock, then stop both cleanly (checkpoint and buffers saved),
4. evaluate the final checkpoint (deterministic, no interventions) with a video,
5. write the run's report (success rate, episode return and intervention rate against wall-clock
   and env steps, as PNG plots; report.md / report.json) into the run folder,
6. print the success rate and where everything is, the run folder last.

    python scripts/quickstart.py [--minutes 10] [--run_name NAME]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

_MINUTES = flags.DEFINE_float("minutes", 10.0, "Training wall-clock budget.")
_RUN_NAME = flags.DEFINE_string("run_name", None, "Run folder name under experiments/<exp>/runs (default: quickstart-<time>).")
_EXP_NAME = flags.DEFINE_string("exp_name", "pick_cube_sim", "Experiment.")
_EVAL_N = flags.DEFINE_integer("eval_n_trajs", 50, "Evaluation episodes.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes (for tests): a few hundred steps, small networks.")

REPO = Path(__file__).resolve().parent.parent


def last_records(path: Path, key: str) -> dict | None:
    """The newest record of metrics.jsonl that has `key` (None before there is one)."""
    from serl_launcher.utils.report import read_records  # tolerates a line being written right now

    if not path.is_file():
        return None
    return next((record for record in reversed(read_records(path)) if key in record), None)


def main(argv: list[str]) -> None:
    del argv
    from experiments.launch import (
        SMOKE_SETTINGS,
        prepare_classifier,
        role_args,
        script_env,
        start_role,
        stop,
    )
    from experiments.mappings import experiment_dir, load_for_entry_point, run_dir

    _, config = load_for_entry_point(_EXP_NAME.value)
    exp_dir = experiment_dir(_EXP_NAME.value)
    name = _RUN_NAME.value or f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = run_dir(_EXP_NAME.value, name)
    python = sys.executable
    env = script_env()

    # 0. A learned reward (vision experiments): labelled frames, then the classifier, into the run folder.
    folder.mkdir(parents=True, exist_ok=True)
    reward_settings = []
    if "classifier" in config:
        print("[quickstart] recording labelled frames and training the reward classifier", flush=True)
        smoke = _SMOKE.value
        checkpoint = prepare_classifier(
            _EXP_NAME.value, folder, env, settings=["classifier.steps=300"] if smoke else [],
            record_flags=["--successes_needed", "60", "--failures_needed", "150", "--hold_steps", "3"] if smoke else [])
        reward_settings = [f"classifier.checkpoint={str(checkpoint)!r}"]

    # 1. Demonstrations, recorded into the run folder (the learner also reads the experiment's demos/).
    demos = folder / "demos.pkl"
    if not demos.is_file():
        needed = "3" if _SMOKE.value else "20"
        print(f"[quickstart] recording {needed} expert demonstrations", flush=True)
        subprocess.run([python, str(REPO / "scripts/record_demos.py"), "--exp_name", _EXP_NAME.value,
                        "--successes_needed", needed, "--output", str(demos),
                        *[a for s in reward_settings for a in ("--set", s)]], check=True, env=env)

    # 2. Learner and actor, as separate processes, on free ports.
    settings = [*reward_settings, f"learner.max_seconds={_MINUTES.value * 60}", f"demos.paths=({str(demos)!r},)"]
    if _SMOKE.value:
        settings += SMOKE_SETTINGS
    extra = role_args(name, settings)
    learner = start_role(_EXP_NAME.value, "learner", extra, folder / "learner.log", env)
    actor = start_role(_EXP_NAME.value, "actor", ["--actor_id", "sim-0", *extra], folder / "actor.log", env)
    print(f"[quickstart] training for {_MINUTES.value:g} min; logs in {folder}", flush=True)
    try:
        while learner.poll() is None:
            time.sleep(5)
            train = last_records(folder / "metrics.jsonl", "replay/received") or {}
            episode = last_records(folder / "actor-sim-0" / "metrics.jsonl", "actor/success") or {}
            print(f"[quickstart] learner step {train.get('step', 0)}, transitions {train.get('replay/received', 0)}, "
                  f"last episode success {episode.get('actor/success', '-')}, "
                  f"intervention rate {episode.get('actor/intervention_rate', '-')}", flush=True)
            if actor.poll() is not None:
                raise RuntimeError(f"the actor exited early (code {actor.returncode}); see {folder / 'actor.log'}")
    finally:
        stop([learner, actor])
    if learner.returncode != 0:
        raise RuntimeError(f"the learner failed (code {learner.returncode}); see {folder / 'learner.log'}")

    # 3. Evaluation of the final checkpoint.
    result = subprocess.run(
        ["bash", str(exp_dir / "run_actor.sh"), "--checkpoint_path", name, "--eval_checkpoint_step", "-1",
         "--eval_n_trajs", str(_EVAL_N.value), "--eval_video", *extra[:-2]],
        env=env, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"evaluation failed:\n{result.stderr[-3000:]}")
    evals = sorted(folder.glob("eval_*.json"), key=lambda p: p.stat().st_mtime)
    stats = json.loads(evals[-1].read_text())
    print(f"success rate: {stats['success_rate']:.0%} over {_EVAL_N.value} evaluation episodes "
          f"(learner step {stats['step']}, mean episode time {stats['episode_time_s']:.2f} s)")

    # 4. The report (plots, report.md, report.json); the run folder is the last line printed.
    from serl_launcher.utils.report import report_lines, write_report

    print("\n".join(report_lines(write_report(folder))), flush=True)


if __name__ == "__main__":
    app.run(main)
