"""Env-stepping helpers shared by the actor, the in-process loop, demo recording and evaluation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np


def make_transition(
    observations: dict[str, np.ndarray],
    action: np.ndarray,
    next_observations: dict[str, np.ndarray],
    reward: float,
    terminated: bool,
    truncated: bool,
    intervened: bool = False,
    grasp_penalty: float | None = None,
) -> dict[str, Any]:
    """One transition in the data contract: masks from true terminals only, dones for any end."""
    transition = {
        "observations": observations,
        "actions": np.asarray(action, dtype=np.float32),
        "next_observations": next_observations,
        "rewards": np.float32(reward),
        "masks": np.float32(0.0 if terminated else 1.0),
        "dones": bool(terminated or truncated),
        "intervened": bool(intervened),
    }
    if grasp_penalty is not None:
        transition["grasp_penalty"] = np.float32(grasp_penalty)
    return transition


def evaluate(
    env: gym.Env,
    act: Callable[[dict[str, np.ndarray]], np.ndarray],
    num_episodes: int,
    seed: int | None = None,
    max_failures: int | None = None,
) -> dict[str, float]:
    """Runs `num_episodes` with `act(observation) -> action` (no interventions); with
    `max_failures`, stops after that many failures plus one (a target success rate can then no
    longer be reached), and the numbers cover the episodes run (``episodes``).

    Returns success rate (from ``info["success"]``) with its 95 % Wilson interval
    (``success_ci_low`` / ``success_ci_high``), mean return, mean length and mean episode wall
    time; how the failures ended: ``failed_terminated`` (the env ended the episode, e.g. a
    reward classifier that fired while the task was not done) and ``failed_truncated`` (the time
    limit); and, when some episode succeeded, the cycle time HIL-SERL reports: mean steps
    (``cycle_steps``) and wall seconds (``cycle_s``) of the successful episodes. Episode i is
    reset with seed + i when `seed` is given.
    """
    successes, returns, lengths, durations, terminated_failures = [], [], [], [], 0
    for i in range(num_episodes):
        if max_failures is not None and len(successes) - sum(successes) > max_failures:
            break
        obs, _ = env.reset(seed=None if seed is None else seed + i)
        start, total, length, info = time.perf_counter(), 0.0, 0, {}
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total += float(reward)
            length += 1
            done = terminated or truncated
        if "success" not in info:  # a success rate of 0 % would say nothing, silently
            raise ValueError(f"the env's last step info has no 'success' (its keys: {sorted(info)}): evaluation "
                             "needs it; for another env's key (e.g. 'succeed'), set adapter.success_key "
                             "(serl_launcher.wrappers.adapter.SpaceAdapter), for a real arm a reward classifier")
        successes.append(bool(info["success"]))
        terminated_failures += bool(terminated) and not successes[-1]
        returns.append(total)
        lengths.append(length)
        durations.append(time.perf_counter() - start)
    low, high = wilson_interval(sum(successes), len(successes))
    stats = {
        "success_rate": float(np.mean(successes)),
        "success_ci_low": low,
        "success_ci_high": high,
        "episodes": len(successes),
        "return": float(np.mean(returns)),
        "length": float(np.mean(lengths)),
        "episode_time_s": float(np.mean(durations)),
        "failed_terminated": terminated_failures,
        "failed_truncated": len(successes) - sum(successes) - terminated_failures,
    }
    if any(successes):
        won = np.flatnonzero(successes)
        stats["cycle_steps"] = float(np.mean(np.asarray(lengths)[won]))
        stats["cycle_s"] = float(np.mean(np.asarray(durations)[won]))
    return stats


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95 % by default): unlike the normal
    approximation it stays inside [0, 1] and is not empty at 0 or n successes."""
    if trials <= 0:
        raise ValueError(f"trials must be positive, not {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}], not {successes}")
    p, n = successes / trials, trials
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    # Exactly 0 and 1 at the ends (the formula gives them up to rounding).
    return (0.0 if successes == 0 else low), (1.0 if successes == trials else high)


def make_expert(exp: Any, env: gym.Env, config, seed: int | None = None):
    """The experiment module's ``make_expert(env, config, seed)``; None where it defines none
    (an experiment of a user's env without a scripted expert: a person or demo files instead)."""
    factory = getattr(exp, "make_expert", None)
    return None if factory is None else factory(env, config, seed=seed)


def demonstrator_config(config):
    """A copy of `config` for recording demonstrations: the expert's noise is ``demos.noise``
    (``actor.intervention.noise`` is the noise of the scripted person helping during training)."""
    config = config.copy_and_resolve_references()
    config.actor.intervention.noise = config.demos.noise
    return config


def record_demos(
    env: gym.Env,
    device: Any,
    num_successes: int,
    seed: int = 0,
    max_episodes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Transitions of `num_successes` successful episodes driven by `device` (an intervention
    device that is in control); failed episodes are dropped, and so are those the person asked
    to re-record (``info["rerecord"]``, :mod:`serl_launcher.wrappers.episode_control`), which do
    not count against `max_episodes`; a person's success / failure label decides over the env's.
    Marked ``intervened=True``.

    `progress(successes, episodes)` is called after each episode.
    """
    transitions: list[dict[str, Any]] = []
    successes = episodes = rerecorded = 0
    limit = max_episodes if max_episodes is not None else 5 * num_successes + 10
    while successes < num_successes:
        if episodes - rerecorded >= limit:
            raise RuntimeError(f"only {successes} of {episodes} episodes succeeded (wanted {num_successes})")
        obs, _ = env.reset(seed=seed + episodes)
        device.reset()
        episodes += 1
        episode, done, info = [], False, {}
        while not done:
            action = np.asarray(device.get_action(obs).action, dtype=np.float32)
            next_obs, reward, terminated, truncated, info = env.step(action)
            episode.append(make_transition(obs, action, next_obs, reward, terminated, truncated, intervened=True,
                                           grasp_penalty=info.get("grasp_penalty")))
            obs, done = next_obs, terminated or truncated
        if info.get("rerecord"):
            rerecorded += 1
            print(f"[demos] episode {episodes} discarded: the person asked to re-record it", flush=True)
        elif info.get("success"):
            transitions += episode
            successes += 1
        if progress is not None:
            progress(successes, episodes)
    return transitions
