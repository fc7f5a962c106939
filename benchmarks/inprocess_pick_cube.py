"""End to end in one process: an experiment's own config (pick_cube_sim by default: state-based
pick-cube from 20 expert demos, the scripted person intervening), success vs wall-clock.

    python benchmarks/inprocess_pick_cube.py [--exp_name pick_cube_sim] [--seeds 0,1,2]
        [--max_seconds 600] [--eval_every_s 10] [--eval_episodes 50] [--pin_core 0]
        [--set key=value ...] [--json_out PATH]

For each seed (one after the other) runs `serl_launcher.inprocess.run_inprocess` on the
experiment's `get_config()` (the recipe the learner and actor scripts run; env, actor and learner
in lockstep in one process; demo recording included) under a wall-clock budget of
--max_seconds, with a deterministic evaluation over --eval_episodes episodes every
--eval_every_s seconds of training (and once at the end).

Evaluation is measurement, not training, so time is reported two ways: `wall_s` (everything
since the run started: set-up, demo recording, compilation, training and all evaluations so far)
and `train_s` (`wall_s` less the evaluations so far, as the loop measures it). The table's
checkpoints, and the times to first reach 50 % / 90 % success, use `train_s`; the budget
(--max_seconds) bounds `wall_s`.

The table shows, per seed and as the median across seeds, the success rate of the latest
evaluation at or before each checkpoint ('-': no evaluation yet, or the run had ended), then the
first evaluation reaching 50 % and 90 % (train seconds / env steps; '-' when not reached; the
median counts an unreached seed as infinitely late). Results go to
benchmarks/results/inprocess_pick_cube.json (or --json_out).

Discipline (the machine is shared): --pin_core pins the process to one core (default 0; -1: no
pinning) and, with --single_thread (default), XLA runs one intra-op thread, as in the learner
benchmark. Expect noise of the order of 10-20 % between repeats; judge claims over seeds.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

from absl import flags

from experiments import cli

flags.FLAGS.set_default("exp_name", "pick_cube_sim")

_SEEDS = flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds, run one after the other.")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 600.0, "Wall-clock budget per seed (all included).")
_MAX_ENV_STEPS = flags.DEFINE_integer("max_env_steps", 1_000_000, "Env-step budget per seed.")
_EVAL_EVERY = flags.DEFINE_float("eval_every_s", 10.0, "Training seconds between evaluations.")
_EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 50, "Deterministic episodes per evaluation.")
_CHECKPOINTS = flags.DEFINE_string(
    "checkpoints", "", "Train-seconds columns of the table (comma-separated); default: a grid "
    "of round numbers up to max_seconds.")
_PIN_CORE = flags.DEFINE_integer("pin_core", 0, "CPU core to pin to (-1: no pinning).")
_SINGLE_THREAD = flags.DEFINE_bool("single_thread", True, "One XLA intra-op thread.")
_PROGRESS = flags.DEFINE_bool("progress", False, "Show the tqdm progress bar.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Where to write the results JSON.")

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "inprocess_pick_cube.json"
LEVELS = (0.5, 0.9)


def _first_reach(history: list[dict], level: float) -> dict | None:
    for record in history:
        if record["success_rate"] >= level - 1e-9:
            return {"train_s": record["train_s"], "wall_s": record["wall_s"], "env_steps": record["env_steps"]}
    return None


def _at(history: list[dict], seconds: float) -> float | None:
    """Success of the latest evaluation with train_s <= seconds (None: none yet, or the run
    ended before `seconds`)."""
    if seconds > history[-1]["train_s"] + 1e-6:
        return None
    done = [r["success_rate"] for r in history if r["train_s"] <= seconds]
    return done[-1] if done else None


def _checkpoints(max_seconds: float) -> list[float]:
    if _CHECKPOINTS.value:
        return [float(x) for x in _CHECKPOINTS.value.split(",")]
    grid = [5, 10, 15, 20, 30, 45, 60, 75, 90, 120, 150, 180, 240, 300, 420, 600, 900, 1200]
    return [float(x) for x in grid if x <= max_seconds and x >= max_seconds / 20]


def _fmt_rate(value: float | None) -> str:
    return "  -" if value is None else f"{100 * value:3.0f}"


def _fmt_reach(reach: dict | None) -> str:
    return "-" if reach is None else f"{reach['train_s']:.0f}s/{reach['env_steps']}"


def _median_reach(reaches: list[dict | None], key: str) -> float:
    return statistics.median([math.inf if r is None else r[key] for r in reaches])


def _finite(value: float) -> float | None:
    """None for an unreached level (JSON has no infinity)."""
    return None if math.isinf(value) else value


def _table(runs: list[dict], checkpoints: list[float]) -> str:
    head = ["seed"] + [f"{c:.0f}s" for c in checkpoints] + ["final", "steps", "train_s"]
    head += [f"to {100 * lv:.0f}%" for lv in LEVELS]
    rows = []
    for run in runs:
        h = run["history"]
        rows.append(
            [str(run["seed"])] + [_fmt_rate(_at(h, c)) for c in checkpoints]
            + [_fmt_rate(h[-1]["success_rate"]), str(run["env_steps"]), f"{h[-1]['train_s']:.0f}"]
            + [_fmt_reach(run["reach"][str(lv)]) for lv in LEVELS]
        )
    median = ["median"]
    for c in checkpoints:
        values = [_at(run["history"], c) for run in runs]
        median.append(_fmt_rate(statistics.median(values)) if None not in values else "  -")
    median += [_fmt_rate(statistics.median(r["history"][-1]["success_rate"] for r in runs)), "", ""]
    for lv in LEVELS:
        reaches = [run["reach"][str(lv)] for run in runs]
        t, s = _median_reach(reaches, "train_s"), _median_reach(reaches, "env_steps")
        median.append("-" if math.isinf(t) else f"{t:.0f}s/{s:.0f}")
    rows.append(median)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(x.rjust(w) for x, w in zip(row, widths, strict=True)) for row in [head, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    if _PIN_CORE.value >= 0:
        os.sched_setaffinity(0, {_PIN_CORE.value})
    if _SINGLE_THREAD.value:  # before jax is imported
        flags_ = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags_} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

    from experiments.mappings import apply_overrides, demo_files, load_experiment
    from serl_launcher.inprocess import run_inprocess

    seeds = [int(s) for s in _SEEDS.value.split(",") if s.strip()]
    checkpoints = _checkpoints(_MAX_SECONDS.value)
    runs = []
    config = None
    exp = load_experiment(cli.exp_name())
    for seed in seeds:
        config = exp.get_config()
        apply_overrides(config, cli.overrides())
        config.seed = seed
        config.learner.max_seconds = _MAX_SECONDS.value
        config.actor.max_env_steps = _MAX_ENV_STEPS.value
        config.eval.every_s = _EVAL_EVERY.value
        config.eval.episodes = _EVAL_EPISODES.value
        start_cpu = time.process_time()
        summary = run_inprocess(exp, config, progress=_PROGRESS.value, demo_paths=demo_files(config))
        history = summary["history"]
        run = {
            "seed": seed,
            "env_steps": summary["env_steps"],
            "updates": summary["updates"],
            "episodes": summary["episodes"],
            "wall_s": summary["wall_s"],
            "cpu_over_wall": (time.process_time() - start_cpu) / summary["wall_s"],
            "history": history,
            "reach": {str(lv): _first_reach(history, lv) for lv in LEVELS},
        }
        runs.append(run)
        last = history[-1]
        print(
            f"seed {seed}: {summary['env_steps']} env steps, {summary['updates']} updates, "
            f"wall {summary['wall_s']:.0f} s (train {last['train_s']:.0f} s), "
            f"final success {100 * last['success_rate']:.0f} %, cpu/wall {run['cpu_over_wall']:.2f}",
            flush=True,
        )

    print(f"\nSuccess rate (%) over {_EVAL_EPISODES.value} deterministic episodes vs train seconds "
          "(wall less evaluation); 'to X%': train seconds / env steps at the first evaluation >= X")
    print(_table(runs, checkpoints))

    out = Path(_JSON_OUT.value) if _JSON_OUT.value else DEFAULT_JSON
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "inprocess_pick_cube",
        "config": config.to_dict() if config is not None else None,
        "flags": {
            "seeds": seeds, "max_seconds": _MAX_SECONDS.value, "max_env_steps": _MAX_ENV_STEPS.value,
            "exp_name": cli.exp_name(), "set": cli.overrides(), "eval_every_s": _EVAL_EVERY.value, "eval_episodes": _EVAL_EPISODES.value,
            "pin_core": _PIN_CORE.value, "single_thread": _SINGLE_THREAD.value,
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "checkpoints_train_s": checkpoints,
        "runs": runs,
        "median": {
            **{f"success_at_{c:.0f}s": (statistics.median(v) if None not in (v := [_at(r["history"], c) for r in runs])
                                       else None) for c in checkpoints},
            **{f"{key}_to_{100 * lv:.0f}pct": _finite(_median_reach([r["reach"][str(lv)] for r in runs], key))
               for lv in LEVELS for key in ("train_s", "env_steps")},
        },
    }
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    cli.run(main)
