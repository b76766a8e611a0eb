"""The media API end to end: multipart upload → processing job → published assets and playback.

Every test runs against a real origin + library (`library_origin`, SQLite, in-process jobs,
ultrafast x264) on 127.0.0.1 and judges the outputs with independent tools: ffprobe/ffmpeg for
renditions and manifests, Pillow for images, PyAV for decoded pixels. Waits follow the job's
Server-Sent Events and are bounded by asyncio.wait_for, so a stuck job fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import av
import media
import pytest
from ffmpeg_tools import duration_of, framemd5, keyframe_times, probe, streams
from library_fixtures import auth
from origin_server import OriginThread
from PIL import Image, ImageChops, ImageStat

from mediaorigin.origin.playback import REVALIDATE_SECONDS

# ffmpeg's MP4 demuxer and our HLS differ on the source's edit list; compare the same packets
# (see test_lossless.py).
SOURCE_ARGS = ("-ignore_editlist", "1")
DASH_NS = "{urn:mpeg:dash:schema:mpd:2011}"

Session = aiohttp.ClientSession
OnProgress = Callable[[dict[str, Any]], Awaitable[None]]


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
async def api(library_origin: OriginThread) -> AsyncIterator[Session]:
    """A client session on the origin, authenticated as admin; relative URLs resolve to it."""
    async with aiohttp.ClientSession(base_url=library_origin.base, headers=auth()) as session:
        yield session


def storage_root(origin: OriginThread) -> Path:
    return origin.config.path(origin.config.storage.root)


async def upload(session: Session, path: Path, metadata: dict[str, Any] | None = None,
                 processing: dict[str, Any] | None = None, *, filename: str | None = None,
                 url: str = "/api/media/upload", expect: int = 201) -> dict[str, Any]:
    """POST a multipart upload; returns the JSON body (the record plus jobId, or the error)."""
    with open(path, "rb") as f:
        form = aiohttp.FormData()
        form.add_field("file", f, filename=filename or path.name,
                       content_type="application/octet-stream")
        if metadata is not None:
            form.add_field("metadata", json.dumps(metadata), content_type="application/json")
        if processing is not None:
            form.add_field("processing", json.dumps(processing),
                           content_type="application/json")
        async with session.post(url, data=form) as resp:
            body = await resp.json()
            assert resp.status == expect, body
    return body


async def wait_done(session: Session, media_id: str, timeout: float = 60.0,
                    on_progress: OnProgress | None = None,
                    seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Follow /events until `event: done`; returns its state. Progress states go to `seen`
    and `on_progress` (awaited in order, while the stream stays open)."""

    async def follow() -> dict[str, Any]:
        async with session.get(f"/api/media/{media_id}/events") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/event-stream"
            event = None
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    state = json.loads(line.removeprefix("data:"))
                    if event == "done":
                        return state
                    if event == "progress":
                        if seen is not None:
                            seen.append(state)
                        if on_progress is not None:
                            await on_progress(state)
                elif not line:
                    event = None
        raise AssertionError(f"the event stream of {media_id} ended without `done`")

    return await asyncio.wait_for(follow(), timeout)


async def get_json(session: Session, url: str, expect: int = 200) -> dict[str, Any]:
    async with session.get(url) as resp:
        body = await resp.json()
        assert resp.status == expect, body
    return body


async def fetch(session: Session, url: str) -> tuple[int, str, bytes]:
    """GET → (status, content type, body); never a server error."""
    async with session.get(url) as resp:
        body = await resp.read()
        assert resp.status < 500, (url, resp.status, body[:300])
        return resp.status, resp.content_type, body


async def record(session: Session, media_id: str) -> dict[str, Any]:
    return await get_json(session, f"/api/media/{media_id}")


async def processed(session: Session, path: Path, processing: dict[str, Any] | None = None,
                    metadata: dict[str, Any] | None = None, timeout: float = 60.0
                    ) -> dict[str, Any]:
    """Upload, wait for the job to end successfully, return the final record."""
    created = await upload(session, path, metadata, processing)
    done = await wait_done(session, created["id"], timeout)
    assert done["jobStatus"] == "completed", done
    assert done["status"] == "ready", done
    return await record(session, created["id"])


async def run(fn: Callable[..., Any], *args: Any) -> Any:
    """Blocking tools (ffmpeg, ffprobe) off the test's event loop."""
    return await asyncio.to_thread(fn, *args)


def actions(rec: dict[str, Any]) -> list[str]:
    return [h["action"] for h in rec["processing"]["history"]]


