"""ISO BMFF box headers: reading them from bytes and walking children.

Reading is bounds-checked: a size that points past its parent or a truncated header raises
`MediaError` instead of looping or reading garbage.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..model import MediaError

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True)
class BoxHeader:
    type: str
    offset: int  # where the box starts (its size field)
    header_size: int  # 8, or 16 with a 64-bit size
    size: int  # whole box, header included

    @property
    def body_offset(self) -> int:
        return self.offset + self.header_size

    @property
    def end(self) -> int:
        return self.offset + self.size


def parse_header(data: bytes | memoryview, offset: int, limit: int) -> BoxHeader:
    """Parse the box header at `offset`; `limit` is the end of the enclosing space."""
    if limit - offset < 8:
        raise MediaError(f"truncated box header at offset {offset}")
    size = _U32.unpack_from(data, offset)[0]
    btype = bytes(data[offset + 4 : offset + 8]).decode("latin-1")
    header = 8
    if size == 1:
        if limit - offset < 16:
            raise MediaError(f"truncated 64-bit box header at offset {offset}")
        size = _U64.unpack_from(data, offset + 8)[0]
        header = 16
    elif size == 0:
        size = limit - offset
    if size < header or offset + size > limit:
        raise MediaError(f"box '{_printable(btype)}' at offset {offset} has invalid size {size}")
    return BoxHeader(btype, offset, header, size)


def iter_boxes(data: bytes | memoryview, start: int = 0,
               end: int | None = None) -> Iterator[BoxHeader]:
    """Yield the boxes laid end to end in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        box = parse_header(data, pos, end)
        yield box
        pos = box.end


def children(data: bytes | memoryview, box: BoxHeader, skip: int = 0) -> dict[str, BoxHeader]:
    """The first child of each type (`skip` bytes of fields precede the children)."""
    found: dict[str, BoxHeader] = {}
    for child in iter_boxes(data, box.body_offset + skip, box.end):
        found.setdefault(child.type, child)
    return found


def children_of_type(data: bytes | memoryview, box: BoxHeader, btype: str) -> list[BoxHeader]:
    return [c for c in iter_boxes(data, box.body_offset, box.end) if c.type == btype]


def full_box(data: bytes | memoryview, box: BoxHeader) -> tuple[int, int, int]:
    """(version, flags, offset of the fields after them) of a FullBox."""
    if box.size - box.header_size < 4:
        raise MediaError(f"box '{box.type}' is too short")
    vf = _U32.unpack_from(data, box.body_offset)[0]
    return vf >> 24, vf & 0xFFFFFF, box.body_offset + 4


def need(box: BoxHeader, offset: int, length: int) -> None:
    """Raise unless [offset, offset + length) lies inside the box."""
    if offset + length > box.end:
        raise MediaError(f"box '{box.type}' at offset {box.offset} is truncated")


def _printable(s: str) -> str:
    return s if s.isprintable() else s.encode("latin-1").hex()


def box(btype: bytes, *payload: bytes) -> bytes:
    """Serialize a box from its type and body parts."""
    body = b"".join(payload)
    size = 8 + len(body)
    if size > 0xFFFFFFFF:
        return _U32.pack(1) + btype + _U64.pack(size + 8) + body
    return _U32.pack(size) + btype + body


def full(btype: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(btype, _U32.pack((version << 24) | flags), *payload)
