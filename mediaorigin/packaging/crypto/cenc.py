"""ISO/IEC 23001-7 Common Encryption of our fMP4 segments: 'cenc' (AES-CTR) and 'cbcs'
(AES-CBC, 1:9 pattern for video, whole blocks for audio, constant 16-byte IV).

    init:    |ftyp| |moov ... |stsd |encv (avcC ...) |sinf |frma| |schm| |schi |tenc|||||
                         ... |mvex| |pssh|...|
    segment: |styp| |moof |mfhd| |traf |tfhd| |tfdt| |trun| |saiz| |saio| |senc|||  |mdat|

Pure functions, bytes in and bytes out; `encrypt_segment_progressive` makes the same bytes in
order, a chunk at a time, so that sending can overlap the cipher (see progressive.py).
Encryption keeps every sample's size, so the only layout change is the moof growing by
saiz+saio+senc: trun data offsets move by that much.
`decrypt_segment` is the exact inverse (it reads everything it needs from the encrypted init),
so decrypt(encrypt(segment)) gives back the clear segment byte for byte.

IVs ('cenc') must never repeat under one key with different plaintext. `sample_ivs` derives
them from (kid, context, segment number, sample index): reproducible on every replica, and
unique as long as the context names everything that changes the segment's samples for one
key (rendition, clip range).
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_left
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Literal

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from ..model import MediaError
from ..mp4.boxes import BoxHeader, box, children_of_type, full, full_box, iter_boxes, parse_header
from .buffers import scratch
from .progressive import CHUNK, Progressive
from .subsamples import BLOCK, SampleMapper, Subsample

Scheme = Literal["cenc", "cbcs"]
SampleCodec = Literal["avc", "hevc", "aac"]
IvSource = Callable[[int], bytes]  # sample index in the segment -> IV
Buffer = bytes | bytearray | memoryview

VIDEO_PATTERN = (1, 9)  # cbcs crypt:skip blocks for video
AUDIO_PATTERN = (0, 0)  # cbcs for other tracks: no pattern, every whole block encrypted
_VIDEO_ENTRIES = {"avc1", "avc3", "hvc1", "hev1", "av01", "vp09"}
_AUDIO_ENTRIES = {"mp4a", "ac-3", "ec-3", "Opus", "fLaC"}
_VISUAL_FIELDS = 78
_AUDIO_FIELDS = 28
_INIT_CONTAINERS = {"moov", "trak", "mdia", "minf", "stbl"}
_CRYPTO_BOXES = frozenset({"senc", "saiz", "saio"})
_SENC_SUBSAMPLES = 0x2
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_ONE_SUBSAMPLE = struct.Struct(">HHI")
# CipherContext.reset_nonce (AES-CTR) came with cryptography 43; before it, a context per IV.
_NO_RESET_NONCE = not hasattr(Cipher(algorithms.AES(bytes(16)), modes.CTR(bytes(16))).encryptor(),
                              "reset_nonce")


@dataclass(frozen=True)
class ProtectionInfo:
    """What the encrypted init says about its (first) protected sample entry."""

    scheme: str
    kid: bytes
    iv_size: int
    constant_iv: bytes | None
    crypt_byte_block: int
    skip_byte_block: int
    original_format: str


# --- init segment --------------------------------------------------------------------------


def encrypt_init(init: bytes, scheme: Scheme, kid: bytes, pssh_boxes: Sequence[bytes] = (),
                 iv_size: int = 8, constant_iv: bytes | None = None) -> bytes:
    """The init segment with its sample entries protected (encv/enca + sinf) and the pssh
    boxes appended to moov."""
    _check_params(scheme, kid, iv_size, constant_iv)

    def protect(entry: bytes) -> bytes:
        head = parse_header(entry, 0, len(entry))
        if head.type in _VIDEO_ENTRIES:
            new_type, pattern = b"encv", VIDEO_PATTERN
        elif head.type in _AUDIO_ENTRIES:
            new_type, pattern = b"enca", AUDIO_PATTERN
        else:
            raise MediaError(f"cannot encrypt sample entry '{head.type}'")
        tenc = _tenc(scheme, kid, iv_size, constant_iv, pattern)
        sinf = box(b"sinf", box(b"frma", head.type.encode("latin-1")),
                   full(b"schm", 0, 0, scheme.encode(), _U32.pack(0x00010000)),
                   box(b"schi", tenc))
        end = _children_end(entry, head)
        return box(new_type, entry[head.body_offset : end], sinf)

    return _rewrite_init(init, protect, list(pssh_boxes))


def clear_init(init: bytes) -> bytes:
    """The inverse of encrypt_init: original sample entries back, sinf and pssh removed."""

    def unprotect(entry: bytes) -> bytes:
        head = parse_header(entry, 0, len(entry))
        if head.type not in ("encv", "enca"):
            return entry
        end = _children_end(entry, head)
        sinf = _child_boxes(entry, head, "sinf")
        if not sinf:
            raise MediaError(f"'{head.type}' without sinf")
        frma = children_of_type(entry, sinf[0], "frma")
        if not frma:
            raise MediaError("sinf without frma")
        original = entry[frma[0].body_offset : frma[0].body_offset + 4]
        kept = b"".join(entry[c.offset : c.end] for c in _entry_children(entry, head)
                        if c.type != "sinf")  # fmt: skip
        fields_end = _fields_end(entry, head)
        return box(original, entry[head.body_offset : fields_end], kept, entry[end : head.end])

    return _rewrite_init(init, unprotect, None)


def read_protection(init: bytes) -> ProtectionInfo:
    """schm/tenc of the first protected sample entry of an encrypted init segment."""
    for entry in _sample_entries(init):
        head = parse_header(entry, 0, len(entry))
        if head.type not in ("encv", "enca"):
            continue
        sinf = _child_boxes(entry, head, "sinf")[0]
        kids = {c.type: c for c in iter_boxes(entry, sinf.body_offset, sinf.end)}
        original = entry[kids["frma"].body_offset : kids["frma"].body_offset + 4].decode()
        _, _, pos = full_box(entry, kids["schm"])
        scheme = entry[pos : pos + 4].decode("latin-1")
        tenc = children_of_type(entry, kids["schi"], "tenc")[0]
        version, _, pos = full_box(entry, tenc)
        pattern = entry[pos + 1]
        iv_size = entry[pos + 3]
        kid = entry[pos + 4 : pos + 20]
        constant = None
        if iv_size == 0:
            n = entry[pos + 20]
            constant = entry[pos + 21 : pos + 21 + n]
        crypt, skip = (pattern >> 4, pattern & 0xF) if version else (0, 0)
        return ProtectionInfo(scheme, kid, iv_size, constant, crypt, skip, original)
    raise MediaError("init segment has no protected sample entry")


def _check_params(scheme: str, kid: bytes, iv_size: int, constant_iv: bytes | None) -> None:
    if len(kid) != 16:
        raise ValueError("KID must be 16 bytes")
    if scheme == "cenc":
        if iv_size not in (8, 16) or constant_iv is not None:
            raise ValueError("'cenc' needs per-sample IVs of 8 or 16 bytes, no constant IV")
    elif scheme == "cbcs":
        if iv_size != 0 or constant_iv is None or len(constant_iv) != 16:
            raise ValueError("'cbcs' needs iv_size 0 and a 16-byte constant IV")
    else:
        raise ValueError(f"unsupported scheme {scheme!r}, expected 'cenc' or 'cbcs'")


def _tenc(scheme: str, kid: bytes, iv_size: int, constant_iv: bytes | None,
          pattern: tuple[int, int]) -> bytes:
    if scheme == "cenc":  # version 0: reserved(8) reserved(8)
        return full(b"tenc", 0, 0, bytes([0, 0, 1, iv_size]), kid)
    crypt, skip = pattern  # version 1: reserved(8) crypt(4) skip(4)
    assert constant_iv is not None
    return full(b"tenc", 1, 0, bytes([0, crypt << 4 | skip, 1, 0]), kid,
                bytes([len(constant_iv)]), constant_iv)


def _rewrite_init(init: bytes, entry_fn: Callable[[bytes], bytes],
                  pssh: list[bytes] | None) -> bytes:
    """Copy the box tree, passing stsd entries through entry_fn; pssh None drops moov's pssh
    boxes, a list appends those. Container sizes follow from rebuilding them."""

    def rebuild(start: int, end: int, in_moov: bool) -> bytes:
        out = []
        for b in iter_boxes(init, start, end):
            if b.type in _INIT_CONTAINERS:
                body = rebuild(b.body_offset, b.end, b.type == "moov")
                if b.type == "moov" and pssh:
                    body += b"".join(pssh)
                out.append(box(b.type.encode("latin-1"), body))
            elif b.type == "stsd":
                _, _, pos = full_box(init, b)
                entries = [entry_fn(init[e.offset : e.end])
                           for e in iter_boxes(init, pos + 4, b.end)]  # fmt: skip
                out.append(box(b"stsd", init[b.body_offset : pos + 4], *entries))
            elif not (in_moov and b.type == "pssh" and pssh is None):
                out.append(init[b.offset : b.end])
        return b"".join(out)

    return rebuild(0, len(init), False)


def _sample_entries(init: bytes) -> list[bytes]:
    found: list[bytes] = []

    def walk(start: int, end: int) -> None:
        for b in iter_boxes(init, start, end):
            if b.type in _INIT_CONTAINERS:
                walk(b.body_offset, b.end)
            elif b.type == "stsd":
                _, _, pos = full_box(init, b)
                found.extend(init[e.offset : e.end] for e in iter_boxes(init, pos + 4, b.end))

    walk(0, len(init))
    return found


def _fields_end(entry: bytes, head: BoxHeader) -> int:
    """Where a sample entry's child boxes start."""
    kind = head.type
    if kind == "encv" or kind in _VIDEO_ENTRIES:
        return head.body_offset + _VISUAL_FIELDS
    version = _U16.unpack_from(entry, head.body_offset + 8)[0]
    return head.body_offset + _AUDIO_FIELDS + {1: 16, 2: 36}.get(version, 0)


