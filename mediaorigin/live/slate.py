"""A still picture as H.264, for a lecture whose publisher came back with sound only.

A live lecture that had video keeps a video track: players of its muxed renditions cannot
drop one mid-stream. When a publisher sends audio and no video (a lecturer back without a
camera), the epoch carries this slate instead: one GOP of a black picture (an IDR, then
P-frames that skip every macroblock, a few hundred bytes each), repeated. Identical GOPs
make a valid stream: frame numbers and picture order restart at each IDR, and no two IDRs
follow each other.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import av

from ..ingest.frames import Frame, TrackConfig
from ..ingest.reencode import NAL_AUD, NAL_PPS, NAL_SPS, avc_decoder_configuration, split_annexb
from ..packaging.model import MediaError
from .epoch import track_for
from .ladder import LiveLadder

SLATE_TIMESCALE = 90_000
SLATE_FPS = 10  # a still picture: few frames, each part still gets some
SLATE_WAIT = 2.0  # seconds of audio without a video frame before an epoch carries the slate


@dataclass(frozen=True)
class Slate:
    config: TrackConfig  # H.264, avcC, 90 kHz
    gop: tuple[bytes, ...]  # AVCC access units: an IDR, then P-frames

    def frame(self, k: int, start: Fraction) -> Frame:
        """Frame k of a slate that starts at `start` input seconds."""
        at = round((start + Fraction(k, SLATE_FPS)) * SLATE_TIMESCALE)
        i = k % len(self.gop)
        return Frame("video", at, 0, i == 0, self.gop[i])


@functools.lru_cache(maxsize=32)  # a few KB each: sizes of lectures and their rungs
def make_slate(width: int, height: int, gop_seconds: float) -> Slate:
    """A black `width` x `height` slate with a keyframe every `gop_seconds` (the segment
    target, so that segments stay whole)."""
    width, height = max(16, width // 2 * 2), max(16, height // 2 * 2)
    count = max(1, round(gop_seconds * SLATE_FPS))
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = Fraction(1, SLATE_FPS)
    codec.framerate = Fraction(SLATE_FPS)
    codec.max_b_frames = 0
    codec.options = {"preset": "ultrafast", "tune": "stillimage,zerolatency",
                     "x264-params": f"keyint={count}:min-keyint={count}:scenecut=0"}
    codec.open()
    picture = av.VideoFrame(width, height, "yuv420p")
    luma, *chroma = picture.planes
    luma.update(bytes([16]) * luma.buffer_size)  # video-range black
    for plane in chroma:
        plane.update(bytes([128]) * plane.buffer_size)
    packets = []
    for k in range(count):
        picture.pts = k
        packets += codec.encode(picture)
    packets += codec.encode(None)
    config: bytes | None = None
    gop: list[bytes] = []
    for packet in packets[:count]:
        nals = split_annexb(bytes(packet))
        sps = [n for n in nals if n[0] & 0x1F == NAL_SPS]
        pps = [n for n in nals if n[0] & 0x1F == NAL_PPS]
        if sps and pps and config is None:
            config = avc_decoder_configuration(sps, pps)
        gop.append(b"".join(len(n).to_bytes(4, "big") + n for n in nals
                            if n[0] & 0x1F not in (NAL_AUD, NAL_SPS, NAL_PPS)))
    if config is None or len(gop) != count:
        raise MediaError("libx264 gave no usable slate")  # not expected
    return Slate(TrackConfig("video", "h264", config, SLATE_TIMESCALE), tuple(gop))


def slates_for(video: TrackConfig, rungs: Iterable[str],
               gop_seconds: float) -> dict[str, Slate]:
    """The slate in the size of a lecture's video ("video"), and one per live ladder rung in
    the shape the ladder would scale it to: a black picture needs no transcoder."""
    try:
        codec = track_for(video).codec
        width, height = codec.width or 1280, codec.height or 720
    except MediaError:
        width, height = 1280, 720
    out = {"video": make_slate(width, height, gop_seconds)}
    for rung in LiveLadder.rungs_for(height, list(rungs)):
        rung_width = max(2, round(rung.height * width / height / 2) * 2)
        out[rung.name] = make_slate(rung_width, rung.height, gop_seconds)
    return out


class SlateClock:
    """The slates' frames for one epoch, timed by the audio they go with: frame k at
    `start` + k / SLATE_FPS input seconds (the publisher's clock), in every rendition at
    once. `replaced`: the video configuration the slate stands in for."""

    def __init__(self, slates: dict[str, Slate], start: Fraction,
                 replaced: TrackConfig) -> None:
        self.slates, self.start, self.replaced, self._next = slates, start, replaced, 0

    def until(self, seconds: Fraction) -> list[tuple[str, Frame]]:
        """(rendition, frame) of the frames that begin before `seconds` and were not given
        yet, the video's first at each instant."""
        out: list[tuple[str, Frame]] = []
        k = self._next
        while self.start + Fraction(k, SLATE_FPS) < seconds:
            out += [(name, slate.frame(k, self.start)) for name, slate in self.slates.items()]
            k += 1
        self._next = k
        return out
