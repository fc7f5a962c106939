"""Background prefetch: a thread keeps batches ready so the learner never waits on sampling.

Typical use::

    sampler = functools.partial(sample_mixed, online, demo, 256)
    with Prefetcher(sampler, depth=2, transform=jax.device_put) as batches:
        for step in range(n):
            agent, info = agent.update(next(batches))
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.05  # how often blocked calls look at the stop flag and the worker's health


class Prefetcher(Generic[T]):
    """Calls `sampler()` (then `transform`, e.g. ``jax.device_put``) on a daemon thread and keeps
    up to `depth` results queued.

    ``next(prefetcher)`` / :meth:`get` return results in production order. If the sampler or the
    transform raises, the batches made before it are delivered first, then the same exception is
    raised in the consumer (and again on every later call). :meth:`close` (or leaving the ``with``
    block) stops the thread.
    """

    def __init__(
        self,
        sampler: Callable[[], Any],
        depth: int = 2,
        transform: Callable[[Any], T] | None = None,
        name: str = "prefetch",
    ):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._sampler = sampler
        self._transform = transform
        self._queue: queue.Queue[T] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item = self._sampler()
                if self._transform is not None:
                    item = self._transform(item)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=_POLL_S)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:  # handed to the consumer, which decides what is fatal
            self._error = error

    def get(self, timeout: float | None = None) -> T:
        """The next batch; raises the worker's exception, RuntimeError once closed, TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._stop.is_set():
                raise RuntimeError("the prefetcher is closed")
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                pass
            if self._error is not None and self._queue.empty():
                raise self._error
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no batch within {timeout} s")

    def __next__(self) -> T:
        return self.get()

    def __iter__(self) -> Prefetcher[T]:
        return self

    @property
    def alive(self) -> bool:
        """Whether the worker thread is still running."""
        return self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker and drop queued batches. A sampler stuck in a call is left to finish
        on its own (the thread is a daemon)."""
        self._stop.set()
        self._drain()  # unblocks a worker waiting on a full queue
        self._thread.join(timeout)
        self._drain()  # frees what it put meanwhile (device memory, with a device_put transform)

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
