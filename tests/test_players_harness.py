"""The browser harness itself works: each player plays ffmpeg's own HLS/DASH (served by a
plain static server with CORS) and reports a broken URL as an error instead of hanging.

If these fail, origin playback failures mean nothing; fix the harness first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import media
import pytest
from aiohttp.test_utils import TestServer
from players.harness import PlayerBrowser, PlayerName, static_media_app

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture(scope="session")
def reference_packages(media_dir: Path, av_faststart: Path) -> Path:
    """Directory holding ffmpeg's HLS and DASH of av_faststart."""
    media.static_hls(media_dir, av_faststart)
    media.static_dash(media_dir, av_faststart)
    return media_dir


@pytest.fixture
async def media_server(aiohttp_server: ServerFactory, reference_packages: Path) -> TestServer:
    return await aiohttp_server(static_media_app(reference_packages), host="127.0.0.1")


def manifest_url(server: TestServer, player: PlayerName, src: str = "av_faststart") -> str:
    if player == "dash":
        return str(server.make_url(f"/dash_{src}/manifest.mpd"))
    return str(server.make_url(f"/hls_{src}/master.m3u8"))


CASES: list[tuple[PlayerName, str]] = [("hls", "hls"), ("dash", "dash"), ("shaka", "hls"),
                                       ("shaka", "dash")]  # fmt: skip


@pytest.mark.parametrize(("player", "protocol"), CASES, ids=[f"{p}-{f}" for p, f in CASES])
async def test_reference_stream_plays(
    browser: PlayerBrowser, media_server: TestServer, player: PlayerName, protocol: str
) -> None:
    url = manifest_url(media_server, protocol)  # type: ignore[arg-type]
    result = await browser.play(url, player, min_time=3.0, timeout=30.0)
    assert result.ok, result.summary()
    assert result.reached_time >= 3.0
    assert result.errors == [] and result.http_errors == []
    assert (result.video_width, result.video_height) == (320, 240)
    assert any(r.endswith(".m4s") for r in result.requests), result.requests
    assert result.levels and result.levels[0]["height"] == 240, result.levels


@pytest.mark.parametrize("player", ["hls", "dash", "shaka"])
async def test_broken_url_is_an_error_not_a_hang(
    browser: PlayerBrowser, media_server: TestServer, player: PlayerName
) -> None:
    url = manifest_url(media_server, player).replace("av_faststart", "no_such_asset")
    result = await browser.play(url, player, min_time=3.0, timeout=20.0)
    assert not result.ok
    assert result.reached_time < 1.0
    assert result.errors, result.summary()
    assert not any(e.startswith("harness: timeout") for e in result.errors), result.summary()
    assert any(e.startswith("404 ") for e in result.http_errors), result.summary()


async def test_module_level_play_and_options(
    browser: PlayerBrowser, media_server: TestServer
) -> None:
    """play() (the shared browser) passes options to the player's config."""
    from players.harness import play

    options: dict[str, Any] = {"startPosition": 2.0}
    result = await play(manifest_url(media_server, "hls"), "hls", min_time=3.5, options=options)
    assert result.ok, result.summary()
    # Starting at 2 s means the first segment was never fetched.
    assert not any(r.endswith("seg_000.m4s") for r in result.requests), result.requests
