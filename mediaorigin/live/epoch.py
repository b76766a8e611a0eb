"""One publisher connection's media, placed on the channel timeline and cut into parts.

Sans-IO: `on_track` / `on_frame` in, `CutPart`s out. An epoch starts at the first video
keyframe (once the audio configuration is known, or after a short wait for it) so that every
epoch begins with a keyframe at its own time zero; the channel gives it an offset so that the
timeline continues across reconnects. Video goes out at 90 kHz; audio at its sample rate with
timestamps counted in 1024-sample frames (RTMP's millisecond timestamps would make jittery
durations), resynchronised only on real gaps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

from ..ingest.frames import Frame, TrackConfig
from ..packaging.live.cutter import AAC_FRAME, CutPart, Cutter, live_track
from ..packaging.model import MediaError, Track
from ..packaging.mp4.sample_entries import aac_sample_entry, avc_sample_entry, hevc_sample_entry
from .silence import silent_aac_frame

log = logging.getLogger(__name__)

VIDEO_TIMESCALE = 90_000
STARTUP_WAIT = 1.0  # seconds of media to wait for a second track's configuration


class EpochConfigChanged(Exception):
    """The publisher changed a track's configuration: the channel starts a new epoch."""


@dataclass(frozen=True)
class EpochTracks:
    video: Track | None
    audio: Track | None
    rungs: dict[str, Track]  # transcoded lower renditions of the video


def track_for(config: TrackConfig) -> Track:
    if config.codec == "h264":
        return live_track("video", VIDEO_TIMESCALE, avc_sample_entry(config.config))
    if config.codec == "hevc":
        return live_track("video", VIDEO_TIMESCALE, hevc_sample_entry(config.config))
    if config.codec == "aac":
        info = aac_sample_entry(config.config)
        return live_track("audio", info.sample_rate, info)
    raise MediaError(f"unsupported live codec {config.codec}")