def version(rec: dict[str, Any], height: int) -> dict[str, Any]:
    [found] = [v for v in rec["storage"]["versions"] if v["height"] == height]
    return found


def master_variants(master: str) -> list[tuple[str, str]]:
    """(RESOLUTION, URI) of each #EXT-X-STREAM-INF, in playlist order."""
    lines = master.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            m = re.search(r"RESOLUTION=(\d+x\d+)", line)
            out.append((m.group(1) if m else "", lines[i + 1]))
    return out


async def master_listing(session: Session, media_id: str, variants: int) -> str:
    """The HLS master once it lists `variants` variants. The origin re-reads an item's
    renditions at most every REVALIDATE_SECONDS, so a new publish shows within that."""
    deadline = time.monotonic() + REVALIDATE_SECONDS + 2.0
    while True:
        status, _, body = await fetch(session, f"/vod/{media_id}/master.m3u8")
        assert status == 200
        master = body.decode()
        if len(master_variants(master)) == variants or time.monotonic() > deadline:
            assert len(master_variants(master)) == variants, master
            return master
        await asyncio.sleep(0.2)


def video_representations(mpd: bytes) -> list[ET.Element]:
    root = ET.fromstring(mpd)
    reps = []
    for aset in root.iter(f"{DASH_NS}AdaptationSet"):
        kind = aset.get("contentType") or aset.get("mimeType", "").split("/")[0]
        for rep in aset.iter(f"{DASH_NS}Representation"):
            if (rep.get("mimeType") or "").startswith("video/") or kind == "video":
                reps.append(rep)
    return reps


# -- 1. passthrough: playable at once, lower rungs aligned -------------------------------------


async def test_compliant_mp4_plays_early_and_gets_an_aligned_ladder(
        library_origin: OriginThread, api: Session, compliant_mp4: Path) -> None:
    base = library_origin.base
    created = await upload(api, compliant_mp4, {"title": "Lecture 1"},
                           {"quality": ["360p", "240p"]})
    assert created["status"] == "processing" and created["jobId"]
    media_id = created["id"]
    early: list[tuple[dict[str, Any], dict[str, Any], int]] = []

    async def on_progress(state: dict[str, Any]) -> None:
        # The first state showing the media ready while its job still runs: it plays now.
        if state["status"] == "ready" and state["jobStatus"] == "running" and not early:
            rec = await record(api, media_id)
            status, _, _ = await fetch(api, f"/vod/{media_id}/master.m3u8")
            early.append((state, rec, status))

    done = await wait_done(api, media_id, on_progress=on_progress)
    assert done["jobStatus"] == "completed" and done["status"] == "ready"
    assert early, "the media never was ready while its job was still running"
    state, rec_early, master_status = early[0]
    assert state["stage"] in ("validation", "preprocessing", "transcoding")
    assert master_status == 200
    assert [v["quality"] for v in rec_early["storage"]["versions"]] == ["360p"]
    assert rec_early["storage"]["versions"][0]["url"].endswith("/original.mp4")

    rec = await record(api, media_id)
    hist = actions(rec)
    assert "transcode.needed" not in hist
    # The early publish happened after validation and before any transcoding.
    for step in ("passthrough", "published.early"):
        assert hist.index("validated") < hist.index(step) < hist.index("stage.transcoding")
    assert hist.index("stage.transcoding") < hist.index("job.completed")
    transcoding = next(h for h in rec["processing"]["history"]
                       if h["action"] == "stage.transcoding")
    assert transcoding["details"] == {"rungs": ["240p"], "passthrough": True}

    versions = rec["storage"]["versions"]
    assert [v["quality"] for v in versions] == ["360p", "240p"]
    top, low = versions
    assert top["url"].endswith("/g1/original.mp4")
    assert top["size"] == compliant_mp4.stat().st_size
    assert (top["width"], top["height"]) == (640, 360)
    assert low["height"] == 240 and low["width"] % 2 == 0
    assert rec["metadata"]["duration"] == pytest.approx(6.0, abs=0.1)
    assert rec["metadata"]["codec"] == "h264"

    for v, (w, h) in ((top, (640, 360)), (low, (low["width"], 240))):
        info = await run(probe, base + v["url"])
        [vs] = [s for s in info["streams"] if s["codec_type"] == "video"]
        [aud] = [s for s in info["streams"] if s["codec_type"] == "audio"]
        assert (vs["codec_name"], aud["codec_name"]) == ("h264", "aac")
        assert (vs["width"], vs["height"]) == (w, h)
    assert low["width"] in (426, 428)

    # Lower rung cut exactly where the uploaded top rendition has its keyframes.
    upload_keys = await run(keyframe_times, compliant_mp4)
    low_keys = await run(keyframe_times, base + low["url"])
    assert upload_keys == pytest.approx([0.0, 2.0, 4.0], abs=0.001)
    assert low_keys == pytest.approx(upload_keys, abs=0.001)

    master = await master_listing(api, media_id, 2)
    variants = master_variants(master)
    assert master.count("TYPE=AUDIO") == 1  # both rungs carry the same audio: listed once
    resolutions = [r for r, _ in variants]
    assert "640x360" in resolutions
    assert any(r.endswith("x240") for r in resolutions)

    # The passthrough variant of the HLS decodes to exactly the uploaded frames.
    n = resolutions.index("640x360")
    expected = await run(framemd5, compliant_mp4, "v:0", SOURCE_ARGS)
    got = await run(framemd5, f"{base}/vod/{media_id}/master.m3u8", f"p:{n}:v")
    assert len(got) == len(expected) == 150
    assert got == expected


