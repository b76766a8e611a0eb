"""Benchmark of the mediaorigin streaming origin, with ffmpeg and nginx as peers.

Run from the repository root:

    .venv/bin/python bench/origin_bench.py            # full run, ~4.5 min on 2 cores
    .venv/bin/python bench/origin_bench.py --quick    # shorter media and runs, ~1.5 min
    (the first run of each also encodes its mezzanine once: ~10-25 s)

What it measures (bench/README.md explains each figure):
  1. Index: `index_file` on a 1-hour 1080p MP4 (cold moov parse) and the serialized index
     cache load (`serial.loads`), the work behind the first request for a title.
  2. The origin as a subprocess (`mediaorigin serve`), for loop in (asyncio, uvloop) x workers
     in (1, 2): master and media playlist throughput, cold segments (packaged on request, empty
     cache), time to first segment after start-up, warm segments from the memory and the disk
     (sendfile) cache tiers.
  3. Peers: ffmpeg pre-packaging the same file into HLS fMP4, and nginx serving that output.
  4. A summary against the aims, and every figure as JSON in bench/.cache/results-latest.json.

All traffic goes to 127.0.0.1. The script is flat on purpose: it reads top to bottom.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
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
    ms,
    ok,
    pct,
    process_tree,
    say,
    stop,
)

LUA = BENCH / "wrk_paths.lua"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--quick", action="store_true",
                    help="20 s mezzanine, 3 s load runs, 2 cold rounds (a smoke run, ~1.5 min)")
parser.add_argument("--duration", type=float, default=None,
                    help="mezzanine length in seconds (default 60, --quick 20)")
parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
parser.add_argument("--seconds", type=float, default=None,
                    help="length of each measured wrk run (default 10, --quick 3)")
parser.add_argument("--cold-rounds", type=int, default=None,
                    help="origin restarts with an empty cache per configuration (default 3, "
                         "--quick 2); each round fetches every video segment once")
parser.add_argument("--skip-long", action="store_true",
                    help="skip the 1-hour index timing (needs ~2.5 GB of scratch disk)")
args = parser.parse_args()
DURATION = args.duration or (20.0 if args.quick else 60.0)
WRK_SECONDS = args.seconds or (3.0 if args.quick else 10.0)
WARMUP_SECONDS = 1.0 if args.quick else 2.0
COLD_ROUNDS = args.cold_rounds or (2 if args.quick else 3)
CONNS = args.connections
LOOPS = ("asyncio", "uvloop")
WORKER_COUNTS = (1, 2)
AIM_INDEX_MS = 200.0
AIM_COLD_MS = 20.0
AIM_NGINX_RATIO = 0.8

T_START = time.perf_counter()




# --- tools ------------------------------------------------------------------------------------
# The peers and the load generator are system binaries. nginx lives in /usr/sbin, which is not
# on every user's PATH, so look there too.

def which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


TOOLS = {name: which(name) for name in ("wrk", "nginx", "ffmpeg")}
missing = [n for n, p in TOOLS.items() if p is None]
if missing:
    print(f"missing tool(s): {', '.join(missing)}\n"
          "install them with:  sudo apt-get install wrk nginx-light ffmpeg", file=sys.stderr)
    sys.exit(2)
if not MEDIAORIGIN.exists():
    print(f"{MEDIAORIGIN} not found: run this with the repo's venv python "
          "(.venv/bin/python bench/origin_bench.py)", file=sys.stderr)
    sys.exit(2)
WRK, NGINX, FFMPEG = TOOLS["wrk"], TOOLS["nginx"], TOOLS["ffmpeg"]






ENV_INFO = {
    "cpus": os.cpu_count(),
    "cpu_model": cpu_model(),
    "python": platform.python_version(),
    "platform": platform.platform(),
    "wrk": first_line([WRK, "-v"]),
    "nginx": first_line([NGINX, "-v"]),
    "ffmpeg": first_line([FFMPEG, "-version"]),
    "load_generator": f"wrk, 1 thread, {CONNS} connections, nothing pinned",
}
try:
    import aiohttp
    import uvloop

    ENV_INFO["aiohttp"] = aiohttp.__version__
    ENV_INFO["uvloop"] = uvloop.__version__
except ImportError as e:  # the origin itself would fail the same way; say so early
    print(f"the venv lacks a dependency ({e}); run scripts/install-deps.sh", file=sys.stderr)
    sys.exit(2)


from mediaorigin.packaging.mp4 import serial  # noqa: E402  (after the dependency check)
from mediaorigin.packaging.mp4.index import index_file  # noqa: E402

# --- small helpers ----------------------------------------------------------------------------









def listening_sockets(port: int) -> int:
    """LISTEN sockets on 127.0.0.1:port. With SO_REUSEPORT every worker has its own, so this
    tells when all workers of a multi-process origin are accepting, not just the first."""
    want = f"0100007F:{port:04X}"
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[1] == want and parts[3] == "0A":
            n += 1
    return n






def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024




RUNNING: list[subprocess.Popen] = []  # every server we start, stopped in the final `finally`
WRK_RUNS = 0


def wrk(port: int, paths: list[str], seconds: float, server_pid: int) -> dict:
    """One wrk run over `paths` (cycled by wrk_paths.lua); returns rates, latencies and the CPU
    the server and wrk used, so a reader can tell which side was the bottleneck."""
    global WRK_RUNS
    WRK_RUNS += 1
    listfile = TMP / f"paths-{WRK_RUNS}.txt"
    listfile.write_text("\n".join(paths) + "\n")
    cmd = [WRK, "-t1", f"-c{CONNS}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
           "-s", str(LUA), f"http://127.0.0.1:{port}", "--", str(listfile)]
    pids = process_tree(server_pid)
    server0 = cpu_seconds(pids)
    machine0 = machine_cpu_seconds()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server1 = cpu_seconds(pids)
    machine1 = machine_cpu_seconds()
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stdout[-800:]} {p.stderr[-800:]}")
    r = json.loads(line[len("WRKJSON "):])
    dur = r["duration_us"] / 1e6
    errors = sum(v for k, v in r.items() if k.startswith("errors_"))
    if errors:
        say(f"  WARNING: wrk counted {errors} errors: "
            f"{ {k: v for k, v in r.items() if k.startswith('errors_') and v} }")
    server_pct = 100 * (server1 - server0) / wall
    wrk_pct = 100 * ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) / wall
    machine_pct = 100 * (machine1 - machine0) / wall
    return {
        "requests": r["requests"], "seconds": round(dur, 3),
        "req_s": r["requests"] / dur, "mb_s": r["bytes"] / dur / 1e6,
        "avg_bytes": r["bytes"] / max(1, r["requests"]),
        "p50_ms": r["lat_p50_us"] / 1000, "p90_ms": r["lat_p90_us"] / 1000,
        "p99_ms": r["lat_p99_us"] / 1000, "max_ms": r["lat_max_us"] / 1000,
        "errors": errors,
        # CPU as a percentage of one core (100 * cores = the whole machine). "other" is what
        # the rest of the machine burned meanwhile (kernel softirq for loopback included):
        # a large value means another workload was competing and the figures are noisy.
        "server_cpu_pct": server_pct, "wrk_cpu_pct": wrk_pct,
        "machine_cpu_pct": machine_pct,
        "other_cpu_pct": max(0.0, machine_pct - server_pct - wrk_pct),
        # Server CPU-seconds per GB sent: efficiency that does not depend on whether the
        # server or the client was the bottleneck of this run.
        "server_cpu_s_per_gb": (server_pct / 100) / max(1e-9, r["bytes"] / dur / 1e9),
    }


ENV_INFO["background_cpu_pct_at_start"] = background_load()

TMP = Path(tempfile.mkdtemp(prefix="mediaorigin-bench-"))
# nginx's workers drop to user nobody when started as root: they must be able to read here.
TMP.chmod(0o755)
RESULTS: dict = {"args": vars(args), "env": ENV_INFO, "aims": {
    "index_ms": AIM_INDEX_MS, "cold_segment_ms": AIM_COLD_MS, "nginx_ratio": AIM_NGINX_RATIO}}
long_path = TMP / "long-1h.mp4"

try:
    # === 1. Mezzanine ===========================================================================
    # A lecture-like 1080p30 H.264 file at ~5 Mb/s with 2 s GOPs (keyframes every 60 frames, no
    # scene-cut keyframes), so 4 s segments hold exactly two GOPs for both the origin and ffmpeg.
    # Encoding is the slow part of a first run, so the file is cached per duration.
    mezz = mezzanine(DURATION, FFMPEG)
    RESULTS["mezzanine"] = {"file": mezz.name, "seconds": DURATION,
                            "bytes": mezz.stat().st_size}

    # === 2. The origin ==========================================================================
    # Its own world in TMP: storage root, library database and a fresh cache dir per start,
    # all set through MEDIAORIGIN_* variables; the demo lecture is off (it would encode video).
    config_file = TMP / "config.toml"
    config_file.write_text('# generated by bench/origin_bench.py; the env vars set the rest\n'
                           '[demo]\nenabled = false\n')
    BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAORIGIN_")}
    BASE_ENV.update({
        "MEDIAORIGIN_SERVER_HOST": "127.0.0.1",
        "MEDIAORIGIN_SERVER_ACCESS_LOG": "false",
        "MEDIAORIGIN_STORAGE_ROOT": str(TMP / "media"),
        "MEDIAORIGIN_LIBRARY_URL": f"sqlite:///{TMP / 'library.sqlite3'}",
        "MEDIAORIGIN_STORAGE_CACHE_DIR": str(TMP / "cache-import"),
        "MEDIAORIGIN_DEMO_ENABLED": "false",
    })
    MEDIA_ID = import_ladder(mezz, "bench mezzanine", config_file, BASE_ENV)
    STARTS = 0

    def start_origin(loop: str, workers: int, cache_dir: Path,
                     extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
        """`mediaorigin serve` in its own process group; returns once /healthz answers and
        every worker is listening."""
        global STARTS
        STARTS += 1
        port = free_port()
        env = dict(BASE_ENV, MEDIAORIGIN_SERVER_PORT=str(port),
                   MEDIAORIGIN_SERVER_WORKERS=str(workers), MEDIAORIGIN_SERVER_LOOP=loop,
                   MEDIAORIGIN_STORAGE_CACHE_DIR=str(cache_dir), **(extra or {}))
        log_path = TMP / f"origin-{STARTS}.log"
        proc = launch([str(MEDIAORIGIN), "serve", "--config", str(config_file)], env,
                      log_path, RUNNING,
                      lambda: healthz(port) and listening_sockets(port) >= workers)
        return proc, port

    def child_uri(playlist: str, after_tag: str) -> list[str]:
        """URI lines of a playlist; with after_tag, only those following that tag."""
        lines = [ln.strip() for ln in playlist.splitlines() if ln.strip()]
        if after_tag:
            return [lines[i + 1] for i, ln in enumerate(lines[:-1]) if ln.startswith(after_tag)]
        return [ln for ln in lines if not ln.startswith("#")]

    def cold_round(loop: str, workers: int, tag: str) -> tuple[subprocess.Popen, int, dict]:
        """Start an origin on an empty cache dir and play the title like a player would,
        then fetch every remaining video segment once, in order, on the same keep-alive
        connection. Every segment request is a cache miss: packaged on the request."""
        cache_dir = TMP / f"cache-{tag}"
        proc, port = start_origin(loop, workers, cache_dir)
        base = f"/vod/{MEDIA_ID}/"
        # Time to first segment: from "the origin answers /healthz" to the end of seg-1's
        # body, through master -> media playlist -> init -> seg-1, connection set-up included.
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        master = get(conn, base + "master.m3u8").decode()
        t_master = time.perf_counter()
        media_uri = child_uri(master, "#EXT-X-STREAM-INF")[0]  # v0/media.m3u8
        media = get(conn, base + media_uri).decode()
        t_media = time.perf_counter()
        rdir = base + media_uri.rsplit("/", 1)[0] + "/"
        init_uri = re.search(r'#EXT-X-MAP:URI="([^"]+)"', media).group(1)
        seg_uris = [rdir + u for u in child_uri(media, "")]
        get(conn, rdir + init_uri)
        t_init = time.perf_counter()
        first = get(conn, seg_uris[0])
        t_seg1 = time.perf_counter()
        times = [t_seg1 - t_init]
        sizes = [len(first)]
        for uri in seg_uris[1:]:
            t = time.perf_counter()
            sizes.append(len(get(conn, uri)))
            times.append(time.perf_counter() - t)
        conn.close()
        return proc, port, {
            "ttfs_ms": ms(t_seg1 - t0),
            "ttfs_steps_ms": {"master": ms(t_master - t0), "media": ms(t_media - t_master),
                              "init": ms(t_init - t_media), "seg1": ms(t_seg1 - t_init)},
            "segment_ms": [ms(x) for x in times], "segment_bytes": sizes,
            "segment_paths": seg_uris,
        }

    ORIGIN: dict = {}
    SEG_PATHS: list[str] = []
    for workers in WORKER_COUNTS:
        for loop in LOOPS:
            name = f"{loop}/{workers}w"
            res: dict = {"loop": loop, "workers": workers}
            say(f"origin {name}: {COLD_ROUNDS} cold round(s) ...")
            rounds = []
            proc = None
            for k in range(COLD_ROUNDS):
                stop(proc)  # the previous round's origin; the last one stays for warm runs
                proc, port, rnd = cold_round(loop, workers, f"{loop}-{workers}-{k}")
                rounds.append(rnd)
            SEG_PATHS = rounds[-1]["segment_paths"]
            cold = [x for r in rounds for x in r["segment_ms"]]
            res["cold"] = {
                "n": len(cold), "p50_ms": pct(cold, 50), "p99_ms": pct(cold, 99),
                "max_ms": max(cold), "mean_ms": statistics.fmean(cold),
                "all_segments_ms": statistics.median(sum(r["segment_ms"]) for r in rounds),
                "ttfs_ms": statistics.median(r["ttfs_ms"] for r in rounds),
                "ttfs_all_ms": [round(r["ttfs_ms"], 2) for r in rounds],
                "ttfs_steps_ms": rounds[len(rounds) // 2]["ttfs_steps_ms"],
                "segments": len(SEG_PATHS),
                "avg_segment_bytes": statistics.fmean(rounds[-1]["segment_bytes"]),
            }
            say(f"  cold p50 {res['cold']['p50_ms']:.1f} ms p99 {res['cold']['p99_ms']:.1f} ms,"
                f" TTFS {res['cold']['ttfs_ms']:.1f} ms")

            # Playlists: small bodies, so this is per-request overhead (HTTP parsing, routing,
            # the prepared-title lookup, headers) — the CPU cost of the event loop and aiohttp.
            pid = proc.pid
            for key, path in (("master", f"/vod/{MEDIA_ID}/master.m3u8"),
                              ("media", f"/vod/{MEDIA_ID}/v0/media.m3u8")):
                wrk(port, [path], WARMUP_SECONDS, pid)
                res[key] = wrk(port, [path], WRK_SECONDS, pid)
                say(f"  {key} playlist {res[key]['req_s']:.0f} req/s "
                    f"p50 {res[key]['p50_ms']:.2f} ms p99 {res[key]['p99_ms']:.2f} ms")

            # Warm segments, default config (memory tier 256 MB + disk tier). The cold rounds
            # packaged everything already; the short warm-up run makes sure of it. With two
            # workers a segment packaged by the other worker is served from the shared disk
            # tier (the memory tier is per process and a disk hit is not promoted to memory),
            # so "default" is a memory/disk mix there; the memory-only run below isolates it.
            wrk(port, SEG_PATHS, WARMUP_SECONDS, pid)
            res["warm_default"] = wrk(port, SEG_PATHS, WRK_SECONDS, pid)
            res["rss_mb"] = rss_mb(process_tree(pid))
            say(f"  warm default {res['warm_default']['req_s']:.0f} req/s "
                f"{res['warm_default']['mb_s']:.0f} MB/s")
            stop(proc)

            # Warm segments from the disk tier only (memory tier 0 MB): the sendfile path.
            # Same cache dir as the last cold round, so every segment is already on disk.
            last_cache = TMP / f"cache-{loop}-{workers}-{COLD_ROUNDS - 1}"
            proc, port = start_origin(loop, workers, last_cache,
                                      {"MEDIAORIGIN_PACKAGING_SEGMENT_MEMORY_MB": "0"})
            wrk(port, SEG_PATHS, WARMUP_SECONDS, proc.pid)
            res["warm_disk"] = wrk(port, SEG_PATHS, WRK_SECONDS, proc.pid)
            say(f"  warm disk    {res['warm_disk']['req_s']:.0f} req/s "
                f"{res['warm_disk']['mb_s']:.0f} MB/s")
            stop(proc)

            if workers > 1:
                # Memory tier only (disk tier 0 MB): each worker packages a segment on its own
                # first miss (during the warm-up) and then serves it from its memory.
                proc, port = start_origin(loop, workers, TMP / f"cache-{loop}-{workers}-mem",
                                          {"MEDIAORIGIN_PACKAGING_SEGMENT_DISK_MB": "0"})
                wrk(port, SEG_PATHS, WARMUP_SECONDS * 2, proc.pid)
                res["warm_memory"] = wrk(port, SEG_PATHS, WRK_SECONDS, proc.pid)
                say(f"  warm memory  {res['warm_memory']['req_s']:.0f} req/s "
                    f"{res['warm_memory']['mb_s']:.0f} MB/s")
                stop(proc)
            else:
                # One worker packaged every segment itself: the default run *is* the memory
                # tier (256 MB holds the whole title).
                res["warm_memory"] = res["warm_default"]
            ORIGIN[name] = res
    RESULTS["origin"] = ORIGIN
    RESULTS["origin_segment_paths"] = SEG_PATHS

    # === 3a. Peer: ffmpeg pre-packaging =========================================================
    # What a pre-packaging pipeline does before the first viewer can start: remux the whole
    # file into HLS fMP4 (stream copy, no encoding — the cheapest possible pre-packaging).
    say("ffmpeg pre-packaging (median of 3) ...")
    ff_times = []
    hls_dir = TMP / "hls"
    for _ in range(3):
        shutil.rmtree(hls_dir, ignore_errors=True)
        hls_dir.mkdir()
        t0 = time.perf_counter()
        subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(mezz),
                        "-c", "copy", "-f", "hls", "-hls_time", "4",
                        "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
                        "-hls_segment_filename", str(hls_dir / "seg-%d.m4s"),
                        str(hls_dir / "index.m3u8")], check=True)
        ff_times.append(time.perf_counter() - t0)
    hls_dir.chmod(0o755)
    nginx_paths = ["/" + u for u in child_uri((hls_dir / "index.m3u8").read_text(), "")]
    ff_sizes = [(hls_dir / p.lstrip("/")).stat().st_size for p in nginx_paths]
    RESULTS["ffmpeg_prepackage"] = {
        "ms_median": ms(statistics.median(ff_times)),
        "ms_all": [round(ms(x), 1) for x in ff_times],
        "segments": len(nginx_paths), "avg_segment_bytes": statistics.fmean(ff_sizes),
    }
    say(f"  {RESULTS['ffmpeg_prepackage']['ms_median']:.0f} ms, {len(nginx_paths)} segments")

    # === 3b. Peer: nginx serving the pre-packaged files =========================================
    # Same worker count, same connections, same number of segment URLs as the origin runs.
    # sendfile on, access log off, keep-alive unlimited like aiohttp's; reuseport like the
    # origin's multi-worker socket. Everything else is nginx's default (no open_file_cache).
    NGINX_RES: dict = {}
    for workers in WORKER_COUNTS:
        ndir = TMP / f"nginx-{workers}"
        ndir.mkdir()
        port = free_port()
        temp = {d: ndir / d for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        (ndir / "nginx.conf").write_text(f"""
