"""Shared fixtures: generated test media (tests/media.py) and the browser players harness.

Media fixtures are session-scoped: each file is encoded once per pytest session into
`media_dir` and shared; tests must not modify them (copy first).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import media
import pytest

pytest_plugins = ["origin_fixtures", "redis_fixtures", "library_fixtures"]

if TYPE_CHECKING:
    from players.harness import PlayerBrowser


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session cache directory for generated media."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def av_moov_at_end(media_dir: Path) -> Path:
    return media.av_moov_at_end(media_dir)


@pytest.fixture(scope="session")
def av_faststart(media_dir: Path) -> Path:
    return media.av_faststart(media_dir)


@pytest.fixture(scope="session")
def multi_audio(media_dir: Path) -> Path:
    return media.multi_audio(media_dir)


@pytest.fixture(scope="session")
def audio_only(media_dir: Path) -> Path:
    return media.audio_only(media_dir)


@pytest.fixture(scope="session")
def video_only(media_dir: Path) -> Path:
    return media.video_only(media_dir)


@pytest.fixture(scope="session")
def ladder(media_dir: Path) -> list[Path]:
    return media.ladder(media_dir)


@pytest.fixture(scope="session")
def hevc(media_dir: Path) -> Path:
    return media.hevc(media_dir)


@pytest.fixture(scope="session")
def captions_vtt(media_dir: Path) -> Callable[[str], Path]:
    """Factory: captions_vtt("deu") -> path of a WebVTT file in that language."""

    def make(lang: str = "eng") -> Path:
        return media.captions_vtt(media_dir, lang)

    return make


@pytest.fixture(scope="session")
def co64_sparse(media_dir: Path, av_moov_at_end: Path) -> Path:
    """av_moov_at_end rewritten with its samples beyond 4 GiB (sparse, co64, moov at end)."""
    try:
        return media.co64_sparse(av_moov_at_end, media_dir / "co64_sparse.mp4")
    except media.SparseUnsupported as e:
        pytest.skip(f"co64 media needs sparse files: {e}")


@pytest.fixture(scope="session")
def browser() -> Iterator[PlayerBrowser]:
    """The session's headless Chromium with the player harness (see tests/players/harness.py).

    Skips when Chromium or the player scripts are missing, except under CI (CI env var set),
    where a missing browser is a broken setup and fails instead."""
    from players import harness

    reason = harness.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    shared = harness.shared_browser()
    yield shared
    harness.close_shared_browser()
