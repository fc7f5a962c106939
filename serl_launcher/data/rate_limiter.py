"""The one rate limiter between data collection and training: a samples-per-insert ratio.

In the spirit of Reverb's ``SampleToInsertRatio``: with ``spi`` = `samples_per_insert`, a learner
step that samples ``S`` transitions (batch_size x utd_ratio) may run while

    samples + S <= spi * (inserts - min_size + tolerance)

and collectors may add transitions while

    inserts < min_size + tolerance + samples / spi        (the insert allowance is the gap)

where `inserts` counts every transition the online buffer ever received (restored ones
included) and `samples` is the learner's step times S. Both counts come from durable state (the
data store's recovered buffer and the restored checkpoint step), so a restart cannot unbalance
them: a learner restored from an older checkpoint is simply behind and trains until the ratio
lets the actors go on. With ``tolerance >= max(1, S / spi)`` the two conditions cannot both fail, so
neither side can wait on the other forever. ``spi = 0`` turns the limiter off (both always go).

Nothing here sleeps on the actors' side: the learner's transport turns :meth:`allowance` into
credits in its acknowledgements, and a simulated actor waits for credit (a real robot never
waits; it keeps going and its transitions queue).
"""

from __future__ import annotations

import math
import threading


class SampleToInsertRatio:
    """Thread-safe counts of inserts and samples, and the two conditions above."""

    def __init__(self, samples_per_insert: float, min_size: int, tolerance: int,
                 samples_per_step: int, inserts: int = 0, steps: int = 0):
        if samples_per_insert < 0 or min_size < 0 or tolerance < 0 or samples_per_step < 1:
            raise ValueError(
                f"rate limiter needs samples_per_insert >= 0, min_size >= 0, tolerance >= 0 and "
                f"samples_per_step >= 1 (got {samples_per_insert}, {min_size}, {tolerance}, "
                f"{samples_per_step})")
        if samples_per_insert > 0 and (tolerance < 1 or tolerance * samples_per_insert < samples_per_step):
            need = max(1, math.ceil(samples_per_step / samples_per_insert))
            raise ValueError(
                f"rate tolerance {tolerance} is smaller than one learner step's worth of inserts "
                f"({samples_per_step} samples per step / {samples_per_insert:g} samples per insert "
                f"= {need}): actors and learner could wait for each other; raise the tolerance to "
                f"at least {need} or the samples per insert")
        self.samples_per_insert = float(samples_per_insert)
        self.min_size, self.tolerance = int(min_size), int(tolerance)
        self.samples_per_step = int(samples_per_step)
        self._inserts, self._samples = int(inserts), int(steps) * self.samples_per_step
        self._cond = threading.Condition()

    @property
    def inserts(self) -> int:
        return self._inserts

    @property
    def samples(self) -> int:
        return self._samples

    def inserted(self, n: int = 1) -> None:
        with self._cond:
            self._inserts += n
            self._cond.notify_all()

    def stepped(self) -> None:
        """One learner step sampled `samples_per_step` transitions."""
        with self._cond:
            self._samples += self.samples_per_step

    def _can_sample(self) -> bool:
        if self._inserts < max(1, self.min_size):
            return False
        if self.samples_per_insert == 0:
            return True
        limit = self.samples_per_insert * (self._inserts - self.min_size + self.tolerance)
        return self._samples + self.samples_per_step <= limit

    def can_sample(self) -> bool:
        with self._cond:
            return self._can_sample()

    def wait_to_sample(self, timeout: float) -> bool:
        """Blocks until a learner step may run (True) or `timeout` s pass (False)."""
        with self._cond:
            return self._cond.wait_for(self._can_sample, timeout=max(0.0, timeout))

    def allowance(self) -> int | None:
        """How many more transitions collectors may insert now (None: no limit; 0: wait)."""
        with self._cond:
            if self.samples_per_insert == 0:
                return None
            allowed = self.min_size + self.tolerance + self._samples / self.samples_per_insert
            return max(0, math.floor(allowed) - self._inserts)
