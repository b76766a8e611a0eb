"""A compact, safe on-disk form of a `MediaIndex` (no pickle: cache files are data only).

    b"MOIX" u16 version | u32 header length | JSON header | blobs laid end to end

The header names each blob (array typecode and length); arrays are stored little-endian.
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from typing import Any

from ..model import CodecInfo, MediaError, MediaIndex, Track

MAGIC = b"MOIX"
VERSION = 2
_ARRAYS = ("sizes", "offsets", "dts", "cts", "sync")


def dumps(index: MediaIndex, fingerprint: str) -> bytes:
    blobs: list[bytes] = []
    tracks = []
    for t in index.tracks:
        entry: dict[str, Any] = {
            "track_id": t.track_id, "kind": t.kind, "timescale": t.timescale,
            "language": t.language, "name": t.name, "edit_shift": t.edit_shift,
            "bitrate_hint": t.bitrate_hint,
            "codec": {"fourcc": t.codec.fourcc, "codec": t.codec.codec, "width": t.codec.width,
                      "height": t.codec.height, "channels": t.codec.channels,
                      "sample_rate": t.codec.sample_rate},
            "blobs": [],
        }
        for name in _ARRAYS:
            arr = getattr(t, name)
            if arr is None:
                continue
            data = _le(arr)
            entry["blobs"].append([name, arr.typecode, len(data)])
            blobs.append(data)
        for name, data in (("sample_entry", t.codec.sample_entry), ("config", t.codec.config)):
            entry["blobs"].append([name, "", len(data)])
            blobs.append(data)
        tracks.append(entry)
    header = json.dumps({"fingerprint": fingerprint, "file_size": index.file_size,
                         "movie_timescale": index.movie_timescale, "tracks": tracks,
                         "content_id": index.content_id},
                        separators=(",", ":")).encode()
    return b"".join([MAGIC, struct.pack("<HI", VERSION, len(header)), header, *blobs])


def loads(data: bytes, fingerprint: str) -> MediaIndex:
    """Rebuild an index; raise MediaError if the bytes are not ours or are stale."""
    if len(data) < 10 or data[:4] != MAGIC:
        raise MediaError("not an index cache file")
    version, hlen = struct.unpack_from("<HI", data, 4)
    if version != VERSION:
        raise MediaError("index cache from another version")
    try:
        header = json.loads(data[10 : 10 + hlen])
    except ValueError:
        raise MediaError("corrupt index cache header") from None
    if header.get("fingerprint") != fingerprint:
        raise MediaError("index cache is stale")
    pos = 10 + hlen
    index = MediaIndex(file_size=header["file_size"], movie_timescale=header["movie_timescale"],
                       content_id=header.get("content_id", ""))
    for entry in header["tracks"]:
        parts: dict[str, Any] = {}
        for name, typecode, length in entry["blobs"]:
            chunk = data[pos : pos + length]
            if len(chunk) != length:
                raise MediaError("truncated index cache")
            pos += length
            if typecode:
                arr = array(typecode)
                arr.frombytes(chunk)
                if sys.byteorder == "big":
                    arr.byteswap()
                parts[name] = arr
            else:
                parts[name] = bytes(chunk)
        c = entry["codec"]
        codec = CodecInfo(c["fourcc"], c["codec"], parts["sample_entry"], parts["config"],
                          c["width"], c["height"], c["channels"], c["sample_rate"])
        index.tracks.append(Track(
            track_id=entry["track_id"], kind=entry["kind"], timescale=entry["timescale"],
            language=entry["language"], codec=codec, sizes=parts["sizes"],
            offsets=parts["offsets"], dts=parts["dts"], cts=parts.get("cts"),
            sync=parts.get("sync"), edit_shift=entry["edit_shift"], name=entry["name"],
            bitrate_hint=entry["bitrate_hint"]))
    return index


def _le(arr: array) -> bytes:
    if sys.byteorder == "big":
        arr = array(arr.typecode, arr)
        arr.byteswap()
    return arr.tobytes()
