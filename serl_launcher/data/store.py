"""The learner's data store: replay buffers that survive kill -9 with nothing acknowledged lost.

A run folder's ``buffers/`` holds::

    store.json        the last complete snapshot: its log position (lsn), the delivery state
    online/ demo/     ReplayBuffer snapshots (chunks + manifest; the manifest's meta has its lsn)
    log/              TransitionLog segments: one record per accepted actor message

Write path (the transport's I/O thread): :meth:`DataStore.deliver` validates a message's
transitions as a whole (each one against the buffers' spec: shapes, dtypes, finite values),
appends one log record with the accepted ones, the rejected sequence numbers and the actor's
(session, sequence range), inserts the accepted ones into the buffers (intervened ones into the
demo buffer too) and advances the delivery state. :meth:`commit` makes the records durable by
the sync policy; the transport acknowledges only after it returns, so acknowledged means on
disk. A record holds each observation frame once: a transition whose observations equal the
previous one's next observations leaves them out.

Snapshots (:meth:`snapshot`, from the training loop) cut the log at an lsn L, save both buffers
as they were at L (incrementally: only new rows), write store.json, and delete the log segments
up to L. Each piece carries its own lsn, so a crash anywhere in a snapshot leaves a state that
recovery completes: restore both buffers, then replay every record after each piece's lsn.

Recovery (construction) reports what it restored and refuses to go on silently with less: a
missing or unreadable manifest, chunk, store.json or a damaged log record raises
:class:`StoreRecoveryError` naming the file and how to go on. With ``salvage=True`` it restores
what the intact pieces hold and reports what was lost instead. A lost log tail (a write a crash
cut short, or unsynced pages a power cut lost; never acknowledged) is cut off and reported.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from serl_launcher.conventions import StateLayout
from serl_launcher.data.demos import DemoReading, load_demos_into
from serl_launcher.data.replay_buffer import (
    MANIFEST,
    BufferFormatError,
    BufferSpecError,
    ReplayBuffer,
    _atomic_write,
)
from serl_launcher.data.transition_log import (
    LogCorruptError,
    LogScan,
    LogSyncError,
    TransitionLog,
    read_log,
)
from serl_launcher.transport.codec import pack_value, unpack_value
from serl_launcher.utils.faults import fault_point

STORE_FORMAT = "serl_launcher.data_store"
STORE_VERSION = 1
STATE_FILE = "store.json"
MAX_SESSIONS = 4096  # delivery state kept per store (least recently used forgotten first)
_MAX_REASON = 200
SALVAGE_HINT = ("to continue with what the intact files hold (and a report of what is lost), "
                "restart the learner with --set learner.salvage=True; to keep everything, "
                "restore the run folder's buffers/ from a backup first")


class StoreRecoveryError(RuntimeError):
    """The store on disk cannot be recovered as it is; the message names the file and what to do."""


def _is_legacy(manifest: Path) -> bool:
    """A buffer snapshot written before the data store (its manifest has no lsn)."""
    try:
        return "lsn" not in json.loads(manifest.read_text()).get("meta", {})
    except (OSError, ValueError, AttributeError):
        return False


def _same_obs(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


class DataStore:
    """Online and demo ReplayBuffers backed by a write-ahead log and snapshots (module docstring).

    Args:
        directory: the run folder's ``buffers/``.
        observation_space, action_space, capacity, include_grasp_penalty: the buffers' shape.
        seed: the buffers' sampling seeds (online `seed`, demo `seed + 1`).
        sync: the log's sync policy, "fsync" (power-cut safe) or "write" (kill -9 safe).
        demo_paths: demo files loaded into the demo buffer when the store is created, read as
            `demo_reading` allows (serl_launcher.data.demos).
        resuming: the run has other state (checkpoints): a missing store is an error then.
        state_layout: the env's state fields: demo files are checked against them, and a store
            written with other fields refuses to resume (its rows would be read in the wrong places).
        salvage: recover what intact files hold instead of refusing (reported in `recovery`).
    """

    def __init__(self, directory: str | os.PathLike, observation_space: spaces.Dict,
                 action_space: spaces.Box, capacity: int, *, seed: int = 0,
                 include_grasp_penalty: bool = False, sync: str = "fsync",
                 demo_paths: Iterable[str | os.PathLike] = (), demo_reading: DemoReading | None = None,
                 resuming: bool = False, state_layout: StateLayout | None = None,
                 salvage: bool = False, log_segment_bytes: int = 256 << 20):
        self.directory = Path(directory)
        self.state_layout = state_layout
        self.online = ReplayBuffer(observation_space, action_space, capacity,
                                   include_grasp_penalty, seed=seed)
        self.demo = ReplayBuffer(observation_space, action_space, capacity,
                                 include_grasp_penalty, seed=seed + 1)
        self._lock = threading.Lock()
        self._sessions: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.received = 0  # transitions accepted by this process (not recovered ones)
        self.intervened = 0
        self.rejected: Counter[str] = Counter()  # rejected transitions by reason
        self.snapshots = 0
        self.broken: BaseException | None = None  # set when the store must not take more data
        started = time.perf_counter()
        scan = LogScan()
        self.demo_reading = demo_reading or DemoReading()
        self.recovery = self._recover(observation_space, action_space, list(demo_paths),
                                      resuming, salvage, scan)
        self.log = TransitionLog(self.directory / "log", next_lsn=self._lsn + 1, sync=sync,
                                 tail=scan.tail, segment_bytes=log_segment_bytes)
        self.recovery["seconds"] = time.perf_counter() - started
        if self.recovery["fresh"]:
            self.snapshot()  # the demo files' transitions are in the snapshot, not the log

    # ------------------------------------------------------------------ recovery

    def _recover(self, observation_space, action_space, demo_paths: list, resuming: bool,
                 salvage: bool, scan: LogScan) -> dict[str, Any]:
        root = self.directory
        report: dict[str, Any] = {"fresh": False, "lost": [], "torn_bytes": 0,
                                  "log_records": 0, "online_from_log": 0, "demo_from_log": 0}
        state_path = root / STATE_FILE
        manifests = {name: root / name / MANIFEST for name in ("online", "demo")}
        log_dir = root / "log"
        has_records = log_dir.is_dir() and any(p.stat().st_size for p in log_dir.glob("*.log"))
        state: dict[str, Any] = {}
        if state_path.is_file():
            state = self._read_state(state_path, salvage, report)
        elif any(_is_legacy(p) for p in manifests.values()):
            pass  # a folder of an earlier version: its snapshots are the whole state
        elif not has_records:
            # Nothing was ever acknowledged into this store: a new one, or one whose creation
            # (its first snapshot) a crash interrupted. Start it (again) from the demo files.
            if resuming and not salvage:
                raise StoreRecoveryError(
                    f"{root}: this run has checkpoints but no replay buffers ({state_path} is "
                    f"missing): resuming would train on empty buffers. {SALVAGE_HINT}")
            if resuming:
                report["lost"].append(f"{state_path} and the buffer snapshots are missing")
            report["fresh"] = True
            for path in demo_paths:
                load_demos_into(self.demo, [path], self.demo_reading, self.state_layout)
            self._lsn = 0
            return report
        else:
            state = self._read_state(state_path, salvage, report)  # refuses, or salvages
        try:
            check_buffer_layout(root, self.state_layout, state)
        except BufferFormatError as error:
            raise StoreRecoveryError(str(error)) from None
        self._lsn = state_lsn = int(state.get("lsn", 0))
        for actor, session, nxt in state.get("sessions", []):
            self._sessions[(actor, session)] = int(nxt)
        lsns = {}
        for name, buffer in (("online", self.online), ("demo", self.demo)):
            lsns[name] = self._restore_buffer(name, buffer, manifests[name], state, salvage, report)
        after = min(state_lsn, *lsns.values())
        try:
            for lsn, body in read_log(log_dir, after=after, salvage=salvage, scan=scan):
                record = unpack_value(body)
                online, demo = self._apply(record, to_online=lsn > lsns["online"],
                                           to_demo=lsn > lsns["demo"],
                                           to_sessions=lsn > state_lsn)
                report["online_from_log"] += online
                report["demo_from_log"] += demo
        except LogCorruptError as error:
            raise StoreRecoveryError(f"{error}; the records after it would be lost. "
                                     f"{SALVAGE_HINT}") from None
        self._lsn = max(state_lsn, *lsns.values(), scan.last_lsn)
        report["lost"] += scan.damage
        report["log_records"] = scan.records
        if scan.tail is not None:
            report["torn_bytes"] = scan.tail.bytes
            report["torn_records"] = scan.tail.records
        return report

    def _read_state(self, path: Path, salvage: bool, report: dict) -> dict[str, Any]:
        try:
            state = json.loads(path.read_text())
            if not isinstance(state, dict) or state.get("format") != STORE_FORMAT:
                raise ValueError(f"not a {STORE_FORMAT} file")
            if state.get("version") != STORE_VERSION:
                raise ValueError(f"version {state.get('version')!r}, this code reads {STORE_VERSION}")
            return state
        except FileNotFoundError:
            problem = "is missing"
        except (OSError, ValueError) as error:
            problem = f"is unreadable ({error})"
        if not salvage:
            raise StoreRecoveryError(f"{path} {problem}. {SALVAGE_HINT}")
        report["lost"].append(f"{path} {problem}: delivery state rebuilt from the log only")
        return {}

    def _restore_buffer(self, name: str, buffer: ReplayBuffer, manifest: Path,
                        state: dict, salvage: bool, report: dict) -> int:
        """Restores one buffer's snapshot; returns the lsn it covers."""
        saved = state.get(name, {})
        if not manifest.is_file():
            if not salvage:
                raise StoreRecoveryError(
                    f"{manifest} is missing (the last snapshot held {saved.get('transitions', '?')} "
                    f"{name} transitions). {SALVAGE_HINT}")
            report["lost"].append(f"{manifest} is missing: its {saved.get('transitions', '?')} "
                                  f"{name} transitions are lost")
            return int(saved.get("lsn", 0))
        try:
            result = buffer.restore(manifest.parent, salvage=salvage)
        except BufferSpecError as error:  # nothing to salvage: the run's config differs
            raise StoreRecoveryError(
                f"{error}. The run was made with another experiment config (observation or action "
                f"space, or agent.learned_gripper, which stores the grasp penalty): resume it with the "
                f"config it was made with (its config.json), or start a new --checkpoint_path") from None
        except BufferFormatError as error:
            raise StoreRecoveryError(f"{error}. {SALVAGE_HINT}") from None
        for problem in result["problems"]:
            report["lost"].append(f"{problem} ({result['lost_rows']} {name} rows lost)")
        return int(result["meta"].get("lsn", 0))

    # ------------------------------------------------------------------ write path

    def delivered(self) -> dict[str, dict[str, int]]:
        """{actor_id: {session: next sequence number expected}} as the store holds it."""
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (actor, session), nxt in self._sessions.items():
                out.setdefault(actor, {})[session] = nxt
            return out

    def deliver(self, actor_id: str, session: str, start: int,
                transitions: list[Any]) -> list[str | None]:
        """Validates, logs and inserts the transitions with sequence numbers start, start+1, ...

        Returns one entry per transition: None if accepted, else why it was rejected. Raises
        OSError if the log cannot be written (nothing of the message is kept then).
        """
        checked, reasons = [], []
        for transition in transitions:
            try:
                checked.append(self.online.spec.check(transition))
                reasons.append(None)
            except ValueError as error:
                reasons.append(f"invalid transition: {error}"[:_MAX_REASON])
        accepted = checked
        items, previous = [], None
        for t in accepted:
            if previous is not None and _same_obs(t["observations"], previous["next_observations"]):
                items.append({k: v for k, v in t.items() if k != "observations"})
            else:
                items.append(t)
            previous = t
        end = start + len(transitions)
        rejected = [[i, r] for i, r in enumerate(reasons) if r is not None]
        record = {"actor": actor_id, "session": session, "start": start, "end": end,
                  "items": items, "rejected": rejected}
        body = pack_value(record)
        with self._lock:
            if self.broken is not None:
                raise RuntimeError(f"the data store stopped accepting data: {self.broken!r}")
            try:
                self._lsn = self.log.append(body)  # a failed write leaves no trace: retry-safe
            except LogSyncError as error:  # a failed sync (of a full segment) does not
                self.broken = error
                raise
            fault_point("store.deliver")
            try:
                self._apply({**record, "items": accepted}, to_online=True, to_demo=True,
                            to_sessions=True, expanded=True)
            except BaseException as error:
                # Logged but not applied: a retry would log it twice. Stop taking data; a
                # restart replays the log and is exact again.
                self.broken = error
                raise
            self.received += len(accepted)
            self.intervened += sum(bool(t["intervened"]) for t in accepted)
            for _, reason in rejected:
                self.rejected[reason.split(":")[0]] += 1
        return reasons

    def _apply(self, record: dict, to_online: bool, to_demo: bool, to_sessions: bool,
               expanded: bool = False) -> tuple[int, int]:
        """Inserts a record's transitions; returns (online, demo) counts inserted."""
        online = demo = 0
        previous = None
        for item in record["items"]:
            t = item if expanded or "observations" in item else {
                **item, "observations": previous["next_observations"]}
            previous = t
            if to_online:
                self.online.insert(t, checked=expanded)  # deliver() checked it already
                online += 1
            if to_demo and t["intervened"]:
                self.demo.insert(t, checked=expanded)
                demo += 1
        if to_sessions:
            key = (record["actor"], record["session"])
            self._sessions[key] = max(self._sessions.get(key, 0), int(record["end"]))
            self._sessions.move_to_end(key)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return online, demo

    def commit(self) -> None:
        """Makes everything delivered so far durable (by the sync policy)."""
        with self._lock:
            if self.broken is not None:
                raise RuntimeError(f"the data store stopped accepting data: {self.broken!r}")
            handle = self.log.sync_handle()  # the sync itself runs without the lock
        if handle is None:
            return
        fd, lsn = handle
        try:
            os.fdatasync(fd)
        except BaseException as error:  # unknown what reached the disk: take nothing more
            self.broken = error
            raise
        finally:
            os.close(fd)
        with self._lock:
            self.log.synced(lsn)

    def counts(self) -> tuple[int, int, dict[str, int]]:
        """(received, intervened, {rejection reason: count}) by this process, read together."""
        with self._lock:
            return self.received, self.intervened, dict(self.rejected)

    # ------------------------------------------------------------------ snapshots

    @property
    def log_bytes(self) -> int:
        return self.log.bytes

    def snapshot(self) -> dict[str, float]:
        """Saves both buffers and the delivery state at the current log position, then deletes
        the log records they cover. Safe while deliver() runs on another thread."""
        started = time.perf_counter()
        with self._lock:
            if self.broken is not None:  # its buffers may lack a logged record: keep the log
                raise RuntimeError(f"no snapshot of a broken data store: {self.broken!r}")
            lsn = self._lsn
            try:
                self.log.rotate()  # records after `lsn` go to a new segment
            except LogSyncError as error:
                self.broken = error
                raise
            marks = {"online": self.online.mark(), "demo": self.demo.mark()}
            sessions = [[a, s, n] for (a, s), n in self._sessions.items()]
        counts = {}
        for name, buffer in (("online", self.online), ("demo", self.demo)):
            buffer.save(self.directory / name, upto=marks[name], meta={"lsn": lsn})
            counts[name] = {"lsn": lsn, "rows_written": marks[name][0],
                            "transitions": marks[name][1]}
            fault_point("store.snapshot")
        state = {"format": STORE_FORMAT, "version": STORE_VERSION, "lsn": lsn,
                 "sessions": sessions, **counts, "time": time.time(),
                 **({"state_layout": self.state_layout.to_json()} if self.state_layout else {})}
        _atomic_write(self.directory / STATE_FILE, json.dumps(state).encode())
        with self._lock:
            freed = self.log.drop_through(lsn)
        self.snapshots += 1
        return {"seconds": time.perf_counter() - started, "log_bytes_freed": freed}

    def close(self) -> None:
        with self._lock:
            self.log.close()

    def describe_recovery(self) -> str:
        """One paragraph for the learner's log: what was restored, from where, what was lost."""
        r = self.recovery
        if r["fresh"]:
            return f"new data store in {self.directory} ({len(self.demo)} demo transitions)"
        text = (f"recovered {len(self.online)} online and {len(self.demo)} demo transitions in "
                f"{r['seconds']:.1f} s ({r['online_from_log']} online and {r['demo_from_log']} "
                f"demo from {r['log_records']} log records after the snapshot)")
        if r["torn_bytes"]:
            text += (f"; cut off {r['torn_bytes']} bytes at the end of the log ({r['torn_records']} "
                     "whole records): what a crash interrupted before it was made durable, so never "
                     "acknowledged")
        for lost in r["lost"]:
            text += f"\n  LOST: {lost}"
        return text


def check_buffer_layout(directory: str | os.PathLike, expected: StateLayout | None,
                        state: Mapping[str, Any] | None = None) -> None:
    """BufferFormatError when the store in `directory` (a run's ``buffers`` folder; `state`: its
    state file's content, read when not given) holds states of other fields than `expected`; a
    warning when it names none (written before stores recorded them). Nothing to check when
    `expected` is None or the folder has no state file."""
    if expected is None:
        return
    path = Path(directory) / STATE_FILE
    if state is None:
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            raise BufferFormatError(f"{path} is unreadable ({error})") from None
    if not isinstance(state, Mapping) or state.get("state_layout") is None:
        warnings.warn(f"{path} does not name its buffers' state fields (written before stores recorded them), "
                      f"so they are taken to be this env's {expected} unchecked", stacklevel=2)
        return
    try:
        recorded = StateLayout.from_json(state["state_layout"])
    except ValueError as error:
        raise BufferFormatError(f"{path}: {error}") from None
    if recorded != expected:
        raise BufferFormatError(f"{directory}: its buffers hold states of the fields {recorded}, this env's state is "
                                f"{expected}: use the run's env.state_fields, or start a new run")
