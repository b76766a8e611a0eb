"""A browser-style WHIP publisher (aiortc on 127.0.0.1) into the whole origin: the live
stream plays as HLS and DASH while it is published, the API reports WHIP ingest, and the
recording is in the library when the lecture ends. (tests/test_whip_ingest.py covers the
WHIP endpoint itself; tests/test_golive_page.py the browser page.)"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp
from library_fixtures import auth, library_config
from origin_server import OriginThread
from test_whip_ingest import close_publisher, publish


def probe_frames(url: str, stream: str = "v", limit: int = 10_000) -> tuple[int, str]:
    """(frames decoded, codec) of the first video or audio stream, at most `limit` frames
    (a live playlist never ends)."""
    codec = subprocess.run(["ffprobe", "-v", "error", "-select_streams", f"{stream}:0",
                            "-show_entries", "stream=codec_name", "-of", "csv=p=0", url],
                           capture_output=True, text=True, timeout=30, check=True).stdout
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", url, "-map", f"0:{stream}:0",
                          f"-frames:{stream}", str(limit), "-f", "framemd5", "-"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    frames = sum(1 for line in out.splitlines() if line and not line.startswith("#"))
    return frames, codec.split()[0]


async def test_whip_lecture_plays_live_and_is_recorded(tmp_path: Path) -> None:
    origin = OriginThread(library_config(tmp_path, live={"reconnect_grace": 30.0})).start()
    try:
        async with aiohttp.ClientSession(base_url=origin.base) as http:
            created = await http.post("/api/live", json={"title": "From the browser"},
                                      headers=auth())
            assert created.status == 201
            stream = await created.json()
            live_id, token = stream["id"], stream["whip"]["token"]
            assert stream["whip"]["url"] == f"/live/{live_id}/whip"
            pc, resp, _answer = await publish(http, live_id, token=token)
            assert resp.status == 201
            location = resp.headers["Location"]
            try:
                for _ in range(100):
                    r = await http.get(f"/live/{live_id}/video/index.m3u8")
                    if r.status == 200 and (await r.text()).count("#EXTINF") >= 2:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("no two segments within 10 s")
                info = await (await http.get(f"/api/live/{live_id}", headers=auth())).json()
                assert info["state"] == "live" and info["ingest"]["protocol"] == "whip"
                assert info["ingest"]["codecs"]["video"]["width"] == 320
                assert info["ingest"]["codecs"]["audio"]["codec"] == "aac"
                assert info["ingest"]["keyframeInterval"] == 2.0
                # Live HLS and DASH decode while the lecture goes on.
                for entry in ("master.m3u8", "manifest.mpd"):
                    frames, codec = await asyncio.to_thread(
                        probe_frames, origin.url(f"/live/{live_id}/{entry}"), "v", 30)
                    assert (codec, frames) == ("h264", 30), entry
                frames, codec = await asyncio.to_thread(
                    probe_frames, origin.url(f"/live/{live_id}/master.m3u8"), "a", 50)
                assert (codec, frames) == ("aac", 50)
                # A second publisher on the same stream is refused while the first is live.
                pc2, resp2, _ = await publish(http, live_id, token=token)
                assert resp2.status == 409
                await close_publisher(pc2)
                # The session ends with DELETE on its Location (same bearer token).
                assert (await http.delete(location, headers={
                    "Authorization": f"Bearer {token}"})).status == 200
            finally:
                await close_publisher(pc)
            for _ in range(50):
                info = await (await http.get(f"/api/live/{live_id}", headers=auth())).json()
                if info["state"] == "reconnecting":
                    break
                await asyncio.sleep(0.1)
            assert info["state"] == "reconnecting"
            ended = await http.delete(f"/api/live/{live_id}", headers=auth())
            assert ended.status == 200
            media_id = (await ended.json())["recording"]["mediaId"]
            frames, codec = await asyncio.to_thread(
                probe_frames, origin.url(f"/vod/{media_id}/master.m3u8"))
            assert codec == "h264" and frames >= 40
            # The WHIP token no longer publishes.
            pc3, resp3, _ = await publish(http, live_id, token=token)
            assert resp3.status == 403
            await close_publisher(pc3)
    finally:
        await asyncio.to_thread(origin.stop)
