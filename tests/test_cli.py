"""The command line and config as a user meets them: real processes, real files."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from origin_server import request

from mediaorigin.config import Config, ConfigError

CLI = [sys.executable, "-m", "mediaorigin.cli"]


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "MEDIAORIGIN_STORAGE_ROOT": str(root / "media"),
        "MEDIAORIGIN_STORAGE_CACHE_DIR": str(root / "cache"),
        "MEDIAORIGIN_LIBRARY_URL": f"sqlite:///{root / 'library.sqlite3'}",
        "MEDIAORIGIN_LIBRARY_UPLOADS_DIR": str(root / "uploads"),
        "MEDIAORIGIN_AUTH_ADMIN_KEY_FILE": str(root / "admin-key"),
        "MEDIAORIGIN_DEMO_ENABLED": "false",
        "MEDIAORIGIN_ANALYTICS_ENABLED": "false",  # never the machine's Redis
        **extra,
    })
    return env


def test_env_overrides_and_config_errors(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[server]\nport = 9000\n[packaging]\ntarget_duration = 6.0\n')
    config = Config.load(toml, env={"MEDIAORIGIN_SERVER_PORT": "8099",
                                    "MEDIAORIGIN_SERVER_LOOP": "uvloop"})
    assert (config.server.port, config.server.loop) == (8099, "uvloop")
    assert config.packaging.target_duration == 6.0
    assert config.path("var/x") == tmp_path / "var/x"
    with pytest.raises(ConfigError, match="MEDIAORIGIN_SERVER_PROT"):
        Config.load(None, env={"MEDIAORIGIN_SERVER_PROT": "1"})
    with pytest.raises(ConfigError, match="server.port"):
        Config.load(None, env={"MEDIAORIGIN_SERVER_PORT": "eighty"})
    toml.write_text("[nope]\nx = 1\n")
    with pytest.raises(ConfigError, match="nope"):
        Config.load(toml, env={})


def test_import_command(tmp_path: Path, multi_audio: Path, media_dir: Path) -> None:
    import media

    vtt = media.captions_vtt(media_dir)
    done = subprocess.run([*CLI, "import", "--ladder", str(multi_audio), "--title", "Week 1",
                           "--captions", f"en={vtt}"], env=env_for(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    media_id = done.stdout.strip()
    stored = sorted(p.name for p in (tmp_path / "media/media" / media_id / "g1").iterdir())
    assert stored == ["0.mp4", "captions-0.vtt"]
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    failed = subprocess.run([*CLI, "import", "--ladder", str(bad)], env=env_for(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1
    assert "notes.mp4" in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "media/media").joinpath("x").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(tmp_path: Path, env: dict[str, str],
            start_timeout: float = 90.0) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`mediaorigin serve` with `env`: yields (base URL, process) once /healthz answers, then
    stops it with SIGTERM and checks that every worker exited cleanly."""
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CLI, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{env['MEDIAORIGIN_SERVER_PORT']}"
    try:
        deadline = time.monotonic() + start_timeout
        while not _answers(base + "/healthz"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "origin did not start"
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, log.read_text()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_serve_with_workers_and_demo(tmp_path: Path, loop: str) -> None:
    """`mediaorigin serve` with two workers on one port generates the demo lecture once,
    answers /healthz, lists the demo on / and serves it; SIGTERM stops every worker."""
    port = free_port()
    env = env_for(tmp_path, MEDIAORIGIN_SERVER_PORT=str(port), MEDIAORIGIN_SERVER_WORKERS="2",
                  MEDIAORIGIN_SERVER_LOOP=loop, MEDIAORIGIN_DEMO_ENABLED="true",
                  MEDIAORIGIN_DEMO_DURATION="4")
    with serving(tmp_path, env) as (base, proc):
        page = request(base + "/").body.decode()
        assert "Demo lecture" in page
        media_id = page.split('data-id="', 1)[1].split('"', 1)[0]
        # Enough requests that both workers take some; every one must succeed.
        for _ in range(20):
            assert request(f"{base}/vod/{media_id}/master.m3u8").status == 200
        assert request(f"{base}/vod/{media_id}/v0/seg-1.m4s").status == 200
        assert request(f"{base}/vod/{media_id}/s0/seg-1.vtt").status == 200
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                 text=True).stdout.split()
        assert len(workers) >= 2


