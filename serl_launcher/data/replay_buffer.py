"""Episode-aware replay buffer that stores every observation frame once, RLPD mixed sampling, and
chunked, checksummed saves.

Layout. The buffer is a ring of ``capacity`` rows. Row ``i`` holds one observation frame (every
observation key, images included) and, unless it is a chain's *first* row, the transition that
*ended* in that frame: its action, reward, mask, done, intervened (and grasp penalty). The
transition's ``observations`` are the frame of row ``i - 1``. A chain is a run of consecutive
env steps; its first row holds the reset (or segment-start) frame and is never sampled.

A transition starts a new chain when the previous one had ``dones=True``, or when its
observations are not exactly equal to the previous transition's next observations (a non
contiguous intervention segment, an episode that ended without ``dones``, reloaded dumps in the
wrong order). Frames are therefore never stitched across episodes or segments, which is what
corrupted images in the original (reference bugs B1 and B2).

Rows are numbered globally in insertion order (row ``g`` lives at ``g % capacity``). A row is
sampleable ("valid") when it is not a first row and row ``g - 1`` is still held; when the ring
wraps, the oldest held row loses its predecessor and stops being sampleable.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from serl_launcher.data.transitions import TransitionSpec

FORMAT = "serl_launcher.replay_buffer"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_TMP_PREFIX = ".tmp-"
_MAX_REJECTION_ROUNDS = 64

Batch = dict[str, Any]


class BufferFormatError(ValueError):
    """A saved buffer that cannot be restored; the message names the file and the problem."""


class BufferSpecError(BufferFormatError):
    """A saved buffer holds transitions of another shape (spaces, grasp penalty) than this one."""


class ReplayBuffer:
    """Ring buffer of transitions (see the module docstring for the layout).

    Capacity accounting: ``capacity`` counts rows, i.e. stored frames. Each chain (episode or
    intervention segment) spends one extra row on its first frame, and once the ring wraps the
    oldest row has lost its predecessor, so a full buffer holds about ``capacity - chains_held``
    sampleable transitions (~99% of capacity with 100-step episodes).
    ``len(buffer)`` is the number of sampleable transitions, ``rows`` the number of rows used.

    Memory (``nbytes``): ``capacity`` rows of (every observation key + the scalars), i.e. about
    one frame per transition, half of storing observations and next_observations apart. The
    arrays are zero-filled lazily by the OS, so resident memory grows as the buffer fills.

    Thread safety: insert, sample, save and restore take one lock, so a transport thread may
    insert while a prefetch thread samples.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        capacity: int,
        include_grasp_penalty: bool = False,
        seed: int | None = None,
    ):
        if capacity < 2:
            raise ValueError(
                f"capacity must be at least 2 (a first row and a transition), got {capacity}"
            )
        self.observation_space = observation_space
        self.action_space = action_space
        self.capacity = int(capacity)
        self.include_grasp_penalty = include_grasp_penalty
        self.spec = TransitionSpec.from_spaces(
            observation_space, action_space, include_grasp_penalty
        )
        n = self.capacity
        self._frames = {k: np.zeros((n, *s), d) for k, (s, d) in self.spec.observation.items()}
        self._fields = {
            "actions": np.zeros((n, *self.spec.action[0]), np.float32),
            "rewards": np.zeros(n, np.float32),
            "masks": np.zeros(n, np.float32),
            "dones": np.zeros(n, bool),
            "intervened": np.zeros(n, bool),
        }
        if include_grasp_penalty:
            self._fields["grasp_penalty"] = np.zeros(n, np.float32)
        self._first = np.zeros(n, bool)
        self._valid = np.zeros(n, bool)
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        # Saves are incremental into a directory whose manifest this buffer (or the save it was
        # restored from) wrote: global rows never change content within one lineage.
        self._uid = uuid.uuid4().hex
        self._parent: tuple[str, int] | None = None
        self._reset()

    def _reset(self) -> None:
        self._first[:] = False
        self._valid[:] = False
        self._rows_written = 0  # global count of rows ever written, first rows included
        self._size = 0  # rows currently held
        self._n_valid = 0
        self._inserted = 0  # transitions ever inserted
        self._chain_open = False  # the last row continues into the next insert if frames match

    # ------------------------------------------------------------------ sizes

    def __len__(self) -> int:
        """Number of sampleable transitions."""
        return self._n_valid

    @property
    def rows(self) -> int:
        """Rows in use (sampleable transitions + first rows + an orphaned oldest row)."""
        return self._size

    @property
    def num_inserted(self) -> int:
        """Transitions inserted over the buffer's life (restored buffers include saved history)."""
        return self._inserted

    @property
    def nbytes(self) -> int:
        """Bytes reserved by the storage arrays."""
        arrays = [*self._frames.values(), *self._fields.values(), self._first, self._valid]
        return sum(a.nbytes for a in arrays)

    def mark(self) -> tuple[int, int]:
        """(rows written, transitions inserted) now: a point a later :meth:`save` can stop at, so
        that a snapshot matches exactly what was inserted up to some moment."""
        with self._lock:
            return self._rows_written, self._inserted

    def seed(self, seed: int | None) -> None:
        """Re-seed the sampling RNG."""
        self._rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ insert

    def insert(self, transition: Mapping[str, Any], checked: bool = False) -> None:
        """Insert one transition (see :mod:`serl_launcher.data.transitions` for the keys).

        Raises ValueError naming the key when a shape, dtype or key does not match the spaces.
        ``checked=True``: `transition` is what ``self.spec.check`` returned (not checked again).
        """
        checked = transition if checked else self.spec.check(transition)
        with self._lock:
            self._insert_checked(checked)

    def insert_many(self, transitions: Iterable[Mapping[str, Any]]) -> int:
        """Insert transitions in order, all checked before any is inserted; returns the count."""
        checked = []
        for i, t in enumerate(transitions):
            try:
                checked.append(self.spec.check(t))
            except ValueError as error:
                raise ValueError(f"transition {i}: {error}") from None
        with self._lock:
            for t in checked:
                self._insert_checked(t)
        return len(checked)

    def _insert_checked(self, t: Mapping[str, Any]) -> None:
        prev = (self._rows_written - 1) % self.capacity
        continues = self._chain_open and all(
            np.array_equal(self._frames[k][prev], v) for k, v in t["observations"].items()
        )
        if not continues:
            self._write_row(t["observations"], None)
        self._write_row(t["next_observations"], t)
        self._chain_open = not t["dones"]
        self._inserted += 1

    def _write_row(self, frame: Mapping[str, np.ndarray], t: Mapping[str, Any] | None) -> None:
        """Write one row; `t` None makes it a first row (frame only, never sampled)."""
        p = self._rows_written % self.capacity
        self._n_valid -= int(self._valid[p])
        for k, v in frame.items():
            self._frames[k][p] = v
        for k, column in self._fields.items():
            column[p] = 0 if t is None else t[k]
        self._first[p] = t is None
        self._valid[p] = t is not None
        self._n_valid += int(t is not None)
        self._rows_written += 1
        if self._size < self.capacity:
            self._size += 1
        else:
            # p was the oldest row; the next one just lost the frame its observations point to.
            q = (p + 1) % self.capacity
            self._n_valid -= int(self._valid[q])
            self._valid[q] = False

    # ------------------------------------------------------------------ sample

    def sample(self, batch_size: int) -> Batch:
        """`batch_size` transitions drawn uniformly (with replacement) among sampleable rows.

        Returns {observations: {key: (B, *shape)}, next_observations: {...}, actions: (B, A),
        rewards, masks: (B,) float32, dones, intervened: (B,) bool[, grasp_penalty: (B,)]}.
        """
        batch = self._empty_batch(batch_size)
        self._sample_into(batch, 0, batch_size)
        return batch

    def transitions(self, intervened_only: bool = False) -> list[dict[str, Any]]:
        """Every sampleable transition, oldest first, as transition dicts (copies); with
        `intervened_only`, the intervention ones (what HG-DAgger adds to the demos)."""
        with self._lock:
            oldest = self._rows_written - self._size
            rows = (oldest + np.arange(self._size)) % self.capacity
            rows = rows[self._valid[rows]]
            if intervened_only:
                rows = rows[self._fields["intervened"][rows]]
            prev = (rows - 1) % self.capacity
            observations = {k: f[prev] for k, f in self._frames.items()}
            next_observations = {k: f[rows] for k, f in self._frames.items()}
            fields = {k: c[rows] for k, c in self._fields.items()}
        return [{"observations": {k: v[i] for k, v in observations.items()},
                 "next_observations": {k: v[i] for k, v in next_observations.items()},
                 **{k: v[i] for k, v in fields.items()}} for i in range(len(rows))]

    def _empty_batch(self, n: int) -> Batch:
        batch: Batch = {
            name: {k: np.empty((n, *f.shape[1:]), f.dtype) for k, f in self._frames.items()}
            for name in ("observations", "next_observations")
        }
        batch.update({k: np.empty((n, *c.shape[1:]), c.dtype) for k, c in self._fields.items()})
        return batch

    def _sample_into(self, batch: Batch, start: int, n: int) -> None:
        """Fill rows start:start+n of every array in `batch` (gathering straight into the output
        spares a concatenation copy of image batches in :func:`sample_mixed`)."""
        if n == 0:
            return
        rows = slice(start, start + n)
        with self._lock:
            if self._n_valid == 0:
                raise ValueError("cannot sample: the buffer holds no sampleable transitions")
            idx = self._draw(n)
            prev = (idx - 1) % self.capacity
            for k, f in self._frames.items():
                # mode="clip": indices are in range, and "raise" would buffer the copy.
                np.take(f, prev, axis=0, out=batch["observations"][k][rows], mode="clip")
                np.take(f, idx, axis=0, out=batch["next_observations"][k][rows], mode="clip")
            for k, column in self._fields.items():
                np.take(column, idx, axis=0, out=batch[k][rows], mode="clip")

    def _draw(self, n: int) -> np.ndarray:
        # Vectorised rejection sampling over held rows: exactly uniform over valid rows, and at
        # least about half of held rows are valid, so a couple of rounds suffice.
        oldest = self._rows_written - self._size
        idx = (oldest + self._rng.integers(0, self._size, n)) % self.capacity
        for _ in range(_MAX_REJECTION_ROUNDS):
            bad = ~self._valid[idx]
            n_bad = int(bad.sum())
            if n_bad == 0:
                return idx
            idx[bad] = (oldest + self._rng.integers(0, self._size, n_bad)) % self.capacity
        return self._rng.choice(np.flatnonzero(self._valid), n)

    # ------------------------------------------------------------------ save / load

    def _row_arrays(self) -> dict[str, np.ndarray]:
        """Per-row storage arrays under their chunk-file names."""
        arrays = {f"obs.{k}": f for k, f in self._frames.items()}
        return {**arrays, **self._fields, "first": self._first}

    def save(
        self,
        directory: str | os.PathLike,
        chunk_bytes: int = 64 << 20,
        upto: tuple[int, int] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Path:
        """Write the held rows to `directory` as ``chunk-*.npz`` files plus ``manifest.json``.

        Each chunk holds a contiguous range of global rows (at most ~`chunk_bytes`). Saving again
        into a directory this buffer (or the save it was restored from) wrote only adds the new
        rows and drops chunks the ring has overwritten. Chunks are written and fsynced before the
        manifest is atomically replaced, so a crash mid-save leaves the previous save loadable.
        One writer per directory. Safe while other threads insert. Returns the manifest path.

        `upto`, a :meth:`mark`, saves the buffer as it was at that mark (rows inserted since are
        left out); `meta` (JSON-able) is stored in the manifest and returned by :meth:`restore`.
        """
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        with self._save_lock:
            for stale in root.glob(f"{_TMP_PREFIX}*"):  # left by a crashed save
                stale.unlink(missing_ok=True)
            old = _try_read_manifest(root)
            with self._lock:
                end, inserted = upto if upto is not None else (self._rows_written, self._inserted)
                if end > self._rows_written:
                    raise ValueError(f"mark {upto} is ahead of the buffer ({self._rows_written} rows)")
                first_row = max(self._rows_written - self._size, end - self.capacity)
            chunks: list[dict[str, Any]] = []
            start = first_row
            if old is not None and self._continues(old, root, end):
                chunks = [c for c in old["chunks"] if c["end"] > first_row]
                start = max(old["rows_written"], first_row)
            arrays = self._row_arrays()
            row_bytes = sum(a[0].nbytes for a in arrays.values())
            step = max(1, chunk_bytes // row_bytes)
            while start < end:
                stop = min(start + step, end)
                with self._lock:
                    held_from = self._rows_written - self._size
                    if start < held_from:  # overwritten while saving: keep the chunks contiguous
                        chunks, start, first_row = [], held_from, held_from
                        continue
                    rows = np.arange(start, stop) % self.capacity
                    data = {k: a[rows] for k, a in arrays.items()}
                chunks.append(self._write_chunk(root, start, stop, data))
                start = stop
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "uid": self._uid,
                "spec": self.spec.to_json(),
                "capacity": self.capacity,
                "rows_written": end,
                "first_row": max(first_row, chunks[0]["start"]) if chunks else end,
                "transitions_inserted": inserted,
                "chunks": chunks,
                "meta": meta or {},
            }
            _atomic_write(root / MANIFEST, json.dumps(manifest, indent=1).encode())
            kept = {c["file"] for c in chunks}
            # Chunks the previous manifest listed and the ring has passed, and any a crashed
            # save wrote but never listed: no manifest refers to them now.
            for stale in root.glob("chunk-*.npz"):
                if stale.name not in kept:
                    stale.unlink(missing_ok=True)
        return root / MANIFEST

    def _continues(self, old: dict[str, Any], root: Path, end: int) -> bool:
        """Whether `old` (the manifest in `root`) is an earlier save of this buffer's rows."""
        ours = old.get("uid") == self._uid or self._parent == (
            old.get("uid"),
            old.get("rows_written"),
        )
        return (
            ours
            and old.get("spec") == self.spec.to_json()
            and old["rows_written"] <= end
            and all((root / c["file"]).is_file() for c in old["chunks"])
        )

    def _write_chunk(
        self, root: Path, start: int, stop: int, data: dict[str, np.ndarray]
    ) -> dict[str, Any]:
        buf = io.BytesIO()
        np.savez(buf, **data)
        payload = buf.getvalue()
        name = f"chunk-{self._uid[:8]}-{start:012d}-{stop:012d}.npz"
        _atomic_write(root / name, payload)
        sha = hashlib.sha256(payload).hexdigest()
        return {"file": name, "start": start, "end": stop, "bytes": len(payload), "sha256": sha}

    def restore(self, directory: str | os.PathLike, salvage: bool = False) -> dict[str, Any]:
        """Replace this buffer's contents with a save made by :meth:`save`.

        The last ``capacity`` held rows are restored with their episode structure; sampling
        afterwards draws from exactly the saved transitions. Raises BufferFormatError naming the
        file when the manifest is unreadable, its spaces differ from this buffer's, or a chunk is
        missing, corrupt or fails its checksum; the buffer is then left empty.

        With ``salvage=True`` a missing, corrupt or out-of-place chunk is reported instead: the
        rows after the last damaged chunk are restored (rows must stay contiguous) and the rest
        counted as lost. Returns ``{"meta": <the save's meta>, "rows": rows restored,
        "lost_rows": rows the save held that could not be restored, "problems": [messages]}``.
        """
        root = Path(directory)
        manifest = _read_manifest(root)
        mpath = root / MANIFEST
        problems = _spec_differences(manifest["spec"], self.spec.to_json())
        if problems:
            raise BufferSpecError(
                f"{mpath}: saved buffer does not match this buffer: " + "; ".join(problems)
            )
        chunks, end = manifest["chunks"], manifest["rows_written"]
        first_row = max(manifest["first_row"], end - self.capacity)
        found: list[str] = []

        def damaged(message: str) -> None:
            if not salvage:
                raise BufferFormatError(message)
            found.append(message)

        needed = [c for c in chunks if c["end"] > first_row]
        covered = (needed[0]["start"], needed[-1]["end"]) if needed else (end, end)
        if covered[0] > first_row or covered[1] != end:
            damaged(f"{mpath}: chunks cover rows {covered}, the manifest needs {first_row} to {end}")
            first_row, end = max(first_row, covered[0]), min(end, covered[1])
        arrays = self._row_arrays()
        keep_from = first_row  # rows before this are not restored (a damaged chunk came later)
        with self._lock:
            self._reset()
            try:
                previous_end = None
                for c in needed:
                    if previous_end is not None and c["start"] != previous_end:
                        damaged(f"{mpath}: chunk {c['file']} starts at row {c['start']}, "
                                f"the one before it ends at {previous_end} (not contiguous)")
                        keep_from = c["start"]
                    previous_end = c["end"]
                    try:
                        data = _read_chunk(root, c, arrays)
                    except BufferFormatError as error:
                        damaged(str(error))
                        keep_from = c["end"]
                        continue
                    lo = max(c["start"], first_row)
                    rows = np.arange(lo, c["end"]) % self.capacity
                    for k, a in arrays.items():
                        a[rows] = data[k][lo - c["start"] :]
            except BaseException:
                self._reset()
                raise
            keep_from = min(max(keep_from, first_row), end)
            held = np.arange(keep_from, end) % self.capacity
            self._valid[held] = ~self._first[held]
            if len(held):
                self._valid[held[0]] = False  # its predecessor is not held
                last = held[-1]
                self._chain_open = not (self._first[last] or self._fields["dones"][last])
            self._rows_written, self._size = end, end - keep_from
            self._n_valid = int(self._valid.sum())
            self._inserted = manifest["transitions_inserted"]
        intact = not found
        self._uid = uuid.uuid4().hex
        self._parent = (manifest["uid"], manifest["rows_written"]) if intact else None
        saved_rows = manifest["rows_written"] - max(manifest["first_row"],
                                                    manifest["rows_written"] - self.capacity)
        return {"meta": manifest.get("meta", {}), "rows": self._size,
                "lost_rows": saved_rows - self._size, "problems": found}

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        capacity: int | None = None,
        include_grasp_penalty: bool | None = None,
        seed: int | None = None,
    ) -> ReplayBuffer:
        """A new buffer restored from `directory` (capacity and grasp penalty default to saved)."""
        manifest = _read_manifest(Path(directory))
        if include_grasp_penalty is None:
            include_grasp_penalty = bool(manifest["spec"].get("grasp_penalty"))
        buffer = cls(
            observation_space,
            action_space,
            capacity or manifest["capacity"],
            include_grasp_penalty,
            seed,
        )
        buffer.restore(directory)
        return buffer


