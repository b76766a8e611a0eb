"""A silent AAC frame for a live audio track, made once per configuration with PyAV.

When a publisher stops sending audio in a lecture that has an audio track (a muted encoder, a
lecturer back without a microphone), the cutter fills the parts with this frame: muxed
renditions keep both tracks continuous, so players do not stall waiting for audio samples
that never come (see packaging/live/cutter.py).
"""

from __future__ import annotations

import functools
import logging

import av

from ..packaging.mp4.codecs import parse_audio_specific_config

log = logging.getLogger(__name__)

AAC_LC = 2
_LAYOUTS = {1: "mono", 2: "stereo"}
_SETTLE = 4  # frames encoded before the one kept: past the encoder's priming


@functools.lru_cache(maxsize=32)
def silent_aac_frame(asc: bytes) -> bytes | None:
    """One raw AAC-LC frame (1024 samples) of digital silence that decodes under `asc`, or
    None for what we do not fill (other object types, more than two channels)."""
    try:
        object_type, rate, channels = parse_audio_specific_config(asc)
    except (IndexError, ValueError):
        return None
    layout = _LAYOUTS.get(channels)
    if object_type != AAC_LC or layout is None or not rate:
        return None
    try:
        encoder = av.CodecContext.create("aac", "w")
        encoder.sample_rate, encoder.layout, encoder.format = rate, layout, "fltp"
        encoder.open()
        packets: list[av.Packet] = []
        for i in range(_SETTLE + 1):
            frame = av.AudioFrame(format="fltp", layout=layout, samples=1024)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate, frame.pts = rate, i * 1024
            packets += encoder.encode(frame)
    except (av.FFmpegError, ValueError) as e:
        log.warning("no silent AAC frame for %d Hz %s: %s", rate, layout, e)
        return None
    return bytes(packets[-1]) if packets else None
