"""tus uploads into the media library, end to end: the real tuspy client against a running
origin (tests/origin_server.py, its own thread and loop), so these tests are synchronous.

A resumed upload becomes a media item that processes and plays frame-identically to the
source; completed uploads are not uploaded again; uploads need an API key and belong to the
key that created them; `mediaId` adds a version; non-media fails with `not_media`; the size
limit of the library refuses an upload when it is created.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ffmpeg_tools import framemd5
from library_fixtures import INSTRUCTOR_KEY, OTHER_ORG_KEY, auth, library_config
from origin_server import OriginThread, Reply
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
TUS = {"Tus-Resumable": "1.0.0"}
PROCESSING = json.dumps({"quality": ["360p"], "thumbnails": False})
# The source's AAC priming frame is dropped by ffmpeg's edit-list handling but decoded from
# the origin's output, where the edit list became timestamps (as in test_lossless.py).
SOURCE_ARGS = ("-ignore_editlist", "1")


def send(url: str, method: str, headers: dict[str, str], body: bytes | None = None) -> Reply:
    """One request with http.client (PATCH with an empty body sends Content-Length: 0)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, parts.path, body=body, headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def create(origin: OriginThread, length: int, key: str | None = None, **extra: str) -> Reply:
    headers = {**TUS, "Upload-Length": str(length), **extra}
    if key is not None:
        headers.update(auth(key))
    return send(origin.url("/api/uploads"), "POST", headers)


def tus_upload(origin: OriginThread, stream: io.IOBase, metadata: dict[str, str],
               key: str | None = None) -> tuple[str, dict[str, str]]:
    """The whole upload with tuspy; the upload URL and the final PATCH response's headers."""
    client = TusClient(origin.url("/api/uploads"),
                       headers=auth(key) if key else auth())
    uploader = client.uploader(file_stream=stream, chunk_size=CHUNK, metadata=metadata)
    uploader.upload()
    return uploader.url, dict(uploader.request.response_headers)


