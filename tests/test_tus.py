"""tus 1.0 uploads: the real tuspy client against the routes on 127.0.0.1, then the protocol
edge cases one request at a time.

The server runs on the test's loop (aiohttp_client); tuspy is synchronous, so it runs on a
thread with asyncio.to_thread while the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from tusclient import client as tus_client

from mediaorigin.api.tus import EXPOSED_HEADERS, tus_routes
from mediaorigin.api.tus_store import TusStore, TusUpload, encode_metadata, parse_metadata

PREFIX = "/api/uploads"
OCTET = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
TUS = {"Tus-Resumable": "1.0.0"}
MiB = 1024 * 1024


@dataclass
class Tus:
    """The test server and what it observed."""

    store: TusStore
    client: TestClient = field(init=False)
    completed: list[TusUpload] = field(default_factory=list)
    fail_next: list[web.HTTPException] = field(default_factory=list)
    started: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    finished: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    @property
    def url(self) -> str:
        return str(self.client.make_url(PREFIX))

    async def create(self, length: int | None, **headers: str) -> str:
        sizes = {"Upload-Length": str(length)} if length is not None else {
            "Upload-Defer-Length": "1"}
        async with self.client.post(PREFIX, headers={**TUS, **sizes, **headers}) as resp:
            assert resp.status == 201, await resp.text()
            return resp.headers["Location"]

    async def patch(self, location: str, offset: int, body: object,
                    **headers: str) -> tuple[int, dict[str, str]]:
        async with self.client.patch(location, data=body, headers={
                **OCTET, "Upload-Offset": str(offset), **headers}) as resp:
            await resp.read()
            return resp.status, dict(resp.headers)

    async def head(self, location: str) -> tuple[int, dict[str, str]]:
        async with self.client.head(location, headers=TUS) as resp:
            return resp.status, dict(resp.headers)

    async def wait(self, queue: asyncio.Queue[str], method: str) -> None:
        """Until the server started (or finished) handling a request with this method."""
        while await queue.get() != method:
            pass

    def part(self, location: str) -> Path:
        return self.store.root / f"{location.rsplit('/', 1)[1]}.part"


TusFactory = Callable[..., Awaitable[Tus]]


class RunAppServer(TestServer):
    """TestServer cancels a handler when its client disconnects; run_app's default does not,
    so the handler sees the dropped body as an error from request.content instead."""

    async def _make_runner(self, **kwargs: object) -> web.AppRunner:
        return web.AppRunner(self.app, **{**kwargs, "handler_cancellation": False})


@pytest.fixture
async def make_tus(tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient]],
                   ) -> TusFactory:
    async def make(max_size: int = 128 * MiB, expiry_seconds: float = 3600,
                   handler_cancellation: bool = True) -> Tus:
        tus = Tus(TusStore(tmp_path / "uploads", max_size, expiry_seconds))

        async def on_complete(upload: TusUpload, request: web.Request) -> dict[str, str]:
            if tus.fail_next:
                raise tus.fail_next.pop()
            tus.completed.append(upload)
            return {"Media-Id": "m1"}

        @web.middleware
        async def track(request: web.Request, handler: web.RequestHandler
                        ) -> web.StreamResponse:
            """Tells the test when a request reached the routes and when it was done."""
            tus.started.put_nowait(request.method)
            try:
                return await handler(request)
            finally:
                tus.finished.put_nowait(request.method)

        app = web.Application(middlewares=[track])
        app.router.add_routes(tus_routes(PREFIX, tus.store, on_complete))
        tus.client = await aiohttp_client(app if handler_cancellation else RunAppServer(app))
        return tus

    return make


@pytest.fixture
async def tus(make_tus: TusFactory) -> Tus:
    return await make_tus()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tus") / "lecture.mp4"
    path.write_bytes(os.urandom(4 * MiB + 12345))  # not a multiple of any chunk size
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition another party (the server) brings about."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def raw_request(tus: Tus, head: str) -> tuple[int, bytes]:
    """One request written byte for byte (no client-side path normalisation).

    Returns the status and the response head."""
    reader, writer = await asyncio.open_connection(tus.client.host, tus.client.port)
    try:
        writer.write(head.encode() + b"Connection: close\r\n\r\n")
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(response.split()[1]), response.partition(b"\r\n\r\n")[0]


# -- the real client -----------------------------------------------------------------------

async def test_tuspy_upload_with_checksums(tus: Tus, source: Path) -> None:
    data = source.read_bytes()
    with source.open("rb") as stream:
        uploader = tus_client.TusClient(tus.url).uploader(
            file_stream=stream, chunk_size=MiB, upload_checksum=True,
            metadata={"filename": "Vorlesung 1 – Einführung.mp4"})
        await asyncio.to_thread(uploader.upload)
    assert uploader.url.startswith(tus.url + "/")
    assert uploader.request.response_headers["media-id"] == "m1"
    [upload] = tus.completed
    assert sha256(upload.path.read_bytes()) == sha256(data)
    assert upload.metadata == {"filename": "Vorlesung 1 – Einführung.mp4"}


async def test_tuspy_resumes_with_a_new_uploader(tus: Tus, source: Path) -> None:
    data = source.read_bytes()
    with source.open("rb") as stream:
        first = tus_client.TusClient(tus.url).uploader(file_stream=stream, chunk_size=MiB)
        for _ in range(2):
            await asyncio.to_thread(first.upload_chunk)
        url, first = first.url, None  # the process "crashes"; only the URL survives
        resumed = await asyncio.to_thread(
            tus_client.TusClient(tus.url).uploader, file_stream=stream, url=url,
            chunk_size=MiB)
        assert resumed.offset == 2 * MiB  # from HEAD
        await asyncio.to_thread(resumed.upload)
    [upload] = tus.completed
    assert sha256(upload.path.read_bytes()) == sha256(data)


@pytest.mark.parametrize("handler_cancellation", [True, False])
async def test_dropped_connection_keeps_bytes_and_tuspy_resumes(
        make_tus: TusFactory, source: Path, handler_cancellation: bool) -> None:
    tus = await make_tus(handler_cancellation=handler_cancellation)
    data = source.read_bytes()
    location = await tus.create(len(data))
    part = tus.part(location)
    reader, writer = await asyncio.open_connection(tus.client.host, tus.client.port)
    writer.write(f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                 "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode())
    writer.write(data[:MiB + 100])
    await writer.drain()
    await until(lambda: part.stat().st_size > 0)  # the server is writing
    writer.close()  # mid-body
    await writer.wait_closed()
    await tus.wait(tus.finished, "PATCH")  # the handler saw the drop and returned

    status, headers = await tus.head(location)
    kept = int(headers["Upload-Offset"])
    assert status == 200 and 0 < kept <= MiB + 100
    assert kept == part.stat().st_size and part.read_bytes() == data[:kept]

    with source.open("rb") as stream:
        uploader = await asyncio.to_thread(
            tus_client.TusClient(tus.url).uploader, file_stream=stream,
            url=str(tus.client.make_url(location)), chunk_size=MiB)
        assert uploader.offset == kept
        await asyncio.to_thread(uploader.upload)
    [upload] = tus.completed
    assert sha256(upload.path.read_bytes()) == sha256(data)


async def test_body_is_streamed_not_buffered(make_tus: TusFactory) -> None:
    tus = await make_tus(max_size=64 * MiB)
    location = await tus.create(64 * MiB)
    block = os.urandom(MiB)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield block  # the same object: the client side allocates nothing per chunk

    tracemalloc.start()
    try:
        status, headers = await tus.patch(location, 0, body())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 204 and headers["Upload-Offset"] == str(64 * MiB)
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB traced: the body was buffered"
    assert tus.part(location).stat().st_size == 64 * MiB


# -- the protocol, request by request ------------------------------------------------------

async def test_options_describes_the_server(tus: Tus) -> None:
    async with tus.client.options(PREFIX) as resp:  # no Tus-Resumable needed
        assert resp.status == 204
        assert resp.headers["Tus-Resumable"] == "1.0.0"
        assert resp.headers["Tus-Version"] == "1.0.0"
        assert resp.headers["Tus-Max-Size"] == str(128 * MiB)
        assert set(resp.headers["Tus-Extension"].split(",")) == {
            "creation", "creation-with-upload", "creation-defer-length", "termination",
            "checksum", "expiration"}
        assert resp.headers["Tus-Checksum-Algorithm"] == "sha1,md5,sha256"
    assert {"Location", "Upload-Offset", "Media-Id", "Job-Id"} <= set(EXPOSED_HEADERS)


@pytest.mark.parametrize("version", [None, "0.2.2"])
async def test_other_protocol_versions_are_refused(tus: Tus, version: str | None) -> None:
    headers = {"Upload-Length": "10"} | ({"Tus-Resumable": version} if version else {})
    async with tus.client.post(PREFIX, headers=headers) as resp:
        assert resp.status == 412
        assert resp.headers["Tus-Version"] == "1.0.0"
        assert resp.headers["Tus-Resumable"] == "1.0.0"
        assert (await resp.json())["error"]["code"] == "unsupported_version"
    assert list(tus.store.root.iterdir()) == []


async def test_creation_answers_an_absolute_path(tus: Tus) -> None:
    location = await tus.create(10)
    assert location.startswith(PREFIX + "/")
    status, headers = await tus.head(location)
    assert status == 200
    assert headers["Upload-Offset"] == "0" and headers["Upload-Length"] == "10"
    assert headers["Cache-Control"] == "no-store"
    assert "Upload-Expires" in headers


@pytest.mark.parametrize("headers", [{}, {"Upload-Length": "-1"}, {"Upload-Length": "1e3"},
                                     {"Upload-Defer-Length": "2"},
                                     {"Upload-Length": "1", "Upload-Defer-Length": "1"},
                                     {"Upload-Length": "1", "Upload-Metadata": "name !!"}])
async def test_invalid_creation_is_400(tus: Tus, headers: dict[str, str]) -> None:
    async with tus.client.post(PREFIX, headers=TUS | headers) as resp:
        assert resp.status == 400
        assert set(await resp.json()) == {"error"}


async def test_creation_beyond_max_size_is_413(make_tus: TusFactory) -> None:
    tus = await make_tus(max_size=1000)
    async with tus.client.post(PREFIX, headers=TUS | {"Upload-Length": "1001"}) as resp:
        assert resp.status == 413


async def test_creation_with_upload(tus: Tus) -> None:
    async with tus.client.post(PREFIX, data=b"hello", headers=OCTET | {
            "Upload-Length": "11"}) as resp:
        assert resp.status == 201 and resp.headers["Upload-Offset"] == "5"
        location = resp.headers["Location"]
    status, headers = await tus.patch(location, 5, b" world")
    assert status == 204 and headers["Media-Id"] == "m1"
    assert tus.completed[0].path.read_bytes() == b"hello world"

    async with tus.client.post(PREFIX, data=b"whole", headers=OCTET | {
            "Upload-Length": "5"}) as resp:  # complete on creation
        assert resp.status == 201 and resp.headers["Media-Id"] == "m1"
    assert len(tus.completed) == 2


async def test_wrong_offset_is_409(tus: Tus) -> None:
    location = await tus.create(10)
    assert (await tus.patch(location, 0, b"abc"))[0] == 204
    status, _ = await tus.patch(location, 0, b"abc")  # a stale client
    assert status == 409
    assert (await tus.head(location))[1]["Upload-Offset"] == "3"


async def test_wrong_content_type_is_415(tus: Tus) -> None:
    location = await tus.create(10)
    status, _ = await tus.patch(location, 0, b"abc", **{"Content-Type": "application/json"})
    assert status == 415
    assert tus.part(location).stat().st_size == 0


async def test_body_beyond_length_is_413_and_never_written(tus: Tus) -> None:
    location = await tus.create(10)
    assert (await tus.patch(location, 0, b"1234"))[0] == 204
    status, _ = await tus.patch(location, 4, b"x" * 7)  # declared: refused up front
    assert status == 413

    async def chunked() -> AsyncIterator[bytes]:  # undeclared: refused while streaming
        yield b"567"
        yield b"89ab"

    status, _ = await tus.patch(location, 4, chunked())
    assert status == 413
    assert tus.part(location).read_bytes() == b"1234"
    assert (await tus.head(location))[1]["Upload-Offset"] == "4"


def checksum(algorithm: str, body: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, body).digest()).decode()}"


async def test_checksum_mismatch_is_460_and_discards_the_chunk(tus: Tus) -> None:
    location = await tus.create(20)
    assert (await tus.patch(location, 0, b"good"))[0] == 204
    status, headers = await tus.patch(location, 4, b"corrupted",
                                      **{"Upload-Checksum": checksum("sha1", b"original")})
    assert status == 460 and headers["Tus-Resumable"] == "1.0.0"
    assert (await tus.head(location))[1]["Upload-Offset"] == "4"
    assert tus.part(location).read_bytes() == b"good"


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "sha256"])
async def test_valid_checksum_is_accepted(tus: Tus, algorithm: str) -> None:
    location = await tus.create(5)
    status, headers = await tus.patch(location, 0, b"bytes",
                                      **{"Upload-Checksum": checksum(algorithm, b"bytes")})
    assert status == 204 and headers["Upload-Offset"] == "5"


async def test_unsupported_checksum_algorithm_is_400(tus: Tus) -> None:
    location = await tus.create(5)
    status, _ = await tus.patch(location, 0, b"bytes", **{"Upload-Checksum": "crc32 AAAAAA=="})
    assert status == 400


async def test_unknown_upload_is_404(tus: Tus) -> None:
    assert (await tus.head(PREFIX + "/AAAAAAAAAAAAAAAAAAAAAA"))[0] == 404
    assert (await tus.patch(PREFIX + "/AAAAAAAAAAAAAAAAAAAAAA", 0, b"x"))[0] == 404


async def test_termination(tus: Tus) -> None:
    location = await tus.create(10)
    await tus.patch(location, 0, b"abc")
    async with tus.client.delete(location, headers=TUS) as resp:
        assert resp.status == 204 and resp.headers["Tus-Resumable"] == "1.0.0"
    assert (await tus.head(location))[0] == 404
    assert list(tus.store.root.iterdir()) == []


async def test_deferred_length_is_set_by_a_later_patch(tus: Tus) -> None:
    location = await tus.create(None)
    status, headers = await tus.head(location)
    assert headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in headers
    assert (await tus.patch(location, 0, b"first "))[0] == 204
    assert not tus.completed
    status, headers = await tus.patch(location, 6, b"last", **{"Upload-Length": "10"})
    assert status == 204 and headers["Media-Id"] == "m1"
    assert (await tus.head(location))[1]["Upload-Length"] == "10"
    assert tus.completed[0].path.read_bytes() == b"first last"
    status, _ = await tus.patch(location, 10, b"", **{"Upload-Length": "11"})
    assert status == 400  # a length, once known, is fixed


async def test_metadata_round_trip(tus: Tus) -> None:
    metadata = {"filename": "Übung 3 — 第三課.mp4", "filetype": "video/mp4", "is_draft": ""}
    header = encode_metadata(metadata)
    assert header.endswith(",is_draft")  # a key without a value has no space either
    location = await tus.create(3, **{"Upload-Metadata": header})
    _, headers = await tus.head(location)
    assert parse_metadata(headers["Upload-Metadata"]) == metadata
    await tus.patch(location, 0, b"abc")
    assert tus.completed[0].metadata == metadata


@pytest.mark.parametrize("target", ["..%2Fvictim0000", "..%2F..%2Fetc", "%2e%2e",
                                    "%2e%2e%2fvictim0000", "..%5Cvictim0000"])
@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE"])
async def test_traversal_ids_are_404(tus: Tus, target: str, method: str) -> None:
    victim = tus.store.root.parent  # files an unchecked id would reach
    (victim / "victim0000.json").write_text('{"length": 1, "metadata": {}, "created": 0, '
                                            '"expires": 9e99, "owner": ""}')
    (victim / "victim0000.part").write_bytes(b"")
    request = f"{method} {PREFIX}/{target} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
    if method == "PATCH":
        request += ("Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                    "Content-Length: 0\r\n")
    status, head = await raw_request(tus, request)
    assert status == 404 and b"Tus-Resumable: 1.0.0" in head  # refused by the tus handler
    assert (victim / "victim0000.json").exists()
    assert (victim / "victim0000.part").read_bytes() == b""
    assert tus.store.get("..%2Fvictim0000") is None and tus.store.get("../victim00") is None


async def test_expired_upload_is_410_and_expire_removes_it(make_tus: TusFactory) -> None:
    tus = await make_tus(expiry_seconds=0)
    location = await tus.create(10)
    finished = await tus.create(0)  # complete on creation: never expires
    assert (await tus.head(location))[0] == 410
    assert (await tus.patch(location, 0, b"x"))[0] == 410
    assert (await tus.head(finished))[0] == 200
    assert tus.store.expire() == [location.rsplit("/", 1)[1]]
    assert (await tus.head(location))[0] == 404
    assert (await tus.head(finished))[0] == 200
    assert len(tus.completed) == 1


async def test_concurrent_patches_one_is_accepted(tus: Tus) -> None:
    location = await tus.create(2 * MiB)
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * MiB
        await release.wait()
        yield b"b" * MiB

    first = asyncio.create_task(tus.patch(location, 0, slow()))
    await tus.wait(tus.started, "PATCH")  # the first PATCH holds the upload (see TusRoutes._locked)
    second, _ = await tus.patch(location, 0, b"c" * 1000)
    release.set()
    first_status, headers = await first
    assert (first_status, second) == (204, 423)
    assert headers["Media-Id"] == "m1"
    assert tus.part(location).read_bytes() == b"a" * MiB + b"b" * MiB
    assert len(tus.completed) == 1


async def test_completion_runs_once_and_is_remembered(tus: Tus) -> None:
    location = await tus.create(3)
    assert (await tus.patch(location, 0, b"abc"))[1]["Media-Id"] == "m1"
    status, headers = await tus.patch(location, 3, b"")  # a retried final PATCH
    assert status == 204 and headers["Media-Id"] == "m1"
    assert (await tus.head(location))[1]["Media-Id"] == "m1"
    assert "Upload-Expires" not in headers
    assert len(tus.completed) == 1


async def test_on_complete_errors_propagate_and_can_be_retried(tus: Tus) -> None:
    tus.fail_next.append(web.HTTPServiceUnavailable(text="library busy"))
    location = await tus.create(3)
    status, headers = await tus.patch(location, 0, b"abc")
    assert status == 503 and headers["Tus-Resumable"] == "1.0.0"
    assert not tus.completed
    status, headers = await tus.patch(location, 3, b"")
    assert status == 204 and headers["Media-Id"] == "m1"
    assert len(tus.completed) == 1


def test_store_keeps_a_crashed_write_as_prefix(tmp_path: Path) -> None:
    store = TusStore(tmp_path, max_size=100)
    upload = store.create(10, {})
    with store.open_append(upload.id) as sink:
        sink.write(b"abc")  # then the worker dies: nothing else to do
    assert store.get(upload.id).offset == 3  # type: ignore[union-attr]
    with store.open_append(upload.id), pytest.raises(Exception, match=upload.id):
        with store.open_append(upload.id):  # a second writer, as from another process
            pass
    assert store.get("../" + upload.id) is None
    assert upload.path.read_bytes() == b"abc"


async def test_location_includes_the_sub_application_prefix(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient]]) -> None:
    async def on_complete(upload: TusUpload, request: web.Request) -> dict[str, str]:
        return {}

    api = web.Application()
    api.router.add_routes(tus_routes("/uploads", TusStore(tmp_path, 100), on_complete))
    app = web.Application()
    app.add_subapp("/api/", api)
    client = await aiohttp_client(app)
    async with client.post("/api/uploads", headers=TUS | {"Upload-Length": "1"}) as resp:
        location = resp.headers["Location"]
    assert location.startswith("/api/uploads/")
    async with client.head(location, headers=TUS) as resp:
        assert resp.status == 200


async def test_uploads_are_private_to_their_owner(
        tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient]]) -> None:
    async def on_complete(upload: TusUpload, request: web.Request) -> dict[str, str]:
        return {"Owner": upload.owner}

    app = web.Application()
    app.router.add_routes(tus_routes(PREFIX, TusStore(tmp_path, 100), on_complete,
                                     owner_of=lambda request: request.headers["X-Key"]))
    client = await aiohttp_client(app)
    async with client.post(PREFIX, headers=TUS | {"Upload-Length": "1", "X-Key": "k1"}) as resp:
        location = resp.headers["Location"]
    async with client.head(location, headers=TUS | {"X-Key": "k2"}) as resp:
        assert resp.status == 404
    async with client.patch(location, data=b"x", headers=OCTET | {
            "Upload-Offset": "0", "X-Key": "k1"}) as resp:
        assert resp.status == 204 and resp.headers["Owner"] == "k1"
