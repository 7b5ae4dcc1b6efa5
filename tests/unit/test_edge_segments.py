"""The disk buffer on real files: order, bounds, overflow policies, torn tails, truncation."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from aios.edge.segments import HEADER, DiskFull, LogFull, SegmentLog, free_bytes


def payloads(start: int, count: int, size: int = 100) -> list[bytes]:
    return [f"{i:08d}".encode().ljust(size, b".") for i in range(start, start + count)]


def test_records_read_back_in_order_across_segments_and_reopen(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, max_bytes=1 << 20, segment_bytes=4096, fsync="always")
    for i in range(0, 500, 50):
        assert log.append(payloads(i, 50)) == i
    assert len(list(tmp_path.glob("*.seg"))) > 5
    first, got = log.read(0, 1000)
    assert first == 0 and got == payloads(0, 500)
    log.close()
    again = SegmentLog(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    assert again.recovery.torn_records == 0 and again.end == 500
    assert again.read(123, 7) == (123, payloads(123, 7))
    assert again.read(490, 100, stop=495) == (490, payloads(490, 5))


def test_a_torn_tail_is_cut_off_counted_and_appending_continues(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, max_bytes=1 << 20)
    log.append(payloads(0, 10))
    log.close()
    last = sorted(tmp_path.glob("*.seg"))[-1]
    intact = last.stat().st_size
    with last.open("ab") as handle:  # a record whose write was cut short by a crash
        handle.write(HEADER.pack(100, zlib.crc32(b"x" * 100)) + b"x" * 40)
    reopened = SegmentLog(tmp_path, max_bytes=1 << 20)
    assert reopened.recovery.torn_records == 1
    assert reopened.recovery.torn_bytes == HEADER.size + 40
    assert last.stat().st_size == intact
    assert reopened.append(payloads(10, 1)) == 10
    assert reopened.read(0, 100)[1] == payloads(0, 11)


def test_a_corrupt_record_is_cut_with_everything_after_it(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, max_bytes=1 << 20)
    log.append(payloads(0, 10))
    log.close()
    path = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(path.read_bytes())
    data[5 * (HEADER.size + 100) + HEADER.size + 3] ^= 0xFF  # flip a bit in record 5
    path.write_bytes(bytes(data))
    reopened = SegmentLog(tmp_path, max_bytes=1 << 20)
    assert reopened.end == 5 and reopened.recovery.torn_records == 1
    assert reopened.read(0, 100)[1] == payloads(0, 5)


def test_drop_oldest_keeps_the_bound_and_counts_unread_records(tmp_path: Path) -> None:
    bound = 64 << 10
    log = SegmentLog(tmp_path, max_bytes=bound, overflow="dropOldest", segment_bytes=8 << 10)
    for i in range(0, 2000, 20):
        log.append(payloads(i, 20))
        assert log.size_bytes <= bound
        assert sum(p.stat().st_size for p in tmp_path.glob("*.seg")) <= bound
    first, got = log.read(0, 10_000)
    assert first > 0 and got == payloads(first, 2000 - first)
    assert log.dropped == first


def test_reject_new_refuses_and_keeps_everything(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, max_bytes=16 << 10, overflow="rejectNew", segment_bytes=4096)
    accepted = 0
    with pytest.raises(LogFull):
        for i in range(1000):
            log.append(payloads(i, 1))
            accepted += 1
    assert log.read(0, 10_000) == (0, payloads(0, accepted))
    log.release(accepted // 2)  # consumed: room again
    log.append(payloads(accepted, 1))


def test_an_append_that_would_eat_the_disk_reserve_is_refused_whole(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    log.append(payloads(0, 3))
    assert free_bytes(tmp_path) > 0
    log.reserve_bytes = 1 << 60  # more than any disk has: every append would eat into it
    with pytest.raises(DiskFull, match="free"):
        log.append(payloads(3, 1))
    assert log.read(0, 100) == (0, payloads(0, 3))
    log.reserve_bytes = 0
    assert log.append(payloads(3, 1)) == 3, "numbering goes on where it was"
    assert SegmentLog(tmp_path, max_bytes=1 << 20).read(0, 100) == (0, payloads(0, 4))


def test_release_deletes_consumed_segments_and_truncate_rolls_back(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, max_bytes=1 << 20, segment_bytes=2048)
    for i in range(0, 100, 10):
        log.append(payloads(i, 10))
    files = len(list(tmp_path.glob("*.seg")))
    log.release(60)
    assert len(list(tmp_path.glob("*.seg"))) < files
    assert log.read(60, 10) == (60, payloads(60, 10))
    assert log.truncate(75) == 25 and log.end == 75
    log.close()
    reopened = SegmentLog(tmp_path, max_bytes=1 << 20, segment_bytes=2048)
    assert reopened.end == 75 and reopened.recovery.torn_records == 0
    assert reopened.append(payloads(75, 1)) == 75


def test_interval_fsync_syncs_when_due(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    never = SegmentLog(tmp_path / "never", max_bytes=1 << 20, fsync="never")
    never.append(payloads(0, 3))
    assert synced == []
    interval = SegmentLog(
        tmp_path / "interval", max_bytes=1 << 20, fsync="interval", fsync_interval=0
    )
    interval.append(payloads(0, 3))
    assert len(synced) == 1
