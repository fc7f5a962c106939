"""An append-only, checksummed log of records on disk (the learner's write-ahead log).

The learner appends one record per accepted actor message before it acknowledges the message,
so everything acknowledged can be replayed after a crash; buffer snapshots make old records
unnecessary and :meth:`TransitionLog.drop_through` deletes them a segment at a time.

Layout: a folder of segments named ``<lsn of their first record, 16 digits>.log``. A record::

    offset  size  field
    0       4     magic b"SRLL"
    4       4     body length, uint32 little-endian
    8       8     lsn (log sequence number, 1, 2, 3, ... with no gaps), uint64 little-endian
    16      8     synced: the highest lsn known durable when this record was written
    24      4     CRC-32 of bytes 4..24 and the body
    28      n     body (opaque bytes; the store packs msgpack into it)

Sync policy: ``"fsync"`` makes :meth:`commit` fdatasync the segment (survives a power cut);
``"write"`` hands records to the OS only (survives a kill -9 of the process, not a power cut).

Reading (:func:`read_log`) tells a lost tail from damage. A bad or missing stretch that no later
intact record vouches for (their `synced` fields all lie before it) holds only records that were
never made durable, hence never acknowledged: a write a crash cut short, or, after a power cut,
pages of the unsynced tail that did not reach the disk. It is cut off (with whatever follows)
when the log is opened for appending, and reported. A bad stretch that a later record vouches
for, a gap in the lsns there, or a missing first segment is damage: :class:`LogCorruptError`
names the file and offset, unless the caller salvages. Records at or before `after` (already in
a snapshot) are not checked: a segment that only holds such records is not even read.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"SRLL"
_HEADER = struct.Struct("<4sIQQI")
HEADER_BYTES = _HEADER.size  # 28
MAX_RECORD_BYTES = 1 << 31
SYNC_POLICIES = ("fsync", "write")
_SEGMENT = re.compile(r"^(\d{16})\.log$")


class LogCorruptError(RuntimeError):
    """The log is damaged where it holds durable records; the message names file and offset."""


def _crc(length: int, lsn: int, synced: int, body: bytes | memoryview) -> int:
    return zlib.crc32(body, zlib.crc32(struct.pack("<IQQ", length, lsn, synced)))


def _segments(directory: Path) -> list[tuple[int, Path]]:
    """(first lsn, path) of every segment, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _SEGMENT.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _fsync_dir(directory: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(directory, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class Tail:
    """A lost tail: cut `path` at `offset` and delete the segments in `later`."""

    path: Path
    offset: int
    bytes: int
    later: list[Path] = field(default_factory=list)
    records: int = 0  # intact records in the cut-off part (written, never made durable)


@dataclass
class LogScan:
    """What reading a log found (filled in while the records are iterated)."""

    records: int = 0
    last_lsn: int = 0
    tail: Tail | None = None
    damage: list[str] = field(default_factory=list)  # salvaged problems, in words


def _record_at(data: bytes, offset: int) -> tuple[int, int, int] | None:
    """(lsn, synced, length) of a whole record with a good checksum at `offset`, else None."""
    if offset + HEADER_BYTES > len(data):
        return None
    magic, length, lsn, synced, crc = _HEADER.unpack_from(data, offset)
    end = offset + HEADER_BYTES + length
    if magic != MAGIC or end > len(data):
        return None
    if _crc(length, lsn, synced, memoryview(data)[offset + HEADER_BYTES : end]) != crc:
        return None
    return lsn, synced, length


def _next_record(data: bytes, start: int) -> int | None:
    offset = data.find(MAGIC, start)
    while offset != -1:
        if _record_at(data, offset) is not None:
            return offset
        offset = data.find(MAGIC, offset + 1)
    return None


def _vouched_after(data: bytes, offset: int, later: list[Path]) -> tuple[int, int]:
    """(highest `synced` of the intact records from `offset` on, here and in `later`
    segments; how many such records there are)."""
    best, count = 0, 0
    for chunk in [data, *(p.read_bytes() for p in later)]:
        pos = _next_record(chunk, offset)
        while pos is not None:
            lsn, synced, length = _record_at(chunk, pos)
            best, count = max(best, synced), count + 1
            pos = _next_record(chunk, pos + HEADER_BYTES + length)
        offset = 0
    return best, count


def read_log(
    directory: str | os.PathLike, after: int = 0, salvage: bool = False, scan: LogScan | None = None
) -> Iterator[tuple[int, memoryview]]:
    """Yields (lsn, body) of every intact record with lsn > `after`, oldest first.

    Raises LogCorruptError on damage (see the module docstring), or, with ``salvage=True``,
    skips to the next intact record and describes what was skipped in ``scan.damage``. A lost
    tail ends the iteration and is described in ``scan.tail``.
    """
    scan = scan if scan is not None else LogScan()
    segments = _segments(Path(directory))
    while len(segments) > 1 and segments[1][0] <= after + 1:
        segments.pop(0)  # holds only records a snapshot already covers
    expected: int | None = None
    vouched = 0  # highest lsn an intact record so far says was durable
    for index, (first, path) in enumerate(segments):
        data = path.read_bytes()
        later = [p for _, p in segments[index + 1 :]]
        offset = 0
        while offset < len(data):
            found = _record_at(data, offset)
            if found is None:
                resume = _next_record(data, offset + 1)
                claim, count = _vouched_after(data, resume, later) if resume is not None else (0, 0)
                if resume is None and later:
                    claim, count = _vouched_after(b"", 0, later)
                previous = expected - 1 if expected is not None else first - 1
                if max(vouched, claim) <= previous:  # nothing durable is missing here
                    scan.tail = Tail(path, offset, len(data) - offset, later, count)
                    return
                what = (f"{path}: damaged record at byte {offset} "
                        f"({(resume or len(data)) - offset} bytes unreadable)")
                _damage(scan, salvage, what)
                offset = resume if resume is not None else len(data)
                continue
            lsn, synced, length = found
            if expected is None and lsn > after + 1:
                _damage(scan, salvage, f"{path}: the log starts at record {lsn}; records "
                                       f"{after + 1} to {lsn - 1} are missing")
            elif expected is not None and lsn != expected and lsn > after:
                _damage(scan, salvage, f"{path}: byte {offset}: records {expected} to {lsn - 1} "
                                       "are missing")
            expected = lsn + 1
            vouched = max(vouched, synced)
            scan.last_lsn = lsn
            body_start = offset + HEADER_BYTES
            offset = body_start + length
            if lsn > after:
                scan.records += 1
                yield lsn, memoryview(data)[body_start:offset]


def _damage(scan: LogScan, salvage: bool, what: str) -> None:
    if not salvage:
        raise LogCorruptError(what)
    scan.damage.append(what)


class LogSyncError(OSError):
    """An fdatasync failed: what reached the disk is unknown (the log must not be used on)."""


class TransitionLog:
    """Appends records to the newest segment of `directory`; see the module docstring.

    Open it after reading it: ``TransitionLog(directory, next_lsn=scan.last_lsn + 1,
    tail=scan.tail)`` cuts a lost tail off and continues numbering. Not thread-safe: one writer
    (the caller serialises append / commit / rotate / drop_through / sync_handle).
    """

    def __init__(self, directory: str | os.PathLike, next_lsn: int = 1, sync: str = "fsync",
                 tail: Tail | None = None, segment_bytes: int = 256 << 20):
        if sync not in SYNC_POLICIES:
            raise ValueError(f"sync must be one of {SYNC_POLICIES}, got {sync!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        self.segment_bytes = segment_bytes
        if tail is not None:
            os.truncate(tail.path, tail.offset)
            for path in tail.later:
                path.unlink(missing_ok=True)
            _fsync_dir(self.directory)
        segments = _segments(self.directory)
        if segments:  # numbering never goes back, even when every record was dropped
            next_lsn = max(next_lsn, segments[-1][0])
        self.next_lsn = next_lsn
        self.synced_lsn = next_lsn - 1  # everything before was read back intact
        self._fd: int | None = None
        self._size = 0
        self._dirty = False
        if segments and segments[-1][1].stat().st_size < segment_bytes:
            self._open(segments[-1][1])
        self.bytes = sum(p.stat().st_size for _, p in segments)

    def _open(self, path: Path) -> None:
        new = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        if new and self.sync == "fsync":
            _fsync_dir(self.directory)

    def append(self, body: bytes | memoryview) -> int:
        """Writes one record (not yet synced: see :meth:`commit`); returns its lsn.

        On a failed write (e.g. a full disk) the segment is cut back to where it was and the
        OSError raised, so the log never holds half a record followed by whole ones; a
        LogSyncError (from a segment change) means the log must not be used any more.
        """
        length = len(body)
        if length >= MAX_RECORD_BYTES:
            raise ValueError(f"log record of {length} bytes is too large")
        if self._fd is None or self._size >= self.segment_bytes:
            self.rotate()
        lsn = self.next_lsn
        synced = self.synced_lsn if self.sync == "fsync" else lsn - 1
        header = _HEADER.pack(MAGIC, length, lsn, synced, _crc(length, lsn, synced, body))
        parts, want = [header, body], HEADER_BYTES + length
        try:
            written = os.writev(self._fd, parts)
            while written < want:  # a short write: the rest, from where it stopped
                rest = b"".join(bytes(p) for p in parts)[written:]
                written += os.write(self._fd, rest)
        except OSError:
            os.ftruncate(self._fd, self._size)
            raise
        self._size += want
        self.bytes += want
        self.next_lsn += 1
        self._dirty = True
        return lsn

    def _fdatasync(self, fd: int) -> None:
        try:
            os.fdatasync(fd)
        except OSError as error:
            raise LogSyncError(error.errno, f"syncing the transition log failed: {error}") from error

    def commit(self) -> None:
        """Makes every appended record durable by the sync policy (fsync: on the disk)."""
        if self._dirty and self._fd is not None and self.sync == "fsync":
            self._fdatasync(self._fd)
        self._dirty = False
        self.synced_lsn = self.next_lsn - 1

    def sync_handle(self) -> tuple[int, int] | None:
        """For a sync outside the caller's lock: (a duplicate of the segment's descriptor, the
        lsn it covers), or None when nothing needs syncing. The caller fdatasyncs and closes
        the descriptor, then calls :meth:`synced`. Earlier segments were synced by rotate()."""
        if not self._dirty or self._fd is None:
            return None
        self._dirty = False
        if self.sync != "fsync":
            self.synced_lsn = self.next_lsn - 1
            return None
        return os.dup(self._fd), self.next_lsn - 1

    def synced(self, lsn: int) -> None:
        self.synced_lsn = max(self.synced_lsn, lsn)

    def rotate(self) -> None:
        """Starts a new segment at the next lsn (the previous one is committed and closed)."""
        if self._fd is not None:
            self.commit()
            os.close(self._fd)
            self._fd = None
        self._open(self.directory / f"{self.next_lsn:016d}.log")

    def drop_through(self, lsn: int) -> int:
        """Deletes the segments whose records all have lsn <= `lsn`; returns bytes freed."""
        segments = _segments(self.directory)
        freed = 0
        for (_, path), (next_first, _) in zip(segments, segments[1:], strict=False):
            if next_first - 1 <= lsn:
                freed += path.stat().st_size
                path.unlink()
        if freed:
            _fsync_dir(self.directory)  # so a power cut cannot bring a deleted segment back
        self.bytes -= freed
        return freed

    def close(self, commit: bool = True) -> None:
        if self._fd is not None:
            if commit:
                self.commit()
            os.close(self._fd)
            self._fd = None
