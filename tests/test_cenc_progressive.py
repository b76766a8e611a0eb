"""Progressive CENC segment encryption (`cenc.encrypt_segment_progressive`).

The segments are the origin's own fMP4 output, packaged in-process (no server) from the
session's ffmpeg-made clip (tests/media.py): H.264 video and AAC audio. The progressive form
must give, whatever its step size, exactly the bytes of `encrypt_segment`, which decrypt back
to the clear segment; bytes it reported final must never change afterwards; and everything
that can fail must fail when it is called, before any step.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from mediaorigin.packaging.crypto import cenc
from mediaorigin.packaging.crypto.progressive import CHUNK, Progressive
from mediaorigin.packaging.fmp4.writer import init_segment, media_segment
from mediaorigin.packaging.model import MediaError, SampleRun
from mediaorigin.packaging.mp4.index import index_file
from mediaorigin.packaging.runs import assemble, read_plan, sample_run
from mediaorigin.packaging.segmenter import build_presentation

KEY = bytes.fromhex("3c2a9e0f7d51b6e8a4c1f0d29b7e5a63")
KID = bytes.fromhex("6f1c2d3e4a5b46c7889900aabbccddee")
CONSTANT_IV = bytes.fromhex("0a610676cb88f302d10ac8bc66e039ed")
CHUNKS = (1, 16, 1000, 64 << 10, 10 << 20)
CODEC: dict[str, cenc.SampleCodec] = {"v0": "avc", "a0": "aac"}


@dataclass
class Segment:
    number: int
    run: SampleRun

    @property
    def whole(self) -> bytes:
        return media_segment(self.run, self.number)

    @property
    def parts(self) -> tuple[bytes, bytes]:
        """Up to and including the mdat header, then its payload (as the origin has them)."""
        whole = self.whole
        head = len(whole) - len(self.run.data)
        assert whole[head - 4 : head] == b"mdat"
        return whole[:head], whole[head:]


@dataclass
class Rendition:
    init: bytes
    segments: list[Segment]


@pytest.fixture(scope="module")
def renditions(av_faststart: Path) -> dict[str, Rendition]:
    """The clip's video and audio, packaged as the origin does: 2 s fMP4 segments."""
    data = av_faststart.read_bytes()
    index = index_file(lambda offset, size: data[offset : offset + size], len(data))
    presentation = build_presentation([(0, t) for t in index.tracks], 2.0)
    out = {}
    for r in presentation.renditions:
        segments = []
        for seg in r.segments:
            spans = read_plan(r, seg.first, seg.end)
            blobs = [data[s.offset : s.offset + s.size] for s in spans]
            run = sample_run(r, seg.first, seg.end, assemble(spans, blobs), "fmp4")
            segments.append(Segment(seg.number, run))
        out[r.id] = Rendition(init_segment(r.track), segments)
    assert set(out) == {"v0", "a0"} and all(len(r.segments) >= 3 for r in out.values())
    return out


def encrypted_init(r: Rendition, scheme: cenc.Scheme) -> bytes:
    if scheme == "cenc":
        return cenc.encrypt_init(r.init, "cenc", KID, [], iv_size=8)
    return cenc.encrypt_init(r.init, "cbcs", KID, [], iv_size=0, constant_iv=CONSTANT_IV)


def iv_source(scheme: cenc.Scheme, number: int) -> bytes | int:
    return number if scheme == "cenc" else CONSTANT_IV


def run_steps(p: Progressive) -> tuple[bytes, list[int], list[bytes]]:
    """(the segment, the count after every step, the bytes reported final at every step)."""
    counts, snapshots = [], []
    for n in p.fill:
        counts.append(n)
        snapshots.append(bytes(p.buffer[:n]))
    return bytes(p.buffer[: p.size]), counts, snapshots


def checked_steps(p: Progressive, chunk: int, run: SampleRun) -> bytes:
    """Run `p`, checking what progressive.py promises; the segment."""
    size = p.size
    assert len(p.buffer) >= size
    out, counts, snapshots = run_steps(p)
    assert counts[-1] == size
    assert all(a < b for a, b in zip(counts, counts[1:], strict=False))  # strictly increasing
    for n, snapshot in zip(counts, snapshots, strict=True):
        assert out[:n] == snapshot  # what was reported final never changed
    steps = [b - a for a, b in zip([0, *counts], counts, strict=False)]
    assert all(s >= chunk for s in steps[:-1])
    # A step ends at the first sample (or protected range) boundary after `chunk` bytes;
    # the first one also holds the new head.
    limit = chunk + 2 * max(run.sizes)
    assert steps[0] <= limit + size - len(run.data)
    assert max(steps[1:], default=0) <= limit
    if size > 3 * limit:
        assert len(steps) > 2
    return out


