"""What every ingest protocol hands to a live channel: track configurations and frames.

RTMP and WHIP both end here, so the live packager never knows how media arrived. Video is
H.264 (or HEVC) as length-prefixed NAL units (4-byte lengths, as in MP4/FLV), audio is raw
AAC frames (no ADTS header); timestamps are integers in the track's own timescale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

TrackKind = Literal["video", "audio"]
Codec = Literal["h264", "hevc", "aac"]


@dataclass(frozen=True, slots=True)
class TrackConfig:
    """A track's decoder configuration; sent again whenever the publisher changes it."""

    kind: TrackKind
    codec: Codec
    # AVCDecoderConfigurationRecord (avcC), HEVCDecoderConfigurationRecord (hvcC) or the
    # AAC AudioSpecificConfig.
    config: bytes
    timescale: int  # ticks per second of this track's Frame timestamps (RTMP: 1000)


@dataclass(frozen=True, slots=True)
class Frame:
    """One access unit (video) or one AAC frame (audio), in decode order per track."""

    kind: TrackKind
    dts: int  # decode time in the track's timescale
    cts: int  # composition offset: pts - dts (B-frames), 0 for audio
    keyframe: bool
    data: bytes  # video: 4-byte length-prefixed NAL units; audio: one raw AAC frame


class PublishRefused(Exception):
    """A publish attempt that must not go live (bad key, key already live, ended stream)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PublishSink(Protocol):
    """Where one publisher's media goes. Calls are cheap and never block the caller."""

    def on_track(self, track: TrackConfig) -> None: ...

    def on_frame(self, frame: Frame) -> None: ...

    def close(self) -> None:
        """The publisher is gone (clean unpublish, disconnect or timeout)."""


class PublishGate(Protocol):
    """Authorizes a publish and returns its sink (raises PublishRefused)."""

    async def open_publisher(self, protocol: Literal["rtmp", "whip"], app: str, key: str,
                             remote: str) -> PublishSink: ...
