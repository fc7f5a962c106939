"""Data-parallel learner: one `Mesh` with a "data" axis, batch sharded, agent replicated.

XLA's SPMD partitioner turns the jitted update into per-device work on each batch shard plus
all-reduces of the gradients, so the result equals the single-device update up to float
reduction order. ``learner.devices`` picks the devices (:func:`learner_mesh`): ``"1"`` (the
default: the first local device), ``"N"`` (the first N) or ``"all"``. Test on CPU with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def parse_devices(spec: Any, available: int) -> int:
    """How many local devices ``learner.devices`` asks for: 1, N or "all"; ValueError otherwise."""
    text = str(spec).strip().lower()
    if text == "all":
        return available
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"learner.devices is 1, a number of devices or 'all', not {spec!r}") from None
    if count < 1:
        raise ValueError(f"learner.devices must be at least 1, got {spec!r}")
    if count > available:
        raise ValueError(f"learner.devices={count}, but JAX sees {available} local device(s): "
                         f"{[str(d) for d in jax.local_devices()]}")
    return count


def learner_mesh(spec: Any, batch_size: int) -> Mesh:
    """The mesh of the learner's devices; the batch must split evenly over them."""
    devices = jax.local_devices()
    count = parse_devices(spec, len(devices))
    if batch_size % count:
        raise ValueError(f"agent.batch_size {batch_size} does not split over {count} devices (learner.devices)")
    return make_mesh(devices[:count])


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Puts every leaf on every device of `mesh`."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def _minibatches(x: Any, mesh: Mesh, utd_ratio: int) -> np.ndarray:
    """A flat (utd * B, ...) array as (utd, B, ...), B divisible by the mesh's devices."""
    x = np.asarray(x)
    x = x.reshape(utd_ratio, x.shape[0] // utd_ratio, *x.shape[1:])
    if x.shape[1] % mesh.devices.size:
        raise ValueError(f"batch size {x.shape[1]} is not divisible by {mesh.devices.size} devices")
    return x


def shard_batch(batch: Any, mesh: Mesh, utd_ratio: int) -> Any:
    """Splits a flat (utd * B, ...) batch into (utd, B, ...) and shards the B axis over devices."""
    sharding = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
    return jax.tree.map(lambda x: jax.device_put(_minibatches(x, mesh, utd_ratio), sharding), batch)


# ----------------------------------------------------------------------------- several processes


def start_distributed(section) -> bool:
    """Joins JAX's own multi-process runtime when ``learner.distributed.num_processes`` > 1
    (coordinator "host:port", this process's process_id); on CPUs the collectives go through
    gloo. Must run before anything else touches JAX. Returns whether it is distributed."""
    count, index, coordinator = int(section.num_processes), int(section.process_id), str(section.coordinator)
    if count <= 1:
        return False
    if not coordinator or not 0 <= index < count:
        raise ValueError(f"learner.distributed needs a coordinator host:port and 0 <= process_id < num_processes, "
                         f"got {coordinator!r}, {index}, {count}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used only by the CPU backend
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=count, process_id=index)
    return True


def global_mesh() -> Mesh:
    """Every device of every process, process by process (each process's batch slice is contiguous)."""
    return make_mesh(sorted(jax.devices(), key=lambda d: (d.process_index, d.id)))


def local_copy(tree: Any) -> Any:
    """`tree` with each array spread over several processes replaced by this process's copy of
    it (numpy), so that it can be saved or published; other leaves are left as they are."""
    def local(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return x

    return jax.tree.map(local, tree)


def broadcast_from_first(tree: Any) -> Any:
    """Process 0's `tree` (numpy leaves) on every process; the others pass a tree of the same
    structure and shapes. A collective: every process calls it at the same point."""
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(tree)


def shard_global_batch(batch: Any, mesh: Mesh, utd_ratio: int) -> Any:
    """Like :func:`shard_batch` for a mesh spanning processes: every process holds the whole
    (utd * B, ...) batch and gives its devices their slices."""
    sharding = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))

    def put(x):
        x = _minibatches(x, mesh, utd_ratio)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, batch)


ROUND_TIMEOUT_MS = 7 * 24 * 3600 * 1000  # a follower waits for process 0 as long as a run may last


def _coordination():
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        raise RuntimeError("jax.distributed is not initialised (learner.distributed)")
    return client


def tell_followers(round_: int, message: str) -> None:
    """Process 0's word for round `round_` ("agent:<hash>", "step" or "stop"), through the
    coordination service: followers wait there, never inside a collective, so process 0 may take
    as long as it needs (loading demos, waiting for actors) before the next broadcast."""
    _coordination().key_value_set(f"serl/learner/round/{round_}", message)


def wait_for_first(round_: int) -> str:
    return _coordination().blocking_key_value_get(f"serl/learner/round/{round_}", ROUND_TIMEOUT_MS)


class CompletionClock:
    """When each update's outputs became ready, recorded by a thread that waits on them, so the
    learner can tell time it waited for a batch with the devices idle from time they were busy."""

    def __init__(self):
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue()
        self._done: dict[int, float] = {}
        self._thread = threading.Thread(target=self._run, name="completion-clock", daemon=True)
        self._thread.start()

    def watch(self, index: int, outputs: Any) -> None:
        self._queue.put((index, outputs))

    def finished(self, index: int) -> float | None:
        """perf_counter time at which update `index` was done (None: not yet, or not watched)."""
        return self._done.get(index)

    def _run(self) -> None:
        import time

        while True:
            item = self._queue.get()
            if item is None:
                return
            index, outputs = item
            try:
                jax.block_until_ready(outputs)
            except Exception:  # noqa: BLE001 - the training loop sees the same failure itself
                pass
            self._done[index] = time.perf_counter()
            self._done.pop(index - 8, None)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
