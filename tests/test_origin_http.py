"""HTTP behaviour CDNs and players depend on, through the real server."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from origin_server import OriginThread, make_config, request

from mediaorigin.packaging import urls


@pytest.fixture(scope="module")
def media_id(origin: OriginThread, av_faststart: Path, media_dir: Path) -> str:
    import media

    return origin.add([av_faststart], "http test", [("en", media.captions_vtt(media_dir))])


def child_urls(text: str) -> list[str]:
    """Every URI in a playlist: plain lines and URI="..." attributes."""
    found = re.findall(r'URI="([^"]+)"', text)
    found += [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    return found


def test_content_types_and_lengths(origin: OriginThread, media_id: str) -> None:
    expected = {
        "master.m3u8": "application/vnd.apple.mpegurl",
        "master-ts.m3u8": "application/vnd.apple.mpegurl",
        "manifest.mpd": "application/dash+xml",
        "v0/media.m3u8": "application/vnd.apple.mpegurl",
        "v0/init.mp4": "video/mp4",
        "v0/seg-1.m4s": "video/iso.segment",
        "v0/seg-1.ts": "video/mp2t",
        "s0/seg-1.vtt": "text/vtt",
    }
    for path, ctype in expected.items():
        r = origin.get(f"/vod/{media_id}/{path}")
        assert r.status == 200, path
        assert r.headers["content-type"].startswith(ctype), path
        assert int(r.headers["content-length"]) == len(r.body), path


def test_query_is_carried_onto_every_child(origin: OriginThread, media_id: str) -> None:
    q = "token=abc%2Fdef&x=1"
    seen = 0
    for entry in ("master.m3u8", "master-ts.m3u8"):
        master = origin.get(f"/vod/{media_id}/{entry}?{q}").body.decode()
        for uri in child_urls(master):
            assert uri.endswith("?token=abc%2Fdef&x=1"), uri
            playlist = origin.get(f"/vod/{media_id}/{uri}")
            assert playlist.status == 200, uri
            rid = uri.split("/")[0]
            for child in child_urls(playlist.body.decode()):
                assert child.endswith("?token=abc%2Fdef&x=1"), child
                assert origin.get(f"/vod/{media_id}/{rid}/{child}").status == 200
                seen += 1
    assert seen > 10
    mpd = origin.get(f"/vod/{media_id}/manifest.mpd?{q}").body.decode()
    assert "seg-$Number$.m4s?token=abc%2Fdef&amp;x=1" in mpd


def test_range_requests(origin: OriginThread, media_id: str) -> None:
    path = f"/vod/{media_id}/v0/seg-1.m4s"
    full = origin.get(path).body
    r = origin.get(path, {"Range": "bytes=10-19"})
    assert r.status == 206
    assert r.body == full[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(full)}"
    r = origin.get(path, {"Range": "bytes=-5"})
    assert (r.status, r.body) == (206, full[-5:])
    r = origin.get(path, {"Range": f"bytes={len(full) - 3}-"})
    assert (r.status, r.body) == (206, full[-3:])
    r = origin.get(path, {"Range": f"bytes={len(full)}-"})
    assert r.status == 416
    assert r.headers["content-range"] == f"bytes */{len(full)}"
    r = origin.get(path, {"Range": "bytes=0-1,5-6"})  # multi-range: whole body is allowed
    assert (r.status, r.body) == (200, full)
    r = origin.get(path, {"Range": "bytes=0-3", "If-Range": '"stale"'})
    assert (r.status, r.body) == (200, full)


def test_conditional_requests_and_caching_headers(origin: OriginThread, media_id: str) -> None:
    seg = origin.get(f"/vod/{media_id}/v0/seg-2.m4s")
    assert "immutable" in seg.headers["cache-control"]
    etag, modified = seg.headers["etag"], seg.headers["last-modified"]
    r = origin.get(f"/vod/{media_id}/v0/seg-2.m4s", {"If-None-Match": etag})
    assert (r.status, r.body) == (304, b"")
    r = origin.get(f"/vod/{media_id}/v0/seg-2.m4s", {"If-None-Match": '"other"'})
    assert r.status == 200
    r = origin.get(f"/vod/{media_id}/v0/seg-2.m4s", {"If-Modified-Since": modified})
    assert r.status == 304
    manifest = origin.get(f"/vod/{media_id}/master.m3u8")
    assert "immutable" not in manifest.headers["cache-control"]
    assert "max-age" in manifest.headers["cache-control"]
    assert origin.get(f"/vod/{media_id}/master.m3u8",
                      {"If-None-Match": manifest.headers["etag"]}).status == 304
    # A different carried query is a different manifest body, hence a different ETag.
    other = origin.get(f"/vod/{media_id}/master.m3u8?token=x")
    assert other.headers["etag"] != manifest.headers["etag"]


def test_head(origin: OriginThread, media_id: str) -> None:
    get = origin.get(f"/vod/{media_id}/v0/seg-1.ts")
    head = origin.get(f"/vod/{media_id}/v0/seg-1.ts", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(len(get.body))
    assert head.headers["etag"] == get.headers["etag"]


def test_cors(origin: OriginThread, media_id: str) -> None:
    r = origin.get(f"/vod/{media_id}/master.m3u8", {"Origin": "https://lms.example"})
    assert r.headers["access-control-allow-origin"] == "*"
    assert "Content-Range" in r.headers["access-control-expose-headers"]
    pre = origin.get(f"/vod/{media_id}/v0/seg-1.m4s", {
        "Origin": "https://lms.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range"}, method="OPTIONS")
    assert pre.status == 204
    assert "Range" in pre.headers["access-control-allow-headers"]


@pytest.mark.parametrize("path,status,code", [
    ("/vod/nope/master.m3u8", 404, "media_not_found"),
    ("/vod/{id}/v0/seg-999.m4s", 404, "not_found"),
    ("/vod/{id}/v0/seg-0.m4s", 404, "not_found"),
    ("/vod/{id}/v0/seg-01.m4s", 404, "not_found"),
    ("/vod/{id}/v0/seg-1.mp4", 404, "not_found"),
    ("/vod/{id}/v9/seg-1.m4s", 404, "not_found"),
    ("/vod/{id}/s7/seg-1.vtt", 404, "not_found"),
    ("/vod/{id}/a0/iframe-1.m4s", 404, "not_found"),
    ("/vod/{id}/v0/iframe-99.m4s", 404, "not_found"),
    ("/vod/{id}/x0/seg-1.m4s", 404, "not_found"),
    ("/vod/{id}/v00/seg-1.m4s", 404, "not_found"),
    ("/vod/{id}/v0/seg-99999999999.m4s", 404, "not_found"),
    ("/vod/{id}/master.m3u8?start=abc", 400, "invalid_clip"),
    ("/vod/{id}/master.m3u8?start=5&end=2", 400, "invalid_clip"),
    ("/vod/{id}/master.m3u8?start=-1", 400, "invalid_clip"),
    ("/vod/{id}/master.m3u8?start=nan", 400, "invalid_clip"),
    ("/vod/{id}/master.m3u8?start=1000", 400, "invalid_clip"),
    ("/vod/{id}/../../etc/passwd", 404, "not_found"),
    ("/vod/{id}/%2e%2e/%2e%2e/etc/passwd", 404, "not_found"),
    ("/vod/{id}/v0/..%2f..%2f..%2fetc%2fpasswd", 404, "not_found"),
    ("/vod/%2e%2e%2f%2e%2e/master.m3u8", 404, "not_found"),
    ("/vod/{id}/v0/%00.m4s", 404, "not_found"),
])
def test_bad_requests_are_json_errors(origin: OriginThread, media_id: str, path: str,
                                      status: int, code: str) -> None:
    r = origin.get(path.replace("{id}", media_id))
    assert r.status == status, r.body
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"]["code"] == code
    assert "/" not in body["error"]["message"] or "vod" not in body["error"]["message"]
    assert b"root:" not in r.body


def test_method_not_allowed(origin: OriginThread, media_id: str) -> None:
    r = origin.get(f"/vod/{media_id}/master.m3u8", method="POST")
    assert r.status == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_every_emitted_child_name_parses() -> None:
    for name in ("init.mp4", "seg-1.m4s", "seg-12.ts", "iframe-3.m4s", "media.m3u8",
                 "media-ts.m3u8", "iframes.m3u8", "seg-4.vtt", "full.vtt"):
        assert urls.parse_child(name) is not None, name


def test_identical_bytes_from_independent_origins(origin: OriginThread, av_moov_at_end: Path,
                                                   tmp_path: Path) -> None:
    """Segment boundaries and bytes are a pure function of the file: a second origin with
    its own storage, caches and library serves the same manifests and segments."""
    from origin_server import OriginThread as Origin

    first_id = origin.add([av_moov_at_end])
    other = Origin(make_config(tmp_path)).start()
    try:
        second_id = other.add([av_moov_at_end])
        for path in ("v0/media.m3u8", "manifest.mpd", "v0/init.mp4", "v0/seg-1.m4s",
                     "v0/seg-2.ts", "a0/seg-2.m4s", "v0/iframe-2.m4s"):
            a = origin.get(f"/vod/{first_id}/{path}")
            b = other.get(f"/vod/{second_id}/{path}")
            assert a.status == b.status == 200
            assert a.body == b.body, path
            if not path.endswith((".m3u8", ".mpd")):
                assert a.headers["etag"] == b.headers["etag"], path
    finally:
        other.stop()


def test_replaced_file_is_reindexed(tmp_path: Path, av_faststart: Path,
                                    audio_only: Path) -> None:
    server = OriginThread(make_config(tmp_path)).start()
    try:
        media_id = server.add([av_faststart])
        assert "RESOLUTION" in server.get(f"/vod/{media_id}/master.m3u8").body.decode()
        root = server.config.path(server.config.storage.root)
        stored = root / "media" / media_id / "g1" / "0.mp4"
        stored.unlink()  # break the hard link to the fixture before replacing the content
        shutil.copy(audio_only, stored)
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = server.get(f"/vod/{media_id}/master.m3u8").body.decode()
            if "RESOLUTION" not in text:
                break
            time.sleep(0.25)
        assert "RESOLUTION" not in text and "mp4a.40.2" in text
        stored.unlink()
        r = server.get(f"/vod/{media_id}/master.m3u8")
        deadline = time.monotonic() + 10
        while r.status == 200 and time.monotonic() < deadline:
            time.sleep(0.25)
            r = server.get(f"/vod/{media_id}/master.m3u8")
        assert r.status == 404
    finally:
        server.stop()


def test_concurrent_cold_requests_package_once(tmp_path: Path, av_faststart: Path) -> None:
    server = OriginThread(make_config(tmp_path)).start()
    try:
        media_id = server.add([av_faststart])
        url = server.url(f"/vod/{media_id}/v0/seg-2.m4s")
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda _: request(url), range(32)))
        assert {r.status for r in replies} == {200}
        assert len({r.body for r in replies}) == 1
    finally:
        server.stop()


def test_clip(origin: OriginThread, av_moov_at_end: Path) -> None:
    from ffmpeg_tools import duration_of, framemd5

    media_id = origin.add([av_moov_at_end])
    url = origin.url(f"/vod/{media_id}/v0/media.m3u8?start=2&end=4")
    assert duration_of(url) == pytest.approx(2.0, abs=0.05)
    source = framemd5(av_moov_at_end, "v:0", ("-ignore_editlist", "1"))
    clipped = framemd5(url, "v:0")
    assert clipped == source[50:100]  # 25 fps, keyframes at 0, 2, 4 s
    # A start between keyframes begins at the keyframe before it, so the first frame decodes.
    assert framemd5(origin.url(f"/vod/{media_id}/v0/media.m3u8?start=2.5&end=4"), "v:0") \
        == source[50:100]
    mpd = origin.get(f"/vod/{media_id}/manifest.mpd?start=2&end=4").body.decode()
    assert 'mediaPresentationDuration="PT2.000S"' in mpd
