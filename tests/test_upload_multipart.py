"""Multipart uploads through the real app: bounded memory, limits, and disconnects leave
nothing behind."""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient
from library_fixtures import auth, library_config

from mediaorigin.app import create_app

MiB = 1024 * 1024


def multipart(body: AsyncIterator[bytes] | bytes, filename: str = "big.mp4",
              metadata: str = '{"title": "Big"}') -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data")
    part = writer.append(body)
    part.set_content_disposition("form-data", name="file", filename=filename)
    meta = writer.append(metadata)
    meta.set_content_disposition("form-data", name="metadata")
    return writer


async def test_a_large_upload_streams_to_disk_in_bounded_memory(
        aiohttp_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = await aiohttp_client(create_app(library_config(tmp_path)))
    block = os.urandom(MiB)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield block  # the same object: the client side allocates nothing per chunk

    tracemalloc.start()
    try:
        async with client.post("/api/media/upload", data=multipart(body()),
                               headers=auth()) as resp:
            record = await resp.json()
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status == 201, record
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB traced: the upload was buffered"
    generation = record["storage"]["generations"][0]
    assert generation["size"] == 64 * MiB
    stored = tmp_path / "var/media/media" / record["id"] / "g1" / "original.mp4"
    assert stored.stat().st_size == 64 * MiB
    # The spool file moved into storage: nothing is left in the uploads folder.
    assert not [p for p in (tmp_path / "var/uploads").iterdir() if p.is_file()]


async def test_limits_and_a_dropped_connection_leave_nothing(
        aiohttp_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = await aiohttp_client(
        create_app(library_config(tmp_path, library={"max_upload_mb": 1})))
    # Over the limit while streaming (no Content-Length announced up front).
    async def two_mib() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"\0" * (256 * 1024)

    async with client.post("/api/media/upload", data=multipart(two_mib()),
                           headers=auth()) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "too_large"
    # A client that goes away in the middle of the file part.
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"cut.mp4\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    writer.write((f"POST /api/media/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Authorization: {auth()['Authorization']}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                  f"Content-Length: {len(head) + 900_000}\r\n\r\n").encode() + head
                 + b"\1" * 300_000)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    uploads = tmp_path / "var/uploads"
    for _ in range(50):  # the handler notices the disconnect and cleans up
        if not [p for p in uploads.iterdir() if p.is_file()]:
            break
        await asyncio.sleep(0.05)
    assert not [p for p in uploads.iterdir() if p.is_file()]
    async with client.get("/api/media", headers=auth()) as resp:
        assert (await resp.json())["items"] == []
