"""What the manifests advertise about a rendition: bitrates, frame rate, language.

Bitrates are measured from the sample table, not trusted from `btrt`/`esds` hints: HLS
BANDWIDTH must cover the real peak (Apple: within 10 %), and players pick renditions by it.
The container overhead the packager will add (moof/mdat or TS/PES packets) is estimated so that
the advertised figure is what actually goes over the wire.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate, islice
from operator import sub
from typing import Literal

from .model import Track
from .segmenter import Rendition

Container = Literal["fmp4", "ts"]

# fMP4: mdat header + moof with mfhd/traf/tfhd/tfdt/trun header + one trun entry per sample.
_FMP4_MDAT = 8
_FMP4_MOOF = 100
_FMP4_PER_SAMPLE = 16
# MPEG-TS: 188-byte packets carrying 184 payload bytes; one PES per sample.
_TS_PACKET = 188
_TS_PAYLOAD = 184
_TS_TABLES = 2 * _TS_PACKET  # PAT + PMT at the start of every segment
_PES_VIDEO = 19 + 6  # PES header with PTS and DTS, plus the access unit delimiter we insert
_PES_AUDIO = 14  # PES header with PTS
_ADTS = 7  # AAC in TS is ADTS-framed


@dataclass
class RenditionStats:
    peak_bps: int
    average_bps: int
    frame_rate: float | None
    max_segment_seconds: float


def rendition_stats(
    r: Rendition, container: Container, *, target: float | None = None
) -> RenditionStats:
    """Measure a rendition as the packager will serve it in `container`.

    Peak ignores segments shorter than half of `target` (a short tail segment has too few
    seconds to average over and would inflate the peak) unless every segment is that short.
    Without `target`, half of the longest segment stands in for it.
    """
    segs = [s for s in r.segments if s.duration > 0]
    ts = r.track.timescale
    rate = frame_rate(r.track)
    if not segs:
        return RenditionStats(0, 0, float(rate) if rate else None, 0.0)
    sizes = segment_bytes(r, container)
    longest = max(s.duration for s in segs)
    half = (target * ts if target else longest) / 2
    long_enough = [(s, b) for s, b in zip(r.segments, sizes, strict=True)
                   if s.duration > 0 and s.duration >= half]
    measured = long_enough or [(s, b) for s, b in zip(r.segments, sizes, strict=True)
                               if s.duration > 0]
    peak = max(b * 8 * ts / s.duration for s, b in measured)
    total_ticks = sum(s.duration for s in segs)
    average = sum(sizes) * 8 * ts / total_ticks
    return RenditionStats(
        math.ceil(peak), math.ceil(average), float(rate) if rate else None, longest / ts
    )


def segment_bytes(r: Rendition, container: Container) -> list[int]:
    """Estimated bytes on the wire of every segment, in segment order.

    One pass of prefix sums over the samples, so a long file costs one loop, not one per
    segment.
    """
    t = r.track
    payload = list(accumulate(t.sizes, initial=0))
    if container == "fmp4":
        return [
            payload[s.end] - payload[s.first]
            + _FMP4_MDAT + _FMP4_MOOF + _FMP4_PER_SAMPLE * (s.end - s.first)
            for s in r.segments
        ]
    extra = _pes_extra(t)
    packets = list(accumulate(((n + extra + _TS_PAYLOAD - 1) // _TS_PAYLOAD for n in t.sizes),
                              initial=0))
    return [(packets[s.end] - packets[s.first]) * _TS_PACKET + _TS_TABLES for s in r.segments]


def sample_wire_bytes(t: Track, i: int, container: Container) -> int:
    """Estimated bytes of one sample served alone (an I-frame playlist entry)."""
    size = t.sizes[i]
    if container == "fmp4":
        return size + _FMP4_MDAT + _FMP4_MOOF + _FMP4_PER_SAMPLE
    packets = (size + _pes_extra(t) + _TS_PAYLOAD - 1) // _TS_PAYLOAD
    return packets * _TS_PACKET + _TS_TABLES


def _pes_extra(t: Track) -> int:
    if t.kind == "video":
        return _PES_VIDEO
    return _PES_AUDIO + (_ADTS if t.codec.fourcc == "mp4a" else 0)


def frame_rate(t: Track) -> Fraction | None:
    """Frame rate of a video track from its most common sample duration.

    The mode, not the mean, so that an odd last sample or a short stall does not turn 25 into
    24.98; exact as a fraction so DASH can write 30000/1001.
    """
    if t.kind != "video" or t.sample_count == 0:
        return None
    counts = Counter(map(sub, islice(t.dts, 1, None), t.dts))
    counts.pop(0, None)
    if not counts:
        return None
    duration = counts.most_common(1)[0][0]
    return Fraction(t.timescale, duration) if duration > 0 else None


# --- languages -------------------------------------------------------------------------------
# ISO 639-2 (T and B forms, as mdhd and sidecar files spell them) -> BCP 47 and a display name.
# Small on purpose: codes not listed are passed through (a valid 3-letter BCP 47 subtag).
_LANGUAGES: dict[str, tuple[str, str]] = {
    "eng": ("en", "English"),
    "deu": ("de", "German"),
    "ger": ("de", "German"),
    "fra": ("fr", "French"),
    "fre": ("fr", "French"),
    "spa": ("es", "Spanish"),
    "ita": ("it", "Italian"),
    "por": ("pt", "Portuguese"),
    "nld": ("nl", "Dutch"),
    "dut": ("nl", "Dutch"),
    "rus": ("ru", "Russian"),
    "jpn": ("ja", "Japanese"),
    "zho": ("zh", "Chinese"),
    "chi": ("zh", "Chinese"),
    "kor": ("ko", "Korean"),
    "ara": ("ar", "Arabic"),
    "hin": ("hi", "Hindi"),
    "pol": ("pl", "Polish"),
    "tur": ("tr", "Turkish"),
    "swe": ("sv", "Swedish"),
}
_BY_BCP47 = {bcp: name for bcp, name in _LANGUAGES.values()}
_BCP47_LIKE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})*", re.ASCII)


def bcp47(code: str) -> str:
    """BCP 47 tag for an ISO 639-2 code (or an already-BCP 47 tag); "und" when unusable."""
    c = code.strip().lower().replace("_", "-")
    if c in _LANGUAGES:
        return _LANGUAGES[c][0]
    return c if _BCP47_LIKE.fullmatch(c) else "und"


def language_name(code: str) -> str:
    """English display name for a language; the tag itself when unknown."""
    tag = bcp47(code)
    return _BY_BCP47.get(tag.split("-")[0].lower(), tag)


def unique_names(names: list[str]) -> list[str]:
    """Make display names unique in order: the second "English" becomes "English 2"."""
    taken: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name} {n}"
        taken.add(candidate)
        out.append(candidate)
    return out
