"""Env-stepping helpers shared by the actor, the in-process loop, demo recording and evaluation."""

from __future__ import annotations

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
) -> dict[str, float]:
    """Runs `num_episodes` with `act(observation) -> action` (no interventions).

    Returns success rate (from ``info["success"]``), mean return, mean length and mean episode
    wall time. Episode i is reset with seed + i when `seed` is given.
    """
    successes, returns, lengths, durations = [], [], [], []
    for i in range(num_episodes):
        obs, _ = env.reset(seed=None if seed is None else seed + i)
        start, total, length, info = time.perf_counter(), 0.0, 0, {}
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total += float(reward)
            length += 1
            done = terminated or truncated
        successes.append(bool(info.get("success", False)))
        returns.append(total)
        lengths.append(length)
        durations.append(time.perf_counter() - start)
    return {
        "success_rate": float(np.mean(successes)),
        "return": float(np.mean(returns)),
        "length": float(np.mean(lengths)),
        "episode_time_s": float(np.mean(durations)),
    }


def record_demos(
    env: gym.Env,
    device: Any,
    num_successes: int,
    seed: int = 0,
    max_episodes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Transitions of `num_successes` successful episodes driven by `device` (an intervention
    device that is in control); failed episodes are dropped. Marked ``intervened=True``.

    `progress(successes, episodes)` is called after each episode.
    """
    transitions: list[dict[str, Any]] = []
    successes = episodes = 0
    limit = max_episodes if max_episodes is not None else 5 * num_successes + 10
    while successes < num_successes:
        if episodes >= limit:
            raise RuntimeError(f"only {successes} of {episodes} episodes succeeded (wanted {num_successes})")
        obs, _ = env.reset(seed=seed + episodes)
        device.reset()
        episodes += 1
        episode, done, info = [], False, {}
        while not done:
            action = np.asarray(device.get_action(obs).action, dtype=np.float32)
            next_obs, reward, terminated, truncated, info = env.step(action)
            episode.append(make_transition(obs, action, next_obs, reward, terminated, truncated, intervened=True))
            obs, done = next_obs, terminated or truncated
        if info.get("success"):
            transitions += episode
            successes += 1
        if progress is not None:
            progress(successes, episodes)
    return transitions
