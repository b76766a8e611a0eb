"""Encrypted segments made in order, a chunk at a time, so sending can start at once.

AES-CBC over a whole 2.5 MB segment takes as long as sending it (~1.6 ms: CBC is serial,
OpenSSL's AES-NI path runs at ~1.6 GB/s). Made all at once, a cold encrypted segment costs
the cipher *plus* the transfer; made progressively, the origin sends each finished chunk while
the cipher (which releases the GIL) makes the next one, and the two overlap.

The encrypted size is known before any ciphertext is: PKCS#7 adds 1-16 bytes, and CENC only
adds boxes that are built from the clear samples' layout. So a response can announce its
Content-Length first and then follow `fill`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

CHUNK = 256 * 1024  # output bytes per step: ~0.16 ms of AES-CBC, a few socket writes


@dataclass
class Progressive:
    """A segment of `size` bytes written into `buffer` from its start.

    Each step of `fill` writes more of it and yields how many leading bytes are now final
    (never written again), ending with `size`. `buffer` may be longer than `size` (cipher
    slack); the segment is `buffer[:size]`. The buffer is the caller's to keep."""

    size: int
    buffer: bytearray
    fill: Iterator[int]

    def complete(self) -> memoryview:
        """Run `fill` to the end: the whole segment."""
        for _ in self.fill:
            pass
        return memoryview(self.buffer)[: self.size]
