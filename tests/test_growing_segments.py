"""Cold encrypted segments are sent while they are made (origin/growing.py).

The unit half drives `grow` and `respond` with a Progressive whose steps a test releases one
by one, through a real aiohttp server and client: the first bytes reach the client before
the segment is finished, followers share one run, Range and HEAD wait for or skip the body,
and a failure after the headers ends the connection instead of sending wrong bytes. The end
to end half asks the real origin for cold encrypted segments, many at once and by range.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest
from aiohttp import web
from library_fixtures import library_config
from media import AAC, FPS, X264, run_ffmpeg
from origin_server import OriginThread

from mediaorigin.auth.tokens import Keyring, parse_hs256_secret
from mediaorigin.origin.cache import CachedBody
from mediaorigin.origin.growing import grow
from mediaorigin.origin.http import LARGE_BODY, respond
from mediaorigin.origin.playback import Body
from mediaorigin.packaging.crypto import aes128
from mediaorigin.packaging.crypto.progressive import CHUNK as CHUNK_SIZE
from mediaorigin.packaging.crypto.progressive import Progressive

CHUNKS = 4
CHUNK = 100_000
DATA = bytes(range(256)) * (CHUNKS * CHUNK // 256 + 1)
DATA = DATA[: CHUNKS * CHUNK]


class Gate:
    """A Progressive over DATA whose every step waits for the test to open it."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.steps = [threading.Event() for _ in range(CHUNKS)]
        self.made = 0  # calls of make()
        self.fail_at = fail_at

    def make(self) -> Progressive:
        self.made += 1
        buffer = bytearray(len(DATA))

        def fill() -> Iterator[int]:
            for i, step in enumerate(self.steps):
                assert step.wait(10)
                if i == self.fail_at:
                    raise RuntimeError("cipher broke")
                buffer[i * CHUNK : (i + 1) * CHUNK] = DATA[i * CHUNK : (i + 1) * CHUNK]
                yield (i + 1) * CHUNK

        return Progressive(len(DATA), buffer, fill())


def gated_app(gate: Gate, kept: list[bytes]) -> web.Application:
    pool = ThreadPoolExecutor(2)
    shared: dict[str, object] = {}

    async def segment(request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        if "growing" not in shared:
            growing, work = grow(loop, gate.make, lambda view: kept.append(bytes(view)))
            shared["growing"] = growing
            loop.run_in_executor(pool, work)
        growing = shared["growing"]
        size = await growing.started()  # type: ignore[attr-defined]
        body = Body(CachedBody(None, None, size), "video/mp4", '"e"', 0.0, True,
                    growing=growing)  # type: ignore[arg-type]
        return await respond(request, body)

    app = web.Application()
    app.router.add_get("/seg", segment)
    app.on_cleanup.append(lambda _: asyncio.to_thread(pool.shutdown))
    return app


async def read_some(resp: aiohttp.ClientResponse, n: int) -> bytes:
    return await asyncio.wait_for(resp.content.readexactly(n), 5)


async def test_first_bytes_are_sent_before_the_segment_is_made(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    gate, kept = Gate(), []
    client = await aiohttp_client(gated_app(gate, kept))
    gate.steps[0].set()
    first = await client.get("/seg")
    second = await client.get("/seg")  # joins the same run
    assert first.status == second.status == 200
    assert first.content_length == second.content_length == len(DATA)
    # one chunk made: exactly one chunk can be read, by both
    assert await read_some(first, CHUNK) == DATA[:CHUNK]
    assert await read_some(second, CHUNK) == DATA[:CHUNK]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(first.content.read(1), 0.2)
    for step in gate.steps[1:]:
        step.set()
    assert await first.read() == DATA[CHUNK:]
    assert await second.read() == DATA[CHUNK:]
    assert gate.made == 1
    await asyncio.sleep(0.05)
    assert kept == [DATA]  # the finished bytes were handed on once, whole


async def test_range_waits_and_head_does_not(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    gate, kept = Gate(), []
    client = await aiohttp_client(gated_app(gate, kept))
    gate.steps[0].set()
    head = await client.head("/seg")
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(DATA)
    ranged = asyncio.ensure_future(client.get("/seg", headers={"Range": "bytes=250000-250009"}))
    await asyncio.sleep(0.2)
    assert not ranged.done()  # the range lies in a chunk not made yet
    for step in gate.steps[1:]:
        step.set()
    resp = await asyncio.wait_for(ranged, 5)
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 250000-250009/{len(DATA)}"
    assert await resp.read() == DATA[250000:250010]


async def test_failure_after_the_headers_cuts_the_connection(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    gate, kept = Gate(fail_at=2), []
    client = await aiohttp_client(gated_app(gate, kept))
    gate.steps[0].set()
    resp = await client.get("/seg")  # the headers are out before the cipher breaks
    assert resp.status == 200 and resp.content_length == len(DATA)
    for step in gate.steps[1:]:
        step.set()
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()  # short: 2 of 4 chunks, then the connection ends
    assert kept == []  # nothing half-made is cached


# -- the real origin ---------------------------------------------------------------------

SECRET = base64.b64encode(b"g" * 32).decode()


@pytest.fixture(scope="module")
def cold_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginThread, str,
                                                                         str]]:
    """Token playback, segment caches off: every request packages and encrypts afresh. The
    lecture's video segments are ~1.4 MB (sent while encrypted), its audio ones ~50 KB (made
    whole first: under 2 x CHUNK)."""
    root = tmp_path_factory.mktemp("cold")
    clip = root / "heavy.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}:duration=6",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=6",
                *X264, "-qp", "12", *AAC, "-movflags", "+faststart", clip])
    origin = OriginThread(library_config(
        root, auth={"playback": "token", "token_secrets": f"k1:{SECRET}"},
        packaging={"segment_memory_mb": 0, "segment_disk_mb": 0})).start()
    media_id = origin.add([clip], "Cold lecture")
    token = Keyring([parse_hs256_secret(f"k1:{SECRET}")], issuer="mediaorigin").issue(
        now=time.time(), media=media_id, ttl=600)
    yield origin, media_id, token
    origin.stop()


