"""Processing jobs across processes and restarts: `mediaorigin worker` processes on Redis,
a worker killed mid-transcode, Redis down at submit, an origin stopped mid-job, and the bulk
`mediaorigin import`.

Real processes where the product runs them as processes (worker, import), a private
redis-server (redis_url fixture), SQLite files under tmp_path. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import media
import pytest
from library_fixtures import ADMIN_KEY, auth, library_config
from origin_server import OriginThread, Reply
from redis_server import RedisServer

from mediaorigin.config import Config
from mediaorigin.jobs.inprocess import InProcessQueue
from mediaorigin.library import runtime as library_runtime
from mediaorigin.library.db import open_database
from mediaorigin.library.repository import Library, MediaQuery
from mediaorigin.library.service import processing_defaults

CLI = [sys.executable, "-m", "mediaorigin.cli"]
POLL = 0.2
QUALITIES = ["360p", "240p"]
T = TypeVar("T")


# -- helpers ------------------------------------------------------------------------------------

def wait_for(fetch: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str) -> T:
    """Poll `fetch` until `ok` holds; fail with the last value seen when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last: {value!r}")
        time.sleep(POLL)


def upload(origin: OriginThread, path: Path, processing: dict[str, Any] | None = None
           ) -> Reply:
    """POST /api/media/upload as multipart/form-data (file + processing JSON)."""
    boundary = secrets.token_hex(16)
    body = bytearray()
    if processing is not None:
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="processing"\r\n'
                 f"Content-Type: application/json\r\n\r\n{json.dumps(processing)}\r\n").encode()
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
             f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
             ).encode()
    body += path.read_bytes()
    body += f"\r\n--{boundary}--\r\n".encode()
    host, port = origin.base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/api/media/upload", body=bytes(body), headers={
            **auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def api(origin: OriginThread, path: str) -> dict[str, Any]:
    reply = origin.get(f"/api{path}", auth())
    assert reply.status == 200, (path, reply.status, reply.body[:500])
    return reply.json()


def status(origin: OriginThread, media_id: str) -> dict[str, Any]:
    return api(origin, f"/media/{media_id}/status")


def worker_env(config: Config, **extra: str) -> dict[str, str]:
    """Environment for a `mediaorigin` subprocess that shares `config`'s library, storage,
    queue and processing settings (absolute paths: the subprocess runs elsewhere)."""
    env = dict(os.environ)
    env.update({
        "MEDIAORIGIN_LIBRARY_URL": f"sqlite:///{config.base_dir / 'var/library.sqlite3'}",
        "MEDIAORIGIN_STORAGE_ROOT": str(config.path(config.storage.root)),
        "MEDIAORIGIN_STORAGE_CACHE_DIR": str(config.path(config.storage.cache_dir)),
        "MEDIAORIGIN_LIBRARY_UPLOADS_DIR": str(config.path(config.library.uploads_dir)),
        "MEDIAORIGIN_AUTH_ADMIN_KEY": ADMIN_KEY,
        "MEDIAORIGIN_DEMO_ENABLED": "false",
        "MEDIAORIGIN_JOBS_BACKEND": config.jobs.backend,
        "MEDIAORIGIN_JOBS_RUN_IN_SERVER": str(config.jobs.run_in_server).lower(),
        "MEDIAORIGIN_JOBS_CLAIM_IDLE_SECONDS": str(config.jobs.claim_idle_seconds),
        "MEDIAORIGIN_REDIS_URL": config.redis.url,
        "MEDIAORIGIN_PROCESSING_PRESET": config.processing.preset,
        "MEDIAORIGIN_PROCESSING_SPRITE_INTERVAL": str(config.processing.sprite_interval),
        "MEDIAORIGIN_PROCESSING_PREVIEW_SECONDS": str(config.processing.preview_seconds),
        "MEDIAORIGIN_PROCESSING_THUMBNAILS": str(config.processing.thumbnails),
        **extra,
    })
    return env


