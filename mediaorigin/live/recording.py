"""A finished lecture's recording: the live segments on disk made into one MP4.

Works from the stream's directory alone (`e{epoch}/{rendition}/init.mp4` and `{msn}.m4s`), so
a recording can also be made after a crash from whatever reached the disk. Epochs (publisher
connections) lie one after the other on the channel's timeline. Where every epoch of a track
has the same decoder configuration, the samples are copied (PyAV, no re-encoding). A
publisher that came back with another one (a new resolution, another audio rate) cannot
share the track's single configuration: that track is then re-encoded whole (H.264 or AAC,
in the first epoch's format), so nothing that was ingested is left out. The output is a
progressive MP4 with the index at the front.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av

log = logging.getLogger(__name__)

VIDEO_TIMESCALE = 90_000  # the live video tracks' (live/epoch.py)
VIDEO_OPTIONS = {"preset": "veryfast", "crf": "20"}
AUDIO_BITRATE = 128_000


class NothingRecorded(Exception):
    pass


def epochs(directory: Path) -> list[Path]:
    found = [p for p in directory.glob("e*") if p.is_dir() and p.name[1:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[1:]))


def join_rendition(directory: Path, name: str, work: Path) -> list[Path]:
    """Init + segments of every epoch of a rendition, as fragmented MP4s in timeline order:
    one per run of consecutive epochs with the same configuration."""
    groups: list[Path] = []
    init: bytes | None = None
    f = None
    try:
        for epoch in epochs(directory):
            folder = epoch / name
            init_file = folder / "init.mp4"
            segments = sorted(folder.glob("*.m4s"), key=lambda p: int(p.stem))
            if not init_file.is_file() or not segments:
                continue
            data = init_file.read_bytes()
            if data != init:
                if f is not None:
                    f.close()
                groups.append(work / f"{name}-{len(groups)}.mp4")
                f = open(groups[-1], "wb")  # noqa: SIM115 (closed below, one per group)
                f.write(data)
                init = data
            assert f is not None
            for seg in segments:
                with open(seg, "rb") as src:
                    shutil.copyfileobj(src, f)
    finally:
        if f is not None:
            f.close()
    return groups


def write_recording(tracks: list[list[Path]], out: Path) -> None:
    """One MP4 (faststart) with a track per list of groups. Every stream is added before
    the first packet is written (the header goes out with it)."""
    with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
        writers = [_copier(dst, groups[0]) if len(groups) == 1 else _reencoder(dst, groups)
                   for groups in tracks]
        for write in writers:
            write()


Writer = Callable[[], None]  # writes one track


def _copier(dst: av.container.OutputContainer, source: Path) -> Writer:
    with av.open(str(source)) as c:
        stream = dst.add_stream_from_template(c.streams[0])

    def write() -> None:
        with av.open(str(source)) as c:
            for packet in c.demux(c.streams[0]):
                if packet.dts is None:  # the demuxer's flush packet
                    continue
                packet.stream = stream
                dst.mux(packet)

    return write


def _reencoder(dst: av.container.OutputContainer, groups: list[Path]) -> Writer:
    """Decode every group in turn and encode one track in the first group's format."""
    with av.open(str(groups[0])) as c:
        first = c.streams[0].codec_context
        kind = c.streams[0].type
        if kind == "video":
            stream = dst.add_stream("libx264", options=VIDEO_OPTIONS)
            stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
            rate = VIDEO_TIMESCALE
            stream.codec_context.time_base = Fraction(1, rate)
        else:
            rate = first.sample_rate
            stream = dst.add_stream("aac", rate=rate)
            stream.layout = first.layout.name
            stream.bit_rate = AUDIO_BITRATE

    def frames(decoded: Iterator[av.VideoFrame | av.AudioFrame]) -> Iterator[av.frame.Frame]:
        """The decoded frames in the output's format (video: its times in 1/rate)."""
        if kind == "video":
            for frame in decoded:
                out = frame.reformat(width=stream.width, height=stream.height,
                                     format="yuv420p")
                out.pts = None if frame.pts is None else round(frame.time * rate)
                yield out
            return
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate,
                                      frame_size=stream.codec_context.frame_size)
        for frame in decoded:
            yield from resampler.resample(frame)
        yield from resampler.resample(None)

    def write() -> None:
        log.info("recording: re-encoding %s (%d configurations)", kind, len(groups))
        end = 0  # in 1/rate: where the next frame may start
        for path in groups:
            with av.open(str(path)) as c:
                for out in frames(c.decode(c.streams[0])):
                    # video keeps its times (strictly increasing); audio is one continuous
                    # count of samples
                    out.pts = end if kind != "video" or out.pts is None else max(end, out.pts)
                    out.time_base = Fraction(1, rate)
                    end = out.pts + (1 if kind == "video" else out.samples)
                    dst.mux(stream.encode(out))
        dst.mux(stream.encode(None))

    return write


def make_recording(directory: Path, work: Path) -> Path:
    """The recording of a stream directory as `work/recording.mp4`."""
    work.mkdir(parents=True, exist_ok=True)
    tracks = [groups for name in ("video", "audio")
              if (groups := join_rendition(directory, name, work))]
    if not tracks:
        raise NothingRecorded("no segment reached the disk")
    out = work / "recording.mp4"
    write_recording(tracks, out)
    for groups in tracks:
        for p in groups:
            p.unlink()
    return out
