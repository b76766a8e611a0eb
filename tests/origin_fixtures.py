"""Fixtures for tests that need a running origin (registered from conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from origin_server import OriginThread, make_config


@pytest.fixture(scope="session")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginThread]:
    """One origin for the session; tests import their own media into it."""
    root: Path = tmp_path_factory.mktemp("origin")
    server = OriginThread(make_config(root)).start()
    yield server
    server.stop()
