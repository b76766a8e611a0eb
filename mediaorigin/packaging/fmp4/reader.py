"""Read our own fMP4 media fragments back into a SampleRun (pure).

Live segments older than the in-memory window exist only as fMP4 files; an MPEG-TS request for
one of them rebuilds the samples from the moof/mdat pairs written by `fmp4.writer`.
"""

from __future__ import annotations

import struct

from ..model import MediaError, SampleRun, Track
from ..mp4.boxes import children, iter_boxes

_DATA_OFFSET, _FIRST_FLAGS = 0x1, 0x4
_DURATION, _SIZE, _FLAGS, _CTS = 0x100, 0x200, 0x400, 0x800
_NON_SYNC = 0x00010000


def read_fragments(data: bytes, track: Track) -> SampleRun:
    durations: list[int] = []
    sizes: list[int] = []
    cts: list[int] = []
    sync: list[bool] = []
    payload: list[bytes] = []
    base: int | None = None
    view = memoryview(data)
    boxes = list(iter_boxes(view, 0, len(data)))
    for i, b in enumerate(boxes):
        if b.type != "moof":
            continue
        traf = children(view, b).get("traf")
        if traf is None:
            raise MediaError("moof without traf")
        kids = children(view, traf)
        if "tfdt" not in kids or "trun" not in kids:
            raise MediaError("traf without tfdt or trun")
        tfdt = kids["tfdt"]
        version = data[tfdt.body_offset]
        t = struct.unpack_from(">Q" if version else ">I", data, tfdt.body_offset + 4)[0]
        if base is None:
            base = t
        trun = kids["trun"]
        flags = int.from_bytes(data[trun.body_offset + 1 : trun.body_offset + 4], "big")
        pos = trun.body_offset + 4
        n = struct.unpack_from(">I", data, pos)[0]
        pos += 4
        offset = 0
        if flags & _DATA_OFFSET:
            offset = struct.unpack_from(">i", data, pos)[0]
            pos += 4
        if flags & _FIRST_FLAGS:
            pos += 4
        start = b.offset + offset
        for _ in range(n):
            d = s = f = c = 0
            if flags & _DURATION:
                d = struct.unpack_from(">I", data, pos)[0]
                pos += 4
            if flags & _SIZE:
                s = struct.unpack_from(">I", data, pos)[0]
                pos += 4
            if flags & _FLAGS:
                f = struct.unpack_from(">I", data, pos)[0]
                pos += 4
            if flags & _CTS:
                c = struct.unpack_from(">i", data, pos)[0]
                pos += 4
            durations.append(d)
            sizes.append(s)
            sync.append(not f & _NON_SYNC)
            cts.append(c)
            payload.append(data[start : start + s])
            start += s
        if i + 1 >= len(boxes) or boxes[i + 1].type != "mdat":
            raise MediaError("moof not followed by mdat")
    return SampleRun(track=track, base_time=base or 0, durations=durations, sizes=sizes,
                     cts_offsets=cts if any(cts) else None, sync=sync, data=b"".join(payload))
