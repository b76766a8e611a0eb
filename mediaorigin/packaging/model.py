"""The neutral media model every reader and writer meets in.

An MP4 file is indexed into `Track`s (sample tables as compact arrays); a `SampleRun` is the
slice of one track that goes into one segment, with its payload bytes already read. Writers
(fMP4, MPEG-TS) take `SampleRun`s and return bytes; they never touch files.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Literal

TrackKind = Literal["video", "audio"]


class MediaError(ValueError):
    """Input media that cannot be indexed or packaged; the message says why."""


@dataclass(frozen=True)
class CodecInfo:
    """What a player needs to know about a track's codec, taken from its sample entry."""

    fourcc: str  # sample entry type: avc1, avc3, hvc1, hev1, mp4a, ac-3, ec-3, Opus, ...
    codec: str  # RFC 6381 string, e.g. avc1.640028 or mp4a.40.2
    sample_entry: bytes  # the whole stsd child box, copied verbatim into init segments
    config: bytes = b""  # avcC/hvcC record or AudioSpecificConfig (for Annex B / ADTS)
    width: int = 0
    height: int = 0
    channels: int = 0
    sample_rate: int = 0


@dataclass
class Track:
    """One track's sample table, expanded to per-sample arrays.

    `dts` has one more entry than there are samples: the decode end of the last sample, so
    that every duration is `dts[i + 1] - dts[i]`.
    """

    track_id: int
    kind: TrackKind
    timescale: int
    language: str  # ISO 639-2/T from mdhd ("und" when unset)
    codec: CodecInfo
    sizes: array  # 'I'
    offsets: array  # 'Q', absolute file offsets
    dts: array  # 'q', len(sizes) + 1
    cts: array | None  # 'i' composition offsets, None when every offset is zero
    sync: array | None  # 'I' indices of sync samples, ascending; None when all are sync
    # Ticks to add to dts to reach the presentation timeline (edit list: empty edits minus
    # the first media_time).
    edit_shift: int = 0
    name: str = ""
    bitrate_hint: int = 0  # from btrt/esds when present, else 0

    @property
    def sample_count(self) -> int:
        return len(self.sizes)

    @property
    def duration(self) -> int:
        return self.dts[-1] - self.dts[0] if len(self.dts) else 0

    def is_sync(self, i: int) -> bool:
        if self.sync is None:
            return True
        from bisect import bisect_left

        j = bisect_left(self.sync, i)
        return j < len(self.sync) and self.sync[j] == i

    def sync_indices(self) -> array:
        return self.sync if self.sync is not None else array("I", range(self.sample_count))


@dataclass
class MediaIndex:
    """Everything the origin needs to know about one stored MP4 file, without decoding."""

    file_size: int
    movie_timescale: int
    tracks: list[Track] = field(default_factory=list)
    # Identifies the content (hash of moov and file size), the same on every replica; used in
    # ETags and cache keys so that they do not depend on mtimes or inodes.
    content_id: str = ""

    def by_kind(self, kind: TrackKind) -> list[Track]:
        return [t for t in self.tracks if t.kind == kind]


@dataclass
class SampleRun:
    """The samples of one track that make up one segment, ready to be written.

    `base_time` is the output decode time of the first sample in the track's timescale; the
    payload is the samples' bytes concatenated in decode order.
    """

    track: Track
    base_time: int
    durations: list[int]
    sizes: list[int]
    cts_offsets: list[int] | None  # None: all zero
    sync: list[bool]
    data: bytes

    def __len__(self) -> int:
        return len(self.sizes)