class Epoch:
    def __init__(self, number: int, offset: float, target: float, part_target: float,
                 configs: dict[str, TrackConfig] | None = None,
                 rungs: dict[str, TrackConfig | None] | None = None) -> None:
        self.number = number
        self.offset = Fraction(offset).limit_denominator(VIDEO_TIMESCALE * 48_000)
        self.target, self.part_target = target, part_target
        self.configs: dict[str, TrackConfig] = dict(configs or {})
        self.tracks: EpochTracks | None = None
        self.end = float(offset)  # channel time just after the last part released
        self._cutter: Cutter | None = None
        self._pending: list[Frame] = []
        self._origin = Fraction(0)  # input seconds that map to `offset`
        self._audio_next: int | None = None
        self.frames = 0
        self.video_frames = 0
        # Rung name -> its configuration once the transcoder sent it (None: not yet).
        self.rung_configs: dict[str, TrackConfig | None] = dict(rungs or {})
        self._pending_rungs: list[tuple[str, Frame]] = []

    @property
    def started(self) -> bool:
        return self.tracks is not None

    def on_track(self, config: TrackConfig) -> None:
        """Raises EpochConfigChanged when a started epoch's track changes."""
        old = self.configs.get(config.kind)
        if self.started and old is not None and old.config != config.config:
            raise EpochConfigChanged(config.kind)
        if self.started and old is None:
            return  # a track that appears late waits for the next epoch
        track_for(config)  # refuse unusable configurations at once (MediaError)
        self.configs[config.kind] = config

    def on_frame(self, frame: Frame) -> list[CutPart]:
        self.frames += 1
        self.video_frames += frame.kind == "video"
        if not self.started:
            self._pending.append(frame)
            return self._try_start()
        return self._cut(frame)

    def on_rung_track(self, name: str, config: TrackConfig) -> None:
        if name not in self.rung_configs:
            return
        if self.started:
            if self.rung_configs[name] != config:
                log.warning("epoch %d: rung %s changed configuration; it stops until the "
                            "next epoch", self.number, name)
                self.rung_configs[name] = None
            return
        self.rung_configs[name] = config

    def on_rung_frame(self, name: str, frame: Frame) -> list[CutPart]:
        if not self.started:
            self._pending_rungs = [*self._pending_rungs[-600:], (name, frame)]
            return self._try_start()
        config = self.rung_configs.get(name)
        assert self._cutter is not None and self.tracks is not None
        if config is None or name not in self.tracks.rungs:
            return []
        pts = self._ticks(frame.dts, config, VIDEO_TIMESCALE)
        return self._note(self._cutter.push_rung(name, pts, frame.keyframe, frame.data))

    def finish(self) -> list[CutPart]:
        if not self.started:
            self._pending.clear()
            return []
        assert self._cutter is not None
        return self._note(self._cutter.flush())

    # --- start ---------------------------------------------------------------------------

    def _try_start(self) -> list[CutPart]:
        video_cfg, audio_cfg = self.configs.get("video"), self.configs.get("audio")
        video = [f for f in self._pending if f.kind == "video"]
        audio = [f for f in self._pending if f.kind == "audio"]
        if video_cfg is not None:
            key = next((f for f in video if f.keyframe), None)
            if key is None:
                self._pending = [f for f in self._pending if f.kind == "audio"][-200:]
                return []
            span = _seconds(video[-1].dts - key.dts, video_cfg)
            waiting = audio_cfg is None or None in self.rung_configs.values()
            if waiting and span < STARTUP_WAIT:
                return []
            self._origin = Fraction(key.dts, video_cfg.timescale)
            rungs = {name: track_for(c) for name, c in self.rung_configs.items()
                     if c is not None}
            tracks = EpochTracks(track_for(video_cfg),
                                 track_for(audio_cfg) if audio_cfg is not None else None, rungs)
        elif audio_cfg is not None and audio:
            if _seconds(audio[-1].dts - audio[0].dts, audio_cfg) < STARTUP_WAIT:
                return []
            self._origin = Fraction(audio[0].dts, audio_cfg.timescale)
            tracks = EpochTracks(None, track_for(audio_cfg), {})
        else:
            self._pending = self._pending[-200:]
            return []
        self.tracks = tracks
        silence = silent_aac_frame(audio_cfg.config) if audio_cfg is not None else None
        self._cutter = Cutter(tracks.video, tracks.audio, self.target, self.part_target,
                              tracks.rungs, silence)
        pending, self._pending = self._pending, []
        pending_rungs, self._pending_rungs = self._pending_rungs, []
        parts: list[CutPart] = []
        for f in pending:
            parts += self._cut(f)
        for name, f in pending_rungs:
            parts += self.on_rung_frame(name, f)
        return parts

    # --- timeline ------------------------------------------------------------------------

    def _cut(self, frame: Frame) -> list[CutPart]:
        assert self._cutter is not None and self.tracks is not None
        config = self.configs.get(frame.kind)
        if config is None:
            return []
        if frame.kind == "video" and self.tracks.video is not None:
            dts = self._ticks(frame.dts, config, VIDEO_TIMESCALE)
            if dts < self._ticks_of_origin(VIDEO_TIMESCALE):
                return []
            cts = round(Fraction(frame.cts * VIDEO_TIMESCALE, config.timescale))
            return self._note(self._cutter.push_video(dts, cts, frame.keyframe, frame.data))
        if frame.kind == "audio" and self.tracks.audio is not None:
            rate = self.tracks.audio.timescale
            measured = self._ticks(frame.dts, config, rate)
            if measured < self._ticks_of_origin(rate):
                return []
            expected = self._audio_next
            if expected is None or abs(measured - expected) > 2 * AAC_FRAME:
                expected = measured  # first frame, or a real gap: resynchronise
            self._audio_next = expected + AAC_FRAME
            return self._note(self._cutter.push_audio(expected, frame.data))
        return []

    def _ticks(self, dts: int, config: TrackConfig, timescale: int) -> int:
        seconds = Fraction(dts, config.timescale) - self._origin + self.offset
        return round(seconds * timescale)

    def _ticks_of_origin(self, timescale: int) -> int:
        return round(self.offset * timescale)

    def _note(self, parts: list[CutPart]) -> list[CutPart]:
        if parts:
            last = parts[-1]
            self.end = last.start + last.duration
        return parts


def _seconds(ticks: int, config: TrackConfig) -> float:
    return ticks / config.timescale
