"""The segment cache's disk budget holds across restarts (files from earlier runs count)."""

from __future__ import annotations

from pathlib import Path

from mediaorigin.origin.cache import SegmentCache


def disk_usage(cache: SegmentCache) -> int:
    return sum(f.stat().st_size for f in cache.dir.rglob("*") if f.is_file())


def test_disk_budget_counts_earlier_runs(tmp_path: Path) -> None:
    budget = 10_000
    first = SegmentCache(tmp_path, memory_bytes=0, disk_bytes=budget)
    for n in range(9):
        first.put(f"seg-{n}", bytes(1000))
    assert disk_usage(first) == 9000
    restarted = SegmentCache(tmp_path, memory_bytes=0, disk_bytes=budget)
    for n in range(9, 12):
        restarted.put(f"seg-{n}", bytes(1000))
    assert disk_usage(restarted) <= budget
    # The newest entries survive the trim; the oldest went first.
    assert restarted.get("seg-11") is not None
    assert restarted.get("seg-0") is None


def test_memory_tier_then_disk_tier(tmp_path: Path) -> None:
    cache = SegmentCache(tmp_path, memory_bytes=1500, disk_bytes=10_000)
    cache.put("a", b"x" * 1000)
    cache.put("b", b"y" * 1000)  # evicts "a" from memory; it stays on disk
    hit_a, hit_b = cache.get("a"), cache.get("b")
    assert hit_a is not None and hit_a.data is None and hit_a.path is not None
    assert hit_a.path.read_bytes() == b"x" * 1000
    assert hit_b is not None and hit_b.data == b"y" * 1000
    assert SegmentCache(tmp_path, 0, 0).get("a") is None  # disk tier disabled
