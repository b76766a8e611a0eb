"""The RTMP handshake, server side (Adobe RTMP 1.0, section 5.2): the simple handshake.

    client                         server
    C0 (version 3) + C1 (1536) -->
                               <-- S0 (3) + S1 (1536) + S2 (1536)
    C2 (1536)                  -->
                                   chunk stream follows

C1/S1: time (4) + zero (4) + 1528 random bytes. S2 echoes C1: C1's time, the time at which
C1 was read, C1's random bytes. Our epoch starts when S1 is sent, which is when C1 is read,
so S1's time and S2's time2 are both 0 and no clock is needed. With S1's version field zero,
ffmpeg and librtmp (OBS) skip the digest ("complex") handshake checks. librtmp compares S2
with C1 whole and only logs a warning when they differ (its C1 carries a version in the zero
field, which S2's time2 replaces).

C2 should echo S1; clients get it wrong often enough that it is read and not checked.
RTMPE (version 6) and other versions are refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .chunks import RtmpProtocolError

VERSION = 3
SIZE = 1536


class ServerHandshake:
    """Feed client bytes; `data_to_send()` has S0+S1+S2 once C0+C1 are in; `done` after C2.

    `feed()` returns the bytes that came after C2 (the start of the chunk stream)."""

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random_bytes
        self._buf = bytearray()
        self._out = bytearray()
        self._stage = 0  # 0: waiting for C0+C1, 1: waiting for C2, 2: done

    @property
    def done(self) -> bool:
        return self._stage == 2

    def feed(self, data: bytes) -> bytes:
        if self._stage == 2:
            return data
        self._buf += data
        if self._stage == 0:
            if self._buf and self._buf[0] != VERSION:
                version = self._buf[0]
                what = "RTMPE (encrypted)" if version in (6, 8) else f"version {version}"
                raise RtmpProtocolError(f"unsupported RTMP handshake: {what}, expected 3")
            if len(self._buf) < 1 + SIZE:
                return b""
            c1 = bytes(self._buf[1:1 + SIZE])
            del self._buf[:1 + SIZE]
            s1 = bytes(8) + self._random(SIZE - 8)
            s2 = c1[:4] + bytes(4) + c1[8:]
            self._out += bytes([VERSION]) + s1 + s2
            self._stage = 1
        if len(self._buf) < SIZE:
            return b""
        rest = bytes(self._buf[SIZE:])
        self._buf = bytearray()
        self._stage = 2
        return rest

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out
