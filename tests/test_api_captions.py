"""Captions added to a ready media item reach the players' manifests."""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from urllib.parse import urlsplit

from library_fixtures import auth
from origin_server import OriginThread, request

VTT = "WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nWillkommen zur Vorlesung\n"


def send(origin: OriginThread, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    parts = urlsplit(origin.base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=auth())
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def put(origin: OriginThread, path: str, body: bytes) -> tuple[int, bytes]:
    return send(origin, "PUT", path, body)


def test_captions_are_added_validated_and_played(library_origin: OriginThread,
                                                 av_faststart: Path) -> None:
    import json

    media_id = library_origin.add([av_faststart], "Vorlesung")
    master = f"/vod/{media_id}/master.m3u8"
    assert "SUBTITLES" not in library_origin.get(master).body.decode()
    status, body = put(library_origin, f"/api/media/{media_id}/captions/de", VTT.encode())
    assert status == 200, body
    record = json.loads(body)
    assert [c["language"] for c in record["storage"]["captions"]] == ["de"]
    served = request(library_origin.base + record["storage"]["captions"][0]["url"])
    assert served.status == 200 and served.body.decode() == VTT
    # At once: the library tells this process's origin (no 2 s revalidation wait).
    text = library_origin.get(master).body.decode()
    assert "SUBTITLES" in text and 'LANGUAGE="de"' in text, text
    assert "Willkommen" in library_origin.get(f"/vod/{media_id}/s0/full.vtt").body.decode()
    # Replacing keeps one track per language; bad input is refused with a reason.
    assert put(library_origin, f"/api/media/{media_id}/captions/de", VTT.encode())[0] == 200
    assert len(json.loads(library_origin.get(f"/api/media/{media_id}", auth()).body)
               ["storage"]["captions"]) == 1
    for path, body, code, error in (
            (f"/api/media/{media_id}/captions/de", b"not webvtt", 422, "invalid_captions"),
            (f"/api/media/{media_id}/captions/de", b"\xff\xfe", 422, "invalid_captions"),
            (f"/api/media/{media_id}/captions/english-", VTT.encode(), 422, "invalid_field"),
            ("/api/media/nope/captions/de", VTT.encode(), 404, "media_not_found")):
        status, reply = put(library_origin, path, body)
        assert (status, json.loads(reply)["error"]["code"]) == (code, error), reply


def test_captions_survive_processing_again(library_origin: OriginThread,
                                           compliant_mp4: Path) -> None:
    """Captions belong to the version: a new processing run keeps them."""
    import asyncio
    import json

    from test_players_library import upload_and_wait

    media_id = asyncio.run(upload_and_wait(library_origin, compliant_mp4,
                                           {"quality": ["240p"], "thumbnails": False}))
    assert put(library_origin, f"/api/media/{media_id}/captions/de", VTT.encode())[0] == 200
    first = json.loads(library_origin.get(f"/api/media/{media_id}", auth()).body)
    old_urls = {v["url"] for v in first["storage"]["versions"]}
    status, body = send(library_origin, "POST", f"/api/media/{media_id}/process",
                        json.dumps({"quality": ["360p", "240p"], "thumbnails": False}).encode())
    assert status == 202, body
    deadline = time.monotonic() + 60
    while json.loads(library_origin.get(f"/api/media/{media_id}/status", auth()).body)[
            "jobStatus"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    record = json.loads(library_origin.get(f"/api/media/{media_id}", auth()).body)
    assert [c["language"] for c in record["storage"]["captions"]] == ["de"]
    new_urls = {v["url"] for v in record["storage"]["versions"]}
    # The upload itself plays on as the top rung; the encoded rung is a new file.
    assert new_urls - old_urls and all(
        request(library_origin.base + url).status == 200 for url in new_urls)
