"""Decoded WebRTC media to the frames every ingest hands on: H.264 video, AAC-LC audio.

Browsers send VP8 or H.264 (with a keyframe whenever the receiver asks) and Opus: neither the
codecs nor the GOP structure suit HLS/DASH. aiortc decodes what arrives; these encoders turn
its frames into `Frame` records with a fixed keyframe cadence, ready for the live packager.

    decoded av.VideoFrame --(SessionClock)--> H264Encoder --> TrackConfig(avcC) + Frame...
    decoded av.AudioFrame --(SessionClock)--> AacEncoder  --> TrackConfig(ASC)  + Frame...

The encoders are plain blocking objects (no asyncio): callers run them on a worker thread and
pass in the frame's session time in seconds; `encode()` returns what became ready, in order,
a TrackConfig always before the frames it configures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType

from .frames import Frame, TrackConfig

Output = TrackConfig | Frame

VIDEO_TIMESCALE = 90_000
AUDIO_RATE = 48_000
AAC_FRAME = 1024  # samples per AAC-LC frame
# A track whose media time and arrival time disagree by more than this (a sender restarting
# its RTP timestamps, a 32-bit wrap taken for a jump) is re-anchored on its arrival time.
RESYNC_SECONDS = 5.0
# Audio missing for longer than this (packet loss, DTX) is filled with silence, so that the
# sample count, and with it the audio dts, stays on the session clock.
AUDIO_GAP_SAMPLES = AUDIO_RATE // 20

# H.264 NAL unit types (ISO/IEC 14496-10 table 7-1).
NAL_IDR, NAL_SPS, NAL_PPS, NAL_AUD = 5, 7, 8, 9
# Profiles whose avcC carries chroma format and bit depths (ISO/IEC 14496-15 5.3.3.1.2).
_HIGH_PROFILES = {100, 110, 122, 144}


class SessionClock:
    """One time origin for every track of a publish session, so audio and video stay in sync.

    WebRTC timestamps are per track (aiortc starts each at 0 at its first packet) and carry no
    common clock, so each track is anchored at the session time its first frame arrived:
    the session's first frame, of any track, is at 0."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self._start: float | None = None

    def elapsed(self) -> float:
        """Seconds since the session's first frame (starting the clock on first use)."""
        now = self.now()
        if self._start is None:
            self._start = now
        return now - self._start

    def track(self) -> TrackClock:
        return TrackClock(self)


class TrackClock:
    """Maps one track's frame timestamps (pts, time_base) onto its session's clock."""

    def __init__(self, session: SessionClock) -> None:
        self.session = session
        self._anchor: tuple[Fraction, float] | None = None  # (media time, session time)

    def seconds(self, pts: int | None, time_base: Any) -> float:
        """Session time of a frame, in seconds (not yet monotonic: the encoders see to it)."""
        arrived = self.session.elapsed()
        if pts is None or time_base is None:
            return arrived
        # PyAV < 19 gives a Fraction, later versions their own rational type.
        media = pts * Fraction(time_base.numerator, time_base.denominator)
        if self._anchor is not None:
            at = self._anchor[1] + float(media - self._anchor[0])
            if abs(at - arrived) <= RESYNC_SECONDS:
                return at
        self._anchor = (media, arrived)
        return arrived


# --- video -------------------------------------------------------------------------------


