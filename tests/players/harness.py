"""Drive real browser players (hls.js, dash.js, Shaka) in headless Chromium against a URL.

The point is end-to-end truth: a stream "works" when the players people use reach N seconds
of playback without error events, not when our own parser likes it.

Design:
- Chromium (system build, via Playwright) and a tiny aiohttp server for the harness page and
  the player scripts (from tests/players/node_modules) live on a private thread with its own
  event loop. `play()` is awaitable from any test's loop: pytest-asyncio gives each test a
  fresh loop, while one browser per session keeps the suite fast. The origin under test keeps
  running on the test's loop while the browser thread drives the page.
- The harness page has its own origin (another port), so the media server must answer with
  CORS headers, as a real origin behind a CDN must.
- Each play gets a fresh browser context (no shared cache or cookies between plays).

Install the players with scripts/install-players.sh; Chromium comes from the distribution
(`/usr/bin/chromium`, or set MEDIAORIGIN_CHROMIUM). `unavailable_reason()` says what's missing.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiohttp import web

PLAYERS_DIR = Path(__file__).resolve().parent
NODE_MODULES = PLAYERS_DIR / "node_modules"

PlayerName = Literal["hls", "dash", "shaka"]
PLAYERS: tuple[PlayerName, ...] = ("hls", "dash", "shaka")
# The one script each player needs, relative to node_modules.
PLAYER_SCRIPTS: dict[PlayerName, str] = {
    "hls": "hls.js/dist/hls.min.js",
    "dash": "dashjs/dist/modern/umd/dash.all.min.js",
    "shaka": "shaka-player/dist/shaka-player.compiled.js",
}
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip

T = TypeVar("T")


def chromium_path() -> str | None:
    """The Chromium binary: $MEDIAORIGIN_CHROMIUM, /usr/bin/chromium, or on PATH as
    chromium / chromium-browser (Ubuntu; a snap there, which may not run headless under
    Playwright in a container)."""
    for candidate in (os.environ.get("MEDIAORIGIN_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def unavailable_reason() -> str | None:
    """Why browser tests cannot run here (None when they can), worded as the fix."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "python playwright is not installed: pip install -e '.[test]'"
    if chromium_path() is None:
        return "no Chromium (/usr/bin/chromium): run scripts/install-deps.sh (apt chromium)"
    missing = [p for p in PLAYER_SCRIPTS.values() if not (NODE_MODULES / p).is_file()]
    if missing:
        return f"player scripts missing ({', '.join(missing)}): run scripts/install-players.sh"
    return None


@dataclass
class PlayResult:
    """What happened when one player tried to play one URL."""

    player: str
    url: str
    min_time: float
    reached_time: float  # video.currentTime when the wait ended
    errors: list[str]  # player error events (fatal and not), video/page errors, harness timeout
    events: list[str]  # player and <video> milestones in order, e.g. "hls:MANIFEST_PARSED"
    video_width: int = 0
    video_height: int = 0
    levels: list[dict[str, Any]] = field(default_factory=list)  # width, height, bitrate, codecs
    audio_tracks: list[dict[str, Any]] = field(default_factory=list)  # lang, name
    text_tracks: list[dict[str, Any]] = field(default_factory=list)  # lang, name, kind
    requests: list[str] = field(default_factory=list)  # URLs the page fetched, media only
    http_errors: list[str] = field(default_factory=list)  # "404 url" / "failed url: reason"
    console: list[str] = field(default_factory=list)  # console warnings/errors, for debugging
    elapsed: float = 0.0  # seconds from page load to the end of the wait

    @property
    def ok(self) -> bool:
        """Reached min_time with no error of any kind."""
        return self.reached_time >= self.min_time and not self.errors

    def summary(self) -> str:
        """A short multi-line description for assertion messages."""
        return json.dumps(
            {k: getattr(self, k) for k in ("player", "url", "reached_time", "errors",
                                           "http_errors", "events", "console", "elapsed")},
            indent=1,
        )  # fmt: skip


# --- the page ------------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>mediaorigin __PLAYER__</title>
<link rel="icon" href="data:,">
<script src="/node_modules/__SCRIPT__"></script>
</head><body>
<video id="video" muted autoplay playsinline width="320" height="240"></video>
<script>
"use strict";
const H = window.__harness = {errors: [], events: [], fatal: false, ended: false,
  levels: [], audioTracks: [], textTracks: []};
