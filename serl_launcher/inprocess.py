"""Env, actor and learner in one process: for tests, benchmarks and debugging without sockets.

It takes exactly what the learner and actor scripts take: an experiment module (its
``make_env``, ``make_expert``) and its config (``get_config()``, with overrides), so what it
shows is the recipe users run. The same pieces the distributed roles use (agent, replay buffers,
mixed RLPD sampling, the learner's samples-per-insert rate limiter, metrics) are stepped in
lockstep: every env step inserts one transition, then learner steps (``utd_ratio`` critic
updates + actor + temperature) run while the rate limiter allows. ``demos.successes_needed``
demonstrations are recorded with the experiment's expert first (plus ``demos.paths``).

Evaluation follows ``eval.*`` as the evaluator role does (deterministic, no interventions,
``eval.episodes`` episodes every ``eval.every_s`` seconds of training, i.e. wall-clock less
evaluation; once more at the end), and ``eval.until_success`` stops the run. Budgets:
``actor.max_env_steps`` and ``learner.max_seconds`` (0: none, counted from the start).

    from experiments.mappings import load_experiment
    from serl_launcher.inprocess import run_inprocess
    exp = load_experiment("pick_cube_sim")
    summary = run_inprocess(exp, exp.get_config())
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
from ml_collections import config_dict
from tqdm import tqdm

from serl_launcher.actor import evaluate_policy, make_acting_env
from serl_launcher.agents.sac import SACAgent
from serl_launcher.data import DemoReading, ReplayBuffer, load_demos_into, sample_mixed
from serl_launcher.data.demos import check_demo_supply
from serl_launcher.evaluator import check_eval_config, check_simulated, max_failures, meets_target
from serl_launcher.learner import make_rate_limiter
from serl_launcher.utils.checkpoints import warm_start
from serl_launcher.utils.metrics import MetricsWriter
from serl_launcher.utils.rollouts import (
    demonstrator_config,
    make_expert,
    make_transition,
    record_demos,
)
from serl_launcher.utils.sharding import learner_mesh, replicate, shard_batch
from serl_launcher.wrappers.grasp_penalty import with_grasp_penalty, wrapper_attr


def run_inprocess(exp: ModuleType, config: config_dict.ConfigDict, run_dir: str | Path | None = None,
                  progress: bool = True, demo_paths: Sequence[str | Path] = (),
                  actor_from: str | Path | None = None) -> dict[str, Any]:
    """Trains `exp` with `config` until a budget or the evaluation target. `demo_paths`: demo
    files to train from as well (the learner's are ``experiments.mappings.demo_files(config)``);
    `actor_from`: an exported policy folder to start from (``agent.init_actor_from``, resolved).
    Writes metrics.jsonl and summary.json into `run_dir` when given. Returns the evaluation
    history and totals."""
    c = config
    check_eval_config(c)
    check_simulated(c, "the in-process loop")
    start = time.perf_counter()
    env, device = make_acting_env(exp, c, seed=c.seed)  # the actor's env: the scripted person may take over
    eval_env = writer = None
    try:
        eval_env = exp.make_env(c)
        obs_space, act_space = env.observation_space, env.action_space
        agent = SACAgent.create(jax.random.PRNGKey(c.seed), obs_space, act_space, c.agent)
        if actor_from is not None:
            agent = warm_start(agent, actor_from)  # as the learner does
        mesh = learner_mesh(c.learner.devices, c.agent.batch_size)  # the learner's devices, as it uses them
        agent = replicate(agent, mesh)
        penalty = c.agent.learned_gripper  # as the learner's store
        online = ReplayBuffer(obs_space, act_space, c.learner.replay_capacity, penalty, seed=c.seed)
        demo = ReplayBuffer(obs_space, act_space, c.learner.replay_capacity, penalty, seed=c.seed + 1)
        if c.demos.successes_needed:  # as record_demos.py does
            demo_env = with_grasp_penalty(exp.make_env(c), c)
            try:
                expert = make_expert(exp, demo_env, demonstrator_config(c), seed=10_000 + c.seed)
                if expert is None:
                    raise ValueError(f"demos.successes_needed={c.demos.successes_needed}, but {c.exp_name!r} has no "
                                     "make_expert to record them with: give demo files (demos.paths), or 0")
                demo.insert_many(record_demos(demo_env, expert, c.demos.successes_needed, seed=10_000 + c.seed))
            finally:
                demo_env.close()
        if demo_paths:
            load_demos_into(demo, [Path(p) for p in demo_paths], DemoReading.from_config(c),  # as the learner does
                            wrapper_attr(env, "state_layout"))
        check_demo_supply(c, len(demo), "in-process loop")
        writer = MetricsWriter.for_run(Path(run_dir) / "metrics.jsonl", c, run_dir, "inprocess") if run_dir else None

        rng = jax.random.PRNGKey(c.seed + 1)
        policy = agent.policy()
        utd, batch_size = c.agent.utd_ratio, c.agent.batch_size
        history: list[dict[str, float]] = []
        obs, _ = env.reset(seed=c.seed)
        env.action_space.seed(c.seed)
        updates, episodes, intervened, metrics, eval_s = 0, 0, 0, {}, 0.0
        target = float(c.eval.until_success)

        def train_s() -> float:
            return time.perf_counter() - start - eval_s

        def run_eval(env_steps: int) -> dict[str, Any]:
            nonlocal eval_s
            t0 = time.perf_counter()
            stats = evaluate_policy(eval_env, policy, c.eval.episodes, seed=c.eval.seed,
                                    max_failures=max_failures(target, c.eval.episodes))  # as the evaluator does
            record = {"env_steps": env_steps, "learner_step": updates, "wall_s": t0 - start, "train_s": train_s(),
                      "seconds": time.perf_counter() - t0, **stats}
            eval_s += record["seconds"]
            history.append(record)
            if writer:
                writer.write(updates, {k: v for k, v in record.items() if k != "wall_s"}, prefix="eval/")
            return record

        limiter = make_rate_limiter(c)  # the learner's: the same ratio, minimum size and tolerance
        bar = tqdm(total=c.actor.max_env_steps, disable=not progress, desc="in-process", mininterval=2)
        step, next_eval, reached = 0, train_s() + c.eval.every_s, None  # set-up and demos are not training
        for step in range(1, c.actor.max_env_steps + 1):
            if step <= c.actor.random_steps:
                action = env.action_space.sample()
            else:
                rng, key = jax.random.split(rng)
                action = policy.sample_actions(obs, key)
            next_obs, reward, terminated, truncated, info = env.step(action)
            transition = make_transition(obs, info.get("intervene_action", action), next_obs, reward, terminated,
                                         truncated, intervened=bool(info.get("intervened", False)),
                                         grasp_penalty=info.get("grasp_penalty"))
            online.insert(transition)
            if transition["intervened"]:  # as the learner's store: interventions are demonstrations too
                demo.insert(transition)
                intervened += 1
            obs = next_obs
            if terminated or truncated:
                episodes += 1
                if hasattr(device, "episode_end"):  # as the actor does: the scripted person's schedule fades
                    device.episode_end(bool(info.get("success", False)))
                obs, _ = env.reset()

            limiter.inserted()
            while limiter.can_sample():
                fraction = c.learner.demo_fraction if len(demo) else 0.0
                batch = sample_mixed(online, demo, batch_size * utd, demo_fraction=fraction, allow_empty_demo=True,
                                     num_minibatches=utd)
                agent, metrics = agent.update_for_step(shard_batch(batch, mesh, utd), updates)  # as the learner does
                policy = agent.policy()  # the update donated the old parameters
                limiter.stepped()
                updates += 1
                if writer and updates % c.learner.log_period == 0:
                    writer.write(updates, metrics, prefix="train/")
            if c.eval.every_s > 0 and train_s() >= next_eval:
                record = run_eval(step)
                next_eval = record["train_s"] + c.eval.every_s
                bar.set_postfix(success=record["success_rate"])
                if meets_target(record, target, c.eval.episodes):
                    reached = record
                    break
            bar.update(1)
            if c.learner.max_seconds and time.perf_counter() - start > c.learner.max_seconds:
                break
        bar.close()
        if not history or history[-1]["env_steps"] != step:
            record = run_eval(step)
            if reached is None and meets_target(record, target, c.eval.episodes):
                reached = record
        summary = {
            "env_steps": step, "updates": updates, "episodes": episodes, "intervened": intervened,
            "wall_s": time.perf_counter() - start, "train_s": train_s(),
            "final_success_rate": history[-1]["success_rate"], "target_reached": reached, "history": history,
        }
        if run_dir:
            (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        for closable in (env, eval_env, writer):
            if closable is not None:
                closable.close()
    return summary
