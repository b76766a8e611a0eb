"""A live ABR ladder: the published H.264 video, decoded once, re-encoded into lower rungs.

    on_track/on_frame --queue--> worker: h264 decoder --+--> scale --> x264 --> emit("540p", ...)
    (never block)                                       +--> scale --> x264 --> emit("360p", ...)

Rung segments must be cut where the source's are, so rung frames keep the source timeline:
each carries the presentation time of the source picture it was made from (as its dts; no
B-frames, so cts is 0), in the source timescale, and is an IDR exactly when that picture was a
source keyframe (x264's own keyframes are off: no scenecut, infinite keyint).

Everything blocking (decode, swscale, libx264) runs on one worker thread; `emit` is called
from that thread, so a caller on an event loop passes something like
`lambda name, item: loop.call_soon_threadsafe(channel.on_rendition, name, item)`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType, VideoFrame
from av.video.reformatter import Interpolation, VideoReformatter

from ..ingest.frames import Frame, TrackConfig
from ..ingest.reencode import (
    NAL_AUD,
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    avc_decoder_configuration,
    split_annexb,
)
from ..processing.errors import ProcessingError
from ..processing.ladder import DEFAULT_RUNGS
from ..processing.transcode import VideoSettings

log = logging.getLogger(__name__)

Emit = Callable[[str, TrackConfig | Frame], None]

# A frame that waited longer than this in the queue means the machine cannot keep up.
BACKLOG_WARNING = 2.0  # seconds
CLOSE_TIMEOUT = 10.0  # seconds close() waits for the worker to flush
# x264 wants a frame rate for its level and VBV defaults; the real timing is each frame's pts.
NOMINAL_RATE = Fraction(30)


@dataclass(frozen=True)
class LiveRung:
    """One live rendition: `height` is the coded height, the width follows the source aspect."""

    name: str
    height: int
    bitrate: int  # video bits/s


class LiveLadder:
    """Transcodes the published H.264 video into lower rungs on one worker thread.

    Emits, per rung, `TrackConfig(kind="video", codec="h264", config=avcC, timescale=source)`
    (again only when the rung's avcC or timescale changes), then its `Frame`s in presentation
    order with strictly increasing dts. SPS/PPS are also in-band before every IDR.

    A new source config reopens the decoder (frames the old one still held are encoded
    first) and rung frames resume at the next source keyframe; a new source size reopens the
    rung encoders. Rungs stay what they were built with: if the source later shrinks below
    a rung, that rung is upscaled rather than vanishing from the playlists. Source pictures
    whose pts does not increase (a publisher restarting its clock) are dropped: give each
    publisher connection its own ladder.

    Nothing is dropped when the machine is too slow: the queue of compressed source frames
    grows (and with it the latency), and a warning is logged once a frame has waited more
    than BACKLOG_WARNING seconds (once per ladder).
    """

    def __init__(self, rungs: list[LiveRung], emit: Emit, *, preset: str = "veryfast") -> None:
        if not rungs:
            raise ValueError("a live ladder needs at least one rung")
        if len({r.name for r in rungs}) != len(rungs):
            raise ValueError("rung names must be unique")
        for r in rungs:
            if r.height <= 0 or r.height % 2 or r.bitrate <= 0:
                raise ValueError(f"bad rung {r!r}: height must be even and positive, bitrate > 0")
        try:
            VideoSettings(preset=preset)  # the VOD transcoder's list of x264 presets
        except ProcessingError as exc:
            raise ValueError(exc.message) from None
        self._emit = emit
        self._encoders = [_RungEncoder(r, preset, self._send) for r in rungs]
        self._queue: queue.SimpleQueue[TrackConfig | tuple[Frame, float] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        self._abandoned = False  # close() timed out: stop without flushing or emitting
        self._warned_backlog = False
        self._warned_order = False
        # Worker state.
        self._config: TrackConfig | None = None
        self._decoder: Any = None
        self._await_key = True
        self._keys: set[int] = set()  # pts of source keyframes not yet decoded
        self._last_pts: int | None = None
        self._thread = threading.Thread(target=self._run, name="live-ladder", daemon=True)
        self._thread.start()

    @staticmethod
    def rungs_for(source_height: int, names: list[str]) -> list[LiveRung]:
        """Named rungs (bitrates of the VOD ladder) below the source height, tallest first.

        Never upscale: rungs at or above the source height are dropped (the source itself is
        the top rendition)."""
        unknown = [n for n in names if n not in DEFAULT_RUNGS]
        if unknown:
            raise ValueError(f"unknown rung: {', '.join(unknown)}")
        wanted = (DEFAULT_RUNGS[n] for n in dict.fromkeys(names))
        rungs = [LiveRung(r.name, r.height, r.video_bitrate) for r in wanted
                 if r.height < source_height]
        return sorted(rungs, key=lambda r: r.height, reverse=True)

    # --- caller side (any thread, never blocks) -------------------------------------------

    def on_track(self, config: TrackConfig) -> None:
        if config.kind != "video":
            raise ValueError(f"a live ladder takes video, not {config.kind}")
        if not self._closed:
            self._queue.put(config)

    def on_frame(self, frame: Frame) -> None:
        if frame.kind != "video":
            raise ValueError(f"a live ladder takes video, not {frame.kind}")
        if not self._closed:
            self._queue.put((frame, time.monotonic()))

    def close(self) -> None:
        """Encode what is queued, flush, stop the worker. Idempotent; waits at most
        CLOSE_TIMEOUT seconds, then leaves the (daemon) thread to stop without emitting."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(CLOSE_TIMEOUT)
        if self._thread.is_alive():
            self._abandoned = True
            log.warning("live ladder did not finish within %.0f s; abandoning it", CLOSE_TIMEOUT)

    # --- worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._abandoned:
                return
            try:
                if isinstance(item, TrackConfig):
                    self._configure(item)
                else:
                    self._decode(*item)
            except Exception:
                log.exception("live ladder failed on a frame; resuming at the next keyframe")
                self._restart()
        if self._abandoned:
            return
        try:
            self._drain()
            for enc in self._encoders:
                enc.flush()
        except Exception:
            log.exception("live ladder failed while flushing")

    def _send(self, name: str, item: TrackConfig | Frame) -> None:
        if not self._abandoned:
            self._emit(name, item)

    def _configure(self, config: TrackConfig) -> None:
        if config == self._config:
            return  # a repeated sequence header changes nothing
        self._drain()
        for enc in self._encoders:
            enc.flush()  # reopened on the next picture: same size and clock, same avcC
        if self._config is not None and config.timescale != self._config.timescale:
            self._last_pts = None  # a different clock: nothing to compare with
        self._config = config
        if config.codec != "h264":
            log.warning("live ladder: %s video cannot be transcoded; waiting for H.264",
                        config.codec)
        self._restart()

    def _restart(self) -> None:
        """A fresh decoder (and encoders) from the next source keyframe on; after a failure
        nothing of the old ones is trusted, so they are dropped without draining."""
        self._decoder, self._await_key = None, True
        self._keys.clear()
        for enc in self._encoders:
            enc.reset()
        if self._config is None or self._config.codec != "h264":
            return
        decoder = av.CodecContext.create("h264", "r")
        decoder.extradata = self._config.config
        decoder.thread_type = "SLICE"  # frame threads would hold frames back
        self._decoder = decoder

    def _decode(self, frame: Frame, queued_at: float) -> None:
        if not self._warned_backlog and time.monotonic() - queued_at > BACKLOG_WARNING:
            self._warned_backlog = True
            log.warning("live ladder is more than %.0f s behind: this machine cannot keep up "
                        "with %d rungs", BACKLOG_WARNING, len(self._encoders))
        if self._decoder is None or (self._await_key and not frame.keyframe):
            return
        self._await_key = False
        pts = frame.dts + frame.cts
        if frame.keyframe:
            self._keys.add(pts)
        packet = av.Packet(frame.data)
        packet.pts, packet.dts = pts, frame.dts
        for picture in self._decoder.decode(packet):
            self._picture(picture)

    def _drain(self) -> None:
        """Pictures the decoder still holds (B-frame reordering delay)."""
        if self._decoder is not None and not self._await_key:
            for picture in self._decoder.decode(None):
                self._picture(picture)
        self._decoder = None

    def _picture(self, picture: VideoFrame) -> None:
        assert self._config is not None and self._decoder is not None
        pts = picture.pts
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            if not self._warned_order:
                self._warned_order = True
                log.warning("live ladder: source pts %s after %s; dropping such pictures",
                            pts, self._last_pts)
            return
        self._last_pts = pts
        key = pts in self._keys
        self._keys = {k for k in self._keys if k > pts}
        sar = self._decoder.sample_aspect_ratio or Fraction(1)
        for enc in self._encoders:
            enc.encode(picture, pts, key, self._config.timescale, Fraction(sar))


class _RungEncoder:
    """Scaler + libx264 for one rung; packets become AVCC frames (and an avcC) for emit."""

    def __init__(self, rung: LiveRung, preset: str, send: Emit) -> None:
        self.rung, self.preset, self.send = rung, preset, send
        self.scaler = VideoReformatter()
        self.codec: Any = None
        self.shape: tuple[int, int, int] | None = None  # width, height, timescale
        self.announced: TrackConfig | None = None

    def encode(self, picture: VideoFrame, pts: int, key: bool, timescale: int,
               sar: Fraction) -> None:
        width = max(2, round(self.rung.height * picture.width * sar / picture.height / 2) * 2)
        shape = (width, self.rung.height, timescale)
        if shape != self.shape:
            self.flush()
            self._open(shape)
        out = self.scaler.reformat(picture, width, self.rung.height, "yuv420p",
                                   interpolation=Interpolation.BICUBIC)
        out.pts, out.time_base = pts, Fraction(1, timescale)
        # Always set: a decoded picture keeps the source's picture type, and an I there would
        # otherwise become a keyframe here wherever the source had an I-frame.
        out.pict_type = PictureType.I if key else PictureType.NONE
        out.key_frame = key
        for packet in self.codec.encode(out):
            self._packet(packet, timescale)

    def flush(self) -> None:
        """Drain and close the encoder (zerolatency holds nothing back; kept for safety)."""
        if self.codec is not None:
            assert self.shape is not None
            for packet in self.codec.encode(None):
                self._packet(packet, self.shape[2])
        self.reset()

    def reset(self) -> None:
        """Drop the encoder without draining: the next picture reopens it with an IDR."""
        self.codec, self.shape = None, None

    def _open(self, shape: tuple[int, int, int]) -> None:
        width, height, timescale = shape
        bitrate = self.rung.bitrate
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.time_base = Fraction(1, timescale)
        codec.framerate = NOMINAL_RATE
        codec.sample_aspect_ratio = Fraction(1)
        codec.bit_rate = bitrate
        codec.max_b_frames = 0  # dts == pts: rung frames carry the source picture's pts
        # zerolatency turns frame threads (a frame of delay each) into slice threads.
        codec.thread_type, codec.thread_count = "SLICE", 0
        codec.options = {
            "preset": self.preset,
            "tune": "zerolatency",
            "forced-idr": "1",  # a forced I is an IDR, where a segment can start
            "maxrate": str(bitrate * 6 // 5),
            "bufsize": str(bitrate * 2),
            # Keyframes only where the source has them.
            "x264-params": "keyint=infinite:scenecut=0",
        }
        codec.open()
        self.codec, self.shape = codec, shape

    def _packet(self, packet: Any, timescale: int) -> None:
        nals = split_annexb(bytes(packet))
        sps = [n for n in nals if n[0] & 0x1F == NAL_SPS]
        pps = [n for n in nals if n[0] & 0x1F == NAL_PPS]
        if sps and pps:
            config = TrackConfig("video", "h264", avc_decoder_configuration(sps, pps), timescale)
            if config != self.announced:
                self.announced = config
                self.send(self.rung.name, config)
        if self.announced is None:
            return  # cannot happen: x264 opens with an IDR carrying SPS/PPS
        keyframe = any(n[0] & 0x1F == NAL_IDR for n in nals)
        data = b"".join(len(n).to_bytes(4, "big") + n for n in nals if n[0] & 0x1F != NAL_AUD)
        self.send(self.rung.name, Frame("video", packet.pts, 0, keyframe, data))
