"""Benchmark of the media library: uploads, transcoding and upload-to-playable, with peers.

Run from the repository root:

    .venv/bin/python bench/library_bench.py --quick    # 256 MB uploads, 10 s transcode, 10 min
                                                       # title: ~2 min on 2 cores
    .venv/bin/python bench/library_bench.py            # 2 GB uploads, 60 s transcode x3, 1 h
                                                       # title: ~10 min on 2 cores
    .venv/bin/python bench/library_bench.py --quick --transcode   # one part only
    (the first run of each mode also encodes its source media once, cached in bench/.cache)

What it measures (bench/README.md explains each figure):
  1. --upload: a multipart POST /api/media/upload of a large file of random bytes to a real
     `mediaorigin serve` subprocess, against a raw disk write of the same bytes (256 KiB
     chunks + fsync); the server's memory (VmHWM, sampled VmRSS) during the upload; a tus
     upload of the same file with tuspy (8 MiB chunks).
  2. --transcode: our ladder (`transcode_ladder`, PyAV) against the ffmpeg CLI doing the same
     ladder in one process (one decode, split=3, 3 x libx264 veryfast, AAC), alternated.
  3. --playable: a compliant 1-hour H.264/AAC MP4 uploaded to the origin; time until the
     master playlist and the first segment answer 200, and until the job is completed; against
     ffmpeg pre-packaging the same file to HLS.
  4. A summary against the aims; every figure as JSON in bench/.cache/library-results-latest.json.

All traffic goes to 127.0.0.1. The script is flat on purpose: it reads top to bottom.
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
    background_load,
    cpu_model,
    first_line,
    free_port,
    launch,
    machine_cpu_seconds,
    ok,
    say,
    stop,
)

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--quick", action="store_true",
                    help="256 MB uploads, 10 s transcode source (1 run each), 10-minute title: "
                         "a smoke run of ~2 min")
parser.add_argument("--upload", action="store_true", help="run part 1 (upload throughput)")
parser.add_argument("--transcode", action="store_true", help="run part 2 (ladder vs ffmpeg)")
parser.add_argument("--playable", action="store_true", help="run part 3 (upload to playable)")
parser.add_argument("--upload-mb", type=int, default=None,
                    help="size of the uploaded file in MiB (default 2048, --quick 256)")
parser.add_argument("--rounds", type=int, default=None,
                    help="upload rounds, each: disk write, multipart, tus (default 3, --quick 2)")
parser.add_argument("--transcode-seconds", type=float, default=None,
                    help="length of the 1080p30 transcode source (default 60, --quick 10)")
parser.add_argument("--transcode-runs", type=int, default=None,
                    help="runs of ours and of ffmpeg, alternated (default 3, --quick 1)")
parser.add_argument("--long-minutes", type=int, default=None,
                    help="length of the compliant title of part 3 (default 60, --quick 10)")
ladder = parser.add_mutually_exclusive_group()
ladder.add_argument("--ladder", dest="ladder", action="store_true", default=None,
                    help="part 3 asks for a 240p rung beside the passthrough 360p one, so the "
                         "job completes only after a transcode (default with --quick)")
ladder.add_argument("--no-ladder", dest="ladder", action="store_false",
                    help="part 3 asks for 360p only: passthrough, poster, preview, sprites "
                         "(default in the full run)")
args = parser.parse_args()
PARTS = {p for p in ("upload", "transcode", "playable") if getattr(args, p)} or {
    "upload", "transcode", "playable"}
UPLOAD_MB = args.upload_mb or (256 if args.quick else 2048)
ROUNDS = args.rounds or (2 if args.quick else 3)
TRANSCODE_SECONDS = args.transcode_seconds or (10.0 if args.quick else 60.0)
TRANSCODE_RUNS = args.transcode_runs or (1 if args.quick else 3)
LONG_MINUTES = args.long_minutes or (10 if args.quick else 60)
WITH_LADDER = args.quick if args.ladder is None else args.ladder
CHUNK = 256 * 1024  # the server's multipart and tus chunk size, used by the disk-write peer
TUS_CHUNK = 8 * 1024 * 1024
POLL = 0.020  # seconds between polls for the master playlist and the first segment
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
AIM_RSS_GROWTH_MB = 10.0  # "a few MB": the upload path buffers one 256 KiB chunk at a time
AIM_SPEED_RATIO = 0.95  # ffmpeg time / our time
AIM_PLAYABLE_S = 2.0  # upload response -> first segment

T_START = time.perf_counter()




# --- tools ------------------------------------------------------------------------------------

FFMPEG = shutil.which("ffmpeg")
if FFMPEG is None:
    print("missing tool: ffmpeg\ninstall it with:  sudo apt-get install ffmpeg", file=sys.stderr)
    sys.exit(2)
try:
    import aiohttp
    import av
    from tusclient import client as tus_client
except ImportError as e:
    print(f"the venv lacks a dependency ({e}); run this with the repo's venv python "
          "(.venv/bin/python bench/library_bench.py) after scripts/install-deps.sh "
          "(tuspy comes with the test extras)", file=sys.stderr)
    sys.exit(2)


from mediaorigin.processing.ladder import plan_ladder  # noqa: E402
from mediaorigin.processing.transcode import (  # noqa: E402
    AudioSettings,
    VideoSettings,
    transcode_ladder,
)

ENV_INFO = {
    "cpus": os.cpu_count(),
    "cpu_model": cpu_model(),
    "python": platform.python_version(),
    "platform": platform.platform(),
    "aiohttp": aiohttp.__version__,
    "pyav": av.__version__,
    "pyav_ffmpeg": getattr(av, "ffmpeg_version_info", "?"),
    "ffmpeg_cli": first_line([FFMPEG, "-version"]),
}
try:
    from importlib.metadata import version

    ENV_INFO["tuspy"] = version("tuspy")
except Exception:  # only informative
    ENV_INFO["tuspy"] = "?"

# --- small helpers ----------------------------------------------------------------------------




def mb_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def status_kb(pid: int, field: str) -> int:
    """A field of /proc/PID/status in kB (VmRSS, VmHWM), 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime




