"""Benchmark of playback analytics: beacon ingestion, and what server-side events cost.

Run from the repository root:

    .venv/bin/python bench/analytics_bench.py            # full run, ~5 min on 2 cores
    .venv/bin/python bench/analytics_bench.py --quick    # shorter media and runs, ~1.5 min
    (the first run also encodes its mezzanine once, shared with origin_bench.py)

What it measures:
  1. Beacon ingestion: one `mediaorigin serve` process (1 worker, asyncio, open playback) with a
     private redis-server; wrk POSTs `{"events": [50 beacons]}` (bench/wrk_post.lua) to
     /api/media/{id}/analytics at full speed. Figures: events/s accepted (202 answers x 50),
     events/s landed in Redis during the run (the stream's entries-added, sampled every 0.25 s:
     the slope from first to last sample), what was still on its way when wrk stopped and how
     long it took to land, and events lost (accepted - landed once everything settled: the
     emitter's overflow, counted by it). Then single-event POSTs, for reference.
  2. Server-side events: two origins identical but for `[analytics] server_events` (false /
     true), both with the same Redis, caches warmed by an unmeasured run. wrk on one video
     segment URL (~2.5 MB), one audio segment URL (~65 KB: the most requests per second, so the
     largest relative cost) and on every fMP4 segment of the title (bench/wrk_paths.lua); runs
     alternate off/on, medians reported. Figures: req/s on / off (aim: at least 0.95, i.e. at
     most 5% cost, on the video segment and on the mix; the audio segment is the worst case),
     server CPU per request on and off, redis-server CPU, and that the "on" origin's events
     all landed (entries added vs responses served).
  3. Micro costs in this process: `served()` on a mocked request (all the response path pays),
     `emit()`, the JSON of an origin event (`served_json`) and of a beacon (`Event.to_json`),
     beacon validation per event, and the emitter's sender alone into the private Redis
     (events/s, CPU per event); their sum against the CPU of a warm request without events is
     the predicted cost. Warm in a loop, these run 2-3x faster than inside a busy origin.
  4. A summary against the aims, and every figure as JSON in
     bench/.cache/analytics-results-latest.json.

All traffic goes to 127.0.0.1; the servers run in their own process groups and are stopped in
a `finally`. Nothing is pinned to a CPU: on a 2-core machine wrk, the origin and redis-server
share two cores, so the req/s ratios of part 2 are the headline and CPU per request the
cross-check. The script is flat on purpose, like security_bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import (
    BENCH,
    CACHE,
    MEDIAORIGIN,
    background_load,
    cpu_model,
    cpu_seconds,
    first_line,
    free_port,
    get,
    healthz,
    import_ladder,
    launch,
    machine_cpu_seconds,
    mezzanine,
    ok,
    say,
    stop,
)

LUA_PATHS = BENCH / "wrk_paths.lua"
LUA_POST = BENCH / "wrk_post.lua"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--quick", action="store_true",
                    help="20 s mezzanine, 4 s load runs, one run per figure (~1.5 min)")
parser.add_argument("--duration", type=float, default=None,
                    help="mezzanine length in seconds (default 60, --quick 20)")
parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
parser.add_argument("--seconds", type=float, default=None,
                    help="length of each measured wrk run (default 10, --quick 4)")
parser.add_argument("--reps", type=int, default=None,
                    help="alternated off/on runs per URL set, beacon runs (default 3, --quick 1)")
parser.add_argument("--batch", type=int, default=50, help="beacons per POST (default 50)")
args = parser.parse_args()
DURATION = args.duration or (20.0 if args.quick else 60.0)
WRK_SECONDS = args.seconds or (4.0 if args.quick else 10.0)
WARMUP_SECONDS = 1.0 if args.quick else 2.0
REPS = args.reps or (1 if args.quick else 3)
CONNS = args.connections
BATCH = args.batch
AIM_EVENTS_S = 20_000  # beacon events per second per process, landed in Redis
AIM_COST_RATIO = 0.95  # warm segment req/s with server events / without, at least

T_START = time.perf_counter()

# --- tools ------------------------------------------------------------------------------------

TOOLS = {name: shutil.which(name) for name in ("wrk", "ffmpeg", "redis-server")}
missing = [n for n, p in TOOLS.items() if p is None]
if missing:
    print(f"missing tool(s): {', '.join(missing)}\n"
          "install them with:  sudo apt-get install wrk ffmpeg redis-server", file=sys.stderr)
    sys.exit(2)
if not MEDIAORIGIN.exists():
    print(f"{MEDIAORIGIN} not found: run this with the repo's venv python "
          "(.venv/bin/python bench/analytics_bench.py)", file=sys.stderr)
    sys.exit(2)
WRK, FFMPEG, REDIS_SERVER = TOOLS["wrk"], TOOLS["ffmpeg"], TOOLS["redis-server"]

try:
    import aiohttp
    import redis
except ImportError as e:
    print(f"the venv lacks a dependency ({e}); run scripts/install-deps.sh", file=sys.stderr)
    sys.exit(2)

import aiohttp.web  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402

from mediaorigin.analytics.emitter import EventEmitter, NullEmitter  # noqa: E402
from mediaorigin.analytics.events import (  # noqa: E402
    STREAM,
    Event,
    Served,
    new_event_id,
    served_json,
)
from mediaorigin.api.beacons import parse_body  # noqa: E402
from mediaorigin.auth.playback_guard import Grant  # noqa: E402
from mediaorigin.config import AnalyticsConfig  # noqa: E402
from mediaorigin.origin.served import GRANT, SERVER_EVENTS, device_of, served  # noqa: E402

ENV_INFO = {
    "cpus": os.cpu_count(),
    "cpu_model": cpu_model(),
    "python": platform.python_version(),
    "platform": platform.platform(),
    "aiohttp": aiohttp.__version__,
    "redis_py": redis.__version__,
    "redis_server": first_line([REDIS_SERVER, "--version"]),
    "wrk": first_line([WRK, "-v"]),
    "load_generator": f"wrk, 1 thread, {CONNS} connections, nothing pinned",
}

# --- small helpers ----------------------------------------------------------------------------




def per_call_us(fn, min_seconds: float = 0.3) -> float:  # type: ignore[no-untyped-def]
    """Best of 5 timings of a loop long enough to last ~min_seconds/5, in µs per call."""
    n, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        if t > min_seconds / 5:
            break
        n *= 4
    best = t / n
    for _ in range(4):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


RUNNING: list[subprocess.Popen] = []  # every server we start, stopped in the final `finally`
WRK_RUNS = 0


def wrk(port: int, script: Path, script_args: list[str], seconds: float,
        pids: dict[str, int]) -> dict:
    """One wrk run: rates, latencies, CPU of each process in `pids` and of wrk itself."""
    cmd = [WRK, "-t1", f"-c{CONNS}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
           "-s", str(script), f"http://127.0.0.1:{port}", "--", *script_args]
    cpu0 = {k: cpu_seconds([p]) for k, p in pids.items()}
    machine0 = machine_cpu_seconds()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = {k: cpu_seconds([p_]) for k, p_ in pids.items()}
    machine1 = machine_cpu_seconds()
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stdout[-800:]} {p.stderr[-800:]}")
    r = json.loads(line[len("WRKJSON "):])
    dur = r["duration_us"] / 1e6
    errors = {k: v for k, v in r.items() if k.startswith("errors_") and v}
    if errors:
        raise RuntimeError(f"wrk counted errors: {errors}")
    out = {
        "requests": r["requests"], "seconds": round(dur, 3),
        "req_s": r["requests"] / dur, "mb_s": r["bytes"] / dur / 1e6,
        "p50_ms": r["lat_p50_us"] / 1000, "p99_ms": r["lat_p99_us"] / 1000,
        "wrk_cpu_pct": 100 * ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime))
        / wall,
        "machine_cpu_pct": 100 * (machine1 - machine0) / wall,
    }
    for k in pids:
        out[f"{k}_cpu_pct"] = 100 * (cpu1[k] - cpu0[k]) / wall
    out["server_cpu_us_per_req"] = 1e6 * (cpu1["server"] - cpu0["server"]) / max(1, r["requests"])
    return out


def wrk_paths(port: int, paths: list[str], seconds: float, pids: dict[str, int]) -> dict:
    global WRK_RUNS
    WRK_RUNS += 1
    listfile = TMP / f"paths-{WRK_RUNS}.txt"
    listfile.write_text("\n".join(paths) + "\n")
    return wrk(port, LUA_PATHS, [str(listfile)], seconds, pids)


ENV_INFO["background_cpu_pct_at_start"] = background_load()

TMP = Path(tempfile.mkdtemp(prefix="mediaorigin-analyticsbench-"))
RESULTS: dict = {"args": vars(args), "env": ENV_INFO, "aims": {
    "beacon_events_s_min": AIM_EVENTS_S, "server_events_req_s_ratio_min": AIM_COST_RATIO}}

try:
    # === 0. Redis, mezzanine, import ============================================================
    redis_port = free_port()
    (TMP / "redis").mkdir()
    redis_proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(TMP / "redis"), "--logfile",
         str(TMP / "redis" / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    RUNNING.append(redis_proc)
    REDIS_URL = f"redis://127.0.0.1:{redis_port}/0"
    R = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + 10
    while True:
        try:
            if R.ping():
                break
        except redis.ConnectionError:
            if time.monotonic() > deadline or redis_proc.poll() is not None:
                raise RuntimeError("the private redis-server did not start") from None
            time.sleep(0.02)
    say(f"private redis-server on port {redis_port}")

    def added() -> int:
        """Entries ever added to the stream (survives MAXLEN trimming), 0 before the first."""
        try:
            return int(R.xinfo_stream(STREAM)["entries-added"])
        except redis.ResponseError:  # no such key yet
            return 0

    # The same file as origin_bench.py (same command, same cache name): 1080p30 H.264 ~5 Mb/s,
    # keyframe every 2 s, AAC 128k, so 4 s video segments are ~2.5 MB.
    mezz = mezzanine(DURATION, FFMPEG)

    config_file = TMP / "config.toml"
    config_file.write_text("# generated by bench/analytics_bench.py; env vars set the rest\n"
                           "[demo]\nenabled = false\n")
    BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAORIGIN_")}
    BASE_ENV.update({
        "MEDIAORIGIN_SERVER_HOST": "127.0.0.1",
        "MEDIAORIGIN_SERVER_ACCESS_LOG": "false",
        "MEDIAORIGIN_SERVER_WORKERS": "1",
        "MEDIAORIGIN_SERVER_LOOP": "asyncio",
        "MEDIAORIGIN_STORAGE_ROOT": str(TMP / "media"),
        "MEDIAORIGIN_STORAGE_CACHE_DIR": str(TMP / "cache-import"),
        "MEDIAORIGIN_LIBRARY_URL": f"sqlite:///{TMP / 'library.sqlite3'}",
        "MEDIAORIGIN_LIBRARY_UPLOADS_DIR": str(TMP / "uploads"),
        "MEDIAORIGIN_DEMO_ENABLED": "false",
        "MEDIAORIGIN_AUTH_PLAYBACK": "open",
        "MEDIAORIGIN_AUTH_ADMIN_KEY_FILE": str(TMP / "admin-key"),
        "MEDIAORIGIN_AUTH_MASTER_KEY_FILE": str(TMP / "master-key"),
        "MEDIAORIGIN_AUTH_TOKEN_SECRET_FILE": str(TMP / "token-secret"),
        "MEDIAORIGIN_INGEST_RTMP_ENABLED": "false",
        "MEDIAORIGIN_REDIS_URL": REDIS_URL,
        "MEDIAORIGIN_ANALYTICS_ENABLED": "true",
    })
    if hasattr(AnalyticsConfig(), "aggregate_in_server"):
        # Measure the events going in, not the aggregation consuming them in the same process.
        BASE_ENV["MEDIAORIGIN_ANALYTICS_AGGREGATE_IN_SERVER"] = "false"
    MEDIA_ID = import_ladder(mezz, "analytics bench mezzanine", config_file, BASE_ENV, cwd=TMP)
    STARTS = 0

    def start_origin(tag: str, extra: dict[str, str]) -> tuple[subprocess.Popen, int]:
        """`mediaorigin serve` (1 worker, asyncio) in its own process group, on its own cache
        dir; returns once /healthz answers."""
        global STARTS
        STARTS += 1
        port = free_port()
        env = dict(BASE_ENV, MEDIAORIGIN_SERVER_PORT=str(port),
                   MEDIAORIGIN_STORAGE_CACHE_DIR=str(TMP / f"cache-{tag}"), **extra)
        log_path = TMP / f"origin-{STARTS}-{tag}.log"
        proc = launch([str(MEDIAORIGIN), "serve", "--config", str(config_file)], env,
                      log_path, RUNNING, lambda: healthz(port), cwd=TMP)
        return proc, port

    p_off, port_off = start_origin("off", {"MEDIAORIGIN_ANALYTICS_SERVER_EVENTS": "false"})
    p_on, port_on = start_origin("on", {"MEDIAORIGIN_ANALYTICS_SERVER_EVENTS": "true"})

    # === 1. Beacon ingestion ====================================================================
    now_ms = int(time.time() * 1000)
    kinds = ["heartbeat"] * 6 + ["play", "pause", "seek", "quality_change", "buffering_start",
                                 "buffering_end"]
    beacons = [{"event": kinds[i % len(kinds)], "timestamp": now_ms + i * 10,
                "position": 12.5 + i, "quality": "720p",
                "buffering": {"count": i % 3, "duration": 0.4 * (i % 3)},
                "network": {"bandwidth": 4800 + i, "type": "wifi"},
                "sessionId": f"bench-session-{i % 7:04d}", "userId": f"student-{i % 5}"}
               for i in range(BATCH)]
    batch_body = TMP / "beacons-batch.json"
    batch_body.write_text(json.dumps({"events": beacons}))
    single_body = TMP / "beacon-single.json"
    single_body.write_text(json.dumps(beacons[0]))
    path = f"/api/media/{MEDIA_ID}/analytics"
    c = http.client.HTTPConnection("127.0.0.1", port_on, timeout=30)
    c.request("POST", path, batch_body.read_bytes(), {"Content-Type": "application/json"})
    resp = c.getresponse()
    answer = resp.read()
    c.close()
    if resp.status != 202 or json.loads(answer) != {"accepted": BATCH}:
        raise RuntimeError(f"beacon POST answered {resp.status} {answer[:200]!r}")

    EXPECTED = BATCH  # events accepted so far (the probe above), all bound for the stream

    def settle(expected: int) -> tuple[int, float]:
        """(entries added, when the last arrived) once the stream is quiet: nothing new for
        0.5 s with `expected` reached (requests still in flight when wrk stopped counting land
        too), or for 2 s without."""
        last, last_change = added(), time.perf_counter()
        while True:
            quiet = time.perf_counter() - last_change
            if quiet >= 2.0 or (last >= expected and quiet >= 0.5):
                return last, last_change
            time.sleep(0.05)
            n = added()
            if n != last:
                last, last_change = n, time.perf_counter()

    def ingest_run(body: Path, per_request: int, seconds: float) -> dict:
        """One wrk run of beacon POSTs, the stream sampled meanwhile; waits until the events
        stop arriving (or all are there), then counts."""
        global EXPECTED
        base, _ = settle(EXPECTED)  # the previous run's events are all in
        lost_before = EXPECTED - base  # > 0: events lost before this run
        EXPECTED = max(EXPECTED, base)  # (uncounted requests' events are in the base)
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            sampler = redis.Redis.from_url(REDIS_URL)
            try:
                while not done.is_set():
                    try:
                        n = int(sampler.xinfo_stream(STREAM)["entries-added"])
                    except redis.ResponseError:
                        n = 0
                    samples.append((time.perf_counter(), n))
                    done.wait(0.25)
            finally:
                sampler.close()

        thread = threading.Thread(target=sample, daemon=True)
        t0 = time.perf_counter()
        thread.start()
        run = wrk(port_on, LUA_POST, [str(body), path], seconds,
                  {"server": p_on.pid, "redis": redis_proc.pid})
        t_end = time.perf_counter()
        done.set()
        thread.join()
        accepted = run["requests"] * per_request
        at_end = added() - base
        EXPECTED += accepted
        total, landed_at = settle(EXPECTED)
        last = total - base
        drained = landed_at - t_end
        inside = [(t, n - base) for t, n in samples if t0 + 0.5 <= t <= t_end - 0.25]
        landed_rate = ((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
                       if len(inside) >= 2 else float("nan"))
        return {
            **run, "events_per_request": per_request,
            "accepted": accepted, "accepted_events_s": accepted / run["seconds"],
            "landed_events_s": landed_rate,
            "landed_at_wrk_end": at_end, "landed_total": last,
            "lost": accepted - last, "lost_before": lost_before,
            "drain_s": round(max(0.0, drained) if last > at_end else 0.0, 3),
            "samples": [(round(t - t0, 3), n - base) for t, n in samples],
        }

    say(f"beacon ingestion: wrk POSTs of {BATCH} events, {CONNS} connections ...")
    EXPECTED += BATCH * wrk(port_on, LUA_POST, [str(batch_body), path], WARMUP_SECONDS,
                            {"server": p_on.pid, "redis": redis_proc.pid})["requests"]
    INGEST: dict = {"batch": [], "single": []}
    for _ in range(REPS):
        run = ingest_run(batch_body, BATCH, WRK_SECONDS)
        INGEST["batch"].append(run)
        say(f"  batch of {BATCH}: accepted {run['accepted_events_s']:,.0f} ev/s "
            f"({run['req_s']:.0f} req/s), landed {run['landed_events_s']:,.0f} ev/s; "
            f"{max(0, run['accepted'] - run['landed_at_wrk_end'])} on their way at the end "
            f"(landed {run['drain_s']:.2f} s later), lost {run['lost']}; "
            f"origin {run['server_cpu_pct']:.0f}% CPU, redis {run['redis_cpu_pct']:.0f}%")
    run = ingest_run(single_body, 1, WRK_SECONDS)
    INGEST["single"].append(run)
    say(f"  single events: accepted {run['accepted_events_s']:,.0f} ev/s, landed "
        f"{run['landed_events_s']:,.0f} ev/s, lost {run['lost']}; origin "
        f"{run['server_cpu_pct']:.0f}% CPU")
    med_batch = sorted(INGEST["batch"], key=lambda w: w["landed_events_s"])[REPS // 2]
    INGEST["median_batch"] = {k: v for k, v in med_batch.items() if k != "samples"}
    RESULTS["ingest"] = INGEST

    # === 2. Server-side events: warm segments, off vs on =========================================
    def uris(playlist: str) -> list[str]:
        found = re.findall(r'URI="([^"]+)"', playlist)
        found += [ln.strip() for ln in playlist.splitlines()
                  if ln.strip() and not ln.startswith("#")]
        return [u.split("?", 1)[0] for u in found]

    conn = http.client.HTTPConnection("127.0.0.1", port_off, timeout=120)
    base_path = f"/vod/{MEDIA_ID}/"
    master = get(conn, base_path + "master.m3u8").decode()
    FMP4: list[str] = []
    for media_uri in dict.fromkeys(u for u in uris(master) if u.endswith(".m3u8")):
        if "iframes" in media_uri:
            continue
        rdir = base_path + media_uri.rsplit("/", 1)[0] + "/"
        media = get(conn, base_path + media_uri).decode()
        FMP4 += [rdir + u for u in uris(media) if re.search(r"seg-\d+\.m4s$", u)]
    conn.close()
    video = [p for p in FMP4 if re.search(r"/v\d+/seg-", p)]
    audio = [p for p in FMP4 if re.search(r"/a\d+/seg-", p)]
    url_sets = {"one video segment": [video[len(video) // 2]],
                "one audio segment": [audio[len(audio) // 2]],
                "all segments": FMP4}
    say(f"server-side events: {len(FMP4)} fMP4 segments ({len(video)} video); off vs on ...")
    SERVED: dict = {}
    on_requests, on_added0 = 0, added()
    for set_name, paths in url_sets.items():
        pids_off = {"server": p_off.pid, "redis": redis_proc.pid}
        pids_on = {"server": p_on.pid, "redis": redis_proc.pid}
        wrk_paths(port_off, paths, WARMUP_SECONDS, pids_off)
        on_requests += wrk_paths(port_on, paths, WARMUP_SECONDS, pids_on)["requests"]
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for rep in range(REPS):
            for mode in (("off", "on") if rep % 2 == 0 else ("on", "off")):
                if mode == "off":
                    runs["off"].append(wrk_paths(port_off, paths, WRK_SECONDS, pids_off))
                else:
                    r = wrk_paths(port_on, paths, WRK_SECONDS, pids_on)
                    on_requests += r["requests"]
                    runs["on"].append(r)
        med = {m: sorted(v, key=lambda w: w["req_s"])[len(v) // 2] for m, v in runs.items()}
        SERVED[set_name] = {
            "urls": len(paths), "off": med["off"], "on": med["on"],
            "ratio_req_s": med["on"]["req_s"] / med["off"]["req_s"],
            "extra_server_cpu_us_per_req": med["on"]["server_cpu_us_per_req"]
            - med["off"]["server_cpu_us_per_req"],
            "runs": runs,
        }
        s = SERVED[set_name]
        say(f"  {set_name:<18} off {med['off']['req_s']:7.0f} req/s, on "
            f"{med['on']['req_s']:7.0f} req/s: x{s['ratio_req_s']:.3f}; server CPU "
            f"{med['off']['server_cpu_us_per_req']:.0f} -> "
            f"{med['on']['server_cpu_us_per_req']:.0f} µs/req; redis "
            f"{med['on']['redis_cpu_pct']:.0f}% CPU")
    # Every response of the "on" origin is an event (wrk stops counting a few in flight).
    deadline = time.monotonic() + 10
    while added() - on_added0 < on_requests and time.monotonic() < deadline:
        time.sleep(0.1)
    SERVED_EVENTS = {"responses_counted_by_wrk": on_requests,
                     "events_added": added() - on_added0}
    say(f"  'on' origin: {SERVED_EVENTS['events_added']} events for "
        f"{on_requests} responses wrk counted")
    RESULTS["served"] = SERVED
    RESULTS["served_events"] = SERVED_EVENTS
    stop(p_off)
    stop(p_on)

    # === 3. Micro costs, in this process =========================================================
    say("micro benchmarks ...")
    ua = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/126.0 Safari/537.36")
    device_of(ua)

    def origin_event() -> Served:  # what served() queues for one segment
        return ("segment", MEDIA_ID, time.time(), "", "", "v0", 2_500_000, 200, None,
                device_of(ua))

    sample = origin_event()
    event_id = new_event_id()
    beacon_event = Event("heartbeat", MEDIA_ID, time.time(), "bench-session-0001", "student-1",
                         position=42.5, quality="720p", buffering_count=1,
                         buffering_duration=0.4, bandwidth=4800, network_type="wifi",
                         device="desktop")
    body = batch_body.read_bytes()
    now = time.time()
    MICRO = {
        "served_json_us": per_call_us(lambda: served_json(sample, event_id)),
        "event_to_json_us": per_call_us(beacon_event.to_json),
        "beacon_validate_us_per_event": per_call_us(
            lambda: parse_body(body, 500, now, True)) / BATCH,
    }

    # served() itself, on a mocked request: everything the response path pays per event.
    app = aiohttp.web.Application()
    app[SERVER_EVENTS] = NullEmitter()
    mocked = make_mocked_request("GET", f"/vod/{MEDIA_ID}/v0/seg-1.m4s",
                                 headers={"User-Agent": ua}, app=app)
    mocked[GRANT] = Grant("open")
    reply = aiohttp.web.Response(body=b"x" * 1000)
    MICRO["served_us"] = per_call_us(lambda: served(mocked, reply, MEDIA_ID, "v0", "seg-1.m4s"))
    del app[SERVER_EVENTS]
    MICRO["served_off_us"] = per_call_us(lambda: served(mocked, reply, MEDIA_ID, "v0",
                                                       "seg-1.m4s"))

    async def sender(n: int) -> dict:
        """The emitter's task alone: emit n events at once, wait until all are confirmed."""
        R.delete("mediaorigin:bench-micro")
        em = EventEmitter(REDIS_URL, stream="mediaorigin:bench-micro")
        events = [origin_event() for _ in range(n)]
        await em.start()
        c0, t0 = time.process_time(), time.perf_counter()
        for e in events:
            em.emit(e)
        t_emit = time.perf_counter() - t0
        while em.stats()["buffered"]:
            await asyncio.sleep(0.001)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        await em.stop()
        return {"events": n, "emit_us": 1e6 * t_emit / n, "events_s": n / (wall - t_emit),
                "cpu_us_per_event": 1e6 * cpu / n}

    micro_send = asyncio.run(sender(100_000))
    micro_send["landed"] = R.xlen("mediaorigin:bench-micro")
    R.delete("mediaorigin:bench-micro")
    MICRO["sender"] = micro_send
    # The CPU one origin event costs in all (response path + sender), against the CPU of a
    # warm request without events: the throughput cost when the origin is CPU-bound.
    per_event = MICRO["served_us"] + micro_send["cpu_us_per_event"]
    MICRO["cpu_us_per_origin_event"] = per_event
    MICRO["predicted_cost"] = {name: per_event / s["off"]["server_cpu_us_per_req"]
                               for name, s in SERVED.items()}
    RESULTS["micro"] = MICRO
    say(f"  served() {MICRO['served_us']:.2f} µs (off: {MICRO['served_off_us']:.2f}), "
        f"emit {micro_send['emit_us']:.2f} µs, served_json {MICRO['served_json_us']:.2f} µs, "
        f"Event.to_json {MICRO['event_to_json_us']:.2f} µs, beacon "
        f"validation {MICRO['beacon_validate_us_per_event']:.2f} µs/event; sender "
        f"{micro_send['events_s']:,.0f} ev/s, {micro_send['cpu_us_per_event']:.1f} µs CPU/event")

    # === 4. Report ==============================================================================
    mb = INGEST["median_batch"]
    single = INGEST["single"][0]
    print()
    print("# mediaorigin analytics benchmark")
    print(f"{ENV_INFO['cpus']} CPUs ({ENV_INFO['cpu_model']}), Python {ENV_INFO['python']}, "
          f"{ENV_INFO['redis_server']}; {ENV_INFO['load_generator']}; background load at "
          f"start {ENV_INFO['background_cpu_pct_at_start']:.0f}% of a core")
    print(f"runs of {WRK_SECONDS:g} s, {REPS} per figure (median); mezzanine {DURATION:g} s "
          "1080p30")
    print()
    print("## Beacon ingestion (one origin process, open playback)")
    print("| POST | accepted ev/s | landed ev/s (during run) | req/s | p99 ms | lost | "
          "origin CPU | redis CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in ((f"{BATCH} events", mb), ("1 event", single)):
        print(f"| {name} | {r['accepted_events_s']:,.0f} | {r['landed_events_s']:,.0f} | "
              f"{r['req_s']:,.0f} | {r['p99_ms']:.1f} | {r['lost']} | "
              f"{r['server_cpu_pct']:.0f}% | {r['redis_cpu_pct']:.0f}% |")
    print()
    print("## Server-side events: warm segments, server_events off vs on")
    print("| URLs | off req/s | on req/s | on/off | server µs/req off -> on | redis CPU |")
    print("|---|---|---|---|---|---|")
    for name, s in SERVED.items():
        print(f"| {name} | {s['off']['req_s']:,.0f} | {s['on']['req_s']:,.0f} | "
              f"{s['ratio_req_s']:.3f} | {s['off']['server_cpu_us_per_req']:.0f} -> "
              f"{s['on']['server_cpu_us_per_req']:.0f} | {s['on']['redis_cpu_pct']:.0f}% |")
    print(f"events landed for the 'on' origin: {SERVED_EVENTS['events_added']} for "
          f"{SERVED_EVENTS['responses_counted_by_wrk']} responses counted by wrk")
    print()
    print("## Micro costs (this process)")
    print(f"- served() on the response path: {MICRO['served_us']:.2f} µs (emit() "
          f"{micro_send['emit_us']:.2f} µs of it); {MICRO['served_off_us']:.2f} µs with server "
          "events off")
    print(f"- JSON of an origin event (served_json): {MICRO['served_json_us']:.2f} µs; of a "
          f"beacon (Event.to_json): {MICRO['event_to_json_us']:.2f} µs; beacon validation: "
          f"{MICRO['beacon_validate_us_per_event']:.2f} µs per event")
    print(f"- sender alone: {micro_send['events_s']:,.0f} events/s into Redis "
          f"({micro_send['landed']} landed), {micro_send['cpu_us_per_event']:.1f} µs CPU per "
          "event")
    print(f"- CPU per origin event in all: {per_event:.1f} µs; against the CPU of a warm request"
          " without events (predicted cost when CPU-bound): " + ", ".join(
              f"{name} {100 * c:.1f}%" for name, c in MICRO["predicted_cost"].items()))
    print()
    # The aim is on one segment URL (a video segment, what players mostly fetch) and on the
    # title's mix; a flood of one small audio segment is the worst case, shown beside it.
    aimed = min(SERVED[k]["ratio_req_s"] for k in ("one video segment", "all segments"))
    worst = SERVED["one audio segment"]["ratio_req_s"]
    checks = [
        (f"beacon events landed per second >= {AIM_EVENTS_S:,}",
         mb["landed_events_s"] >= AIM_EVENTS_S, f"{mb['landed_events_s']:,.0f}"),
        # (landed may exceed accepted by the requests in flight when wrk stopped counting)
        ("no beacon event lost", all(r["lost"] <= 0 and r["lost_before"] <= 0
                                     for r in INGEST["batch"] + INGEST["single"]),
         str(sum(max(0, r["lost"]) + max(0, r["lost_before"])
                 for r in INGEST["batch"] + INGEST["single"]))),
        (f"server events cost <= {100 * (1 - AIM_COST_RATIO):.0f}% (on/off req/s, one video "
         "segment and all segments, the lower)", aimed >= AIM_COST_RATIO, f"{aimed:.3f}"),
        (f"  worst case, one ~65 KB audio segment: on/off req/s >= {AIM_COST_RATIO}",
         worst >= AIM_COST_RATIO, f"{worst:.3f}"),
    ]
    print("## Against the aims")
    for text, good, figure in checks:
        print(f"- {ok(good)} {text}: {figure}")
    RESULTS["checks"] = [{"aim": t, "ok": g, "figure": f} for t, g, f in checks]
    RESULTS["elapsed_s"] = time.perf_counter() - T_START
    (CACHE / "analytics-results-latest.json").write_text(json.dumps(RESULTS, indent=1,
                                                                    default=str))
    say(f"done in {RESULTS['elapsed_s']:.0f} s; JSON in {CACHE / 'analytics-results-latest.json'}")
finally:
    for proc in RUNNING:
        stop(proc)
    shutil.rmtree(TMP, ignore_errors=True)