# ---------------------------------------------------------------------- mixed sampling


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """Concatenate batches (nested dicts of arrays) along axis 0; keys must match."""
    keys = batches[0].keys()
    for b in batches[1:]:
        if b.keys() != keys:
            raise ValueError(
                f"cannot concatenate batches with keys {sorted(keys)} and {sorted(b.keys())}"
            )
    return {
        k: concat_batches([b[k] for b in batches])
        if isinstance(batches[0][k], Mapping)
        else np.concatenate([b[k] for b in batches])
        for k in keys
    }


def sample_mixed(
    online: ReplayBuffer,
    demo: ReplayBuffer,
    batch_size: int,
    demo_fraction: float = 0.5,
    allow_empty_demo: bool = False,
    num_minibatches: int = 1,
) -> Batch:
    """RLPD batch of `batch_size` rows laid out as `num_minibatches` consecutive blocks, each with
    ``m - round(m * demo_fraction)`` online rows first, then its demo rows (m = rows per block).

    Use ``num_minibatches=utd_ratio`` for a learner step that reshapes the batch into
    (utd_ratio, m, ...): every minibatch then has the same 50/50 mix, instead of the first
    minibatches being all online and the last all demo.

    An empty demo buffer raises ValueError (RLPD without prior data is a different algorithm,
    so it should not happen silently); with ``allow_empty_demo=True`` the whole batch is online.
    """
    if not 0.0 <= demo_fraction <= 1.0:
        raise ValueError(f"demo_fraction must be in [0, 1], got {demo_fraction}")
    if num_minibatches < 1 or batch_size % num_minibatches:
        raise ValueError(f"batch_size {batch_size} is not divisible into {num_minibatches} minibatches")
    if online.spec != demo.spec:
        raise ValueError(f"online and demo buffers differ: {online.spec} vs {demo.spec}")
    rows = batch_size // num_minibatches
    n_demo = int(round(rows * demo_fraction))
    if n_demo and len(demo) == 0:
        if not allow_empty_demo:
            raise ValueError(
                "the demo buffer is empty: load demos first, or pass allow_empty_demo=True "
                "to sample the whole batch from the online buffer"
            )
        n_demo = 0
    batch = online._empty_batch(batch_size)
    for block in range(num_minibatches):
        start = block * rows
        online._sample_into(batch, start, rows - n_demo)
        demo._sample_into(batch, start + rows - n_demo, n_demo)
    return batch


