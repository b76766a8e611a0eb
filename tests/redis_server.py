"""A private redis-server for tests: never the machine's Redis on 6379.

Started on a free loopback port with persistence off, so a restart (stop() then start())
comes back empty on the same port, like a production Redis without persistence.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 10.0


class RedisServerError(RuntimeError):
    """redis-server is missing or did not come up."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server subprocess; `url` stays valid across stop()/start()."""

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RedisServerError(
                "redis-server is not installed (not on PATH); "
                "install it (e.g. apt-get install redis-server) to run the Redis tests"
            )
        self.executable = executable
        self.port = port or _free_port()
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-")) if directory is None else directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        """Start (or restart, on the same port) and wait until PING answers."""
        if self.running:
            raise RedisServerError(f"redis-server already running on port {self.port}")
        log = self.dir / "redis.log"
        self._proc = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RedisServerError(
                    f"redis-server exited with {self._proc.returncode} on port {self.port}:\n{tail}"
                )
            try:
                if self.command("PING") == b"+PONG":
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RedisServerError(
                    f"redis-server on port {self.port} did not answer PING "
                    f"within {START_TIMEOUT:.0f} s"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM); nothing is saved."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL, as if the host died."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc = None

    def close(self) -> None:
        """Stop and remove the data directory if we made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, *args: str) -> bytes:
        """Send one command and return the first reply line: enough for PING and FLUSHALL
        without a client library (the fixtures stay usable from sync code)."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(request.encode())
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.rstrip(b"\r\n")