# -- 2. transcoding a non-compliant upload ----------------------------------------------------


async def test_mkv_is_transcoded_to_an_aligned_h264_ladder(
        library_origin: OriginThread, api: Session, mpeg4_mkv: Path) -> None:
    base = library_origin.base
    rec = await processed(api, mpeg4_mkv, {"quality": ["360p", "240p"],
                                           "video": {"keyframe": 2}})
    media_id = rec["id"]
    hist = actions(rec)
    assert "transcode.needed" in hist
    assert "passthrough" not in hist and "published.early" not in hist
    assert rec["type"] == "video"
    assert rec["metadata"]["codec"] == "mpeg4"  # what was uploaded
    assert rec["metadata"]["dimensions"] == {"width": 640, "height": 360}

    versions = rec["storage"]["versions"]
    assert [v["height"] for v in versions] == [360, 240]
    assert [v["quality"] for v in versions] == ["360p", "240p"]
    assert all(v["format"] == "mp4" and "/g1/" in v["url"] for v in versions)
    assert not any(v["url"].endswith("original.mkv") for v in versions)
    keys = []
    for v in versions:
        url = base + v["url"]
        info = await run(probe, url)
        [vs] = [s for s in info["streams"] if s["codec_type"] == "video"]
        [aud] = [s for s in info["streams"] if s["codec_type"] == "audio"]
        assert (vs["codec_name"], aud["codec_name"]) == ("h264", "aac")
        assert vs["height"] == v["height"] and vs["width"] == v["width"]
        assert vs["width"] % 2 == 0
        assert float(info["format"]["duration"]) == pytest.approx(6.0, abs=0.1)
        keys.append(await run(keyframe_times, url))
    assert keys[0] == pytest.approx([0.0, 2.0, 4.0], abs=0.001)
    assert keys[1] == keys[0]

    status, ctype, mpd = await fetch(api, f"/vod/{media_id}/manifest.mpd")
    assert status == 200 and ctype == "application/dash+xml"
    reps = video_representations(mpd)
    assert sorted(int(r.get("height", 0)) for r in reps) == [240, 360]

    master_url = f"{base}/vod/{media_id}/master.m3u8"
    vstreams = await run(streams, master_url, "video")
    assert sorted(s["height"] for s in vstreams) == [240, 360]
    assert all(s["codec_name"] == "h264" for s in vstreams)
    status, _, body = await fetch(api, f"/vod/{media_id}/master.m3u8")
    assert status == 200
    [(_, first_uri), *_] = master_variants(body.decode())
    playlist = urljoin(master_url, first_uri)
    assert await run(duration_of, playlist) == pytest.approx(6.0, abs=0.1)


# -- 3. stills: thumbnails, sprite, poster, preview ---------------------------------------------


