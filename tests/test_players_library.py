"""Real players play what the library made of an upload: the uploaded MP4 published as-is
as the top rung beside a lower rung encoded with its keyframes (hls.js, dash.js, Shaka)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import aiohttp
import pytest
from library_fixtures import auth
from origin_server import OriginThread
from players.harness import PlayerBrowser, PlayerName


async def upload_and_wait(origin: OriginThread, path: Path, processing: dict) -> str:
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(path.read_bytes()), filename=path.name)
        form.add_field("metadata", json.dumps({"title": "Uploaded lecture"}))
        form.add_field("processing", json.dumps(processing))
        async with session.post(origin.url("/api/media/upload"), data=form,
                                headers=auth()) as resp:
            assert resp.status == 201, await resp.text()
            media_id = (await resp.json())["id"]
        async with session.get(origin.url(f"/api/media/{media_id}/events"),
                               headers=auth()) as resp:
            lines = [line.decode() async for line in resp.content]
    done = lines[lines.index("event: done\n") + 1]
    assert json.loads(done.removeprefix("data: "))["status"] == "ready", lines[-4:]
    return media_id


CASES: list[tuple[PlayerName, str]] = [("hls", "master.m3u8"), ("dash", "manifest.mpd"),
                                       ("shaka", "master.m3u8")]


@pytest.mark.parametrize(("player", "entry"), CASES, ids=[f"{p}-{e}" for p, e in CASES])
async def test_players_play_a_processed_upload(browser: PlayerBrowser,
                                               library_origin: OriginThread,
                                               compliant_mp4: Path, player: PlayerName,
                                               entry: str) -> None:
    media_id = await upload_and_wait(library_origin, compliant_mp4,
                                     {"quality": ["360p", "240p"], "thumbnails": False})
    result = await browser.play(library_origin.url(f"/vod/{media_id}/{entry}"), player,
                                min_time=3.0, timeout=45.0)
    assert result.ok, result.summary()
    assert result.http_errors == []
    assert len(result.levels) == 2, result.levels
