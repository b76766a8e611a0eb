"""A finished lecture's recording: the live segments on disk remuxed into one MP4.

Works from the stream's directory alone (`e{epoch}/{rendition}/init.mp4` and `{msn}.m4s`), so
a recording can also be made after a crash from whatever reached the disk. Epochs whose
decoder configuration equals the first one are joined (the timeline is continuous across
reconnects); an epoch with another configuration cannot share the track and is left out, which
is logged. Remuxing copies the samples (PyAV, no re-encoding) into a progressive MP4 with the
index at the front.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import av

log = logging.getLogger(__name__)


class NothingRecorded(Exception):
    pass


def epochs(directory: Path) -> list[Path]:
    found = [p for p in directory.glob("e*") if p.is_dir() and p.name[1:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[1:]))


def join_rendition(directory: Path, name: str, out: Path) -> bool:
    """Concatenate init + segments of every compatible epoch into one fragmented MP4."""
    init: bytes | None = None
    written = 0
    with open(out, "wb") as f:
        for epoch in epochs(directory):
            folder = epoch / name
            init_file = folder / "init.mp4"
            if not init_file.is_file():
                continue
            data = init_file.read_bytes()
            if init is None:
                init = data
                f.write(data)
            elif data != init:
                log.warning("recording %s: %s of %s has another configuration, left out",
                            directory.name, name, epoch.name)
                continue
            for seg in sorted(folder.glob("*.m4s"), key=lambda p: int(p.stem)):
                with open(seg, "rb") as src:
                    shutil.copyfileobj(src, f)
                written += 1
    return written > 0


def remux(inputs: list[Path], out: Path) -> float:
    """Copy every input's single track into one MP4 (faststart); returns its duration."""
    containers = [av.open(str(p)) for p in inputs]
    try:
        with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
            mapping = {}
            for c in containers:
                src = c.streams[0]
                mapping[id(c)] = (src, dst.add_stream_from_template(src))
            duration = 0.0
            for c in containers:
                src, stream = mapping[id(c)]
                for packet in c.demux(src):
                    if packet.dts is None:
                        continue
                    end = float((packet.pts or packet.dts) * src.time_base) + float(
                        (packet.duration or 0) * src.time_base)
                    duration = max(duration, end)
                    packet.stream = stream
                    dst.mux(packet)
        return duration
    finally:
        for c in containers:
            c.close()


def make_recording(directory: Path, work: Path) -> Path:
    """The recording of a stream directory as `work/recording.mp4`."""
    work.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    for name in ("video", "audio"):
        joined = work / f"{name}.mp4"
        if join_rendition(directory, name, joined):
            parts.append(joined)
    if not parts:
        raise NothingRecorded("no segment reached the disk")
    out = work / "recording.mp4"
    remux(parts, out)
    for p in parts:
        p.unlink()
    return out