def _entry_children(entry: bytes, head: BoxHeader) -> list[BoxHeader]:
    found = []
    try:
        for child in iter_boxes(entry, _fields_end(entry, head), head.end):
            found.append(child)
    except MediaError:
        pass  # trailing bytes that are not a box (some muxers pad entries)
    return found


def _children_end(entry: bytes, head: BoxHeader) -> int:
    kids = _entry_children(entry, head)
    return kids[-1].end if kids else _fields_end(entry, head)


def _child_boxes(entry: bytes, head: BoxHeader, btype: str) -> list[BoxHeader]:
    return [c for c in _entry_children(entry, head) if c.type == btype]


# --- IVs -----------------------------------------------------------------------------------


def sample_ivs(kid: bytes, segment_number: int, iv_size: int = 8,
               context: bytes = b"") -> IvSource:
    """Deterministic per-sample IVs: a base hashed from (kid, context, segment number), whose
    upper 64 bits count up by the sample index. `context` must tell apart everything that
    gives one segment number different samples under the same key (the rendition, a clip's
    range).

    An IV is the top of AES-CTR's counter block (8-byte IVs: the lower half, the block
    counter, starts at 0), so samples get disjoint counter ranges: sample i+1's first block
    lies 2^64 blocks beyond sample i's. One hash per segment, not per sample (a 4 s AAC
    segment has ~190 samples)."""
    if iv_size not in (8, 16):
        raise ValueError("IVs are 8 or 16 bytes")
    prefix = b"mediaorigin cenc iv\0" + kid + _U32.pack(len(context)) + context
    base = hashlib.sha256(prefix + segment_number.to_bytes(8, "big")).digest()
    high, low = int.from_bytes(base[:8], "big"), base[8:iv_size]

    def iv(index: int) -> bytes:
        return ((high + index) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big") + low

    return iv


# --- media segments ------------------------------------------------------------------------


@dataclass
class _Run:
    offset_field: int  # absolute position of trun's data_offset in the segment
    data_offset: int
    sizes: list[int]


@dataclass
class _Fragment:
    moof: BoxHeader
    traf: BoxHeader
    runs: list[_Run] = field(default_factory=list)

    def samples(self, limit: int, start: int | None = None) -> list[tuple[int, int]]:
        """(absolute start, size) of every sample, in order; all must end by `limit`. With
        `start`, the runs must lie one after the other from there on."""
        out: list[tuple[int, int]] = []
        for run in self.runs:
            starts = list(accumulate(run.sizes, initial=self.moof.offset + run.data_offset))
            if run.data_offset < 0 or starts[-1] > limit:
                raise MediaError("trun points outside the segment")
            if start is not None:
                if starts[0] < start:
                    raise MediaError("trun points outside the mdat, or runs overlap")
                start = starts[-1]
            out.extend(zip(starts[:-1], run.sizes, strict=True))
        return out


def encrypt_segment(segment: bytes | Sequence[Buffer], scheme: Scheme, key: bytes,
                    kid: bytes, iv_source: IvSource | bytes | int, nal_length_size: int = 4,
                    codec: SampleCodec = "avc", iv_size: int = 8) -> bytes:
    """Encrypt every sample of a styp+moof+mdat segment and add senc/saiz/saio to its traf.

    segment: the clear segment, or the same in two parts (head, payload): everything up to
    and including the mdat header, then the mdat's payload. A packager has those before it
    joins them; given the parts, the encrypted segment is made without that join (a copy of
    the whole segment). The output is the same either way.
    iv_source: 'cenc': an IvSource, or the segment number (IVs from `sample_ivs(kid, n)`);
    'cbcs': the constant IV (bytes) that encrypt_init put in tenc."""
    return bytes(encrypt_segment_progressive(segment, scheme, key, kid, iv_source,
                                             nal_length_size, codec, iv_size).complete())


def encrypt_segment_progressive(segment: bytes | Sequence[Buffer], scheme: Scheme, key: bytes,
                                kid: bytes, iv_source: IvSource | bytes | int,
                                nal_length_size: int = 4, codec: SampleCodec = "avc",
                                iv_size: int = 8, chunk: int = CHUNK) -> Progressive:
    """`encrypt_segment`, made about `chunk` bytes at a time (see progressive.py); a step
    ends at a sample or protected range boundary. Whatever can fail (arguments, boxes, NAL
    units) fails here, before any ciphertext is made."""
    plan = _plan(segment, scheme, key, kid, iv_source, nal_length_size, codec, iv_size)
    buffer = bytearray(plan.size + BLOCK)  # update_into wants BLOCK - 1 bytes of room after
    return Progressive(plan.size, buffer, plan.fill(memoryview(buffer), max(1, chunk)))


@dataclass(slots=True)
class _Plan:
    """A segment's encryption, all but the ciphertext. The output is the new head (`lead`),
    then src[start:] with its protected ranges encrypted: src[p] goes to p + shift."""

    lead: list[Buffer]
    src: memoryview  # the segment, or the mdat's payload: what the sample offsets index
    start: int
    shift: int
    aes: algorithms.AES
    ranges: list[list[tuple[int, int]]]  # protected (start, length) in src, per sample
    ivs: list[bytes]  # 'cenc': one per sample
    pattern: tuple[int, int] | None = None  # 'cbcs': crypt:skip blocks, and the constant IV
    constant_iv: bytes = b""

    @property
    def size(self) -> int:
        return self.shift + len(self.src)

    def fill(self, out: memoryview, chunk: int) -> Iterator[int]:
        """Write the segment into `out` (size + BLOCK bytes) in order, yielding how many
        leading bytes are final about every `chunk` bytes."""
        src, shift = self.src, self.shift
        to = _Out(src, out[shift:], shift, chunk)
        at = 0
        for piece in self.lead:
            out[at : at + len(piece)] = piece
            at += len(piece)
        if self.pattern is None:
            cur = yield from _cenc_fill(self.aes, self.ivs, self.ranges, to, self.start)
        else:
            flat = [r for rs in self.ranges for r in rs]
            cur = yield from _cbcs_fill(self.aes, self.constant_iv, flat, self.pattern, to,
                                        self.start)
        to.dst[cur : len(src)] = src[cur:]
        yield self.size


def _plan(segment: bytes | Sequence[Buffer], scheme: Scheme, key: bytes, kid: bytes,
          iv_source: IvSource | bytes | int, nal_length_size: int, codec: SampleCodec,
          iv_size: int) -> _Plan:
    """Check everything and build the new moof: the subsample maps give the senc entries."""
    if len(key) != 16:
        raise ValueError("key must be 16 bytes")
    if scheme == "cenc":
        if isinstance(iv_source, bytes):
            raise ValueError("'cenc' must not reuse one IV for every sample")
        ivs = sample_ivs(kid, iv_source, iv_size) if isinstance(iv_source, int) else iv_source
    elif scheme == "cbcs":
        if not isinstance(iv_source, bytes) or len(iv_source) != 16:
            raise ValueError("'cbcs' needs the 16-byte constant IV")
        iv_size = 0
    else:
        raise ValueError(f"unsupported scheme {scheme!r}")
    head, src, base = _split(segment)
    frag = _parse_fragment(head, total=base + len(src))
    moof = frag.moof
    start = 0 if base else moof.end
    # (start, size) of every sample in `src`, in order (the output is written in order)
    samples = [(pos - base, size) for pos, size in frag.samples(base + len(src), base + start)]
    if scheme == "cenc":
        iv_list = [ivs(i) for i in range(len(samples))]
        for iv in iv_list:
            if len(iv) != iv_size:
                raise ValueError(f"IV source gave {len(iv)} bytes, expected {iv_size}")
    else:
        iv_list = [b""] * len(samples)
    video = codec != "aac"
    if video:
        mapper = SampleMapper(codec, nal_length_size, scheme)
        ranges, entries = [], []
        for (pos, size), iv in zip(samples, iv_list, strict=True):
            subs, sample_ranges = mapper.map(src, pos, size)
            ranges.append(sample_ranges)
            entries.append(_senc_entry(iv, subs))
    else:
        ranges = [[(pos, size)] if size else [] for pos, size in samples]
        entries = iv_list
    lead = [head[: moof.offset], _new_moof(head, frag, _crypto_boxes(entries, video)),
            head[moof.end : base]]
    plan = _Plan(lead, src, start, sum(map(len, lead)) - start, algorithms.AES(key),
                 ranges, iv_list)
    if scheme == "cbcs":
        assert isinstance(iv_source, bytes)
        plan.pattern, plan.constant_iv = VIDEO_PATTERN if video else AUDIO_PATTERN, iv_source
    return plan


def _split(segment: bytes | Sequence[Buffer]) -> tuple[memoryview, memoryview, int]:
    """(head, src, base): the boxes to parse, the bytes holding the samples, and where src
    starts in the segment (0 for a whole segment: then head and src are both all of it)."""
    if not isinstance(segment, (tuple, list)):
        whole = memoryview(segment).cast("B")
        return whole, whole, 0
    head, src = (memoryview(p).cast("B") for p in segment)
    base, total = len(head), len(head) + len(src)
    pos, b = 0, None  # the head's boxes, then the header of the mdat with the payload
    while pos < base:
        b = parse_header(head, pos, total) if base - pos >= 8 else None
        if b is None or b.end > base:
            break
        pos = b.end
    if b is None or (b.type, b.body_offset, b.end) != ("mdat", base, total):
        raise MediaError("the head of a segment in parts must end with the mdat header")
    return head, src, base


@dataclass(slots=True)
class _Out:
    """Where the ciphers write, in order: the output byte of src[p] is dst[p], at p + shift
    in the segment. They copy the clear bytes before each protected range, and yield
    (p + shift: every byte before it is final) about every `chunk` bytes."""

    src: memoryview
    dst: memoryview
    shift: int
    chunk: int


CipherSteps = Generator[int, None, int]  # yields steps, returns where it stopped in src


def _cenc_fill(aes: algorithms.AES, ivs: list[bytes], ranges: list[list[tuple[int, int]]],
               out: _Out, cur: int) -> CipherSteps:
    """AES-CTR of every sample's protected ranges, one keystream per sample from its IV
    (8 bytes: padded with a zero block counter). One context serves the whole segment, its
    counter set again for each sample (creating a context per sample costs ~10x more)."""
    src, dst, shift, chunk = out.src, out.dst, out.shift, out.chunk
    ctx: CipherContext | None = None
    done = cur
    for iv, sample_ranges in zip(ivs, ranges, strict=True):
        if not sample_ranges:
            continue
        if cur - done >= chunk:  # steps end between samples
            done = cur
            yield cur + shift
        nonce = iv.ljust(16, b"\0")
        if ctx is None or _NO_RESET_NONCE:
            ctx = Cipher(aes, modes.CTR(nonce)).encryptor()
        else:
            ctx.reset_nonce(nonce)
        update = ctx.update_into
        for start, n in sample_ranges:
            if start != cur:
                dst[cur:start] = src[cur:start]
            update(src[start : start + n], dst[start : start + n + BLOCK - 1])
            cur = start + n
    return cur


def _cbcs_fill(aes: algorithms.AES, iv: bytes, ranges: list[tuple[int, int]],
               pattern: tuple[int, int], out: _Out, cur: int) -> CipherSteps:
    """'cbcs' of every protected range (see _cbcs): each range is a CBC chain of its own,
    starting from the constant IV. One context serves them all: after a chain, one extra
    block D(IV) XOR (last ciphertext block) brings the chain value back to the IV, since
    E(D(IV)) = IV. Its output is discarded. Same bytes as a fresh context per range."""
    ctx = Cipher(aes, modes.CBC(iv)).encryptor()
    back = int.from_bytes(Cipher(aes, modes.ECB()).decryptor().update(iv), "big")
    junk = bytearray(2 * BLOCK)

    def rewind(last: Buffer) -> None:
        """`last`: the last ciphertext block of the previous chain."""
        ctx.update_into((int.from_bytes(last, "big") ^ back).to_bytes(BLOCK, "big"), junk)

    if pattern[1] == 0:
        return (yield from _cbc_whole_blocks(ctx, rewind, ranges, out, cur))
    return (yield from _cbc_pattern(ctx, rewind, ranges, pattern, out, cur))


def _cbc_whole_blocks(ctx: CipherContext, rewind: Callable[[Buffer], None],
                      ranges: list[tuple[int, int]], out: _Out, cur: int) -> CipherSteps:
    """Every whole block of each range (a trailing partial block stays clear): audio, where
    a range is a sample."""
    src, dst, shift, chunk = out.src, out.dst, out.shift, out.chunk
    update = ctx.update_into
    done, last = cur, None
    for start, n in ranges:
        whole = n // BLOCK * BLOCK
        if not whole:
            continue
        if cur - done >= chunk:
            done = cur
            yield cur + shift
        if last is not None:
            rewind(last)
        if start != cur:
            dst[cur:start] = src[cur:start]
        update(src[start : start + whole], dst[start : start + whole + BLOCK - 1])
        cur = start + whole
        last = dst[cur - BLOCK : cur]  # final output: it stays
    return cur


def _cbc_pattern(ctx: CipherContext, rewind: Callable[[Buffer], None],
                 ranges: list[tuple[int, int]], pattern: tuple[int, int], out: _Out,
                 cur: int) -> CipherSteps:
    """crypt:skip over each range, a batch of ranges (~`chunk` bytes of output) per step.
    Every range with at least one encrypted group is a chain (the last group may be cut
    short after its `crypt` blocks: the rest of the range stays clear)."""
    crypt, skip = pattern
    step, span = BLOCK * (crypt + skip), BLOCK * crypt
    chains = [(start, (n - span) // step + 1) for start, n in ranges if n >= span]
    ends = [start + step * (groups - 1) + span for start, groups in chains]
    last: bytes | None = None
    i = 0
    while i < len(chains):
        if i:
            yield cur + out.shift
        j = min(bisect_left(ends, cur + out.chunk, i) + 1, len(chains))
        last = _cbc_rows(ctx, rewind, chains[i:j], step, span, out, cur, last)
        cur, i = ends[j - 1], j
    return cur


def _cbc_rows(ctx: CipherContext, rewind: Callable[[Buffer], None],
              chains: list[tuple[int, int]], step: int, span: int, out: _Out, cur: int,
              last: Buffer | None) -> bytes:
    """One batch of pattern chains, written from src position `cur` on; returns the last
    ciphertext block (a copy: the thread's scratch may serve another call between steps).
    Each range is copied, up to its last encrypted block, to a row-aligned place: range r
    starts at a multiple of `step`, so every encrypted block of every range begins a
    `step`-byte row, and one strided gather and one scatter (by 8-byte words) serve the whole
    batch. In between, each range runs through the chain on its own."""
    src, dst = out.src, out.dst
    rows = sum(groups for _, groups in chains)
    room = scratch(rows * step)[: rows * step]
    plain = scratch(rows * span, "cbcs-plain")[: rows * span]
    cipher = scratch(rows * span + BLOCK, "cbcs-cipher")[: rows * span + BLOCK]
    at = 0
    for start, groups in chains:
        end = step * (groups - 1) + span
        room[at : at + end] = src[start : start + end]
        at += groups * step
    words, stride = span // 8, step // 8
    room_words, plain_words = room.cast("Q"), plain.cast("Q")
    for j in range(words):
        plain_words[j::words] = room_words[j::stride]
    at = 0
    for _, groups in chains:
        if last is not None:
            rewind(last)
        size = groups * span
        ctx.update_into(plain[at : at + size], cipher[at : at + size + BLOCK - 1])
        at += size
        last = cipher[at - BLOCK : at]
    cipher_words = cipher[: rows * span].cast("Q")
    for j in range(words):
        room_words[j::stride] = cipher_words[j::words]
    at = 0
    for start, groups in chains:
        end = start + step * (groups - 1) + span
        dst[cur:start] = src[cur:start]
        dst[start:end] = room[at : at + end - start]
        at += groups * step
        cur = end
    assert last is not None
    return bytes(last)


def decrypt_segment(segment: bytes, init: bytes, key: bytes) -> bytes:
    """Reference decryptor: the clear segment, with senc/saiz/saio removed and trun offsets
    restored. Scheme, IV size, constant IV and pattern come from the encrypted init."""
    info = read_protection(init)
    frag = _parse_fragment(segment, allow_crypto=True)
    senc = children_of_type(segment, frag.traf, "senc")
    samples = frag.samples(len(segment))
    entries = _read_senc(segment, senc[0], info.iv_size, len(samples)) if senc else None
    buf = bytearray(segment)
    aes = algorithms.AES(key)
    for i, (pos, size) in enumerate(samples):
        iv, subs = entries[i] if entries is not None else (b"", None)
        sample = memoryview(buf)[pos : pos + size]
        if info.scheme == "cenc":
            _ctr(aes, iv, sample, subs)
        elif info.scheme == "cbcs":
            _cbcs(aes, iv or info.constant_iv or b"", sample, subs,
                  (info.crypt_byte_block, info.skip_byte_block), encrypt=False)
        else:
            raise MediaError(f"unsupported scheme '{info.scheme}'")
        sample.release()
    return _relayout(bytes(buf), frag, b"", drop=_CRYPTO_BOXES)


def _parse_fragment(seg: bytes, allow_crypto: bool = False,
                    total: int | None = None) -> _Fragment:
    """The one moof/traf/truns of a segment; `total`: the segment's length when `seg` holds
    only its first bytes, up to the mdat's payload (see encrypt_segment)."""
    top = list(iter_boxes(seg, 0, total))
    if any(b.type == "sidx" for b in top):
        raise MediaError("segments with sidx are not supported (its sizes would change)")
    moofs = [b for b in top if b.type == "moof"]
    if len(moofs) != 1:
        raise MediaError(f"expected one moof, found {len(moofs)}")
    moof = moofs[0]
    trafs = children_of_type(seg, moof, "traf")
    if len(trafs) != 1:
        raise MediaError(f"expected one traf, found {len(trafs)}")
    traf = trafs[0]
    kids = list(iter_boxes(seg, traf.body_offset, traf.end))
    if not allow_crypto and any(k.type in _CRYPTO_BOXES for k in kids):
        raise MediaError("segment is already encrypted")
    tfhd = next((k for k in kids if k.type == "tfhd"), None)
    if tfhd is None:
        raise MediaError("traf without tfhd")
    _, tf_flags, pos = full_box(seg, tfhd)
    if tf_flags & 0x01:
        raise MediaError("tfhd base_data_offset is not supported (it moves with the mdat)")
    pos += 4 + (4 if tf_flags & 0x02 else 0) + (4 if tf_flags & 0x08 else 0)
    default_size = _U32.unpack_from(seg, pos)[0] if tf_flags & 0x10 else None
    frag = _Fragment(moof, traf)
    for trun in (k for k in kids if k.type == "trun"):
        frag.runs.append(_parse_trun(seg, trun, default_size))
    if not frag.runs:
        raise MediaError("traf without trun")
    return frag


def _parse_trun(seg: bytes, trun: BoxHeader, default_size: int | None) -> _Run:
    _, flags, pos = full_box(seg, trun)
    count = _U32.unpack_from(seg, pos)[0]
    pos += 4
    if not flags & 0x01:
        raise MediaError("trun without data_offset is not supported")
    offset_field = pos
    data_offset = struct.unpack_from(">i", seg, pos)[0]
    pos += 4 + (4 if flags & 0x04 else 0)
    fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit]
    stride = 4 * len(fields)
    if pos + stride * count > trun.end:
        raise MediaError("trun is truncated")
    if flags & 0x200:
        sizes = list(struct.unpack_from(f">{count * len(fields)}I", seg, pos)[
            fields.index(0x200) :: len(fields)])
    elif default_size is not None:
        sizes = [default_size] * count
    else:
        raise MediaError("no sample sizes in trun or tfhd")
    return _Run(offset_field, data_offset, sizes)


def _relayout(seg: bytes | bytearray, frag: _Fragment, add: bytes,
              drop: frozenset[str] = frozenset()) -> bytes:
    """The segment with its moof rebuilt by _new_moof."""
    moof = frag.moof
    # One copy of the (large) mdat: joined from a view, not sliced and then concatenated.
    return b"".join((seg[: moof.offset], _new_moof(seg, frag, add, drop),
                     memoryview(seg)[moof.end :]))


def _new_moof(seg: bytes | bytearray, frag: _Fragment, add: bytes,
              drop: frozenset[str] = frozenset()) -> bytes:
    """The moof with `add` appended to traf and `drop` types removed from it. trun data
    offsets move by the moof's growth; saio (if any) is pointed at senc's first entry."""
    moof, traf = frag.moof, frag.traf
    if moof.header_size != 8 or traf.header_size != 8:
        raise MediaError("64-bit moof/traf sizes are not supported")
    kept = [k for k in iter_boxes(seg, traf.body_offset, traf.end) if k.type not in drop]
    body = bytearray(b"".join(seg[k.offset : k.end] for k in kept) + add)
    delta = 8 + len(body) - traf.size
    traf_body = traf.body_offset - moof.offset  # where body starts, relative to the moof
    kids = list(iter_boxes(body))
    senc = next((k for k in kids if k.type == "senc"), None)
    for k in kids:
        if k.type == "trun":
            _, _, p = full_box(body, k)
            value = struct.unpack_from(">i", body, p + 4)[0]
            struct.pack_into(">i", body, p + 4, value + delta)
        elif k.type == "saio" and senc is not None:
            # senc: header 8, version/flags 4, sample_count 4, then the first entry.
            struct.pack_into(">I", body, k.end - 4, traf_body + senc.offset + 16)
    return b"".join((_U32.pack(moof.size + delta), b"moof",
                     seg[moof.body_offset : traf.offset],
                     _U32.pack(8 + len(body)), b"traf", body, seg[traf.end : moof.end]))


def _senc_entry(iv: bytes, subs: list[Subsample] | None) -> bytes:
    if subs is None:
        return iv
    if len(subs) == 1:
        return iv + _ONE_SUBSAMPLE.pack(1, *subs[0])
    return iv + struct.pack(f">H{len(subs) * 'HI'}", len(subs), *(v for s in subs for v in s))


def _crypto_boxes(entries: list[bytes], subsamples: bool) -> bytes:
    """saiz + saio + senc for one traf; saio's offset is patched by _relayout."""
    sizes = [len(e) for e in entries]
    if any(s > 255 for s in sizes):
        raise MediaError("a sample has too many subsamples for saiz (over 255 bytes of info)")
    if sizes and all(s == sizes[0] for s in sizes) and sizes[0]:
        saiz = full(b"saiz", 0, 0, bytes([sizes[0]]), _U32.pack(len(sizes)))
    else:
        saiz = full(b"saiz", 0, 0, b"\0", _U32.pack(len(sizes)), bytes(sizes))
    saio = full(b"saio", 0, 0, _U32.pack(1), _U32.pack(0))
    senc = full(b"senc", 0, _SENC_SUBSAMPLES if subsamples else 0, _U32.pack(len(entries)),
                *entries)
    return saiz + saio + senc


def _read_senc(seg: bytes, senc: BoxHeader, iv_size: int,
               count: int) -> list[tuple[bytes, list[Subsample] | None]]:
    _, flags, pos = full_box(seg, senc)
    n = _U32.unpack_from(seg, pos)[0]
    if n != count:
        raise MediaError(f"senc has {n} entries for {count} samples")
    pos += 4
    out = []
    for _ in range(n):
        iv = seg[pos : pos + iv_size]
        pos += iv_size
        subs = None
        if flags & _SENC_SUBSAMPLES:
            m = _U16.unpack_from(seg, pos)[0]
            subs = [struct.unpack_from(">HI", seg, pos + 2 + 6 * j) for j in range(m)]
            pos += 2 + 6 * m
        out.append((iv, subs))
    if pos > senc.end:
        raise MediaError("senc is truncated")
    return out


# --- the ciphers ---------------------------------------------------------------------------


def _ranges(size: int, subs: list[Subsample] | None,
            base: int = 0) -> list[tuple[int, int]]:
    """(start, length) of the protected ranges of a sample, starts counted from `base`."""
    if subs is None:
        return [(base, size)]
    out, pos = [], base
    for clear, protected in subs:
        pos += clear
        if protected:
            out.append((pos, protected))
        pos += protected
    if pos != base + size:
        raise MediaError(f"subsamples cover {pos - base} bytes of a {size}-byte sample")
    return out


def _ctr(aes: algorithms.AES, iv: bytes, sample: memoryview,
         subs: list[Subsample] | None) -> None:
    """AES-CTR in place: counter block = IV (8 bytes padded with a zero block counter, or
    16), one keystream running through all the protected ranges of the sample. Encryption
    and decryption are the same operation."""
    ranges = _ranges(len(sample), subs)
    if not ranges:
        return
    ctx = Cipher(aes, modes.CTR(iv.ljust(16, b"\0"))).encryptor()
    if len(ranges) == 1:
        start, n = ranges[0]
        sample[start : start + n] = ctx.update(sample[start : start + n])
        return
    out = ctx.update(b"".join(sample[s : s + n] for s, n in ranges))
    pos = 0
    for start, n in ranges:
        sample[start : start + n] = out[pos : pos + n]
        pos += n


def _cbcs(aes: algorithms.AES, iv: bytes, sample: memoryview, subs: list[Subsample] | None,
          pattern: tuple[int, int], encrypt: bool) -> None:
    """AES-CBC with a crypt:skip pattern in place. The chain restarts from the constant IV
    in every subsample and runs through the encrypted blocks only; a trailing partial block
    (or a pattern with fewer than `crypt` whole blocks left) stays clear. 0:0 = every block."""
    crypt, skip = pattern
    if skip == 0:
        crypt = max(crypt, 1)
    step = BLOCK * (crypt + skip)
    span = BLOCK * crypt
    for start, n in _ranges(len(sample), subs):
        if skip == 0:
            groups, span_here, step_here = 1, n // BLOCK * BLOCK, 0
        else:
            groups, span_here, step_here = (n - span) // step + 1 if n >= span else 0, span, step
        if not groups or not span_here:
            continue
        mode = modes.CBC(iv)
        ctx = Cipher(aes, mode).encryptor() if encrypt else Cipher(aes, mode).decryptor()
        if groups == 1:
            sample[start : start + span_here] = ctx.update(sample[start : start + span_here])
            continue
        # Gather the encrypted blocks with strided copies (byte j of every group at once),
        # run them through one CBC chain, scatter them back.
        end = start + step_here * (groups - 1) + span_here
        region = bytearray(sample[start:end])
        gathered = bytearray(groups * span_here)
        for j in range(span_here):
            gathered[j::span_here] = region[j::step_here]
        out = ctx.update(bytes(gathered))
        for j in range(span_here):
            region[j::step_here] = out[j::span_here]
        sample[start:end] = region