# ---------------------------------------------------------------------- files


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _try_read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        return _read_manifest(root)
    except (BufferFormatError, FileNotFoundError):
        return None


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no buffer manifest (not a saved buffer directory?)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BufferFormatError(f"{path}: unreadable manifest: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BufferFormatError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BufferFormatError(
            f"{path}: format_version {manifest.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    fields = (
        "uid",
        "spec",
        "capacity",
        "rows_written",
        "first_row",
        "transitions_inserted",
        "chunks",
    )
    missing = [k for k in fields if k not in manifest]
    if missing:
        raise BufferFormatError(f"{path}: manifest lacks {missing}")
    for c in manifest["chunks"]:
        if not isinstance(c, dict) or not {"file", "start", "end", "sha256"} <= c.keys():
            raise BufferFormatError(f"{path}: malformed chunk entry {c!r}")
    return manifest


def _read_chunk(
    root: Path, entry: dict[str, Any], arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    path = root / entry["file"]
    if not path.is_file():
        raise BufferFormatError(f"{path}: chunk file is missing (listed in {root / MANIFEST})")
    payload = path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != entry["sha256"]:
        raise BufferFormatError(
            f"{path}: checksum mismatch (corrupt or partially written): sha256 {digest}, "
            f"manifest says {entry['sha256']}"
        )
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except Exception as error:  # zipfile and numpy raise several unrelated types
        raise BufferFormatError(f"{path}: not a readable .npz chunk: {error}") from error
    n = entry["end"] - entry["start"]
    for k, a in arrays.items():
        got = data.get(k)
        if got is None or got.shape != (n, *a.shape[1:]) or got.dtype != a.dtype:
            found = "missing" if got is None else f"{got.shape} {got.dtype}"
            raise BufferFormatError(
                f"{path}: array {k!r} is {found}, expected {(n, *a.shape[1:])} {a.dtype}"
            )
    return data


def _spec_differences(saved: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    problems = []
    saved_obs, our_obs = saved.get("observation", {}), ours["observation"]
    for key in sorted(set(saved_obs) | set(our_obs)):
        if saved_obs.get(key) != our_obs.get(key):
            problems.append(
                f"observation {key!r} saved as {saved_obs.get(key)}, buffer has {our_obs.get(key)}"
            )
    for key in ("action", "grasp_penalty"):
        if saved.get(key) != ours[key]:
            problems.append(f"{key} saved as {saved.get(key)}, buffer has {ours[key]}")
    return problems
