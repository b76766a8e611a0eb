"""Bringing existing files into the library without uploading them over HTTP.

`register_ladder`: files that already are renditions of one presentation (an H.264/AAC ladder,
extra audio languages, WebVTT captions) are published as they are, without processing.
`import_file`: any media file becomes a new media item and goes through the pipeline, as an
upload would (the bulk `mediaorigin import`).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..packaging.model import MediaError
from ..packaging.mp4.index import index_file
from ..packaging.webvtt import parse_webvtt
from ..storage.local import LocalStorage
from .records import Asset, Job, Media
from .repository import Library
from .service import MediaService

LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class ImportFailed(Exception):
    """A file that cannot become a media item; the message says why."""


def _check_ladder(files: Sequence[Path], captions: Sequence[tuple[str, Path]]) -> list[float]:
    durations = []
    if not files:
        raise ImportFailed("no files given")
    for path in files:
        if not path.is_file():
            raise ImportFailed(f"{path}: not a file")
        try:
            with open(path, "rb") as f:
                index = index_file(lambda off, n, f=f: os.pread(f.fileno(), n, off),
                                   os.fstat(f.fileno()).st_size)
        except MediaError as e:
            raise ImportFailed(f"{path}: {e}") from None
        if not index.tracks:
            raise ImportFailed(f"{path}: no audio or video track")
        durations.extend(t.duration / t.timescale for t in index.tracks)
    for language, path in captions:
        if not LANGUAGE.match(language):
            raise ImportFailed(
                f"captions language {language!r} is not a BCP 47 tag like en or pt-BR")
        try:
            parse_webvtt(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, MediaError) as e:
            raise ImportFailed(f"{path}: {e}") from None
    return durations


async def register_ladder(library: Library, storage: LocalStorage, files: Sequence[Path],
                          title: str | None, captions: Sequence[tuple[str, Path]] = ()) -> str:
    """Publish ready-made renditions (and captions) as one media item; returns its id."""
    durations = await asyncio.to_thread(_check_ladder, files, captions)
    kinds = "video" if any(_has_video(p) for p in files) else "audio"
    media_id = await library.create_media(title=title or files[0].stem, type=kinds,
                                          status="processing",
                                          settings={"passthrough": True})
    number = await library.add_generation(media_id, "", files[0].name,
                                          sum(p.stat().st_size for p in files))
    assets: list[Asset] = []
    for n, path in enumerate(files):
        key = f"media/{media_id}/g{number}/{n}{path.suffix.lower() or '.mp4'}"
        stat = await asyncio.to_thread(storage.put_file, key, path)
        assets.append(Asset("rendition", path.stem[:100], "mp4", key, stat.size, number,
                            position=n))
    for n, (language, path) in enumerate(captions):
        key = f"media/{media_id}/g{number}/captions-{n}.vtt"
        stat = await asyncio.to_thread(storage.put_file, key, path)
        assets.append(Asset("caption", language, "vtt", key, stat.size, number,
                            position=len(files) + n))
    await library.set_generation(media_id, number, source_key=assets[0].storage_key)
    await library.publish(media_id, number, assets, {"duration": max(durations, default=None)})
    await library.add_history(media_id, "imported", {"files": len(files),
                                                     "captions": len(captions)})
    return media_id


def _has_video(path: Path) -> bool:
    with open(path, "rb") as f:
        index = index_file(lambda off, n: os.pread(f.fileno(), n, off),
                           os.fstat(f.fileno()).st_size)
    return any(t.kind == "video" for t in index.tracks)


async def import_file(service: MediaService, path: Path, processing: dict[str, object],
                      title: str | None = None) -> tuple[Media, Job]:
    """Queue one local file for processing as a new media item (the file is copied)."""
    spool = Path(tempfile.mkdtemp(dir=service.storage.root, prefix=".import-"))
    try:
        copy = spool / "source"
        try:
            await asyncio.to_thread(_link_or_copy, path, copy)
        except OSError as e:
            raise ImportFailed(f"{path}: {e.strerror or e}") from None
        fields = {"title": title} if title else {}
        return await service.ingest(copy, path.name, fields, dict(processing), None)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def walk(paths: Sequence[Path]) -> list[Path]:
    """Files named on the command line, and every non-hidden file under named folders."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.is_file():
            found.append(path)
        else:
            raise ImportFailed(f"{path}: no such file or folder")
    return found
