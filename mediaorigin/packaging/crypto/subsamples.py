"""Subsample maps for NAL-structured video (ISO/IEC 23001-7 section 10.2/10.4 and 14496-15).

A sample of length-prefixed NAL units becomes a list of (BytesOfClearData, BytesOfProtectedData)
pairs. What stays clear:
- every length prefix and NAL unit header (1 byte in AVC, 2 in HEVC), so that a player can find
  and classify NAL units without the key;
- whole non-VCL NAL units (SPS, PPS, SEI, AUD, ...);
- the first bytes of a VCL NAL unit that do not fill a 16-byte block: the protected range is
  always whole blocks ending at the NAL unit's end (required for 'cbcs', allowed and common for
  'cenc', where CTR would not need it);
- for 'cbcs', at least the first `CBCS_CLEAR_LEAD` bytes of each VCL NAL unit. The scheme wants
  the slice header readable; without a slice-header parser we keep a fixed lead clear, as HLS
  SAMPLE-AES does (32 bytes covers the slice headers of ordinary streams).
"""

from __future__ import annotations

import struct
from typing import Literal

from ..model import MediaError

VideoCodec = Literal["avc", "hevc"]
Subsample = tuple[int, int]

BLOCK = 16
CBCS_CLEAR_LEAD = 32
_MAX_CLEAR = 0xFFFF  # BytesOfClearData is 16 bits
_HEADER_SIZE = {"avc": 1, "hevc": 2}


def is_vcl(codec: VideoCodec, first_byte: int) -> bool:
    """Whether a NAL unit carries slice data (the only kind that is encrypted)."""
    if codec == "avc":
        return 1 <= first_byte & 0x1F <= 5
    return (first_byte >> 1) & 0x3F < 32


# is_vcl for every first byte, so the per-NAL loop indexes a table instead of calling.
_VCL = {codec: bytes(is_vcl(codec, b) for b in range(256)) for codec in ("avc", "hevc")}
_LENGTH = {1: struct.Struct(">B").unpack_from, 2: struct.Struct(">H").unpack_from,
           4: struct.Struct(">I").unpack_from}


def nal_subsamples(sample: bytes | memoryview, codec: VideoCodec, nal_length_size: int = 4,
                   scheme: str = "cenc") -> list[Subsample]:
    """The subsample map of one sample; the pairs cover the sample exactly."""
    return SampleMapper(codec, nal_length_size, scheme).map(sample, 0, len(sample))[0]


class SampleMapper:
    """Subsample maps of the samples of one track, read where they lie in a segment: what
    nal_subsamples computes, set up once per segment rather than once per sample, and with
    the protected ranges as absolute (start, length) pairs alongside."""

    def __init__(self, codec: VideoCodec, nal_length_size: int = 4,
                 scheme: str = "cenc") -> None:
        if nal_length_size not in (1, 2, 4):
            raise MediaError(f"NAL length size {nal_length_size} is not 1, 2 or 4")
        header = _HEADER_SIZE[codec]
        self.lead = max(header, CBCS_CLEAR_LEAD) if scheme == "cbcs" else header
        self.vcl = _VCL[codec]
        self.length = _LENGTH[nal_length_size]
        self.nal_length_size = nal_length_size

    def map(self, buf: bytes | memoryview, start: int,
            size: int) -> tuple[list[Subsample], list[tuple[int, int]]]:
        """(subsamples, protected ranges) of the sample buf[start:start+size]."""
        lead, vcl, length, nls = self.lead, self.vcl, self.length, self.nal_length_size
        out: list[Subsample] = []
        ranges: list[tuple[int, int]] = []
        clear = 0
        pos, end = start, start + size
        while pos < end:
            if end - pos < nls:
                raise MediaError(f"truncated NAL length at byte {pos - start} of a "
                                 f"{size}-byte sample")
            n = length(buf, pos)[0]
            body = pos + nls
            if n > end - body:
                raise MediaError(f"NAL unit of {n} bytes overruns the sample at byte "
                                 f"{pos - start}")
            pos = body + n
            if n > lead and vcl[buf[body]]:
                protected = (n - lead) // BLOCK * BLOCK
                clear += nls + n - protected
                if protected:
                    while clear > _MAX_CLEAR:
                        out.append((_MAX_CLEAR, 0))
                        clear -= _MAX_CLEAR
                    out.append((clear, protected))
                    ranges.append((pos - protected, protected))
                    clear = 0
            else:
                clear += nls + n
        while clear:
            step = min(clear, _MAX_CLEAR)
            out.append((step, 0))
            clear -= step
        return out, ranges
