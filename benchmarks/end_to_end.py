"""The headline: from nothing to a trained policy, learner and actor as separate processes.

    python benchmarks/end_to_end.py [--exp_name pick_cube_sim] [--seeds 0,1,2] [--minutes 10]

Per seed, exactly as a user runs it: record expert demos, start run_learner.sh, run_actor.sh (the
scripted expert intervening when the policy stalls) and the evaluator (run_actor.sh --evaluator:
every --eval_every_s seconds the newest published policy, deterministic, no interventions,
--eval_episodes episodes), all as separate processes; with --stop_at_target the run stops at the
first evaluation >= --target (eval.until_success). Reports success rate against wall-clock (from
before the demos) and env steps, the time to reach the target, and when the demos were done,
the first update and the first episode happened. With --bc_warm_start, scripts/train_bc.py
clones the demos first (its time counts; its own evaluation is reported) and SAC starts from
the BC policy (agent.init_actor_from). Writes benchmarks/results/end_to_end_<exp>.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from absl import flags

from experiments import cli

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (one full run each, sequentially).")
_MINUTES = flags.DEFINE_float("minutes", 10.0, "Training budget per seed.")
_EVAL_EVERY = flags.DEFINE_float("eval_every_s", 60.0, "Seconds between evaluations.")
_EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 50, "Episodes per evaluation.")
_TARGET = flags.DEFINE_float("target", 0.9, "Success rate whose first time is reported.")
_STOP = flags.DEFINE_bool("stop_at_target", True, "Stop each run at its first evaluation >= --target "
                          "(eval.until_success); --nostop_at_target trains the whole budget (stability).")
_BC = flags.DEFINE_bool("bc_warm_start", False, "Clone the demos with train_bc.py, then start SAC from it.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Results file.")

flags.FLAGS.set_default("exp_name", "pick_cube_sim")  # the overrides (--set, --config.<key>) reach every step and role
REPO = Path(__file__).resolve().parent.parent


def eval_history(folder: Path, start_unix: float) -> list[dict]:
    """The evaluator's eval/ records of the run, wall-clock counted from `start_unix` to when the
    evaluated policy was received."""
    from serl_launcher.utils.report import evaluated_at, read_records

    path = folder / "metrics.jsonl"
    out = []
    for r in read_records(path) if path.is_file() else []:
        if "eval/success_rate" in r:
            out.append({**{k.removeprefix("eval/"): v for k, v in r.items() if k.startswith("eval/")},
                        "wall_s": evaluated_at(r) - start_unix})
    return out


def first_time(path: Path, prefix: str) -> float | None:
    """Unix time of the first record of metrics.jsonl at `path` with a key starting with `prefix`."""
    from serl_launcher.utils.report import read_records

    for r in read_records(path) if path.is_file() else []:
        if any(k.startswith(prefix) for k in r):
            return r["time"]
    return None


def run_seed(seed: int) -> dict:
    sys.path.insert(0, str(REPO))
    from experiments.launch import prepare_classifier, role_args, script_env, start_role, stop
    from experiments.mappings import load_experiment, run_dir

    exp = load_experiment(cli.exp_name())
    config = exp.get_config()
    name = f"e2e-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = run_dir(cli.exp_name(), name)
    folder.mkdir(parents=True)
    env = script_env()
    start, start_unix = time.monotonic(), time.time()
    marks = {}
    settings = []
    if "classifier" in config:  # the reward comes from a classifier: frames, then training, first
        checkpoint = prepare_classifier(cli.exp_name(), folder, env, seed=seed, settings=cli.overrides())
        settings.append(f"classifier.checkpoint={str(checkpoint)!r}")
        marks["classifier_s"] = time.monotonic() - start
        print(f"seed {seed}: classifier ready after {marks['classifier_s']:.0f} s "
              f"({json.loads((checkpoint / 'classifier.json').read_text())['report']['heldout']})", flush=True)
    demos = folder / "demos.npz"
    subprocess.run([sys.executable, str(REPO / "scripts/record_demos.py"), "--exp_name", cli.exp_name(),
                    "--successes_needed", str(config.demos.successes_needed), "--output", str(demos),
                    "--seed", str(1000 + 100 * seed), *[a for x in [*settings, *cli.overrides()] for a in ("--set", x)]],
                   check=True, env=env, capture_output=True)
    marks["demos_s"] = time.monotonic() - start
    bc = None
    if _BC.value:
        out = subprocess.run([sys.executable, str(REPO / "scripts/train_bc.py"), "--exp_name", cli.exp_name(),
                              "--checkpoint_path", str(folder / "bc"), "--eval_n_trajs", str(_EVAL_EPISODES.value),
                              *[a for x in [*settings, f"seed={seed}", f"demos.paths=({str(demos)!r},)", *cli.overrides()]
                                for a in ("--set", x)]],
                             check=True, env=env, capture_output=True, text=True)
        marks["bc_s"] = time.monotonic() - start
        bc = next(json.loads(line) for line in (folder / "bc" / "metrics.jsonl").read_text().splitlines()
                  if "eval/success_rate" in line)["eval/success_rate"]
        print(f"seed {seed}: BC done after {marks['bc_s']:.0f} s, its success {bc:.0%}; "
              f"{out.stdout.strip().splitlines()[-1]}", flush=True)
        settings.append(f"agent.init_actor_from={str(folder / 'bc' / 'policy')!r}")
    target = f"eval.until_success={_TARGET.value}" if _STOP.value else "eval.until_success=-1.0"
    args = role_args(name, [*settings, f"seed={seed}", f"learner.max_seconds={_MINUTES.value * 60}",
                            f"demos.paths=({str(demos)!r},)", f"eval.every_s={_EVAL_EVERY.value}",
                            f"eval.episodes={_EVAL_EPISODES.value}", target, *cli.overrides()])
    roles = [start_role(cli.exp_name(), "learner", args, folder / "learner.log", env),
             start_role(cli.exp_name(), "actor", ["--actor_id", "sim-0", *args], folder / "actor.log", env),
             start_role(cli.exp_name(), "actor", ["--evaluator", *args], folder / "evaluator.log", env)]
    seen = 0
    try:
        while roles[0].poll() is None:
            time.sleep(2)
            history = eval_history(folder, start_unix)
            for record in history[seen:]:
                print(f"seed {seed}: {record['wall_s']:6.0f} s  step {record['learner_step']:6d}  env steps "
                      f"{record['env_steps']:6d}  success {record['success_rate']:.0%}", flush=True)
            seen = len(history)
    finally:
        stop(roles)
    marks["end_s"] = time.monotonic() - start
    for key, path, prefix in (("first_update_s", folder / "metrics.jsonl", "train/"),
                              ("first_episode_s", folder / "actor-sim-0" / "metrics.jsonl", "actor/")):
        t = first_time(path, prefix)
        marks[key] = None if t is None else t - start_unix
    history = eval_history(folder, start_unix)
    reached = next((h for h in history if h["success_rate"] >= _TARGET.value), None)
    return {"seed": seed, "run": str(folder), "history": history, "marks": marks, "bc_success_rate": bc,
            "time_to_target_s": reached["wall_s"] if reached else None,
            "env_steps_to_target": reached["env_steps"] if reached else None,
            "final_success_rate": history[-1]["success_rate"] if history else 0.0}


def main(argv: list[str]) -> None:
    del argv
    results = [run_seed(int(s)) for s in _SEEDS.value]
    print(f"\n{cli.exp_name()}: time to {_TARGET.value:.0%} success over {_EVAL_EPISODES.value} episodes "
          f"(budget {_MINUTES.value:g} min per seed)")
    print(f"{'seed':>4} {'time to target':>15} {'env steps':>10} {'final success':>14} {'demos done':>11} "
          f"{'1st update':>11} {'1st episode':>12}")
    fmt = lambda v: "-" if v is None else f"{v:.0f} s"  # noqa: E731
    for r in results:
        t = f"{r['time_to_target_s']:.0f} s" if r["time_to_target_s"] is not None else "not reached"
        m = r["marks"]
        print(f"{r['seed']:>4} {t:>15} {str(r['env_steps_to_target'] or '-'):>10} {r['final_success_rate']:>14.0%} "
              f"{fmt(m.get('demos_s')):>11} {fmt(m.get('first_update_s')):>11} {fmt(m.get('first_episode_s')):>12}")
    from experiments.mappings import experiment_label

    # A file or module path names the experiment by its label (no folders inside results/).
    out = Path(_JSON_OUT.value or REPO / "benchmarks" / "results" / f"end_to_end_{experiment_label(cli.exp_name())}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"exp_name": cli.exp_name(), "minutes": _MINUTES.value, "target": _TARGET.value,
                               "eval_episodes": _EVAL_EPISODES.value, "results": results}, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    cli.run(main)
