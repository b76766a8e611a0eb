"""Per-thread scratch buffers for the segment encryptors' working space.

A cold encrypted segment is a few MB. A fresh buffer of that size costs a zero-fill, and a
page fault per 4 KiB on first touch whenever the allocator has handed such blocks back to the
kernel: as much as AES-CTR over the same bytes. So what a cipher only works in (the 'cbcs'
pattern's gathered rows) lives in buffers that each thread keeps between calls (up to KEEP
bytes each).
"""

from __future__ import annotations

import threading

KEEP = 64 << 20  # keep per-thread buffers up to this size between calls
_local = threading.local()


def scratch(size: int, slot: str = "main") -> memoryview:
    """A writable buffer of at least `size` bytes, reused by the calling thread between
    calls; `slot` names independent buffers for one call that needs several. The contents
    are whatever the thread left there: callers overwrite before they read."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    buf = bufs.get(slot)
    if buf is None or len(buf) < size:
        buf = bytearray(size)
        if size <= KEEP:
            bufs[slot] = buf
    return memoryview(buf)
