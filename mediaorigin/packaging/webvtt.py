"""WebVTT sidecar subtitles: parse once, cut into HLS segments or one DASH document.

Cue times are presentation seconds (time zero = the first frame the edit lists present), kept
as integer milliseconds so that parsing and re-serializing never drifts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .model import MediaError


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str
    id: str = ""
    settings: str = ""  # "align:start position:10%" etc., written back verbatim

    @property
    def start(self) -> float:
        return self.start_ms / 1000

    @property
    def end(self) -> float:
        return self.end_ms / 1000

    def overlaps(self, t0: float, t1: float) -> bool:
        """True when the cue shows during [t0, t1) (a zero-length cue counts at its instant)."""
        if self.start_ms == self.end_ms:
            return t0 <= self.start < t1
        return self.start < t1 and self.end > t0


@dataclass
class SubtitleTrack:
    id: str  # "s0", "s1": the order the caller gives
    language: str  # ISO 639-2 or BCP 47
    name: str  # display name; empty to derive one from the language
    cues: list[Cue] = field(default_factory=list)


_TS = r"(?:([0-9]+):)?([0-9]{2}):([0-9]{2})[.,]([0-9]{1,3})"
_TIMING = re.compile(rf"\s*{_TS}[ \t]+-->[ \t]+{_TS}(?:[ \t]+(.*?))?\s*", re.ASCII)
_SKIPPED_BLOCKS = ("NOTE", "STYLE", "REGION")


def parse_webvtt(text: str) -> list[Cue]:
    """Cues of a WebVTT file, in file order.

    Lenient where real files are sloppy (BOM, CRLF, `,` as decimal mark, missing blank line
    between cues, junk blocks), strict about the signature so that an SRT or a random upload
    is refused with a reason instead of becoming an empty track.
    """
    lines = text.removeprefix("\ufeff").replace("\0", "\ufffd").replace("\r\n", "\n")
    lines_list = lines.replace("\r", "\n").split("\n")
    first = lines_list[0]
    if not (first == "WEBVTT" or first.startswith(("WEBVTT ", "WEBVTT\t"))):
        raise MediaError("not a WebVTT file: the first line must be 'WEBVTT'")
    cues: list[Cue] = []
    i = _skip_header(lines_list)
    while i < len(lines_list):
        i = _parse_block(lines_list, i, cues)
    return cues


def _skip_header(lines: list[str]) -> int:
    """Index after the header block (ends at a blank line, or at a cue missing that line)."""
    i = 1
    while i < len(lines) and lines[i].strip() and "-->" not in lines[i]:
        i += 1
    return i


def _parse_block(lines: list[str], i: int, cues: list[Cue]) -> int:
    """Parse the block starting at or after `i`; append a cue if it is one. Returns next index."""
    n = len(lines)
    while i < n and not lines[i].strip():
        i += 1
    if i >= n:
        return i
    head = lines[i]
    ident = ""
    if "-->" not in head:
        if head.split(maxsplit=1)[0] in _SKIPPED_BLOCKS or i + 1 >= n or "-->" not in lines[i + 1]:
            return _skip_to_blank(lines, i)
        ident, i = head.strip(), i + 1
    timing = _TIMING.fullmatch(lines[i])
    if timing is None:
        return _skip_to_blank(lines, i)
    i += 1
    body: list[str] = []
    while i < n and lines[i].strip() and "-->" not in lines[i]:
        body.append(lines[i])
        i += 1
    g = timing.groups()
    start, end = _ms(*g[0:4]), _ms(*g[4:8])
    if start is not None and end is not None and end >= start:
        cues.append(Cue(start, end, "\n".join(body), ident, g[8] or ""))
    return i


def _skip_to_blank(lines: list[str], i: int) -> int:
    while i < len(lines) and lines[i].strip():
        i += 1
    return i


def _ms(h: str | None, m: str, s: str, frac: str) -> int | None:
    minutes, seconds = int(m), int(s)
    if minutes > 59 or seconds > 59:
        return None
    millis = int(frac.ljust(3, "0"))
    return ((int(h or 0) * 60 + minutes) * 60 + seconds) * 1000 + millis


def _to_ms(seconds: float) -> int:
    """Milliseconds, with infinities clamped so an open-ended window needs no special case."""
    return round(max(-1e12, min(1e12, seconds)) * 1000)


def timestamp(ms: int) -> str:
    """hh:mm:ss.ttt, the form every player accepts."""
    ms = max(0, ms)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, t = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{t:03d}"


def _cue_text(c: Cue, start_ms: int, end_ms: int) -> str:
    timing = f"{timestamp(start_ms)} --> {timestamp(end_ms)}"
    if c.settings:
        timing += f" {c.settings}"
    head = f"{c.id}\n{timing}" if c.id else timing
    return f"{head}\n{c.text}\n" if c.text else f"{head}\n"


def vtt_segment(cues: list[Cue], t0: float, t1: float, mpegts: int) -> str:
    """One HLS subtitle segment: the cues showing during [t0, t1), original timestamps.

    A cue spanning a boundary is in both segments (HLS allows it; players de-duplicate).
    X-TIMESTAMP-MAP ties LOCAL 0 (presentation time zero) to the media's 90 kHz clock.
    """
    parts = ["WEBVTT", f"X-TIMESTAMP-MAP=MPEGTS:{mpegts},LOCAL:00:00:00.000", ""]
    parts += [_cue_text(c, c.start_ms, c.end_ms) for c in cues if c.overlaps(t0, t1)]
    return "\n".join(parts) + ("\n" if len(parts) == 3 else "")


def vtt_document(cues: list[Cue], shift: float, t0: float, t1: float) -> str:
    """The whole subtitle file for DASH: cues showing during [t0, t1), cut to that window, then
    moved by -`shift` so that a clip's first frame is 00:00:00.000. All arguments are
    presentation seconds."""
    lo, hi, delta = _to_ms(t0), _to_ms(t1), _to_ms(shift)
    parts = ["WEBVTT", ""]
    for c in cues:
        if c.overlaps(t0, t1):
            start, end = max(c.start_ms, lo), min(c.end_ms, hi)
            parts.append(_cue_text(c, start - delta, max(start, end) - delta))
    return "\n".join(parts) + ("\n" if len(parts) == 2 else "")
