"""The learner role: replay buffers fed by actors over the transport, RLPD updates, parameter
publishing, checkpoints, and automatic resume.

Run folder layout (``run_dir``):
    config.json            the resolved experiment config
    checkpoints/<step>/    orbax training state (agent, optimizer states, RNG) + meta
    buffers/online|demo/   chunked replay buffers (resume restores them)
    policy/                the latest exported policy (loads from the folder alone)
    metrics.jsonl          train/, replay/, timer/ and actor/ (stats sent by actors) records;
                           replay/intervention_rate is the share of intervened transitions among
                           those received since the previous record (absent when none arrived)

Every transition goes to the online buffer; intervention transitions also go to the demo buffer,
which starts with the demo files. A restarted learner restores the newest checkpoint and both
buffers, without asking anything.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from ml_collections import config_dict

from serl_launcher.agents.sac import SACAgent
from serl_launcher.data import Prefetcher, ReplayBuffer, load_demos_into, sample_mixed
from serl_launcher.utils.checkpoints import CheckpointManager, export_policy
from serl_launcher.utils.metrics import MetricsWriter


def policy_params_numpy(agent: SACAgent) -> dict:
    """The parameters an actor needs, as nested dicts of numpy arrays (what is published)."""
    return jax.tree.map(np.asarray, agent.policy().params)


class Learner:
    """Holds the learner's state; :meth:`run` trains until `max_steps` or :meth:`stop`.

    Args:
        config: the experiment config.
        observation_space, action_space: the env's spaces (the learner never builds hardware).
        run_dir: the run folder (created).
        make_server: ``(on_transitions, on_stats) -> server`` with ``start``, ``publish_params``
            and ``close`` (a transport LearnerServer or a LocalHub server).
        demo_paths: demo files to load when the demo buffer is not restored from a previous run.
    """

    def __init__(self, config: config_dict.ConfigDict, observation_space, action_space, run_dir: Path,
                 make_server: Callable, demo_paths: list[Path] = ()):
        self.config, self.run_dir = config, Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.observation_space, self.action_space = observation_space, action_space
        c = config.learner
        self.online = ReplayBuffer(observation_space, action_space, c.replay_capacity, seed=config.seed)
        self.demo = ReplayBuffer(observation_space, action_space, c.replay_capacity, seed=config.seed + 1)
        self.agent = SACAgent.create(jax.random.PRNGKey(config.seed), observation_space, action_space, config.agent)
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", max_to_keep=3)
        self.step = 0
        self._resume(demo_paths)
        (self.run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=list) + "\n")
        self._lock = threading.Lock()  # the metrics writer is shared with the transport thread
        self.writer = MetricsWriter(self.run_dir / "metrics.jsonl", config=config.to_dict())
        self.received = self.intervened = 0  # transitions received by this process (not restored)
        self._counts_lock = threading.Lock()  # the transport thread counts, the training loop reads
        self._logged_counts = (0, 0)  # (received, intervened) at the previous replay/ record
        self._stop = threading.Event()
        self.server = make_server(self._on_transitions, self._on_stats)

    # ------------------------------------------------------------------ resume

    def _resume(self, demo_paths: list[Path]) -> None:
        buffers = self.run_dir / "buffers"
        restored_demo = False
        for name, buffer in (("online", self.online), ("demo", self.demo)):
            if (buffers / name / "manifest.json").is_file():
                buffer.restore(buffers / name)
                restored_demo |= name == "demo"
        if not restored_demo:
            for path in demo_paths:
                load_demos_into(self.demo, [path])
        if self.checkpoints.latest_step() is not None:
            self.agent, meta = self.checkpoints.restore(self.agent, observation_space=self.observation_space)
            self.step = int(meta["step"])
            print(f"[learner] resumed from step {self.step} "
                  f"({len(self.online)} online, {len(self.demo)} demo transitions)", flush=True)

    def save(self) -> None:
        self.checkpoints.save(self.step, self.agent, self.observation_space, self.action_space)
        self.online.save(self.run_dir / "buffers" / "online")
        self.demo.save(self.run_dir / "buffers" / "demo")
        export_policy(self.run_dir / "policy", self.agent, self.observation_space, self.action_space, self.step)
        self.checkpoints.wait()

    # ------------------------------------------------------------------ transport callbacks

    def _on_transitions(self, actor_id: str, transitions: list[dict[str, Any]]) -> None:
        intervened = 0
        for transition in transitions:
            self.online.insert(transition)
            if transition.get("intervened"):
                self.demo.insert(transition)
                intervened += 1
        with self._counts_lock:  # both counts move together: a reader never sees one without the other
            self.received += len(transitions)
            self.intervened += intervened

    def replay_metrics(self) -> dict[str, float]:
        """The replay/ record: buffer sizes, totals received, and the intervention rate since the
        previous call (left out when nothing arrived since, as 0/0 is not a rate)."""
        with self._counts_lock:
            received, intervened = self.received, self.intervened
        metrics = {"replay/online": len(self.online), "replay/demo": len(self.demo),
                   "replay/received": received, "replay/intervened_total": intervened}
        new_received = received - self._logged_counts[0]
        if new_received > 0:
            metrics["replay/intervention_rate"] = (intervened - self._logged_counts[1]) / new_received
        self._logged_counts = (received, intervened)
        return metrics

    def _on_stats(self, actor_id: str, stats: dict[str, Any]) -> None:
        with self._lock:
            self.writer.write(self.step, {k: v for k, v in stats.items() if np.isscalar(v)},
                              prefix=f"actor/{actor_id}/")

    # ------------------------------------------------------------------ training

    def stop(self) -> None:
        self._stop.set()

    def _sample(self) -> dict:
        utd, batch = self.config.agent.utd_ratio, self.config.agent.batch_size
        fraction = self.config.learner.demo_fraction if len(self.demo) else 0.0
        return sample_mixed(self.online, self.demo, utd * batch, demo_fraction=fraction,
                            allow_empty_demo=True, num_minibatches=utd)

    def run(self) -> dict[str, Any]:
        c = self.config.learner
        self.server.start()
        self.server.publish_params(self.step, policy_params_numpy(self.agent))
        print(f"[learner] serving on ports {self.config.transport.data_port}/{self.config.transport.param_port}; "
              f"waiting for {c.training_starts} transitions", flush=True)
        while len(self.online) < c.training_starts and not self._stop.is_set():
            time.sleep(0.05)
        start_step, start_received, start_time = self.step, self.received, time.monotonic()
        timer = {"update_s": 0.0, "wait_s": 0.0}
        out_of_time = lambda: c.max_seconds > 0 and time.monotonic() - start_time > c.max_seconds  # noqa: E731
        with Prefetcher(self._sample, depth=2) as batches:
            while self.step < c.max_steps and not self._stop.is_set() and not out_of_time():
                t0 = time.perf_counter()
                if c.max_updates_per_transition > 0:  # couple the update rate to the data rate
                    allowed = lambda: c.max_updates_per_transition * (self.received - start_received + c.training_starts)  # noqa: E731
                    while self.step - start_step >= allowed() and not self._stop.is_set():
                        time.sleep(0.005)
                t1 = time.perf_counter()
                self.agent, metrics = self.agent.update(batches.get())
                self.step += 1
                timer["wait_s"] += t1 - t0
                timer["update_s"] += time.perf_counter() - t1
                if self.step % c.steps_per_publish == 0:
                    self.server.publish_params(self.step, policy_params_numpy(self.agent))
                if self.step % c.log_period == 0:
                    with self._lock:
                        self.writer.write(self.step, metrics, prefix="train/")
                        self.writer.write(self.step, {
                            **self.replay_metrics(),
                            "timer/update_ms": 1e3 * timer["update_s"] / c.log_period,
                            "timer/rate_limit_wait_ms": 1e3 * timer["wait_s"] / c.log_period,
                        })
                    timer = dict.fromkeys(timer, 0.0)
                if self.step % c.checkpoint_period == 0:
                    self.save()
        with self._lock:  # the final counts, however few steps there were
            self.writer.write(self.step, self.replay_metrics())
        self.save()
        self.server.publish_params(self.step, policy_params_numpy(self.agent))
        return {"step": self.step, "online": len(self.online), "demo": len(self.demo), "received": self.received}

    def close(self) -> None:
        self.server.close()
        self.checkpoints.close()
        self.writer.close()
