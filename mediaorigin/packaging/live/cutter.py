"""Cut a live elementary stream into LL-HLS parts and segments (pure, no I/O).

Video drives the cuts: a part ends at the frame nearest the part target, and a segment ends
before the first keyframe once it reaches the target duration, so every segment starts with a
keyframe and parts are the target give or take half a frame (the playlist announces the
longest one as PART-TARGET). Audio follows
video: the audio part for [a, b) is complete once an audio frame at or after b has arrived, and
both tracks' parts are released together so every rendition lists the same parts. Without
video, audio cuts on its own. When the audio stops (a muted encoder, a publisher back without
a microphone on a lecture that had one), parts go out without it after AUDIO_WAIT, filled
with silent frames when the epoch has one: the audio track stays continuous, so players of
the muxed renditions do not stall on a track that has no samples.

Lower ABR rungs (transcoded from the published video, no B-frames, keyframes exactly where
the source has them) follow the same cuts: a rung part holds the rung frames presented before
the source part's boundary (the next segment's keyframe, or the part end shifted by the
source's composition delay), and parts are released only once every rung has caught up, so
every rendition lists the same parts.

Timestamps come in already on the channel timeline, in each track's output timescale.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from ..model import CodecInfo, SampleRun, Track

# Audio this far behind the video cut no longer holds parts back (a stalled microphone must
# not stall the picture); the same for a transcoded rung that cannot keep up.
AUDIO_WAIT = 1.5
RUNG_WAIT = 3.0
AAC_FRAME = 1024  # samples in an AAC frame: a silent frame's duration


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
    ends_segment: bool  # the last part of its segment (the next keyframe cut is known)
    video: SampleRun | None
    audio: SampleRun | None
    rungs: dict[str, SampleRun] = field(default_factory=dict)


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
    ends_segment: bool = False
    end: int = 0
    rung_boundary: int | None = None  # rung frames presented before this belong here


class Cutter:
    def __init__(self, video: Track | None, audio: Track | None, target: float,
                 part_target: float, rungs: dict[str, Track] | None = None,
                 silence: bytes | None = None) -> None:
        """`silence`: one silent audio frame (AAC: 1024 samples) that fills the audio of parts
        released without it."""
        if video is None and audio is None:
            raise ValueError("a live epoch needs a video or an audio track")
        self.video, self.audio = video, audio
        self.rungs = dict(rungs or {}) if video is not None else {}
        self._rung_samples: dict[str, list[Sample]] = {name: [] for name in self.rungs}
        self._composition_delay: int | None = None  # cts of the first keyframe
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
        self._silence = silence if video is not None and audio is not None else None
        self._audio_end: int | None = None  # where the audio of the parts released so far ends
        self._audio_missing = False  # a part went out without waiting audio; none came since

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
        if self._audio_end is not None and dts < self._audio_end:
            return []  # late: its part went out without it (filled with silence)
        self._audio_missing = False
        self._audio.append(sample)
        return self._release()

    def push_rung(self, name: str, pts: int, sync: bool, data: bytes) -> list[CutPart]:
        """A transcoded frame of rung `name` (presentation order, no B-frames: dts = pts)."""
        samples = self._rung_samples.get(name)
        if samples is None or (samples and pts <= samples[-1].dts):
            return []
        if not samples and not sync:
            return []  # a rung starts with its first keyframe
        samples.append(Sample(pts, 0, sync, data))
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
            if self._composition_delay is None:
                self._composition_delay = s.cts
            self._open = _Open(s.dts, [s], new_segment=True)
            self._segment_start = s.dts
            return []
        last = current.samples[-1]
        if s.dts <= last.dts:
            s.dts = last.dts + 1  # a timestamp that does not advance: keep decode order valid
        self._last_duration = s.dts - last.dts
        elapsed = s.dts - self._segment_start
        cut_segment = s.sync and elapsed >= self.target - self._last_duration // 2
        # Parts end at the frame nearest the part target (timestamps in whole milliseconds
        # jitter by one): the playlist's PART-TARGET is the longest part actually made.
        cut_part = s.dts - current.start >= self.part_target - self._last_duration // 2
        if cut_segment or cut_part:
            current.end = s.dts
            current.ends_segment = cut_segment
            # Where rung frames change parts: at the next segment's keyframe exactly, else
            # at the part end in presentation time.
            current.rung_boundary = s.dts + (s.cts if cut_segment
                                             else self._composition_delay or 0)
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
            if not all(self._rung_ready(name, head) for name in self.rungs):
                break
            parts.append(self._emit(self._closed.pop(0), final=False))
        return parts

    def _audio_ready(self, part: _Open) -> bool:
        assert self.audio is not None and self.video is not None
        boundary = self._audio_ticks(part.end)
        if self._audio and self._audio[-1].dts >= boundary:
            return True
        if self._audio_missing:
            return True  # waited once already: the parts after it are not held back again
        newest = self._open.samples[-1].dts if self._open and self._open.samples else part.end
        return newest - part.end > AUDIO_WAIT * self.video.timescale

    def _rung_ready(self, name: str, part: _Open) -> bool:
        samples = self._rung_samples[name]
        if part.rung_boundary is not None and samples and samples[-1].dts >= part.rung_boundary:
            return True
        newest = self._open.samples[-1].dts if self._open and self._open.samples else part.end
        assert self.video is not None
        return newest - part.end > RUNG_WAIT * self.video.timescale

    def _take_rungs(self, part: _Open, final: bool) -> dict[str, SampleRun]:
        runs: dict[str, SampleRun] = {}
        for name, track in self.rungs.items():
            samples = self._rung_samples[name]
            if final or part.rung_boundary is None:
                n = len(samples)
            else:
                n = next((i for i, r in enumerate(samples) if r.dts >= part.rung_boundary),
                         len(samples))
            taken, self._rung_samples[name] = samples[:n], samples[n:]
            if taken:
                following = self._rung_samples[name][0].dts if self._rung_samples[name] \
                    else part.rung_boundary
                runs[name] = _run(track, taken, following)
        return runs

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
                if following is None:  # no audio beyond the part: silence up to its end
                    self._audio_missing = not final
                    taken += self._silent_samples(taken, start, boundary)
                audio_run = _run(self.audio, taken, following, self._last_audio_duration)
                if len(taken) > 1:
                    self._last_audio_duration = taken[-1].dts - taken[-2].dts
                if taken:
                    self._audio_end = taken[-1].dts + audio_run.durations[-1]
        else:
            audio_run = _run(driver, part.samples, end)
        return CutPart(start / ts, (end - start) / ts,
                       independent=part.samples[0].sync if part.samples else False,
                       new_segment=part.new_segment, ends_segment=part.ends_segment or final,
                       video=video_run, audio=audio_run,
                       rungs=self._take_rungs(part, final) if self.rungs else {})

    def _silent_samples(self, taken: list[Sample], start: int, boundary: int) -> list[Sample]:
        """Silent frames from the end of the part's audio (or of the audio before it, or the
        part's start) up to its boundary."""
        if self._silence is None:
            return []
        frame = AAC_FRAME
        if taken:
            at = taken[-1].dts + frame
        elif self._audio_end is not None:
            at = self._audio_end
        else:
            at = self._audio_ticks(start)
        return [Sample(t, 0, True, self._silence) for t in range(at, boundary, frame)]


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
