"""The learner's durable data path: the transition log, the data store's recovery, the rate
limiter, and the actor's spool. (Across processes, with kill -9: tests/test_distributed.py.)"""

from __future__ import annotations

import itertools
import json
import os
import random

import numpy as np
import pytest
from gymnasium import spaces

from serl_launcher.data.rate_limiter import SampleToInsertRatio
from serl_launcher.data.replay_buffer import ReplayBuffer
from serl_launcher.data.store import STATE_FILE, DataStore, StoreRecoveryError
from serl_launcher.data.transition_log import (
    HEADER_BYTES,
    LogCorruptError,
    LogScan,
    TransitionLog,
    read_log,
)
from serl_launcher.transport.reliability import Outbox

IMG = 6


def make_spaces():
    obs = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (3,), np.float32),
                       "cam": spaces.Box(0, 255, (IMG, IMG, 3), np.uint8)})
    return obs, spaces.Box(-1, 1, (2,), np.float32)


def frame(ep: int, step: int) -> dict:
    return {"state": np.array([ep, step, 0.5], np.float32),
            "cam": np.full((IMG, IMG, 3), (7 * ep + step) % 256, np.uint8)}


def stream(ep: int, length: int, intervened_every: int = 3) -> list[dict]:
    """One episode of `length` transitions; every third one intervened."""
    return [{"observations": frame(ep, s), "next_observations": frame(ep, s + 1),
             "actions": np.array([ep / 100, s / 100], np.float32), "rewards": np.float32(s == length - 1),
             "masks": np.float32(s != length - 1), "dones": s == length - 1,
             "intervened": s % intervened_every == 0} for s in range(length)]


def store(path, **kw) -> DataStore:
    return DataStore(path, *make_spaces(), capacity=kw.pop("capacity", 1000), **kw)


def deliver(s: DataStore, transitions, actor="a0", session="0123abcd", start=0, batch=7):
    """Delivers in messages of `batch`, committing each, as the transport does."""
    for i in range(0, len(transitions), batch):
        assert s.deliver(actor, session, start + i, transitions[i : i + batch]) == [None] * len(
            transitions[i : i + batch])
        s.commit()


def contents(buffer: ReplayBuffer) -> list[tuple]:
    """Every sampleable transition as comparable bytes, in insertion order."""
    out = []
    for g in range(buffer._rows_written - buffer.rows, buffer._rows_written):
        i = g % buffer.capacity
        if buffer._valid[i]:
            p = (g - 1) % buffer.capacity
            out.append((buffer._frames["state"][p].tobytes(), buffer._frames["state"][i].tobytes(),
                        buffer._frames["cam"][i].tobytes(), buffer._fields["actions"][i].tobytes(),
                        bool(buffer._fields["dones"][i]), bool(buffer._fields["intervened"][i])))
    return out


# ---------------------------------------------------------------------------- transition log


def test_log_round_trip_numbering_and_segments(tmp_path):
    log = TransitionLog(tmp_path, segment_bytes=200)
    bodies = [os.urandom(random.Random(i).randint(0, 120)) for i in range(20)]
    assert [log.append(b) for b in bodies] == list(range(1, 21))
    log.commit()
    log.close()
    assert len(list(tmp_path.glob("*.log"))) > 3  # rotated by size
    scan = LogScan()
    assert [(lsn, bytes(body)) for lsn, body in read_log(tmp_path, scan=scan)] == list(enumerate(bodies, 1))
    assert (scan.records, scan.last_lsn, scan.tail, scan.damage) == (20, 20, None, [])
    assert [lsn for lsn, _ in read_log(tmp_path, after=15)] == [16, 17, 18, 19, 20]
    # Dropping keeps every record after the point (whole segments go), numbering continues.
    log = TransitionLog(tmp_path, next_lsn=21, segment_bytes=200)
    log.drop_through(12)
    assert [lsn for lsn, _ in read_log(tmp_path, after=12)] == list(range(13, 21))
    with pytest.raises(LogCorruptError, match="records 1 to .* are missing"):
        list(read_log(tmp_path))  # without the snapshot that covers them, they are missing
    assert log.append(b"x") == 21