@pytest.mark.parametrize("rid", ["v0", "a0"])
def test_concurrent_cold_requests_get_the_same_bytes(cold_origin, rid: str) -> None:  # type: ignore[no-untyped-def]
    origin, media_id, token = cold_origin
    key = origin.get(f"/vod/{media_id}/key?token={token}&drm=aes-128").body
    clear = origin.get(f"/vod/{media_id}/{rid}/seg-2.m4s?token={token}").body
    assert (len(clear) > 2 * CHUNK_SIZE) == (rid == "v0")  # both paths are taken
    path = f"/vod/{media_id}/{rid}/seg-2.m4s?token={token}&drm=aes-128"
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: origin.get(path), range(16)))
    assert {r.status for r in replies} == {200}
    assert len({r.body for r in replies}) == 1
    assert aes128.decrypt_segment(replies[0].body, key, aes128.segment_iv(2)) == clear
    ranged = origin.get(path, headers={"Range": "bytes=16-47"})
    assert ranged.status == 206 and ranged.body == replies[0].body[16:48]
    head = origin.get(path, method="HEAD")
    assert head.status == 200 and int(head.headers["content-length"]) == len(replies[0].body)
    assert head.body == b""


@pytest.mark.parametrize("rid", ["v0", "a0"])
@pytest.mark.parametrize("drm", ["cenc", "cbcs"])
def test_cold_cenc_segments_match_across_requests(cold_origin, drm: str, rid: str) -> None:  # type: ignore[no-untyped-def]
    origin, media_id, token = cold_origin
    path = f"/vod/{media_id}/{rid}/seg-1.m4s?token={token}&drm={drm}"
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: origin.get(path), range(8)))
    assert {r.status for r in replies} == {200}
    assert len({r.body for r in replies}) == 1
    whole = replies[0].body
    assert b"senc" in whole[:4096]
    # Sent whole from memory (not while made: see playback.py); video is over LARGE_BODY.
    assert (len(whole) > LARGE_BODY) == (rid == "v0")
    ranged = origin.get(path, headers={"Range": f"bytes=100-{len(whole) - 2}"})
    assert ranged.status == 206 and ranged.body == whole[100:-1]
    head = origin.get(path, method="HEAD")
    assert head.status == 200 and int(head.headers["content-length"]) == len(whole)
    assert head.body == b""


def test_refused_cold_segment_is_a_json_error(cold_origin) -> None:  # type: ignore[no-untyped-def]
    origin, media_id, token = cold_origin
    reply = origin.get(f"/vod/{media_id}/v0/seg-1.ts?token={token}&drm=cenc")
    assert reply.status == 400
    assert reply.json()["error"]["code"] == "drm_not_for_protocol"
