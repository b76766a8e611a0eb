"""`mediaorigin import DIR|FILE...`: bring an archive of lectures into the library.

Every file becomes a media item processed like an upload; a progress bar follows the jobs
(on a terminal, one updating line; otherwise a line per change). With the in-process backend
this command does the processing itself; with Redis it queues and the workers process.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..config import Config
from .importer import ImportFailed, import_file, walk
from .records import Job
from .runtime import start_library
from .service import processing_defaults

BAR = 24


def _bar(fraction: float) -> str:
    filled = round(BAR * max(0.0, min(fraction, 1.0)))
    return "#" * filled + "-" * (BAR - filled)


async def bulk_import(config: Config, paths: Sequence[Path], title: str | None, wait: bool,
                      out: TextIO = sys.stdout) -> int:
    files = walk(paths)
    if not files:
        raise ImportFailed("no files to import")
    if title and len(files) > 1:
        raise ImportFailed("--title names one file's item; several files keep their names")
    runtime = await start_library(config, consume=wait and config.jobs.backend == "inprocess")
    tty = out.isatty()
    try:
        jobs: list[tuple[Path, Job]] = []
        for path in files:
            media, job = await import_file(runtime.service, path, processing_defaults(config),
                                           title)
            jobs.append((path, job))
            print(f"queued {path} -> {media.id}", file=out)
        if not wait:
            return 0
        last = ""
        while True:
            current = [await runtime.library.get_job(job.id) for _, job in jobs]
            done = [j for j in current if j is None or j.finished]
            failed = [j for j in current if j is not None and j.status == "failed"]
            total = sum(100.0 if j is None or j.finished else j.percentage for j in current)
            running = next((j for j in current if j is not None and j.status == "running"),
                           None)
            line = (f"[{_bar(total / (100 * len(jobs)))}] {len(done)}/{len(jobs)} done, "
                    f"{len(failed)} failed" + (f"; {running.stage} {running.percentage:.0f}%"
                                               if running else ""))
            if line != last:
                print(("\r" + line) if tty else line, end="" if tty else "\n", file=out,
                      flush=True)
                last = line
            if len(done) == len(jobs):
                break
            await asyncio.sleep(0.5)
        if tty:
            print(file=out)
        for (path, _), job in zip(jobs, current, strict=True):
            status = job.status if job else "deleted"
            reason = f" ({job.error['message']})" if job and job.error else ""
            print(f"{status:9} {job.media_id if job else '-'} {path}{reason}", file=out)
        return 1 if failed else 0
    finally:
        await runtime.stop()
