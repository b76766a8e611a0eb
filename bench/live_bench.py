"""Benchmark of mediaorigin's live streaming: ingest-to-playlist delay and LL-HLS viewers.

Run from the repository root:

    .venv/bin/python bench/live_bench.py            # full run, ~4 min on 2 cores
    .venv/bin/python bench/live_bench.py --quick    # shorter runs, ~1.5 min
    .venv/bin/python bench/live_bench.py --profile  # + py-spy of the origin at the largest N
    (the first run also encodes a 60 s 720p clip once into bench/.cache/: ~15 s)

Needs ffmpeg; nginx + libnginx-mod-rtmp for the peer (as root the script runs
`apt-get install -y libnginx-mod-rtmp nginx-light` when they are missing, unless --no-install;
without them it says so and measures the origin alone); taskset to pin part 2 (util-linux),
and wrk for its floor;
py-spy for --profile (`pip install py-spy`, or --py-spy PATH). The origins run with
`[analytics] enabled = false` (their Redis stream is shared by every origin on the machine;
--analytics keeps the shipped setting) and `[demo] enabled = false`.

What it measures:
  1. Ingest-to-listed delay, side by side with nginx and Debian's RTMP module
     (libnginx-mod-rtmp: `hls on`, 2 s fragments). One ffmpeg encodes testsrc2 1280x720 30 fps
     (x264 veryfast, zerolatency, 2 s GOP) + AAC in real time (-re) and pushes the very same
     bytes (tee muxer) over RTMP to nginx and to two origin processes (`mediaorigin serve`,
     server.loop asyncio and uvloop). For every segment, and for the origin every LL-HLS
     part, the delay from the moment the end of its media was pushed to the moment a client
     first sees it listed in the playlist: nginx's playlist polled every 20 ms; the origin's
     with LL-HLS blocking reloads (`?_HLS_msn=M&_HLS_part=P`, answered as soon as the part is
     listed) and with plain 20 ms polling for the comparison with nginx. "Pushed": the tee
     muxer's last output is a framecrc listing on a pipe to this script, one line per packet
     written right after that packet went to every RTMP socket; the line's arrival time is
     the push time of that frame, and a part or segment ends when the frame that follows it
     (the first frame of the next one) is pushed. Also: how long after the first push each
     server's playlist first answers 200 ("playable").
  2. Concurrent LL-HLS viewers. One origin process (pinned to core 0) serves a 720p live
     stream (ffmpeg pushing a pre-encoded clip in a loop, -re -c copy). N simulated viewers
     in a separate process pinned to core 1 run hls.js's low-latency loop on what the
     master playlist offers (the muxed video+audio rendition; with --renditions demuxed the
     separate video and audio ones, a loop each, as the origin served LL-HLS before):
     blocking playlist request for the preload-hinted part (with _HLS_skip=YES), then GET
     every newly listed part. For each response: how long after the
     part was first listed to any viewer it arrived. The load generator is a minimal asyncio
     HTTP/1.1 client (aiohttp's client costs several times more CPU per response, and at a
     few hundred viewers its own queueing swamps the origin's; one run with it is shown as a
     cross-check). A second, idle "probe" process (one viewer) is a control for the load
     generator's own queueing. Then the floor: wrk saturates the origin on one playlist URL and
     one part URL, and bench/bare_aiohttp.py serving the very same bytes with nothing but
     aiohttp (same core, same loop): what one part's burst at 500 viewers costs either.
     nginx-rtmp has no LL-HLS (no parts, no blocking reload): it has no peer figure here.
  3. A summary against the aims, and every figure as JSON in
     bench/.cache/live-results-latest.json (with --profile also the raw py-spy stacks in
     bench/.cache/live-profile-latest.txt).

The machine is small and often shared: the report prints the CPU that other processes took
during each viewer run and marks noisy rows; --nice -10 (root) makes the bench's processes
win the CPU more often, which steadies the tail figures.

All traffic goes to 127.0.0.1. The script is flat on purpose, like origin_bench.py. With
--viewer-process it is the load generator itself (the bench starts it; not for direct use).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from benchlib import (
    CACHE,
    MEDIAORIGIN,
    REPO,
    background_load,
    cpu_model,
    cpu_seconds,
    first_line,
    free_port,
    launch,
    machine_cpu_seconds,
    ms,
    ok,
    pct,
    process_tree,
    say,
    stop,
)

RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
ADMIN_KEY = "live-bench-admin-key-0123456789abcdef"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--quick", action="store_true",
                    help="16 s ingest run, viewers 100 and 500, 5 s measurements (~2 min)")
parser.add_argument("--ingest-seconds", type=float, default=None,
                    help="length of the live encode of part 1 (default 40, --quick 16)")
parser.add_argument("--viewers", default=None,
                    help="comma-separated viewer counts (default 100,250,500,750; "
                         "--quick 100,500)")
parser.add_argument("--seconds", type=float, default=None,
                    help="measured seconds per viewer count (default 10, --quick 5)")
parser.add_argument("--loops", default="asyncio,uvloop",
                    help="server.loop values for part 2 (default asyncio,uvloop)")
parser.add_argument("--no-install", action="store_true",
                    help="do not try `apt-get install libnginx-mod-rtmp nginx-light` when the "
                         "RTMP module is missing (running as root)")
parser.add_argument("--renditions", choices=("master", "demuxed"), default="master",
                    help="part 2 viewers play what the master offers (default: the muxed "
                         "video+audio rendition), or the separate video and audio renditions "
                         "(two loops per viewer, twice the requests)")
parser.add_argument("--client", choices=("raw", "aiohttp"), default="raw",
                    help="part 2 load generator: 'raw' (default) a minimal asyncio HTTP/1.1 "
                         "client, or aiohttp's client (several times the CPU per response: at a "
                         "few hundred viewers its own queueing dominates the figures)")
parser.add_argument("--client-check", type=int, default=None,
                    help="also run this many viewers with the other client (aiohttp when the "
                         "client is raw) on the first loop, to show what the load generator "
                         "itself adds; 0: skip (default 250; skipped with --quick)")
parser.add_argument("--analytics", action="store_true",
                    help="keep the shipped [analytics] settings (playback events to the Redis "
                         "of [redis] url, aggregated in the serve process); by default the "
                         "bench turns analytics off: its Redis stream is shared by every origin "
                         "on the machine")
parser.add_argument("--nice", type=int, default=0,
                    help="run the origins, the load, the probe and the publisher at this "
                         "nice value (e.g. -10 as root), so that other work on a shared machine "
                         "disturbs the tail latencies less (default 0: unchanged)")
parser.add_argument("--skip-ingest", action="store_true", help="skip part 1")
parser.add_argument("--skip-viewers", action="store_true", help="skip part 2")
parser.add_argument("--profile", action="store_true",
                    help="sample the origin with py-spy during the largest viewer count of the "
                         "first loop and print where its time goes (needs py-spy)")
parser.add_argument("--py-spy", default=None, help="path of the py-spy binary")
parser.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (logs, configs, raw viewer records)")
parser.add_argument("--viewer-process", default=None, help=argparse.SUPPRESS)
args = parser.parse_args()

# --- the load generator (a separate process: `--viewer-process SPEC`) ---------------------------
# Each viewer is one aiohttp ClientSession (its own connections, at most 6 like a browser) with
# a loop per rendition it plays (spec["renditions"]: the muxed one, or video and audio), each
# doing what hls.js does in low-latency mode:
#   plain playlist load -> init segment -> repeat { blocking reload for the preload-hinted part
#   (_HLS_msn/_HLS_part, _HLS_skip=YES) -> GET every part listed beyond the last one fetched }.
# Times are wall-clock (time.time()) so that processes can be compared.

PART_RE = re.compile(r'#EXT-X-PART:DURATION=([0-9.]+),URI="(\d+)\.(\d+)\.m4s')
HINT_RE = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.m4s')
MAP_RE = re.compile(r'#EXT-X-MAP:URI="([^"]+)"')


def master_renditions(text: str) -> list[str]:
    """What a player plays from an LL-HLS master: the first variant's rendition and, if it
    names an audio group, that group's rendition (URIs are `{rendition}/index.m3u8`)."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF"))
    out = [lines[i + 1].split("/", 1)[0]]
    if 'AUDIO="' in lines[i]:
        audio = re.search(r'#EXT-X-MEDIA:TYPE=AUDIO,[^\n]*URI="([^/"]+)/', text)
        if audio:
            out.append(audio[1])
    return out