def test_torn_tail_is_cut_and_the_log_goes_on(tmp_path):
    log = TransitionLog(tmp_path)
    for i in range(5):
        log.append(b"record %d" % i)
    log.close()
    segment = next(tmp_path.glob("*.log"))
    size = segment.stat().st_size
    with segment.open("ab") as f:  # a crash in the middle of writing record 6
        f.write(b"SRLL\x40\x00\x00\x00\x06" + b"\x00" * 20)
    scan = LogScan()
    assert [lsn for lsn, _ in read_log(tmp_path, scan=scan)] == [1, 2, 3, 4, 5]
    assert (scan.tail.path, scan.tail.offset, scan.tail.bytes) == (segment, size, 29)
    log = TransitionLog(tmp_path, next_lsn=scan.last_lsn + 1, tail=scan.tail)
    assert log.append(b"after") == 6
    log.close()
    assert [bytes(b) for _, b in read_log(tmp_path)][-1] == b"after"


@pytest.mark.parametrize("where", ["body", "header"])
def test_damage_before_good_records_is_an_error_unless_salvaged(tmp_path, where):
    log = TransitionLog(tmp_path)
    for i in range(6):
        log.append(b"%d" % i * 50)
        log.commit()  # each record durable: the ones after the damage vouch for it
    log.close()
    segment = next(tmp_path.glob("*.log"))
    data = bytearray(segment.read_bytes())
    record = HEADER_BYTES + 50
    data[2 * record + (HEADER_BYTES + 3 if where == "body" else 5)] ^= 0xFF  # record 3
    segment.write_bytes(bytes(data))
    with pytest.raises(LogCorruptError, match=rf"{segment}: damaged record at byte {2 * record}"):
        list(read_log(tmp_path))
    scan = LogScan()
    assert [lsn for lsn, _ in read_log(tmp_path, salvage=True, scan=scan)] == [1, 2, 4, 5, 6]
    assert len(scan.damage) == 2 and "records 3 to 3 are missing" in scan.damage[1]


def test_unsynced_damage_is_a_lost_tail_not_an_error(tmp_path):
    """After a power cut, pages written after the last sync may be missing while later ones made
    it: no intact record says they were durable, so they were never acknowledged."""
    log = TransitionLog(tmp_path)
    for i in range(3):
        log.append(b"synced %d" % i)
    log.commit()
    for i in range(3):
        log.append(b"unsynced %d" % i * 20)
    log.close(commit=False)
    segment = next(tmp_path.glob("*.log"))
    data = bytearray(segment.read_bytes())
    fourth = sum(HEADER_BYTES + len(b"synced %d" % i) for i in range(3))
    data[fourth : fourth + 40] = bytes(40)  # record 4's page never reached the disk
    segment.write_bytes(bytes(data))
    scan = LogScan()
    assert [bytes(b) for _, b in read_log(tmp_path, scan=scan)] == [b"synced %d" % i for i in range(3)]
    assert scan.tail.offset == fourth and scan.tail.records == 2 and scan.damage == []
    reopened = TransitionLog(tmp_path, next_lsn=4, tail=scan.tail)
    assert reopened.append(b"next") == 4
    reopened.close()
    assert [lsn for lsn, _ in read_log(tmp_path)] == [1, 2, 3, 4]


def test_segments_a_snapshot_covers_are_not_read(tmp_path):
    log = TransitionLog(tmp_path, segment_bytes=1)
    for i in range(5):
        log.append(b"r%d" % i)
    log.close()
    (tmp_path / f"{2:016d}.log").write_bytes(b"garbage")  # damaged, but covered by a snapshot
    assert [lsn for lsn, _ in read_log(tmp_path, after=3)] == [4, 5]
    with pytest.raises(LogCorruptError):
        list(read_log(tmp_path, after=0))
    (tmp_path / f"{4:016d}.log").unlink()  # a record the snapshot does not cover is gone
    with pytest.raises(LogCorruptError, match="records 4 to 4 are missing"):
        list(read_log(tmp_path, after=3))


def test_a_missing_segment_is_a_gap(tmp_path):
    log = TransitionLog(tmp_path, segment_bytes=1)  # one record per segment
    for i in range(4):
        log.append(b"r%d" % i)
    log.close()
    (tmp_path / f"{2:016d}.log").unlink()
    with pytest.raises(LogCorruptError, match="records 2 to 2 are missing"):
        list(read_log(tmp_path))


def test_failed_write_leaves_no_half_record(tmp_path, monkeypatch):
    log = TransitionLog(tmp_path)
    log.append(b"good")

    def full_disk(fd, parts):
        os.write(fd, bytes(parts[0])[:7])  # part of the header made it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "writev", full_disk)
    with pytest.raises(OSError, match="No space"):
        log.append(b"lost")
    monkeypatch.undo()
    assert log.append(b"next") == 2
    log.close()
    assert [bytes(b) for _, b in read_log(tmp_path)] == [b"good", b"next"]


