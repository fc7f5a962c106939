"""An append-only, checksummed log of records on disk (the learner's write-ahead log).

The learner appends one record per accepted actor message before it acknowledges the message,
so everything acknowledged can be replayed after a crash; buffer snapshots make old records
unnecessary and :meth:`TransitionLog.drop_through` deletes them a segment at a time.

Layout: a folder of segments named ``<lsn of their first record, 16 digits>.log``. A record::

    offset  size  field
    0       4     magic b"SRLL"
    4       4     body length, uint32 little-endian
    8       8     lsn (log sequence number, 1, 2, 3, ... with no gaps), uint64 little-endian
    16      4     CRC-32 of bytes 4..16 and the body
    20      n     body (opaque bytes; the store packs msgpack into it)

Sync policy: ``"fsync"`` makes :meth:`commit` fdatasync the segment (survives a power cut);
``"write"`` hands records to the OS only (survives a kill -9 of the process, not a power cut).

Reading (:func:`read_log`) tells a torn tail (the last record of the last segment incomplete or
failing its checksum, with nothing valid after it: a write that a crash interrupted, never
acknowledged) from damage (a bad record with valid ones after it, a bad record in an earlier
segment, or a gap in the lsns). A torn tail is cut off when the log is opened for appending;
damage raises :class:`LogCorruptError` naming the file and offset, unless the caller salvages.
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
_HEADER = struct.Struct("<4sIQI")
HEADER_BYTES = _HEADER.size  # 20
MAX_RECORD_BYTES = 1 << 31
SYNC_POLICIES = ("fsync", "write")
_SEGMENT = re.compile(r"^(\d{16})\.log$")


class LogCorruptError(RuntimeError):
    """The log is damaged somewhere other than its torn tail; the message names file and offset."""


def _crc(length: int, lsn: int, body: bytes | memoryview) -> int:
    return zlib.crc32(body, zlib.crc32(struct.pack("<IQ", length, lsn)))


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
class LogScan:
    """What reading a log found (filled in while the records are iterated)."""

    records: int = 0
    last_lsn: int = 0
    bytes: int = 0
    torn: tuple[Path, int, int] | None = None  # (segment, offset, bytes cut off)
    damage: list[str] = field(default_factory=list)  # salvaged problems, in words


def _valid_at(data: bytes, offset: int) -> tuple[int, int] | None:
    """(lsn, length) of a whole record with a good checksum at `offset`, else None."""
    if offset + HEADER_BYTES > len(data):
        return None
    magic, length, lsn, crc = _HEADER.unpack_from(data, offset)
    end = offset + HEADER_BYTES + length
    if magic != MAGIC or end > len(data):
        return None
    if _crc(length, lsn, memoryview(data)[offset + HEADER_BYTES : end]) != crc:
        return None
    return lsn, length


def read_log(
    directory: str | os.PathLike, after: int = 0, salvage: bool = False, scan: LogScan | None = None
) -> Iterator[tuple[int, memoryview]]:
    """Yields (lsn, body) of every intact record with lsn > `after`, oldest first.

    Raises LogCorruptError on damage (see the module docstring), or, with ``salvage=True``,
    skips to the next intact record and describes what was skipped in ``scan.damage``. A torn
    tail ends the iteration and is described in ``scan.torn``.
    """
    scan = scan if scan is not None else LogScan()
    segments = _segments(Path(directory))
    expected: int | None = None
    for index, (first, path) in enumerate(segments):
        data = path.read_bytes()
        scan.bytes += len(data)
        last_segment = index == len(segments) - 1
        offset = 0
        while offset < len(data):
            found = _valid_at(data, offset)
            if found is None:
                resume = _next_valid(data, offset + 1)
                if resume is None and last_segment:
                    scan.torn = (path, offset, len(data) - offset)
                    return
                what = (f"{path}: damaged record at byte {offset} "
                        f"({(resume or len(data)) - offset} bytes unreadable)")
                if not salvage:
                    raise LogCorruptError(what)
                scan.damage.append(what)
                offset = resume if resume is not None else len(data)
                continue
            lsn, length = found
            if expected is None and offset == 0 and lsn != first:
                _damage(scan, salvage, f"{path}: first record has lsn {lsn}, the name says {first}")
            if expected is not None and lsn != expected:
                _damage(scan, salvage, f"{path}: byte {offset}: records {expected} to {lsn - 1} "
                                       "are missing")
            expected = lsn + 1
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


def _next_valid(data: bytes, start: int) -> int | None:
    offset = data.find(MAGIC, start)
    while offset != -1:
        if _valid_at(data, offset) is not None:
            return offset
        offset = data.find(MAGIC, offset + 1)
    return None


class TransitionLog:
    """Appends records to the newest segment of `directory`; see the module docstring.

    Open it after reading it: ``TransitionLog(directory, next_lsn=scan.last_lsn + 1,
    torn=scan.torn)`` cuts a torn tail off and continues numbering. Not thread-safe: one writer
    (the caller serialises append / commit / rotate / drop_through).
    """

    def __init__(self, directory: str | os.PathLike, next_lsn: int = 1, sync: str = "fsync",
                 torn: tuple[Path, int, int] | None = None, segment_bytes: int = 256 << 20):
        if sync not in SYNC_POLICIES:
            raise ValueError(f"sync must be one of {SYNC_POLICIES}, got {sync!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        self.segment_bytes = segment_bytes
        self.next_lsn = next_lsn
        if torn is not None:
            path, offset, _ = torn
            os.truncate(path, offset)
        self._fd: int | None = None
        self._size = 0
        self._dirty = False
        segments = _segments(self.directory)
        if segments:  # numbering never goes back, even when every record was dropped
            self.next_lsn = max(self.next_lsn, segments[-1][0])
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
        OSError raised, so the log never holds half a record followed by whole ones.
        """
        length = len(body)
        if length >= MAX_RECORD_BYTES:
            raise ValueError(f"log record of {length} bytes is too large")
        if self._fd is None or self._size >= self.segment_bytes:
            self.rotate()
        lsn = self.next_lsn
        header = _HEADER.pack(MAGIC, length, lsn, _crc(length, lsn, body))
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

    def commit(self) -> None:
        """Makes every appended record durable by the sync policy (fsync: on the disk)."""
        if self._dirty and self._fd is not None and self.sync == "fsync":
            os.fdatasync(self._fd)
        self._dirty = False

    def sync_handle(self) -> int | None:
        """For a sync outside the caller's lock: a duplicate of the segment's descriptor (the
        caller fdatasyncs and closes it; that covers every record appended so far), or None
        when nothing needs syncing. Records in earlier segments were synced by rotate()."""
        if not self._dirty or self._fd is None:
            return None
        self._dirty = False
        return os.dup(self._fd) if self.sync == "fsync" else None

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
        self.bytes -= freed
        return freed

    def close(self) -> None:
        if self._fd is not None:
            self.commit()
            os.close(self._fd)
            self._fd = None
