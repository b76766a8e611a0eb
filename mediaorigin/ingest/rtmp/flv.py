"""FLV audio/video tag bodies (the payload of RTMP audio and video messages) → TrackConfig/Frame.

Legacy FLV video (E.4.3.1): UB4 frame type (1 key, 2 inter, 3 disposable, 4 generated key,
5 command) | UB4 codec id (7 = AVC), then for AVC:

    AVCPacketType (1)  0 sequence header (AVCDecoderConfigurationRecord), 1 NALUs, 2 end
    CompositionTime    SI24, milliseconds (pts - dts)
    data

Enhanced RTMP video: UB1 isExVideoHeader (1) | UB3 frame type | UB4 packet type, any ModEx
prefixes, then a FourCC ('hvc1', 'avc1'): SequenceStart (0, the decoder configuration
record), CodedFrames (1, SI24 composition time + NALUs), SequenceEnd (2), CodedFramesX
(3, NALUs with composition time 0), Metadata (4).

Legacy FLV audio: UB4 sound format (10 = AAC) | rate | size | type, then AACPacketType
(0 AudioSpecificConfig, 1 raw frame). Enhanced RTMP audio (sound format 9, FourCC 'mp4a')
is read the same way.

Policy for what this origin does not take (VP9, AV1, VP6, H.263, MP3, Speex, Opus, PCM,
multitrack...): **refused** with `UnsupportedCodec` (an `RtmpProtocolError`) on the first
such tag, so the publisher's connection ends with a clear reason in the log instead of a
channel that silently lacks a track. Tags that carry no media (empty bodies, end of sequence,
video command frames, enhanced Metadata) are ignored, and so are frames that arrive before
their track's configuration (logged once per track).

Video frames always leave with 4-byte NAL unit lengths: a stream whose configuration record
says 1 or 2 bytes (lengthSizeMinusOne) has its frames rewritten, and the record handed on
says 4 bytes too, so that it describes the frames it comes with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..frames import Codec, Frame, TrackConfig
from .chunks import RtmpProtocolError

log = logging.getLogger("mediaorigin.ingest.rtmp")

TIMESCALE = 1000  # RTMP timestamps are milliseconds

# Legacy video codec ids and audio sound formats, for error messages.
VIDEO_CODECS = {2: "Sorenson H.263", 3: "Screen video", 4: "On2 VP6", 5: "On2 VP6 with alpha",
                6: "Screen video v2", 7: "AVC", 12: "HEVC (non-standard codec id 12)"}
SOUND_FORMATS = {0: "PCM", 1: "ADPCM", 2: "MP3", 3: "PCM little-endian", 4: "Nellymoser 16 kHz",
                 5: "Nellymoser 8 kHz", 6: "Nellymoser", 7: "G.711 A-law", 8: "G.711 mu-law",
                 10: "AAC", 11: "Speex", 14: "MP3 8 kHz", 15: "device-specific"}
VIDEO_FOURCCS: dict[bytes, Codec] = {b"avc1": "h264", b"hvc1": "hevc"}
AUDIO_FOURCCS: dict[bytes, Codec] = {b"mp4a": "aac"}

AVC = 7
AAC = 10
EX_AUDIO = 9
KEYFRAME = 1
COMMAND_FRAME = 5
# Enhanced RTMP packet types (video; audio uses 0, 1, 2, 4, 5, 7 of the same meanings).
SEQUENCE_START = 0
CODED_FRAMES = 1
SEQUENCE_END = 2
CODED_FRAMES_X = 3
METADATA = 4
MPEG2TS_SEQUENCE_START = 5
MULTITRACK = 6  # audio: 5
MODEX = 7


class UnsupportedCodec(RtmpProtocolError):
    """A codec or tag feature this origin does not ingest."""


@dataclass(slots=True)
class _Track:
    codec: Codec | None = None
    nal_length_size: int = 4
    warned: bool = False


class FlvDemuxer:
    """One published stream's tag bodies → TrackConfig / Frame (or None for no media)."""

    def __init__(self) -> None:
        self._video = _Track()
        self._audio = _Track()

    def video(self, timestamp: int, body: bytes) -> TrackConfig | Frame | None:
        if not body:
            return None
        b0 = body[0]
        if b0 & 0x80:
            return self._ex_video(timestamp, body)
        frame_type, codec_id = (b0 >> 4) & 0x0F, b0 & 0x0F
        if frame_type == COMMAND_FRAME:
            return None
        if codec_id != AVC:
            name = VIDEO_CODECS.get(codec_id, f"codec id {codec_id}")
            raise UnsupportedCodec(f"FLV video codec {name} is not supported "
                                   "(publish H.264, or HEVC with enhanced RTMP)")
        if len(body) < 5:
            raise RtmpProtocolError(f"AVC video tag of {len(body)} bytes (header is 5)")
        packet_type = body[1]
        cts = _si24(body, 2)
        if packet_type == 0:
            return self._config("h264", body[5:])
        if packet_type == 1:
            return self._frame(timestamp, cts, frame_type == KEYFRAME, body[5:])
        if packet_type == 2:
            return None
        raise RtmpProtocolError(f"unknown AVC packet type {packet_type}")

    def audio(self, timestamp: int, body: bytes) -> TrackConfig | Frame | None:
        if not body:
            return None
        sound_format = body[0] >> 4
        if sound_format == EX_AUDIO:
            packet_type, pos = _modex(body, body[0] & 0x0F, 1, "audio")
            if packet_type == 5:
                raise UnsupportedCodec("enhanced RTMP multitrack audio is not supported")
            fourcc = _fourcc(body, pos)
            if fourcc not in AUDIO_FOURCCS:
                raise UnsupportedCodec(f"enhanced RTMP audio codec {fourcc!r} is not supported "
                                       "(publish AAC)")
            data = body[pos + 4:]
            if packet_type == SEQUENCE_START:
                return self._audio_config(data)
            if packet_type == CODED_FRAMES:
                return self._audio_frame(timestamp, data)
            if packet_type in (SEQUENCE_END, 4):  # 4: multichannel configuration
                return None
            raise RtmpProtocolError(f"unknown enhanced audio packet type {packet_type}")
        if sound_format != AAC:
            name = SOUND_FORMATS.get(sound_format, f"sound format {sound_format}")
            raise UnsupportedCodec(f"FLV audio codec {name} is not supported (publish AAC)")
        if len(body) < 2:
            raise RtmpProtocolError("AAC audio tag without its packet type")
        if body[1] == 0:
            return self._audio_config(body[2:])
        if body[1] == 1:
            return self._audio_frame(timestamp, body[2:])
        raise RtmpProtocolError(f"unknown AAC packet type {body[1]}")

    # --- video ---------------------------------------------------------------------------

    def _ex_video(self, timestamp: int, body: bytes) -> TrackConfig | Frame | None:
        frame_type = (body[0] >> 4) & 0x07
        packet_type, pos = _modex(body, body[0] & 0x0F, 1, "video")
        if frame_type == COMMAND_FRAME and packet_type != METADATA:
            return None  # one command byte, no media
        if packet_type == MULTITRACK:
            raise UnsupportedCodec("enhanced RTMP multitrack video is not supported")
        fourcc = _fourcc(body, pos)
        codec = VIDEO_FOURCCS.get(fourcc)
        if codec is None:
            raise UnsupportedCodec(f"enhanced RTMP video codec {fourcc!r} is not supported "
                                   "(publish H.264 or HEVC)")
        pos += 4
        if packet_type == SEQUENCE_START:
            return self._config(codec, body[pos:])
        if packet_type == CODED_FRAMES:
            if len(body) < pos + 3:
                raise RtmpProtocolError("enhanced RTMP CodedFrames without composition time")
            return self._frame(timestamp, _si24(body, pos), frame_type == KEYFRAME,
                               body[pos + 3:], codec)
        if packet_type == CODED_FRAMES_X:
            return self._frame(timestamp, 0, frame_type == KEYFRAME, body[pos:], codec)
        if packet_type in (SEQUENCE_END, METADATA):
            return None
        if packet_type == MPEG2TS_SEQUENCE_START:
            raise UnsupportedCodec("enhanced RTMP MPEG2TSSequenceStart is not supported")
        raise RtmpProtocolError(f"unknown enhanced video packet type {packet_type}")

    def _config(self, codec: Codec, record: bytes) -> TrackConfig:
        if codec == "h264":
            if len(record) < 7 or record[0] != 1:
                raise RtmpProtocolError(f"invalid AVCDecoderConfigurationRecord ({len(record)} "
                                        f"bytes, version {record[0] if record else None})")
            at = 4  # lengthSizeMinusOne in the low 2 bits
        else:
            if len(record) < 23 or record[0] != 1:
                raise RtmpProtocolError(f"invalid HEVCDecoderConfigurationRecord "
                                        f"({len(record)} bytes)")
            at = 21
        size = (record[at] & 0x03) + 1
        if size != 4:
            record = record[:at] + bytes([record[at] | 0x03]) + record[at + 1:]
        self._video = _Track(codec, size)
        return TrackConfig("video", codec, bytes(record), TIMESCALE)

    def _frame(self, timestamp: int, cts: int, keyframe: bool, data: bytes,
               codec: Codec = "h264") -> Frame | None:
        track = self._video
        if track.codec != codec:
            _warn_once(track, f"{codec} video frame before its configuration record: dropped")
            return None
        return Frame("video", timestamp, cts, keyframe, to_length4(data, track.nal_length_size))

    # --- audio ---------------------------------------------------------------------------

    def _audio_config(self, asc: bytes) -> TrackConfig:
        if len(asc) < 2:
            raise RtmpProtocolError(f"AudioSpecificConfig of {len(asc)} bytes")
        self._audio = _Track("aac")
        return TrackConfig("audio", "aac", bytes(asc), TIMESCALE)

    def _audio_frame(self, timestamp: int, data: bytes) -> Frame | None:
        if self._audio.codec != "aac":
            _warn_once(self._audio, "AAC frame before its AudioSpecificConfig: dropped")
            return None
        if not data:
            return None
        return Frame("audio", timestamp, 0, True, bytes(data))


