"""Redis fixtures (a pytest plugin: list "redis_fixtures" in conftest.py's pytest_plugins).

One private redis-server per session; `redis_url` empties it before each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from redis_server import RedisServer, RedisServerError


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Skips when redis-server is missing, except under CI where that is a broken setup."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except RedisServerError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's server, emptied first (and restarted if a test left it down)."""
    if not redis_server.running:
        redis_server.start()
    reply = redis_server.command("FLUSHALL")
    assert reply == b"+OK", reply
    return redis_server.url