class Usage:
    """CPU snapshot: wall clock, the whole machine, this process, its reaped children. The
    difference of two gives the CPU the rest of the machine ("other") burned meanwhile, once
    the processes we know about are subtracted. This box may be shared: a large "other" means
    another workload competed and the figures are noisy."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.machine = machine_cpu_seconds()
        self.me = self_cpu()
        self.children = children_cpu()

    def other_pct(self, end: Usage, known: float = 0.0) -> float:
        """% of one core used by others between self and end; `known` = CPU seconds of
        processes not yet reaped (a running server) to subtract as well."""
        wall = max(1e-9, end.wall - self.wall)
        ours = (end.me - self.me) + (end.children - self.children) + known
        return max(0.0, 100 * ((end.machine - self.machine) - ours) / wall)


class RssSampler:
    """Polls VmRSS of a process every 10 ms on a thread and keeps the maximum: VmHWM alone
    cannot show a peak that stays below the one the process reached while starting up."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_kb = status_kb(pid, "VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.010):
            self.max_kb = max(self.max_kb, status_kb(self.pid, "VmRSS"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def drop_dirty() -> None:
    """Write back dirty pages before a timed step, so no earlier step's writeback competes
    with it (every step here writes hundreds of MB or more)."""
    os.sync()




def ffmpeg(cmd: list[str], timeout: float = 3600) -> None:
    p = subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y", *cmd],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")


def x264_info(path: Path) -> dict[str, str]:
    """x264 writes its version and every option into an SEI of the first frame: read both
    from the head of the file (the moov comes first with +faststart, then the mdat)."""
    with open(path, "rb") as f:
        head = f.read(8 * 1024 * 1024)
    m = re.search(rb"x264 - core (\d+)( r\d+ \w+)?.*?options: ([^\x00]*)", head, re.S)
    if not m:
        return {"core": "?", "options": ""}
    opts = m.group(3).decode("ascii", "replace")
    return {"core": m.group(1).decode() + (m.group(2) or b"").decode(), "options": opts}


def x264_opt(options: str, name: str) -> str:
    m = re.search(rf"(?:^| ){re.escape(name)}=(\S+)", options)
    return m.group(1) if m else "?"


def x264_threads(options: str) -> str:
    """"2 sliced" or "3 frame": x264's threading as the encoder recorded it."""
    kind = "sliced" if x264_opt(options, "sliced_threads") == "1" else "frame"
    return f"{x264_opt(options, 'threads')} {kind}"


RUNNING: list[subprocess.Popen] = []  # every server we start, stopped in the final `finally`
STARTS = 0
TMP = Path(tempfile.mkdtemp(prefix="mediaorigin-libbench-"))
RESULTS: dict = {"args": vars(args), "env": ENV_INFO, "aims": {
    "rss_growth_mb": AIM_RSS_GROWTH_MB, "speed_ratio": AIM_SPEED_RATIO,
    "playable_s": AIM_PLAYABLE_S}}


def start_origin(tag: str) -> tuple[subprocess.Popen, str]:
    """`python -m mediaorigin.cli serve` in its own process group, its own world under
    TMP/tag (storage, uploads, SQLite library, caches), configured only through MEDIAORIGIN_*
    variables, jobs in-process with the shipped processing settings. Returns once /healthz
    answers."""
    global STARTS
    STARTS += 1
    root = TMP / tag
    root.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAORIGIN_")}
    env.update({
        "MEDIAORIGIN_SERVER_HOST": "127.0.0.1",
        "MEDIAORIGIN_SERVER_PORT": str(port),
        "MEDIAORIGIN_SERVER_ACCESS_LOG": "false",
        "MEDIAORIGIN_STORAGE_ROOT": str(root / "media"),
        "MEDIAORIGIN_STORAGE_CACHE_DIR": str(root / "cache"),
        "MEDIAORIGIN_LIBRARY_URL": f"sqlite:///{root}/library.sqlite3",
        "MEDIAORIGIN_LIBRARY_UPLOADS_DIR": str(root / "uploads"),
        "MEDIAORIGIN_AUTH_ADMIN_KEY": ADMIN_KEY,
        "MEDIAORIGIN_AUTH_ADMIN_KEY_FILE": str(root / "admin-key"),
        "MEDIAORIGIN_DEMO_ENABLED": "false",
    })
    log_path = TMP / f"origin-{STARTS}-{tag}.log"
    proc = launch([sys.executable, "-m", "mediaorigin.cli", "serve"], env, log_path, RUNNING,
                  lambda: request(port, "GET", "/healthz")[0] == 200, cwd=root)
    return proc, f"http://127.0.0.1:{port}"


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def api_json(base: str, path: str, method: str = "GET") -> dict:
    status, body = request(port_of(base), method, path, AUTH)
    if status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


def wait_job(base: str, media_id: str, timeout: float, every: float = 0.1) -> dict:
    """Poll /api/media/{id}/status until the job has ended; returns the last status."""
    deadline = time.monotonic() + timeout
    while True:
        st = api_json(base, f"/api/media/{media_id}/status")
        if st["jobStatus"] in ("completed", "failed", "cancelled"):
            return st
        if time.monotonic() > deadline:
            raise RuntimeError(f"job of {media_id} not finished in {timeout:.0f} s: {st}")
        time.sleep(every)


def delete_media(base: str, media_id: str) -> None:
    status, body = request(port_of(base), "DELETE", f"/api/media/{media_id}", AUTH)
    if status != 204:
        raise RuntimeError(f"DELETE media {media_id}: HTTP {status}: {body[:300]!r}")


async def _post_multipart(base: str, path: Path, metadata: dict, processing: dict
                          ) -> tuple[int, bytes, float, float]:
    """aiohttp streams the file part from disk (read in a thread, 256 KiB at a time): the
    client holds one chunk, like the server. Returns status, body, seconds, wall clock at
    the response."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with open(path, "rb") as f:
            form = aiohttp.FormData()
            form.add_field("metadata", json.dumps(metadata), content_type="application/json")
            form.add_field("processing", json.dumps(processing),
                           content_type="application/json")
            form.add_field("file", f, filename=path.name,
                           content_type="application/octet-stream")
            t0 = time.perf_counter()
            async with session.post(base + "/api/media/upload", data=form,
                                    headers=AUTH) as resp:
                body = await resp.read()
                t1, wall = time.perf_counter(), time.time()
                return resp.status, body, t1 - t0, wall


def post_multipart(base: str, path: Path, metadata: dict, processing: dict
                   ) -> tuple[dict, float, float]:
    status, body, seconds, wall = asyncio.run(_post_multipart(base, path, metadata, processing))
    if status != 201:
        raise RuntimeError(f"upload: HTTP {status}: {body[:500]!r}")
    return json.loads(body), seconds, wall


def iso_epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


ENV_INFO["background_cpu_pct_at_start"] = background_load()

try:
    CACHE.mkdir(parents=True, exist_ok=True)

    # === 1. Upload throughput ===================================================================
    # The file is random bytes: the upload path stores whatever arrives and validation comes
    # later in the job (which then fails on these bytes, as it should). 16 MiB of urandom
    # repeated: nothing on the way compresses or deduplicates, so that is as good as fully
    # random and much faster to make. It stays in the page cache (reads cost no disk), so
    # the figures are about the receiving and writing side.
    if "upload" in PARTS:
        size = UPLOAD_MB * 1024 * 1024
        free = shutil.disk_usage(TMP).free
        if free < 4 * size + 2e9:
            raise RuntimeError(f"part 1 needs ~{4 * size / 1e9:.1f} GB free in {TMP}, "
                               f"{free / 1e9:.1f} GB are")
        src = TMP / "upload.bin"
        say(f"writing the {UPLOAD_MB} MiB upload file ...")
        block = os.urandom(16 * 1024 * 1024)
        with open(src, "wb") as f:
            left = size
            while left:
                f.write(block[:min(left, len(block))])
                left -= min(left, len(block))
        del block
        proc, base = start_origin("upload")
        pid = proc.pid
        processing = {"thumbnails": False}
        rounds = []
        for k in range(ROUNDS):
            rnd: dict = {}
            # Peer: the same bytes read and written in 256 KiB chunks to the same filesystem,
            # fsync at the end, as both upload paths do before they answer; "page cache" is
            # the time before the fsync.
            drop_dirty()
            dst = TMP / "upload" / "peer-copy.bin"
            u0 = Usage()
            t0 = time.perf_counter()
            with open(src, "rb", buffering=0) as fi, open(dst, "wb", buffering=0) as fo:
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while n := fi.readinto(buf):
                    fo.write(view[:n])
                t_written = time.perf_counter()
                os.fsync(fo.fileno())
            t1 = time.perf_counter()
            rnd["disk_other_cpu_pct"] = u0.other_pct(Usage())
            dst.unlink()
            rnd["disk_fsync_s"], rnd["disk_nofsync_s"] = t1 - t0, t_written - t0
            say(f"round {k + 1}/{ROUNDS}: disk write {mb_s(size, t1 - t0):.0f} MB/s "
                f"({mb_s(size, t_written - t0):.0f} MB/s before the fsync)")

            # Multipart upload to the origin; the server's memory and CPU meanwhile.
            drop_dirty()
            hwm0, rss0 = status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS")
            srv0, u0 = cpu_seconds(pid), Usage()
            with RssSampler(pid) as sampler:
                body, secs, _ = post_multipart(base, src, {"title": f"bench upload {k}"},
                                               processing)
            srv1, u1 = cpu_seconds(pid), Usage()
            hwm1 = status_kb(pid, "VmHWM")
            rnd.update({
                "multipart_s": secs, "multipart_rss_before_mb": rss0 / 1024,
                "multipart_rss_growth_mb": (sampler.max_kb - rss0) / 1024,
                "multipart_hwm_before_mb": hwm0 / 1024, "multipart_hwm_after_mb": hwm1 / 1024,
                "multipart_server_cpu_pct": 100 * (srv1 - srv0) / secs,
                "multipart_client_cpu_pct": 100 * (u1.me - u0.me) / secs,
                "multipart_other_cpu_pct": u0.other_pct(u1, srv1 - srv0),
            })
            st = wait_job(base, body["id"], 120)
            rnd["job_on_random_bytes"] = st["jobStatus"]
            delete_media(base, body["id"])
            say(f"  multipart {mb_s(size, secs):.0f} MB/s, server RSS {rss0 / 1024:.1f} -> peak "
                f"{sampler.max_kb / 1024:.1f} MB, VmHWM {hwm0 / 1024:.1f} -> {hwm1 / 1024:.1f} MB"
                f", other CPU {rnd['multipart_other_cpu_pct']:.0f}%")

            # tus with tuspy: POST to create, then 8 MiB PATCHes (one `requests` call and one
            # new connection each), fsync and ingest on the last one.
            drop_dirty()
            hwm0, rss0 = status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS")
            srv0, u0 = cpu_seconds(pid), Usage()
            uploader = tus_client.TusClient(base + "/api/uploads", headers=AUTH).uploader(
                file_path=str(src), chunk_size=TUS_CHUNK,
                metadata={"filename": src.name, "title": f"bench tus {k}",
                          "processing": json.dumps(processing)})
            with RssSampler(pid) as sampler:
                t0 = time.perf_counter()
                uploader.upload()
                t1 = time.perf_counter()
            srv1, u1 = cpu_seconds(pid), Usage()
            hwm1 = status_kb(pid, "VmHWM")
            media_id = uploader.request.response_headers.get("media-id")
            if not media_id:
                raise RuntimeError(f"tus upload finished without a Media-Id: "
                                   f"{uploader.request.response_headers}")
            rnd.update({"tus_s": t1 - t0, "tus_rss_before_mb": rss0 / 1024,
                        "tus_rss_growth_mb": (sampler.max_kb - rss0) / 1024,
                        "tus_hwm_before_mb": hwm0 / 1024, "tus_hwm_after_mb": hwm1 / 1024,
                        "tus_server_cpu_pct": 100 * (srv1 - srv0) / (t1 - t0),
                        "tus_client_cpu_pct": 100 * (u1.me - u0.me) / (t1 - t0),
                        "tus_other_cpu_pct": u0.other_pct(u1, srv1 - srv0)})
            wait_job(base, media_id, 120)
            delete_media(base, media_id)
            # The finished tus upload file is kept for its expiry; terminate it to free space.
            request(port_of(base), "DELETE", uploader.url.split(base, 1)[1],
                    {**AUTH, "Tus-Resumable": "1.0.0"})
            say(f"  tus {mb_s(size, t1 - t0):.0f} MB/s, server RSS {rss0 / 1024:.1f} -> peak "
                f"{sampler.max_kb / 1024:.1f} MB, other CPU {rnd['tus_other_cpu_pct']:.0f}%")
            rounds.append(rnd)
        stop(proc)
        src.unlink()

        def med(key: str) -> float:
            return statistics.median(r[key] for r in rounds)

        RESULTS["upload"] = {
            "bytes": size, "rounds": rounds,
            "disk_fsync_mb_s": mb_s(size, med("disk_fsync_s")),
            "disk_nofsync_mb_s": mb_s(size, med("disk_nofsync_s")),
            "multipart_mb_s": mb_s(size, med("multipart_s")),
            "tus_mb_s": mb_s(size, med("tus_s")),
            "rss_before_mb": rounds[0]["multipart_rss_before_mb"],
            # Growth = peak during one upload minus the RSS just before it, worst round. The
            # job that fails on the random bytes between uploads loads PyAV and Pillow, so
            # the baseline is taken again before every upload.
            "multipart_rss_growth_mb": max(r["multipart_rss_growth_mb"] for r in rounds),
            "tus_rss_growth_mb": max(r["tus_rss_growth_mb"] for r in rounds),
            "multipart_hwm_growth_mb": max(r["multipart_hwm_after_mb"]
                                           - r["multipart_hwm_before_mb"] for r in rounds),
            "tus_hwm_growth_mb": max(r["tus_hwm_after_mb"] - r["tus_hwm_before_mb"]
                                     for r in rounds),
            "hwm_first_mb": rounds[0]["multipart_hwm_before_mb"],
            "hwm_last_mb": rounds[-1]["tus_hwm_after_mb"],
        }
        for key in ("multipart_server_cpu_pct", "multipart_client_cpu_pct",
                    "multipart_other_cpu_pct", "tus_server_cpu_pct", "tus_client_cpu_pct",
                    "tus_other_cpu_pct", "disk_other_cpu_pct"):
            RESULTS["upload"][key] = med(key)

    # === 2. Transcoding: our ladder vs the ffmpeg CLI ===========================================
    # Same source, same rungs (sizes and bitrates from plan_ladder), same x264 preset, GOP and
    # rate control, AAC 128k; ours decodes once and feeds a thread per rung (PyAV, its bundled
    # FFmpeg and libx264), ffmpeg decodes once and splits the picture to three encoders.
    if "transcode" in PARTS:
        fps = 30
        src = CACHE / f"lib-src-1080p30-{TRANSCODE_SECONDS:g}s.mp4"
        if not src.exists():
            say(f"encoding the {TRANSCODE_SECONDS:g} s 1080p30 source (cached in {CACHE}) ...")
            partial = CACHE / f"partial-{src.name}"
            ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate={fps}",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", f"{TRANSCODE_SECONDS:g}", "-map", "0:v", "-map", "1:a", "-ac", "2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", str(2 * fps),
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
                    "-movflags", "+faststart", str(partial)])
            partial.replace(src)
        rungs = plan_ladder(1920, 1080, ["1080p", "720p", "480p"])
        video = VideoSettings(preset="veryfast", keyframe_interval=2.0)
        audio = AudioSettings()
        gop = round(video.keyframe_interval * fps)
        chains = ";".join(f"[s{i}]scale={r.width}:{r.height}[v{i}]" for i, r in enumerate(rungs))
        splits = "".join(f"[s{i}]" for i in range(len(rungs)))
        ff_dir = TMP / "ffmpeg-ladder"
        ff_cmd = ["-i", str(src), "-filter_complex",
                  f"[0:v]split={len(rungs)}{splits};{chains}"]
        for i, r in enumerate(rungs):
            kb = r.video_bitrate // 1000
            ff_cmd += ["-map", f"[v{i}]", "-map", "0:a", "-c:v", "libx264", "-preset",
                       video.preset, "-b:v", f"{kb}k", "-maxrate", f"{2 * kb}k",
                       "-bufsize", f"{2 * kb}k", "-x264-params",
                       f"keyint={gop}:min-keyint={gop}:scenecut=0", "-pix_fmt", "yuv420p",
                       "-c:a", "aac", "-b:a", f"{audio.bitrate // 1000}k", "-ac",
                       str(audio.channels), "-ar", str(audio.sample_rate),
                       "-movflags", "+faststart", str(ff_dir / f"{r.name}.mp4")]
        ours_runs, ff_runs = [], []
        ours_info: dict = {}
        ff_info: dict = {}
        for k in range(TRANSCODE_RUNS):
            out = TMP / "ours-ladder"
            shutil.rmtree(out, ignore_errors=True)
            drop_dirty()
            u0 = Usage()
            made = transcode_ladder(src, out, rungs, video, audio)
            u1 = Usage()
            secs, cpu = u1.wall - u0.wall, u1.me - u0.me
            ours_runs.append({"s": secs, "cpu_s": cpu, "other_cpu_pct": u0.other_pct(u1)})
            ours_info = {r.name: {"bytes": r.size_bytes, "size": f"{r.width}x{r.height}",
                                  **x264_info(r.path)} for r in made}
            say(f"run {k + 1}/{TRANSCODE_RUNS}: ours   {secs:6.2f} s (CPU {cpu:.1f} s, other "
                f"CPU {ours_runs[-1]['other_cpu_pct']:.0f}%)")

            shutil.rmtree(ff_dir, ignore_errors=True)
            ff_dir.mkdir()
            drop_dirty()
            u0 = Usage()
            ffmpeg(ff_cmd)
            u1 = Usage()
            secs, cpu = u1.wall - u0.wall, u1.children - u0.children
            ff_runs.append({"s": secs, "cpu_s": cpu, "other_cpu_pct": u0.other_pct(u1)})
            ff_info = {r.name: {"bytes": (ff_dir / f"{r.name}.mp4").stat().st_size,
                                "size": f"{r.width}x{r.height}",
                                **x264_info(ff_dir / f"{r.name}.mp4")} for r in rungs}
            say(f"run {k + 1}/{TRANSCODE_RUNS}: ffmpeg {secs:6.2f} s (CPU {cpu:.1f} s, other "
                f"CPU {ff_runs[-1]['other_cpu_pct']:.0f}%)")
        ours_s = statistics.median(r["s"] for r in ours_runs)
        ff_s = statistics.median(r["s"] for r in ff_runs)
        RESULTS["transcode"] = {
            "source": {"file": src.name, "seconds": TRANSCODE_SECONDS,
                       "bytes": src.stat().st_size},
            "rungs": [{"name": r.name, "width": r.width, "height": r.height,
                       "video_bitrate": r.video_bitrate} for r in rungs],
            "ours_runs": ours_runs, "ffmpeg_runs": ff_runs,
            "ours_s_median": ours_s, "ffmpeg_s_median": ff_s,
            "ours_cpu_s_median": statistics.median(r["cpu_s"] for r in ours_runs),
            "ffmpeg_cpu_s_median": statistics.median(r["cpu_s"] for r in ff_runs),
            "speed_ratio": ff_s / ours_s,
            # CPU seconds move less than wall time when another workload competes.
            "cpu_ratio": statistics.median(r["cpu_s"] for r in ff_runs)
            / statistics.median(r["cpu_s"] for r in ours_runs),
            "ours_outputs": ours_info, "ffmpeg_outputs": ff_info,
            "ffmpeg_command": "ffmpeg -nostdin -v error -y " + " ".join(
                f'"{a}"' if (";" in a or "[" in a) else a for a in ff_cmd),
        }
        shutil.rmtree(TMP / "ours-ladder", ignore_errors=True)
        shutil.rmtree(ff_dir, ignore_errors=True)

    # === 3. Upload to playable ==================================================================
    # A compliant lecture: H.264 (keyframe every 2 s, no scene cuts) + AAC in a faststart MP4,
    # 640x360 at 25 fps, ~300 kb/s video. Encoding an hour costs ~3 min here, so one minute is
    # encoded and the concat demuxer stream-copies N of them into one file (seconds). The
    # 60 s chunk holds exactly 30 GOPs, so the joins fall on keyframes.
    if "playable" in PARTS:
        chunk = CACHE / "lib-360p25-60s.mp4"
        gen: dict = {}
        if not chunk.exists():
            say(f"encoding a 60 s 640x360 chunk (cached in {CACHE}) ...")
            partial = CACHE / f"partial-{chunk.name}"
            t0 = time.perf_counter()
            ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", "60", "-map", "0:v", "-map", "1:a", "-ac", "2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-keyint_min", "50",
                    "-sc_threshold", "0", "-b:v", "300k", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(partial)])
            gen["chunk_encode_s"] = time.perf_counter() - t0
            partial.replace(chunk)
        long_file = CACHE / f"lib-360p25-{LONG_MINUTES}min.mp4"
        if not long_file.exists():
            say(f"concatenating {LONG_MINUTES} copies into a {LONG_MINUTES}-minute file ...")
            listing = TMP / "concat.txt"
            listing.write_text("".join(f"file '{chunk}'\n" for _ in range(LONG_MINUTES)))
            partial = CACHE / f"partial-{long_file.name}"
            t0 = time.perf_counter()
            ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                    "-movflags", "+faststart", str(partial)])
            gen["concat_s"] = time.perf_counter() - t0
            partial.replace(long_file)
        size = long_file.stat().st_size
        say(f"title: {long_file.name} ({size / 1e6:.0f} MB)")

        quality = ["360p", "240p"] if WITH_LADDER else ["360p"]
        processing = {"thumbnails": False, "quality": quality}
        proc, base = start_origin("playable")
        port = port_of(base)
        drop_dirty()
        t_start = time.perf_counter()
        body, upload_s, wall_201 = post_multipart(
            base, long_file, {"title": "bench 1-hour lecture"}, processing)
        t_201 = time.perf_counter()
        srv_201, u_201 = cpu_seconds(proc.pid), Usage()
        media_id = body["id"]
        say(f"uploaded in {upload_s:.2f} s as {media_id}; polling every {POLL * 1000:.0f} ms")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def poll(path: str, deadline: float, log: list) -> tuple[float, int, bytes]:
            """GET `path` every POLL s until 200; returns (time of the 200, polls, body).
            `log` gets (sent, answered, status) of every poll, in s after the 201."""
            global conn
            n = 0
            while True:
                n += 1
                sent = time.perf_counter()
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    continue
                log.append((round(sent - t_201, 4), round(time.perf_counter() - t_201, 4),
                            resp.status))
                if resp.status == 200:
                    return time.perf_counter(), n, data
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{path} still HTTP {resp.status} after the deadline: "
                                       f"{data[:300]!r}")
                time.sleep(POLL)

        deadline = time.perf_counter() + 300
        master_log: list = []
        seg_log: list = []
        t_master, n_master, master = poll(f"/vod/{media_id}/master.m3u8", deadline, master_log)
        t_seg, n_seg, seg = poll(f"/vod/{media_id}/v0/seg-1.m4s", deadline, seg_log)
        srv_seg, u_seg = cpu_seconds(proc.pid), Usage()
        conn.close()
        variants = [ln for ln in master.decode().splitlines() if ln and not ln.startswith("#")]
        say(f"  master after {t_master - t_201:.3f} s, seg-1 after {t_seg - t_201:.3f} s "
            f"({len(seg) / 1e6:.2f} MB)")
        st = wait_job(base, media_id, 3600, every=0.1)
        t_done = time.perf_counter()
        srv_done, u_done = cpu_seconds(proc.pid), Usage()
        record = api_json(base, f"/api/media/{media_id}")
        say(f"  job {st['jobStatus']} after {t_done - t_201:.1f} s")
        if st["jobStatus"] != "completed":
            raise RuntimeError(f"the job did not complete: {st}")
        history = [{"action": h["action"], "t_s": iso_epoch(h["timestamp"]) - wall_201,
                    "details": h["details"]} for h in record["processing"]["history"]]
        versions = [v["quality"] for v in record["storage"]["versions"]]
        stop(proc)

        # Peer: ffmpeg pre-packaging the whole file into HLS fMP4 (stream copy, no encoding):
        # what a packager that must prepare everything first needs before anything plays.
        ff_times: list[float] = []
        ff_other: list[float] = []
        hls = TMP / "hls"
        for _ in range(1 if args.quick else 3):
            shutil.rmtree(hls, ignore_errors=True)
            hls.mkdir()
            drop_dirty()
            u0 = Usage()
            ffmpeg(["-i", str(long_file), "-c", "copy", "-f", "hls", "-hls_time", "4",
                    "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
                    "-hls_segment_filename", str(hls / "seg-%d.m4s"), str(hls / "out.m3u8")])
            u1 = Usage()
            ff_times.append(u1.wall - u0.wall)
            ff_other.append(u0.other_pct(u1))
        segments = len(list(hls.glob("seg-*.m4s")))
        shutil.rmtree(hls, ignore_errors=True)
        RESULTS["playable"] = {
            "file": long_file.name, "minutes": LONG_MINUTES, "bytes": size, "generated": gen,
            "processing": processing, "upload_s": upload_s,
            "master_s": t_master - t_201, "master_polls": n_master,
            "seg1_s": t_seg - t_201, "seg1_polls": n_seg, "seg1_bytes": len(seg),
            "master_poll_log": master_log, "seg1_poll_log": seg_log,
            "playable_window_server_cpu_pct": 100 * (srv_seg - srv_201) / (t_seg - t_201),
            "playable_window_other_cpu_pct": u_201.other_pct(u_seg, srv_seg - srv_201),
            "job_server_cpu_pct": 100 * (srv_done - srv_201) / (t_done - t_201),
            "job_other_cpu_pct": u_201.other_pct(u_done, srv_done - srv_201),
            "variants": variants, "total_to_playable_s": t_seg - t_start,
            "job_completed_s": t_done - t_201, "job_total_s": t_done - t_start,
            "versions": versions, "history": history,
            "ffmpeg_prepackage_s": statistics.median(ff_times),
            "ffmpeg_prepackage_all_s": ff_times, "ffmpeg_segments": segments,
            "ffmpeg_prepackage_other_cpu_pct": statistics.median(ff_other),
        }

finally:
    for p in RUNNING:
        stop(p)
    shutil.rmtree(TMP, ignore_errors=True)

# === 4. Report ==================================================================================
# Ratios in the summary read the same way everywhere: above 1 means ours is better (throughput:
# ours / peer; time: peer / ours). "other" is the CPU the rest of the machine used meanwhile.




NOISY_PCT = 25.0  # "other" CPU above this (% of one core): another workload competed
OTHERS: list[float] = []


def other(pct: float) -> str:
    OTHERS.append(pct)
    return f"{pct:.0f}%" + (" *" if pct > NOISY_PCT else "")


W = 100
print("=" * W)
print("mediaorigin library benchmark" + ("  (--quick)" if args.quick else ""))
print("=" * W)
print(f"machine   : {ENV_INFO['cpus']} CPUs ({ENV_INFO['cpu_model']}), Python "
      f"{ENV_INFO['python']}, aiohttp {ENV_INFO['aiohttp']}, tuspy {ENV_INFO['tuspy']}")
print(f"codecs    : ours = PyAV {ENV_INFO['pyav']} with its bundled FFmpeg "
      f"{ENV_INFO['pyav_ffmpeg']} and libx264;")
print(f"            peer = {ENV_INFO['ffmpeg_cli'].split(' Copyright')[0]} (Debian's ffmpeg CLI, "
      "system libx264)")
print(f"background: {ENV_INFO['background_cpu_pct_at_start']:.0f}% of one core busy before the "
      "run (100% = one core; 'other' columns: CPU used by the rest of the machine meanwhile,")
print(f"            * = above {NOISY_PCT:.0f}%: another workload competed, treat the row as "
      "noisy)")
print()
rows: list[tuple[str, str, str, str, str]] = []

if "upload" in RESULTS:
    u = RESULTS["upload"]
    print(f"1. Upload throughput: {u['bytes'] / 2**20:.0f} MiB of random bytes, median of "
          f"{ROUNDS} rounds (MB = 10^6 bytes; CPU in % of one core)")
    print(f"   {'path':<46}{'MB/s':>7}{'vs disk':>9}{'srv CPU':>9}{'cli CPU':>9}{'other':>8}")
    print(f"   {'disk write, 256 KiB chunks + fsync (peer)':<46}{u['disk_fsync_mb_s']:>7.0f}"
          f"{1.0:>8.2f}x{'':>18}{other(u['disk_other_cpu_pct']):>8}")
    print(f"   {'  the same, up to the fsync (page cache)':<46}{u['disk_nofsync_mb_s']:>7.0f}"
          f"{u['disk_nofsync_mb_s'] / u['disk_fsync_mb_s']:>8.2f}x")
    print(f"   {'multipart POST /api/media/upload (aiohttp)':<46}{u['multipart_mb_s']:>7.0f}"
          f"{u['multipart_mb_s'] / u['disk_fsync_mb_s']:>8.2f}x"
          f"{u['multipart_server_cpu_pct']:>8.0f}%{u['multipart_client_cpu_pct']:>8.0f}%"
          f"{other(u['multipart_other_cpu_pct']):>8}")
    print(f"   {'tus, tuspy, 8 MiB PATCHes':<46}{u['tus_mb_s']:>7.0f}"
          f"{u['tus_mb_s'] / u['disk_fsync_mb_s']:>8.2f}x"
          f"{u['tus_server_cpu_pct']:>8.0f}%{u['tus_client_cpu_pct']:>8.0f}%"
          f"{other(u['tus_other_cpu_pct']):>8}")
    print("   per round, s: " + "; ".join(
        f"disk {r['disk_fsync_s']:.2f} multipart {r['multipart_s']:.2f} tus {r['tus_s']:.2f}"
        for r in u["rounds"]))
    print(f"   server memory (RSS {u['rss_before_mb']:.0f} MB at the first upload): peak growth "
          f"during one upload, worst round: multipart +{u['multipart_rss_growth_mb']:.1f} MB, "
          f"tus +{u['tus_rss_growth_mb']:.1f} MB")
    print(f"   (VmRSS sampled every 10 ms); VmHWM growth during one upload: multipart "
          f"+{u['multipart_hwm_growth_mb']:.1f} MB, tus +{u['tus_hwm_growth_mb']:.1f} MB "
          f"(VmHWM {u['hwm_first_mb']:.0f} -> {u['hwm_last_mb']:.0f} MB")
    print("   over the whole part, including the failing jobs on the random bytes, which load "
          "PyAV and Pillow).")
    print("   Both paths fsync before they answer (multipart before its 201, tus when the upload "
          "is complete).")
    print(f"   The client runs on the same {ENV_INFO['cpus']} cores.")
    print()
    rows.append(("multipart upload vs disk write+fsync", f"{u['multipart_mb_s']:.0f} MB/s",
                 f"{u['disk_fsync_mb_s']:.0f} MB/s",
                 f"{u['multipart_mb_s'] / u['disk_fsync_mb_s']:.2f}x", "(info)"))
    rows.append(("multipart upload vs disk write (page cache)",
                 f"{u['multipart_mb_s']:.0f} MB/s", f"{u['disk_nofsync_mb_s']:.0f} MB/s",
                 f"{u['multipart_mb_s'] / u['disk_nofsync_mb_s']:.2f}x", "(info)"))
    rows.append(("tus upload (tuspy, 8 MiB) vs disk write+fsync", f"{u['tus_mb_s']:.0f} MB/s",
                 f"{u['disk_fsync_mb_s']:.0f} MB/s",
                 f"{u['tus_mb_s'] / u['disk_fsync_mb_s']:.2f}x", "(info)"))
    growth = max(u["multipart_rss_growth_mb"], u["tus_rss_growth_mb"],
                 u["multipart_hwm_growth_mb"], u["tus_hwm_growth_mb"])
    rows.append(("server memory growth during an upload", f"+{growth:.1f} MB", "", "",
                 f"< {AIM_RSS_GROWTH_MB:.0f} MB {ok(growth < AIM_RSS_GROWTH_MB)}"))

if "transcode" in RESULTS:
    t = RESULTS["transcode"]
    print(f"2. Transcoding a {t['source']['seconds']:g} s 1080p30 source "
          f"({t['source']['bytes'] / 1e6:.0f} MB) into "
          + ", ".join(f"{r['name']} {r['video_bitrate'] // 1000}k" for r in t["rungs"])
          + ", x264 veryfast, AAC 128k")
    frames = t["source"]["seconds"] * 30
    print(f"   {'':<16}{'median s':>9}{'CPU s':>7}{'fps':>7}   every run in order (s, other CPU);"
          " runs alternate ours/ffmpeg")
    for name, key in (("ours (PyAV)", "ours"), ("ffmpeg CLI", "ffmpeg")):
        runs = t[f"{key}_runs"]
        print(f"   {name:<16}{t[f'{key}_s_median']:>9.2f}{t[f'{key}_cpu_s_median']:>7.1f}"
              f"{frames / t[f'{key}_s_median']:>7.1f}   "
              + ", ".join(f"{r['s']:.2f} ({other(r['other_cpu_pct'])})" for r in runs))
    print(f"   speed ratio ffmpeg_time / our_time = {t['speed_ratio']:.3f}   aim >= "
          f"{AIM_SPEED_RATIO}  {ok(t['speed_ratio'] >= AIM_SPEED_RATIO)};   CPU ratio "
          f"ffmpeg_cpu / our_cpu = {t['cpu_ratio']:.3f} (steadier on a busy machine)")
    print(f"   {'output':<8}{'size':>11}{'ours MB':>9}{'ffmpeg MB':>11}   x264 core ours / ffmpeg;"
          " threads ours / ffmpeg; keyint/min ours / ffmpeg")
    for r in t["rungs"]:
        o, f = t["ours_outputs"][r["name"]], t["ffmpeg_outputs"][r["name"]]
        print(f"   {r['name']:<8}{o['size']:>11}{o['bytes'] / 1e6:>9.2f}{f['bytes'] / 1e6:>11.2f}"
              f"   {o['core']} / {f['core']}; "
              f"{x264_threads(o['options'])} / {x264_threads(f['options'])}; keyint "
              f"{x264_opt(o['options'], 'keyint')}/{x264_opt(o['options'], 'keyint_min')} / "
              f"{x264_opt(f['options'], 'keyint')}/{x264_opt(f['options'], 'keyint_min')}")
    print(f"   NOTE: the ffmpeg CLI is Debian's FFmpeg "
          f"{ENV_INFO['ffmpeg_cli'].split()[2]} with the system libx264, while PyAV bundles "
          f"FFmpeg {ENV_INFO['pyav_ffmpeg']}")
    print("   with its own libx264 build: the encoder versions (above) differ as well as the "
          "pipelines. ffmpeg also")
    print("   encodes the AAC track once per output, ours once for all three. Ours forces an "
          "IDR every 2 s (x264's own keyint")
    print("   is set beyond it); x264 clamps ffmpeg's min-keyint to keyint/2+1. Both run x264 "
          "with frame threads")
    print("   (ours sets thread_type FRAME: PyAV's default, slices, cost ~10% here).")
    print()
    rows.append(("transcode ladder, time", f"{t['ours_s_median']:.2f} s",
                 f"{t['ffmpeg_s_median']:.2f} s", f"{t['speed_ratio']:.3f}",
                 f">= {AIM_SPEED_RATIO} {ok(t['speed_ratio'] >= AIM_SPEED_RATIO)}"))
    rows.append(("transcode ladder, CPU seconds", f"{t['ours_cpu_s_median']:.1f} s",
                 f"{t['ffmpeg_cpu_s_median']:.1f} s", f"{t['cpu_ratio']:.3f}", "(info)"))

if "playable" in RESULTS:
    p = RESULTS["playable"]
    print(f"3. Upload to playable: {p['minutes']}-minute 640x360 25 fps H.264/AAC faststart MP4 "
          f"({p['bytes'] / 1e6:.0f} MB),")
    print(f"   processing {json.dumps(p['processing'])}, shipped [processing] settings, "
          "jobs in-process")
    g = p["generated"]
    if g:
        made = []
        if "chunk_encode_s" in g:
            made.append(f"60 s chunk encoded in {g['chunk_encode_s']:.1f} s (an hour would take"
                        f" ~{g['chunk_encode_s'] * 60:.0f} s)")
        if "concat_s" in g:
            made.append(f"{p['minutes']} copies concatenated in {g['concat_s']:.1f} s")
        print(f"   (file made this run: {'; '.join(made)})")
    print(f"   (a) upload (multipart)                       {p['upload_s']:8.2f} s   "
          f"{mb_s(p['bytes'], p['upload_s']):.0f} MB/s")
    print(f"   (b) 201 -> master.m3u8 200                   {p['master_s']:8.3f} s   "
          f"{p['master_polls']} polls")
    print(f"       201 -> v0/seg-1.m4s 200                  {p['seg1_s']:8.3f} s   "
          f"{p['seg1_polls']} poll(s), {p['seg1_bytes'] / 1e3:.0f} kB   aim < "
          f"{AIM_PLAYABLE_S:g} s  {ok(p['seg1_s'] < AIM_PLAYABLE_S)}")
    print(f"       (server CPU {p['playable_window_server_cpu_pct']:.0f}%, other "
          f"{other(p['playable_window_other_cpu_pct'])} in that window)")
    print(f"   (c) start of upload -> first segment         {p['total_to_playable_s']:8.2f} s")
    print(f"   job completed, after the 201                 {p['job_completed_s']:8.2f} s   "
          f"versions {', '.join(p['versions'])}; server CPU {p['job_server_cpu_pct']:.0f}%, "
          f"other {other(p['job_other_cpu_pct'])}")
    print(f"   peer: ffmpeg pre-packaging to HLS fMP4       {p['ffmpeg_prepackage_s']:8.2f} s   "
          f"stream copy, {p['ffmpeg_segments']} segments; runs "
          + ", ".join(f"{x:.2f}" for x in p["ffmpeg_prepackage_all_s"])
          + f"; other {other(p['ffmpeg_prepackage_other_cpu_pct'])}")
    print("   master polls (sent -> answered: status, s after the 201): " + ", ".join(
        f"{a:.3f}->{b:.3f}:{c}" for a, b, c in p["master_poll_log"]))
    print("   job history (s after the 201 response; the server's timestamps have ms "
          "resolution):")
    for h in p["history"]:
        details = {k: v for k, v in h["details"].items() if k in (
            "rungs", "passthrough", "reason", "kind", "assets", "generation")}
        print(f"     {h['t_s']:+8.3f}  {h['action']:<22}{json.dumps(details) if details else ''}")
    print()
    rows.append(("upload response -> first segment (b)", f"{p['seg1_s']:.3f} s",
                 f"{p['ffmpeg_prepackage_s']:.3f} s",
                 f"{p['ffmpeg_prepackage_s'] / p['seg1_s']:.2f}x",
                 f"< {AIM_PLAYABLE_S:g} s {ok(p['seg1_s'] < AIM_PLAYABLE_S)}"))
    rows.append(("upload start -> first segment (c)", f"{p['total_to_playable_s']:.2f} s",
                 f"{p['upload_s'] + p['ffmpeg_prepackage_s']:.2f} s",
                 f"{(p['upload_s'] + p['ffmpeg_prepackage_s']) / p['total_to_playable_s']:.2f}x",
                 "(info)"))
    rows.append(("upload response -> job completed", f"{p['job_completed_s']:.1f} s", "", "",
                 "(info)"))

print("4. Summary. Peers: disk write; ffmpeg CLI ladder; ffmpeg pre-packaging (for (c): our "
      "upload time + it).")
print("   ratio > 1: ours is better (throughput ours/peer, time peer/ours)")
print(f"   {'figure':<46}{'ours':>11}{'peer':>11}{'ratio':>8}   aim")
for label, ours, peer, ratio, aim in rows:
    print(f"   {label:<46}{ours:>11}{peer:>11}{ratio:>8}   {aim}")
RESULTS["summary"] = [dict(zip(("figure", "ours", "peer", "ratio", "aim"), r, strict=True))
                      for r in rows]
if OTHERS and statistics.median(OTHERS) > NOISY_PCT:
    print(f"   WARNING: other workloads used a median {statistics.median(OTHERS):.0f}% of a core "
          "during the measurements: the figures are noisy, compare with care.")
print()
CACHE.mkdir(parents=True, exist_ok=True)
(CACHE / "library-results-latest.json").write_text(json.dumps(RESULTS, indent=2, default=str)
                                                    + "\n")
print(f"figures as JSON: {CACHE / 'library-results-latest.json'}   "
      f"(total run time {time.perf_counter() - T_START:.0f} s)")
