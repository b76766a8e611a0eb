"""ADTS framing for raw AAC frames, derived from the track's AudioSpecificConfig.

MPEG-TS carries AAC as ADTS (stream type 0x0F): every frame needs a 7-byte header that
repeats the object type, sampling frequency index and channel configuration. Only the frame
length differs between headers, so the constant part is computed once per track.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import MediaError

SAMPLING_FREQUENCIES = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip

ADTS_HEADER_SIZE = 7
MAX_ADTS_FRAME = 0x1FFF  # 13-bit aac_frame_length, header included

_SBR, _PS = 5, 29  # explicit HE-AAC signalling: the core object type follows the extension


class _Bits:
    """MSB-first bit reader over a short config; reading past the end raises MediaError."""

    def __init__(self, data: bytes) -> None:
        self.value, self.left = int.from_bytes(data, "big"), len(data) * 8

    def read(self, n: int) -> int:
        if n > self.left:
            raise MediaError("truncated AudioSpecificConfig")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)


def _object_type(bits: _Bits) -> int:
    aot = bits.read(5)
    return 32 + bits.read(6) if aot == 31 else aot


def _frequency_index(bits: _Bits) -> int:
    index = bits.read(4)
    if index != 15:
        return index
    frequency = bits.read(24)  # explicit rate: ADTS has only the index, so it must be standard
    if frequency not in SAMPLING_FREQUENCIES:
        raise MediaError(f"AAC sampling rate {frequency} Hz cannot be carried in ADTS")
    return SAMPLING_FREQUENCIES.index(frequency)


@dataclass(frozen=True)
class AdtsFramer:
    """ADTS header factory for one AAC track."""

    object_type: int  # the core object type (AAC LC for HE-AAC)
    frequency_index: int
    channel_config: int

    @classmethod
    def from_config(cls, asc: bytes) -> AdtsFramer:
        bits = _Bits(asc)
        object_type = _object_type(bits)
        frequency_index = _frequency_index(bits)
        channel_config = bits.read(4)
        if object_type in (_SBR, _PS):
            _frequency_index(bits)  # SBR output rate; ADTS signals the core rate (implicit SBR)
            object_type = _object_type(bits)
        if not 1 <= object_type <= 4:
            raise MediaError(f"AAC object type {object_type} cannot be carried in ADTS/MPEG-TS")
        if not 1 <= channel_config <= 7:
            # 0 means a program_config_element in the ASC, which ADTS would have to repeat
            # in-band; not supported.
            raise MediaError(f"AAC channel configuration {channel_config} not supported in ADTS")
        if frequency_index >= len(SAMPLING_FREQUENCIES):
            raise MediaError(f"invalid AAC sampling frequency index {frequency_index}")
        return cls(object_type, frequency_index, channel_config)

    def header(self, frame_size: int) -> bytes:
        """The 7-byte header (MPEG-4, no CRC, VBR fullness) for a raw frame of frame_size."""
        length = frame_size + ADTS_HEADER_SIZE
        if length > MAX_ADTS_FRAME:
            raise MediaError(f"AAC frame of {frame_size} bytes is too large for ADTS")
        ch = self.channel_config
        return bytes(
            (
                0xFF,
                0xF1,  # syncword, MPEG-4, layer 0, protection_absent
                ((self.object_type - 1) << 6) | (self.frequency_index << 2) | (ch >> 2),
                ((ch & 0x03) << 6) | (length >> 11),
                (length >> 3) & 0xFF,
                ((length & 0x07) << 5) | 0x1F,  # buffer fullness 0x7FF (VBR)
                0xFC,  # ... and one raw data block
            )
        )