const video = document.getElementById("video");
video.muted = true;
const ev = (name) => { if (H.events.length < 500) H.events.push(name); };
const err = (msg) => { H.errors.push(String(msg).slice(0, 1000)); };
const fatal = (msg) => { err(msg); H.fatal = true; };
const str = (x) => { try { return typeof x === "string" ? x : JSON.stringify(x); }
                     catch (e) { return String(x); } };
video.addEventListener("error", () => {
  const e = video.error; fatal(`video: MediaError code=${e && e.code} ${e && e.message}`);
});
for (const n of ["loadedmetadata", "canplay", "playing", "waiting", "stalled", "seeked"]) {
  video.addEventListener(n, () => ev("video:" + n));
}
video.addEventListener("ended", () => { ev("video:ended"); H.ended = true; });
window.addEventListener("error", (e) => err("page: " + e.message));
window.addEventListener("unhandledrejection",
  (e) => err("page: unhandled rejection " + str(e.reason && (e.reason.message || e.reason))));
const play = () => video.play().catch((e) => ev("video:play-rejected " + e.message));

const starters = {
  hls(url, options) {
    if (!Hls.isSupported()) return fatal("hls: MediaSource not supported");
    const hls = window.player = new Hls(options);
    hls.on(Hls.Events.ERROR, (_, d) => {
      let m = `hls: ${d.fatal ? "fatal" : "non-fatal"} ${d.type} ${d.details}`;
      if (d.response && d.response.code !== undefined) m += ` status=${d.response.code}`;
      if (d.url || (d.frag && d.frag.url)) m += ` url=${d.url || d.frag.url}`;
      if (d.reason) m += ` reason=${d.reason}`;
      if (d.error) m += ` error=${d.error.message}`;
      d.fatal ? fatal(m) : err(m);
    });
    for (const n of ["MANIFEST_PARSED", "LEVEL_SWITCHED", "AUDIO_TRACK_SWITCHED",
                     "SUBTITLE_TRACK_SWITCH", "BUFFER_CODECS"]) {
      hls.on(Hls.Events[n], () => ev("hls:" + n));
    }
    hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => {
      H.levels = d.levels.map((l) => ({width: l.width, height: l.height, bitrate: l.bitrate,
        codecs: [l.videoCodec, l.audioCodec].filter(Boolean).join(",")}));
      H.audioTracks = (d.audioTracks || hls.audioTracks).map((t) => ({lang: t.lang,
        name: t.name, default: t.default}));
      H.textTracks = (d.subtitleTracks || hls.subtitleTracks).map((t) => ({lang: t.lang,
        name: t.name,
        kind: t.type}));
      play();
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  },

  dash(url, options) {
    const p = window.player = dashjs.MediaPlayer().create();
    if (Object.keys(options).length) p.updateSettings(options);
    const E = dashjs.MediaPlayer.events;
    const desc = (e) => e && e.error ? `code=${e.error.code} ${e.error.message}` : str(e);
    p.on(E.ERROR, (e) => fatal("dash: error " + desc(e)));
    p.on(E.PLAYBACK_ERROR, (e) => fatal("dash: playbackError " + desc(e)));
    for (const n of ["MANIFEST_LOADED", "STREAM_INITIALIZED", "QUALITY_CHANGE_RENDERED",
                     "TRACK_CHANGE_RENDERED"]) {
      p.on(E[n], () => ev("dash:" + n));
    }
    p.on(E.STREAM_INITIALIZED, () => {
      try {
        H.levels = p.getRepresentationsByType("video").map((r) => ({width: r.width,
          height: r.height, bitrate: r.bandwidth, codecs: r.codecs}));
        H.audioTracks = p.getTracksFor("audio").map((t) => ({lang: t.lang,
          name: (t.labels || []).map((l) => l.text || l).join(" ")}));
        H.textTracks = p.getTracksFor("text").map((t) => ({lang: t.lang,
          name: (t.labels || []).map((l) => l.text || l).join(" "), kind: (t.roles || [])
          .map((r) => r.value || r).join(" ")}));
      } catch (e) { ev("dash:track-info-failed " + e.message); }
    });
    p.initialize(video, url, true);
  },

  async shaka(url, options) {
    shaka.polyfill.installAll();
    if (!shaka.Player.isBrowserSupported()) return fatal("shaka: browser not supported");
    const p = window.player = new shaka.Player();
    const desc = (e) => `severity=${e.severity} category=${e.category} code=${e.code}` +
      ` data=${str(e.data).slice(0, 300)}`;
    p.addEventListener("error", (e) => {
      const m = "shaka: " + desc(e.detail);
      e.detail.severity === shaka.util.Error.Severity.CRITICAL ? fatal(m) : err(m);
    });
    for (const n of ["loaded", "adaptation", "variantchanged", "textchanged", "buffering"]) {
      p.addEventListener(n, () => ev("shaka:" + n));
    }
    await p.attach(video);
    if (Object.keys(options).length) p.configure(options);
    try {
      await p.load(url);
    } catch (e) {
      // load() rejects with the same error the "error" event carries, when it carries one.
      if (!H.fatal) fatal("shaka: load failed " + (e.code !== undefined ? desc(e) : e));
      return;
    }
    H.levels = p.getVariantTracks().map((t) => ({width: t.width, height: t.height,
      bitrate: t.bandwidth, codecs: t.codecs}));
    H.audioTracks = p.getAudioTracks().map((t) => ({lang: t.language, name: t.label}));
    H.textTracks = p.getTextTracks().map((t) => ({lang: t.language, name: t.label,
      kind: t.kind}));
    play();
  },
};

window.startPlayer = async (url, options) => {
  try {
    await starters["__PLAYER__"](url, options || {});
  } catch (e) {
    fatal("harness: __PLAYER__ threw " + (e && (e.stack || e.message) || e));
  }
};
</script></body></html>
"""

_STATE_JS = """() => {
  const v = document.getElementById("video");
  const H = window.__harness;
  return {time: v.currentTime, width: v.videoWidth, height: v.videoHeight,
          errors: H.errors, events: H.events, levels: H.levels,
          audioTracks: H.audioTracks, textTracks: H.textTracks};
}"""

_DONE_JS = """(minTime) => {
  const H = window.__harness;
  return H.fatal || H.ended || document.getElementById("video").currentTime >= minTime;
}"""


def _page_app(node_modules: Path) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        player = request.match_info["player"]
        if player not in PLAYER_SCRIPTS:
            raise web.HTTPNotFound()
        script = PLAYER_SCRIPTS[player]  # type: ignore[index]
        html = _PAGE.replace("__PLAYER__", player).replace("__SCRIPT__", script)
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    app = web.Application()
    app.router.add_get("/player/{player}", page)
    app.router.add_static("/node_modules", node_modules)
    return app


# --- the browser thread --------------------------------------------------------------------


class PlayerBrowser:
    """Headless Chromium + harness page server on their own thread and event loop.

    start() and close() block; play() is a coroutine usable from any event loop."""

    def __init__(self, executable: str | None = None, node_modules: Path = NODE_MODULES) -> None:
        self.executable = executable or chromium_path() or "/usr/bin/chromium"
        self.node_modules = node_modules
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="player-browser",
                                        daemon=True)  # fmt: skip
        self._pw: Any = None
        self._browser: Any = None
        self._runner: web.AppRunner | None = None
        self.page_origin = ""

    def start(self) -> PlayerBrowser:
        self._thread.start()
        try:
            self._call(self._astart())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            if not self._loop.is_closed():
                self._loop.close()
            return
        try:
            self._call(self._aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _astart(self) -> None:
        from playwright.async_api import async_playwright

        self._runner = web.AppRunner(_page_app(self.node_modules), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.page_origin = f"http://{host}:{port}"
        self._pw = await async_playwright().start()
        # launch() gives every browser a fresh temporary profile (user data dir).
        self._browser = await self._pw.chromium.launch(
            executable_path=self.executable, headless=True, args=CHROMIUM_ARGS
        )

    async def _aclose(self) -> None:
        if self._browser is not None:
            await self._browser.close()
        if self._pw is not None:
            await self._pw.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    async def play(
        self,
        url: str,
        player: PlayerName,
        min_time: float = 3.0,
        timeout: float = 30.0,
        options: dict[str, Any] | None = None,
    ) -> PlayResult:
        """See the module-level play()."""
        if player not in PLAYER_SCRIPTS:
            raise ValueError(f"unknown player {player!r}, expected one of {PLAYERS}")
        future = asyncio.run_coroutine_threadsafe(
            self._aplay(url, player, min_time, timeout, options or {}), self._loop
        )
        return await asyncio.wrap_future(future)

    async def _aplay(
        self, url: str, player: PlayerName, min_time: float, timeout: float, options: dict[str, Any]
    ) -> PlayResult:
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        result = PlayResult(player=player, url=url, min_time=min_time, reached_time=0.0,
                            errors=[], events=[])  # fmt: skip
        context = await self._browser.new_context()
        try:
            page = await context.new_page()
            _record_traffic(page, self.page_origin, result)
            await page.goto(f"{self.page_origin}/player/{player}")
            started = time.monotonic()
            await page.evaluate("([u, o]) => { window.startPlayer(u, o); }", [url, options])
            timed_out = False
            try:
                await page.wait_for_function(
                    _DONE_JS, arg=min_time, polling=100, timeout=timeout * 1000
                )
            except PlaywrightTimeout:
                timed_out = True
            result.elapsed = round(time.monotonic() - started, 3)
            state = await page.evaluate(_STATE_JS)
        except PlaywrightError as e:  # page crash, browser gone: report, don't hang the suite
            result.errors.append(f"harness: browser failure: {e}")
            return result
        finally:
            await context.close()
        result.reached_time = float(state["time"])
        result.errors[:0] = state["errors"]
        result.events = state["events"]
        result.video_width, result.video_height = state["width"], state["height"]
        result.levels = state["levels"]
        result.audio_tracks = state["audioTracks"]
        result.text_tracks = state["textTracks"]
        if timed_out:
            result.errors.append(
                f"harness: timeout after {timeout}s at currentTime={result.reached_time:.3f}"
            )
        return result


def _record_traffic(page: Any, page_origin: str, result: PlayResult) -> None:
    """Keep the media requests (not the harness's own) and anything that failed."""

    def on_request(request: Any) -> None:
        if not request.url.startswith(page_origin) and not request.url.startswith("data:"):
            result.requests.append(request.url)

    def on_response(response: Any) -> None:
        if response.status >= 400:
            result.http_errors.append(f"{response.status} {response.url}")

    def on_failed(request: Any) -> None:
        result.http_errors.append(f"failed {request.url}: {request.failure}")

    def on_console(msg: Any) -> None:
        if msg.type in ("error", "warning") and len(result.console) < 200:
            result.console.append(f"{msg.type}: {msg.text}")

    def on_pageerror(exc: Any) -> None:
        result.errors.append(f"page: uncaught {exc}")

    page.on("request", on_request)
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    page.on("console", on_console)
    page.on("pageerror", on_pageerror)


# --- module-level convenience --------------------------------------------------------------

_shared: PlayerBrowser | None = None
_shared_lock = threading.Lock()


def shared_browser() -> PlayerBrowser:
    """The process-wide PlayerBrowser, started on first use and closed at exit (or by
    close_shared_browser(), which the `browser` fixture calls at session end)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PlayerBrowser().start()
            atexit.register(close_shared_browser)
        return _shared


def close_shared_browser() -> None:
    global _shared
    with _shared_lock:
        browser, _shared = _shared, None
    if browser is not None:
        browser.close()


async def play(
    url: str,
    player: PlayerName,
    min_time: float = 3.0,
    timeout: float = 30.0,
    options: dict[str, Any] | None = None,
) -> PlayResult:
    """Load `url` in `player` (hls.js, dash.js or Shaka) and wait until the video's
    currentTime reaches min_time, a fatal error, the end of the media, or timeout seconds.

    options: that player's configuration (hls.js `new Hls(options)`, dash.js
    `updateSettings(options)`, Shaka `configure(options)`).
    Never raises for playback failures: they are in the result's `errors`."""
    browser = await asyncio.get_running_loop().run_in_executor(None, shared_browser)
    return await browser.play(url, player, min_time=min_time, timeout=timeout, options=options)


# --- a static media server with CORS, for reference packagings -----------------------------

MEDIA_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".ts": "video/mp2t",
    ".vtt": "text/vtt",
}
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, Origin, Accept, Content-Type",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Content-Type, ETag",
    "Access-Control-Max-Age": "600",
}


def static_media_app(root: Path) -> web.Application:
    """Serve files under root with media types and CORS, like a plain web server would: the
    baseline the players are proven against (ffmpeg's own HLS/DASH output)."""

    @web.middleware
    async def cors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=CORS_HEADERS)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(CORS_HEADERS)
            raise
        response.headers.update(CORS_HEADERS)
        suffix = Path(request.path).suffix
        if suffix in MEDIA_TYPES and response.status < 300:
            response.content_type = MEDIA_TYPES[suffix]
        return response

    app = web.Application(middlewares=[cors])
    app.router.add_static("/", root)
    return app