def pdt_seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def parse_media(text: str) -> dict:
    """An origin media playlist: media sequence, per msn its PDT and EXTINF, per part its
    duration, and the preload hint."""
    seq = 0
    pdt: dict[int, float] = {}
    extinf: dict[int, float] = {}
    parts: dict[tuple[int, int], float] = {}
    pending_pdt: float | None = None
    pending_inf: float | None = None
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            seq = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pending_pdt = pdt_seconds(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PART:"):
            m = PART_RE.match(line)
            if m:
                msn, i = int(m.group(2)), int(m.group(3))
                parts[(msn, i)] = float(m.group(1))
                if pending_pdt is not None:
                    pdt[msn], pending_pdt = pending_pdt, None
        elif line.startswith("#EXTINF:"):
            pending_inf = float(line[8:].split(",", 1)[0])
        elif line and not line.startswith("#") and pending_inf is not None:
            msn = int(line.split(".", 1)[0])
            extinf[msn], pending_inf = pending_inf, None
            if pending_pdt is not None:
                pdt[msn], pending_pdt = pending_pdt, None
    hint = HINT_RE.search(text)
    return {"seq": seq, "pdt": pdt, "extinf": extinf, "parts": parts,
            "hint": (int(hint.group(1)), int(hint.group(2))) if hint else None}


class RawHttp(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection, the least Python per response: the bench's
    own cost must stay small next to the origin's. Responses need a Content-Length (the
    origin always sends one). The completion time is taken in data_received, i.e. as soon as
    the event loop reads the last byte."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.keep = True
        self.head_end = self.need = -1
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None:
            return
        if self.need < 0:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(self.buf[:i]).lower()
            j = head.find(b"\r\ncontent-length:")
            if j < 0:
                self._fail(ConnectionError("response without Content-Length"))
                return
            k = head.find(b"\r\n", j + 2)
            self.status = int(head[9:12])
            self.head_end = i + 4
            self.need = self.head_end + int(head[j + 17: k if k > 0 else len(head)])
        if len(self.buf) >= self.need:
            when = time.time()
            body = bytes(self.buf[self.head_end:self.need]) if self.keep else \
                self.need - self.head_end
            del self.buf[:self.need]
            self.need = -1
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result((self.status, body, when))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ConnectionError("connection closed"))

    async def get(self, path: str, keep: bool = True, timeout: float = 15.0) -> tuple:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("not connected")
        loop = asyncio.get_running_loop()
        self.keep = keep
        self.waiter = waiter = loop.create_future()
        self.transport.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        timer = loop.call_later(timeout, lambda: waiter.done() or self._fail(
            TimeoutError("no response in time")))
        try:
            return await waiter
        finally:
            timer.cancel()


def viewer_process(spec: dict) -> None:
    import aiohttp

    try:
        import uvloop
    except ImportError:
        uvloop = None

    port, base, n = spec["port"], spec["base"], spec["viewers"]
    lean = spec["client"] == "raw"
    records: list[list] = []  # [rendition 0/1, msn, part, t_listed, t_done, bytes]
    errors: dict[str, int] = {}
    requests = [0]
    detail: dict[str, dict] = {"pdt": {}, "dur": {}}
    t_stop = spec["measure_to"] + 1.5
    failures = (aiohttp.ClientError, TimeoutError, OSError, ValueError)

    def error(kind: str) -> None:
        if spec["measure_from"] <= time.time() < spec["measure_to"]:
            errors[kind] = errors.get(kind, 0) + 1

    async def connect(session):
        if not lean:
            return session
        _, proto = await asyncio.get_running_loop().create_connection(
            RawHttp, "127.0.0.1", port)
        return proto

    async def fetch(conn, path: str, keep: bool = True) -> tuple:
        """(status, body or its length, completion wall time)"""
        if lean:
            out = await conn.get(path, keep)
        else:
            async with conn.get(f"http://127.0.0.1:{port}{path}") as r:
                body = await r.read()
                out = (r.status, body if keep else len(body), time.time())
        if spec["measure_from"] <= out[2] < spec["measure_to"]:
            requests[0] += 1
        return out

    async def rendition(session, name: str, index: int) -> None:
        url = f"{base}/{name}/index.m3u8"
        hint = conn = None
        while time.time() < t_stop:
            try:
                if conn is None:
                    conn = await connect(session)
                if hint is None:  # (re)start: a plain playlist load, the init, the live edge
                    status, body, _ = await fetch(conn, url)
                    if status != 200:
                        error(f"playlist HTTP {status}")
                        await asyncio.sleep(0.2)
                        continue
                    text = body.decode()
                    init = MAP_RE.findall(text)
                    if init:
                        await fetch(conn, f"{base}/{name}/{init[-1]}", keep=False)
                    hint = parse_media(text)["hint"]
                    if hint is None:
                        return  # ended
                status, body, t_listed = await fetch(
                    conn, f"{url}?_HLS_msn={hint[0]}&_HLS_part={hint[1]}&_HLS_skip=YES")
                if status != 200:
                    error(f"blocking playlist HTTP {status}")
                    hint = None
                    await asyncio.sleep(0.2)
                    continue
                text = body.decode()
                if spec["detail"] and index == 0:
                    info = parse_media(text)
                    for msn, value in info["pdt"].items():
                        detail["pdt"][str(msn)] = value
                    for (msn, i), d in info["parts"].items():
                        detail["dur"][f"{msn}.{i}"] = d
                new = sorted({(int(a), int(b)) for _, a, b in PART_RE.findall(text)
                              if (int(a), int(b)) >= hint})
                for msn, i in new:
                    status, size, t_done = await fetch(conn, f"{base}/{name}/{msn}.{i}.m4s",
                                                       keep=False)
                    if status != 200:
                        error(f"part HTTP {status}")
                        continue
                    if spec["measure_from"] - 3 <= t_listed < spec["measure_to"] + 3:
                        records.append([index, msn, i, t_listed, t_done, size])
                nxt = HINT_RE.search(text)
                hint = (int(nxt.group(1)), int(nxt.group(2))) if nxt else None
                if hint is None:
                    return
            except failures as e:
                error(type(e).__name__)
                hint = None
                if lean and conn is not None and conn.transport is None:
                    conn = None
                await asyncio.sleep(0.2)

    async def viewer(k: int) -> None:
        await asyncio.sleep(max(0.0, spec["start_at"] + k * spec["ramp"] / n - time.time()))
        session = None
        if not lean:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=6),
                                            timeout=aiohttp.ClientTimeout(total=15))
        try:
            try:
                first = await connect(session)
                await fetch(first, f"{base}/master.m3u8")
                if lean:
                    first.transport.close()
            except failures as e:
                error(type(e).__name__)
            # one connection per rendition loop, like a browser running them in parallel
            await asyncio.gather(*(rendition(session, name, i)
                                   for i, name in enumerate(spec["renditions"])))
        finally:
            if session is not None:
                await session.close()

    async def main() -> None:
        tasks = [asyncio.ensure_future(viewer(k)) for k in range(n)]
        await asyncio.sleep(max(0.0, t_stop - time.time()))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    if uvloop is not None:
        uvloop.run(main())
    else:
        asyncio.run(main())
    Path(spec["out"]).write_text(json.dumps({
        "records": records, "errors": errors, "requests": requests[0], "detail": detail,
        "loop": "uvloop" if uvloop is not None else "asyncio"}))


if args.viewer_process:
    viewer_process(json.loads(args.viewer_process))
    sys.exit(0)

# --- settings ---------------------------------------------------------------------------------

INGEST_SECONDS = args.ingest_seconds or (16.0 if args.quick else 40.0)
VIEWER_COUNTS = [int(x) for x in (args.viewers or ("100,500" if args.quick else
                                                     "100,250,500,750")).split(",")]