class H264Encoder:
    """Decoded video frames to H.264 (libx264, no B-frames, timescale 90 kHz).

    Keyframes come exactly on schedule: the first frame at or after each multiple of
    `keyframe_interval` seconds (from the track's first frame) is forced to an IDR, and x264
    makes no others (no scenecut, infinite keyint). A change of resolution reopens the
    encoder: the next output is a new TrackConfig and an IDR. SPS/PPS stay in-band before
    every IDR as well as in the avcC."""

    def __init__(self, keyframe_interval: float = 2.0, preset: str = "veryfast",
                 crf: int = 23, max_bitrate: int = 4_000_000) -> None:
        if keyframe_interval <= 0:
            raise ValueError("keyframe_interval must be positive")
        self.interval = round(keyframe_interval * VIDEO_TIMESCALE)
        self.preset, self.crf, self.max_bitrate = preset, crf, max_bitrate
        self._codec: Any = None
        self._size: tuple[int, int] | None = None
        self._config: bytes | None = None  # the avcC last announced
        self._last_dts: int | None = None
        self._next_key: int | None = None  # dts from which the next frame is an IDR

    def encode(self, frame: av.VideoFrame, at: float) -> list[Output]:
        """Encode one frame shown at `at` seconds of session time."""
        out: list[Output] = []
        dts = round(at * VIDEO_TIMESCALE)
        if self._last_dts is not None and dts <= self._last_dts:
            dts = self._last_dts + 1  # monotonic whatever the sender's timestamps did
        self._last_dts = dts

        size = (frame.width & ~1, frame.height & ~1)  # 4:2:0 needs even dimensions
        if size != self._size:
            out += self.flush()
            self._open(*size)
        if frame.format.name != "yuv420p" or (frame.width, frame.height) != size:
            frame = frame.reformat(width=size[0], height=size[1], format="yuv420p")

        key = self._next_key is None or dts >= self._next_key
        if key:
            self._next_key = dts + self.interval if self._next_key is None else self._next_key
            while self._next_key <= dts:
                self._next_key += self.interval
        frame.pts = dts
        frame.time_base = Fraction(1, VIDEO_TIMESCALE)
        # Always set: a decoded frame keeps the sender's picture type, and an I there would
        # otherwise become an unscheduled keyframe here.
        frame.pict_type = PictureType.I if key else PictureType.NONE
        for packet in self._codec.encode(frame):
            out += self._frame(packet)
        return out

    def flush(self) -> list[Output]:
        """Whatever the encoder still holds (nothing with zerolatency; kept for symmetry)."""
        if self._codec is None:
            return []
        out: list[Output] = []
        for packet in self._codec.encode(None):
            out += self._frame(packet)
        self._codec = None
        self._size = None
        return out

    def _open(self, width: int, height: int) -> None:
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height = width, height
        codec.pix_fmt = "yuv420p"
        codec.time_base = Fraction(1, VIDEO_TIMESCALE)
        # Nominal only (x264's level and rate control want a frame rate); the real timing is
        # each frame's pts, WebRTC being variable frame rate.
        codec.framerate = Fraction(30, 1)
        codec.max_b_frames = 0
        kbps = self.max_bitrate // 1000
        codec.options = {
            "preset": self.preset,
            "tune": "zerolatency",
            "forced-idr": "1",  # a forced I is an IDR, a point a segment can start from
            "x264-params": f"keyint=infinite:scenecut=0:crf={self.crf}"
                           f":vbv-maxrate={kbps}:vbv-bufsize={kbps * 2}",
        }
        codec.open()
        self._codec = codec
        self._size = (width, height)
        self._next_key = None  # the new encoder starts with an IDR, and the schedule anew

    def _frame(self, packet: av.Packet) -> list[Output]:
        nals = split_annexb(bytes(packet))
        out: list[Output] = []
        sps = [n for n in nals if n[0] & 0x1F == NAL_SPS]
        pps = [n for n in nals if n[0] & 0x1F == NAL_PPS]
        if sps and pps:
            config = avc_decoder_configuration(sps, pps)
            if config != self._config:
                self._config = config
                out.append(TrackConfig("video", "h264", config, VIDEO_TIMESCALE))
        if self._config is None:
            return out  # nothing decodable yet (cannot happen with x264: it opens with an IDR)
        keyframe = packet.is_keyframe or any(n[0] & 0x1F == NAL_IDR for n in nals)
        data = b"".join(len(n).to_bytes(4, "big") + n for n in nals if n[0] & 0x1F != NAL_AUD)
        dts = packet.dts if packet.dts is not None else packet.pts
        pts = packet.pts if packet.pts is not None else dts
        out.append(Frame("video", dts, pts - dts, keyframe, data))
        return out


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes, empty units dropped)."""
    nals = []
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        end = data.find(b"\x00\x00\x01", begin)
        nal = data[begin:] if end < 0 else data[begin:end]
        nal = nal.rstrip(b"\x00")  # trailing zero bytes belong to the next start code
        if nal:
            nals.append(nal)
        start = end
    return nals


def avc_decoder_configuration(sps: list[bytes], pps: list[bytes]) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) with 4-byte NAL lengths."""
    first = sps[0]
    record = bytearray((1, first[1], first[2], first[3], 0xFC | 3, 0xE0 | len(sps)))
    for nal in sps:
        record += len(nal).to_bytes(2, "big") + nal
    record.append(len(pps))
    for nal in pps:
        record += len(nal).to_bytes(2, "big") + nal
    if first[1] in _HIGH_PROFILES:
        # What we encode is always 4:2:0 (chroma_format_idc 1), 8 bits, no SPS extensions.
        record += bytes((0xFC | 1, 0xF8 | 0, 0xF8 | 0, 0))
    return bytes(record)


