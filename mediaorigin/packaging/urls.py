"""Child URL names of a presentation, written and parsed in one place.

Manifests emit these names relative to the entry manifest (`{rendition_id}/{name}`); the origin
parses a requested name back with `parse_child`. Keeping both directions here means a name the
manifests emit is always one the origin accepts, and nothing else is (no leading zeros, no
path tricks, no unbounded numbers), so every segment has exactly one URL for CDN caches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Container = Literal["fmp4", "ts"]
ChildKind = Literal[
    "init", "segment", "iframe", "playlist", "iframes_playlist", "vtt_segment", "vtt_full"
]

INIT = "init.mp4"
VTT_FULL = "full.vtt"
SUBTITLE_PLAYLIST = "media.m3u8"
_SEGMENT_EXT = {"fmp4": "m4s", "ts": "ts"}


def segment_name(n: int, container: Container) -> str:
    return f"seg-{n}.{_SEGMENT_EXT[container]}"


def segment_template(container: Container) -> str:
    """`segment_name` as a DASH SegmentTemplate@media ($Number$ = Segment.number)."""
    return f"seg-$Number$.{_SEGMENT_EXT[container]}"


def iframe_name(k: int, container: Container) -> str:
    return f"iframe-{k}.{_SEGMENT_EXT[container]}"


def vtt_segment_name(n: int, container: Container = "fmp4") -> str:
    """WebVTT segments differ per container only in X-TIMESTAMP-MAP (the timelines differ)."""
    return f"seg-{n}.vtt" if container == "fmp4" else f"seg-{n}-ts.vtt"


def playlist_name(container: Container) -> str:
    """Media playlist of a rendition; TS gets its own name so both can be cached side by side."""
    return "media.m3u8" if container == "fmp4" else "media-ts.m3u8"


def iframes_playlist_name(container: Container) -> str:
    return "iframes.m3u8" if container == "fmp4" else "iframes-ts.m3u8"


def child_path(rendition_id: str, name: str) -> str:
    """A child's URL relative to the entry manifest (master.m3u8 or manifest.mpd)."""
    return f"{rendition_id}/{name}"


def with_query(url: str, query: str) -> str:
    """Carry the entry manifest's (already encoded) query, e.g. a token, onto a child URL."""
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


@dataclass(frozen=True)
class Child:
    """What a requested child name asks for."""

    kind: ChildKind
    container: Literal["fmp4", "ts", "vtt"]  # vtt segments: the timeline they are mapped to
    number: int | None = None


# 1 to 10 digits, no leading zero: one spelling per number, bounded work for the origin.
_NUM = r"(?P<n>[1-9][0-9]{0,9})"
_PATTERNS: list[tuple[re.Pattern[str], ChildKind, Literal["fmp4", "ts", "vtt"]]] = [
    (re.compile(p, re.ASCII), kind, container)
    for p, kind, container in [
        (r"init\.mp4", "init", "fmp4"),
        (rf"seg-{_NUM}\.m4s", "segment", "fmp4"),
        (rf"seg-{_NUM}\.ts", "segment", "ts"),
        (rf"iframe-{_NUM}\.m4s", "iframe", "fmp4"),
        (rf"iframe-{_NUM}\.ts", "iframe", "ts"),
        (r"media\.m3u8", "playlist", "fmp4"),
        (r"media-ts\.m3u8", "playlist", "ts"),
        (r"iframes\.m3u8", "iframes_playlist", "fmp4"),
        (r"iframes-ts\.m3u8", "iframes_playlist", "ts"),
        (rf"seg-{_NUM}\.vtt", "vtt_segment", "fmp4"),
        (rf"seg-{_NUM}-ts\.vtt", "vtt_segment", "ts"),
        (r"full\.vtt", "vtt_full", "vtt"),
    ]
]

RENDITION_ID = r"[vas](?:0|[1-9][0-9]{0,3})"  # also the origin's route pattern
_RENDITION_ID = re.compile(RENDITION_ID, re.ASCII)


def parse_child(name: str) -> Child | None:
    """The child a name (the last path component, query already removed) asks for, else None.

    Under a subtitle rendition (`s0/`), `media.m3u8` is the subtitle playlist: the origin
    decides that from the rendition id, the name alone says `playlist`.
    """
    if len(name) > 40:  # longer than any valid name; spares the regexes hostile input
        return None
    for pattern, kind, container in _PATTERNS:
        m = pattern.fullmatch(name)
        if m:
            n = m.groupdict().get("n")
            return Child(kind, container, int(n) if n is not None else None)
    return None


def parse_rendition_id(part: str) -> str | None:
    """The rendition id path component ("v0", "a1", "s2"), else None; same no-leading-zero rule."""
    return part if _RENDITION_ID.fullmatch(part) else None
