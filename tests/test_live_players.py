"""Real players in headless Chromium play live streams while ffmpeg publishes over RTMP:
hls.js in low-latency mode (LL-HLS, fMP4, with parts), hls.js on the TS playlist, dash.js and
Shaka on the dynamic MPD; and the recording made when the stream ends plays as VOD.

Live playback has no `ended` event, so these tests drive the harness page themselves: they
start the player, wait until it plays, then watch currentTime advance against the wall clock
and read each player's own latency figures. The measured latencies are printed (pytest -s)
and carried in the assertion messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from library_fixtures import auth, library_config
from origin_server import OriginThread
from players.harness import PlayerBrowser, PlayerName

# The aim: glass-to-glass under 3 s with hls.js in low-latency mode.
LL_HLS_MAX_LATENCY = 3.0
# DASH players join after this many complete segments (~6 s of stream): the steady state,
# where their latency is governed by the MPD's suggestedPresentationDelay (6 s). Joining
# earlier, they start at the first segment and report whatever the stream's age was.
DASH_JOIN_SEGMENTS = 3


# --- the origin and the publisher ------------------------------------------------------------

@pytest.fixture
def live_origin(tmp_path: Path) -> Iterator[OriginThread]:
    """A fresh origin per test: its own RTMP port, library and live directory. A publisher
    that leaves ends the stream after 1 s (the recording test relies on it)."""
    origin = OriginThread(library_config(tmp_path / "origin",
                                         live={"reconnect_grace": 1.0})).start()
    try:
        yield origin
    finally:
        origin.stop()


def ffmpeg_publish_args(url: str) -> list[str]:
    return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "warning", "-re",
            "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-ac", "2",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", url]


@dataclass
class Publisher:
    origin: OriginThread
    stream: dict[str, Any]  # the POST /api/live answer
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return str(self.stream["id"])

    def url(self, key: str) -> str:
        """A playback URL from the create answer: key is hls, hlsTs or dash."""
        return self.origin.url(self.stream["playback"][key])

    def stop(self) -> None:
        """End the publisher (SIGTERM: ffmpeg closes the RTMP connection cleanly)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def wait_segments(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until the first media playlist of the LL-HLS master lists `count` complete
        segments.

        Players are started once the first segment is complete: before that the playlists
        hold parts only and the MPD no Period, which hls.js, dash.js and Shaka all reject
        (see test_join_before_the_first_segment_completes)."""
        master = self.origin.get(self.stream["playback"]["hls"])
        assert master.status == 200, master.body[:300]
        variant = next(line for line in master.body.decode().splitlines()
                       if line and not line.startswith("#"))
        path = urljoin(self.stream["playback"]["hls"], variant)
        self.wait(path, lambda r: r.status == 200 and r.body.count(b"#EXTINF:") >= count,
                  timeout)

    def ffmpeg_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def wait(self, path: str, ready: Any = lambda reply: reply.status == 200,
             timeout: float = 10.0) -> None:
        """Poll a URL of the origin until `ready(reply)`; fail with ffmpeg's log if not."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"ffmpeg exited ({self.process.returncode}): {self.ffmpeg_log()}")
            last = self.origin.get(path)
            if ready(last):
                return
            time.sleep(0.05)
        detail = f"{last.status} {last.body[:300]!r}" if last is not None else "no answer"
        pytest.fail(f"{path} not ready after {timeout}s ({detail}); ffmpeg: {self.ffmpeg_log()}")


def create_stream(origin: OriginThread, **fields: Any) -> dict[str, Any]:
    body = {"title": "Live lecture", "latencyMode": "low", "dvrWindow": 60, "record": True,
            **fields}
    reply = origin.request("POST", "/api/live", json.dumps(body).encode(),
                           {**auth(), "Content-Type": "application/json"})
    assert reply.status == 201, reply.body[:500]
    return reply.json()


@contextlib.contextmanager
def publishing(origin: OriginThread, tmp_path: Path, **fields: Any) -> Iterator[Publisher]:
    """Create a live stream, publish testsrc2 + a sine to it with ffmpeg, wait until the origin
    has media for it, and always stop ffmpeg afterwards."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("no ffmpeg on PATH: it is the RTMP publisher of these tests")
    stream = create_stream(origin, **fields)
    rtmp = f"{stream['rtmp']['url']}/{stream['rtmp']['streamKey']}"
    log = tmp_path / f"ffmpeg-{stream['id']}.log"
    with open(log, "wb") as err:
        process = subprocess.Popen(ffmpeg_publish_args(rtmp), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=err)
    publisher = Publisher(origin, stream, process, log)
    try:
        publisher.wait(stream["playback"]["hls"])
        yield publisher
    finally:
        publisher.stop()


# --- driving the harness page for live playback ----------------------------------------------

# Player state, sampled in the page. Latency figures (seconds, null when unknown):
# - hls: hls.latency (hls.js's estimate: distance to the live edge, playlist age included) and
#   wall clock minus hls.playingDate (the playing frame's EXT-X-PROGRAM-DATE-TIME).
# - dash: player.getCurrentLiveLatency() (dash.js: wall clock (UTCTiming) minus the playing
#   frame's availability time).
# - shaka: getStats().liveLatency (wall clock minus presentation start plus currentTime).
#   Not getPlayheadTimeAsDate(): Shaka 5.2 holds it at the start time for the first seconds
#   of playback, so wall clock minus it grows for a while and means nothing.
_SAMPLE_JS = """(kind) => {
  const v = document.getElementById("video");
  const H = window.__harness;
  const p = window.player;
  const num = (x) => (typeof x === "number" && isFinite(x)) ? x : null;
  const s = {time: v.currentTime, paused: v.paused, readyState: v.readyState,
             now: Date.now(), fatal: H.fatal, errors: H.errors.slice(),
             events: H.events.slice(), width: v.videoWidth, height: v.videoHeight,
             latency: null, wallLatency: null, extra: {}};
  try {
    if (kind === "hls" && p) {
      s.latency = num(p.latency);
      const d = p.playingDate;
      s.wallLatency = d ? (s.now - d.getTime()) / 1000 : null;
      s.extra = {targetLatency: num(p.targetLatency), drift: num(p.drift),
                 liveSyncPosition: num(p.liveSyncPosition), lowLatencyMode: p.lowLatencyMode,
                 live: !!(p.latestLevelDetails && p.latestLevelDetails.live)};
    } else if (kind === "dash" && p) {
      s.latency = num(p.getCurrentLiveLatency());
      s.extra = {dynamic: p.isDynamic(), targetLiveDelay: num(p.getTargetLiveDelay()),
                 dvrWindow: p.getDvrWindow()};
    } else if (kind === "shaka" && p) {
      s.latency = num(p.getStats().liveLatency);
      s.extra = {live: p.isLive(), seekRange: p.seekRange()};
    }
  } catch (e) { s.extra.sampleError = String(e); }
  return s;
}"""

_PLAYING_JS = """() => {
  const v = document.getElementById("video");
  return window.__harness.fatal || (!v.paused && v.readyState >= 3 && v.currentTime > 0);
}"""


@dataclass
class LiveWatch:
    """What a player did on a live stream: samples over the watch, traffic, console."""

    player: str
    url: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    startup: float = 0.0  # seconds from startPlayer() to playing
    watched: float = 0.0  # wall seconds between the first and the last sample
    requests: list[str] = field(default_factory=list)  # URLs the page fetched (media only)
    http_errors: list[str] = field(default_factory=list)  # "404 url", "failed url: reason"
    console: list[str] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)

    @property
    def first(self) -> dict[str, Any]:
        return self.samples[0]

    @property
    def last(self) -> dict[str, Any]:
        return self.samples[-1]

    @property
    def advanced(self) -> float:
        return self.last["time"] - self.first["time"] if self.samples else 0.0

    @property
    def errors(self) -> list[str]:
        return self.harness_errors + (self.last["errors"] if self.samples else [])

    @property
    def fatal(self) -> bool:
        return bool(self.harness_errors) or (bool(self.samples) and self.last["fatal"])

    def figures(self, key: str) -> list[float]:
        return [s[key] for s in self.samples if s[key] is not None]

    def latency_summary(self) -> str:
        def fmt(xs: list[float]) -> str:
            if not xs:
                return "n/a"
            return f"last {xs[-1]:.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"
        return (f"{self.player} latency: player's {fmt(self.figures('latency'))}; "
                f"wall clock - playing PDT {fmt(self.figures('wallLatency'))}")

    def summary(self) -> str:
        keep = ("time", "paused", "readyState", "latency", "wallLatency", "extra")
        return json.dumps({
            "player": self.player, "url": self.url, "startup": round(self.startup, 3),
            "watched": round(self.watched, 3), "advanced": round(self.advanced, 3),
            "errors": self.errors, "http_errors": self.http_errors,
            "events": self.last["events"] if self.samples else [],
            "console": self.console[-30:],
            "samples": [{k: s[k] for k in keep} for s in self.samples],
        }, indent=1, default=str)


async def watch_live(browser: PlayerBrowser, url: str, player: PlayerName, *,
                     watch: float, options: dict[str, Any] | None = None,
                     start_timeout: float = 10.0, interval: float = 0.5,
                     seek_back: float = 0.0) -> LiveWatch:
    """Load `url` in the harness page of `player`, wait until it plays, then sample its state
    every `interval` seconds for `watch` seconds; with `seek_back`, the viewer first rewinds
    that many seconds from where it plays (after the first sample). Runs on the browser's
    thread; never raises for playback failures (they are in the result)."""
    coro = _watch_live(browser, url, player, watch, options or {}, start_timeout, interval,
                       seek_back)
    # PlayerBrowser has no public hook for custom page driving: run on its loop as play() does.
    future = asyncio.run_coroutine_threadsafe(coro, browser._loop)
    return await asyncio.wrap_future(future)


async def _watch_live(browser: PlayerBrowser, url: str, player: PlayerName, watch: float,
                      options: dict[str, Any], start_timeout: float,
                      interval: float, seek_back: float) -> LiveWatch:
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    result = LiveWatch(player, url)
    context = await browser._browser.new_context()
    try:
        page = await context.new_page()
        page.on("request", lambda r: not r.url.startswith(browser.page_origin) and
                result.requests.append(r.url))
        page.on("response", lambda r: r.status >= 400 and result.http_errors.append(
            f"{r.status} {r.url}"))
        page.on("requestfailed", lambda r: result.http_errors.append(
            f"failed {r.url}: {r.failure}"))
        page.on("console", lambda m: m.type in ("error", "warning") and
                len(result.console) < 200 and result.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: result.harness_errors.append(f"page: uncaught {e}"))
        await page.goto(f"{browser.page_origin}/player/{player}")
        started = time.monotonic()
        await page.evaluate("([u, o]) => { window.startPlayer(u, o); }", [url, options])
        try:
            await page.wait_for_function(_PLAYING_JS, polling=50,
                                         timeout=start_timeout * 1000)
        except PlaywrightTimeout:
            result.harness_errors.append(f"harness: not playing after {start_timeout}s")
        result.startup = time.monotonic() - started
        first = time.monotonic()
        result.samples.append(await page.evaluate(_SAMPLE_JS, player))
        if seek_back:
            await page.evaluate("(s) => { const v = document.getElementById('video'); "
                                "v.currentTime = v.currentTime - s; }", seek_back)
        if not result.fatal and not result.harness_errors:
            while time.monotonic() - first < watch - 1e-3:
                await asyncio.sleep(min(interval, watch - (time.monotonic() - first)))
                result.samples.append(await page.evaluate(_SAMPLE_JS, player))
                if result.last["fatal"]:
                    break
        result.watched = time.monotonic() - first
    except PlaywrightError as e:
        result.harness_errors.append(f"harness: browser failure: {e}")
    finally:
        await context.close()
    return result


def report(result: LiveWatch) -> None:
    """Print what a watch measured (visible with pytest -s)."""
    print(f"\n[{result.player}] {result.url}\n  startup {result.startup:.2f} s, "
          f"currentTime +{result.advanced:.2f} s over {result.watched:.2f} s wall; "
          f"{result.latency_summary()}")
    if result.http_errors:
        print("  HTTP errors:", *result.http_errors, sep="\n    ")
    if result.errors:
        print("  player errors:", *result.errors, sep="\n    ")
    warnings = [c for c in result.console if "warning" in c or "error" in c]
    if warnings:
        print("  console:", *warnings[:20], sep="\n    ")


# --- the tests -------------------------------------------------------------------------------

async def test_hls_js_low_latency_plays_ll_hls(browser: PlayerBrowser, live_origin: OriginThread,
                                               tmp_path: Path) -> None:
    with publishing(live_origin, tmp_path, latencyMode="low") as pub:
        pub.wait_segments(1)
        result = await watch_live(browser, pub.url("hls"), "hls", watch=4.0,
                                  options={"lowLatencyMode": True})
    report(result)
    summary = result.summary()
    assert not result.fatal and result.errors == [], summary
    assert result.first["extra"].get("lowLatencyMode") is True, summary
    assert result.last["extra"].get("live") is True, summary
    assert result.advanced >= 3.0, summary
    latencies, wall = result.figures("latency"), result.figures("wallLatency")
    assert latencies and wall, summary
    # Judged once playback has settled: the last figures, not the start-up ones.
    message = f"{result.latency_summary()}\n{summary}"
    assert 0 < latencies[-1] < LL_HLS_MAX_LATENCY, message
    assert 0 < wall[-1] < LL_HLS_MAX_LATENCY, message
    assert result.http_errors == [], summary
    # The LL-HLS path: blocking playlist reloads and parts, not only whole segments.
    assert any("_HLS_msn=" in r for r in result.requests), result.requests
    assert any(re.search(r"/\d+\.\d+\.m4s", r) for r in result.requests), \
        result.requests


async def test_hls_js_rewinds_into_the_dvr_window(browser: PlayerBrowser,
                                                 live_origin: OriginThread,
                                                 tmp_path: Path) -> None:
    """A student rewinds a live lecture: hls.js, playing at the live edge, seeks 8 s back into
    the DVR window and plays on from there. The playing frame's program date time says how
    far behind the wall clock the picture is: at the edge, then about 8 s more."""
    rewind = 8.0
    with publishing(live_origin, tmp_path, latencyMode="low", dvrWindow=60) as pub:
        pub.wait_segments(7, timeout=25.0)  # ~14 s of lecture behind the live edge
        result = await watch_live(browser, pub.url("hls"), "hls", watch=6.0,
                                  options={"lowLatencyMode": True}, seek_back=rewind)
    report(result)
    # The seek makes hls.js cancel the part it was loading at the live edge, which it reports
    # as a non-fatal "aborted" network error: its own cancellation, not a failed request
    # (those would be in http_errors, which must stay empty).
    errors = [e for e in result.errors if e != "hls: non-fatal networkError aborted error=Aborted"]
    summary = result.summary()
    assert not result.fatal and errors == [] and result.http_errors == [], summary
    edge = result.first["wallLatency"]
    behind = result.figures("wallLatency")[-1]
    assert edge is not None and 0 < edge < LL_HLS_MAX_LATENCY, summary
    # Rewound (hls.js may take up to a part or so to land), and not pulled back to the edge.
    assert rewind - 1.0 < behind - edge < rewind + 1.5, summary
    # Still playing after the seek: currentTime advances with the wall clock.
    after = result.samples[2:]
    played = after[-1]["time"] - after[0]["time"]
    assert played >= 0.7 * (after[-1]["now"] - after[0]["now"]) / 1000, summary
    assert not after[-1]["paused"], summary
    assert result.http_errors == [], summary


async def test_hls_js_plays_live_ts(browser: PlayerBrowser, live_origin: OriginThread,
                                    tmp_path: Path) -> None:
    with publishing(live_origin, tmp_path, latencyMode="low") as pub:
        pub.wait_segments(1)
        result = await watch_live(browser, pub.url("hlsTs"), "hls", watch=4.0)
    report(result)
    summary = result.summary()
    assert not result.fatal and result.errors == [], summary
    assert result.last["extra"].get("live") is True, summary
    assert result.advanced >= 3.0, summary
    assert result.http_errors == [], summary
    # Whole MPEG-TS segments, no fMP4 parts.
    assert any(re.search(r"/ts/\d+\.ts", r) for r in result.requests), result.requests
    assert not any(".m4s" in r for r in result.requests), result.requests


@pytest.mark.parametrize(("player", "live_flag"), [("dash", "dynamic"), ("shaka", "live")])
async def test_dash_players_play_live_dash(browser: PlayerBrowser, live_origin: OriginThread,
                                           tmp_path: Path, player: PlayerName,
                                           live_flag: str) -> None:
    """dash.js and Shaka on the dynamic MPD; each reports liveness its own way (dash.js
    isDynamic(), Shaka isLive()), and dash.js its latency from the MPD's UTCTiming."""
    with publishing(live_origin, tmp_path, latencyMode="low") as pub:
        pub.wait_segments(DASH_JOIN_SEGMENTS)
        result = await watch_live(browser, pub.url("dash"), player, watch=5.0)
    report(result)
    summary = result.summary()
    assert not result.fatal and result.errors == [], summary
    assert result.last["extra"].get(live_flag) is True, summary
    assert result.advanced >= 3.0, summary
    if player == "dash":
        assert result.figures("latency"), summary
    assert result.http_errors == [], summary


JOIN_CASES: list[tuple[PlayerName, str, dict[str, Any]]] = [
    ("hls", "hls", {"lowLatencyMode": True}),
    ("dash", "dash", {}),
    ("shaka", "dash", {}),
]


@pytest.mark.parametrize(("player", "entry", "options"), JOIN_CASES,
                         ids=[p for p, _, _ in JOIN_CASES])
async def test_join_before_the_first_segment_completes(
        browser: PlayerBrowser, live_origin: OriginThread, tmp_path: Path,
        player: PlayerName, entry: str, options: dict[str, Any]) -> None:
    """A viewer who opens the stream as soon as the origin answers for it (its first part
    exists) plays once the first segment arrives, like one who joins later."""
    with publishing(live_origin, tmp_path, latencyMode="low") as pub:
        result = await watch_live(browser, pub.url(entry), player, watch=2.0, options=options)
    report(result)
    assert not result.fatal and result.advanced >= 1.5, result.summary()


async def test_recording_plays_as_vod(browser: PlayerBrowser, live_origin: OriginThread,
                                      tmp_path: Path) -> None:
    with publishing(live_origin, tmp_path, latencyMode="low") as pub:
        # About 4 s of lecture: two complete segments and the parts of the third.
        pub.wait_segments(2)
        published = time.monotonic() - pub.started
    # The publisher has gone: after the reconnect grace (1 s) the stream ends and is recorded.
    deadline = time.monotonic() + 10.0
    stream: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stream = live_origin.get(f"/api/live/{pub.id}", auth()).json()
        if stream["state"] == "ended" and stream.get("recording"):
            break
        await asyncio.sleep(0.1)
    assert stream.get("state") == "ended" and stream.get("recording"), stream
    media_id = stream["recording"]["mediaId"]
    media = live_origin.get(f"/api/media/{media_id}", auth())
    assert media.status == 200, media.body[:500]
    record = media.json()
    assert record["status"] == "ready", record
    duration = record["metadata"]["duration"]
    assert isinstance(duration, float) and duration >= 4.0, (published, record)

    # To the end: no min_time is reachable, so the wait ends on the `ended` event.
    result = await browser.play(live_origin.url(f"/vod/{media_id}/master.m3u8"), "hls",
                                min_time=1e9, timeout=duration + 10.0)
    print(f"\n[recording] {media_id}: {duration:.2f} s (published ~{published:.1f} s), "
          f"played to {result.reached_time:.2f} s in {result.elapsed:.2f} s")
    assert "video:ended" in result.events, result.summary()
    assert result.errors == [], result.summary()
    assert result.http_errors == [], result.summary()
    assert result.reached_time >= duration - 0.5, result.summary()


# What the lecturer's second connection sends: sound only, or the camera without sound.
_RETURNS = {
    "without_a_camera": ["-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000", "-ac", "2",
                         "-c:a", "aac"],
    "without_a_microphone": ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
                             "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                             "-g", "30", "-pix_fmt", "yuv420p"],
}


@pytest.mark.parametrize("comeback", list(_RETURNS))
async def test_hls_js_plays_on_when_the_lecturer_returns_with_one_track(
        browser: PlayerBrowser, live_origin: OriginThread, tmp_path: Path,
        comeback: str) -> None:
    """The lecturer's connection drops and comes back with one track only: hls.js, playing
    the muxed LL-HLS rendition, crosses the discontinuity into the new epoch (without a
    camera: a black slate of the camera's size; without a microphone: silence in the audio
    track) and plays on, without a fatal error."""
    with publishing(live_origin, tmp_path, latencyMode="low") as pub:
        pub.wait_segments(2)
        watching = asyncio.ensure_future(watch_live(
            browser, pub.url("hls"), "hls", watch=14.0, options={"lowLatencyMode": True}))
        await asyncio.sleep(3.0)
        pub.stop()  # the connection drops (within the 1 s reconnect grace, it comes back)
        rtmp = f"{pub.stream['rtmp']['url']}/{pub.stream['rtmp']['streamKey']}"
        second = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "warning", "-re", *_RETURNS[comeback],
             "-t", "20", "-f", "flv", rtmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            result = await watching
        finally:
            second.terminate()
            second.wait(5)
    report(result)
    summary = result.summary()
    assert not result.fatal, summary
    assert result.last["extra"].get("live") is True, summary
    assert (result.last["width"], result.last["height"]) == (640, 360), summary
    assert result.advanced >= 6.0, summary
    # It loaded the new epoch's init and parts of its second segment, and is playing.
    text = live_origin.get(f"/live/{pub.id}/av/index.m3u8").body.decode()
    first = int(re.findall(r"^(\d+)\.m4s", text.split('URI="init-1.mp4"')[1], re.M)[0])
    assert any(r.split("?")[0].endswith("/av/init-1.mp4") for r in result.requests), summary
    assert any(re.search(rf"/av/{first + 1}\.\d+\.m4s", r) for r in result.requests), summary
    assert not result.last["paused"] and result.last["readyState"] >= 3, summary
