"""Library fixtures (a pytest plugin listed in conftest.py): an origin with the API enabled,
API keys, a PostgreSQL database per session when a server is reachable, and upload media.

PostgreSQL: `MEDIAORIGIN_TEST_POSTGRES` (default postgresql://postgres@127.0.0.1:5432/postgres)
names a server where the tests may create and drop their own database. When none answers,
PostgreSQL tests are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import media
import pytest
from origin_server import OriginThread, make_config

ADMIN_KEY = "test-admin-key-0123456789"
INSTRUCTOR_KEY = "test-instructor-key-org-a-0001"
STUDENT_KEY = "test-student-key-org-a-000001"
OTHER_ORG_KEY = "test-instructor-key-org-b-0001"
API_KEYS = (f"{INSTRUCTOR_KEY}:instructor:org-a,{STUDENT_KEY}:student:org-a,"
            f"{OTHER_ORG_KEY}:instructor:org-b")
POSTGRES_ADMIN = os.environ.get("MEDIAORIGIN_TEST_POSTGRES",
                                "postgresql://postgres@127.0.0.1:5432/postgres")


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def library_config(root: Path, **sections: dict[str, object]):  # type: ignore[no-untyped-def]
    """A config for an origin with the library: keys above, fast processing settings."""
    merged: dict[str, dict[str, object]] = {
        "auth": {"admin_key": ADMIN_KEY, "api_keys": API_KEYS},
        "processing": {"sprite_interval": 2.0, "preview_seconds": 2.0, "thumbnails": 3,
                       "preset": "ultrafast"},
    }
    for section, values in sections.items():
        merged.setdefault(section, {}).update(values)
    return make_config(root, **merged)


@pytest.fixture
def library_origin(tmp_path: Path) -> Iterator[OriginThread]:
    """A fresh origin + library (SQLite) per test."""
    origin = OriginThread(library_config(tmp_path)).start()
    yield origin
    origin.stop()


# -- PostgreSQL -------------------------------------------------------------------------------

async def _pg_admin(sql: str) -> None:
    import asyncpg

    url = POSTGRES_ADMIN.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncio.wait_for(asyncpg.connect(url), 5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of our own on the PostgreSQL server, dropped at the end of the session."""
    name = f"mediaorigin_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_pg_admin(f"CREATE DATABASE {name}"))
    except (TimeoutError, OSError, ImportError) as e:
        pytest.skip(f"no PostgreSQL server at {POSTGRES_ADMIN} ({type(e).__name__}: {e})")
    except Exception as e:  # asyncpg errors: auth, permissions
        pytest.skip(f"cannot create a database on {POSTGRES_ADMIN}: {e}")
    base = POSTGRES_ADMIN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


# -- upload media -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def upload_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="session")
def compliant_mp4(upload_dir: Path) -> Path:
    """H.264/AAC MP4, keyframes every 2 s, faststart: qualifies for passthrough (640x360)."""
    out = upload_dir / "compliant.mp4"
    if not out.exists():
        media.run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=6",
                          "-f", "lavfi", "-i", "sine=frequency=440:duration=6", "-ac", "2",
                          "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
                          "-keyint_min", "50", "-sc_threshold", "0", "-c:a", "aac",
                          "-movflags", "+faststart", str(out)])
    return out


@pytest.fixture(scope="session")
def mpeg4_mkv(upload_dir: Path) -> Path:
    """MPEG-4 Part 2 + MP3 in Matroska: must be transcoded (640x360, 25 fps, 6 s)."""
    out = upload_dir / "lecture.mkv"
    if not out.exists():
        media.run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=6",
                          "-f", "lavfi", "-i", "sine=frequency=330:duration=6", "-ac", "2",
                          "-c:v", "mpeg4", "-q:v", "5", "-c:a", "libmp3lame", str(out)])
    return out


@pytest.fixture(scope="session")
def podcast_mp3(upload_dir: Path) -> Path:
    out = upload_dir / "podcast.mp3"
    if not out.exists():
        media.run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=500:duration=5", "-ac", "2",
                          "-c:a", "libmp3lame", "-b:a", "128k", str(out)])
    return out


@pytest.fixture(scope="session")
def slide_png(upload_dir: Path) -> Path:
    from PIL import Image

    out = upload_dir / "slide.png"
    if not out.exists():
        Image.new("RGB", (1600, 900), (30, 90, 160)).save(out)
    return out


@pytest.fixture(scope="session")
def handout_pdf(upload_dir: Path) -> Path:
    from PIL import Image

    out = upload_dir / "handout.pdf"
    if not out.exists():
        pages = [Image.new("RGB", (595, 842), c) for c in ("white", "yellow", "gray")]
        pages[0].save(out, save_all=True, append_images=pages[1:])
    return out