async def test_thumbnails_sprite_poster_and_preview(
        library_origin: OriginThread, api: Session, compliant_mp4: Path) -> None:
    base = library_origin.base
    rec = await processed(api, compliant_mp4, {"quality": ["360p"],
                                               "thumbnails": {"count": 4, "size": "320x180"}})
    storage = rec["storage"]
    duration = rec["metadata"]["duration"]
    thumbs = storage["thumbnails"]
    assert len(thumbs) == 4
    times = [t["time"] for t in thumbs]
    assert times == sorted(set(times))
    assert 0 <= times[0] and times[-1] < duration
    for t in thumbs:
        status, ctype, body = await fetch(api, t["url"])
        assert (status, ctype) == (200, "image/jpeg")
        with Image.open(io.BytesIO(body)) as img:
            assert img.format == "JPEG"
            w, h = img.size
        assert w <= 320 and h <= 180 and (w == 320 or h == 180)
        assert (t["width"], t["height"]) == (w, h)

    vtt_url = storage["sprite"]
    assert vtt_url and vtt_url.endswith(".vtt")
    status, ctype, body = await fetch(api, vtt_url)
    assert (status, ctype) == (200, "text/vtt")
    text = body.decode()
    assert text.startswith("WEBVTT")
    cues = re.findall(r"(\S+) --> (\S+)\n(\S+)", text)
    assert len(cues) == 3  # 6 s at the fixtures' 2 s sprite interval
    sheets: dict[str, tuple[int, int]] = {}
    for _, _, payload in cues:
        m = re.fullmatch(r"([^#]+)#xywh=(\d+),(\d+),(\d+),(\d+)", payload)
        assert m, payload
        assert re.fullmatch(r"sprite-\d+\.jpg", m.group(1))
        url = urljoin(base + vtt_url, m.group(1))
        if url not in sheets:
            status, ctype, img_body = await fetch(api, url)
            assert (status, ctype) == (200, "image/jpeg")
            with Image.open(io.BytesIO(img_body)) as img:
                sheets[url] = img.size
        x, y, w, h = (int(g) for g in m.groups()[1:])
        sw, sh = sheets[url]
        assert w > 0 and h > 0 and x + w <= sw and y + h <= sh

    status, ctype, body = await fetch(api, storage["poster"])
    assert (status, ctype) == (200, "image/jpeg")
    with Image.open(io.BytesIO(body)) as img:
        assert img.format == "JPEG"

    status, ctype, body = await fetch(api, storage["preview"])
    assert (status, ctype) == (200, "video/mp4")
    preview = await run(probe, base + storage["preview"])
    assert float(preview["format"]["duration"]) == pytest.approx(2.0, abs=0.15)
    assert [s["codec_name"] for s in preview["streams"] if s["codec_type"] == "video"] == \
        ["h264"]


# -- 4-6. audio, image, document --------------------------------------------------------------


async def test_mp3_becomes_an_aac_audio_ladder(
        library_origin: OriginThread, api: Session, podcast_mp3: Path) -> None:
    base = library_origin.base
    rec = await processed(api, podcast_mp3, {"thumbnails": {"count": 4}})
    media_id = rec["id"]
    assert rec["type"] == "audio"
    assert "transcode.needed" in actions(rec)
    versions = rec["storage"]["versions"]
    names = [v["url"].rsplit("/", 1)[1] for v in versions]
    assert names == ["audio-128k.m4a", "audio-64k.m4a"]
    for v in versions:
        status, ctype, _ = await fetch(api, v["url"])
        assert (status, ctype) == (200, "audio/mp4")
        info = await run(probe, base + v["url"])
        assert [s["codec_name"] for s in info["streams"]] == ["aac"]
        assert float(info["format"]["duration"]) == pytest.approx(5.0, abs=0.1)
        assert v["width"] is None and v["height"] is None
    assert rec["storage"]["thumbnails"] == []
    assert rec["storage"]["poster"] is None and rec["storage"]["sprite"] is None
    assert rec["streaming"]["urls"]["hls"] == f"/vod/{media_id}/master.m3u8"

    status, _, _ = await fetch(api, f"/vod/{media_id}/master.m3u8")
    assert status == 200
    master_url = f"{base}/vod/{media_id}/master.m3u8"
    assert await run(streams, master_url, "video") == []
    assert await run(duration_of, master_url) == pytest.approx(5.0, abs=0.15)


