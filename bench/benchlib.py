"""Helpers every bench script shares: progress lines, machine facts, ports, percentiles,
HTTP fetches, CPU accounting and stopping the servers a script started."""

from __future__ import annotations

import http.client
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CACHE = BENCH / ".cache"  # git-ignored (".cache/" in the repo's .gitignore)
# The venv's console script, next to the interpreter running the bench (.venv/bin/python).
MEDIAORIGIN = Path(sys.executable).parent / "mediaorigin"


def say(msg: str) -> None:
    """Progress goes to stderr so stdout holds only the report."""
    print(f"[{time.perf_counter() - T_START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def first_line(cmd: list[str]) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    return ((p.stdout or "") + (p.stderr or "")).strip().splitlines()[0]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def free_port() -> int:
    """A free TCP port on 127.0.0.1: bind port 0 and let the kernel choose."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); with few samples p99 is the maximum."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[k]


def ms(seconds: float) -> float:
    return seconds * 1000.0


def get(conn: http.client.HTTPConnection, path: str) -> bytes:
    """One GET on a keep-alive connection; anything but 200 stops the bench."""
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {resp.status}: {body[:200]!r}")
    return body


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine (all cores), from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen | None) -> None:
    """Stop a server started by this script: SIGTERM to its own process group (the origin
    forwards it to its workers), SIGKILL if it does not exit within 10 s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def ok(good: bool) -> str:
    return "OK" if good else "MISS"


def process_tree(root: int) -> list[int]:
    """root and its descendants (an origin's spawned workers), from /proc."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of processes (all their threads), from /proc/PID/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def healthz(port: int) -> bool:
    """Does the origin on `port` answer /healthz?"""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        get(c, "/healthz")
        return True
    finally:
        c.close()


def launch(cmd: list[str], env: dict[str, str], log_path: Path,
           running: list[subprocess.Popen], ready: Callable[[], bool], *,
           cwd: Path | None = None, timeout: float = 60.0) -> subprocess.Popen:
    """Start a server in its own process group (added to `running`, which the script's final
    `finally` stops), its output in `log_path`; return once `ready()` is true. A server that
    exits or is not ready in `timeout` stops the bench with the tail of its log."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)
    running.append(proc)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n"
                               f"{log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready in {timeout:.0f} s:\n"
                               f"{log_path.read_text()[-2000:]}")
        try:
            if ready():
                return proc
        except (OSError, RuntimeError, http.client.HTTPException):
            pass
        time.sleep(0.02)


def mezzanine(seconds: float, ffmpeg: str) -> Path:
    """The lecture-like file the VOD benches share, encoded once per length into CACHE:
    1080p30 H.264 at ~5 Mb/s with a keyframe every 2 s (no scene-cut ones, so 4 s segments
    hold exactly two GOPs) and AAC 128k stereo, so 4 s video segments are ~2.5 MB."""
    CACHE.mkdir(parents=True, exist_ok=True)
    mezz = CACHE / f"mezz-1080p30-5M-{seconds:g}s.mp4"
    if not mezz.exists():
        say(f"encoding the {seconds:g} s 1080p30 mezzanine (cached in {CACHE}) ...")
        partial = CACHE / f"partial-{mezz.name}"
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
             "-f", "lavfi", "-i",
             "aevalsrc=0.2*sin(440*2*PI*t)|0.2*sin(660*2*PI*t):s=48000:c=stereo",
             "-t", f"{seconds:g}", "-map", "0:v", "-map", "1:a",
             "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
             "-b:v", "5M", "-maxrate", "5M", "-bufsize", "10M",
             "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
             "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(partial)],
            check=True)
        partial.replace(mezz)  # only a complete file ever gets the cache name
    say(f"mezzanine: {mezz.name} ({mezz.stat().st_size / 1e6:.1f} MB)")
    return mezz


def background_load() -> float:
    """How busy the machine is before a bench starts (% of one core, over 1 s), warning when
    it is: another workload on a 2-core box moves every figure."""
    m0, t0 = machine_cpu_seconds(), time.perf_counter()
    time.sleep(1.0)
    pct_busy = 100 * (machine_cpu_seconds() - m0) / (time.perf_counter() - t0)
    if pct_busy > 20:
        say(f"WARNING: the machine is already {pct_busy:.0f}% busy (% of one core) before the "
            "bench starts; figures will be noisy")
    return pct_busy


def import_ladder(mezz: Path, title: str, config_file: Path, env: dict[str, str],
                  cwd: Path | None = None) -> str:
    """Register `mezz` as one ready media item (`mediaorigin import --ladder`, no
    processing) and return its id."""
    out = subprocess.run([sys.executable, "-m", "mediaorigin.cli", "import", "--ladder",
                          str(mezz), "--title", title, "--config", str(config_file)],
                         env=env, capture_output=True, text=True, cwd=cwd)
    if out.returncode != 0:
        raise RuntimeError(f"mediaorigin import failed: {out.stderr[-2000:]}")
    media_id = out.stdout.strip().splitlines()[-1]
    say(f"imported the mezzanine as media id {media_id}")
    return media_id
