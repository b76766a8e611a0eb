"""Playback.prepare under a crowd: one look at the library per media item at a time.

The library lookup here is a stub that counts its calls and answers "no such media" after a
pause (the real one is a database query; what is tested is how many are made). The storage
and caches are the real ones, on a temporary directory."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediaorigin.library.records import PlayableItem
from mediaorigin.origin.cache import IndexCache, SegmentCache
from mediaorigin.origin.playback import Playback, PlaybackError
from mediaorigin.storage.local import LocalStorage


class CountingLookup:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, media_id: str) -> PlayableItem | None:
        self.calls.append(media_id)
        await self.release.wait()
        return None


@pytest.fixture
def lookup() -> CountingLookup:
    return CountingLookup()


@pytest.fixture
def pb(tmp_path: Path, lookup: CountingLookup) -> Iterator[Playback]:
    storage = LocalStorage(tmp_path / "media")
    playback = Playback(lookup, storage, IndexCache(storage, tmp_path / "cache", 8),
                        SegmentCache(tmp_path / "cache", 0, 0), 4.0)
    yield playback
    playback.close()


async def test_a_crowd_shares_one_lookup(pb: Playback, lookup: CountingLookup) -> None:
    crowd = [asyncio.ensure_future(pb.prepare("m1", None)) for _ in range(50)]
    other = asyncio.ensure_future(pb.prepare("m2", None))
    await asyncio.sleep(0.01)
    assert lookup.calls == ["m1", "m2"]
    lookup.release.set()
    results = await asyncio.gather(*crowd, other, return_exceptions=True)
    assert all(isinstance(r, PlaybackError) and r.status == 404 for r in results)
    # The next request looks again (nothing was found, nothing is kept).
    with pytest.raises(PlaybackError):
        await pb.prepare("m1", None)
    assert lookup.calls == ["m1", "m2", "m1"]


async def test_a_client_that_leaves_does_not_fail_the_others(pb: Playback,
                                                            lookup: CountingLookup) -> None:
    first = asyncio.ensure_future(pb.prepare("m1", None))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(pb.prepare("m1", None))
    await asyncio.sleep(0.01)
    first.cancel()  # the client that started the lookup disconnects
    await asyncio.sleep(0.01)
    lookup.release.set()
    with pytest.raises(PlaybackError) as caught:
        await second
    assert caught.value.code == "media_not_found"
    assert first.cancelled() and lookup.calls == ["m1"]


async def test_a_publish_is_not_answered_by_a_lookup_begun_before_it(
        pb: Playback, lookup: CountingLookup) -> None:
    before = asyncio.ensure_future(pb.prepare("m1", None))
    await asyncio.sleep(0.01)
    pb.revalidate("m1")  # the library published a new version meanwhile
    after = asyncio.ensure_future(pb.prepare("m1", None))
    await asyncio.sleep(0.01)
    assert lookup.calls == ["m1", "m1"]
    lookup.release.set()
    for waiter in (before, after):
        with pytest.raises(PlaybackError):
            await waiter
