"""A demo lecture generated with PyAV at first start: two video renditions with aligned
keyframes, a second audio language and English captions, so the player page shows ABR,
audio switching and subtitles without any file to download."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av

log = logging.getLogger(__name__)

TITLE = "Demo lecture"
FPS = 25
GOP = 2 * FPS  # keyframes every 2 s in every rendition, so segments align across the ladder
LADDER = [(960, 540, 1_800_000), (640, 360, 800_000)]


def _audio_source(freqs: tuple[int, int], seconds: float) -> str:
    left, right = freqs
    return (f"aevalsrc=0.2*sin({left}*2*PI*t)|0.2*sin({right}*2*PI*t)"
            f":s=48000:d={seconds}")


def _encode(dest: Path, seconds: float, size: tuple[int, int, int] | None,
            tones: tuple[int, int], language: str) -> None:
    """One MP4: H.264 (when `size` is given) and AAC from lavfi test sources."""
    with av.open(str(dest), "w", format="mp4") as out:
        vstream = None
        if size is not None:
            width, height, rate = size
            vstream = out.add_stream("libx264", rate=FPS)
            vstream.width, vstream.height = width, height
            vstream.pix_fmt = "yuv420p"
            vstream.bit_rate = rate
            vstream.codec_context.gop_size = GOP
            vstream.options = {"preset": "veryfast", "bf": "2", "sc_threshold": "0",
                               "keyint_min": str(GOP)}
        astream = out.add_stream("aac", rate=48000, layout="stereo")
        astream.bit_rate = 96_000
        astream.metadata["language"] = language
        if vstream is not None:
            src = f"testsrc2=size={size[0]}x{size[1]}:rate={FPS}:duration={seconds}"
            with av.open(src, format="lavfi") as video_in:
                for frame in video_in.decode(video=0):
                    frame.pts = None
                    frame.pict_type = av.video.frame.PictureType.NONE  # let x264 place keyframes
                    for packet in vstream.encode(frame):
                        out.mux(packet)
            for packet in vstream.encode():
                out.mux(packet)
        with av.open(_audio_source(tones, seconds), format="lavfi") as audio_in:
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000,
                                          frame_size=1024)
            pts = 0
            for frame in audio_in.decode(audio=0):
                for chunk in resampler.resample(frame):
                    chunk.pts = pts
                    chunk.time_base = Fraction(1, 48000)
                    pts += chunk.samples
                    for packet in astream.encode(chunk):
                        out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)


def _captions(seconds: float) -> str:
    lines = ["WEBVTT", ""]
    t = 0.0
    n = 1
    while t < seconds:
        end = min(t + 3.5, seconds)
        lines += [f"{_ts(t)} --> {_ts(end)}", f"Demo caption {n}: {int(t)} seconds in", ""]
        t += 4.0
        n += 1
    return "\n".join(lines)


def _ts(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def generate(workdir: Path, seconds: float) -> tuple[list[Path], Path]:
    """Create the demo files in `workdir`: (media files, English captions)."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for width, height, rate in LADDER:
        path = workdir / f"demo-{height}p.mp4"
        _encode(path, seconds, (width, height, rate), (440, 660), "eng")
        files.append(path)
    german = workdir / "demo-audio-deu.m4a"
    _encode(german, seconds, None, (330, 495), "deu")
    files.append(german)
    captions = workdir / "demo-en.vtt"
    captions.write_text(_captions(seconds), encoding="utf-8")
    return files, captions