MEASURE = args.seconds or (5.0 if args.quick else 10.0)
RAMP = 1.5 if args.quick else 2.0  # viewers join spread over this
WARMUP = 2.0 if args.quick else 3.0  # after the ramp, before measuring
LOOPS = [x.strip() for x in args.loops.split(",") if x.strip()]
POLL = 0.02  # plain playlist polling period
AIM_PART_MS = 100.0  # part listed within this of its end (= part duration + 100 ms)
AIM_VIEWERS = 500
CLIENT_CHECK = args.client_check if args.client_check is not None else (0 if args.quick
                                                                         else 250)
AIM_VIEWER_P99_MS = 100.0
NOISY_PCT = 25.0  # "other" CPU above this (% of one core): something else competed
CLIP_SECONDS = 60

T_START = time.perf_counter()


def which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


FFMPEG = which("ffmpeg")
if FFMPEG is None:
    print("missing tool: ffmpeg\ninstall it with:  sudo apt-get install ffmpeg", file=sys.stderr)
    sys.exit(2)
if not MEDIAORIGIN.exists():
    print(f"{MEDIAORIGIN} not found: run this with the repo's venv python "
          "(.venv/bin/python bench/live_bench.py)", file=sys.stderr)
    sys.exit(2)
try:
    import aiohttp
    import uvloop
except ImportError as e:
    print(f"the venv lacks a dependency ({e}); run scripts/install-deps.sh", file=sys.stderr)
    sys.exit(2)
CLIENTS = {"raw": "a minimal asyncio HTTP/1.1 client on uvloop (bench/live_bench.py RawHttp), "
                  "one connection per rendition per viewer",
           "aiohttp": "aiohttp's client on uvloop, one ClientSession (<= 6 connections) per "
                      "viewer"}
from mediaorigin.config import Config  # noqa: E402  (the settings this checkout knows)

HAS_ANALYTICS = hasattr(Config(), "analytics")
ANALYTICS_SECTION = "[analytics]\nenabled = false\n" if HAS_ANALYTICS and not args.analytics \
    else ""
TASKSET = which("taskset") if (os.cpu_count() or 1) >= 2 else None
PY_SPY = args.py_spy or which("py-spy")
WRK = which("wrk")


def rtmp_peer() -> tuple[str | None, str]:
    """nginx with Debian's RTMP module: (nginx binary, "") or (None, why it is unavailable).
    Installs the packages when they are missing and we are root (unless --no-install)."""

    def present() -> bool:
        installed = subprocess.run(["dpkg", "-s", "libnginx-mod-rtmp"], capture_output=True)
        return installed.returncode == 0 and RTMP_MODULE.exists() and which("nginx") is not None

    if shutil.which("dpkg") is None:
        return None, "not a Debian system (no dpkg)"
    if present():
        return which("nginx"), ""
    if args.no_install or os.geteuid() != 0:
        return None, "libnginx-mod-rtmp is not installed (apt-get install libnginx-mod-rtmp " \
                     "nginx-light)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "libnginx-mod-rtmp", "nginx-light"]
    say("libnginx-mod-rtmp is missing: trying " + " ".join(cmd) + " ...")
    for attempt in range(2):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        except subprocess.TimeoutExpired:
            return None, "apt-get install timed out (no network?)"
        if p.returncode == 0 and present():
            return which("nginx"), ""
        if attempt == 0:  # stale or missing package lists: update once, then retry
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300,
                           env=env)
    return None, "apt-get install failed: " + (p.stderr.strip().splitlines() or ["?"])[-1]


NGINX, PEER_WHY = rtmp_peer()
if NGINX is None:
    say(f"the nginx-rtmp peer is unavailable: {PEER_WHY}; measuring the origin alone")

ENV_INFO = {
    "cpus": os.cpu_count(),
    "cpu_model": cpu_model(),
    "python": platform.python_version(),
    "platform": platform.platform(),
    "aiohttp": aiohttp.__version__,
    "uvloop": uvloop.__version__,
    "ffmpeg": first_line([FFMPEG, "-version"]),
    "nginx": first_line([NGINX, "-v"]) if NGINX else f"unavailable: {PEER_WHY}",
    "nginx_rtmp": (subprocess.run(["dpkg-query", "-W", "-f", "${Version}",
                                   "libnginx-mod-rtmp"], capture_output=True, text=True)
                   .stdout.strip() if NGINX else ""),
    "pinning": ("origin on core 0; load, probe and publisher on core 1" if TASKSET
                else "nothing pinned") + (f"; nice {args.nice}" if args.nice else ""),
    "analytics": ("on (shipped settings)" if args.analytics else "off ([analytics] enabled = "
                  "false)") if HAS_ANALYTICS else "n/a",
}

# --- small helpers ----------------------------------------------------------------------------


def listening(port: int) -> bool:
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == want and f[3] == "0A":
            return True
    return False






def pinned(core: int | None, cmd: list[str]) -> list[str]:
    """cmd on one core (part 2), at the --nice priority."""
    if TASKSET and core is not None:
        cmd = [TASKSET, "-c", str(core), *cmd]
    return ["nice", "-n", str(args.nice), *cmd] if args.nice else cmd


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": ms(pct(values, 50)), "p95_ms": ms(pct(values, 95)),
            "p99_ms": ms(pct(values, 99)), "max_ms": ms(max(values)),
            "min_ms": ms(min(values))}


def fmt(s: dict, keys: tuple[str, ...] = ("p50_ms", "p95_ms")) -> str:
    if not s.get("n"):
        return "-"
    return " / ".join(f"{s[k]:.0f}" for k in keys)


