"""Data-parallel learner: one `Mesh` with a "data" axis, batch sharded, agent replicated.

XLA's SPMD partitioner turns the jitted update into per-device work on each batch shard plus
all-reduces of the gradients, so the result equals the single-device update up to float
reduction order. Test on CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``.
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


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Puts every leaf on every device of `mesh`."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(batch: Any, mesh: Mesh, utd_ratio: int) -> Any:
    """Splits a flat (utd * B, ...) batch into (utd, B, ...) and shards the B axis over devices."""
    n_dev = mesh.devices.size

    def put(x):
        x = np.asarray(x)
        x = x.reshape(utd_ratio, x.shape[0] // utd_ratio, *x.shape[1:])
        if x.shape[1] % n_dev:
            raise ValueError(f"batch size {x.shape[1]} is not divisible by {n_dev} devices")
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec(None, DATA_AXIS)))

    return jax.tree.map(put, batch)
