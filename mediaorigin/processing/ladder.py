"""The ABR ladder: which renditions an upload gets, at which size and bitrate.

Pure arithmetic, no media I/O, so the plan can be shown (and refused) before any transcoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from mediaorigin.processing.errors import ProcessingError


@dataclass(frozen=True)
class Rung:
    """One rendition of the ladder; `height` is the coded height, width follows the source."""

    name: str
    height: int
    video_bitrate: int
    audio_bitrate: int
    width: int = 0  # 0 until plan_ladder has seen the source


DEFAULT_AUDIO_BITRATE = 128_000

# Bitrates for H.264 at veryfast, in line with common VOD ladders (Apple HLS authoring spec).
DEFAULT_RUNGS: dict[str, Rung] = {
    r.name: r
    for r in (
        Rung("2160p", 2160, 16_000_000, DEFAULT_AUDIO_BITRATE),
        Rung("1440p", 1440, 9_000_000, DEFAULT_AUDIO_BITRATE),
        Rung("1080p", 1080, 5_000_000, DEFAULT_AUDIO_BITRATE),
        Rung("720p", 720, 2_500_000, DEFAULT_AUDIO_BITRATE),
        Rung("480p", 480, 1_000_000, DEFAULT_AUDIO_BITRATE),
        Rung("360p", 360, 600_000, DEFAULT_AUDIO_BITRATE),
        Rung("240p", 240, 300_000, DEFAULT_AUDIO_BITRATE),
    )
}

_BITRATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")
_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}


def parse_bitrate(value: str | int) -> int:
    """Bits per second from 5000000, "800000", "5000k" or "5M" (config files use all three)."""
    if isinstance(value, bool):
        raise ProcessingError("bad_config", f"bad bitrate: {value!r}")
    if isinstance(value, int):
        bps = value
    elif isinstance(value, str) and (m := _BITRATE.match(value)):
        bps = int(Fraction(m.group(1)) * _SUFFIX[m.group(2).lower()])
    else:
        raise ProcessingError("bad_config", f"bad bitrate: {value!r}")
    if bps <= 0:
        raise ProcessingError("bad_config", f"bitrate must be positive: {value!r}")
    return bps


def _even(x: float) -> int:
    """Nearest even integer >= 2: yuv420p needs even dimensions."""
    return max(2, int(round(x / 2)) * 2)


def plan_ladder(
    source_width: int,
    source_height: int,
    qualities: list[str],
    bitrates: dict[str, str | int] | None = None,
    sample_aspect_ratio: Fraction | None = None,
) -> list[Rung]:
    """Rungs for this source, top-down, never upscaled, widths following the display aspect.

    Requested rungs taller than the source are dropped; when any were dropped and the source is
    taller than the best remaining rung, a rung at the source height is added, so the best
    picture the upload has is kept (a 270p upload asked for 1080p..240p gets 270p + 240p).
    """
    if source_width <= 0 or source_height <= 0:
        raise ProcessingError("bad_config", f"bad source size {source_width}x{source_height}")
    unknown = [q for q in qualities if q not in DEFAULT_RUNGS]
    unknown += [q for q in (bitrates or {}) if q not in DEFAULT_RUNGS]
    if unknown:
        raise ProcessingError("bad_config", f"unknown quality: {', '.join(unknown)}")
    if not qualities:
        raise ProcessingError("bad_config", "no qualities requested")
    overrides = {k: parse_bitrate(v) for k, v in (bitrates or {}).items()}

    sar = sample_aspect_ratio if sample_aspect_ratio and sample_aspect_ratio > 0 else 1
    display_aspect = Fraction(source_width) * sar / source_height
    top = source_height - source_height % 2

    wanted = sorted(
        {q: DEFAULT_RUNGS[q] for q in qualities}.values(), key=lambda r: r.height, reverse=True
    )
    kept: list[Rung] = []
    too_tall: list[Rung] = []
    for rung in wanted:
        bitrate = overrides.get(rung.name, rung.video_bitrate)
        rung = Rung(rung.name, rung.height, bitrate, rung.audio_bitrate)
        (too_tall if rung.height > source_height else kept).append(rung)

    if too_tall and (not kept or kept[0].height < top):
        # Scale the smallest dropped rung's bitrate by pixel count, never below the next rung.
        ref = too_tall[-1]
        bitrate = int(ref.video_bitrate * (top / ref.height) ** 2)
        if kept:
            bitrate = max(bitrate, kept[0].video_bitrate)
        kept.insert(0, Rung(f"{top}p", top, bitrate, ref.audio_bitrate))

    return [
        Rung(r.name, r.height, r.video_bitrate, r.audio_bitrate, _even(r.height * display_aspect))
        for r in kept
    ]