RUNNING: list[subprocess.Popen] = []


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def start_origin(tag: str, loop: str, core: int | None = None) -> dict:
    """`mediaorigin serve` with its own config in TMP, in its own process group; returns once
    /healthz answers and the RTMP port listens."""
    d = TMP / f"origin-{tag}"
    d.mkdir()
    port, rtmp = free_port(), free_port()
    config = d / "config.toml"
    config.write_text(f"""# generated by bench/live_bench.py
[server]
host = "127.0.0.1"
port = {port}
loop = "{loop}"
access_log = false
[ingest]
rtmp_host = "127.0.0.1"
rtmp_port = {rtmp}
[auth]
admin_key = "{ADMIN_KEY}"
[demo]
enabled = false
[library]
url = "sqlite:///{d / 'library.sqlite3'}"
[storage]
root = "{d / 'media'}"
cache_dir = "{d / 'cache'}"
[live]
dir = "{d / 'live'}"
{ANALYTICS_SECTION}""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAORIGIN_")}
    log_path = d / "origin.log"
    proc = launch(pinned(core, [str(MEDIAORIGIN), "serve", "--config", str(config)]), env,
                  log_path, RUNNING,
                  lambda: http_get(port, "/healthz", 2)[0] == 200 and listening(rtmp))
    return {"proc": proc, "port": port, "rtmp": rtmp, "loop": loop, "log": log_path}


def create_stream(origin: dict, title: str) -> dict:
    """POST /api/live (recording off: the bench ends streams by stopping the origin)."""
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", origin["port"], timeout=10)
    c.request("POST", "/api/live", json.dumps({"title": title, "record": False}),
              {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"})
    r = c.getresponse()
    body = json.loads(r.read())
    c.close()
    if r.status != 201:
        raise RuntimeError(f"POST /api/live: HTTP {r.status}: {body}")
    return {"id": body["id"], "url": body["rtmp"]["url"] + "/" + body["rtmp"]["streamKey"]}


def wrk_us_per_request(port: int, path: str) -> float:
    """wrk (1 thread, 32 connections, on core 1) on one URL: the server's microseconds per
    request at saturation, best of 2 runs of 3 s."""
    rates = []
    for _ in range(2):
        out = subprocess.run(pinned(1, [WRK, "-t1", "-c32", "-d3s",
                                        f"http://127.0.0.1:{port}{path}"]),
                             capture_output=True, text=True, timeout=60).stdout
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if found is None or "Non-2xx" in out:
            raise RuntimeError(f"wrk on {path}: {out[-500:]}")
        rates.append(float(found[1]))
    return 1e6 / max(rates)


def request_cost(origin: dict, base_path: str, loop: str, rendition: str) -> dict:
    """What a playlist and a part cost the origin per request, against bare aiohttp serving
    the very same bytes on the same core (bench/bare_aiohttp.py): the stack's floor."""
    playlist = f"{base_path}/{rendition}/index.m3u8"
    status, body = http_get(origin["port"], playlist)
    parts = re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', body.decode())
    if status != 200 or len(parts) < 2:
        raise RuntimeError(f"no parts to measure in {playlist}")
    part = f"{base_path}/{rendition}/{parts[-2]}"  # complete, and stays in the window for seconds
    files = {}
    for name, path in (("index.m3u8", playlist), ("part.m4s", part)):
        status, data = http_get(origin["port"], path)
        files[name] = TMP / f"floor-{loop}-{name}"
        files[name].write_bytes(data)
    out = {"playlist_bytes": files["index.m3u8"].stat().st_size,
           "part_bytes": files["part.m4s"].stat().st_size,
           "origin_playlist_us": wrk_us_per_request(origin["port"], playlist),
           "origin_part_us": wrk_us_per_request(origin["port"], part)}
    port = free_port()
    bare = launch(pinned(0, [sys.executable, str(REPO / "bench/bare_aiohttp.py"), str(port),
                             loop, *(f"{k}={v}" for k, v in files.items())]),
                  {**os.environ}, TMP / f"bare-{loop}.log", RUNNING,
                  lambda: http_get(port, "/index.m3u8", 2)[0] == 200)
    try:
        out["bare_playlist_us"] = wrk_us_per_request(port, "/index.m3u8")
        out["bare_part_us"] = wrk_us_per_request(port, "/part.m4s")
    finally:
        stop(bare)
    return out


FRAMECRC = "[f=framecrc]pipe:1"  # the tee muxer's last output: our push clock


class Pushes:
    """The framecrc listing ffmpeg's tee muxer writes to our pipe (read in a thread): one line
    per packet, written once the same packet went to every other output (the RTMP sockets).
    A video line's arrival time is when that frame was pushed to the servers."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.tb: dict[int, float] = {}
        self.kind: dict[int, str] = {}
        self.dts: list[float] = []  # video, seconds, in push order (no B-frames: increasing)
        self.wall: list[float] = []
        self.key_dts: list[float] = []
        self.key_wall: list[float] = []
        self.audio_dts: list[float] = []
        self.audio_wall: list[float] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            when = time.time()
            line = raw.decode(errors="replace").strip()
            if line.startswith("#tb "):
                idx, frac = line[4:].split(":", 1)
                num, den = frac.strip().split("/")
                self.tb[int(idx)] = int(num) / int(den)
            elif line.startswith("#media_type "):
                idx, kind = line[12:].split(":", 1)
                self.kind[int(idx)] = kind.strip()
            elif line[:1].isdigit():
                f = [x.strip() for x in line.split(",")]
                idx = int(f[0])
                dts = int(f[1]) * self.tb[idx]
                if self.kind.get(idx) == "audio":
                    self.audio_dts.append(dts)
                    self.audio_wall.append(when)
                if self.kind.get(idx) != "video":
                    continue
                self.dts.append(dts)
                self.wall.append(when)
                if not any(x.startswith("F=") for x in f[6:]):  # framecrc flags non-key only
                    self.key_dts.append(dts)
                    self.key_wall.append(when)

    @property
    def zero(self) -> float:
        """dts of the first keyframe: media time 0 of the origin's channel timeline."""
        return self.key_dts[0] if self.key_dts else 0.0

    def pushed(self, t: float, key: bool = False, tolerance: float = 0.02) -> float | None:
        """Wall time the video frame at media time t (nearest frame; nearest keyframe with
        key=True) was pushed, or None when no frame is that close."""
        dts, wall = (self.key_dts, self.key_wall) if key else (self.dts, self.wall)
        t += self.zero
        i = bisect.bisect_left(dts, t)
        best = min((j for j in (i - 1, i) if 0 <= j < len(dts)),
                   key=lambda j: abs(dts[j] - t), default=None)
        if best is None or abs(dts[best] - t) > tolerance:
            return None
        return wall[best]

    def audio_from(self, t: float) -> float | None:
        """Wall time the first audio packet at or after media time t was pushed: the origin
        releases a part once audio reaches its end, so video and audio parts match."""
        i = bisect.bisect_left(self.audio_dts, t + self.zero - 0.0005)
        return self.audio_wall[i] if i < len(self.audio_wall) else None

    def offset(self) -> float | None:
        """Median of push time - media time over the run (for the report)."""
        if not self.dts:
            return None
        return statistics.median(w - (d - self.zero) for d, w in zip(self.dts, self.wall,
                                                                       strict=True))

    def jitter(self) -> float:
        """p95 - p5 of push time - media time after the first 2 s (the start is a burst: the
        RTMP connections are opened while -re's clock already runs)."""
        lag = sorted(w - d for d, w in zip(self.dts, self.wall, strict=True)
                     if d - self.zero > 2.0)
        return pct(lag, 95) - pct(lag, 5) if lag else 0.0


ENV_INFO["background_cpu_pct_at_start"] = background_load()

TMP = Path(tempfile.mkdtemp(prefix="mediaorigin-live-bench-"))
TMP.chmod(0o755)
RESULTS: dict = {"args": {k: v for k, v in vars(args).items() if k != "viewer_process"},
                 "env": ENV_INFO, "aims": {"part_listed_ms": AIM_PART_MS,
                                           "viewers": AIM_VIEWERS,
                                           "viewer_p99_ms": AIM_VIEWER_P99_MS}}
INGEST: dict = {}
VIEWERS: dict = {}
FLOOR: dict = {}  # loop -> per-request cost, origin vs bare aiohttp (see request_cost)
PLAYED: list[str] = ["video", "audio"]  # the renditions each viewer plays (master: from it)
PROFILE: dict = {}

try:
    # === 1. Ingest-to-listed delay ==============================================================
    if not args.skip_ingest:
        say(f"part 1: origins ({', '.join(('asyncio', 'uvloop'))}) "
            f"{'and nginx-rtmp ' if NGINX else ''}...")
        origins = {loop: start_origin(f"ingest-{loop}", loop) for loop in ("asyncio", "uvloop")}
        streams = {loop: create_stream(o, f"ingest {loop}") for loop, o in origins.items()}
        nginx = None
        if NGINX:
            nd = TMP / "nginx"
            hls_dir = nd / "hls"
            hls_dir.mkdir(parents=True)
            n_rtmp, n_http = free_port(), free_port()
            user = ""
            if os.geteuid() == 0:  # workers would drop to nobody; stay the current user
                import pwd

                user = f"user {pwd.getpwuid(os.getuid()).pw_name};"
            (nd / "nginx.conf").write_text(f"""# generated by bench/live_bench.py
load_module {RTMP_MODULE};
{user}
worker_processes 1;
error_log {nd}/error.log warn;
events {{ worker_connections 1024; }}
rtmp {{
    server {{
        listen 127.0.0.1:{n_rtmp};
        application live {{
            live on;
            hls on;
            hls_path {hls_dir};
            hls_fragment 2s;
            hls_playlist_length 10s;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {nd}/body;
    proxy_temp_path {nd}/proxy;
    fastcgi_temp_path {nd}/fastcgi;
    uwsgi_temp_path {nd}/uwsgi;
    scgi_temp_path {nd}/scgi;
    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
    server {{
        listen 127.0.0.1:{n_http};
        root {hls_dir};
        location / {{ add_header Cache-Control no-cache; }}
    }}
}}
""")
            nginx = subprocess.Popen(
                [NGINX, "-p", str(nd), "-e", str(nd / "error.log"), "-c", str(nd / "nginx.conf"),
                 "-g", f"daemon off; pid {nd}/nginx.pid;"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            RUNNING.append(nginx)
            deadline = time.monotonic() + 20
            while not (listening(n_rtmp) and listening(n_http)):
                if nginx.poll() is not None:
                    raise RuntimeError(f"nginx exited: {nginx.stderr.read().decode()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start listening in 20 s")
                time.sleep(0.02)

        # Who saw what, when: (kind, key) -> (wall time first seen, duration)
        seen: dict[str, dict] = {f"{loop}/{how}": {} for loop in origins
                                 for how in ("blocking", "plain")}
        if nginx:
            seen["nginx/plain"] = {}

        def note_origin(book: dict, text: str, when: float) -> None:
            book.setdefault("first_ok", when)
            info = parse_media(text)
            for key, d in info["parts"].items():
                book.setdefault(("part", key), (when, d))
            for msn, d in info["extinf"].items():
                book.setdefault(("seg", msn), (when, d))
            if book.get("pdt0") is None:
                book["pdt0"] = info["pdt"].get(0)

        def note_nginx(book: dict, text: str, when: float) -> None:
            book.setdefault("first_ok", when)
            seq, k = 0, 0
            pending = None
            for line in text.splitlines():
                if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                    seq = int(line.split(":", 1)[1])
                elif line.startswith("#EXTINF:"):
                    pending = float(line[8:].split(",", 1)[0])
                elif line and not line.startswith("#") and pending is not None:
                    book.setdefault(("seg", seq + k), (when, pending))
                    k += 1
                    pending = None

        async def poll_plain(session, url: str, book: dict, note, done: asyncio.Event) -> None:
            while not done.is_set():
                t = time.time()
                try:
                    async with session.get(url) as r:
                        body = await r.text()
                        when = time.time()
                        if r.status == 200:
                            note(book, body, when)
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(max(0.0, POLL - (time.time() - t)))

        async def poll_blocking(session, port: int, path: str, book: dict,
                                done: asyncio.Event) -> None:
            hint = None
            while not done.is_set():
                try:
                    if hint is None:
                        async with session.get(f"http://127.0.0.1:{port}{path}") as r:
                            body = await r.text()
                            when = time.time()
                        if r.status != 200:
                            await asyncio.sleep(POLL)
                            continue
                    else:
                        url = f"http://127.0.0.1:{port}{path}?_HLS_msn={hint[0]}" \
                              f"&_HLS_part={hint[1]}"
                        async with session.get(url) as r:
                            body = await r.text()
                            when = time.time()
                        if r.status != 200:
                            hint = None
                            continue
                    note_origin(book, body, when)
                    hint = parse_media(body)["hint"]
                except aiohttp.ClientError:
                    hint = None
                    await asyncio.sleep(POLL)

        async def ingest_run() -> tuple[Pushes, subprocess.Popen, float]:
            done = asyncio.Event()
            outputs = [streams[loop]["url"] for loop in origins]
            if nginx:
                outputs.append(f"rtmp://127.0.0.1:{n_rtmp}/live/bench")
            cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin",
                   "-re", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
                   "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                   "-t", f"{INGEST_SECONDS:g}", "-map", "0:v", "-map", "1:a",
                   "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
                   "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
                   "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "2500k",
                   "-c:a", "aac", "-b:a", "128k", "-ac", "2",
                   # the tee muxer needs the codec configuration in extradata for FLV
                   "-flags", "+global_header",
                   "-f", "tee", "|".join([*(f"[f=flv:onfail=ignore]{u}" for u in outputs),
                                          FRAMECRC])]
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=15)) as session:
                tasks = []
                for loop, o in origins.items():
                    path = f"/live/{streams[loop]['id']}/video/index.m3u8"
                    tasks.append(asyncio.create_task(poll_plain(
                        session, f"http://127.0.0.1:{o['port']}{path}", seen[f"{loop}/plain"],
                        note_origin, done)))
                    tasks.append(asyncio.create_task(poll_blocking(
                        session, o["port"], path, seen[f"{loop}/blocking"], done)))
                if nginx:
                    tasks.append(asyncio.create_task(poll_plain(
                        session, f"http://127.0.0.1:{n_http}/bench.m3u8", seen["nginx/plain"],
                        note_nginx, done)))
                await asyncio.sleep(0.3)
                started = time.time()
                ff = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      start_new_session=True)
                RUNNING.append(ff)
                progress = Pushes(ff)
                while ff.poll() is None:
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)
                done.set()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            return progress, ff, started

        say(f"  ffmpeg: testsrc2 720p30 live encode, {INGEST_SECONDS:g} s, pushed to "
            f"{len(origins) + (1 if nginx else 0)} servers (tee) ...")
        progress, ff, ff_started = asyncio.run(ingest_run())
        if ff.returncode != 0:
            raise RuntimeError(f"ffmpeg failed ({ff.returncode}): "
                               f"{ff.stderr.read().decode()[-2000:]}")
        if not progress.key_dts:
            raise RuntimeError("ffmpeg's framecrc listing had no video keyframe")

        def delays(book: dict, kind: str, by_index: dict | None = None,
                   after_audio: list | None = None, slow: list | None = None) -> list[float]:
            """Per part or segment: first seen - push time of the frame at its end, for what
            ended at least one part before the end of the encode (the last one is flushed at
            the disconnect, not cut by a following frame)."""
            segs = {k[1]: v[1] for k, v in book.items() if isinstance(k, tuple) and
                    k[0] == "seg"}
            start: dict[int, float] = {}
            acc = 0.0
            for msn in range(0, max(segs, default=-1) + 2):
                start[msn] = acc
                if msn not in segs:
                    break
                acc += segs[msn]
            out = []
            for key, value in book.items():
                if not isinstance(key, tuple) or key[0] != kind:
                    continue
                when, d = value
                if kind == "seg":
                    msn = key[1]
                    if msn not in start:
                        continue
                    end = start[msn] + d
                else:
                    msn, i = key[1]
                    if msn not in start or msn == 0:
                        continue  # segment 0's parts are listed once the stream is playable
                    durs = [book.get(("part", (msn, j)), (0, None))[1] for j in range(i + 1)]
                    if any(x is None for x in durs):
                        continue
                    end = start[msn] + sum(durs)
                if end > INGEST_SECONDS - 0.6:
                    continue
                # Segments: nginx's EXTINF are whole milliseconds from its first packet, so
                # snap to the nearest keyframe; parts: to the nearest frame.
                pushed = progress.pushed(end, key=True, tolerance=0.1) if kind == "seg" \
                    else progress.pushed(end)
                if pushed is None:
                    continue
                out.append(when - pushed)
                if slow is not None and when - pushed > 0.2:
                    slow.append((key[1] if kind == "seg" else list(key[1]),
                                 round(end, 3), round(ms(when - pushed))))
                if by_index is not None and kind == "part":
                    by_index.setdefault(key[1][1], []).append(when - pushed)
                audio = progress.audio_from(end)
                if after_audio is not None and kind == "part" and audio is not None:
                    after_audio.append(when - max(pushed, audio))
            return out

        for name, book in seen.items():
            entry = {"segments": stats(delays(book, "seg"))}
            if book.get("first_ok") is not None and progress.wall:
                entry["playable_after_first_push_ms"] = ms(book["first_ok"] - progress.wall[0])
            if not name.startswith("nginx"):
                by_index: dict[int, list[float]] = {}
                after_audio: list[float] = []
                slow: list = []
                entry["parts"] = stats(delays(book, "part", by_index, after_audio, slow))
                entry["parts_over_200ms"] = slow  # [msn, index], media end s, delay ms
                entry["parts_after_audio"] = stats(after_audio)
                entry["parts_by_index_p50_ms"] = {i: round(ms(statistics.median(v)), 1)
                                                  for i, v in sorted(by_index.items())}
                durations = [v[1] for k, v in book.items() if isinstance(k, tuple) and
                             k[0] == "part"]
                entry["part_durations"] = {
                    "n": len(durations), "median_s": statistics.median(durations)
                    if durations else None,
                    "under_0.1s": sum(1 for x in durations if x < 0.1),
                    "per_segment": round(len(durations) / max(1, sum(
                        1 for k in book if isinstance(k, tuple) and k[0] == "seg")), 2)}
                if book.get("pdt0") is not None and progress.pushed(0.0) is not None:
                    entry["pdt0_minus_push_ms"] = ms(book["pdt0"] - progress.pushed(0.0))
            else:
                extinfs = [v[1] for k, v in book.items() if isinstance(k, tuple)]
                entry["segment_durations"] = sorted(set(round(x, 3) for x in extinfs))
            INGEST[name] = entry
        INGEST["push_clock"] = {"frames": len(progress.dts),
                                "first_push_after_start_ms": ms(progress.wall[0] - ff_started),
                                "pacing_jitter_ms": ms(progress.jitter())}
        for name, e in INGEST.items():
            if name != "push_clock":
                say(f"  {name:<18} segments p50/p95 {fmt(e['segments'])} ms"
                    + (f", parts p50/p95 {fmt(e['parts'])} ms" if "parts" in e else ""))
        for o in origins.values():
            stop(o["proc"])
        stop(nginx)
        RESULTS["ingest"] = INGEST

    # === 2. Concurrent LL-HLS viewers ============================================================
    if not args.skip_viewers:
        CACHE.mkdir(parents=True, exist_ok=True)
        clip = CACHE / f"live-720p30-2500k-{CLIP_SECONDS}s.mp4"
        if not clip.exists():
            say(f"encoding the {CLIP_SECONDS} s 720p30 clip the viewers' stream loops over "
                f"(cached in {CACHE}) ...")
            partial = CACHE / f"partial-{clip.name}"
            subprocess.run(
                [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-nostdin",
                 "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
                 "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                 "-t", str(CLIP_SECONDS), "-map", "0:v", "-map", "1:a",
                 "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
                 "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
                 "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "2500k",
                 "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "mp4", str(partial)],
                check=True)
            partial.replace(clip)
        profiled = False
        for loop in LOOPS:
            say(f"part 2: origin ({loop}) {'pinned to core 0 ' if TASKSET else ''}...")
            origin = start_origin(f"viewers-{loop}", loop, core=0)
            stream = create_stream(origin, f"viewers {loop}")
            pub = subprocess.Popen(
                pinned(1, [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin",
                           "-re", "-stream_loop", "-1", "-i", str(clip),
                           # two outputs, not tee: tee keeps the MP4 codec tag FLV refuses.
                           # Stream copy: both get the same packets, the FLV one first.
                           "-map", "0", "-c", "copy", "-f", "flv", stream["url"],
                           "-map", "0", "-c", "copy", "-f", "framecrc", "pipe:1"]),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            RUNNING.append(pub)
            pub_pushes = Pushes(pub)
            base_path = f"/live/{stream['id']}"
            pdt0 = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # two complete segments: the stream is steady
                status, body = http_get(origin["port"], base_path + "/video/index.m3u8")
                if status == 200:
                    info = parse_media(body.decode())
                    pdt0 = info["pdt"].get(0)
                    if len(info["extinf"]) >= 2:
                        break
                if pub.poll() is not None:
                    raise RuntimeError(f"publisher exited: {pub.stderr.read().decode()[-1500:]}")
                time.sleep(0.1)
            else:
                raise RuntimeError("the live stream did not start in 30 s")
            per_loop: list[dict] = []
            if args.renditions == "master":
                status, body = http_get(origin["port"], base_path + "/master.m3u8")
                PLAYED[:] = master_renditions(body.decode())
            RESULTS["renditions_played"] = PLAYED
            runs = [(n, args.client) for n in VIEWER_COUNTS]
            if CLIENT_CHECK and loop == LOOPS[0]:
                runs.append((CLIENT_CHECK, "aiohttp" if args.client == "raw" else "raw"))
            for n, client in runs:
                start_at = time.time() + 1.5  # the worker's imports take ~0.5 s
                spec = {"port": origin["port"], "base": base_path, "client": client,
                        "renditions": PLAYED,
                        "start_at": start_at, "ramp": RAMP,
                        "measure_from": start_at + RAMP + WARMUP,
                        "measure_to": start_at + RAMP + WARMUP + MEASURE}
                outs = {"load": TMP / f"load-{loop}-{n}.json",
                        "probe": TMP / f"probe-{loop}-{n}.json"}
                workers = {}
                for role, count in (("load", n), ("probe", 1)):
                    s = dict(spec, viewers=count, out=str(outs[role]), detail=role == "probe")
                    workers[role] = subprocess.Popen(
                        pinned(1, [sys.executable, __file__, "--viewer-process", json.dumps(s)]),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        start_new_session=True)
                    RUNNING.append(workers[role])
                say(f"  {n} viewers: ramp {RAMP:g} s, warm-up {WARMUP:g} s, measure "
                    f"{MEASURE:g} s ...")
                time.sleep(max(0.0, spec["measure_from"] - time.time()))
                spy = None
                if args.profile and not profiled and n == max(VIEWER_COUNTS) and PY_SPY \
                        and client == args.client:
                    profiled = True
                    spy_out = TMP / f"py-spy-{loop}-{n}.txt"
                    spy = subprocess.Popen(
                        pinned(1, [PY_SPY, "record", "--nonblocking", "--format", "raw",
                                   "--rate", "200", "--duration", str(int(MEASURE)),
                                   "--pid", str(origin["proc"].pid), "--output", str(spy_out)]),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        start_new_session=True)
                    RUNNING.append(spy)
                groups = {"origin": process_tree(origin["proc"].pid),
                          "load": [workers["load"].pid], "probe": [workers["probe"].pid],
                          "publisher": [pub.pid]}
                cpu0 = {k: cpu_seconds(v) for k, v in groups.items()}
                m0, w0 = machine_cpu_seconds(), time.time()
                time.sleep(max(0.0, spec["measure_to"] - time.time()))
                cpu1 = {k: cpu_seconds(v) for k, v in groups.items()}
                m1, w1 = machine_cpu_seconds(), time.time()
                cpu = {k: 100 * (cpu1[k] - cpu0[k]) / (w1 - w0) for k in groups}
                cpu["machine"] = 100 * (m1 - m0) / (w1 - w0)
                cpu["other"] = max(0.0, cpu["machine"] - sum(cpu[k] for k in groups))
                for role, w in workers.items():
                    try:
                        w.wait(timeout=max(5.0, spec["measure_to"] + 30 - time.time()))
                    except subprocess.TimeoutExpired:
                        stop(w)
                    if w.returncode != 0:
                        raise RuntimeError(f"{role} process failed ({w.returncode}): "
                                           f"{w.stderr.read().decode()[-2000:]}")
                if spy is not None:
                    try:
                        spy.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        stop(spy)
                    if spy_out.exists():
                        PROFILE["run"] = f"{loop}, {n} viewers, {MEASURE:g} s at 200 Hz"
                        PROFILE["raw"] = spy_out.read_text()
                load = json.loads(outs["load"].read_text())
                probe = json.loads(outs["probe"].read_text())

                # When was each part first listed to anyone (load or probe)?
                first: dict[tuple, float] = {}
                for rec in load["records"] + probe["records"]:
                    key = (rec[0], rec[1], rec[2])
                    if rec[3] < first.get(key, float("inf")):
                        first[key] = rec[3]

                def window(recs: list, spec: dict = spec) -> list:
                    return [r for r in recs
                            if spec["measure_from"] <= r[3] < spec["measure_to"]]

                def figures(recs: list, first: dict = first) -> dict:
                    recs = window(recs)
                    return {
                        "playlist_beyond_first": stats([r[3] - first[(r[0], r[1], r[2])]
                                                        for r in recs]),
                        "part_get": stats([r[4] - r[3] for r in recs]),
                        "part_in_hand_beyond_first": stats([r[4] - first[(r[0], r[1], r[2])]
                                                            for r in recs]),
                        "parts": len(recs),
                        "bytes": sum(r[5] for r in recs),
                    }

                res = {"viewers": n, "load": figures(load["records"]),
                       "probe": figures(probe["records"]),
                       "errors": {k: load["errors"].get(k, 0) + probe["errors"].get(k, 0)
                                  for k in set(load["errors"]) | set(probe["errors"])},
                       "requests": load["requests"] + probe["requests"], "cpu": cpu,
                       "client_loop": load["loop"]}
                res["req_s"] = res["requests"] / MEASURE
                res["mb_s"] = (res["load"]["bytes"] + res["probe"]["bytes"]) / MEASURE / 1e6
                res["parts_per_viewer_s"] = res["load"]["parts"] / max(1, n) / MEASURE
                # First listing vs push time of the part's end, its media time from the
                # probe's playlists (PDT - PDT of segment 0 + part durations).
                det = probe["detail"]
                listed = []
                if pdt0 is not None:
                    for (ri, msn, i), t_first in first.items():
                        if ri != 0 or str(msn) not in det["pdt"] or not (
                                spec["measure_from"] <= t_first < spec["measure_to"]):
                            continue
                        durs = [det["dur"].get(f"{msn}.{j}") for j in range(i + 1)]
                        if None in durs:
                            continue
                        end = det["pdt"][str(msn)] - pdt0 + sum(durs)
                        pushed = pub_pushes.pushed(end)
                        if pushed is not None:
                            listed.append(t_first - pushed)
                res["first_listed_beyond_part_end"] = stats(listed)
                res["client"] = client
                per_loop.append(res)
                L = res["load"]
                p99 = ("p50_ms", "p99_ms")
                say(f"    playlist beyond first p50/p99 {fmt(L['playlist_beyond_first'], p99)} "
                    f"ms, part in hand beyond first p50/p99 "
                    f"{fmt(L['part_in_hand_beyond_first'], p99)} ms, "
                    f"errors {sum(res['errors'].values())}, origin CPU {cpu['origin']:.0f}%, "
                    f"load CPU {cpu['load']:.0f}%")
            VIEWERS[loop] = per_loop
            if WRK and TASKSET:
                say(f"  per-request cost against bare aiohttp ({loop}) ...")
                FLOOR[loop] = request_cost(origin, base_path, loop, PLAYED[0])
            stop(pub)
            stop(origin["proc"])
        RESULTS["viewers"] = VIEWERS
        RESULTS["floor"] = FLOOR

finally:
    for p in RUNNING:
        stop(p)
    if args.keep:
        say(f"kept {TMP} (origin logs, configs, the load generator's raw records)")
    else:
        shutil.rmtree(TMP, ignore_errors=True)

# === 3. Report ==================================================================================
W = 100
print("=" * W)
print("mediaorigin live benchmark" + ("  (--quick)" if args.quick else ""))
print("=" * W)
print(f"machine   : {ENV_INFO['cpus']} CPUs ({ENV_INFO['cpu_model']}), Python "
      f"{ENV_INFO['python']}, aiohttp {ENV_INFO['aiohttp']}, uvloop {ENV_INFO['uvloop']}")
print(f"peer      : {ENV_INFO['nginx']}"
      + (f", libnginx-mod-rtmp {ENV_INFO['nginx_rtmp']}" if NGINX else ""))
print(f"encoder   : {ENV_INFO['ffmpeg']}")
print(f"origin    : `mediaorigin serve`, 1 worker, demo off, analytics {ENV_INFO['analytics']}")
print(f"background: {ENV_INFO['background_cpu_pct_at_start']:.0f}% of one core busy before the "
      "run" + ("  (WARNING: another workload is running; figures are noisy)"
               if ENV_INFO["background_cpu_pct_at_start"] > 20 else ""))
print()

if INGEST:
    pc = INGEST["push_clock"]
    print(f"1. Ingest-to-listed delay ({INGEST_SECONDS:g} s of testsrc2 720p30 x264 veryfast "
          "zerolatency, 2 s GOP, + AAC, one encode")
    print("   pushed to every server at once; ms after the end of the part's or segment's media "
          "was pushed)")
    print(f"   {'server':<22}{'parts: blocking':>17}{'parts: 20ms poll':>18}"
          f"{'segs: blocking':>16}{'segs: 20ms poll':>17}{'n parts/segs':>14}"
          f"{'playable':>10}")
    for name in ("asyncio", "uvloop"):
        b, p = INGEST.get(f"{name}/blocking"), INGEST.get(f"{name}/plain")
        if not b:
            continue
        print(f"   {'origin ' + name:<22}{fmt(b['parts']):>17}{fmt(p['parts']):>18}"
              f"{fmt(b['segments']):>16}{fmt(p['segments']):>17}"
              f"{str(b['parts'].get('n', 0)) + '/' + str(b['segments'].get('n', 0)):>14}"
              f"{p.get('playable_after_first_push_ms', float('nan')):>10.0f}")
    ng = INGEST.get("nginx/plain")
    if ng:
        print(f"   {'nginx-rtmp (HLS, TS)':<22}{'(no parts)':>17}{'(no parts)':>18}"
              f"{'(no blocking)':>16}{fmt(ng['segments']):>17}"
              f"{'-/' + str(ng['segments'].get('n', 0)):>14}"
              f"{ng.get('playable_after_first_push_ms', float('nan')):>10.0f}")
    else:
        print(f"   nginx-rtmp: unavailable ({PEER_WHY})")
    print("   figures: p50 / p95. 'blocking' = LL-HLS blocking reload (answered when the part "
          "is listed);")
    print("   '20ms poll' = plain GET every 20 ms (adds ~10 ms on average, like any polling "
          "player).")
    print("   'playable' = ms from the first frame pushed to the first playlist answered 200 "
          "(20 ms poll). The")
    print("   origin answers 404 until its first segment is complete, so segment 0's parts are "
          "left out of the")
    print("   part figures (they are all listed at that moment).")
    print(f"   push time: of the frame that follows the part or segment, from the tee's framecrc "
          f"pipe ({pc['frames']} frames,")
    print(f"   first one {pc['first_push_after_start_ms']:.0f} ms after ffmpeg started; pacing "
          f"jitter p95-p5 after 2 s {pc['pacing_jitter_ms']:.0f} ms).")
    a = INGEST.get("asyncio/blocking")
    if a:
        pd = a["part_durations"]
        print(f"   origin parts: {pd['n']} listed, {pd['per_segment']} per segment, median "
              f"{pd['median_s']:.3f} s, {pd['under_0.1s']} shorter than 0.1 s; origin PDT of "
              f"segment 0 - its push = {a.get('pdt0_minus_push_ms', float('nan')):.0f} ms")
        print("   part delay p50 by position in the segment (blocking, asyncio): "
              + ", ".join(f"#{i}: {v:.0f} ms" for i, v in a["parts_by_index_p50_ms"].items()))
        for name in ("asyncio", "uvloop"):
            b = INGEST.get(f"{name}/blocking")
            if b and b["parts_after_audio"].get("n"):
                print(f"   origin {name}: parts listed {fmt(b['parts_after_audio'])} ms (p50 / "
                      "p95) after the audio that completes them was pushed (the rest of the "
                      "part delay")
        print("   is waiting for audio: a part is released once audio reaches its end, for "
              "matching audio and video parts).")
        if a["parts_over_200ms"]:
            print(f"   origin asyncio parts listed > 200 ms after their end ([msn, part], media "
                  f"end s, ms): {a['parts_over_200ms'][:8]}")
    if ng:
        print(f"   nginx segment durations seen: {ng['segment_durations']}")
    print()

if VIEWERS:
    print(f"2. Concurrent LL-HLS viewers: the {' + '.join(PLAYED)} rendition"
          f"{'s' if len(PLAYED) > 1 else ''} each ({args.renditions}), hls.js-like loop "
          f"(blocking reload + parts); {MEASURE:g} s measured")
    print(f"   after a {RAMP:g} s ramp and {WARMUP:g} s warm-up; {ENV_INFO['pinning']}.")
    print(f"   load generator: {CLIENTS[args.client]}; N suffixed 'a' or 'r': the other client "
          "as a cross-check.")
    print("   ms beyond the part's first listing to any viewer (p50 / p99); CPU in % of one core")
    print(f"   {'loop':<8}{'N':>5}{'playlist':>12}{'part GET':>12}{'part in hand':>14}"
          f"{'probe in hand':>15}{'listed':>9}{'errors':>8}{'req/s':>7}{'MB/s':>6}"
          f"{'origin':>8}{'us/req':>7}{'load':>6}{'other':>7}")
    for loop, per in VIEWERS.items():
        for r in per:
            n = r["viewers"] if r["client"] == args.client else f"{r['viewers']}{r['client'][0]}"
            L, P = r["load"], r["probe"]
            keys = ("p50_ms", "p99_ms")
            print(f"   {loop:<8}{n:>5}{fmt(L['playlist_beyond_first'], keys):>12}"
                  f"{fmt(L['part_get'], keys):>12}{fmt(L['part_in_hand_beyond_first'], keys):>14}"
                  f"{fmt(P['part_in_hand_beyond_first'], keys):>15}"
                  f"{fmt(r['first_listed_beyond_part_end'], ('p50_ms',)):>9}"
                  f"{sum(r['errors'].values()):>8}{r['req_s']:>7.0f}{r['mb_s']:>6.0f}"
                  f"{r['cpu']['origin']:>7.0f}%"
                  f"{1e4 * r['cpu']['origin'] / max(1.0, r['req_s']):>7.0f}"
                  f"{r['cpu']['load']:>5.0f}%"
                  f"{r['cpu']['other']:>6.0f}%{' *' if r['cpu']['other'] > NOISY_PCT else ''}")
    print("   playlist     = blocking playlist response time - the first viewer's (the "
          "spread across viewers)")
    print("   part GET     = part request after its playlist response (nothing to wait for)")
    print("   part in hand = part body received - first listing: what a viewer loses to the "
          "crowd")
    print("   probe        = the same for one more viewer in its own, idle process: a control "
          "for the load")
    print("                  generator's own queueing; it re-registers its blocking request "
          "first, so it is")
    print("                  likely woken first at each part: the front of the burst, not the "
          "crowd's tail")
    print("   listed       = first listing to anyone - push time of the part's end (p50)")
    print("   us/req       = origin CPU microseconds per request (playlists and parts "
          "together)")
    print(f"   * = 'other' CPU (processes not started by the bench, kernel) above {NOISY_PCT:.0f}% "
          "of a core: another workload")
    print("       competed with the origin for core 0 or with the load for core 1; treat the "
          "row as noisy.")
    print("   Reading: every viewer asks for the same part at the same moment, so the origin "
          "answers the whole")
    print("   crowd (a blocking playlist, then a part GET, per viewer and rendition) in one "
          "burst per part on")
    print("   one core: the last answer leaves about (origin CPU % x part duration) after the "
          "first. Under 100 ms")
    print(f"   at 0.5 s parts means under 20% of a core per part, i.e. {2 * len(PLAYED)} x N x "
          "us/req < 100 ms.")
    errs = {f"{loop}/{r['viewers']}/{r['client']}": r["errors"] for loop, per in VIEWERS.items()
            for r in per
            if r["errors"]}
    if errs:
        print(f"   errors: {errs}")
    print("   nginx-rtmp peer: none for this part (nginx-rtmp has no LL-HLS parts or blocking "
          "reload).")
    if FLOOR:
        print("   The floor: per-request cost at saturation (wrk, 32 connections, server on core "
              "0), the origin's")
        print("   live URLs against bare aiohttp (bench/bare_aiohttp.py) serving the same bytes "
              "with the same loop. One viewer")
        print("   costs a playlist and a part per rendition per part, so N viewers cost one core "
              f"{len(PLAYED)} x N x (playlist + part):")
        print(f"   {'loop':<8}{'playlist us':>14}{'part us':>12}{'per viewer':>12}"
              f"{f'{AIM_VIEWERS} viewers':>14}   (origin / bare aiohttp)")
        k = len(PLAYED)
        for loop, f in FLOOR.items():
            o = f["origin_playlist_us"] + f["origin_part_us"]
            b = f["bare_playlist_us"] + f["bare_part_us"]
            print(f"   {loop:<8}{f['origin_playlist_us']:>6.0f} / {f['bare_playlist_us']:<5.0f}"
                  f"{f['origin_part_us']:>6.0f} / {f['bare_part_us']:<4.0f}"
                  f"{k * o:>6.0f} / {k * b:<4.0f}"
                  f"{k * AIM_VIEWERS * o / 1000:>6.0f} / {k * AIM_VIEWERS * b / 1000:<4.0f} ms"
                  f"   ({f['playlist_bytes']} B playlist, {f['part_bytes']} B part)")
        print(f"   The last column is the burst one part costs at {AIM_VIEWERS} viewers: even "
              "bare aiohttp spends about that long")
        print("   answering the crowd, so it bounds the p99 any aiohttp origin can reach on this "
              "machine.")
    print()

if PROFILE.get("raw"):
    # py-spy raw output: "frame;frame;...;frame count" (frames "function (file:line)").
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in PROFILE["raw"].splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if f]
        frames = [f.replace(str(REPO) + "/", "").replace(
            str(REPO / ".venv/lib/python3.11/site-packages") + "/", "") for f in frames]
        if frames:
            self_t[frames[-1]] = self_t.get(frames[-1], 0) + c
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
    print(f"Profile of the origin (py-spy, {PROFILE['run']}; % of {total} active samples)")
    print("   self time (top 15)")
    for f, c in sorted(self_t.items(), key=lambda x: -x[1])[:15]:
        print(f"   {100 * c / max(1, total):5.1f}%  {f[:90]}")
    print("   inclusive time, mediaorigin and aiohttp functions (top 20)")
    for f, c in sorted(((f, c) for f, c in incl.items()
                        if "mediaorigin/" in f or "aiohttp/" in f),
                       key=lambda x: -x[1])[:20]:
        print(f"   {100 * c / max(1, total):5.1f}%  {f[:90]}")
    RESULTS["profile"] = {"run": PROFILE["run"],
                          "self_top": sorted(self_t.items(), key=lambda x: -x[1])[:40]}
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "live-profile-latest.txt").write_text(PROFILE["raw"])
    print(f"   raw py-spy stacks (collapsed): {CACHE / 'live-profile-latest.txt'}")
    print()

