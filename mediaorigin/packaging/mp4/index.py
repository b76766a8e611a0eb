"""Index an MP4 from its moov box: per-sample sizes, offsets, times and sync flags.

No decoding, no reads of media data. Expansion of the run-length tables is done with C-level
iterators (array, itertools, map) so that a one-hour file indexes in tens of milliseconds.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from collections.abc import Callable
from itertools import accumulate, chain, repeat
from operator import add, sub

from ..model import MediaError, MediaIndex, Track
from .boxes import BoxHeader, children, children_of_type, full_box, need, parse_header
from .codecs import codec_info, first_entry
from .locate import read_moov

_BIG_ENDIAN = sys.byteorder == "big"
MAX_SAMPLES = 50_000_000  # guards memory against absurd counts in hostile files


def index_file(read_at: Callable[[int, int], bytes], file_size: int) -> MediaIndex:
    """Index a file given a blocking `read_at(offset, size)`."""
    moov = read_moov(read_at, file_size)
    index = parse_moov(moov, file_size)
    digest = hashlib.blake2b(moov, digest_size=12)
    digest.update(file_size.to_bytes(8, "big"))
    index.content_id = digest.hexdigest()
    return index


def parse_moov(moov: bytes, file_size: int) -> MediaIndex:
    head = parse_header(moov, 0, len(moov))
    if head.type != "moov":
        raise MediaError("expected a moov box")
    kids = children(moov, head)
    if "mvhd" not in kids:
        raise MediaError("moov without mvhd")
    movie_timescale = _mvhd_timescale(moov, kids["mvhd"])
    index = MediaIndex(file_size=file_size, movie_timescale=movie_timescale)
    for trak in children_of_type(moov, head, "trak"):
        track = _parse_trak(moov, trak, movie_timescale, file_size)
        if track is not None:
            index.tracks.append(track)
    if not index.tracks:
        if "mvex" in kids:
            raise MediaError("fragmented MP4 input is not supported; store a regular MP4")
        raise MediaError("no video or audio track")
    return index


def _mvhd_timescale(data: bytes, mvhd: BoxHeader) -> int:
    version, _, pos = full_box(data, mvhd)
    pos += 16 if version == 1 else 8
    need(mvhd, pos, 4)
    timescale = struct.unpack_from(">I", data, pos)[0]
    if timescale == 0:
        raise MediaError("mvhd timescale is zero")
    return timescale


def _parse_trak(data: bytes, trak: BoxHeader, movie_ts: int, file_size: int) -> Track | None:
    kids = children(data, trak)
    mdia = kids.get("mdia")
    tkhd = kids.get("tkhd")
    if mdia is None or tkhd is None:
        raise MediaError("trak without tkhd or mdia")
    mk = children(data, mdia)
    if "mdhd" not in mk or "hdlr" not in mk or "minf" not in mk:
        raise MediaError("mdia without mdhd, hdlr or minf")
    handler = _handler(data, mk["hdlr"])
    kind = {"vide": "video", "soun": "audio"}.get(handler[0])
    if kind is None:
        return None  # hint, text, timecode and metadata tracks are not played
    stbl = children(data, mk["minf"]).get("stbl")
    if stbl is None:
        raise MediaError("minf without stbl")
    tables = children(data, stbl)
    for required in ("stsd", "stts", "stsc"):
        if required not in tables:
            raise MediaError(f"stbl without {required}")
    entry = first_entry(data, tables["stsd"])
    codec = codec_info(entry, kind)  # unknown codecs are described by fourcc; players decide

    timescale, language = _mdhd(data, mk["mdhd"])
    track_id = _tkhd_id(data, tkhd)
    sizes = _sample_sizes(data, tables)
    n = len(sizes)
    if n == 0:
        return None
    dts = _decode_times(data, tables["stts"], n)
    cts = _composition_offsets(data, tables.get("ctts"), n)
    sync = _sync_samples(data, tables.get("stss"), n)
    offsets = _sample_offsets(data, tables, sizes)
    if max(map(add, offsets, sizes)) > file_size:
        raise MediaError(f"track {track_id} points past the end of the file (truncated upload?)")
    edits = kids.get("edts")
    shift = _edit_shift(data, edits, timescale, movie_ts) if edits else 0
    bitrate = _bitrate_hint(entry)
    return Track(track_id=track_id, kind=kind, timescale=timescale, language=language,
                 codec=codec, sizes=sizes, offsets=offsets, dts=dts, cts=cts, sync=sync,
                 edit_shift=shift, name=handler[1], bitrate_hint=bitrate)


def _handler(data: bytes, hdlr: BoxHeader) -> tuple[str, str]:
    _, _, pos = full_box(data, hdlr)
    need(hdlr, pos, 8)
    handler = data[pos + 4 : pos + 8].decode("latin-1")
    name = data[pos + 20 : hdlr.end].split(b"\0", 1)[0]
    return handler, name.decode("utf-8", "replace").strip()


def _mdhd(data: bytes, mdhd: BoxHeader) -> tuple[int, str]:
    version, _, pos = full_box(data, mdhd)
    pos += 16 if version == 1 else 8
    need(mdhd, pos, 4 + (8 if version == 1 else 4) + 2)
    timescale = struct.unpack_from(">I", data, pos)[0]
    pos += 4 + (8 if version == 1 else 4)
    packed = struct.unpack_from(">H", data, pos)[0]
    if timescale == 0:
        raise MediaError("mdhd timescale is zero")
    letters = [((packed >> s) & 0x1F) + 0x60 for s in (10, 5, 0)]
    valid = all(0x61 <= c <= 0x7A for c in letters)
    language = bytes(letters).decode("latin-1") if valid else "und"
    return timescale, language


def _tkhd_id(data: bytes, tkhd: BoxHeader) -> int:
    version, _, pos = full_box(data, tkhd)
    pos += 16 if version == 1 else 8
    need(tkhd, pos, 4)
    return struct.unpack_from(">I", data, pos)[0]


def _u32_array(data: bytes, offset: int, count: int, box: BoxHeader) -> array:
    need(box, offset, 4 * count)
    out = array("I")
    out.frombytes(data[offset : offset + 4 * count])
    if not _BIG_ENDIAN:
        out.byteswap()
    return out


def _count(data: bytes, box: BoxHeader, pos: int, per_entry: int) -> int:
    need(box, pos, 4)
    count = struct.unpack_from(">I", data, pos)[0]
    if count > MAX_SAMPLES or count * per_entry > box.end - pos - 4:
        raise MediaError(f"{box.type} claims {count} entries, more than the box holds")
    return count


def _sample_sizes(data: bytes, tables: dict[str, BoxHeader]) -> array:
    if "stsz" in tables:
        box = tables["stsz"]
        _, _, pos = full_box(data, box)
        need(box, pos, 8)
        fixed, count = struct.unpack_from(">II", data, pos)
        if count > MAX_SAMPLES:
            raise MediaError(f"stsz claims {count} samples")
        if fixed:
            return array("I", [fixed]) * count
        return _u32_array(data, pos + 8, count, box)
    if "stz2" in tables:
        box = tables["stz2"]
        _, _, pos = full_box(data, box)
        need(box, pos, 8)
        field = data[pos + 3]
        count = struct.unpack_from(">I", data, pos + 4)[0]
        if field not in (4, 8, 16) or count > MAX_SAMPLES:
            raise MediaError("stz2 with invalid field size or count")
        raw = data[pos + 8 : box.end]
        if field == 16:
            need(box, pos + 8, 2 * count)
            values = array("H")
            values.frombytes(raw[: 2 * count])
            if not _BIG_ENDIAN:
                values.byteswap()
            return array("I", values)
        if field == 8:
            need(box, pos + 8, count)
            return array("I", raw[:count])
        need(box, pos + 8, (count + 1) // 2)
        nibbles = chain.from_iterable((b >> 4, b & 15) for b in raw[: (count + 1) // 2])
        return array("I", list(nibbles)[:count])
    raise MediaError("stbl without stsz or stz2")


def _runs(data: bytes, box: BoxHeader) -> tuple[array, array]:
    """(counts, values) of a table of (u32 count, u32 value) entries."""
    _, _, pos = full_box(data, box)
    count = _count(data, box, pos, 8)
    pairs = _u32_array(data, pos + 4, 2 * count, box)
    return pairs[0::2], pairs[1::2]


def _decode_times(data: bytes, stts: BoxHeader, n: int) -> array:
    counts, deltas = _runs(data, stts)
    expanded = array("q", chain.from_iterable(map(repeat, deltas, counts)))
    if len(expanded) < n:
        # Some muxers omit the last entry; repeat the last delta (or 0).
        last = expanded[-1] if expanded else 0
        expanded.extend([last] * (n - len(expanded)))
    del expanded[n:]
    return array("q", accumulate(expanded, initial=0))


def _composition_offsets(data: bytes, ctts: BoxHeader | None, n: int) -> array | None:
    if ctts is None:
        return None
    counts, values = _runs(data, ctts)
    signed = array("i")
    signed.frombytes(values.tobytes())  # version 0 files in the wild store negatives too
    expanded = array("i", chain.from_iterable(map(repeat, signed, counts)))
    if len(expanded) < n:
        expanded.extend([0] * (n - len(expanded)))
    del expanded[n:]
    if not any(expanded):
        return None
    return expanded


def _sync_samples(data: bytes, stss: BoxHeader | None, n: int) -> array | None:
    if stss is None:
        return None
    _, _, pos = full_box(data, stss)
    count = _count(data, stss, pos, 4)
    numbers = _u32_array(data, pos + 4, count, stss)
    indices = array("I", sorted({x - 1 for x in numbers if 1 <= x <= n}))
    if len(indices) == n:
        return None
    if not indices:
        indices = array("I", [0])  # a track with no sync sample: start decoding at the first
    return indices


def _sample_offsets(data: bytes, tables: dict[str, BoxHeader], sizes: array) -> array:
    if "stco" in tables:
        box = tables["stco"]
        _, _, pos = full_box(data, box)
        count = _count(data, box, pos, 4)
        chunk_offsets = array("Q", _u32_array(data, pos + 4, count, box))
    elif "co64" in tables:
        box = tables["co64"]
        _, _, pos = full_box(data, box)
        count = _count(data, box, pos, 8)
        need(box, pos + 4, 8 * count)
        chunk_offsets = array("Q")
        chunk_offsets.frombytes(data[pos + 4 : pos + 4 + 8 * count])
        if not _BIG_ENDIAN:
            chunk_offsets.byteswap()
    else:
        raise MediaError("stbl without stco or co64")
    per_chunk = _samples_per_chunk(data, tables["stsc"], len(chunk_offsets))
    n = len(sizes)
    if sum(per_chunk) < n:
        raise MediaError("stsc/stco describe fewer samples than stsz")
    if min(per_chunk, default=1) == max(per_chunk, default=1) == 1:  # a sample per chunk
        return chunk_offsets[:n]
    # offset[i] = chunk_offset[c] + (prefix[i] - prefix[first sample of c])
    prefix = array("q", accumulate(sizes, initial=0))
    firsts = accumulate(per_chunk, initial=0)
    deltas = list(map(sub, chunk_offsets, map(prefix.__getitem__, firsts)))
    per_sample = chain.from_iterable(map(repeat, deltas, per_chunk))
    return array("Q", map(add, prefix[:n], per_sample))


def _samples_per_chunk(data: bytes, stsc: BoxHeader, chunk_count: int) -> list[int]:
    _, _, pos = full_box(data, stsc)
    count = _count(data, stsc, pos, 12)
    table = _u32_array(data, pos + 4, 3 * count, stsc)
    firsts, spc = table[0::3], table[1::3]
    ends = firsts[1:]
    ends.append(max(chunk_count + 1, firsts[-1]) if count else 1)
    lengths = list(map(sub, ends, firsts))
    if count and (firsts[0] < 1 or min(lengths) < 0):
        raise MediaError("stsc entries out of order")
    # Runs are expanded with C-level iterators: ffmpeg writes one entry per chunk for
    # interleaved audio, ~100k entries in a one-hour lecture.
    return list(chain.from_iterable(map(repeat, spc, lengths)))[:chunk_count]


def _edit_shift(data: bytes, edts: BoxHeader, timescale: int, movie_ts: int) -> int:
    """Ticks from decode time to presentation time that the edit list prescribes.

    Empty edits delay the track; the first real edit's media_time is where presentation
    starts. Further edits (rare in lectures) are ignored: every sample is still served.
    """
    elst = children(data, edts).get("elst")
    if elst is None:
        return 0
    version, _, pos = full_box(data, elst)
    entry = 20 if version == 1 else 12
    count = _count(data, elst, pos, entry)
    pos += 4
    delay = 0
    for _ in range(count):
        if version == 1:
            duration, media_time = struct.unpack_from(">Qq", data, pos)
        else:
            duration, media_time = struct.unpack_from(">Ii", data, pos)
        pos += entry
        if media_time == -1:
            delay += duration * timescale // movie_ts
            continue
        return delay - media_time
    return delay


def _bitrate_hint(entry: bytes) -> int:
    pos = entry.find(b"btrt")
    if pos >= 4 and pos + 16 <= len(entry):
        return struct.unpack_from(">I", entry, pos + 12)[0]
    return 0