def to_length4(data: bytes, length_size: int) -> bytes:
    """NAL units with `length_size`-byte big-endian lengths → the same with 4-byte lengths.

    Checks that the lengths add up to the frame (raises RtmpProtocolError otherwise)."""
    out = bytearray() if length_size != 4 else None
    pos, end = 0, len(data)
    while pos < end:
        if pos + length_size > end:
            raise RtmpProtocolError(f"truncated NAL unit length at offset {pos} of {end}")
        n = int.from_bytes(data[pos:pos + length_size], "big")
        start = pos + length_size
        if start + n > end:
            raise RtmpProtocolError(f"NAL unit of {n} bytes at offset {pos} overruns the "
                                    f"{end}-byte frame")
        if out is not None:
            out += n.to_bytes(4, "big")
            out += data[start:start + n]
        pos = start + n
    return bytes(data) if out is None else bytes(out)


def _si24(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos:pos + 3], "big", signed=True)


def _fourcc(body: bytes, pos: int) -> bytes:
    if len(body) < pos + 4:
        raise RtmpProtocolError("enhanced RTMP tag without its FourCC")
    return bytes(body[pos:pos + 4])


def _modex(body: bytes, packet_type: int, pos: int, what: str) -> tuple[int, int]:
    """Skip ModEx prefixes (enhanced RTMP v2): returns the real packet type and where the
    FourCC starts. The one defined ModEx (a nanosecond timestamp offset) is below our
    millisecond resolution and is dropped."""
    while packet_type == MODEX:
        if len(body) < pos + 1:
            raise RtmpProtocolError(f"truncated ModEx in enhanced {what} tag")
        size = body[pos] + 1
        pos += 1
        if size == 256:
            if len(body) < pos + 2:
                raise RtmpProtocolError(f"truncated ModEx in enhanced {what} tag")
            size = int.from_bytes(body[pos:pos + 2], "big") + 1
            pos += 2
        pos += size
        if len(body) < pos + 1:
            raise RtmpProtocolError(f"truncated ModEx in enhanced {what} tag")
        packet_type = body[pos] & 0x0F
        pos += 1
    return packet_type, pos


def _warn_once(track: _Track, message: str) -> None:
    if not track.warned:
        track.warned = True
        log.warning("rtmp: %s", message)