print("3. Summary against the aims")
rows = []
for name in ("asyncio", "uvloop"):
    b = INGEST.get(f"{name}/blocking")
    if b and b["parts"].get("n"):
        rows.append((f"part listed after its end, blocking, {name}",
                     f"p50 {b['parts']['p50_ms']:.0f} / p95 {b['parts']['p95_ms']:.0f} ms",
                     f"<= {AIM_PART_MS:.0f} ms", ok(b["parts"]["p95_ms"] <= AIM_PART_MS)))
ng = INGEST.get("nginx/plain")
for name in ("asyncio", "uvloop"):
    p = INGEST.get(f"{name}/plain")
    if p and p["segments"].get("n"):
        if ng and ng["segments"].get("n"):
            r50 = p["segments"]["p50_ms"] / max(1e-9, ng["segments"]["p50_ms"])
            rows.append((f"segment listed after its end vs nginx, {name}",
                         f"{p['segments']['p50_ms']:.0f} vs {ng['segments']['p50_ms']:.0f} ms "
                         f"p50 ({r50:.1f}x)", "(info)", ""))
        else:
            rows.append((f"segment listed after its end, {name}",
                         f"p50 {p['segments']['p50_ms']:.0f} ms", "(no peer)", ""))
for loop, per in VIEWERS.items():
    for r in per:
        if r["client"] != args.client:
            continue
        n = r["viewers"]
        L = r["load"]
        worst = max(L["playlist_beyond_first"].get("p99_ms", float("inf")),
                    L["part_get"].get("p99_ms", float("inf")))
        aim = n <= AIM_VIEWERS
        rows.append((f"{n} viewers, p99 beyond part wait, {loop}",
                     f"playlist {L['playlist_beyond_first'].get('p99_ms', float('nan')):.0f}, "
                     f"part {L['part_get'].get('p99_ms', float('nan')):.0f} ms, "
                     f"{sum(r['errors'].values())} err",
                     f"< {AIM_VIEWER_P99_MS:.0f} ms" if aim else "(info)",
                     ok(worst < AIM_VIEWER_P99_MS and not r["errors"]) if aim else ""))
for loop, f in FLOOR.items():
    origin_ms, bare_ms = (AIM_VIEWERS * len(PLAYED) * (f[f"{who}_playlist_us"] +
                                                       f[f"{who}_part_us"]) / 1000
                          for who in ("origin", "bare"))
    rows.append((f"{AIM_VIEWERS} viewers, one part's burst, {loop}",
                 f"{origin_ms:.0f} ms (bare aiohttp {bare_ms:.0f})", "(floor)", ""))
for label, fig, aim, verdict in rows:
    print(f"   {label:<48}{fig:<34}{aim:<11}{verdict}")
RESULTS["summary"] = [dict(zip(("figure", "value", "aim", "verdict"), r, strict=True))
                      for r in rows]
print()
CACHE.mkdir(parents=True, exist_ok=True)
(CACHE / "live-results-latest.json").write_text(json.dumps(RESULTS, indent=2, default=str) + "\n")
print(f"figures as JSON: {CACHE / 'live-results-latest.json'}   "
      f"(total run time {time.perf_counter() - T_START:.0f} s)")