# --- audio -------------------------------------------------------------------------------


class AacEncoder:
    """Decoded audio (Opus from WebRTC: 48 kHz, any layout) to AAC-LC 48 kHz stereo.

    Every output frame is 1024 samples (an AudioFifo regroups the decoder's 20 ms frames),
    and the dts counts samples from the track's first frame on the session clock; gaps in
    the input are filled with silence so that count stays in step with the video."""

    def __init__(self, bit_rate: int = 128_000) -> None:
        self.bit_rate = bit_rate
        self._codec: Any = None
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        self._fifo = av.AudioFifo()
        self._base = 0  # session time of the first sample, in samples
        self._samples_in = 0  # samples written to the FIFO (silence included)
        self._frames_in = 0  # AAC frames fed to the encoder
        self._frames_out = 0  # AAC frames it gave back

    def encode(self, frame: av.AudioFrame, at: float) -> list[Output]:
        """Encode one decoded frame starting at `at` seconds of session time."""
        out: list[Output] = []
        start = round(at * AUDIO_RATE)
        if self._codec is None:
            out.append(self._open(start))
        else:
            self._fill_gap(start - (self._base + self._samples_in))
        frame.pts = None  # our sample count is the timeline, not the sender's
        for chunk in self._resampler.resample(frame):
            chunk.pts = None
            self._fifo.write(chunk)
            self._samples_in += chunk.samples
        while self._fifo.samples >= AAC_FRAME:
            out += self._encode(self._fifo.read(AAC_FRAME))
        return out

    def flush(self) -> list[Output]:
        """Encode what is left in the FIFO and drain the encoder."""
        if self._codec is None:
            return []
        out: list[Output] = []
        for chunk in self._resampler.resample(None):
            chunk.pts = None
            self._fifo.write(chunk)
        if self._fifo.samples:
            out += self._encode(self._fifo.read())
        out += self._encode(None)
        self._codec = None
        return out

    def _open(self, start: int) -> TrackConfig:
        codec = av.CodecContext.create("aac", "w")
        codec.sample_rate = AUDIO_RATE
        codec.layout = "stereo"
        codec.format = "fltp"
        codec.bit_rate = self.bit_rate
        codec.time_base = Fraction(1, AUDIO_RATE)
        codec.open()
        self._codec = codec
        self._base = start
        return TrackConfig("audio", "aac", audio_specific_config(bytes(codec.extradata)),
                           AUDIO_RATE)

    def _fill_gap(self, missing: int) -> None:
        while missing > AUDIO_GAP_SAMPLES:
            n = min(missing, AUDIO_RATE)
            silence = av.AudioFrame(format="fltp", layout="stereo", samples=n)
            for plane in silence.planes:
                plane.update(bytes(plane.buffer_size))
            silence.sample_rate = AUDIO_RATE
            self._fifo.write(silence)
            self._samples_in += n
            missing -= n

    def _encode(self, chunk: av.AudioFrame | None) -> list[Output]:
        if chunk is not None:
            chunk.pts = self._frames_in * AAC_FRAME
            chunk.time_base = Fraction(1, AUDIO_RATE)
            self._frames_in += 1
        out: list[Output] = []
        for packet in self._codec.encode(chunk):
            # One packet per 1024 input samples, in order. The encoder's priming delay (one
            # frame) is not subtracted: the audio starts 21 ms late, as if the mic were.
            dts = self._base + self._frames_out * AAC_FRAME
            out.append(Frame("audio", dts, 0, True, bytes(packet)))
            self._frames_out += 1
        return out


def audio_specific_config(extradata: bytes) -> bytes:
    """The 2-byte AudioSpecificConfig of an AAC-LC encoder's extradata.

    FFmpeg's encoder appends the backward-compatible SBR signalling (sync extension 0x2b7,
    "no SBR") after the core; it says nothing an LC decoder needs and some parsers reject
    it, so only the core (object type, rate index, channels) is kept."""
    if len(extradata) < 2:
        raise ValueError("AAC encoder gave no AudioSpecificConfig")
    object_type = extradata[0] >> 3
    rate_index = ((extradata[0] & 0x07) << 1) | (extradata[1] >> 7)
    if object_type != 2 or rate_index == 15:
        return extradata  # not plain LC with an indexed rate: keep it whole
    return extradata[:2]