class Processes:
    """Subprocesses of one test, each in its own session; whatever is left is killed."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([*CLI, *args], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((proc, log))
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        path = next(p for q, p in self.procs if q is proc)
        return path.read_text(errors="replace")[-4000:]

    def kill_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.kill_all()


def redis_config(root: Path, redis_url: str, **jobs: object) -> Config:
    return library_config(root, jobs={"backend": "redis", "run_in_server": False,
                                      "claim_idle_seconds": 3, **jobs},
                          redis={"url": redis_url})


def history(media_json: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [h for h in media_json["processing"]["history"] if h["action"] == action]


def duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True,
                         timeout=30, check=True)
    return float(out.stdout.strip())


def assert_renditions(config: Config, media_json: dict[str, Any], seconds: float,
                      qualities: list[str] = QUALITIES) -> None:
    """The transcoded rungs are there, whole, and nothing half-written is left."""
    folder = config.path(config.storage.root) / "media" / media_json["id"] / "g1"
    versions = media_json["storage"]["versions"]
    assert sorted(v["quality"] for v in versions) == sorted(qualities), versions
    for version in versions:
        got = duration(folder.parent / version["url"].split("/assets/", 1)[1])
        assert abs(got - seconds) < 1.0, (version["quality"], got)
    leftovers = [p.name for p in folder.rglob("*") if ".partial" in p.name]
    assert leftovers == [], leftovers


@pytest.fixture(scope="session")
def long_mkv(upload_dir: Path) -> Path:
    """40 s of MPEG-4 Part 2 + MP3 (640x360): transcoding takes several seconds."""
    out = upload_dir / "long-lecture.mkv"
    if not out.exists():
        media.run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=40",
                          "-f", "lavfi", "-i", "sine=frequency=330:duration=40", "-ac", "2",
                          "-c:v", "mpeg4", "-q:v", "5", "-c:a", "libmp3lame", str(out)])
    return out


# -- 1. workers on other processes ----------------------------------------------------------

def test_redis_job_waits_for_a_worker_process(tmp_path: Path, redis_url: str, mpeg4_mkv: Path,
                                              processes: Processes) -> None:
    config = redis_config(tmp_path, redis_url)
    origin = OriginThread(config).start()
    try:
        reply = upload(origin, mpeg4_mkv, {"quality": QUALITIES})
        assert reply.status == 201, reply.body
        media_id = reply.json()["id"]
        # No worker: the job stays queued (the server does not run jobs).
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            state = status(origin, media_id)
            assert (state["status"], state["jobStatus"]) == ("processing", "queued"), state
            time.sleep(POLL)
        worker = processes.start("worker", ["worker"], worker_env(config))
        state = wait_for(lambda: status(origin, media_id),
                         lambda s: s["jobStatus"] not in ("queued", "running")
                         or worker.poll() is not None, 60, "the worker to finish the job")
        assert worker.poll() is None, processes.log(worker)
        assert (state["status"], state["jobStatus"]) == ("ready", "completed"), state
        item = api(origin, f"/media/{media_id}")
        started = history(item, "job.started")
        assert len(started) == 1, item["processing"]["history"]
        assert f"-{worker.pid}" in started[0]["details"]["worker"], started
        assert api(origin, f"/jobs/{state['jobId']}")["attempts"] == 1
        assert_renditions(config, item, 6.0)
        # SIGTERM: the worker stops cleanly.
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0, processes.log(worker)
    finally:
        origin.stop()


# -- 2. a killed worker loses no job ----------------------------------------------------------

def test_killed_worker_job_is_reclaimed_and_finished_once(
        tmp_path: Path, redis_url: str, long_mkv: Path, processes: Processes) -> None:
    config = redis_config(tmp_path, redis_url)
    origin = OriginThread(config).start()
    try:
        a = processes.start("worker-a", ["worker"], worker_env(config))
        reply = upload(origin, long_mkv, {"quality": QUALITIES})
        assert reply.status == 201, reply.body
        media_id, job_id = reply.json()["id"], reply.json()["jobId"]
        wait_for(lambda: status(origin, media_id),
                 lambda s: s["stage"] == "transcoding" or a.poll() is not None, 60,
                 "worker A to be transcoding")
        assert a.poll() is None, processes.log(a)
        os.killpg(a.pid, signal.SIGKILL)
        a.wait(10)
        assert api(origin, f"/jobs/{job_id}")["status"] == "running"
        b = processes.start("worker-b", ["worker"], worker_env(config))
        state = wait_for(lambda: status(origin, media_id),
                         lambda s: s["jobStatus"] in ("completed", "failed", "cancelled")
                         or b.poll() is not None, 90, "worker B to reclaim and finish the job")
        assert b.poll() is None, processes.log(b)
        assert (state["status"], state["jobStatus"]) == ("ready", "completed"), \
            (state, processes.log(b))
        job = api(origin, f"/jobs/{job_id}")
        assert job["attempts"] == 2, job
        item = api(origin, f"/media/{media_id}")
        started = history(item, "job.started")
        assert [s["details"]["attempt"] for s in started] == [1, 2], started
        assert f"-{a.pid}" in started[0]["details"]["worker"]
        assert f"-{b.pid}" in started[1]["details"]["worker"]
        assert len(history(item, "job.completed")) == 1, item["processing"]["history"]
        assert_renditions(config, item, 40.0)
    finally:
        origin.stop()


def test_reclaim_before_the_dead_workers_heartbeat_is_stale(
        tmp_path: Path, redis_url: str, mpeg4_mkv: Path) -> None:
    """Redis measures idleness from the dead worker's last queue heartbeat, the library from
    its last job heartbeat (a different clock, every 2 s): a reclaim can come while the job
    still looks alive, and `start_job` refuses it. The job must still run to the end."""
    import redis.asyncio as aioredis

    config = redis_config(tmp_path, redis_url)
    source = tmp_path / "upload.mkv"

    async def scenario() -> tuple[str, int]:
        server = await library_runtime.start_library(config, consume=False)
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        worker = None
        try:
            source.write_bytes(mpeg4_mkv.read_bytes())
            processing = {**processing_defaults(config), "quality": QUALITIES}
            _, job = await server.service.ingest(source, "lecture.mkv", {}, processing, None)
            # A worker takes the message and the job, heartbeats once more, and dies.
            await client.xgroup_create("mediaorigin:jobs", "workers", id="0", mkstream=True)
            got = await client.xreadgroup("workers", "dead", {"mediaorigin:jobs": ">"}, count=1)
            assert got, "the job was not in the stream"
            assert await server.library.start_job(job.id, "dead", 3) is not None
            await asyncio.sleep(1.5)
            await server.library.heartbeat(job.id, "dead")
            await asyncio.sleep(1.7)  # Redis: idle 3.2 s (reclaimable); library: 1.7 s
            worker = await library_runtime.start_library(config, consume=True)
            deadline = time.monotonic() + 40
            while True:
                current = await server.library.get_job(job.id)
                assert current is not None
                if current.finished or time.monotonic() > deadline:
                    return current.status, current.attempts
                await asyncio.sleep(POLL)
        finally:
            if worker is not None:
                await worker.stop()
            await client.aclose()
            await server.stop()

    assert asyncio.run(scenario()) == ("completed", 2)


# -- 3. Redis down when the upload comes in ---------------------------------------------------

def test_job_refused_by_redis_is_requeued_by_the_sweeper(
        tmp_path: Path, redis_url: str, redis_server: RedisServer, mpeg4_mkv: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = redis_config(tmp_path, redis_url)
    origin = OriginThread(config).start()
    try:
        redis_server.stop()
        reply = upload(origin, mpeg4_mkv, {"quality": QUALITIES})
        assert reply.status == 201, reply.body
        media_id, job_id = reply.json()["id"], reply.json()["jobId"]
        state = status(origin, media_id)
        assert (state["status"], state["jobStatus"]) == ("processing", "queued"), state
        redis_server.start()
        # The sweeper resubmits queued jobs older than REQUEUE_AFTER (300 s for Redis).
        monkeypatch.setitem(library_runtime.REQUEUE_AFTER, "redis", 0.5)

        async def work() -> str:
            runtime = await library_runtime.start_library(config, consume=True)
            try:
                deadline = time.monotonic() + 60
                while True:
                    job = await runtime.library.get_job(job_id)
                    assert job is not None
                    if job.finished or time.monotonic() > deadline:
                        return job.status
                    await asyncio.sleep(POLL)
            finally:
                await runtime.stop()

        assert asyncio.run(work()) == "completed"
        state = status(origin, media_id)
        assert (state["status"], state["jobStatus"]) == ("ready", "completed"), state
        item = api(origin, f"/media/{media_id}")
        assert len(history(item, "job.started")) == 1
        assert_renditions(config, item, 6.0)
    finally:
        origin.stop()
        if not redis_server.running:
            redis_server.start()


# -- 4. in-process: the origin stops mid-job --------------------------------------------------

def test_inprocess_job_resumes_after_restart(tmp_path: Path, long_mkv: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # A short stop grace, as when the process is stopped for good (the default waits 10 s
    # for the running job, which a real shutdown may not have).
    stop = InProcessQueue.stop

    async def quick_stop(self: InProcessQueue, grace: float = 10.0) -> None:
        await stop(self, min(grace, 0.2))

    monkeypatch.setattr(InProcessQueue, "stop", quick_stop)
    config = library_config(tmp_path, jobs={"claim_idle_seconds": 3})
    origin = OriginThread(config).start()
    try:
        reply = upload(origin, long_mkv, {"quality": ["240p"]})
        assert reply.status == 201, reply.body
        media_id, job_id = reply.json()["id"], reply.json()["jobId"]
        wait_for(lambda: status(origin, media_id), lambda s: s["stage"] == "transcoding"
                 or s["jobStatus"] not in ("queued", "running"), 60, "the job to transcode")
    finally:
        origin.stop()
    assert origin._thread is not None and not origin._thread.is_alive(), "origin did not stop"
    _, jobs = asyncio.run(_library_state(config))
    assert [(j.id, j.status, j.attempts) for j in jobs] == [(job_id, "running", 1)]
    origin = OriginThread(config).start()
    try:
        state = wait_for(lambda: status(origin, media_id),
                         lambda s: s["jobStatus"] in ("completed", "failed", "cancelled"),
                         90, "the restarted origin to finish the job")
        assert (state["status"], state["jobStatus"]) == ("ready", "completed"), state
        item = api(origin, f"/media/{media_id}")
        assert [h["details"]["attempt"] for h in history(item, "job.started")] == [1, 2]
        assert len(history(item, "job.completed")) == 1
        assert api(origin, f"/jobs/{job_id}")["attempts"] == 2
        assert_renditions(config, item, 40.0, ["240p"])
    finally:
        origin.stop()


# -- 5. bulk import ------------------------------------------------------------------------

async def _library_state(config: Config) -> tuple[list[Any], list[Any]]:
    engine = await open_database(config.library.url, config.base_dir)
    library = Library(engine)
    try:
        items, _ = await library.list_media(MediaQuery(limit=100))
        return items, await library.jobs()
    finally:
        await library.close()


def test_bulk_import_folder(tmp_path: Path, compliant_mp4: Path, mpeg4_mkv: Path,
                            redis_url: str) -> None:
    folder = tmp_path / "archive"
    (folder / "week2").mkdir(parents=True)
    os.link(compliant_mp4, folder / "intro.mp4")
    os.link(compliant_mp4, folder / "week2" / "recap.mp4")
    os.link(mpeg4_mkv, folder / "week2" / "lecture.mkv")
    os.link(compliant_mp4, folder / ".hidden.mp4")
    (folder / "notes.txt").write_text("not a lecture\n")
    config = library_config(tmp_path)
    env = worker_env(config, MEDIAORIGIN_JOBS_BACKEND="inprocess",
                     MEDIAORIGIN_REDIS_URL=redis_url)
    done = subprocess.run([*CLI, "import", str(folder)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    queued = [line for line in lines if line.startswith("queued ")]
    assert sorted(line.split()[1] for line in queued) == sorted(
        str(folder / name) for name in ("intro.mp4", "notes.txt", "week2/recap.mp4",
                                        "week2/lecture.mkv")), done.stdout
    assert any("done" in line and line.startswith("[") for line in lines), done.stdout
    final = [line.split() for line in lines if line.split()[:1] in
             (["completed"], ["failed"], ["cancelled"], ["deleted"])]
    assert len(final) == 4, done.stdout
    completed = sorted(f[2] for f in final if f[0] == "completed")
    assert completed == sorted(str(folder / n) for n in ("intro.mp4", "week2/recap.mp4",
                                                         "week2/lecture.mkv")), done.stdout
    failed = [line for line in lines if line.startswith("failed ")]
    assert len(failed) == 1 and str(folder / "notes.txt") in failed[0], done.stdout
    assert failed[0].rstrip().endswith(")") and " (" in failed[0], failed
    assert "Traceback" not in done.stderr, done.stderr

    items, jobs = asyncio.run(_library_state(config))
    by_title = {m.title: m for m in items}
    assert sorted(by_title) == ["intro", "lecture", "notes", "recap"], sorted(by_title)
    for title in ("intro", "recap", "lecture"):
        assert by_title[title].status == "ready", by_title[title]
    assert by_title["notes"].status == "failed"
    assert sorted(j.status for j in jobs) == ["completed"] * 3 + ["failed"]

    # --no-wait with Redis: queue the jobs and return; nobody processes them here.
    other = tmp_path / "queued"
    other_config = library_config(other)
    env = worker_env(other_config, MEDIAORIGIN_JOBS_BACKEND="redis",
                     MEDIAORIGIN_REDIS_URL=redis_url)
    started = time.monotonic()
    quick = subprocess.run([*CLI, "import", "--no-wait", str(folder / "week2")], env=env,
                           capture_output=True, text=True, timeout=60)
    assert quick.returncode == 0, (quick.stdout, quick.stderr)
    assert time.monotonic() - started < 20
    assert len([line for line in quick.stdout.splitlines() if line.startswith("queued ")]) == 2
    assert "done" not in quick.stdout, quick.stdout
    items, jobs = asyncio.run(_library_state(other_config))
    assert sorted(m.status for m in items) == ["processing", "processing"]
    assert [j.status for j in jobs] == ["queued", "queued"]
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        assert client.xlen("mediaorigin:jobs") == 2
    finally:
        client.close()
