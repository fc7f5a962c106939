"""The learner role: a durable data store fed by actors over the transport, RLPD updates paced by
one samples-per-insert rate limiter, parameter publishing, checkpoints, and automatic resume.

Run folder layout (``run_dir``):
    config.json            the resolved experiment config (secrets redacted)
    checkpoints/<step>/    orbax training state (agent, optimizer states, RNG) + meta
    buffers/               the data store (serl_launcher.data.store): online and demo buffer
                           snapshots, the log of every acknowledged message since, store.json
    policy/                the latest exported policy (loads from the folder alone)
    metrics.jsonl          train/, replay/, transport/, timer/ and actor/ (stats sent by actors)
                           records; replay/intervention_rate is the share of intervened
                           transitions among those received since the previous record (absent
                           when none arrived)

Every transition goes to the online buffer; intervention transitions also go to the demo buffer,
which starts with the demo files. A transition is acknowledged to its actor only once it is in
the store's log on disk, so a learner killed at any moment restarts (without asking anything)
with every acknowledged transition exactly once, from the newest checkpoint.

Rate control (serl_launcher.data.rate_limiter): a learner step samples batch_size x utd_ratio
transitions, and ``learner.samples_per_insert`` is how many samples each online transition buys
(e.g. 256 with batch 128 and UTD 2: one learner step per env step; 0: no limit). The learner
waits when it is ahead; actors that honour backpressure (``actor.backpressure``, simulators) wait
when it is behind, through credits in the transport's acknowledgements.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from ml_collections import config_dict

from serl_launcher.agents.sac import SACAgent
from serl_launcher.conventions import StateLayout
from serl_launcher.data import DemoReading, Prefetcher, sample_mixed
from serl_launcher.data.rate_limiter import SampleToInsertRatio
from serl_launcher.data.store import DataStore
from serl_launcher.evaluator import TargetWatch
from serl_launcher.utils.checkpoints import (
    CheckpointManager,
    continue_from,
    export_policy,
    warm_start,
)
from serl_launcher.utils.faults import fault_point
from serl_launcher.utils.metrics import MetricsWriter, redact_secrets
from serl_launcher.utils.sharding import (
    CompletionClock,
    broadcast_from_first,
    global_mesh,
    learner_mesh,
    local_copy,
    replicate,
    shard_batch,
    shard_global_batch,
    tell_followers,
    wait_for_first,
)

_STATS_QUEUE = 1000  # actor stats waiting for the training loop to write them


def policy_params_numpy(agent: SACAgent) -> dict:
    """The parameters an actor needs, as nested dicts of numpy arrays (what is published)."""
    return jax.tree.map(np.asarray, agent.policy().params)


def follow(config: config_dict.ConfigDict, observation_space, action_space) -> int:
    """A learner process other than the first (learner.distributed): no data store, transport or
    files; it takes the first process's agent, then each batch it broadcasts, and runs the same
    update on its share of the devices until told to stop. Returns the steps it trained."""
    import signal

    from serl_launcher.data import ReplayBuffer

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C for the group: process 0 says when to stop
    agent_config = config.agent.copy_and_resolve_references()
    with agent_config.unlocked():  # the weights come from process 0's agent, not from a file
        agent_config.encoder.pretrained_path = ""
        agent_config.encoder.allow_random_frozen = True
    agent = SACAgent.create(jax.random.PRNGKey(config.seed), observation_space, action_space, agent_config)
    mesh = global_mesh()
    word = wait_for_first(0)
    if word != f"agent:{distributed_fingerprint(config)}":
        raise RuntimeError(f"learner process {jax.process_index()}'s agent and batch settings differ from process 0's: "
                           "start every learner process with the same experiment and overrides")
    agent = replicate(broadcast_from_first(agent), mesh)
    utd, size = config.agent.utd_ratio, config.agent.utd_ratio * config.agent.batch_size
    shapes = ReplayBuffer(observation_space, action_space, 2, config.agent.learned_gripper)._empty_batch(size)
    steps, round_ = 0, 1
    print(f"[learner {jax.process_index()}] following process 0 on {mesh.devices.size} device(s)", flush=True)
    while wait_for_first(round_) == "step":
        round_ += 1
        batch, step = broadcast_from_first((shapes, np.zeros((), np.int64)))
        agent, _ = agent.update_for_step(shard_global_batch(batch, mesh, utd), int(step))
        steps += 1
    return steps


def distributed_fingerprint(config: config_dict.ConfigDict) -> str:
    """What every learner process must agree on: the agent and the batch (their hash)."""
    import hashlib

    settings = {"agent": config.agent.to_dict(), "seed": config.seed}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_rate_limiter(config: config_dict.ConfigDict, inserts: int = 0, steps: int = 0) -> SampleToInsertRatio:
    """The learner's rate limiter from the experiment config (ValueError for settings that could
    make actors and learner wait for each other)."""
    c, a = config.learner, config.agent
    return SampleToInsertRatio(c.samples_per_insert, c.training_starts, c.rate_tolerance,
                               a.batch_size * a.utd_ratio, inserts=inserts, steps=steps)


class _CountingSink:
    """The data store as the transport's sink; tells the rate limiter about each insert once
    it is durable (at commit)."""

    def __init__(self, store: DataStore, limiter: SampleToInsertRatio):
        self.store, self.limiter = store, limiter
        self._lock = threading.Lock()  # deliver and commit run on two transport threads
        self._uncommitted = 0
        self.delivered = store.delivered

    def deliver(self, actor_id: str, session: str, start: int, transitions: list) -> list:
        reasons = self.store.deliver(actor_id, session, start, transitions)
        with self._lock:
            self._uncommitted += sum(r is None for r in reasons)
        return reasons

    def commit(self) -> None:
        with self._lock:
            n, self._uncommitted = self._uncommitted, 0
        self.store.commit()
        self.limiter.inserted(n)


class Learner:
    """Holds the learner's state; :meth:`run` trains until `max_steps` or :meth:`stop`.

    Args:
        config: the experiment config.
        observation_space, action_space: the env's spaces (the learner never builds hardware).
        run_dir: the run folder (created).
        make_server: ``(sink, on_stats, allowance) -> server`` with ``start``,
            ``publish_params``, ``notify_credit``, ``stats``, ``error`` and ``close`` (a
            transport LearnerServer or a LocalHub server).
        demo_paths: demo files to load when the run's data store is created.
        actor_from: an exported policy folder a fresh run's agent starts from
            (``agent.init_actor_from``, resolved; ignored when resuming).
        agent_from: another run's folder whose latest checkpoint a fresh run's whole agent
            starts from (``agent.init_from``, resolved; ignored when resuming).
        state_layout: the env's state fields (demo files and a resumed store are checked against
            them; None: not checked).
    """

    def __init__(self, config: config_dict.ConfigDict, observation_space, action_space, run_dir: Path,
                 make_server: Callable, demo_paths: list[Path] = (), actor_from: Path | None = None,
                 agent_from: Path | None = None, state_layout: StateLayout | None = None):
        self.config, self.run_dir = config, Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.observation_space, self.action_space = observation_space, action_space
        c = config.learner
        make_rate_limiter(config)  # a bad rate setting fails before anything is loaded
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", max_to_keep=3)
        self.store = DataStore(self.run_dir / "buffers", observation_space, action_space, c.replay_capacity,
                               seed=config.seed, include_grasp_penalty=config.agent.learned_gripper,
                               sync=c.log_sync, demo_paths=demo_paths,
                               demo_reading=DemoReading.from_config(config),
                               resuming=self.checkpoints.latest_step() is not None, salvage=c.salvage,
                               state_layout=state_layout)
        self.online, self.demo = self.store.online, self.store.demo
        print(f"[learner] {self.store.describe_recovery()}", flush=True)
        self.agent = SACAgent.create(jax.random.PRNGKey(config.seed), observation_space, action_space, config.agent)
        self.step = 0
        if self.checkpoints.latest_step() is not None:
            self.agent, meta = self.checkpoints.restore(self.agent, observation_space=self.observation_space)
            self.step = int(meta["step"])
            print(f"[learner] resumed from step {self.step} "
                  f"({len(self.online)} online, {len(self.demo)} demo transitions)", flush=True)
        elif agent_from is not None:
            self.agent = continue_from(self.agent, agent_from, observation_space, action_space)
        elif actor_from is not None:
            self.agent = warm_start(self.agent, actor_from)
        # The learner's devices (learner.devices): the agent on each, every batch split over them.
        self.distributed = jax.process_count() > 1  # learner.distributed: this is process 0 of several
        self._round = 0  # rounds of process 0's word to the followers (learner.distributed)
        if self.distributed:
            self.mesh = global_mesh()
            tell_followers(0, f"agent:{distributed_fingerprint(config)}")
            self.agent = broadcast_from_first(self.agent)  # the followers start from this agent
            self._round = 1
        else:
            self.mesh = learner_mesh(c.devices, config.agent.batch_size)
        self.agent = replicate(self.agent, self.mesh)
        print(f"[learner] training on {self.mesh.devices.size} device(s): "
              f"{', '.join(str(d) for d in self.mesh.devices.flat)}", flush=True)
        self.limiter = make_rate_limiter(config, inserts=self.online.num_inserted, steps=self.step)
        public = redact_secrets(config.to_dict())
        (self.run_dir / "config.json").write_text(json.dumps(public, indent=2, default=list) + "\n")
        self.writer = MetricsWriter.for_run(self.run_dir / "metrics.jsonl", config, self.run_dir, "learner")
        self._logged_counts = (0, 0)  # (received, intervened) at the previous replay/ record
        self._actor_stats: deque[tuple[str, dict]] = deque(maxlen=_STATS_QUEUE)
        self.actor_stats_dropped = 0
        self._stop = threading.Event()
        self.server = make_server(_CountingSink(self.store, self.limiter), self._on_stats,
                                  self.limiter.allowance)
        # Always watched: an evaluator given eval.until_success stops the run even if this role was not.
        self._target = TargetWatch(self.run_dir, True, epoch=lambda: self.server.epoch)

    # ------------------------------------------------------------------ state on disk

    def save(self) -> None:
        """Checkpoint, buffer snapshot (which also trims the store's log) and policy export."""
        agent = local_copy(self.agent)  # this process's copy where the agent spans processes
        self.checkpoints.save(self.step, agent, self.observation_space, self.action_space)
        fault_point("learner.checkpoint")  # the checkpoint is being written in the background
        self.store.snapshot()
        export_policy(self.run_dir / "policy", agent, self.observation_space, self.action_space, self.step)
        self.checkpoints.wait()

    # ------------------------------------------------------------------ transport callbacks

    def _on_stats(self, actor_id: str, stats: dict[str, Any]) -> None:
        # On the transport's thread: only queue (the training loop writes), so stats never
        # wait on the training loop's file and cannot block delivery.
        if len(self._actor_stats) == self._actor_stats.maxlen:
            self.actor_stats_dropped += 1
        self._actor_stats.append((actor_id, stats))

    def _write_actor_stats(self) -> None:
        while self._actor_stats:
            actor_id, stats = self._actor_stats.popleft()
            self.writer.write(self.step, stats, prefix=f"actor/{actor_id}/")

    def replay_metrics(self) -> dict[str, float]:
        """The replay/ and transport/ record: buffer sizes, totals received, rejections, and the
        intervention rate since the previous call (left out when nothing arrived since, as 0/0
        is not a rate)."""
        received, intervened, rejected = self.store.counts()
        metrics = {"replay/online": len(self.online), "replay/demo": len(self.demo),
                   "replay/received": received, "replay/intervened_total": intervened,
                   "replay/inserts": self.limiter.inserts, "replay/log_bytes": self.store.log_bytes,
                   **{f"replay/rejected/{reason.replace(' ', '_')}": n for reason, n in rejected.items()}}
        new_received = received - self._logged_counts[0]
        if new_received > 0:
            metrics["replay/intervention_rate"] = (intervened - self._logged_counts[1]) / new_received
        self._logged_counts = (received, intervened)
        stats = self.server.stats
        metrics.update({f"transport/{k}": v for k, v in stats.items() if not isinstance(v, dict)})
        metrics.update({f"transport/rejected/{k}": v for k, v in stats["rejected"].items()})
        metrics["transport/actor_stats_dropped"] = self.actor_stats_dropped
        return metrics

    # ------------------------------------------------------------------ training

    def stop(self) -> None:
        self._stop.set()

    def _publish(self) -> None:
        self.server.publish_params(self.step, policy_params_numpy(local_copy(self.agent)),
                                   env_steps=self.online.num_inserted)

    def _should_stop(self) -> bool:
        """A stop was asked for, or the run's evaluator saw the target reached."""
        if not self._stop.is_set() and self._target() is not None:
            print(f"[learner] the evaluator reached the target ({json.dumps(self._target())}); stopping",
                  flush=True)
            self._stop.set()
        return self._stop.is_set()

    def _check_health(self) -> None:
        """Stops the run, loudly, when received data can no longer be made durable."""
        error = getattr(self.server, "error", None) or self.store.broken
        if error is not None:
            raise RuntimeError(
                f"the learner cannot store what actors send ({error!r}); it stops so that nothing "
                f"is acknowledged that is not on disk. Everything acknowledged is in "
                f"{self.run_dir / 'buffers'}; fix the cause (e.g. free disk space) and restart the "
                f"learner: it resumes") from error

    def _wait(self, ready: Callable[[], bool], timeout: float = 0.05) -> bool:
        """Waits until `ready()` (True) or a stop (False), writing actor stats meanwhile."""
        while not ready():
            if self._should_stop():
                return False
            self._check_health()
            self._write_actor_stats()
            if self.store.log_bytes > self.config.learner.snapshot_log_bytes:
                self.store.snapshot()
            self.limiter.wait_to_sample(timeout)
        return True

    def _sample(self) -> dict:
        utd, batch = self.config.agent.utd_ratio, self.config.agent.batch_size
        fraction = self.config.learner.demo_fraction if len(self.demo) else 0.0
        return sample_mixed(self.online, self.demo, utd * batch, demo_fraction=fraction,
                            allow_empty_demo=True, num_minibatches=utd)

    def run(self) -> dict[str, Any]:
        c = self.config.learner
        self.server.start()
        self._publish()
        print(f"[learner] serving on {self.config.transport.bind_host} ports "
              f"{self.config.transport.data_port}/{self.config.transport.param_port}; "
              f"waiting for {c.training_starts} transitions", flush=True)
        self._wait(lambda: self.limiter.can_sample() and len(self.online) > 0)
        clock = CompletionClock()
        try:
            self._train(clock)
        finally:
            clock.close()
            if self.distributed:  # the followers stop, however this process ends the loop
                tell_followers(self._round, "stop")
        self._check_health()
        self._write_actor_stats()
        self.writer.write(self.step, self.replay_metrics())  # the final counts, however few steps
        self.save()
        self._publish()
        received = self.store.counts()[0]
        return {"step": self.step, "online": len(self.online), "demo": len(self.demo), "received": received,
                "inserted": self.online.num_inserted, "target_reached": self._target() is not None}

    def _train(self, clock: CompletionClock) -> None:
        """The training loop of :meth:`run`: until max_steps, a stop, or learner.max_seconds."""
        c = self.config.learner
        utd = self.config.agent.utd_ratio
        start_time = time.monotonic()
        timer = {"update_s": 0.0, "wait_s": 0.0, "data_wait_s": 0.0, "since": time.perf_counter()}
        out_of_time = lambda: c.max_seconds > 0 and time.monotonic() - start_time > c.max_seconds  # noqa: E731
        # Batches are sampled and put on the devices (split over the mesh) a step ahead; over several
        # processes they go to the others first (a collective, so on this thread, in step order).
        transform = None if self.distributed else (lambda b: shard_batch(b, self.mesh, utd))
        with Prefetcher(self._sample, depth=2, transform=transform) as batches:
            while self.step < c.max_steps and not self._should_stop() and not out_of_time():
                t0 = time.perf_counter()
                self._check_health()  # every step: a learner that never waits must notice too
                if self.store.log_bytes > c.snapshot_log_bytes:
                    self.store.snapshot()
                if not self._wait(self.limiter.can_sample):
                    break
                t1 = time.perf_counter()
                batch = batches.get()
                t2 = time.perf_counter()
                if self.distributed:
                    tell_followers(self._round, "step")
                    self._round += 1
                    # With the step: the followers' update_for_step needs it (critic warm-up).
                    batch, _ = broadcast_from_first((batch, np.asarray(self.step, np.int64)))
                    batch = shard_global_batch(batch, self.mesh, utd)
                self.agent, metrics = self.agent.update_for_step(batch, self.step)
                clock.watch(self.step, metrics)
                # The wait for this batch counts from when the previous update was done (the
                # devices idle since); while it still ran, waiting cost nothing.
                done = clock.finished(self.step - 1) if self.step > 0 else t1
                self.step += 1
                self.limiter.stepped()
                self.server.notify_credit()
                timer["wait_s"] += t1 - t0
                timer["data_wait_s"] += max(0.0, t2 - max(t1, done)) if done is not None else 0.0
                timer["update_s"] += time.perf_counter() - t2
                if self.step % c.steps_per_publish == 0:
                    self._publish()
                if self.step % c.log_period == 0:
                    self._write_actor_stats()
                    self.writer.write(self.step, metrics, prefix="train/")
                    elapsed = time.perf_counter() - timer["since"]
                    self.writer.write(self.step, {
                        **self.replay_metrics(),
                        "timer/update_ms": 1e3 * timer["update_s"] / c.log_period,
                        "timer/rate_limit_wait_ms": 1e3 * timer["wait_s"] / c.log_period,
                        # Time with the devices idle for want of a batch, and its share of the period.
                        "timer/data_wait_ms": 1e3 * timer["data_wait_s"] / c.log_period,
                        "timer/data_wait_share": timer["data_wait_s"] / max(elapsed, 1e-9),
                    })
                    timer = dict.fromkeys(timer, 0.0) | {"since": time.perf_counter()}
                if self.step % c.checkpoint_period == 0:
                    self.save()

    def close(self) -> None:
        self.server.close()
        self.store.close()
        self.checkpoints.close()
        self.writer.close()
