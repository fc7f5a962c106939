"""The evaluator role: evaluates the newest policy the learner published, every
``eval.every_s`` seconds, deterministic and without interventions, and writes ``eval/`` records
to the run's metrics.jsonl (next to the learner's): success rate with its 95 % Wilson interval,
the cycle time (mean steps and seconds of the successful episodes), and the learner step and env
steps of the policy evaluated.

It receives parameters over the transport as an actor does but sends no transitions, so it adds
nothing to the learner's buffers. With ``eval.until_success`` set, the first evaluation that
reaches it writes ``target_reached.json`` into the run folder; the learner and the actors of the
run stop cleanly when they see it (:func:`target_reached`), and so does the evaluator.

    bash experiments/pick_cube_sim/run_actor.sh --evaluator --checkpoint_path first_run
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from ml_collections import config_dict

from serl_launcher.utils.metrics import MetricsWriter

TARGET_FILE = "target_reached.json"


def target_reached(run_dir: str | Path, since: float, epoch: str | None = None) -> dict[str, Any] | None:
    """The record of the evaluation that reached the run's target, if one was written at or
    after Unix time `since` (an older one belongs to an earlier session of the run) and, when
    `epoch` (the running learner's transport epoch) is given, of a policy of that learner: a
    learner restarted while an evaluation of its predecessor's policy ran is not stopped by it."""
    path = Path(run_dir) / TARGET_FILE
    try:
        if path.stat().st_size > 64 << 10:  # not one of ours
            return None
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except Exception:  # being replaced right now, or not ours (bad JSON, absurd nesting): not a stop
        return None
    stamp = record.get("time") if isinstance(record, dict) else None
    if type(stamp) not in (int, float) or not math.isfinite(stamp) or stamp > time.time() + 60:
        return None  # a time from the future would stop every later session of the run
    if stamp < since:
        return None
    if epoch is not None and record.get("epoch") not in (None, epoch):
        return None
    return record


def check_simulated(config: config_dict.ConfigDict, role: str) -> None:
    """ValueError when `role` (which drives its own env) is asked to run on a real arm: a second
    process commanding the arm the actor drives."""
    if not config.get("simulated", True):
        raise ValueError(f"{config.exp_name} is a real arm (simulated=False): {role} would drive it beside the "
                         f"actor. Evaluate saved checkpoints between sessions instead "
                         f"(run_actor.sh --eval_checkpoint_step -1, with no actor running)")


def check_eval_config(config: config_dict.ConfigDict) -> None:
    """ValueError for eval settings that cannot work (before any process has started)."""
    c = config.eval
    if c.episodes < 1 or c.every_s < 0:
        raise ValueError(f"eval.episodes must be >= 1 and eval.every_s >= 0 (got {c.episodes}, {c.every_s})")
    if c.until_success > 1:
        raise ValueError(f"eval.until_success is a success rate in [0, 1] (negative: never), not "
                         f"{c.until_success}; e.g. 0.9 for 90 %")


def max_failures(target: float, episodes: int) -> int | None:
    """Failures an evaluation of `episodes` can have and still reach `target` (None: no target,
    every episode runs). Past them the evaluator stops early: on 2 cores the episodes of a
    policy that cannot pass yet are CPU the learner and actor need."""
    if target < 0:
        return None
    return int(math.floor((1.0 - target) * episodes + 1e-9))


def meets_target(stats: dict[str, Any], target: float, episodes: int) -> bool:
    """Whether a finished evaluation reaches `target`: every one of the `episodes` ran (one
    stopped early by `max_failures` cannot) and its success rate is at least the target."""
    return target >= 0 and stats["episodes"] == episodes and stats["success_rate"] >= target


class TargetWatch:
    """`target_reached` at most every `period` s (cheap to call on every step); `epoch` gives the
    transport epoch of the learner this role serves (None while unknown)."""

    def __init__(self, run_dir: str | Path, enabled: bool, period: float = 0.5,
                 epoch: Callable[[], str | None] = lambda: None):
        self.run_dir, self.enabled, self.period, self.epoch = Path(run_dir), enabled, period, epoch
        self.since, self._next, self.record = time.time(), 0.0, None

    def __call__(self) -> dict[str, Any] | None:
        if self.enabled and self.record is None and time.monotonic() >= self._next:
            self._next = time.monotonic() + self.period
            self.record = target_reached(self.run_dir, self.since, self.epoch())
        return self.record


def _write_target(run_dir: Path, record: dict[str, Any]) -> None:
    tmp = run_dir / f"{TARGET_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, run_dir / TARGET_FILE)  # readers see the whole record or none


class EvaluatorFolderError(ValueError):
    """The evaluator's run folder is not a learner's (see Evaluator._open_run_metrics)."""


class Evaluator:
    """Evaluates what `client` (an ActorClient or LocalClient) receives, in `env` (no
    intervention wrapper), writing to ``run_dir/metrics.jsonl``."""

    def __init__(self, config: config_dict.ConfigDict, env: gym.Env, client, run_dir: str | Path):
        from serl_launcher.actor import initial_policy

        check_eval_config(config)
        check_simulated(config, "the live evaluator")
        self.config, self.env, self.client, self.run_dir = config, env, client, Path(run_dir)
        self.policy = initial_policy(config, env.observation_space, env.action_space)
        self.writer: MetricsWriter | None = None  # opened once the learner's folder is known to exist
        self.history: list[dict[str, Any]] = []
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, max_evaluations: int | None = None) -> dict[str, Any]:
        from serl_launcher.actor import evaluate_policy, with_params

        c = self.config.eval
        target = float(c.until_success)
        self.client.start()
        evaluated, next_start, reached = None, 0.0, None
        while not self._stop.is_set() and (max_evaluations is None or len(self.history) < max_evaluations):
            if time.monotonic() < next_start:
                self._stop.wait(min(0.5, next_start - time.monotonic()))
                continue
            latest = self.client.wait_for_params(0.5)
            # Step 0 is the untrained policy; a restarted learner may be behind (so != and not >).
            if latest is None or latest[0] in (0, evaluated):
                self._stop.wait(0.2)
                continue
            epoch, step, params, env_steps = self.client.params_snapshot()
            received = time.time()
            if self.writer is None:
                self.writer = self._open_run_metrics()
            self.policy = with_params(self.policy, params)
            next_start = time.monotonic() + c.every_s
            stats = evaluate_policy(self.env, self.policy, c.episodes, seed=c.seed,
                                    max_failures=max_failures(target, c.episodes))
            evaluated = step
            record = {**stats, "learner_step": step, "seconds": time.time() - received}
            if env_steps is not None:
                record["env_steps"] = env_steps
            self.writer.write(step, record, prefix="eval/")
            self.history.append(record)
            print(f"[eval] learner step {step}, env steps {env_steps if env_steps is not None else '?'}: "
                  f"success {stats['success_rate']:.0%} ({stats['success_ci_low']:.0%}-"
                  f"{stats['success_ci_high']:.0%}) over {stats['episodes']} episodes in {record['seconds']:.1f} s"
                  + (" (stopped early: the target is out of reach)" if stats["episodes"] < c.episodes else ""),
                  flush=True)
            if meets_target(stats, target, c.episodes):
                reached = {"time": time.time(), "target": target, "epoch": epoch, "learner_step": step,
                           "env_steps": env_steps,
                           "success_rate": stats["success_rate"], "episodes": c.episodes}
                _write_target(self.run_dir, reached)
                print(f"[eval] target {target:.0%} reached at learner step {step}", flush=True)
                break
        return {"evaluations": len(self.history), "target_reached": reached,
                "last": self.history[-1] if self.history else None}

    def _open_run_metrics(self) -> MetricsWriter:
        """The learner's metrics.jsonl, once its params arrived (so after it wrote config.json:
        the learner's file starts with its config header). A folder without the learner's
        config.json is a mistyped --checkpoint_path: the results would go where nobody reads
        them and a target reached there would stop nothing."""
        if not (self.run_dir / "config.json").is_file():
            raise EvaluatorFolderError(
                f"{self.run_dir} has no config.json of a learner: the evaluator writes its results and "
                f"the target into the learner's run folder, so give it the learner's --checkpoint_path "
                f"(a learner on another machine: copy its config.json there first)")
        # Appends to the learner's file: each record is one line written by one write() to a
        # file opened for appending, so the two writers' lines never mix.
        return MetricsWriter.for_run(self.run_dir / "metrics.jsonl", self.config, self.run_dir, "evaluator",
                                     header=False)

    def close(self) -> None:
        self.client.close()
        if self.writer is not None:
            self.writer.close()
        self.env.close()
