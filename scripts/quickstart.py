"""The main job: the whole pipeline on the default simulated task, as a user runs it.

1. record expert demonstrations (if the experiment has none yet),
2. start the learner, one actor and the evaluator as separate processes through the
   experiment's run_learner.sh / run_actor.sh (the scripted expert intervening when the policy
   stalls; the evaluator scoring the newest policy every eval.every_s seconds over
   --eval_n_trajs deterministic episodes without interventions),
3. train until an evaluation reaches --until_success (or --minutes of wall-clock, the cap),
   then stop all three cleanly (checkpoint and buffers saved),
4. record a short video of the final policy (--video_episodes),
5. write the run's report (success rate, episode return, intervention rate and evaluation cycle
   time against wall-clock and env steps, as PNG plots; report.md / report.json),
6. print when the target was reached (wall-clock and env steps) and where everything is, the
   run folder last.

    python scripts/quickstart.py [--until_success 0.9] [--minutes 10] [--run_name NAME]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from absl import flags

from experiments import cli

_UNTIL = flags.DEFINE_float("until_success", 0.9, "Stop when an evaluation reaches this success rate (negative: train --minutes).")
_MINUTES = flags.DEFINE_float("minutes", 10.0, "Training wall-clock cap.")
_RUN_NAME = flags.DEFINE_string("run_name", None, "Run folder name under experiments/<exp>/runs (default: quickstart-<time>).")
_EVAL_N = flags.DEFINE_integer("eval_n_trajs", 50, "Episodes per evaluation.")
_VIDEO_N = flags.DEFINE_integer("video_episodes", 3, "Episodes of the final policy in the video (0: none).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes (for tests): a few hundred steps, small networks.")

flags.FLAGS.set_default("exp_name", "pick_cube_sim")  # the overrides (--set, --config.<key>) reach every step and role
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
    from experiments.mappings import experiment_dir, run_dir
    from serl_launcher.utils.report import evaluated_at, read_records

    started = time.time()
    _, config = cli.load()  # bad overrides fail here, first
    exp_dir = experiment_dir(cli.exp_name())
    name = _RUN_NAME.value or f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = run_dir(cli.exp_name(), name)
    python = sys.executable
    env = script_env()

    # 0. A learned reward (vision experiments): labelled frames, then the classifier, into the run folder.
    folder.mkdir(parents=True, exist_ok=True)
    reward_settings = []
    if "classifier" in config:
        print("[quickstart] recording labelled frames and training the reward classifier", flush=True)
        smoke = _SMOKE.value
        checkpoint = prepare_classifier(
            cli.exp_name(), folder, env, settings=[*cli.overrides(), *(["classifier.steps=100"] if smoke else [])],
            record_flags=["--successes_needed", "60", "--failures_needed", "150", "--hold_steps", "3"] if smoke else [])
        reward_settings = [f"classifier.checkpoint={str(checkpoint)!r}"]
    reward_settings = [*cli.overrides(), *reward_settings]

    # 1. Demonstrations, recorded into the run folder (the learner also reads the experiment's demos/).
    demos = folder / "demos.npz"
    if not demos.is_file():
        needed = "3" if _SMOKE.value else "20"
        print(f"[quickstart] recording {needed} expert demonstrations", flush=True)
        subprocess.run([python, str(REPO / "scripts/record_demos.py"), "--exp_name", cli.exp_name(),
                        "--successes_needed", needed, "--output", str(demos),
                        *[a for s in reward_settings for a in ("--set", s)]], check=True, env=env)

    # 2. Learner, actor and evaluator, as separate processes, on free ports.
    settings = [*reward_settings, f"learner.max_seconds={_MINUTES.value * 60}", f"demos.paths=({str(demos)!r},)",
                f"eval.episodes={_EVAL_N.value}", f"eval.until_success={_UNTIL.value}"]
    if _SMOKE.value:
        settings += [*SMOKE_SETTINGS, "eval.every_s=5.0"]
    extra = role_args(name, settings)
    learner = start_role(cli.exp_name(), "learner", extra, folder / "learner.log", env)
    actor = start_role(cli.exp_name(), "actor", ["--actor_id", "sim-0", *extra], folder / "actor.log", env)
    evaluator = start_role(cli.exp_name(), "actor", ["--evaluator", *extra], folder / "evaluator.log", env)
    goal = f"until an evaluation reaches {_UNTIL.value:.0%} success, at most " if _UNTIL.value >= 0 else ""
    print(f"[quickstart] training {goal}{_MINUTES.value:g} min; logs in {folder}", flush=True)
    # The learner's budget counts from its first update; past it plus this grace (start-up, the
    # final save) something is stuck: stop everything rather than wait forever.
    deadline = time.monotonic() + _MINUTES.value * 60 + 180
    try:
        while learner.poll() is None:
            if time.monotonic() > deadline:
                print(f"[quickstart] the learner is still running 3 min past its {_MINUTES.value:g} min budget; "
                      f"stopping all roles (see {folder / 'learner.log'})", flush=True)
                break
            time.sleep(5)
            train = last_records(folder / "metrics.jsonl", "replay/received") or {}
            episode = last_records(folder / "actor-sim-0" / "metrics.jsonl", "actor/success") or {}
            evaluation = last_records(folder / "metrics.jsonl", "eval/success_rate")
            evaluated = (f"{evaluation['eval/success_rate']:.0%} at learner step {evaluation['step']}"
                         if evaluation else "-")
            print(f"[quickstart] {time.time() - started:4.0f} s: learner step {train.get('step', 0)}, "
                  f"transitions {train.get('replay/received', 0)}, last episode success "
                  f"{episode.get('actor/success', '-')}, last evaluation {evaluated}", flush=True)
            for role, process in (("actor", actor), ("evaluator", evaluator)):
                if process.poll() is not None and process.returncode != 0:
                    raise RuntimeError(f"the {role} failed (code {process.returncode}); see {folder / (role + '.log')}")
    finally:
        stop([learner, actor, evaluator])
    if learner.returncode != 0:
        raise RuntimeError(f"the learner failed (code {learner.returncode}); see {folder / 'learner.log'}")

    # 3. A short video of the final policy.
    if _VIDEO_N.value > 0:
        result = subprocess.run(
            ["bash", str(exp_dir / "run_actor.sh"), "--checkpoint_path", name, "--eval_checkpoint_step", "-1",
             "--eval_n_trajs", str(_VIDEO_N.value), "--eval_video", *extra[:-2]],
            env=env, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"the video of the final policy failed:\n{result.stderr[-3000:]}")

    # 4. The report (plots, report.md, report.json); the run folder is the last line printed.
    from serl_launcher.evaluator import target_reached
    from serl_launcher.utils.report import report_lines, write_report

    lines = report_lines(write_report(folder))
    evaluations = [r for r in read_records(folder / "metrics.jsonl") if "eval/success_rate" in r]
    reached = target_reached(folder, since=started)
    record = next((r for r in evaluations if reached and r["step"] == reached["learner_step"]), None)
    if record is not None:
        when = evaluated_at(record) - started
        lines.insert(-1, f"target {reached['target']:.0%} reached: {reached['success_rate']:.0%} success over "
                     f"{reached['episodes']} evaluation episodes (95 % CI {record['eval/success_ci_low']:.0%}-"
                     f"{record['eval/success_ci_high']:.0%}) after {when:.0f} s of wall-clock and "
                     f"{reached['env_steps']} env steps (learner step {reached['learner_step']}); "
                     f"the whole quickstart took {time.time() - started:.0f} s")
    else:
        best = max(evaluations, key=lambda r: r["eval/success_rate"], default=None)
        lines.insert(-1, ("target not reached" if _UNTIL.value >= 0 else "trained the whole budget")
                     + f" in {_MINUTES.value:g} min" + (
                         f"; best evaluation {best['eval/success_rate']:.0%} at learner step {best['step']}"
                         if best else "; no evaluation finished"))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    cli.run(main)