# ---------------------------------------------------------------------------- data store


def test_store_recovers_exactly_what_was_delivered(tmp_path):
    first = store(tmp_path)
    data = stream(0, 30) + stream(1, 25)
    deliver(first, data[:40])
    first.snapshot()
    deliver(first, data[40:], start=40)
    live_online, live_demo = contents(first.online), contents(first.demo)
    assert len(live_online) == 55 and len(live_demo) == 19
    # A crash: no close, no final snapshot. The log holds what came after the snapshot.
    again = store(tmp_path, resuming=True)
    r = again.recovery
    assert (r["online_from_log"], r["log_records"], r["lost"], r["torn_bytes"]) == (15, 3, [], 0)
    assert contents(again.online) == live_online and contents(again.demo) == live_demo
    assert again.online.num_inserted == 55
    assert again.delivered() == {"a0": {"0123abcd": 55}}
    assert "recovered 55 online and 19 demo" in again.describe_recovery()


def test_log_records_hold_each_frame_once(tmp_path):
    s = store(tmp_path)
    deliver(s, stream(0, 20), batch=20)
    record = (tmp_path / "log").glob("*.log")
    size = sum(p.stat().st_size for p in record)
    one_frame = 3 * 4 + IMG * IMG * 3
    assert size < 20 * one_frame + 20 * 200 + 2 * one_frame  # not 2 frames per transition


def test_invalid_transitions_are_rejected_alone_and_recorded(tmp_path):
    s = store(tmp_path)
    batch = stream(0, 6)
    batch[2]["actions"] = np.array([np.nan, 0.0], np.float32)
    batch[4] = {"observations": "nope"}
    reasons = s.deliver("a0", "0123abcd", 0, batch)
    s.commit()
    assert reasons[0] is None and reasons[1] is None and reasons[3] is None and reasons[5] is None
    assert "actions: contains NaN" in reasons[2] and reasons[4].startswith("invalid transition")
    assert s.online.num_inserted == 4 and s.delivered() == {"a0": {"0123abcd": 6}}
    assert s.counts()[2] == {"invalid transition": 2}
    again = store(tmp_path, resuming=True)
    assert contents(again.online) == contents(s.online) and again.delivered() == s.delivered()


