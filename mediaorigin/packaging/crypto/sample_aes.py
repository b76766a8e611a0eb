"""HLS `METHOD=SAMPLE-AES` for MPEG-TS: Apple's "MPEG-2 Stream Encryption Format for HTTP Live
Streaming" (H.264 NAL units and ADTS AAC frames encrypted in place).

    H.264 NAL unit (type 1 or 5), as found in the Annex B stream:
    |type|31 clear|16 enc|144 clear|16 enc|144 clear| ... |<=16 clear|  then escaped again
    ADTS frame:
    |header 7/9|16 clear|16 enc|16 enc| ... |0-15 clear|

* AES-128-CBC without padding; the CBC chain runs over the encrypted blocks of one protected
  block (a NAL unit, an audio frame) and restarts from the segment's IV for the next one.
* Video: the pattern runs over the NAL unit in its stream form (emulation prevention bytes
  of the encoder included), and emulation prevention is then applied once more over the whole
  encrypted NAL unit, so that ciphertext never imitates a start code. Decryption is the
  mirror: remove one layer of 0x03 bytes, decrypt, and the encoder's NAL unit is back. This
  is what FFmpeg (hls_sample_encryption.c), Android and hls.js decrypt: none re-escapes after
  decrypting. (Encrypting the unescaped RBSP instead was tried: ffmpeg 5.1 then fails to
  decode every slice whose clear form has emulation prevention bytes.)
  A block is encrypted only if *more* than 16 bytes remain, so NAL units of 48 bytes or less,
  and a last block of exactly 16 bytes, stay clear. Other NAL types are never touched.
* Audio: the ADTS header and a 16-byte leader stay clear, then every whole block is encrypted;
  frames keep their size.
* Signalling (PMT): stream_type 0xDB for H.264, 0xCF for ADTS AAC, each with a
  private_data_indicator_descriptor ('zavc' / 'aacd'); AAC also needs a registration_descriptor
  'apad' carrying the audio setup information (audio type 'zaac', priming, version and the
  AudioSpecificConfig). `pmt_stream` gives the stream type and descriptors for a clear one.

The encrypt functions are pure; each has an exact inverse for tests and reference decoding.
"""

from __future__ import annotations

import re

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .aes128 import BLOCK, check_key

VIDEO_LEADER = 32  # nal_unit_type byte + 31 clear bytes
AUDIO_LEADER = 16
PATTERN_CLEAR = 144  # clear bytes after every encrypted block: 1 block in 10
ENCRYPTED_NAL_TYPES = frozenset((1, 5))  # non-IDR and IDR coded slices

STREAM_TYPE_H264 = 0xDB
STREAM_TYPE_AAC = 0xCF
# Clear stream type -> SAMPLE-AES stream type (H.264, ADTS AAC; AC-3/E-AC-3 not implemented).
ENCRYPTED_STREAM_TYPES = {0x1B: STREAM_TYPE_H264, 0x0F: STREAM_TYPE_AAC}

_EPB = re.compile(b"\x00\x00(?=[\x00-\x03])")  # two zeros before a byte <= 3 need an 0x03
_START = b"\x00\x00\x01"


# --- emulation prevention (ISO/IEC 14496-10 7.4.1) ------------------------------------------


def add_emulation_prevention(rbsp: bytes | bytearray) -> bytes:
    """Insert 0x03 after every 0x0000 that precedes a byte <= 0x03, and after a 0x0000 that
    ends the data (an RBSP ending in cabac_zero_words)."""
    out = _EPB.sub(b"\x00\x00\x03", rbsp)
    return out + b"\x03" if out.endswith(b"\x00\x00") else out


def remove_emulation_prevention(nal: bytes | bytearray | memoryview) -> bytearray:
    """Drop the 0x03 of every 0x000003 (the escaped form back to NAL header + RBSP)."""
    data = bytes(nal)
    out = bytearray()
    pos = 0
    while (i := data.find(b"\x00\x00\x03", pos)) >= 0:
        out += data[pos : i + 2]
        pos = i + 3
    out += data[pos:]
    return out


# --- H.264 ------------------------------------------------------------------------------


def encrypted_block_offsets(nal_size: int) -> list[int]:
    """Offsets, in the unescaped NAL unit, of the 16-byte blocks that get encrypted."""
    offsets = []
    pos = VIDEO_LEADER
    while nal_size - pos > BLOCK:
        offsets.append(pos)
        pos += BLOCK + PATTERN_CLEAR
    return offsets


def split_annexb(au: bytes | bytearray | memoryview) -> list[tuple[bytes, bytes]]:
    """(start code, NAL unit) pairs of an Annex B buffer; a zero byte before 0x000001 belongs
    to the (4-byte) start code. Raise ValueError if the buffer does not start with one."""
    data = bytes(au)
    first = data.find(_START)
    if first < 0 or data[:first].strip(b"\x00"):
        raise ValueError("Annex B data must start with a start code")
    units = []
    sc_begin, sc_end = first - (1 if first else 0), first + 3
    while True:
        nxt = data.find(_START, sc_end)
        if nxt < 0:
            units.append((data[sc_begin:sc_end], data[sc_end:]))
            return units
        end = nxt - 1 if data[nxt - 1] == 0 and nxt - 1 >= sc_end else nxt
        units.append((data[sc_begin:sc_end], data[sc_end:end]))
        sc_begin, sc_end = end, nxt + 3


