"""AMF0 (Adobe Action Message Format 0), the encoding of RTMP commands and metadata.

Python values map to AMF0 types as follows (decoding gives the left column back):

    float (int on encode)  number        0x00   8-byte big-endian double
    bool                   boolean       0x01
    str                    string        0x02   (long string 0x0C above 65535 UTF-8 bytes)
    dict                   object        0x03   key/value pairs up to the object end 0x000009
    None                   null          0x05
    UNDEFINED              undefined     0x06
    EcmaArray (a dict)     ECMA array    0x08   count hint + pairs + object end
    list                   strict array  0x0A
    datetime               date          0x0B   ms since the epoch + a time zone we ignore
    str                    long string   0x0C   (decoding)

References, typed objects, AMF3 switches and the rest are refused with `Amf0Error`.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from .chunks import RtmpProtocolError

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
NULL = 0x05
UNDEFINED_MARKER = 0x06
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C

MAX_DEPTH = 32  # nested objects/arrays: deeper input is an attack, not metadata
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Amf0Error(RtmpProtocolError):
    """Malformed or unsupported AMF0."""


class _Undefined:
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED = _Undefined()


class EcmaArray(dict[str, Any]):
    """An AMF0 ECMA array (an associative array; onMetaData uses it)."""


# --- encoding ------------------------------------------------------------------------------

def encode(*values: Any) -> bytes:
    """The AMF0 encoding of each value, one after the other (as in a command message)."""
    out = bytearray()
    for value in values:
        _encode(out, value, 0)
    return bytes(out)


def _encode(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("AMF0 value nested too deeply")
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out += bytes([BOOLEAN, 1 if value else 0])
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += struct.pack(">d", float(value))
    elif isinstance(value, str):
        raw = value.encode()
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            out += struct.pack(">H", len(raw)) + raw
        else:
            out.append(LONG_STRING)
            out += struct.pack(">I", len(raw)) + raw
    elif isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += struct.pack(">I", len(value))
        _encode_pairs(out, value, depth)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _encode_pairs(out, value, depth)
    elif isinstance(value, list | tuple):
        out.append(STRICT_ARRAY)
        out += struct.pack(">I", len(value))
        for item in value:
            _encode(out, item, depth + 1)
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("AMF0 dates must be timezone-aware")
        out.append(DATE)
        out += struct.pack(">dh", (value - _EPOCH) / timedelta(milliseconds=1), 0)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def _encode_pairs(out: bytearray, pairs: dict[str, Any], depth: int) -> None:
    for key, item in pairs.items():
        raw = str(key).encode()
        if len(raw) > 0xFFFF:
            raise ValueError("AMF0 property name longer than 65535 bytes")
        out += struct.pack(">H", len(raw)) + raw
        _encode(out, item, depth + 1)
    out += b"\x00\x00" + bytes([OBJECT_END])


# --- decoding ------------------------------------------------------------------------------

def decode(data: bytes) -> list[Any]:
    """Every AMF0 value in `data` (a command message body is a sequence of values)."""
    reader = _Reader(data)
    values = []
    while reader.pos < len(data):
        values.append(reader.value(0))
    return values


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise Amf0Error(f"AMF0 truncated: need {n} bytes at offset {self.pos}, "
                            f"have {len(self.data) - self.pos}")
        chunk = bytes(self.data[self.pos:end])
        self.pos = end
        return chunk

    def string(self, size_bytes: int) -> str:
        n = int.from_bytes(self.take(size_bytes), "big")
        raw = self.take(n)
        try:
            return raw.decode()
        except UnicodeDecodeError as e:
            raise Amf0Error(f"AMF0 string is not UTF-8: {e}") from None

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise Amf0Error(f"AMF0 nested deeper than {MAX_DEPTH}")
        marker = self.take(1)[0]
        if marker == NUMBER:
            return struct.unpack(">d", self.take(8))[0]
        if marker == BOOLEAN:
            return self.take(1)[0] != 0
        if marker == STRING:
            return self.string(2)
        if marker == LONG_STRING:
            return self.string(4)
        if marker == OBJECT:
            return self.pairs({}, depth)
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == ECMA_ARRAY:
            self.take(4)  # count: a hint only, encoders get it wrong; the end marker decides
            return self.pairs(EcmaArray(), depth)
        if marker == STRICT_ARRAY:
            count = int.from_bytes(self.take(4), "big")
            if count > len(self.data) - self.pos:  # every value takes at least one byte
                raise Amf0Error(f"AMF0 strict array of {count} items in a shorter message")
            return [self.value(depth + 1) for _ in range(count)]
        if marker == DATE:
            ms, _tz = struct.unpack(">dh", self.take(10))
            if not math.isfinite(ms):
                raise Amf0Error("AMF0 date is not a finite number")
            try:
                return _EPOCH + timedelta(milliseconds=ms)
            except OverflowError:
                raise Amf0Error(f"AMF0 date out of range: {ms} ms") from None
        if marker == OBJECT_END:
            raise Amf0Error(f"AMF0 object end marker outside an object at {self.pos - 1}")
        raise Amf0Error(f"unsupported AMF0 type marker 0x{marker:02x} at offset {self.pos - 1}")

    def pairs(self, into: dict[str, Any], depth: int) -> dict[str, Any]:
        while True:
            key = self.string(2)
            if key == "" and self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                return into
            into[key] = self.value(depth + 1)