def test_crash_inside_a_snapshot_recovers_exactly(tmp_path, monkeypatch):
    s = store(tmp_path)
    deliver(s, stream(0, 30))
    s.snapshot()
    deliver(s, stream(1, 30), start=30)
    expected_online, expected_demo = contents(s.online), contents(s.demo)
    saves = []

    def save_then_die(self, directory, *args, **kwargs):
        saves.append(directory.name)
        if directory.name == "demo":
            raise KeyboardInterrupt("killed between the online and the demo snapshot")
        return original(self, directory, *args, **kwargs)

    original = ReplayBuffer.save
    monkeypatch.setattr(ReplayBuffer, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        s.snapshot()
    monkeypatch.undo()
    assert saves == ["online", "demo"]
    manifest = json.loads((tmp_path / "online" / "manifest.json").read_text())
    assert manifest["meta"]["lsn"] > json.loads((tmp_path / STATE_FILE).read_text())["lsn"]
    again = store(tmp_path, resuming=True)
    assert contents(again.online) == expected_online and contents(again.demo) == expected_demo
    assert again.recovery["online_from_log"] == 0 and again.recovery["demo_from_log"] > 0


def test_torn_record_is_not_recovered_and_is_reported(tmp_path):
    s = store(tmp_path)
    deliver(s, stream(0, 10), batch=5)
    segment = sorted((tmp_path / "log").glob("*.log"))[-1]
    with segment.open("ab") as f:
        f.write(b"SRLL\xff\xff\x00\x00" + b"\x01" * 40)  # an append the crash cut short
    again = store(tmp_path, resuming=True)
    assert again.online.num_inserted == 10 and again.recovery["torn_bytes"] == 48
    assert "never acknowledged" in again.describe_recovery()
    deliver(again, stream(1, 5), start=10)
    assert store(tmp_path, resuming=True).online.num_inserted == 15


def test_missing_or_damaged_files_are_never_silent(tmp_path):
    s = store(tmp_path)
    deliver(s, stream(0, 40))
    s.snapshot()
    deliver(s, stream(1, 10), start=40)
    s.close()
    manifest = tmp_path / "online" / "manifest.json"
    saved = manifest.read_bytes()
    manifest.unlink()
    with pytest.raises(StoreRecoveryError, match=f"{manifest} is missing.*40 online.*salvage=True"):
        store(tmp_path, resuming=True)
    salvaged = store(tmp_path, resuming=True, salvage=True)
    assert salvaged.online.num_inserted == 10  # what the log held after the snapshot
    assert any("40 online transitions are lost" in lost for lost in salvaged.recovery["lost"])
    assert "LOST" in salvaged.describe_recovery()
    salvaged.close()

    manifest.write_bytes(saved)
    chunk = next((tmp_path / "online").glob("chunk-*.npz"))
    chunk.write_bytes(chunk.read_bytes()[:-10])
    with pytest.raises(StoreRecoveryError, match=f"{chunk}: checksum mismatch"):
        store(tmp_path, resuming=True)
    (tmp_path / STATE_FILE).write_text("{")
    with pytest.raises(StoreRecoveryError, match=f"{tmp_path / STATE_FILE} is unreadable"):
        store(tmp_path, resuming=True)


def test_a_resumed_run_without_buffers_refuses_to_train_on_nothing(tmp_path):
    with pytest.raises(StoreRecoveryError, match="has checkpoints but no replay buffers"):
        store(tmp_path / "buffers", resuming=True)
    assert not (tmp_path / "buffers" / STATE_FILE).exists()
    fresh = store(tmp_path / "other")
    assert fresh.recovery["fresh"] and (tmp_path / "other" / STATE_FILE).is_file()


def test_resuming_with_another_config_says_so_not_salvage(tmp_path):
    s = store(tmp_path / "buffers")  # made without a learned gripper
    deliver(s, stream(0, 10))
    s.snapshot()
    s.close()
    for salvage in (False, True):  # nothing to salvage: the shapes differ
        with pytest.raises(StoreRecoveryError, match="grasp_penalty saved as False.*another experiment config.*"
                                                     "config.json") as error:
            store(tmp_path / "buffers", include_grasp_penalty=True, resuming=True, salvage=salvage)
        assert "salvage=True" not in str(error.value)


def test_a_failed_log_write_keeps_nothing_and_can_be_retried(tmp_path, monkeypatch):
    s = store(tmp_path)
    monkeypatch.setattr(os, "writev", lambda fd, parts: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(OSError):
        s.deliver("a0", "0123abcd", 0, stream(0, 5))
    assert s.online.num_inserted == 0 and s.delivered() == {} and s.broken is None
    monkeypatch.undo()
    deliver(s, stream(0, 5))
    assert store(tmp_path, resuming=True).online.num_inserted == 5


# ---------------------------------------------------------------------------- rate limiter


def test_rate_limiter_conditions_by_hand():
    # spi 64, one step samples 64: one step per insert; min size 10, tolerance 5.
    r = SampleToInsertRatio(64, min_size=10, tolerance=5, samples_per_step=64)
    assert not r.can_sample() and r.allowance() == 15  # 10 + 5 - 0
    r.inserted(10)
    # samples + 64 <= 64 * (10 - 10 + 5): five steps before any further insert.
    for _ in range(5):
        assert r.can_sample()
        r.stepped()
    assert not r.can_sample() and r.allowance() == 10  # 10 + 5 + 5 - 10
    r.inserted(10)
    assert r.allowance() == 0 and r.can_sample()
    off = SampleToInsertRatio(0, min_size=3, tolerance=0, samples_per_step=8)
    assert off.allowance() is None and not off.can_sample()
    off.inserted(3)
    assert off.can_sample()
    with pytest.raises(ValueError, match="raise the tolerance to at least 4"):
        SampleToInsertRatio(16, min_size=0, tolerance=2, samples_per_step=64)


def test_a_learner_restored_far_behind_trains_while_the_actor_waits():
    # 3530 transitions held, checkpoint at step 2270 (the deadlock of the issue).
    r = SampleToInsertRatio(256, min_size=200, tolerance=500, samples_per_step=256, inserts=3530, steps=2270)
    assert r.allowance() == 0 and r.can_sample()
    steps = 0
    while r.allowance() == 0:
        assert r.can_sample()
        r.stepped()
        steps += 1
    assert steps == 561  # the first step with 200 + 500 + 2270 + steps - 3530 > 0


@pytest.mark.parametrize("spi,step,tol,min_size", [(256, 256, 1, 0), (64, 256, 4, 10), (512, 256, 1, 5),
                                                   (1, 1, 1, 1), (3, 7, 3, 2), (100, 5120, 52, 200)])
def test_rate_limiter_never_blocks_both_sides(spi, step, tol, min_size):
    rng = random.Random(spi * step)
    r = SampleToInsertRatio(spi, min_size, tol, step)
    for _ in range(5000):
        can_insert, can_sample = r.allowance() > 0, r.can_sample()
        assert can_insert or can_sample, (r.inserts, r.samples)
        if can_insert and (not can_sample or rng.random() < 0.5):
            r.inserted()
        else:
            r.stepped()


# ---------------------------------------------------------------------------- actor spool


def test_outbox_spills_to_disk_then_drops_oldest(tmp_path):
    box = Outbox(capacity=4, max_bytes=1 << 20, spool_dir=tmp_path / "spool", spool_max_bytes=60)
    items = [bytes([i]) * 10 for i in range(12)]
    dropped = [box.put(item) for item in items]
    # 4 in memory, 6 x 10 bytes on disk, the 2 oldest dropped.
    assert (box.pending, box.spooled, box.base, sum(dropped), box.dropped) == (10, 6, 2, 2, 2)
    first, base, batch = box.peek_batch(100, 1 << 20, 100)
    assert (first, base) == (2, 2) and batch == items[2:]
    box.ack(6)  # releases 2..6, all on disk; 7 stays there, 8..11 in memory
    assert (box.pending, box.spooled, box.base) == (5, 1, 7)
    assert box.peek_batch(100, 1 << 20, 100)[2] == items[7:]
    box.ack(11)
    assert box.pending == 0 and box.wait_empty(0.0)
    box.close()
    assert not (tmp_path / "spool").exists()


def test_outbox_without_spool_keeps_contiguous_range_under_any_pattern(tmp_path):
    rng = random.Random(0)
    for spool in (None, tmp_path / "s"):
        box = Outbox(capacity=5, max_bytes=60, spool_dir=spool, spool_max_bytes=80)
        produced = acked = 0
        for _ in range(400):
            if rng.random() < 0.7:
                box.put(os.urandom(rng.randint(1, 25)))
                produced += 1
            elif box.pending:
                acked = rng.randint(box.base, box.next_seq - 1)
                box.ack(acked)
            assert box.next_seq == produced and box.pending == box.next_seq - box.base
            batch = box.peek_batch(1000, 1 << 30, 1 << 30)
            if batch:
                assert batch[0] == box.base and len(batch[2]) == box.pending
        box.close()


def test_every_kill_point_in_a_store_is_exact(tmp_path):
    """Delivery interleaved with snapshots at every position: a fresh store on the same folder
    (what a restart after kill -9 sees) always holds exactly what was committed."""
    for n_snap, k in itertools.product(range(3), range(0, 50, 7)):
        path = tmp_path / f"{n_snap}-{k}"
        s = store(path)
        data = stream(k, 50)
        for i in range(0, 50, 5):
            deliver(s, data[i : i + 5], start=i)
            if n_snap and (i // 5) % (4 - n_snap) == 0:
                s.snapshot()
            if i >= k:
                break
        again = store(path, resuming=True)
        assert contents(again.online) == contents(s.online) and again.delivered() == s.delivered()


def test_a_crash_in_a_new_stores_first_snapshot_starts_it_again(tmp_path, monkeypatch):
    from serl_launcher.data.demos import save_demos

    demos = save_demos(tmp_path / "demos.npz", stream(9, 12, intervened_every=1))
    original = ReplayBuffer.save

    def die_on_demo(self, directory, *args, **kwargs):
        if directory.name == "demo":
            raise KeyboardInterrupt("Ctrl-C while the demos are being saved")
        return original(self, directory, *args, **kwargs)

    monkeypatch.setattr(ReplayBuffer, "save", die_on_demo)
    with pytest.raises(KeyboardInterrupt):
        store(tmp_path / "buffers", demo_paths=[demos])
    monkeypatch.undo()
    again = store(tmp_path / "buffers", demo_paths=[demos])  # nothing was acknowledged: new again
    assert again.recovery["fresh"] and again.demo.num_inserted == 12
    deliver(again, stream(0, 5))
    assert store(tmp_path / "buffers", resuming=True).demo.num_inserted == 12 + 2


def test_a_failed_sync_stops_the_store(tmp_path, monkeypatch):
    s = store(tmp_path, log_segment_bytes=1)  # every record starts a segment: rotate syncs
    data = stream(0, 5)
    deliver(s, data[:3], batch=1)
    s.deliver("a0", "0123abcd", 3, data[3:4])  # written, not yet committed

    def eio(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", eio)
    with pytest.raises(OSError, match="syncing the transition log failed"):
        s.deliver("a0", "0123abcd", 4, data[4:])  # its segment change syncs record 4: EIO
    assert s.broken is not None
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="stopped accepting"):
        s.deliver("a0", "0123abcd", 4, data[4:])
    with pytest.raises(RuntimeError, match="stopped accepting"):
        s.commit()
    with pytest.raises(RuntimeError, match="no snapshot of a broken"):
        s.snapshot()
    assert store(tmp_path, resuming=True).online.num_inserted >= 3  # 4 if its page made it


def test_chunks_a_crashed_save_left_behind_are_deleted(tmp_path, monkeypatch):
    import serl_launcher.data.replay_buffer as rb

    buffer = ReplayBuffer(*make_spaces(), capacity=500)
    buffer.insert_many(stream(0, 40))
    buffer.save(tmp_path, chunk_bytes=2000)
    buffer.insert_many(stream(1, 40))
    original = rb._atomic_write

    def die_at_manifest(path, payload):
        if path.name == "manifest.json":
            raise KeyboardInterrupt
        original(path, payload)

    monkeypatch.setattr(rb, "_atomic_write", die_at_manifest)
    with pytest.raises(KeyboardInterrupt):
        buffer.save(tmp_path, chunk_bytes=2000)
    monkeypatch.undo()
    listed = {c["file"] for c in json.loads((tmp_path / "manifest.json").read_text())["chunks"]}
    assert {p.name for p in tmp_path.glob("chunk-*")} > listed  # orphans of the crashed save
    buffer.save(tmp_path, chunk_bytes=2000)
    listed = {c["file"] for c in json.loads((tmp_path / "manifest.json").read_text())["chunks"]}
    assert {p.name for p in tmp_path.glob("chunk-*")} == listed


def test_a_failing_spool_disk_drops_oldest_and_keeps_the_queue_consistent(tmp_path, monkeypatch):
    box = Outbox(capacity=2, max_bytes=1 << 20, spool_dir=tmp_path / "spool", spool_max_bytes=1000)
    for i in range(4):
        box.put(b"%d" % i * 5)
    assert box.spooled == 2
    monkeypatch.setattr(os, "pwrite", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left")))
    dropped = box.put(b"x" * 5)  # item 2 cannot go to disk: it and the older ones are dropped
    monkeypatch.undo()
    assert (dropped, box.base, box.pending, box.spool_errors) == (3, 3, 2, 1)
    assert box.peek_batch(10, 1 << 20, 10)[2] == [b"3" * 5, b"x" * 5]
    box.ack(4)
    assert box.pending == 0
    box.close()


def test_a_store_written_with_other_state_fields_refuses_to_resume(tmp_path):
    from serl_launcher.conventions import StateLayout
    from serl_launcher.data.replay_buffer import BufferFormatError
    from serl_launcher.data.store import StoreRecoveryError, check_buffer_layout

    size = make_spaces()[0]["state"].shape[0]
    first = StateLayout((("a", 1), ("b", size - 1)))
    written = store(tmp_path / "s", state_layout=first)
    deliver(written, stream(0, 5))
    written.snapshot()
    written.close()
    resumed = store(tmp_path / "s", state_layout=first, resuming=True)  # the same fields: resumes
    assert len(resumed.online) == 5
    resumed.close()
    other = StateLayout((("b", size - 1), ("a", 1)))
    with pytest.raises(StoreRecoveryError, match=r"hold states of the fields \[a \(1\), b .*this env's state is \[b"):
        store(tmp_path / "s", state_layout=other, resuming=True)
    # What reads a run's buffers without resuming it (export --run, train_bc --hg_dagger) checks the same.
    check_buffer_layout(tmp_path / "s", first)
    with pytest.raises(BufferFormatError, match="hold states of the fields"):
        check_buffer_layout(tmp_path / "s", other)
    # A store from before stores named their fields resumes with a warning that they are not checked.
    state = json.loads((tmp_path / "s" / "store.json").read_text())
    del state["state_layout"]
    (tmp_path / "s" / "store.json").write_text(json.dumps(state))
    with pytest.warns(UserWarning, match="does not name its buffers' state fields"):
        store(tmp_path / "s", state_layout=other, resuming=True).close()
