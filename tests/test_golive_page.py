"""The "go live" page in headless Chromium publishes over WHIP: fake camera and microphone in,
H.264 and AAC frames out at the gate; Stop ends the session.

Chromium runs with fake capture devices and loopback ICE (no mDNS hiding); the server gathers
on 127.0.0.1 only and ignores the browser's other candidates, so no packet leaves loopback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from players.harness import CHROMIUM_ARGS, chromium_path
from test_whip_ingest import (
    KEY,
    WHIP,
    RecordingGate,
    avcc_dimensions,
    check_audio,
    check_video,
)

from mediaorigin.ingest.whip import WhipEndpoint
from mediaorigin.ingest.whip_http import add_whip_routes
from mediaorigin.origin.edge import edge
from mediaorigin.origin.metrics import OriginMetrics

MEDIA_ARGS = [
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
]  # fmt: skip
STATE = "document.getElementById('status').dataset.state"


@pytest.fixture
def chromium() -> str:
    """The Chromium binary; skips without it or playwright (fails under CI, like `browser`)."""
    reason = None
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        reason = "python playwright is not installed: pip install -e '.[test]'"
    path = chromium_path()
    if reason is None and path is None:
        reason = "no Chromium (/usr/bin/chromium): run scripts/install-deps.sh (apt chromium)"
    if reason is not None or path is None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
        pytest.skip(reason or "no Chromium")
    return path


async def test_golive_page_publishes(aiohttp_client: Callable[..., Any], chromium: str) -> None:
    from playwright.async_api import async_playwright

    gate = RecordingGate()
    endpoint = WhipEndpoint(gate, ["127.0.0.1"], keyframe_interval=1.0)
    app = web.Application(middlewares=[edge(OriginMetrics(), "")])
    app[WHIP] = endpoint
    add_whip_routes(app, WHIP)
    client = await aiohttp_client(app)
    console: list[str] = []
    whip_calls: list[tuple[str, int]] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, headless=True,
                                               args=CHROMIUM_ARGS + MEDIA_ARGS)
            try:
                page = await browser.new_page()
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                page.on("response", lambda r: whip_calls.append((r.request.method, r.status))
                        if "/whip" in r.url else None)
                await page.goto(f"{client.make_url('/live/lecture-1/golive')}#token={KEY}")
                assert "token" not in page.url  # taken from the fragment, then cleared
                assert await page.input_value("#token") == KEY

                # A wrong key: the page shows the server's JSON error and publishes nothing.
                await page.fill("#token", "not-the-key")
                await page.click("#toggle")
                await page.wait_for_function(f"{STATE} === 'error'", timeout=15_000)
                assert "unknown stream key" in (await page.text_content("#status") or "")
                assert gate.opened == []

                await page.fill("#token", KEY)
                await page.click("#toggle")
                await page.wait_for_function(f"{STATE} === 'live' || {STATE} === 'error'",
                                             timeout=15_000)
                assert await page.text_content("#status") == "live", console
                sink = gate.sinks["lecture-1"]
                await gate.until(lambda: sink.span("video") >= 1.5 and sink.span("audio") >= 1.5,
                                 15)

                await page.click("#toggle")
                await page.wait_for_function(f"{STATE} === 'stopped' || {STATE} === 'error'",
                                             timeout=5_000)
                assert await page.text_content("#status") == "stopped", console
                assert sink.closes == 1  # the DELETE returned only after the close
            finally:
                await browser.close()
    finally:
        await endpoint.close_all()

    assert gate.opened == [("whip", "lecture-1", "127.0.0.1")]
    assert whip_calls == [("POST", 403), ("POST", 201), ("DELETE", 200)], whip_calls
    assert sink.closes == 1
    # Chromium may scale its camera down under load: the encoder then starts a new run.
    check_video(sink)
    width, height = avcc_dimensions(sink.runs("video")[0][0].config)
    assert width >= 320 and height >= 180, (width, height)
    check_audio(sink)