async def test_png_becomes_image_variants(
        library_origin: OriginThread, api: Session, slide_png: Path) -> None:
    rec = await processed(api, slide_png, {"quality": ["240p"]})
    media_id = rec["id"]
    assert rec["type"] == "image"
    assert rec["metadata"]["dimensions"] == {"width": 1600, "height": 900}
    versions = rec["storage"]["versions"]
    assert versions
    widths = []
    for v in versions:
        status, ctype, body = await fetch(api, v["url"])
        assert status == 200 and ctype.startswith("image/")
        with Image.open(io.BytesIO(body)) as img:
            w, h = img.size
        assert (v["width"], v["height"]) == (w, h)
        assert w <= 1600
        assert h == round(w * 9 / 16) or abs(h - w * 9 / 16) <= 1
        widths.append(w)
    assert 1280 in widths
    assert widths == sorted(widths, reverse=True)
    assert rec["streaming"]["urls"] == {"hls": None, "dash": None, "smooth": None}
    assert len(rec["storage"]["thumbnails"]) == 1
    for entry in ("master.m3u8", "manifest.mpd"):
        async with api.get(f"/vod/{media_id}/{entry}") as resp:
            assert resp.status == 404
            assert resp.content_type == "application/json"
            assert (await resp.json())["error"]["code"] == "media_not_found"


async def test_pdf_is_a_document_with_a_first_page_thumbnail(
        api: Session, handout_pdf: Path) -> None:
    rec = await processed(api, handout_pdf)
    assert rec["type"] == "document"
    assert rec["metadata"]["pages"] == 3
    assert rec["storage"]["versions"] == []
    assert rec["streaming"]["urls"]["hls"] is None
    doc = rec["storage"]["document"]
    status, ctype, body = await fetch(api, doc["url"])
    assert (status, ctype) == (200, "application/pdf")
    assert body == handout_pdf.read_bytes() and doc["size"] == len(body)
    [thumb] = rec["storage"]["thumbnails"]
    assert thumb["time"] == 0.0
    status, ctype, body = await fetch(api, thumb["url"])
    assert (status, ctype) == (200, "image/jpeg")
    with Image.open(io.BytesIO(body)) as img:
        assert img.format == "JPEG"
        w, h = img.size
    assert h > w  # the A4 portrait page
    assert (thumb["width"], thumb["height"]) == (w, h)


# -- 7. bad input -------------------------------------------------------------------------------


def _png_bytes(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(out, "PNG")
    return out.getvalue()


def _zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("readme.txt", "harmless text " * 50)
    return out.getvalue()


def _jpeg_with_pdf_header() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 64), (20, 180, 40)).save(out, "JPEG", comment=b"%PDF-1.7\n1 0 obj")
    return out.getvalue()


@pytest.mark.parametrize(("name", "codes"), [
    ("notes.txt", {"not_media"}),
    ("truncated.mp4", {"corrupt", "not_media"}),
    ("zip-appended.png", {"polyglot"}),
    ("pdf-header.jpg", {"polyglot"}),
    ("random.mp4", {"not_media"}),
])
async def test_bad_uploads_fail_with_a_reason(
        library_origin: OriginThread, api: Session, compliant_mp4: Path, tmp_path: Path,
        name: str, codes: set[str]) -> None:
    path = tmp_path / name
    if name == "notes.txt":
        path.write_text("Lecture notes, week 1\n" * 40)
    elif name == "truncated.mp4":
        size = compliant_mp4.stat().st_size
        path = media.truncated(compliant_mp4, int(size * 0.3), tmp_path)
    elif name == "zip-appended.png":
        path.write_bytes(_png_bytes((30, 90, 160)) + _zip_bytes())
    elif name == "pdf-header.jpg":
        path.write_bytes(_jpeg_with_pdf_header())
    else:
        path = media.garbage(tmp_path, 4096, name)
    created = await upload(api, path, {"title": "broken"}, {"quality": ["240p"]},
                           filename=name)
    media_id = created["id"]
    done = await wait_done(api, media_id)
    assert done["jobStatus"] == "failed" and done["status"] == "failed"

    status = await get_json(api, f"/api/media/{media_id}/status")
    assert status["status"] == "failed" and status["jobStatus"] == "failed"
    assert status["error"]["code"] in codes, status["error"]
    assert status["error"]["message"]
    # The reason names no server path (storage layout is nobody's business).
    assert str(storage_root(library_origin)) not in status["error"]["message"]
    rec = await record(api, media_id)
    assert rec["status"] == "failed"
    assert rec["storage"]["versions"] == [] and rec["streaming"]["urls"]["hls"] is None
    assert rec["processing"]["error"] == status["error"]["message"]
    assert "job.failed" in actions(rec)
    for entry in ("master.m3u8", "master-ts.m3u8", "manifest.mpd"):
        code, ctype, _ = await fetch(api, f"/vod/{media_id}/{entry}")
        assert (code, ctype) == (404, "application/json")
    # Nothing was published, so not even the upload is served back.
    suffix = Path(name).suffix
    code, _, _ = await fetch(api, f"/vod/{media_id}/assets/g1/original{suffix}")
    assert code == 404