worker_processes {workers};
pid {ndir}/nginx.pid;
error_log {ndir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp4 mp4;
        video/iso.segment m4s;
    }}
    server {{
        listen 127.0.0.1:{port}{' reuseport' if workers > 1 else ''};
        root {hls_dir};
        location / {{ add_header Cache-Control "public, max-age=31536000, immutable"; }}
    }}
}}
""")
        say(f"nginx with {workers} worker(s) ...")
        proc = subprocess.Popen([NGINX, "-p", str(ndir), "-e", str(ndir / "error.log"),
                                 "-c", str(ndir / "nginx.conf"), "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        RUNNING.append(proc)
        deadline = time.monotonic() + 20
        while listening_sockets(port) < 1:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not start listening in 20 s")
            time.sleep(0.02)
        wrk(port, nginx_paths, WARMUP_SECONDS, proc.pid)
        NGINX_RES[workers] = wrk(port, nginx_paths, WRK_SECONDS, proc.pid)
        say(f"  {NGINX_RES[workers]['req_s']:.0f} req/s {NGINX_RES[workers]['mb_s']:.0f} MB/s")
        stop(proc)
    RESULTS["nginx"] = {str(k): v for k, v in NGINX_RES.items()}

    # === 1b. Index timing on a 1-hour file (run last, reported first) ===========================
    # It runs after the load tests on purpose: writing a 2.4 GB file leaves gigabytes of dirty
    # pages whose writeback would stall the origin's disk-cache writes and skew the latencies.
    # The first request for a title parses its moov (sample tables) and caches the result. For
    # a one-hour lecture that is ~108k video + ~169k audio samples. Rather than encode an hour,
    # loop the mezzanine with stream copy: the sample tables are those of a real hour-long file.
    index_res: dict = {}
    free_gb = shutil.disk_usage(TMP).free / 1e9
    if args.skip_long:
        say("1-hour index timing skipped (--skip-long)")
        index_res["skipped"] = "--skip-long"
    elif free_gb < 10:
        say(f"1-hour index timing skipped: only {free_gb:.1f} GB free in {TMP} (need 10 GB)")
        index_res["skipped"] = f"{free_gb:.1f} GB free"
    else:
        say("building a 1-hour file by stream-copying the mezzanine in a loop ...")
        t0 = time.perf_counter()
        subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
                        "-stream_loop", "-1", "-i", str(mezz), "-t", "3600", "-c", "copy",
                        str(long_path)], check=True)
        say(f"  {long_path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s")
        size = long_path.stat().st_size
        fd = os.open(long_path, os.O_RDONLY)
        try:
            # "Cold" = no index cache: read the moov and expand every table. The moov bytes
            # come from the page cache (the file was just written); the parse dominates.
            parse_times = []
            for _ in range(5):
                t0 = time.perf_counter()
                idx = index_file(lambda off, n: os.pread(fd, n, off), size)
                parse_times.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
        # The serialized index as IndexCache stores it, then read back the way the origin
        # does on a restart: read the file and rebuild the arrays.
        blob = serial.dumps(idx, "bench")
        cache_file = TMP / "long.moix"
        cache_file.write_bytes(blob)
        dump_times, load_times = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            serial.dumps(idx, "bench")
            dump_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            serial.loads(cache_file.read_bytes(), "bench")
            load_times.append(time.perf_counter() - t0)
        index_res = {
            "file_bytes": size,
            "samples": {t.kind: t.sample_count for t in idx.tracks},
            "parse_ms_median": ms(statistics.median(parse_times)),
            "parse_ms_all": [round(ms(x), 2) for x in parse_times],
            "cache_bytes": len(blob),
            "dumps_ms_median": ms(statistics.median(dump_times)),
            "loads_ms_median": ms(statistics.median(load_times)),
        }
        long_path.unlink()  # 2+ GB of scratch: gone as soon as it has been measured
        say(f"  index_file median {index_res['parse_ms_median']:.1f} ms, "
            f"cache load median {index_res['loads_ms_median']:.1f} ms")
    RESULTS["index_1h"] = index_res

finally:
    for p in RUNNING:
        stop(p)
    if long_path.exists():
        long_path.unlink()
    shutil.rmtree(TMP, ignore_errors=True)

# === 4. Report ==================================================================================
# Ratios: origin / nginx compares bytes per second (the two sets of segments differ slightly in
# size: the origin's v0 segments are video only, ffmpeg's carry the audio too); req/s is shown
# beside it. "Aim" columns say OK or MISS against the targets in the brief.




NOISY_PCT = 25.0  # "other" CPU above this (% of one core): something else competed


def noisy(*runs: dict) -> str:
    return " *" if any(w["other_cpu_pct"] > NOISY_PCT for w in runs) else ""


W = 100
print("=" * W)
print("mediaorigin benchmark" + ("  (--quick)" if args.quick else ""))
print("=" * W)
print(f"machine   : {ENV_INFO['cpus']} CPUs ({ENV_INFO['cpu_model']}), Python "
      f"{ENV_INFO['python']}, aiohttp {ENV_INFO['aiohttp']}, uvloop {ENV_INFO['uvloop']}")
print(f"peers     : {ENV_INFO['nginx']}; {ENV_INFO['ffmpeg']}")
print(f"load      : {ENV_INFO['wrk']}: 1 thread, {CONNS} connections, {WRK_SECONDS:g} s per "
      f"run, nothing pinned. The load generator shares the {ENV_INFO['cpus']} cores with the "
      "server.")
others = [w["other_cpu_pct"] for r in ORIGIN.values()
          for w in (r["master"], r["media"], r["warm_default"], r["warm_disk"], r["warm_memory"])]
others += [w["other_cpu_pct"] for w in NGINX_RES.values()]
print(f"background: {ENV_INFO['background_cpu_pct_at_start']:.0f}% of one core busy before the "
      f"run; 'other' CPU during load runs: median {statistics.median(others):.0f}%, max "
      f"{max(others):.0f}% (kernel loopback work included)")
if statistics.median(others) > 30:
    print("WARNING   : another workload competed for the CPUs during this run; compare figures"
          " only with care")
m = RESULTS["mezzanine"]
any_origin = next(iter(ORIGIN.values()))
print(f"media     : {m['seconds']:g} s 1080p30 H.264 5 Mb/s + AAC 128k "
      f"({m['bytes'] / 1e6:.1f} MB); {any_origin['cold']['segments']} video segments of "
      f"{any_origin['cold']['avg_segment_bytes'] / 1e6:.2f} MB avg")
print()

ix = RESULTS["index_1h"]
print("1. Index of a 1-hour 1080p MP4 (no index cache; median of 5)")
if "skipped" in ix:
    print(f"   skipped: {ix['skipped']}")
else:
    samples = ", ".join(f"{v} {k}" for k, v in ix["samples"].items())
    print(f"   file {ix['file_bytes'] / 1e9:.2f} GB, {samples} samples")
    print(f"   index_file (cold parse)          {ix['parse_ms_median']:8.1f} ms   "
          f"aim < {AIM_INDEX_MS:.0f} ms  {ok(ix['parse_ms_median'] < AIM_INDEX_MS)}")
    print(f"   serialized cache: read + loads   {ix['loads_ms_median']:8.1f} ms   "
          f"aim < {AIM_INDEX_MS:.0f} ms  {ok(ix['loads_ms_median'] < AIM_INDEX_MS)}   "
          f"({ix['cache_bytes'] / 1e6:.1f} MB; dumps {ix['dumps_ms_median']:.1f} ms)")
print()

print("2. Playlists (wrk; latency in ms; CPU in % of one core)")
print(f"   {'loop/workers':<14}{'master req/s':>13}{'p50':>7}{'p99':>7}"
      f"{'media req/s':>13}{'p50':>7}{'p99':>7}{'origin CPU':>12}{'wrk CPU':>9}{'other':>7}")
for name, r in ORIGIN.items():
    print(f"   {name:<14}{r['master']['req_s']:>13.0f}{r['master']['p50_ms']:>7.2f}"
          f"{r['master']['p99_ms']:>7.2f}{r['media']['req_s']:>13.0f}{r['media']['p50_ms']:>7.2f}"
          f"{r['media']['p99_ms']:>7.2f}{r['media']['server_cpu_pct']:>11.0f}%"
          f"{r['media']['wrk_cpu_pct']:>8.0f}%{r['media']['other_cpu_pct']:>6.0f}%"
          f"{noisy(r['master'], r['media'])}")
print(f"   CPU columns: during the media playlist run. * = 'other' CPU above {NOISY_PCT:.0f}% of "
      "a core in either run: treat that row as noisy.")
print()

print(f"3. Cold segments: empty cache, each video segment fetched once, sequentially, keep-alive "
      f"({COLD_ROUNDS} restarts)")
print(f"   {'loop/workers':<14}{'n':>4}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
      f"{'all segs ms':>13}{'TTFS ms':>10}   TTFS steps: master/media/init/seg-1 ms")
for name, r in ORIGIN.items():
    c = r["cold"]
    s = c["ttfs_steps_ms"]
    print(f"   {name:<14}{c['n']:>4}{c['p50_ms']:>9.1f}{c['p99_ms']:>9.1f}{c['max_ms']:>9.1f}"
          f"{c['all_segments_ms']:>13.0f}{c['ttfs_ms']:>10.1f}   "
          f"{s['master']:.1f}/{s['media']:.1f}/{s['init']:.1f}/{s['seg1']:.1f}")
print()

print("4. Warm segments (wrk over every video segment URL; MB = 10^6 bytes)")
print(f"   {'loop/workers':<14}{'cache tier':<12}{'req/s':>8}{'MB/s':>8}{'p50 ms':>9}"
      f"{'p99 ms':>9}{'srv CPU':>9}{'s/GB':>6}{'wrk CPU':>9}{'other':>7}{'vs nginx':>10}")
for name, r in ORIGIN.items():
    tiers = [("default", r["warm_default"]), ("disk", r["warm_disk"])]
    if r["workers"] > 1:
        tiers.insert(1, ("memory", r["warm_memory"]))
    for tier, w in tiers:
        ratio = w["mb_s"] / NGINX_RES[r["workers"]]["mb_s"]
        w["vs_nginx_mb_s"] = ratio
        print(f"   {name:<14}{tier:<12}{w['req_s']:>8.0f}{w['mb_s']:>8.0f}{w['p50_ms']:>9.1f}"
              f"{w['p99_ms']:>9.1f}{w['server_cpu_pct']:>8.0f}%"
              f"{w['server_cpu_s_per_gb']:>6.2f}{w['wrk_cpu_pct']:>8.0f}%"
              f"{w['other_cpu_pct']:>6.0f}%{ratio:>9.2f}x{noisy(w)}")
for workers, w in NGINX_RES.items():
    print(f"   {'nginx/' + str(workers) + 'w':<14}{'files':<12}{w['req_s']:>8.0f}{w['mb_s']:>8.0f}"
          f"{w['p50_ms']:>9.1f}{w['p99_ms']:>9.1f}{w['server_cpu_pct']:>8.0f}%"
          f"{w['server_cpu_s_per_gb']:>6.2f}{w['wrk_cpu_pct']:>8.0f}%{w['other_cpu_pct']:>6.0f}%{1.0:>9.2f}x{noisy(w)}")
ff = RESULTS["ffmpeg_prepackage"]
print("   srv CPU = server CPU in % of one core; s/GB = server CPU-seconds per GB sent (lower is"
      " better,\n   whoever the bottleneck was). wrk CPU near 100% means the client was the limit.")
print(f"   * = 'other' CPU above {NOISY_PCT:.0f}% of a core during the run: another workload "
      "competed (or heavy kernel loopback work); treat that row as noisy.")
print(f"   nginx serves ffmpeg's {ff['segments']} segments of {ff['avg_segment_bytes'] / 1e6:.2f} "
      f"MB avg (video + audio muxed); the origin's are video only.")
print()

print("5. Summary against the aims")
best_ttfs = min(ORIGIN.values(), key=lambda r: r["cold"]["ttfs_ms"])
rows = []
if "skipped" not in ix:
    rows.append(("1-h index, cold parse", f"{ix['parse_ms_median']:.1f} ms",
                 f"< {AIM_INDEX_MS:.0f} ms", ok(ix["parse_ms_median"] < AIM_INDEX_MS)))
    rows.append(("1-h index, cached load", f"{ix['loads_ms_median']:.1f} ms",
                 f"< {AIM_INDEX_MS:.0f} ms", ok(ix["loads_ms_median"] < AIM_INDEX_MS)))
for name, r in ORIGIN.items():
    c = r["cold"]
    rows.append((f"cold segment p50/p99, {name}", f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f} ms",
                 f"< {AIM_COLD_MS:.0f} ms",
                 f"{ok(c['p50_ms'] < AIM_COLD_MS)} / {ok(c['p99_ms'] < AIM_COLD_MS)}"))
for name, r in ORIGIN.items():
    rd, rk = r["warm_default"]["vs_nginx_mb_s"], r["warm_disk"]["vs_nginx_mb_s"]
    rows.append((f"warm vs nginx (MB/s), {name}", f"{rd:.2f}x default, {rk:.2f}x disk",
                 f">= {AIM_NGINX_RATIO}x",
                 f"{ok(rd >= AIM_NGINX_RATIO)} / {ok(rk >= AIM_NGINX_RATIO)}"))
for name, r in ORIGIN.items():
    ng = NGINX_RES[r["workers"]]["server_cpu_s_per_gb"]
    rows.append((f"server CPU per GB vs nginx, {name}",
                 f"{r['warm_default']['server_cpu_s_per_gb'] / ng:.1f}x default, "
                 f"{r['warm_disk']['server_cpu_s_per_gb'] / ng:.1f}x disk", "(info)", ""))
speedup = ff["ms_median"] / best_ttfs["cold"]["ttfs_ms"]
rows.append(("time to first segment vs ffmpeg pre-packaging",
             f"{best_ttfs['cold']['ttfs_ms']:.0f} ms vs {ff['ms_median']:.0f} ms "
             f"({speedup:.1f}x sooner)", "sooner", ok(speedup > 1)))
full = min(r["cold"]["all_segments_ms"] for r in ORIGIN.values())
rows.append(("all segments cold (sequential) vs ffmpeg",
             f"{full:.0f} ms vs {ff['ms_median']:.0f} ms", "(info)", ""))
for label, fig, aim, verdict in rows:
    print(f"   {label:<46}{fig:<32}{aim:<10}{verdict}")
RESULTS["summary"] = [dict(zip(("figure", "value", "aim", "verdict"), r, strict=True))
                      for r in rows]
print()
CACHE.mkdir(parents=True, exist_ok=True)
(CACHE / "results-latest.json").write_text(json.dumps(RESULTS, indent=2, default=str) + "\n")
print(f"figures as JSON: {CACHE / 'results-latest.json'}   "
      f"(total run time {time.perf_counter() - T_START:.0f} s)")