def test_live_streams_are_served_by_every_worker(tmp_path: Path) -> None:
    """With two workers, live streams belong to the first (it ingests them); the second
    forwards /live and /api/live to it. New connections land on either worker (SO_REUSEPORT):
    every one is answered, some directly and some forwarded (`Via`), and the forwarded ones
    keep the real client address: a stream whose network rule refuses 127.0.0.0/8 is refused
    on both paths, even when the request names another peer in the forwarding header."""
    import json

    from mediaorigin.origin.live_proxy import PEER_HEADER

    port, rtmp_port = free_port(), free_port()
    env = env_for(tmp_path, MEDIAORIGIN_SERVER_PORT=str(port), MEDIAORIGIN_SERVER_WORKERS="2",
                  MEDIAORIGIN_INGEST_RTMP_PORT=str(rtmp_port), MEDIAORIGIN_AUTH_ADMIN_KEY="k" * 32)
    admin = {"Authorization": f"Bearer {'k' * 32}", "Content-Type": "application/json"}
    publishers: list[subprocess.Popen[bytes]] = []

    def stop_publishers() -> None:
        for publisher in publishers:
            publisher.terminate()
            publisher.wait(10)

    with serving(tmp_path, env, start_timeout=60) as (base, _), contextlib.ExitStack() as stop:
        stop.callback(stop_publishers)  # before the origin stops
        streams = []
        for access in (None, {"networks": {"deny": ["127.0.0.0/8"]}}):
            body = {"title": "Lecture", "latencyMode": "low", "record": False,
                    **({"access": access} if access else {})}
            reply = request(base + "/api/live", admin, "POST", json.dumps(body).encode())
            assert reply.status == 201, reply.body
            streams.append(reply.json())
        for stream in streams:
            rtmp = f"rtmp://127.0.0.1:{rtmp_port}/live/{stream['rtmp']['streamKey']}"
            publishers.append(subprocess.Popen(
                ["ffmpeg", "-nostdin", "-v", "error", "-re", "-f", "lavfi",
                 "-i", "testsrc2=size=320x240:rate=25", "-c:v", "libx264", "-preset",
                 "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-f", "flv", rtmp],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        open_url = base + streams[0]["playback"]["hls"]
        deadline = time.monotonic() + 20
        while request(open_url).status != 200:
            assert time.monotonic() < deadline, request(open_url).body
            time.sleep(0.2)
        via = []
        for _ in range(24):  # a new connection each: both workers take some
            reply = request(open_url)
            assert reply.status == 200 and b"#EXT-X-STREAM-INF" in reply.body, reply.body
            via.append("via" in reply.headers)
        assert any(via) and not all(via), via
        variant = next(line for line in reply.body.decode().splitlines()
                       if line and not line.startswith("#"))
        playlist_path = base + streams[0]["playback"]["hls"].rsplit("/", 1)[0] + "/" + variant
        playlist = request(playlist_path)
        assert playlist.status == 200 and b"#EXT-X-PART:" in playlist.body
        # Blocking reloads for the first part of the segment after the one being cut: held
        # until it exists (it is in no playlist yet), and answered on both paths
        msn = int(re.search(rb"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist.body)[1]) + \
            playlist.body.count(b"#EXTINF:") + 1
        assert f"{msn}.0.m4s".encode() not in playlist.body
        with ThreadPoolExecutor(8) as pool:
            held = list(pool.map(lambda _: request(f"{playlist_path}?_HLS_msn={msn}&_HLS_part=0"),
                                 range(8)))
        assert {r.status for r in held} == {200}, [r.body[:200] for r in held]
        assert all(f"{msn}.0.m4s".encode() in r.body for r in held)
        state = request(f"{base}/api/live/{streams[0]['id']}", admin)
        assert state.json()["state"] == "live"  # the owner's view, from either worker
        refused_url = base + streams[1]["playback"]["hls"]
        for _ in range(12):
            reply = request(refused_url, {PEER_HEADER: "10.9.9.9"})
            assert reply.status == 403, reply.body
            assert reply.json()["error"]["code"] == "ip_denied", reply.body
    assert not list((tmp_path / "cache").glob("live-*.sock"))  # removed at the end


def _answers(url: str) -> bool:
    try:
        return request(url).status == 200
    except OSError:
        return False