def _cbc_blocks(raw: bytearray, offsets: list[int], key: bytes, iv: bytes, *,
                encrypt: bool) -> None:
    """Run one CBC chain over the 16-byte blocks at `offsets`, in place."""
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    chain = b"".join(raw[o : o + BLOCK] for o in offsets)
    done = ctx.update(chain) + ctx.finalize()
    for k, o in enumerate(offsets):
        raw[o : o + BLOCK] = done[k * BLOCK : (k + 1) * BLOCK]


def _transform_nal(nal: bytes, key: bytes, iv: bytes, encrypt: bool) -> bytes:
    if len(nal) <= VIDEO_LEADER + BLOCK or nal[0] & 0x1F not in ENCRYPTED_NAL_TYPES:
        return nal
    if encrypt:
        buf = bytearray(nal)
        _cbc_blocks(buf, encrypted_block_offsets(len(buf)), key, iv, encrypt=True)
        return add_emulation_prevention(buf)
    buf = remove_emulation_prevention(nal)
    offsets = encrypted_block_offsets(len(buf))
    if offsets:
        _cbc_blocks(buf, offsets, key, iv, encrypt=False)
    return bytes(buf)


def _transform_annexb(au: bytes | bytearray | memoryview, key: bytes, iv: bytes,
                      encrypt: bool) -> bytes:
    check_key(key, iv)
    out = bytearray()
    for start_code, nal in split_annexb(au):
        out += start_code
        out += _transform_nal(nal, key, iv, encrypt)
    return bytes(out)


def encrypt_annexb_sample(access_unit_annexb: bytes | bytearray | memoryview, key: bytes,
                          iv: bytes) -> bytes:
    """SAMPLE-AES one H.264 access unit in Annex B form (start codes, escaped NAL units).

    NAL units of type 1 and 5 longer than 48 bytes grow by the 0x03 bytes the second layer
    of emulation prevention needs (the encoder's own 0x000003 sequences each get one)."""
    return _transform_annexb(access_unit_annexb, key, iv, True)


def decrypt_annexb_sample(access_unit_annexb: bytes | bytearray | memoryview, key: bytes,
                          iv: bytes) -> bytes:
    """Inverse of `encrypt_annexb_sample`: the encoder's access unit, byte for byte."""
    return _transform_annexb(access_unit_annexb, key, iv, False)


# --- ADTS AAC ---------------------------------------------------------------------------


def adts_header_size(frame: bytes | bytearray | memoryview) -> int:
    """7, or 9 when the header carries a CRC (protection_absent = 0)."""
    if len(frame) < 7 or frame[0] != 0xFF or frame[1] & 0xF6 != 0xF0:
        raise ValueError("not an ADTS frame (no syncword)")
    return 7 if frame[1] & 0x01 else 9


def _transform_adts(frame: bytes | bytearray | memoryview, key: bytes, iv: bytes,
                    encrypt: bool) -> bytes:
    check_key(key, iv)
    start = adts_header_size(frame) + AUDIO_LEADER
    n = max(0, len(frame) - start) // BLOCK * BLOCK
    if not n:
        return bytes(frame)
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    view = memoryview(frame).cast("B")
    return b"".join((view[:start], ctx.update(view[start : start + n]), ctx.finalize(),
                     view[start + n :]))


def encrypt_adts_frame(frame: bytes | bytearray | memoryview, key: bytes, iv: bytes) -> bytes:
    """SAMPLE-AES one ADTS frame (header included); the size does not change."""
    return _transform_adts(frame, key, iv, True)


def decrypt_adts_frame(frame: bytes | bytearray | memoryview, key: bytes, iv: bytes) -> bytes:
    """Inverse of `encrypt_adts_frame`."""
    return _transform_adts(frame, key, iv, False)


# --- PMT signalling -----------------------------------------------------------------------


def private_data_indicator_descriptor(indicator: bytes) -> bytes:
    """ISO/IEC 13818-1 private_data_indicator_descriptor (tag 0x0F)."""
    if len(indicator) != 4:
        raise ValueError("private_data_indicator is four bytes")
    return b"\x0f\x04" + indicator


def audio_setup_information(audio_specific_config: bytes, *, priming: int = 0,
                            version: int = 1) -> bytes:
    """Apple's audio_setup_information for AAC: 'zaac', priming (u16), version (u8), setup
    data length (u8) and the AudioSpecificConfig."""
    if len(audio_specific_config) > 0xFF:
        raise ValueError("AudioSpecificConfig too long for audio setup information")
    return (b"zaac" + priming.to_bytes(2, "big") + bytes((version, len(audio_specific_config)))
            + audio_specific_config)


def pmt_stream(stream_type: int, audio_specific_config: bytes = b"") -> tuple[int, bytes]:
    """(SAMPLE-AES stream_type, descriptors to put first in the ES_info loop) for a clear
    H.264 (0x1B) or ADTS AAC (0x0F) stream type."""
    if stream_type == 0x1B:
        return STREAM_TYPE_H264, private_data_indicator_descriptor(b"zavc")
    if stream_type == 0x0F:
        if not audio_specific_config:
            raise ValueError("SAMPLE-AES AAC needs the AudioSpecificConfig for its PMT")
        setup = b"apad" + audio_setup_information(audio_specific_config)
        registration = bytes((0x05, len(setup))) + setup
        return STREAM_TYPE_AAC, private_data_indicator_descriptor(b"aacd") + registration
    raise ValueError(f"SAMPLE-AES is not implemented for stream type 0x{stream_type:02x}")