@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
@pytest.mark.parametrize("rid", ["v0", "a0"])
def test_progressive_is_encrypt_segment(renditions: dict[str, Rendition], scheme: cenc.Scheme,
                                        rid: str) -> None:
    r = renditions[rid]
    init = encrypted_init(r, scheme)
    codec = CODEC[rid]
    for seg in r.segments:
        iv = iv_source(scheme, seg.number)
        whole, parts = seg.whole, seg.parts
        expected = cenc.encrypt_segment(whole, scheme, KEY, KID, iv, codec=codec)
        assert cenc.decrypt_segment(expected, init, KEY) == whole
        assert cenc.encrypt_segment(parts, scheme, KEY, KID, iv, codec=codec) == expected
        for data in (whole, parts):
            for chunk in CHUNKS:
                p = cenc.encrypt_segment_progressive(data, scheme, KEY, KID, iv, codec=codec,
                                                     chunk=chunk)
                assert p.size == len(expected)
                assert checked_steps(p, chunk, seg.run) == expected, chunk
        p = cenc.encrypt_segment_progressive(whole, scheme, KEY, KID, iv, codec=codec)
        assert p.complete() == expected


@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_default_chunk(renditions: dict[str, Rendition], scheme: cenc.Scheme) -> None:
    """A 2.5 MB segment (the video's samples many times over) goes in ~CHUNK steps."""
    run = renditions["v0"].segments[0].run
    copies = -(-(5 << 19) // len(run.data))
    run = replace(run, durations=run.durations * copies, sizes=run.sizes * copies,
                  cts_offsets=run.cts_offsets and run.cts_offsets * copies,
                  sync=run.sync * copies, data=run.data * copies)
    big = media_segment(run, 1)
    iv = iv_source(scheme, 1)
    p = cenc.encrypt_segment_progressive(big, scheme, KEY, KID, iv)
    out = checked_steps(p, CHUNK, run)
    assert out == cenc.encrypt_segment(big, scheme, KEY, KID, iv)
    # (encrypt_segment is this run made whole: the reference decryptor judges it)
    assert cenc.decrypt_segment(out, encrypted_init(renditions["v0"], scheme), KEY) == big
    assert len(out) > 9 * CHUNK


def test_steps_are_independent(renditions: dict[str, Rendition]) -> None:
    """Nothing lives in per-thread scratch between steps: progressive segments made side by
    side on one thread with other encryptions in between, or with each step on whichever
    thread runs it, are the same bytes."""
    video, audio = renditions["v0"].segments, renditions["a0"].segments
    jobs: list[tuple[Segment, cenc.Scheme, cenc.SampleCodec]] = [
        (video[0], "cbcs", "avc"), (video[1], "cbcs", "avc"), (video[2], "cenc", "avc"),
        (audio[0], "cbcs", "aac"), (audio[1], "cenc", "aac")]
    expected = [cenc.encrypt_segment(seg.whole, scheme, KEY, KID, iv_source(scheme, i),
                                     codec=codec)
                for i, (seg, scheme, codec) in enumerate(jobs)]

    def make() -> list[Progressive]:
        return [cenc.encrypt_segment_progressive(seg.parts, scheme, KEY, KID,
                                                 iv_source(scheme, i), codec=codec, chunk=1000)
                for i, (seg, scheme, codec) in enumerate(jobs)]

    def round_robin(ps: list[Progressive], step: Callable[[list[Progressive]], list[bool]],
                    ) -> list[bytes]:
        live = list(ps)
        while live:
            more = step(live)
            live = [p for p, going in zip(live, more, strict=True) if going]
        return [bytes(p.buffer[: p.size]) for p in ps]

    other = video[2].whole

    def on_this_thread(live: list[Progressive]) -> list[bool]:
        more = []
        for p in live:
            more.append(next(p.fill, None) is not None)
            cenc.encrypt_segment(other, "cbcs", KEY, KID, CONSTANT_IV)  # uses the scratch
        return more

    assert round_robin(make(), on_this_thread) == expected
    with ThreadPoolExecutor(4) as pool:
        def on_any_thread(live: list[Progressive]) -> list[bool]:
            return [n is not None for n in pool.map(lambda p: next(p.fill, None), live)]

        assert round_robin(make(), on_any_thread) == expected


def test_errors_raise_at_call_time(renditions: dict[str, Rendition]) -> None:
    seg = renditions["v0"].segments[0]
    whole, (head, payload) = seg.whole, seg.parts

    def fails(exc: type[Exception], data: bytes | tuple[bytes, bytes],
              scheme: cenc.Scheme = "cenc", key: bytes = KEY, iv: bytes | int = 1) -> None:
        with pytest.raises(exc):
            cenc.encrypt_segment_progressive(data, scheme, key, KID, iv)

    fails(MediaError, whole[:-1000])  # truncated
    fails(MediaError, (head, payload[:-1000]))
    fails(MediaError, (head[:-8], payload))  # the head must end with the mdat header
    fails(ValueError, whole, key=KEY[:8])
    fails(ValueError, whole, "cbcs", iv=1)
    fails(ValueError, whole, "cenc", iv=CONSTANT_IV)
    fails(ValueError, whole, "cens")  # type: ignore[arg-type]
    fails(MediaError, cenc.encrypt_segment(whole, "cenc", KEY, KID, 1))  # already encrypted
    # A NAL length that overruns its sample: found while mapping subsamples.
    broken = bytearray(whole)
    broken[len(head) : len(head) + 4] = len(payload).to_bytes(4, "big")
    fails(MediaError, bytes(broken))
    # A trun pointing into the moof: the output, written in order, would overwrite its head.
    into_moof = bytearray(whole)
    struct.pack_into(">i", into_moof, whole.index(b"trun") + 12, 8)  # trun's data_offset
    fails(MediaError, bytes(into_moof))
    fails(MediaError, (bytes(into_moof[: len(head)]), payload))
