"""MPEG-TS media segments for HLS, written from `SampleRun`s (pure: bytes in, bytes out).

Layout of a segment: PAT, PMT, then the PES packets of video and audio merged in decode-time
order. One program (1) on fixed PIDs: PMT 0x1000, video 0x100, audio 0x101.

Choices worth knowing:

* Every segment is standalone: elementary-stream continuity counters start at 0 in each
  segment (the writer cannot know how many packets earlier segments had). PAT/PMT appear
  once per segment, so their counter is `sequence % 16`, which keeps them continuous across
  consecutive segments.
* Timestamps are the media timeline at 90 kHz, no offset added: PTS = round(t * 90000 /
  timescale). PCR is synthetic: the DTS of the PES being sent minus PCR_DELAY, clamped at 0.
  It is sent in the first packet of every PES on the PCR PID (video, else audio) and, when
  the next such PES is more than PCR_INTERVAL away, in the stuffing of the PES's last packet
  (free) or, failing that, in PCR-only packets, so that PCRs are never more than 40 ms apart.
* Speed: the bulk of a segment is full 184-byte payload packets; those are a precomputed
  4-byte header plus a memoryview slice of the sample data, appended to one bytearray.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..crypto.sample_aes import encrypt_adts_frame, encrypt_annexb_sample, pmt_stream
from ..model import MediaError, SampleRun
from .adts import ADTS_HEADER_SIZE, AdtsFramer
from .annexb import access_unit, avc_format, hevc_format
from .psi import (
    PAT_PID,
    PMT_PID,
    ElementaryStream,
    language_descriptor,
    pat_section,
    pmt_section,
    psi_packet,
    registration_descriptor,
)

VIDEO_PID = 0x100
AUDIO_PID = 0x101

PACKET_SIZE = 188
PAYLOAD_SIZE = 184
CLOCK = 90_000
PCR_DELAY = 9_000  # 100 ms: the decoder sees each PES this long before its DTS
PCR_INTERVAL = 3_600  # 40 ms, the DVB maximum (ISO 13818-1 allows 100 ms)
# Gaps longer than this are holes in the media (or mismatched runs), not a slow frame rate:
# the clock just jumps instead of being filled with thousands of PCR-only packets.
PCR_MAX_FILL = 90_000
AUDIO_PES_MAX_FRAMES = 5
# 80 ms: with one extra PCR in the last packet's stuffing, audio-only PCRs stay <= 40 ms apart.
AUDIO_PES_MAX_DURATION = 2 * PCR_INTERVAL
AUDIO_PES_MAX_PAYLOAD = 0xFFFF - 3 - 10  # PES_packet_length must be exact for audio

_MASK33 = (1 << 33) - 1
_AF_RAI, _AF_PCR = 0x40, 0x10
_PCR_FIELD_SIZE = 8  # adaptation_field_length + flags + 6 PCR bytes

Parts = list[bytes | memoryview]
Framer = Callable[[memoryview, bool], Parts]  # (sample, keyframe) -> bytes carried in the PES

# Header of a full-payload, non-start packet, per PID and continuity counter.
_FULL_HEADERS = {
    pid: tuple(bytes((0x47, pid >> 8, pid & 0xFF, 0x10 | cc)) for cc in range(16))
    for pid in (VIDEO_PID, AUDIO_PID)
}


@dataclass(frozen=True, slots=True)
class _Carriage:
    """How one track travels: its PMT entry, PES stream_id and per-sample framing."""

    es: ElementaryStream
    stream_id: int
    framer: Framer


@dataclass(frozen=True, slots=True)
class _Pes:
    dts: int  # 90 kHz, not wrapped: the merge key and the PCR source
    pid: int
    parts: Parts  # PES header, then payload pieces (views into the run's data, not copies)
    size: int  # total bytes of parts
    random_access: bool
    next_dts: int | None  # DTS of the next PES on the same PID, to plan the next PCR


def write_ts_segment(
    video: SampleRun | None, audio: SampleRun | None, *, sequence: int = 0,
    sample_aes: tuple[bytes, bytes] | None = None,
) -> bytes:
    """One self-contained TS segment: PAT, PMT and the runs' PES packets in DTS order.

    sample_aes: (key, iv) to encrypt H.264 and AAC samples in place (HLS SAMPLE-AES)."""
    if video is None and audio is None:
        raise MediaError("a TS segment needs a video or an audio run")
    streams: list[ElementaryStream] = []
    units: list[Iterator[_Pes]] = []
    if video is not None:
        carriage = _video_carriage(video)
        if sample_aes is not None:
            carriage = _protected(carriage, encrypt_annexb_sample, sample_aes)
        streams.append(carriage.es)
        units.append(_video_pes(video, carriage))
    if audio is not None:
        carriage = _audio_carriage(audio)
        if sample_aes is not None:
            carriage = _protected(carriage, encrypt_adts_frame, sample_aes,
                                  audio.track.codec.config)
        streams.append(carriage.es)
        units.append(_audio_pes(audio, carriage))
    pcr_pid = streams[0].pid
    cc = sequence & 0x0F
    out = bytearray(psi_packet(PAT_PID, pat_section(), cc))
    out += psi_packet(PMT_PID, pmt_section(streams, pcr_pid), cc)
    muxer = _Muxer(pcr_pid, out)
    for pes in heapq.merge(*units, key=lambda p: (p.dts, p.pid)):  # video first on ties
        muxer.add(pes)
    return bytes(out)


def write_ts_iframe(video: SampleRun) -> bytes:
    """A segment holding a single keyframe, for EXT-X-I-FRAMES-ONLY playlists."""
    if len(video) != 1 or not video.sync[0]:
        raise MediaError("an I-frame segment takes exactly one keyframe sample")
    return write_ts_segment(video, None)


# --- tracks -> carriage -------------------------------------------------------------------


def _protected(c: _Carriage, transform: Callable[[bytes, bytes, bytes], bytes],
               key_iv: tuple[bytes, bytes], asc: bytes = b"") -> _Carriage:
    """The carriage with each sample encrypted for SAMPLE-AES and the PMT entry saying so."""
    try:
        stream_type, desc = pmt_stream(c.es.stream_type, asc)
    except ValueError as e:  # HEVC, AC-3, MP3: not covered by SAMPLE-AES for TS
        raise MediaError(str(e)) from None
    key, iv = key_iv

    def framer(sample: memoryview, keyframe: bool) -> Parts:
        return [transform(b"".join(c.framer(sample, keyframe)), key, iv)]

    return _Carriage(ElementaryStream(c.es.pid, stream_type, desc + c.es.descriptors),
                     c.stream_id, framer)


def _video_carriage(run: SampleRun) -> _Carriage:
    codec = run.track.codec
    if codec.fourcc in ("avc1", "avc3"):
        fmt, stream_type = avc_format(codec.config), 0x1B
    elif codec.fourcc in ("hvc1", "hev1"):
        fmt, stream_type = hevc_format(codec.config), 0x24
    else:
        raise MediaError(f"video codec {codec.fourcc!r} cannot be carried in MPEG-TS")

    def framer(sample: memoryview, keyframe: bool) -> Parts:
        return access_unit(fmt, sample, keyframe)

    return _Carriage(ElementaryStream(VIDEO_PID, stream_type), 0xE0, framer)


def _audio_carriage(run: SampleRun) -> _Carriage:
    codec = run.track.codec
    lang = language_descriptor(run.track.language)
    fourcc = codec.fourcc
    if fourcc == "mp4a":
        oti = _mp4a_object_type(codec.codec)
        if oti in (0x69, 0x6B):  # MPEG-2 / MPEG-1 audio (mp3) in an mp4a sample entry
            stream_type = 0x04 if oti == 0x69 else 0x03
            return _Carriage(ElementaryStream(AUDIO_PID, stream_type, lang), 0xC0, _raw)
        if oti in (None, 0x40, 0x66, 0x67, 0x68):
            if not codec.config:
                raise MediaError("AAC track has no AudioSpecificConfig")
            framer = _adts_framer(AdtsFramer.from_config(codec.config))
            return _Carriage(ElementaryStream(AUDIO_PID, 0x0F, lang), 0xC0, framer)
        raise MediaError(f"mp4a object type 0x{oti:02x} cannot be carried in MPEG-TS")
    if fourcc == ".mp3":
        stream_type = 0x04 if 0 < codec.sample_rate < 32000 else 0x03  # MPEG-2 LSF rates
        return _Carriage(ElementaryStream(AUDIO_PID, stream_type, lang), 0xC0, _raw)
    if fourcc == "ac-3":
        desc = registration_descriptor(b"AC-3") + lang
        return _Carriage(ElementaryStream(AUDIO_PID, 0x81, desc), 0xBD, _raw)
    if fourcc == "ec-3":
        desc = registration_descriptor(b"EAC3") + lang
        return _Carriage(ElementaryStream(AUDIO_PID, 0x87, desc), 0xBD, _raw)
    raise MediaError(f"audio codec {fourcc!r} cannot be carried in MPEG-TS")


def _mp4a_object_type(codec: str) -> int | None:
    """objectTypeIndication from an RFC 6381 string ("mp4a.40.2" -> 0x40), None if absent."""
    parts = codec.split(".")
    try:
        return int(parts[1], 16) if len(parts) > 1 else None
    except ValueError:
        return None


def _raw(sample: memoryview, keyframe: bool) -> Parts:
    """Codecs whose MP4 samples are already self-delimiting frames (AC-3, E-AC-3, MP3)."""
    return [sample]


def _adts_framer(adts: AdtsFramer) -> Framer:
    def framer(sample: memoryview, keyframe: bool) -> Parts:
        return [adts.header(len(sample)), sample]

    return framer


# --- runs -> PES --------------------------------------------------------------------------


def _check_run(run: SampleRun) -> None:
    n = len(run.sizes)
    if (
        len(run.durations) != n
        or len(run.sync) != n
        or (run.cts_offsets is not None and len(run.cts_offsets) != n)
    ):
        raise MediaError("sample run arrays have different lengths")
    if sum(run.sizes) != len(run.data):
        raise MediaError("sample run sizes do not add up to its payload")
    if run.track.timescale <= 0:
        raise MediaError("track timescale must be positive")


def _to_90k(ticks: int, timescale: int) -> int:
    """round(ticks * 90000 / timescale), half up, exact in integers."""
    return (ticks * CLOCK + timescale // 2) // timescale


def _timestamps(run: SampleRun) -> tuple[list[int], list[int]]:
    """90 kHz DTS of every sample plus the end of the last one, and PTS of every sample."""
    timescale = run.track.timescale
    t = run.base_time
    ticks = [t]
    for d in run.durations:
        t += d
        ticks.append(t)
    dts = [_to_90k(x, timescale) for x in ticks]
    if run.cts_offsets is None:
        return dts, dts[:-1]
    pts = [_to_90k(x + c, timescale) for x, c in zip(ticks, run.cts_offsets, strict=False)]
    return dts, pts


def _video_pes(run: SampleRun, carriage: _Carriage) -> Iterator[_Pes]:
    """One PES per access unit."""
    _check_run(run)
    dts, pts = _timestamps(run)
    data = memoryview(run.data)
    n, pos = len(run), 0
    for i, size in enumerate(run.sizes):
        keyframe = bool(run.sync[i])
        parts = carriage.framer(data[pos : pos + size], keyframe)
        pos += size
        yield _Pes(
            dts=dts[i],
            pid=carriage.es.pid,
            parts=parts,
            size=_add_pes_header(parts, carriage.stream_id, pts[i], dts[i], bounded=False),
            random_access=keyframe,
            next_dts=dts[i + 1] if i + 1 < n else None,
        )


def _audio_pes(run: SampleRun, carriage: _Carriage) -> Iterator[_Pes]:
    """Consecutive frames grouped into PES of at most AUDIO_PES_MAX_FRAMES / _DURATION."""
    _check_run(run)
    dts, pts = _timestamps(run)
    data = memoryview(run.data)
    groups = _audio_groups(run.sizes, dts)
    offsets = [0]
    for size in run.sizes:
        offsets.append(offsets[-1] + size)
    for g, (first, end) in enumerate(groups):
        parts: Parts = []
        for i in range(first, end):
            parts += carriage.framer(data[offsets[i] : offsets[i + 1]], True)
        yield _Pes(
            dts=dts[first],
            pid=carriage.es.pid,
            parts=parts,
            size=_add_pes_header(parts, carriage.stream_id, pts[first], dts[first], bounded=True),
            random_access=True,  # every audio frame is an access point
            next_dts=dts[groups[g + 1][0]] if g + 1 < len(groups) else None,
        )


def _audio_groups(sizes: list[int], dts: list[int]) -> list[tuple[int, int]]:
    """[first, end) sample ranges, each at least one frame."""
    groups = []
    first, n = 0, len(sizes)
    while first < n:
        end, total = first + 1, sizes[first]
        while (
            end < n
            and end - first < AUDIO_PES_MAX_FRAMES
            and dts[end + 1] - dts[first] <= AUDIO_PES_MAX_DURATION
            and total + sizes[end] + ADTS_HEADER_SIZE * (end + 1 - first) <= AUDIO_PES_MAX_PAYLOAD
        ):
            total += sizes[end]
            end += 1
        groups.append((first, end))
        first = end
    return groups


def _timestamp_field(prefix: int, t: int) -> bytes:
    t &= _MASK33
    return bytes(
        (
            (prefix << 4) | ((t >> 29) & 0x0E) | 1,
            (t >> 22) & 0xFF,
            ((t >> 14) & 0xFE) | 1,
            (t >> 7) & 0xFF,
            ((t << 1) & 0xFE) | 1,
        )
    )


def _add_pes_header(parts: Parts, stream_id: int, pts: int, dts: int, *, bounded: bool) -> int:
    """Prepend the PES header (PTS, and DTS when it differs) to parts; return the PES size.

    Video PES longer than 65535 bytes get PES_packet_length 0 (allowed for video only).
    """
    if pts == dts:
        flags, fields = 0x80, _timestamp_field(0x2, pts)
    else:
        flags, fields = 0xC0, _timestamp_field(0x3, pts) + _timestamp_field(0x1, dts)
    payload = sum(len(p) for p in parts)
    length = 3 + len(fields) + payload
    if length > 0xFFFF:
        if bounded:
            raise MediaError("audio PES too large")
        length = 0
    header = bytes(
        (0, 0, 1, stream_id, length >> 8, length & 0xFF, 0x84, flags, len(fields))
    )  # 0x84: '10' marker, data_alignment_indicator
    parts.insert(0, header + fields)
    return 9 + len(fields) + payload


# --- PES -> TS packets --------------------------------------------------------------------


def _pcr_at(dts: int) -> int:
    return max(0, dts - PCR_DELAY)


def _adaptation_body(pcr: int | None, random_access: bool) -> bytes:
    """Adaptation field flags (+ PCR), without the length byte or stuffing."""
    flags = (_AF_RAI if random_access else 0) | (_AF_PCR if pcr is not None else 0)
    if not flags:
        return b""
    if pcr is None:
        return bytes((flags,))
    return bytes((flags,)) + (((pcr & _MASK33) << 15) | 0x7E00).to_bytes(6, "big")


def _packet(pid: int, start: bool, cc: int, chunk: bytes | memoryview, body: bytes) -> bytes:
    """A packet whose adaptation field (flags `body`, then 0xFF stuffing) fills it to 188."""
    n = len(chunk)
    pid_hi = (0x40 if start else 0x00) | (pid >> 8)
    if n == PAYLOAD_SIZE and not body:
        return bytes((0x47, pid_hi, pid & 0xFF, 0x10 | cc)) + chunk
    room = PAYLOAD_SIZE - 1 - n  # adaptation field bytes after its length byte
    if body:
        field = bytes((room,)) + body + b"\xff" * (room - len(body))
    elif room == 0:
        field = b"\x00"
    else:
        field = bytes((room, 0x00)) + b"\xff" * (room - 1)
    control = 0x30 if n else 0x20  # adaptation field + payload, or adaptation field only
    return bytes((0x47, pid_hi, pid & 0xFF, control | cc)) + field + chunk


class _Muxer:
    """Continuity counters and PCR schedule of one segment being written."""

    def __init__(self, pcr_pid: int, out: bytearray) -> None:
        self.pcr_pid = pcr_pid
        self.out = out
        self.cc = {VIDEO_PID: 0, AUDIO_PID: 0}  # next counter per PID
        self.last_pcr: int | None = None

    def add(self, pes: _Pes) -> None:
        pcr = _pcr_at(pes.dts)
        if self.last_pcr is not None and pcr - self.last_pcr <= PCR_MAX_FILL:
            while pcr - self.last_pcr > PCR_INTERVAL:  # long gap: PCR-only packets
                self._pcr_only(self.last_pcr + PCR_INTERVAL)
        if pes.pid != self.pcr_pid:
            if self.last_pcr is None:
                self._pcr_only(pcr)  # a clock before the first payload
            self._packetize(pes, None, None)
            return
        extra = None
        if pes.next_dts is not None:
            gap = _pcr_at(pes.next_dts) - pcr
            if gap > PCR_INTERVAL:
                extra = pcr + min(PCR_INTERVAL, gap // 2)
        self.last_pcr = pcr
        if self._packetize(pes, pcr, extra):
            self.last_pcr = extra

    def _pcr_only(self, pcr: int) -> None:
        pid = self.pcr_pid
        last_cc = (self.cc[pid] - 1) & 0x0F  # no payload: the counter does not advance
        self.out += _packet(pid, False, last_cc, b"", _adaptation_body(pcr, False))
        self.last_pcr = pcr

    def _packetize(self, pes: _Pes, pcr: int | None, tail_pcr: int | None) -> bool:
        """Append the PES's packets; True if `tail_pcr` fit in the last packet's stuffing."""
        pid, out = pes.pid, self.out
        body = _adaptation_body(pcr, pes.random_access)
        room = PAYLOAD_SIZE - (1 + len(body) if body else 0)
        first, rest = _take_front(pes.parts, min(pes.size, room))
        out += _packet(pid, True, self.cc[pid], first, body)
        cc, tail = _write_full_packets(out, _FULL_HEADERS[pid], (self.cc[pid] + 1) & 0x0F, rest)
        placed = False
        if tail:
            body = b""
            if tail_pcr is not None and len(tail) <= PAYLOAD_SIZE - _PCR_FIELD_SIZE:
                body, placed = _adaptation_body(tail_pcr, False), True
            out += _packet(pid, False, cc, tail, body)
            cc = (cc + 1) & 0x0F
        self.cc[pid] = cc
        return placed


def _write_full_packets(
    out: bytearray, headers: tuple[bytes, ...], cc: int, parts: Parts
) -> tuple[int, bytes]:
    """Write the parts as full 184-byte packets; return the next counter and the remainder.

    This is where almost all the bytes go, so it is kept to two bytearray appends per packet:
    a precomputed header and a memoryview slice of the sample data. No intermediate PES copy
    is made, and no per-packet objects stay alive (a list of ~15k slices per segment would
    wake the cyclic GC, which then costs more than the packetizing itself).
    """
    carry: Parts = []  # start of a packet straddling two parts
    carry_len = 0
    for part in parts:
        pos, size = 0, len(part)
        if carry_len:
            pos = min(PAYLOAD_SIZE - carry_len, size)
            carry.append(part[:pos])
            carry_len += pos
            if carry_len < PAYLOAD_SIZE:
                continue
            out += headers[cc]
            for piece in carry:
                out += piece
            cc = (cc + 1) & 0x0F
            carry, carry_len = [], 0
        end = pos + (size - pos) // PAYLOAD_SIZE * PAYLOAD_SIZE
        for off in range(pos, end, PAYLOAD_SIZE):
            out += headers[cc]
            out += part[off : off + PAYLOAD_SIZE]
            cc = (cc + 1) & 0x0F
        if end < size:
            carry, carry_len = [part[end:]], size - end
    return cc, b"".join(carry)


def _take_front(parts: Parts, n: int) -> tuple[bytes, Parts]:
    """The first n bytes of the parts' concatenation, and the parts that remain after them."""
    front: Parts = []
    for i, part in enumerate(parts):
        if len(part) >= n:
            front.append(part[:n])
            rest = parts[i + 1 :]
            if len(part) > n:
                rest.insert(0, part[n:])
            return b"".join(front), rest
        front.append(part)
        n -= len(part)
    return b"".join(front), []
