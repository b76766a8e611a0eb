"""Fragmented MP4 (CMAF-style) init and media segments: one track per file, or several
muxed (live LL-HLS: one request per part for video and audio together).

    init:    |ftyp| |moov |mvhd| |trak |tkhd| |mdia |mdhd| |hdlr| |minf ... |stsd|| |mvex |trex||
    segment: |styp| |moof |mfhd| |traf |tfhd| |tfdt| |trun|||  |mdat|

Muxed, moov has a trak and a trex per track and moof a traf per track (track IDs 1, 2, ...
in the order given); the one mdat holds the tracks' samples one run after the other.

The source sample entry (avcC/hvcC/esds and all) is copied verbatim into stsd, so whatever
the encoder put there reaches the decoder unchanged. Timestamps come in already on the
output timeline; trun version 1 carries signed composition offsets (B-frames).
"""

from __future__ import annotations

import struct
from itertools import chain

from ..model import SampleRun, Track
from ..mp4.boxes import box, full

TRACK_ID = 1
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_SYNC_FLAGS = 0x02000000  # sample_depends_on = 2 (independent)
_NON_SYNC_FLAGS = 0x01010000  # depends on others, non-sync
_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400  # offset, duration, size, flags
_TRUN_CTS = 0x000800
_STYP = box(b"styp", b"msdh", struct.pack(">I", 0), b"msdh", b"msix")


def init_segment(*tracks: Track) -> bytes:
    """ftyp + moov describing the tracks (IDs 1, 2, ...), with no samples (they come in
    fragments)."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6", b"mp41", b"dash", b"cmfc")
    mvhd = full(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, tracks[0].timescale, 0),
                struct.pack(">IH", 0x00010000, 0x0100), bytes(10), _MATRIX, bytes(24),
                struct.pack(">I", TRACK_ID + len(tracks)))
    ids = range(TRACK_ID, TRACK_ID + len(tracks))
    mvex = box(b"mvex", *(full(b"trex", 0, 0, struct.pack(">5I", i, 1, 0, 0, 0)) for i in ids))
    return ftyp + box(b"moov", mvhd, *(_trak(t, i) for t, i in zip(tracks, ids, strict=True)), mvex)


def _trak(track: Track, track_id: int) -> bytes:
    video = track.kind == "video"
    width = track.codec.width << 16
    height = track.codec.height << 16
    tkhd = full(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, track_id, 0, 0), bytes(8),
                struct.pack(">hhHH", 0, 0, 0 if video else 0x0100, 0), _MATRIX,
                struct.pack(">II", width if video else 0, height if video else 0))
    mdhd = full(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, track.timescale, 0),
                struct.pack(">HH", _pack_language(track.language), 0))
    handler, name = (b"vide", b"VideoHandler") if video else (b"soun", b"SoundHandler")
    hdlr = full(b"hdlr", 0, 0, bytes(4), handler, bytes(12), name, b"\0")
    media_header = full(b"vmhd", 0, 1, bytes(8)) if video else full(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full(b"dref", 0, 0, struct.pack(">I", 1), full(b"url ", 0, 1)))
    stbl = box(b"stbl",
               full(b"stsd", 0, 0, struct.pack(">I", 1), track.codec.sample_entry),
               full(b"stts", 0, 0, bytes(4)), full(b"stsc", 0, 0, bytes(4)),
               full(b"stsz", 0, 0, bytes(8)), full(b"stco", 0, 0, bytes(4)))
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def _pack_language(code: str) -> int:
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        code = "und"
    a, b, c = (ord(ch.lower()) - 0x60 for ch in code)
    return (a << 10) | (b << 5) | c


def media_segment(run: SampleRun, sequence: int) -> bytes:
    """styp + moof + mdat for the samples of one run."""
    return muxed_segment([run], sequence)


def muxed_segment(runs: list[SampleRun | None], sequence: int) -> bytes:
    """styp + moof + mdat for runs of the tracks of an init_segment, in its order (None:
    that track has nothing in this fragment, and no traf)."""
    present = [(track_id, run) for track_id, run in enumerate(runs, TRACK_ID)
               if run is not None]
    trafs = [_traf(run, track_id) for track_id, run in present]
    moof = bytearray(box(b"moof", full(b"mfhd", 0, 0, struct.pack(">I", sequence)),
                         *(traf for traf, _ in trafs)))
    # Sizes are fixed before the data offsets are known: moof is built once with
    # placeholders, measured, then each offset is patched in place. Each trun sits at the
    # end of its traf, its data_offset field just before its sample table.
    end, offset = 8 + 16, len(moof) + 8  # after moof's header and mfhd; after mdat's header
    for (traf, table_size), (_, run) in zip(trafs, present, strict=True):
        end += len(traf)
        struct.pack_into(">i", moof, end - table_size - 4, offset)
        offset += len(run.data)
    mdat_header = struct.pack(">I4s", 8 + sum(len(run.data) for _, run in present), b"mdat")
    return b"".join((_STYP, moof, mdat_header, *(run.data for _, run in present)))


def _traf(run: SampleRun, track_id: int) -> tuple[bytes, int]:
    """A traf for one run (trun's data_offset 0, to be patched) and the size of trun's
    sample table, which ends the traf."""
    n = len(run.sizes)
    flags = [_SYNC_FLAGS if s else _NON_SYNC_FLAGS for s in run.sync]
    trun_flags = _TRUN_FLAGS
    if run.cts_offsets is not None:
        trun_flags |= _TRUN_CTS
        fmt = ">" + "IIIi" * n
        table = struct.pack(fmt, *chain.from_iterable(
            zip(run.durations, run.sizes, flags, run.cts_offsets, strict=True)))
    else:
        fmt = ">" + "III" * n
        table = struct.pack(fmt, *chain.from_iterable(
            zip(run.durations, run.sizes, flags, strict=True)))
    traf = box(b"traf",
               full(b"tfhd", 0, 0x020000, struct.pack(">I", track_id)),
               full(b"tfdt", 1, 0, struct.pack(">Q", run.base_time)),
               full(b"trun", 1, trun_flags, struct.pack(">Ii", n, 0), table))
    return traf, len(table)
