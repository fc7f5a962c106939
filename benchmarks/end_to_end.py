"""The headline: from nothing to a trained policy, learner and actor as separate processes.

    python benchmarks/end_to_end.py [--exp_name pick_cube_sim] [--seeds 0,1,2] [--minutes 10]

Per seed, exactly as a user runs it: record expert demos, start run_learner.sh and run_actor.sh
(the scripted expert intervening when the policy stalls), and every --eval_every_s seconds
evaluate the newest exported policy (deterministic, no interventions, --eval_episodes episodes)
in this process. Reports success rate against wall-clock (from before the demos) and env steps,
and the time to reach 90 %. Writes benchmarks/results/end_to_end_<exp>.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

_EXP = flags.DEFINE_string("exp_name", "pick_cube_sim", "Experiment.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (one full run each, sequentially).")
_MINUTES = flags.DEFINE_float("minutes", 10.0, "Training budget per seed.")
_EVAL_EVERY = flags.DEFINE_float("eval_every_s", 60.0, "Seconds between evaluations.")
_EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 50, "Episodes per evaluation.")
_TARGET = flags.DEFINE_float("target", 0.9, "Success rate whose first time is reported.")
_SET = flags.DEFINE_multi_string("set", [], "Extra config overrides for both roles (key=value).")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Results file.")

REPO = Path(__file__).resolve().parent.parent


def env_steps(folder: Path) -> int:
    path = folder / "metrics.jsonl"
    steps = 0
    if path.is_file():
        for line in path.read_text().splitlines():
            steps = max(steps, json.loads(line).get("replay/received", 0))
    return steps


def run_seed(seed: int) -> dict:
    sys.path.insert(0, str(REPO))
    import jax  # noqa: F401  (before any policy is loaded)

    from experiments.launch import prepare_classifier, role_args, script_env, start_role, stop
    from experiments.mappings import load_experiment, run_dir
    from serl_launcher.actor import evaluate_policy
    from serl_launcher.utils.checkpoints import load_policy

    exp = load_experiment(_EXP.value)
    config = exp.get_config()
    name = f"e2e-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = run_dir(_EXP.value, name)
    folder.mkdir(parents=True)
    env = script_env()
    start = time.monotonic()
    settings = []
    if "classifier" in config:  # the reward comes from a classifier: frames, then training, first
        checkpoint = prepare_classifier(_EXP.value, folder, env, seed=seed)
        settings.append(f"classifier.checkpoint={str(checkpoint)!r}")
        config.classifier.checkpoint = str(checkpoint)
        print(f"seed {seed}: classifier ready after {time.monotonic() - start:.0f} s "
              f"({json.loads((checkpoint / 'classifier.json').read_text())['report']['heldout']})", flush=True)
    demos = folder / "demos.pkl"
    subprocess.run([sys.executable, str(REPO / "scripts/record_demos.py"), "--exp_name", _EXP.value,
                    "--successes_needed", str(config.demos.successes_needed), "--output", str(demos),
                    "--seed", str(1000 + 100 * seed), *[a for x in settings for a in ("--set", x)]],
                   check=True, env=env, capture_output=True)
    args = role_args(name, [*settings, f"seed={seed}", f"learner.max_seconds={_MINUTES.value * 60}",
                            f"demos.paths=({str(demos)!r},)", "learner.checkpoint_period=500", *_SET.value])
    learner = start_role(_EXP.value, "learner", args, folder / "learner.log", env)
    actor = start_role(_EXP.value, "actor", ["--actor_id", "sim-0", *args], folder / "actor.log", env)
    eval_env = exp.make_env(config)
    history, evaluated = [], None
    try:
        while True:
            done = learner.poll() is not None
            time.sleep(0 if done else _EVAL_EVERY.value)
            try:  # the learner may be swapping in a new export right now: try again next round
                policy, meta = load_policy(folder / "policy")
            except (FileNotFoundError, ValueError):
                policy = meta = None
            if meta is not None:
                if meta["step"] != evaluated:
                    evaluated = meta["step"]
                    stats = evaluate_policy(eval_env, policy, _EVAL_EPISODES.value, seed=50_000)
                    record = {"wall_s": time.monotonic() - start, "learner_step": meta["step"],
                              "env_steps": env_steps(folder), **stats}
                    history.append(record)
                    print(f"seed {seed}: {record['wall_s']:6.0f} s  step {meta['step']:6d}  env steps "
                          f"{record['env_steps']:6d}  success {stats['success_rate']:.0%}", flush=True)
            if done:
                break
    finally:
        stop([learner, actor])
    reached = next((h for h in history if h["success_rate"] >= _TARGET.value), None)
    return {"seed": seed, "run": str(folder), "history": history,
            "time_to_target_s": reached["wall_s"] if reached else None,
            "env_steps_to_target": reached["env_steps"] if reached else None,
            "final_success_rate": history[-1]["success_rate"] if history else 0.0}


def main(argv: list[str]) -> None:
    del argv
    results = [run_seed(int(s)) for s in _SEEDS.value]
    print(f"\n{_EXP.value}: time to {_TARGET.value:.0%} success over {_EVAL_EPISODES.value} episodes "
          f"(budget {_MINUTES.value:g} min per seed)")
    print(f"{'seed':>4} {'time to target':>15} {'env steps':>10} {'final success':>14}")
    for r in results:
        t = f"{r['time_to_target_s']:.0f} s" if r["time_to_target_s"] is not None else "not reached"
        print(f"{r['seed']:>4} {t:>15} {str(r['env_steps_to_target'] or '-'):>10} {r['final_success_rate']:>14.0%}")
    out = Path(_JSON_OUT.value or REPO / "benchmarks" / "results" / f"end_to_end_{_EXP.value}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"exp_name": _EXP.value, "minutes": _MINUTES.value, "target": _TARGET.value,
                               "eval_episodes": _EVAL_EPISODES.value, "results": results}, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    app.run(main)