def settled(origin: OriginThread, media_id: str, job_id: str | None = None,
            timeout: float = 30.0) -> dict[str, Any]:
    """GET .../status until the item leaves processing (and `job_id`, if given, finished)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = origin.get(f"/api/media/{media_id}/status", auth())
        assert reply.status == 200, reply.body
        status = reply.json()
        done = status["status"] != "processing"
        if job_id is not None:
            done = status["jobId"] == job_id and status["jobStatus"] in (
                "completed", "failed", "cancelled")
        if done:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def media_ids(origin: OriginThread) -> list[str]:
    reply = origin.get("/api/media?limit=100", auth())
    assert reply.status == 200
    return [m["id"] for m in reply.json()["items"]]


def test_resumed_upload_becomes_playable_media(library_origin: OriginThread,
                                               compliant_mp4: Path) -> None:
    origin = library_origin
    size = compliant_mp4.stat().st_size
    assert size > 4 * CHUNK  # three chunks leave some to resume
    endpoint = origin.url("/api/uploads")
    metadata = {"filename": "lecture.mp4", "title": "Resumed lecture", "processing": PROCESSING}
    with compliant_mp4.open("rb") as stream:
        first = TusClient(endpoint, headers=auth()).uploader(
            file_stream=stream, chunk_size=CHUNK, metadata=metadata)
        for _ in range(3):
            first.upload_chunk()
        assert first.offset == 3 * CHUNK
        url, first = first.url, None  # the client "crashes": only the URL survives
        assert url.startswith(endpoint + "/")
        assert media_ids(origin) == []  # nothing is ingested before the last byte
        resumed = TusClient(endpoint, headers=auth()).uploader(
            file_stream=stream, url=url, chunk_size=CHUNK)
        assert resumed.offset == 3 * CHUNK  # from HEAD
        resumed.upload()
    headers = resumed.request.response_headers
    media_id, job_id = headers["media-id"], headers["job-id"]
    assert media_ids(origin) == [media_id]

    status = settled(origin, media_id)
    assert status["status"] == "ready" and status["jobId"] == job_id, status
    record = origin.get(f"/api/media/{media_id}", auth()).json()
    assert record["title"] == "Resumed lecture"
    assert record["storage"]["generations"][0]["sourceName"] == "lecture.mp4"
    assert record["storage"]["generations"][0]["size"] == size
    assert record["processing"]["settings"]["quality"] == ["360p"]
    assert record["processing"]["settings"]["thumbnails"]["enabled"] is False
    assert origin.get(f"/vod/{media_id}/master.m3u8").status == 200
    for selector in ("v:0", "a:0"):
        expected = framemd5(compliant_mp4, selector, SOURCE_ARGS)
        got = framemd5(origin.url(f"/vod/{media_id}/master.m3u8"), selector)
        assert len(got) == len(expected) > 0
        assert got == expected, selector

    # Completed: HEAD still reports every byte and the result; resuming sends nothing.
    head = send(url, "HEAD", {**TUS, **auth()})
    assert head.status == 200
    assert head.headers["upload-offset"] == head.headers["upload-length"] == str(size)
    assert head.headers["media-id"] == media_id and head.headers["job-id"] == job_id
    with compliant_mp4.open("rb") as stream:
        again = TusClient(endpoint, headers=auth()).uploader(
            file_stream=stream, url=url, chunk_size=CHUNK)
        assert again.offset == size
        again.upload()  # nothing left to send
        assert again.request is None
    # A client that retries its last (empty) PATCH gets the same result, not a new item.
    retry = send(url, "PATCH", {**TUS, **auth(), "Upload-Offset": str(size),
                                "Content-Type": "application/offset+octet-stream"}, b"")
    assert retry.status == 204 and retry.headers["media-id"] == media_id
    assert media_ids(origin) == [media_id]
    assert len(origin.get(f"/api/media/{media_id}", auth()).json()["storage"][
        "generations"]) == 1


def test_tus_requires_an_api_key(library_origin: OriginThread) -> None:
    origin = library_origin
    assert create(origin, 10).status == 401
    assert create(origin, 10, key="not-a-key").status == 401
    with pytest.raises(TusCommunicationError) as refused:
        TusClient(origin.url("/api/uploads")).uploader(
            file_stream=io.BytesIO(b"0123456789"), chunk_size=CHUNK).upload()
    assert refused.value.status_code == 401
    made = create(origin, 10, key=INSTRUCTOR_KEY)
    assert made.status == 201
    url = origin.url(made.headers["location"])
    assert send(url, "HEAD", TUS).status == 401
    assert send(url, "PATCH", {**TUS, "Upload-Offset": "0",
                               "Content-Type": "application/offset+octet-stream"},
                b"0123456789").status == 401
    assert send(url, "HEAD", {**TUS, **auth(INSTRUCTOR_KEY)}).headers["upload-offset"] == "0"
    assert media_ids(origin) == []


def test_uploads_belong_to_their_key(library_origin: OriginThread) -> None:
    origin = library_origin
    made = create(origin, 10, key=OTHER_ORG_KEY)
    assert made.status == 201
    url = origin.url(made.headers["location"])
    org_a = {**TUS, **auth(INSTRUCTOR_KEY)}
    patch = {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    assert send(url, "HEAD", org_a).status == 404
    assert send(url, "PATCH", {**org_a, **patch}, b"0123456789").status == 404
    assert send(url, "DELETE", org_a).status == 404
    with pytest.raises(TusCommunicationError) as hidden:  # tuspy resuming someone else's URL
        TusClient(origin.url("/api/uploads"), headers=auth(INSTRUCTOR_KEY)).uploader(
            file_stream=io.BytesIO(b"0123456789"), url=url, chunk_size=CHUNK)
    assert hidden.value.status_code == 404
    org_b = {**TUS, **auth(OTHER_ORG_KEY)}
    head = send(url, "HEAD", org_b)  # untouched for its owner
    assert head.status == 200 and head.headers["upload-offset"] == "0"
    assert send(url, "PATCH", {**org_b, **patch}, b"0123456789").status == 204


def test_media_id_metadata_adds_a_version(library_origin: OriginThread,
                                          compliant_mp4: Path) -> None:
    origin = library_origin
    with compliant_mp4.open("rb") as stream:
        _, first = tus_upload(origin, stream, {"filename": "v1.mp4", "title": "Versioned",
                                               "processing": PROCESSING})
    media_id = first["media-id"]
    assert settled(origin, media_id)["status"] == "ready"

    with compliant_mp4.open("rb") as stream:
        _, second = tus_upload(origin, stream, {"filename": "v2.mp4", "mediaId": media_id,
                                                "processing": PROCESSING})
    assert second["media-id"] == media_id and second["job-id"] != first["job-id"]
    status = settled(origin, media_id, second["job-id"])
    assert (status["status"], status["jobStatus"]) == ("ready", "completed"), status
    record = origin.get(f"/api/media/{media_id}", auth()).json()
    assert record["title"] == "Versioned"
    assert [(g["generation"], g["status"], g["current"], g["sourceName"])
            for g in record["storage"]["generations"]] == [
        (1, "ready", False, "v1.mp4"), (2, "ready", True, "v2.mp4")]
    assert media_ids(origin) == [media_id]
    assert origin.get(f"/vod/{media_id}/master.m3u8").status == 200

    # A mediaId this key may not see is refused, and the upload can be completed again
    # later (the completion was released).
    with pytest.raises(TusCommunicationError) as refused:
        tus_upload(origin, io.BytesIO(compliant_mp4.read_bytes()),
                   {"filename": "v3.mp4", "mediaId": media_id}, key=OTHER_ORG_KEY)
    assert refused.value.status_code == 404
    assert media_ids(origin) == [media_id]


def test_non_media_fails_with_not_media(library_origin: OriginThread) -> None:
    origin = library_origin
    junk = b"these are lecture notes, not a video\n" * 2000 + os.urandom(4096)
    _, headers = tus_upload(origin, io.BytesIO(junk), {"filename": "notes.mp4",
                                                       "title": "Not a video"})
    media_id = headers["media-id"]
    status = settled(origin, media_id)
    assert status["status"] == "failed", status
    assert status["jobStatus"] == "failed" and status["error"]["code"] == "not_media"
    record = origin.get(f"/api/media/{media_id}", auth()).json()
    assert record["status"] == "failed" and record["streaming"]["urls"]["hls"] is None
    assert origin.get(f"/vod/{media_id}/master.m3u8").status == 404


def test_upload_beyond_max_upload_mb_is_413_at_creation(tmp_path: Path) -> None:
    origin = OriginThread(library_config(tmp_path, library={"max_upload_mb": 1})).start()
    try:
        options = send(origin.url("/api/uploads"), "OPTIONS", {})
        assert options.headers["tus-max-size"] == str(MiB)
        refused = create(origin, MiB + 1, key=INSTRUCTOR_KEY)
        assert refused.status == 413
        assert refused.json()["error"]["code"] == "too_large"
        assert "location" not in refused.headers
        with pytest.raises(TusCommunicationError) as too_big:
            tus_upload(origin, io.BytesIO(os.urandom(2 * MiB)), {"filename": "big.mp4"})
        assert too_big.value.status_code == 413
        assert not list((tmp_path / "var" / "uploads" / "tus").glob("*.part"))
        assert create(origin, MiB, key=INSTRUCTOR_KEY).status == 201  # the limit itself fits
        assert media_ids(origin) == []
    finally:
        origin.stop()
