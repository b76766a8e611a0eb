"""Cut a live elementary stream into LL-HLS parts and segments (pure, no I/O).

Video drives the cuts: a part ends before the frame that would make it longer than the part
target, and a segment ends before the first keyframe once it reaches the target duration, so
every segment starts with a keyframe and every part is at most PART-TARGET long. Audio follows
video: the audio part for [a, b) is complete once an audio frame at or after b has arrived, and
both tracks' parts are released together so every rendition lists the same parts. Without
video, audio cuts on its own.

Timestamps come in already on the channel timeline, in each track's output timescale.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from ..model import CodecInfo, SampleRun, Track

# Audio this far behind the video cut no longer holds parts back (a stalled microphone must
# not stall the picture).
AUDIO_WAIT = 1.5


@dataclass(slots=True)
class Sample:
    dts: int
    cts: int
    sync: bool
    data: bytes


@dataclass(slots=True)
class CutPart:
    """One part of every track, released together."""

    start: float  # seconds on the channel timeline
    duration: float
    independent: bool  # starts with a keyframe (or is audio-only)
    new_segment: bool  # the first part of a segment
    video: SampleRun | None
    audio: SampleRun | None


def live_track(kind: str, timescale: int, codec: CodecInfo) -> Track:
    """A Track with no sample table: what the fMP4 and TS writers need to know of live media."""
    return Track(track_id=1, kind=kind, timescale=timescale, language="und", codec=codec,  # type: ignore[arg-type]
                 sizes=array("I"), offsets=array("Q"), dts=array("q"), cts=None, sync=None)


@dataclass
class _Open:
    """A closed video part waiting for its audio, or the part being filled."""

    start: int  # ticks of the driving track
    samples: list[Sample] = field(default_factory=list)
    new_segment: bool = False
    end: int = 0


class Cutter:
    def __init__(self, video: Track | None, audio: Track | None, target: float,
                 part_target: float) -> None:
        if video is None and audio is None:
            raise ValueError("a live epoch needs a video or an audio track")
        self.video, self.audio = video, audio
        self.driver = video if video is not None else audio
        assert self.driver is not None
        ts = self.driver.timescale
        self.target = round(target * ts)
        self.part_target = round(part_target * ts)
        self._open: _Open | None = None
        self._segment_start = 0
        self._closed: list[_Open] = []  # driver parts waiting for audio
        self._audio: list[Sample] = []
        self._last_duration = 0
        self._last_audio_duration = 1024

    # --- input ---------------------------------------------------------------------------

    def push_video(self, dts: int, cts: int, sync: bool, data: bytes) -> list[CutPart]:
        if self.video is None:
            return []
        return self._push_driver(Sample(dts, cts, sync, data))

    def push_audio(self, dts: int, data: bytes) -> list[CutPart]:
        if self.audio is None:
            return []
        sample = Sample(dts, 0, True, data)
        if self.video is None:
            return self._push_driver(sample)
        if self._audio and dts <= self._audio[-1].dts:
            return []  # duplicate or out of order: dropped, audio decode order is strict
        self._audio.append(sample)
        return self._release()

    def flush(self) -> list[CutPart]:
        """End of the epoch: every frame received goes out."""
        parts: list[CutPart] = []
        if self._open is not None and self._open.samples:
            last = self._open.samples[-1]
            self._open.end = last.dts + (self._last_duration or 1)
            self._closed.append(self._open)
        self._open = None
        while self._closed:
            parts.append(self._emit(self._closed.pop(0), final=not self._closed))
        return parts

    # --- cutting -------------------------------------------------------------------------

    def _push_driver(self, s: Sample) -> list[CutPart]:
        current = self._open
        if current is None:
            if not s.sync:
                return []  # wait for the first keyframe
            self._open = _Open(s.dts, [s], new_segment=True)
            self._segment_start = s.dts
            return []
        last = current.samples[-1]
        if s.dts <= last.dts:
            s.dts = last.dts + 1  # a timestamp that does not advance: keep decode order valid
        self._last_duration = s.dts - last.dts
        cut_segment = s.sync and s.dts - self._segment_start >= self.target - self._last_duration // 2
        cut_part = s.dts - current.start + self._last_duration > self.part_target
        if cut_segment or cut_part:
            current.end = s.dts
            self._closed.append(current)
            self._open = _Open(s.dts, [s], new_segment=cut_segment)
            if cut_segment:
                self._segment_start = s.dts
        else:
            current.samples.append(s)
        return self._release()

    def _release(self) -> list[CutPart]:
        parts: list[CutPart] = []
        while self._closed:
            head = self._closed[0]
            if self.video is not None and self.audio is not None and not self._audio_ready(head):
                break
            parts.append(self._emit(self._closed.pop(0), final=False))
        return parts

    def _audio_ready(self, part: _Open) -> bool:
        assert self.audio is not None and self.video is not None
        boundary = self._audio_ticks(part.end)
        if self._audio and self._audio[-1].dts >= boundary:
            return True
        newest = self._open.samples[-1].dts if self._open and self._open.samples else part.end
        return newest - part.end > AUDIO_WAIT * self.video.timescale

    def _audio_ticks(self, video_ticks: int) -> int:
        assert self.audio is not None and self.video is not None
        return video_ticks * self.audio.timescale // self.video.timescale

    def _emit(self, part: _Open, final: bool) -> CutPart:
        driver = self.driver
        assert driver is not None
        start, end = part.start, part.end
        ts = driver.timescale
        video_run = audio_run = None
        if self.video is not None:
            video_run = _run(self.video, part.samples, end)
            if self.audio is not None:
                boundary = self._audio_ticks(end)
                n = len(self._audio) if final else \
                    next((i for i, a in enumerate(self._audio) if a.dts >= boundary),
                         len(self._audio))
                taken, self._audio = self._audio[:n], self._audio[n:]
                following = self._audio[0].dts if self._audio else None
                audio_run = _run(self.audio, taken, following, self._last_audio_duration)
                if len(taken) > 1:
                    self._last_audio_duration = taken[-1].dts - taken[-2].dts
        else:
            audio_run = _run(driver, part.samples, end)
        return CutPart(start / ts, (end - start) / ts,
                       independent=part.samples[0].sync if part.samples else False,
                       new_segment=part.new_segment, video=video_run, audio=audio_run)


def _run(track: Track, samples: list[Sample], end: int | None,
         fallback_duration: int = 1) -> SampleRun:
    """A SampleRun; the last sample lasts until `end` (the next sample), else as the one before."""
    n = len(samples)
    durations = [samples[i + 1].dts - samples[i].dts for i in range(n - 1)]
    if n:
        if end is not None and end > samples[-1].dts:
            durations.append(end - samples[-1].dts)
        else:
            durations.append(durations[-1] if durations else fallback_duration)
    cts = [s.cts for s in samples]
    return SampleRun(
        track=track, base_time=samples[0].dts if n else (end or 0),
        durations=durations, sizes=[len(s.data) for s in samples],
        cts_offsets=cts if any(cts) else None, sync=[s.sync for s in samples],
        data=b"".join(s.data for s in samples))
