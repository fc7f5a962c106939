"""The actor role: runs the env with the newest policy, lets a device intervene, streams
transitions and episode statistics to the learner; and the evaluation mode.

Pacing: with ``actor.backpressure`` (simulators) the actor takes a step only while the learner's
rate limiter grants credit (see serl_launcher.learner), so it waits for a learner that is behind
or not there. Without it (a real robot) the actor never waits: until the first parameters arrive
it acts with its own freshly initialised policy (the experiment's seed gives the learner's initial
parameters), and its transport queue (memory, then a spool on disk) holds transitions until the
learner acknowledges them.

Every actor draws its own random stream: env resets, policy noise and the scripted person are
seeded by :func:`actor_seed` of the experiment's seed and the actor id, so two actors never
produce the same data.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from serl_launcher.agents.sac import Policy, SACAgent
from serl_launcher.evaluator import TargetWatch
from serl_launcher.utils.metrics import MetricsWriter
from serl_launcher.utils.rollouts import evaluate, make_expert, make_transition


def actor_seed(seed: int, actor_id: str) -> int:
    """A stable seed of the experiment's `seed` and an actor id (the same on every machine and
    run; different for different ids)."""
    digest = hashlib.sha256(f"{int(seed)}/{actor_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def make_acting_env(exp: Any, config: config_dict.ConfigDict, seed: int) -> tuple[gym.Env, Any]:
    """(env, device) of an actor: the experiment's env, wrapped so the intervention device of
    ``actor.intervention`` (the scripted person seeded with `seed`, or a person's device) can
    take over, with a person's episode buttons (success, failure, re-record, ready) when a
    person's device drives it, then with the grasp penalty of a learned gripper (on the
    executed command, intervention or not); device None when nobody intervenes."""
    from serl_launcher.human.devices import device_from_config
    from serl_launcher.wrappers.episode_control import with_episode_control
    from serl_launcher.wrappers.grasp_penalty import with_grasp_penalty
    from serl_launcher.wrappers.intervention import InterventionWrapper

    env = exp.make_env(config)
    try:
        device = device_from_config(config.actor.intervention, env.action_space.shape[0],
                                    lambda: make_expert(exp, env, config, seed=seed), seed=seed)
    except BaseException:
        env.close()
        raise
    if device is None:
        return with_grasp_penalty(env, config), device
    acting = with_episode_control(InterventionWrapper(env, device), device, config)  # a person's buttons
    return with_grasp_penalty(acting, config), device


def initial_policy(config: config_dict.ConfigDict, observation_space, action_space) -> Policy:
    return SACAgent.create(jax.random.PRNGKey(config.seed), observation_space, action_space, config.agent).policy()


def with_params(policy: Policy, params: dict) -> Policy:
    """`policy` with published parameters, after checking they fit its networks."""
    expected = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), policy.params)
    received = jax.tree.map(lambda x: (tuple(np.shape(x)), str(np.asarray(x).dtype)), params)
    if jax.tree.structure(expected) != jax.tree.structure(received) or expected != received:
        raise ValueError(
            "the learner published parameters that do not fit this actor's policy: are the learner "
            "and the actor running the same experiment config (observation and action spaces)?"
        )
    return policy.replace(params=jax.tree.map(jnp.asarray, params))


class Actor:
    """Steps `env` (already wrapped with interventions, if any) and talks through `client`."""

    def __init__(self, config: config_dict.ConfigDict, env: gym.Env, client, run_dir: Path,
                 device: Any = None, seed: int | None = None, run_folder: Path | None = None):
        self.config, self.env, self.client, self.device = config, env, client, device
        self.seed = config.seed if seed is None else seed  # this actor's stream (actor_seed)
        self.policy = initial_policy(config, env.observation_space, env.action_space)
        self.params_step = -1
        self.writer = MetricsWriter.for_run(Path(run_dir) / "metrics.jsonl", config, run_folder or Path(run_dir).parent,
                                            Path(run_dir).name)
        self.episodes = 0
        self._stop = threading.Event()
        # The run's folder, where the evaluator says when eval.until_success is reached.
        self._target = TargetWatch(run_folder or run_dir, run_folder is not None,
                                   epoch=lambda: client.params_snapshot()[0])

    def stop(self) -> None:
        """Ends :meth:`run` after the current step (safe from a signal handler), also while a
        reset waits for the person's "scene ready"."""
        self._stop.set()
        try:
            self.env.get_wrapper_attr("cancel_pause")()
        except AttributeError:
            pass  # no episode buttons on this env

    def _refresh_policy(self) -> None:
        latest = self.client.latest_params()
        if latest is not None and latest[0] != self.params_step:
            step, params = latest
            self.policy = with_params(self.policy, params)
            self.params_step = step

    def run(self, max_env_steps: int) -> dict[str, Any]:
        c = self.config.actor
        self.client.start()
        rng = jax.random.PRNGKey(self.seed)
        obs, _ = self.env.reset(seed=self.seed)
        self.env.action_space.seed(self.seed)  # random_steps are this actor's own stream too
        episode = {"return": 0.0, "length": 0, "start": time.perf_counter()}
        timer = {"policy_s": 0.0, "env_s": 0.0, "send_s": 0.0, "backpressure_s": 0.0}
        successes: list[bool] = []
        step = 0
        while step < max_env_steps and not self._stop.is_set():
            t0 = time.perf_counter()
            if c.backpressure:  # a simulator waits for the learner's credit
                waited = 0
                while not self.client.wait_for_credit(0.1):
                    waited += 1
                    if waited % 300 == 0:  # every 30 s
                        print(f"[actor] waiting {waited // 10} s for the learner's go-ahead (is it running and "
                              f"reachable at {self.config.transport.host}:{self.config.transport.data_port}?)",
                              flush=True)
                    if self._stop.is_set() or self._target():
                        break
            if self._stop.is_set() or self._target():
                break
            step += 1
            self._refresh_policy()
            t_paced = time.perf_counter()
            if step <= c.random_steps:
                action = self.env.action_space.sample()
            else:
                rng, key = jax.random.split(rng)
                action = self.policy.sample_actions(obs, key)
            t1 = time.perf_counter()
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            t2 = time.perf_counter()
            executed = info.get("intervene_action", action)
            self.client.send_transition(make_transition(
                obs, executed, next_obs, reward, terminated, truncated,
                intervened=bool(info.get("intervened", False)), grasp_penalty=info.get("grasp_penalty"),
            ))
            timer["backpressure_s"] += t_paced - t0
            timer["policy_s"] += t1 - t_paced
            timer["env_s"] += t2 - t1
            timer["send_s"] += time.perf_counter() - t2
            episode["return"] += float(reward)
            episode["length"] += 1
            obs = next_obs
            if terminated or truncated:
                success = bool(info.get("success", False))
                successes.append(success)
                stats = {"return": episode["return"], "length": episode["length"], "success": float(success),
                         "episode_time_s": time.perf_counter() - episode["start"], "env_steps": step,
                         "params_step": self.params_step, **info.get("episode_interventions", {}),
                         **info.get("episode_labels", {})}
                self.client.send_stats(stats)
                self.writer.write(step, stats, prefix="actor/")
                if hasattr(self.device, "episode_end"):
                    self.device.episode_end(success)
                self.episodes += 1
                obs, _ = self.env.reset()
                episode = {"return": 0.0, "length": 0, "start": time.perf_counter()}
            if step % c.log_period == 0:
                self.writer.write(step, {f"timer/{k[:-2]}_ms": 1e3 * v / c.log_period for k, v in timer.items()}
                                  | self.transport_metrics())
                timer = dict.fromkeys(timer, 0.0)
        if self._target():
            print("[actor] the evaluator reached the run's target; stopping", flush=True)
        return {"env_steps": step, "episodes": self.episodes,
                "success_rate": float(np.mean(successes)) if successes else 0.0}

    def transport_metrics(self) -> dict[str, int]:
        client = self.client
        return {"transport/pending": client.pending, "transport/dropped": client.dropped,
                "transport/spooled": client.spooled, "transport/spool_errors": client.spool_errors,
                "transport/acked": client.acked + 1,
                **{f"transport/rejected/{k.replace(' ', '_')}": v for k, v in client.rejected.items()}}

    def close(self) -> None:
        self.client.close()
        self.writer.close()
        self.env.close()


def evaluate_policy(env: gym.Env, policy: Policy, num_episodes: int, seed: int = 0,
                    video_path: Path | None = None, max_failures: int | None = None) -> dict[str, float]:
    """Deterministic policy, no interventions. Writes a video of the episodes if asked;
    `max_failures`: see serl_launcher.utils.rollouts.evaluate."""
    key = jax.random.PRNGKey(seed)
    act = lambda obs: policy.sample_actions(obs, key, deterministic=True)  # noqa: E731
    if video_path is None:
        return evaluate(env, act, num_episodes, seed=seed, max_failures=max_failures)
    from serl_launcher.utils.video import write_video

    frames = []

    class Recorder(gym.Wrapper):
        def reset(self, **kwargs):
            out = self.env.reset(**kwargs)
            frames.append(self.env.render())
            return out

        def step(self, action):
            out = self.env.step(action)
            frames.append(self.env.render())
            return out

    stats = evaluate(Recorder(env), act, num_episodes, seed=seed)
    write_video(video_path, frames, fps=env.metadata.get("render_fps", 10))
    return stats
