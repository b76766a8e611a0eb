"""HLS `METHOD=AES-128`: whole-segment AES-128-CBC with PKCS#7 padding (RFC 8216 §5.2).

A TS segment or an fMP4 media segment is encrypted as one blob; the fMP4 init segment stays
clear, which the playlist expresses by writing EXT-X-MAP *before* the first EXT-X-KEY (a key
applies to the segments and maps that follow it). hls.js, Shaka and ffmpeg accept that.

The IV is the segment's media sequence number as a 128-bit big-endian integer, the RFC's
default when a key tag has no IV attribute; we still always write the IV explicitly, so that
a playlist edited later (discontinuities, clipping) cannot silently shift it.

Playlist versions: an IV attribute needs EXT-X-VERSION 2+, KEYFORMAT 5+.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .progressive import CHUNK, Progressive

Buffer = bytes | bytearray | memoryview
BLOCK = 16
KEY_SIZE = 16
METHODS = ("AES-128", "SAMPLE-AES")
NO_KEY_TAG = "#EXT-X-KEY:METHOD=NONE"


def check_key(key: bytes, iv: bytes) -> None:
    """Raise ValueError unless key and iv are both 16 bytes (AES-128, one block)."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"AES-128 key must be 16 bytes, got {len(key)}")
    if len(iv) != BLOCK:
        raise ValueError(f"AES-CBC IV must be 16 bytes, got {len(iv)}")


def segment_iv(sequence_number: int) -> bytes:
    """The 16-byte big-endian media sequence number: RFC 8216's default IV for a segment."""
    if not 0 <= sequence_number < 1 << 128:
        raise ValueError("media sequence number out of range for a 128-bit IV")
    return sequence_number.to_bytes(BLOCK, "big")


def iv_attribute(iv: bytes) -> str:
    """The IV as an EXT-X-KEY hexadecimal-sequence: "0x" and 32 hex digits [0-9A-F]."""
    if len(iv) != BLOCK:
        raise ValueError(f"IV must be 16 bytes, got {len(iv)}")
    return "0x" + iv.hex().upper()


def key_tag(
    uri: str,
    iv: bytes,
    keyformat: str | None = None,
    *,
    method: str = "AES-128",
    keyformat_versions: str = "1",
) -> str:
    """`#EXT-X-KEY:METHOD=...,URI="...",IV=0x...[,KEYFORMAT="...",KEYFORMATVERSIONS="..."]`.

    `keyformat="identity"` names the default format explicitly (the key file is the 16 raw
    bytes); other formats (e.g. "com.apple.streamingkeydelivery") are passed through.
    """
    if method not in METHODS:
        raise ValueError(f"unknown EXT-X-KEY method {method!r} (use NO_KEY_TAG for NONE)")
    _check_quoted("URI", uri)
    attrs = [f"METHOD={method}", f'URI="{uri}"', f"IV={iv_attribute(iv)}"]
    if keyformat is not None:
        _check_quoted("KEYFORMAT", keyformat)
        _check_quoted("KEYFORMATVERSIONS", keyformat_versions)
        attrs += [f'KEYFORMAT="{keyformat}"', f'KEYFORMATVERSIONS="{keyformat_versions}"']
    return "#EXT-X-KEY:" + ",".join(attrs)


def _check_quoted(name: str, value: str) -> None:
    """An RFC 8216 quoted-string may not contain a double quote, CR or LF."""
    if not value or any(c in value for c in '"\r\n'):
        raise ValueError(f"{name} cannot be written as a quoted-string: {value!r}")


def key_period(segment_number: int, every_n: int, *, first: int = 1) -> int:
    """Index of the key used by a segment when keys rotate every `every_n` segments.

    Segments `first .. first + every_n - 1` use period 0, the next `every_n` period 1, and so
    on; the playlist writes a new EXT-X-KEY wherever the period changes.
    """
    if every_n < 1:
        raise ValueError("key rotation period must be at least one segment")
    if segment_number < first:
        raise ValueError(f"segment number {segment_number} is before the first ({first})")
    return (segment_number - first) // every_n


def starts_key_period(segment_number: int, every_n: int, *, first: int = 1) -> bool:
    """True for the first segment of a key period: where an EXT-X-KEY line goes."""
    return key_period(segment_number, every_n, first=first) * every_n + first == segment_number


def encrypt_segment(data: Buffer | Sequence[Buffer], key: bytes, iv: bytes) -> bytes:
    """AES-128-CBC over the whole segment, PKCS#7 padded (1 to 16 bytes are always added).

    `data` may also be the segment's parts in order (e.g. its head and its mdat payload), so
    that a packager does not have to join them first: the result is the same."""
    return bytes(encrypt_progressive(data, key, iv).complete())


def encrypt_progressive(data: Buffer | Sequence[Buffer], key: bytes, iv: bytes,
                        chunk: int = CHUNK) -> Progressive:
    """`encrypt_segment`, made `chunk` bytes at a time (see progressive.py)."""
    check_key(key, iv)
    parts = [memoryview(p).cast("B") for p in data] if isinstance(data, (tuple, list)) \
        else [memoryview(data).cast("B")]
    clear = sum(len(p) for p in parts)
    pad = BLOCK - clear % BLOCK
    size = clear + pad
    # update_into wants a block of room more than it is given; the cipher carries a partial
    # block from one call to the next, so each call writes whole blocks at their place.
    buffer = bytearray(size + BLOCK)
    return Progressive(size, buffer, _cbc_fill(parts, pad, key, iv, memoryview(buffer),
                                               max(BLOCK, chunk)))


def _cbc_fill(parts: list[memoryview], pad: int, key: bytes, iv: bytes, out: memoryview,
              chunk: int) -> Iterator[int]:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    n = ready = 0
    for part in parts:
        for at in range(0, len(part), chunk):
            n += enc.update_into(part[at : at + chunk], out[n:])
            if n > ready:
                ready = n
                yield n
    n += enc.update_into(bytes((pad,)) * pad, out[n:])
    enc.finalize()
    yield n


def decrypt_segment(data: bytes | bytearray | memoryview, key: bytes, iv: bytes) -> bytes:
    """Inverse of `encrypt_segment`; ValueError on a length or padding that cannot be right."""
    check_key(key, iv)
    if not data or len(data) % BLOCK:
        raise ValueError("AES-128 segment length is not a positive multiple of 16")
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    clear = dec.update(bytes(data)) + dec.finalize()
    pad = clear[-1]
    if not 1 <= pad <= BLOCK or clear[-pad:] != bytes((pad,)) * pad:
        raise ValueError("bad PKCS#7 padding (wrong key or IV?)")
    return clear[:-pad]
