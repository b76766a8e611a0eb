"""What GET /api/live/{id} reports about the incoming stream: bitrate, frame rate, codecs,
keyframe interval, uptime. Measured over a sliding few seconds of arrivals."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..ingest.frames import Frame, TrackConfig
from ..packaging.mp4.sample_entries import aac_sample_entry, avc_sample_entry, hevc_sample_entry

WINDOW = 5.0


@dataclass
class IngestStats:
    started: float | None = None  # unix time the current publisher started sending
    codecs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _arrivals: deque[tuple[float, int, str]] = field(default_factory=deque)
    _keyframes: deque[int] = field(default_factory=lambda: deque(maxlen=8))  # input dts
    _video_timescale: int = 1000
    frames: int = 0
    bytes: int = 0

    def track(self, config: TrackConfig) -> None:
        info: dict[str, Any] = {"codec": config.codec}
        if config.kind == "video":
            self._video_timescale = config.timescale
        try:
            if config.codec == "h264":
                c = avc_sample_entry(config.config)
                info |= {"codecString": c.codec, "width": c.width, "height": c.height}
            elif config.codec == "hevc":
                info["codecString"] = hevc_sample_entry(config.config).codec
            elif config.codec == "aac":
                c = aac_sample_entry(config.config)
                info |= {"codecString": c.codec, "sampleRate": c.sample_rate,
                         "channels": c.channels}
        except ValueError:
            pass
        self.codecs[config.kind] = info

    def frame(self, frame: Frame) -> None:
        now = time.monotonic()
        if self.started is None:
            self.started = time.time()
        self.frames += 1
        self.bytes += len(frame.data)
        self._arrivals.append((now, len(frame.data), frame.kind))
        while self._arrivals and now - self._arrivals[0][0] > WINDOW:
            self._arrivals.popleft()
        if frame.kind == "video" and frame.keyframe:
            self._keyframes.append(frame.dts)

    def publisher_reset(self) -> None:
        self.started = None
        self._arrivals.clear()
        self._keyframes.clear()

    def report(self) -> dict[str, Any]:
        now = time.monotonic()
        recent = [a for a in self._arrivals if now - a[0] <= WINDOW]
        span = (recent[-1][0] - recent[0][0]) if len(recent) > 1 else 0.0
        bits = sum(size for _, size, _ in recent) * 8
        video = sum(1 for _, _, kind in recent if kind == "video")
        keys = list(self._keyframes)
        gaps = [b - a for a, b in zip(keys, keys[1:], strict=False) if b > a]
        return {
            "uptime": round(time.time() - self.started, 3) if self.started else 0.0,
            "bitrate": int(bits / span) if span > 0 else 0,
            "frameRate": round((video - 1) / span, 2) if span > 0 and video > 1 else 0.0,
            "keyframeInterval": round(sum(gaps) / len(gaps) / self._video_timescale, 3)
            if gaps else None,
            "codecs": self.codecs,
            "frames": self.frames,
            "bytes": self.bytes,
        }
