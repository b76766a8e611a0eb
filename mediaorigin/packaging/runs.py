"""From a planned segment to a `SampleRun`: which bytes to read, and how to time them."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import pairwise

from .model import MediaError, SampleRun
from .segmenter import Rendition

MAX_GAP = 64 * 1024  # read through gaps smaller than this rather than issue another read


@dataclass(frozen=True)
class ReadSpan:
    """One contiguous read, and where each sample lies inside it."""

    offset: int
    size: int
    pieces: tuple[tuple[int, int], ...]  # (start within the span, length), decode order


def read_plan(r: Rendition, first: int, end: int) -> list[ReadSpan]:
    """Coalesce the samples [first, end) into few contiguous reads.

    Samples of one track are usually stored in ascending chunks interleaved with other tracks;
    small gaps are read through, large ones split the read.
    """
    offsets, sizes = r.track.offsets, r.track.sizes
    spans: list[ReadSpan] = []
    start = cur_end = -1
    pieces: list[tuple[int, int]] = []
    for i in range(first, end):
        off, size = offsets[i], sizes[i]
        if pieces and start <= off and off - cur_end <= MAX_GAP and off >= cur_end:
            pieces.append((off - start, size))
            cur_end = off + size
            continue
        if pieces:
            spans.append(ReadSpan(start, cur_end - start, tuple(pieces)))
        start, cur_end, pieces = off, off + size, [(0, size)]
    if pieces:
        spans.append(ReadSpan(start, cur_end - start, tuple(pieces)))
    return spans


def assemble(spans: list[ReadSpan], blobs: list[bytes]) -> bytes:
    """Concatenate the samples out of the spans' bytes, in decode order."""
    parts: list[bytes | memoryview] = []
    for span, blob in zip(spans, blobs, strict=True):
        if len(blob) < span.size:
            raise MediaError("short read: the media file changed or is truncated")
        view = memoryview(blob)
        if len(span.pieces) == 1 or _is_contiguous(span):
            parts.append(view[: span.size])
        else:
            parts.extend(view[s : s + n] for s, n in span.pieces)
    return b"".join(parts)


def _is_contiguous(span: ReadSpan) -> bool:
    return all(a[0] + a[1] == b[0] for a, b in pairwise(span.pieces))


def sample_run(r: Rendition, first: int, end: int, data: bytes,
               timeline: str = "ts") -> SampleRun:
    """Timing and flags of samples [first, end).

    "ts": the segmenter's output timeline (presentation time + `Presentation.offset`), whose
    timestamps are never negative, as MPEG-TS needs. "fmp4": the track's own decode times with
    the edit list folded into signed composition offsets, so that samples are presented at
    their presentation time and the first frame at 0 (HLS players see no gap at the start).
    """
    t = r.track
    dts = t.dts[first : end + 1]
    durations = [b - a for a, b in pairwise(dts)]
    cts = list(t.cts[first:end]) if t.cts is not None else None
    base = r.out_time(first)
    if timeline == "fmp4":
        base = t.dts[first]
        if t.edit_shift:
            shift = t.edit_shift
            cts = [c + shift for c in cts] if cts is not None else [shift] * (end - first)
    if t.sync is None:
        sync = [True] * (end - first)
    else:
        sync = [False] * (end - first)
        j = bisect_left(t.sync, first)
        while j < len(t.sync) and t.sync[j] < end:
            sync[t.sync[j] - first] = True
            j += 1
    return SampleRun(track=t, base_time=base, durations=durations,
                     sizes=list(t.sizes[first:end]), cts_offsets=cts, sync=sync, data=data)
