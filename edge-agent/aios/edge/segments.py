"""An append-only log in segment files: what keeps readings through outages and crashes.

Each record is framed as ``length (u32) | crc32 (u32) | payload``; segments are named by
the sequence number of their first record. Writes go straight to the file descriptor (no
user-space buffer), so a ``kill -9`` loses nothing written; ``fsync`` (always, on an
interval, or never) decides what a power cut may lose. On open every record is checked:
a torn or corrupt tail is cut off and counted, never fatal. The total size is bounded:
``dropOldest`` deletes the oldest segment (its unread records counted as dropped),
``rejectNew`` refuses the append (the caller does not acknowledge, the sender retries).
The disk is a bound too: an append that would leave less than ``reserve_bytes`` free, or
that the file system refuses for want of space, is refused whole (``DiskFull``).
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

HEADER = struct.Struct("<II")
MAX_RECORD = 16 << 20
SUFFIX = ".seg"

Overflow = Literal["dropOldest", "rejectNew"]
Fsync = Literal["always", "interval", "never"]


class LogFull(Exception):
    """The log is at its byte bound and its policy is ``rejectNew``."""


class DiskFull(LogFull):
    """The file system under the log has no room for the append (nothing was written)."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(directory: Path) -> int:
    """What the file system under ``directory`` still lets an unprivileged writer use."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


@dataclass
class Segment:
    base: int
    path: Path
    offsets: array[int] = field(default_factory=lambda: array("q"))
    size: int = 0

    @property
    def end(self) -> int:
        return self.base + len(self.offsets)


@dataclass
class Recovery:
    """What opening the log found and repaired."""

    torn_records: int = 0
    torn_bytes: int = 0


class SegmentLog:
    """Records numbered from 0 in append order; read by number, released from the front."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        overflow: Overflow = "dropOldest",
        fsync: Fsync = "interval",
        segment_bytes: int | None = None,
        fsync_interval: float = 1.0,
        reserve_bytes: int = 0,
    ) -> None:
        """``reserve_bytes``: free space on the disk that appends leave for others (the
        processor's output, its checkpoint)."""
        self.directory = directory
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self.overflow: Overflow = overflow
        self.fsync: Fsync = fsync
        self.segment_bytes = segment_bytes or max(64 << 10, max_bytes // 8)
        self.fsync_interval = fsync_interval
        self.lock = threading.RLock()
        self.segments: list[Segment] = []
        self.dropped = 0  # records deleted unread by dropOldest
        self.read_floor = 0  # records below this were consumed (released) or are not needed
        self._fd: int | None = None
        self._last_sync = time.monotonic()
        self._dirty = False
        directory.mkdir(parents=True, exist_ok=True)
        self.recovery = self._open()

    # -- opening -----------------------------------------------------------------------
    def _open(self) -> Recovery:
        recovery = Recovery()
        paths = sorted(self.directory.glob(f"*{SUFFIX}"), key=lambda p: int(p.stem))
        for position, path in enumerate(paths):
            segment = Segment(int(path.stem), path)
            data = path.read_bytes()
            at = 0
            while at + HEADER.size <= len(data):
                length, crc = HEADER.unpack_from(data, at)
                end = at + HEADER.size + length
                if length > MAX_RECORD or end > len(data):
                    break
                if zlib.crc32(data[at + HEADER.size : end]) != crc:
                    break
                segment.offsets.append(at)
                at = end
            if at < len(data):  # a torn or corrupt tail: cut it off, count it
                recovery.torn_bytes += len(data) - at
                recovery.torn_records += 1
                with path.open("r+b") as handle:
                    handle.truncate(at)
                    os.fsync(handle.fileno())
            segment.size = at
            if segment.offsets or position == len(paths) - 1:
                self.segments.append(segment)
            else:
                path.unlink()
        if self.segments:
            self.read_floor = self.segments[0].base
        self._fd = None
        return recovery

    # -- sizes -------------------------------------------------------------------------
    @property
    def start(self) -> int:
        return self.segments[0].base if self.segments else self.read_floor

    @property
    def end(self) -> int:
        """Sequence number the next record gets."""
        return self.segments[-1].end if self.segments else self.read_floor

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    # -- writing -----------------------------------------------------------------------
    def append(self, payloads: Sequence[bytes]) -> int:
        """Append records in one write; return the sequence number of the first."""
        if not payloads:
            return self.end
        frames = b"".join(HEADER.pack(len(p), zlib.crc32(p)) + p for p in payloads)
        with self.lock:
            self._make_room(len(frames))
            if self.reserve_bytes and free_bytes(self.directory) - len(frames) < self.reserve_bytes:
                raise DiskFull(
                    f"the disk under {self.directory} has {free_bytes(self.directory)} bytes"
                    f" free; {self.reserve_bytes} are kept for the buffer"
                )
            segment = self._active(len(frames))
            self._write(frames, segment.size)
            first = segment.end
            at = segment.size
            for payload in payloads:
                segment.offsets.append(at)
                at += HEADER.size + len(payload)
            segment.size = at
            self._dirty = True
            if self.fsync == "always":
                self.sync()
            elif self.fsync == "interval":
                self.sync_if_due()
            return first

    def _write(self, frames: bytes, size: int) -> None:
        """Append ``frames`` to the active segment, now ``size`` bytes long: all of them or,
        when the disk has no room, none (a short write is cut off again)."""
        assert self._fd is not None
        try:
            written = os.write(self._fd, frames)
        except OSError as error:
            if error.errno not in NO_SPACE:
                raise
            written = -1
        if written != len(frames):
            os.ftruncate(self._fd, size)
            raise DiskFull(f"no space left on the disk under {self.directory}")

    def _make_room(self, size: int) -> None:
        if size > self.max_bytes:
            raise LogFull(f"a write of {size} bytes exceeds the log's {self.max_bytes} bytes")
        while self.size_bytes + size > self.max_bytes:
            if self.overflow == "rejectNew" or len(self.segments) <= 1:
                if self.overflow == "rejectNew":
                    raise LogFull(f"{self.directory.name} is full ({self.max_bytes} bytes)")
                self._roll()
            oldest = self.segments.pop(0)
            self.dropped += max(0, oldest.end - max(self.read_floor, oldest.base))
            self.read_floor = max(self.read_floor, oldest.end)
            oldest.path.unlink(missing_ok=True)

    def _roll(self) -> None:
        """Start a new segment so the current one can be deleted."""
        self._close_fd()
        base = self.end
        self.segments.append(Segment(base, self.directory / f"{base:020d}{SUFFIX}"))

    def _active(self, size: int) -> Segment:
        if not self.segments or (
            self.segments[-1].size and self.segments[-1].size + size > self.segment_bytes
        ):
            self._roll()
        segment = self.segments[-1]
        if self._fd is None:
            try:
                self._fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError as error:
                if error.errno in NO_SPACE:
                    raise DiskFull(f"no space left on the disk under {self.directory}") from error
                raise
        return segment

    def sync(self) -> None:
        with self.lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
            self._dirty = False
            self._last_sync = time.monotonic()

    def sync_if_due(self) -> None:
        if self.fsync == "interval" and time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()

    def _close_fd(self) -> None:
        if self._fd is not None:
            if self._dirty and self.fsync != "never":
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            self._dirty = False

    # -- reading and releasing ---------------------------------------------------------
    def read(self, first: int, limit: int, stop: int | None = None) -> tuple[int, list[bytes]]:
        """Up to ``limit`` records from ``first`` (or the oldest kept, if ``first`` was
        dropped) and before ``stop``; returns the sequence number of the first one read."""
        with self.lock:
            first = max(first, self.start)
            stop = self.end if stop is None else min(stop, self.end)
            out: list[bytes] = []
            at = first
            for segment in self.segments:
                if segment.end <= at or at >= stop:
                    continue
                upto = min(segment.end, stop, at + limit - len(out))
                begin = segment.offsets[at - segment.base]
                finish = (
                    segment.offsets[upto - segment.base] if upto < segment.end else segment.size
                )
                with segment.path.open("rb") as handle:
                    handle.seek(begin)
                    data = handle.read(finish - begin)
                position = 0
                for _ in range(upto - at):
                    length, _crc = HEADER.unpack_from(data, position)
                    start = position + HEADER.size
                    out.append(data[start : start + length])
                    position = start + length
                at = upto
                if len(out) >= limit:
                    break
            return first, out

    def release(self, upto: int) -> None:
        """Records before ``upto`` are done with: delete the segments that hold only those."""
        with self.lock:
            self.read_floor = max(self.read_floor, upto)
            while len(self.segments) > 1 and self.segments[0].end <= upto:
                self.segments.pop(0).path.unlink(missing_ok=True)

    def truncate(self, end: int) -> int:
        """Forget records from ``end`` on (written after the last checkpoint); return how
        many were cut."""
        with self.lock:
            cut = 0
            self._close_fd()
            while self.segments and self.segments[-1].end > end:
                segment = self.segments[-1]
                if segment.base >= end and len(self.segments) > 1:
                    cut += len(segment.offsets)
                    self.segments.pop().path.unlink(missing_ok=True)
                    continue
                keep = max(0, end - segment.base)
                cut += len(segment.offsets) - keep
                size = segment.offsets[keep] if keep < len(segment.offsets) else segment.size
                del segment.offsets[keep:]
                segment.size = size
                with segment.path.open("r+b") as handle:
                    handle.truncate(size)
                    os.fsync(handle.fileno())
            return cut

    def close(self) -> None:
        with self.lock:
            self._close_fd()