async def _post_form(session: Session, form: aiohttp.FormData | bytes,
                     headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with session.post("/api/media/upload", data=form, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_multipart_errors(api: Session, compliant_mp4: Path) -> None:
    data = compliant_mp4.read_bytes()[:4096]

    def form(file: bytes | None = data, metadata: str | None = None,
             processing: str | None = None) -> aiohttp.FormData:
        f = aiohttp.FormData()
        if file is not None:
            f.add_field("file", file, filename="a.mp4", content_type="video/mp4")
        if metadata is not None:
            f.add_field("metadata", metadata, content_type="application/json")
        if processing is not None:
            f.add_field("processing", processing, content_type="application/json")
        return f

    cases: list[tuple[aiohttp.FormData, int, str]] = [
        (form(None, metadata='{"title": "x"}'), 400, "missing_file"),
        (form(metadata="{not json"), 400, "invalid_json"),
        (form(metadata='["a list"]'), 400, "invalid_json"),
        (form(processing='{"quality": ["240p"], "resolution": 5}'), 422, "invalid_field"),
        (form(processing='{"quality": ["999p"]}'), 422, "invalid_field"),
        (form(processing='{"quality": []}'), 422, "invalid_field"),
        (form(processing='{"thumbnails": {"size": "big"}}'), 422, "invalid_field"),
        (form(processing='{"video": {"codec": "vp9"}}'), 422, "invalid_field"),
        (form(metadata='{"type": "hologram"}'), 422, "invalid_field"),
        (form(b""), 422, "empty_file"),
    ]
    for body, status, code in cases:
        got_status, got = await _post_form(api, body)
        assert (got_status, got["error"]["code"]) == (status, code), got
    got_status, got = await _post_form(api, b'{"file": "no"}',
                                       {"Content-Type": "application/json"})
    assert (got_status, got["error"]["code"]) == (415, "unsupported_media_type")
    async with aiohttp.ClientSession(base_url=api._base_url) as anonymous:
        async with anonymous.post("/api/media/upload", data=form()) as resp:
            assert resp.status == 401
    # Nothing was created, and no spool file stays behind.
    listing = await get_json(api, "/api/media")
    assert listing["items"] == []


# -- 8. watermark -------------------------------------------------------------------------------


def _frame(path: Path, index: int) -> Image.Image:
    with av.open(str(path)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n == index:
                return frame.to_image()
    raise AssertionError(f"{path} has fewer than {index + 1} frames")


def _mean(img: Image.Image, box: tuple[int, int, int, int]) -> float:
    return ImageStat.Stat(img.crop(box)).mean[0]


async def _download(session: Session, url: str, out: Path) -> Path:
    status, _, body = await fetch(session, url)
    assert status == 200
    out.write_bytes(body)
    return out


async def test_watermark_is_burned_into_the_bottom_right(
        api: Session, mpeg4_mkv: Path, tmp_path: Path) -> None:
    marked, plain = await asyncio.gather(
        processed(api, mpeg4_mkv, {"quality": ["240p"], "thumbnails": False,
                                   "watermark": {"text": "CONFIDENTIAL",
                                                 "position": "bottom-right"}}),
        processed(api, mpeg4_mkv, {"quality": ["240p"], "thumbnails": False}))
    assert marked["processing"]["settings"]["watermark"]["text"] == "CONFIDENTIAL"
    files = []
    for name, rec in (("marked", marked), ("plain", plain)):
        [v] = rec["storage"]["versions"]
        assert v["height"] == 240
        files.append(await _download(api, v["url"], tmp_path / f"{name}.mp4"))
    mark: tuple[int, int, int, int] | None = None
    # Keyframes (every 2 s) are encoded alike but for the mark; P-frames also differ a little
    # everywhere, since the mark's bits shift the rate control.
    for index in (0, 50, 100, 140):
        a, b = await asyncio.gather(run(_frame, files[0], index), run(_frame, files[1], index))
        assert a.size == b.size == (v["width"], 240)
        w, h = a.size
        diff = ImageChops.difference(a.convert("L"), b.convert("L"))
        if index % 50 == 0:
            # Where the pictures clearly differ: a small box in the bottom-right corner (at
            # 240p the mark is 15 % of the width, about 62x8 px), and nowhere else.
            changed = diff.point(lambda d: 255 if d > 12 else 0).getbbox()
            assert changed is not None, "no watermark in the picture"
            x0, y0, x1, y1 = changed
            assert x0 >= w * 3 // 4 and y0 >= h * 7 // 8 and x1 <= w and y1 <= h, changed
            assert (x1 - x0) >= w // 10 and (y1 - y0) >= 4
            # The same place on every keyframe (give or take the encoder's rounding at the
            # mark's edges).
            near = mark is None or all(abs(p - q) <= 4
                                       for p, q in zip(changed, mark, strict=True))
            assert near, (changed, mark)
            mark = changed if mark is None else (min(mark[0], x0), min(mark[1], y0),
                                                 max(mark[2], x1), max(mark[3], y1))
        assert mark is not None
        assert _mean(diff, mark) > 5
        assert _mean(diff, (0, 0, w // 4, h // 4)) < 2
        assert _mean(diff, (0, 0, w, h * 3 // 4)) < 2


# -- 9. processing again ------------------------------------------------------------------------


async def test_reprocess_replaces_the_renditions(
        library_origin: OriginThread, api: Session, mpeg4_mkv: Path) -> None:
    rec = await processed(api, mpeg4_mkv, {"quality": ["360p", "240p"]})
    media_id = rec["id"]
    first_job = rec["processing"]["jobId"]
    assert [v["height"] for v in rec["storage"]["versions"]] == [360, 240]
    assert rec["storage"]["thumbnails"]

    body = {"quality": ["240p"], "thumbnails": False}
    async with api.post(f"/api/media/{media_id}/process", json=body) as resp:
        assert resp.status == 202
        started = await resp.json()
    job_id = started["jobId"]
    assert job_id != first_job and started["job"]["type"] == "reprocess"
    assert started["job"]["generation"] == 1
    assert started["job"]["status"] in ("queued", "running")
    async with api.post(f"/api/media/{media_id}/process", json=body) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "job_in_progress"
    # Still playable while the job runs.
    status, _, _ = await fetch(api, f"/vod/{media_id}/master.m3u8")
    assert status == 200

    done = await wait_done(api, media_id)
    assert (done["jobId"], done["jobStatus"], done["status"]) == (job_id, "completed", "ready")
    rec = await record(api, media_id)
    [v] = rec["storage"]["versions"]
    assert (v["quality"], v["height"]) == ("240p", 240)
    assert rec["storage"]["thumbnails"] == []
    assert rec["processing"]["settings"]["quality"] == ["240p"]
    assert actions(rec).count("job.completed") == 2
    master = await master_listing(api, media_id, 1)
    assert [r.split("x")[1] for r, _ in master_variants(master)] == ["240"]
    info = await run(probe, library_origin.base + v["url"])
    assert [s["height"] for s in info["streams"] if s["codec_type"] == "video"] == [240]

    async with api.post("/api/media/nosuchmedia/process", json=body) as resp:
        assert resp.status == 404
    async with api.post(f"/api/media/{media_id}/process", json={"quality": "240p"}) as resp:
        assert resp.status == 422


# -- 10. cancel and retry -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_mkv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("long") / "long.mkv"
    media.run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=40",
                      "-f", "lavfi", "-i", "sine=frequency=330:duration=40", "-ac", "2",
                      "-c:v", "mpeg4", "-q:v", "8", "-c:a", "libmp3lame", str(out)])
    return out


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_cancel_cleans_up_and_retry_completes(
        library_origin: OriginThread, api: Session, long_mkv: Path) -> None:
    created = await upload(api, long_mkv, None, {"quality": ["360p", "240p"]})
    media_id, job_id = created["id"], created["jobId"]
    cancelled: list[dict[str, Any]] = []

    async def on_progress(state: dict[str, Any]) -> None:
        if state["stage"] == "transcoding" and not cancelled:
            async with api.post(f"/api/jobs/{job_id}/cancel") as resp:
                assert resp.status == 200
                cancelled.append(await resp.json())

    done = await wait_done(api, media_id, on_progress=on_progress)
    assert cancelled, "the job never reached transcoding"
    assert cancelled[0]["status"] == "cancelled"
    assert cancelled[0]["error"]["code"] == "cancelled"
    # `done` reports the settled media status, never a transient "processing".
    assert done["jobStatus"] == "cancelled" and done["status"] == "failed"
    job = await get_json(api, f"/api/jobs/{job_id}")
    assert job["status"] == "cancelled"
    async with api.post(f"/api/jobs/{job_id}/cancel") as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "job_finished"

    # The worker notices the cancel, stops encoding and removes what it had made.
    async def settled() -> bool:
        gens = (await record(api, media_id))["storage"]["generations"]
        return gens[0]["status"] == "cancelled"

    await _until(settled)
    rec = await record(api, media_id)
    assert rec["status"] == "failed" and rec["storage"]["versions"] == []
    code, _, _ = await fetch(api, f"/vod/{media_id}/master.m3u8")
    assert code == 404
    folder = storage_root(library_origin) / "media" / media_id / "g1"
    left = sorted(p.name for p in folder.iterdir())
    assert left == ["original.mkv"], left

    async with api.post(f"/api/jobs/{job_id}/retry") as resp:
        assert resp.status == 202
        retried = await resp.json()
    assert retried["id"] == job_id and retried["status"] in ("queued", "running")
    done = await wait_done(api, media_id, timeout=90)
    assert (done["jobStatus"], done["status"]) == ("completed", "ready")
    rec = await record(api, media_id)
    assert [v["height"] for v in rec["storage"]["versions"]] == [360, 240]
    assert rec["metadata"]["duration"] == pytest.approx(40.0, abs=0.1)
    job = await get_json(api, f"/api/jobs/{job_id}")
    assert job["attempts"] == 2
    hist = actions(rec)
    assert hist.index("job.cancelled") < hist.index("job.retried") < hist.index("job.completed")
    async with api.post(f"/api/jobs/{job_id}/retry") as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "job_not_retryable"


# -- 11. new versions ---------------------------------------------------------------------------


async def test_new_version_replaces_the_old_one_which_can_be_purged(
        library_origin: OriginThread, api: Session, compliant_mp4: Path,
        mpeg4_mkv: Path) -> None:
    rec = await processed(api, compliant_mp4, {"quality": ["360p", "240p"]})
    media_id = rec["id"]
    old_urls = [v["url"] for v in rec["storage"]["versions"]]
    assert len(old_urls) == 2

    second = await upload(api, mpeg4_mkv, {"title": "Lecture 1 (v2)"},
                          {"quality": ["240p"], "thumbnails": False},
                          url=f"/api/media/{media_id}/upload")
    assert second["id"] == media_id and second["jobId"] != rec["processing"]["jobId"]
    assert second["title"] == "Lecture 1 (v2)"
    # Generation 1 keeps playing while generation 2 is processed.
    status = await get_json(api, f"/api/media/{media_id}/status")
    assert status["jobId"] == second["jobId"]
    assert status["jobStatus"] in ("queued", "running") and status["status"] == "ready"
    code, _, master = await fetch(api, f"/vod/{media_id}/master.m3u8")
    assert code == 200 and len(master_variants(master.decode())) == 2
    gens = {g["generation"]: g for g in second["storage"]["generations"]}
    assert gens[1]["current"] and not gens[2]["current"]
    assert gens[2]["status"] == "processing" and gens[2]["sourceName"] == mpeg4_mkv.name

    done = await wait_done(api, media_id)
    assert (done["jobStatus"], done["status"]) == ("completed", "ready")
    rec = await record(api, media_id)
    gens = {g["generation"]: g for g in rec["storage"]["generations"]}
    assert sorted(gens) == [1, 2]
    assert gens[2]["current"] and gens[2]["status"] == "ready"
    assert not gens[1]["current"]
    [v] = rec["storage"]["versions"]
    assert v["height"] == 240 and "/g2/" in v["url"]
    master = await master_listing(api, media_id, 1)
    assert [r for r, _ in master_variants(master)] == [f"{v['width']}x240"]
    # Old versions' files stay reachable until purged (URLs name the generation).
    for url in old_urls:
        assert (await fetch(api, url))[0] == 200

    g1 = storage_root(library_origin) / "media" / media_id / "g1"
    assert g1.is_dir()
    async with api.delete(f"/api/media/{media_id}/versions/2") as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "version_current"
    async with api.delete(f"/api/media/{media_id}/versions/1") as resp:
        assert resp.status == 204
    assert not g1.exists()
    for url in old_urls:
        assert (await fetch(api, url))[0] == 404
    async with api.delete(f"/api/media/{media_id}/versions/1") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "version_not_found"
    rec = await record(api, media_id)
    gens = {g["generation"]: g for g in rec["storage"]["generations"]}
    assert gens[1]["status"] == "purged" and gens[2]["current"]
    assert "version.purged" in actions(rec)
    code, _, _ = await fetch(api, f"/vod/{media_id}/master.m3u8")
    assert code == 200
