"""Program-specific information: PAT and PMT sections, each in one TS packet.

A segment carries one program with at most two elementary streams, so both tables always fit
in a single packet; they are rebuilt per segment (a few hundred nanoseconds of work).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PAT_PID = 0x0000
PMT_PID = 0x1000
PROGRAM_NUMBER = 1
TRANSPORT_STREAM_ID = 1


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 (poly 0x04C11DB7, init ~0, not reflected, no final xor).

    zlib.crc32 is the reflected variant with a final xor, so it cannot be used for PSI.
    """
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


@dataclass(frozen=True)
class ElementaryStream:
    """One PMT entry: how a track is announced to the demuxer."""

    pid: int
    stream_type: int
    descriptors: bytes = b""


def _section(table_id: int, table_id_ext: int, body: bytes) -> bytes:
    """A long-form section (syntax indicator set, version 0, current) with its CRC."""
    length = 5 + len(body) + 4  # header after section_length, body, CRC
    head = bytes(
        (
            table_id,
            0xB0 | (length >> 8),  # section_syntax_indicator, '0', reserved
            length & 0xFF,
            table_id_ext >> 8,
            table_id_ext & 0xFF,
            0xC1,  # reserved, version_number 0, current_next_indicator 1
            0x00,  # section_number
            0x00,  # last_section_number
        )
    )
    section = head + body
    return section + crc32_mpeg2(section).to_bytes(4, "big")


def pat_section() -> bytes:
    body = bytes(
        (PROGRAM_NUMBER >> 8, PROGRAM_NUMBER & 0xFF, 0xE0 | (PMT_PID >> 8), PMT_PID & 0xFF)
    )
    return _section(0x00, TRANSPORT_STREAM_ID, body)


def pmt_section(streams: Sequence[ElementaryStream], pcr_pid: int) -> bytes:
    body = bytearray((0xE0 | (pcr_pid >> 8), pcr_pid & 0xFF, 0xF0, 0x00))  # no program info
    for es in streams:
        n = len(es.descriptors)
        body += bytes(
            (es.stream_type, 0xE0 | (es.pid >> 8), es.pid & 0xFF, 0xF0 | (n >> 8), n & 0xFF)
        )
        body += es.descriptors
    return _section(0x02, PROGRAM_NUMBER, bytes(body))


def psi_packet(pid: int, section: bytes, cc: int) -> bytes:
    """One packet carrying a whole section; the rest is 0xFF, the PSI stuffing byte."""
    payload = b"\x00" + section  # pointer_field 0: the section starts right away
    if len(payload) > 184:
        raise ValueError("PSI section does not fit in one TS packet")
    header = bytes((0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x10 | (cc & 0x0F)))
    return header + payload + b"\xff" * (184 - len(payload))


def registration_descriptor(format_identifier: bytes) -> bytes:
    """registration_descriptor: how ATSC-style streams (AC-3, E-AC-3) are recognised."""
    return b"\x05\x04" + format_identifier


def language_descriptor(language: str) -> bytes:
    """ISO_639_language_descriptor, or nothing for "und" / malformed codes."""
    if language == "und" or len(language) != 3 or not language.isascii():
        return b""
    return b"\x0a\x04" + language.encode("ascii") + b"\x00"
