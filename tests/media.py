"""Test media, generated on demand with the ffmpeg CLI so that no binaries are committed.

Every generator takes the cache directory (the session-scoped `media_dir` fixture) and returns
the path of its file; a file that already exists is reused, so each is encoded once per pytest
session. All clips share one recipe (`DURATION` s of lavfi testsrc2 + sine, 25 fps, an IDR
every 2 s, x264 with B-frames, AAC-LC 48 kHz stereo) so that tests can compare renditions and
packagings frame by frame.

Also here: a minimal ISO-BMFF box walker (tests must check box layout independently of the
origin's own parser), `co64_sparse` to move samples beyond 4 GiB without using disk, and
helpers that make broken input.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"

DURATION = 6  # seconds, every clip
FPS = 25
GOP = 50  # frames: a keyframe every 2 s
SAMPLE_RATE = 48_000

# x264's ultrafast preset turns B-frames off; the origin must handle them (composition offsets,
# edit lists), so they are switched back on. scenecut=0 keeps IDRs exactly every GOP frames,
# which keeps the ladder's renditions aligned.
X264 = [
    "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-x264-params", "bframes=2",
    "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0", "-pix_fmt", "yuv420p",
]  # fmt: skip
# lavfi's sine source is mono; -ac 2 makes the AAC stereo as real content is.
AAC = ["-c:a", "aac", "-ac", "2", "-ar", str(SAMPLE_RATE), "-b:a", "96k"]

# Container boxes whose children are plain boxes (no version/flags in front of them).
CONTAINER_BOXES = frozenset(
    {"moov", "trak", "mdia", "minf", "stbl", "edts", "dinf", "mvex", "moof", "traf", "mfra",
     "udta", "tref", "sinf", "schi"}
)  # fmt: skip


def _video_input(size: str = "320x240") -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}:duration={DURATION}"]


def _audio_input(freq: int = 440) -> list[str]:
    src = f"sine=frequency={freq}:sample_rate={SAMPLE_RATE}:duration={DURATION}"
    return ["-f", "lavfi", "-i", src]


def run_ffmpeg(args: Sequence[str | os.PathLike[str]]) -> None:
    """Run ffmpeg quietly; on failure raise with its stderr (the only useful diagnostic)."""
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")


def _cached(out_dir: Path, name: str, args: Sequence[str | os.PathLike[str]]) -> Path:
    """Encode to out_dir/name unless it is there; write via a temp name so that an interrupted
    encode never leaves a half file that later runs would take for a good one."""
    out = out_dir / name
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{os.getpid()}-{name}")
    try:
        run_ffmpeg([*args, tmp])
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# --- generators ---------------------------------------------------------------------------


def av_moov_at_end(out_dir: Path) -> Path:
    """H.264 (with B-frames) + AAC, ffmpeg's default layout: mdat first, moov at the end, and
    edit lists for the B-frame delay and the AAC priming."""
    args = [*_video_input(), *_audio_input(), "-map", "0:v", "-map", "1:a", *X264, "-b:v", "300k"]
    return _cached(out_dir, "av_moov_at_end.mp4", [*args, *AAC])


def av_faststart(out_dir: Path) -> Path:
    """Same content as `av_moov_at_end` but with moov before mdat (-movflags +faststart)."""
    args = [*_video_input(), *_audio_input(), "-map", "0:v", "-map", "1:a", *X264, "-b:v", "300k"]
    return _cached(out_dir, "av_faststart.mp4", [*args, *AAC, "-movflags", "+faststart"])


def multi_audio(out_dir: Path) -> Path:
    """One video and two AAC tracks: `eng` (440 Hz, default) and `deu` (660 Hz)."""
    args = [
        *_video_input(), *_audio_input(440), *_audio_input(660),
        "-map", "0:v", "-map", "1:a", "-map", "2:a", *X264, "-b:v", "300k", *AAC,
        "-metadata:s:a:0", "language=eng", "-metadata:s:a:0", "title=English",
        "-metadata:s:a:1", "language=deu", "-metadata:s:a:1", "title=Deutsch",
        "-disposition:a:0", "default", "-disposition:a:1", "0",
    ]  # fmt: skip
    return _cached(out_dir, "multi_audio.mp4", args)


def audio_only(out_dir: Path) -> Path:
    """AAC only, in an .m4a."""
    return _cached(out_dir, "audio_only.m4a", [*_audio_input(), *AAC])


def video_only(out_dir: Path) -> Path:
    """H.264 only (B-frames, 2 s GOP), no audio track."""
    return _cached(out_dir, "video_only.mp4", [*_video_input(), "-an", *X264, "-b:v", "300k"])


LADDER = (("320x180", "400k"), ("256x144", "250k"), ("160x90", "120k"))


def ladder(out_dir: Path) -> list[Path]:
    """Three renditions of one picture, highest first, with IDRs on the same frames (same
    GOP, no scene cut, same rate) and identical AAC audio, as an ABR ladder needs."""
    outs = [out_dir / f"ladder_{size}.mp4" for size, _ in LADDER]
    if all(p.exists() for p in outs):
        return outs
    # One ffmpeg run: the source is rendered once and scaled three ways.
    split = ";".join(
        [f"[0:v]split={len(LADDER)}" + "".join(f"[s{i}]" for i in range(len(LADDER)))]
        + [f"[s{i}]scale={size.replace('x', ':')}[v{i}]" for i, (size, _) in enumerate(LADDER)]
    )
    tmps = [p.with_name(f".tmp-{os.getpid()}-{p.name}") for p in outs]
    args: list[str | os.PathLike[str]] = [*_video_input("320x180"), *_audio_input()]
    args += ["-filter_complex", split]
    for i, ((_, rate), tmp) in enumerate(zip(LADDER, tmps, strict=True)):
        args += ["-map", f"[v{i}]", "-map", "1:a", *X264, "-b:v", rate, *AAC, tmp]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        run_ffmpeg(args)
        for tmp, out in zip(tmps, outs, strict=True):
            tmp.replace(out)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return outs


def hevc(out_dir: Path) -> Path:
    """HEVC (libx265, B-frames, 2 s GOP) tagged hvc1, as Apple players require, plus AAC."""
    x265 = [
        "-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1", "-pix_fmt", "yuv420p",
        "-x265-params", f"log-level=error:bframes=2:keyint={GOP}:min-keyint={GOP}:scenecut=0",
        "-b:v", "300k",
    ]  # fmt: skip
    args = [*_video_input(), *_audio_input(), "-map", "0:v", "-map", "1:a", *x265, *AAC]
    return _cached(out_dir, "hevc.mp4", args)


_CUE_TEXT = {"eng": "Caption {n} in English", "deu": "Untertitel {n} auf Deutsch"}


def captions_vtt(out_dir: Path, lang: str = "eng") -> Path:
    """A WebVTT file with one 1.5 s cue every 2 s over the clip duration."""
    out = out_dir / f"captions_{lang}.vtt"
    if out.exists():
        return out
    template = _CUE_TEXT.get(lang, f"Caption {{n}} ({lang})")
    lines = ["WEBVTT", ""]
    for n, start in enumerate(range(0, DURATION, 2), start=1):
        lines += [str(n), f"{_vtt_time(start)} --> {_vtt_time(start + 1.5)}"]
        lines += [template.format(n=n), ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


def _vtt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def truncated(src: Path, n: int, out_dir: Path | None = None) -> Path:
    """The first n bytes of src (n < 0: all but the last -n), e.g. a cut-off upload."""
    data = src.read_bytes()
    data = data[:n]
    out = (out_dir or src.parent) / f"truncated_{n}_{src.name}"
    out.write_bytes(data)
    return out


def garbage(out_dir: Path, size: int = 4096, name: str = "garbage.mp4", seed: int = 1) -> Path:
    """Deterministic random bytes under a media name: a file that is not media at all."""
    import random

    out = out_dir / name
    out.write_bytes(random.Random(seed).randbytes(size))
    return out


def with_bytes(src: Path, offset: int, patch: bytes, out_dir: Path | None = None) -> Path:
    """A copy of src with bytes at offset overwritten, e.g. to corrupt one box header."""
    data = bytearray(src.read_bytes())
    data[offset : offset + len(patch)] = patch
    out = (out_dir or src.parent) / f"patched_{offset}_{src.name}"
    out.write_bytes(bytes(data))
    return out


# --- ISO-BMFF box walking -----------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """One box as found in a file: type, absolute offset, total size and header length."""

    type: str
    offset: int
    size: int
    header: int

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header

    @property
    def end(self) -> int:
        return self.offset + self.size


def iter_boxes(f: Path | bytes, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes laid one after another in [start, end) of a file or buffer (one level)."""
    if isinstance(f, bytes):
        yield from _iter_boxes_in(f, start, len(f) if end is None else end)
        return
    with open(f, "rb") as fh:
        file_end = os.fstat(fh.fileno()).st_size if end is None else end
        pos = start
        while pos + 8 <= file_end:
            fh.seek(pos)
            head = fh.read(16)
            box = _parse_header(head, pos, file_end)
            yield box
            pos = box.end


def _iter_boxes_in(buf: bytes, start: int, end: int) -> Iterator[Box]:
    pos = start
    while pos + 8 <= end:
        box = _parse_header(buf[pos : pos + 16], pos, end)
        yield box
        pos = box.end


def _parse_header(head: bytes, pos: int, limit: int) -> Box:
    size, kind = struct.unpack(">I4s", head[:8])
    header = 8
    if size == 1:
        (size,) = struct.unpack(">Q", head[8:16])
        header = 16
    elif size == 0:
        size = limit - pos
    if size < header or pos + size > limit:
        raise ValueError(f"bad box {kind!r} at {pos}: size {size}")
    return Box(kind.decode("latin-1"), pos, size, header)


def top_level_types(path: Path) -> list[str]:
    """Types of the top-level boxes in file order, e.g. ['ftyp', 'free', 'mdat', 'moov']."""
    return [b.type for b in iter_boxes(path)]


def walk_boxes(path: Path) -> Iterator[tuple[str, Box]]:
    """Every box in the file, depth first, with its slash-joined path such as
    'moov/trak/mdia/minf/stbl/stco'. Only CONTAINER_BOXES are descended into."""
    with open(path, "rb") as fh:
        data_end = os.fstat(fh.fileno()).st_size
    stack: list[tuple[str, Box]] = [("", b) for b in reversed(list(iter_boxes(path)))]
    while stack:
        prefix, box = stack.pop()
        name = f"{prefix}{box.type}"
        yield name, box
        if box.type in CONTAINER_BOXES:
            children = list(iter_boxes(path, box.payload_offset, min(box.end, data_end)))
            stack.extend((f"{name}/", c) for c in reversed(children))


def box_types(path: Path) -> set[str]:
    """The set of box types anywhere in the (container) tree, e.g. to test for 'elst'."""
    return {box.type for _, box in walk_boxes(path)}


# --- co64 / beyond 4 GiB ------------------------------------------------------------------

FOUR_GIB = 1 << 32
# Where the sample data starts in co64_sparse output: past 4 GiB by a margin so that every
# chunk offset needs 64 bits (not just the last ones).
SPARSE_DATA_START = FOUR_GIB + (64 << 20)


class SparseUnsupported(RuntimeError):
    """The filesystem under the cache dir cannot make sparse files (holes take real space)."""


def sparse_supported(directory: Path) -> bool:
    """Whether a file with a >4 GiB hole takes (almost) no disk in this directory."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".sparse-probe-")
    try:
        os.lseek(fd, SPARSE_DATA_START, os.SEEK_SET)
        os.write(fd, b"x")
        st = os.fstat(fd)
        return st.st_size > FOUR_GIB and st.st_blocks * 512 < (16 << 20)
    except OSError:  # EFBIG, ENOSPC, ...: no 4 GiB files here at all
        return False
    finally:
        os.close(fd)
        os.unlink(name)


def co64_sparse(src: Path, dst: Path, *, moov_first: bool = False) -> Path:
    """Rewrite src so that its samples lie beyond 4 GiB: ftyp, an mdat with a 64-bit
    largesize whose first SPARSE_DATA_START-ish bytes are a hole, the original sample data,
    and a moov (at the end, or first with moov_first) whose every stco became co64 with
    shifted offsets. The result decodes to exactly the same frames as src and takes about
    as much disk as src. Raises SparseUnsupported where holes are not free.

    Supports what ffmpeg writes: one mdat holding every chunk (checked)."""
    if dst.exists():
        return dst
    if not sparse_supported(dst.parent):
        raise SparseUnsupported(f"{dst.parent} cannot hold sparse files larger than 4 GiB")
    top = list(iter_boxes(src))
    by_type = {b.type: b for b in top}
    mdats = [b for b in top if b.type == "mdat"]
    if len(mdats) != 1 or "moov" not in by_type or "ftyp" not in by_type:
        raise ValueError(
            f"{src}: need exactly ftyp, one mdat and moov, got {[b.type for b in top]}"
        )
    mdat, moov_box = mdats[0], by_type["moov"]
    raw = src.read_bytes()
    ftyp = raw[by_type["ftyp"].offset : by_type["ftyp"].end]
    moov = raw[moov_box.offset : moov_box.end]
    data = raw[mdat.payload_offset : mdat.end]

    # co64 entries are 8 bytes whatever the values, so one dry run gives the final moov size.
    new_len = len(_rewrite_chunk_offsets(moov, 0, mdat.payload_offset, len(data)))
    mdat_start = len(ftyp) + (new_len if moov_first else 0)
    data_start = max(SPARSE_DATA_START, mdat_start + 16)
    new_moov = _rewrite_chunk_offsets(moov, data_start - mdat.payload_offset,
                                      mdat.payload_offset, len(data))  # fmt: skip
    assert len(new_moov) == new_len
    tmp = dst.with_name(f".tmp-{os.getpid()}-{dst.name}")
    try:
        with open(tmp, "wb") as out:
            out.write(ftyp)
            if moov_first:
                out.write(new_moov)
            mdat_size = data_start + len(data) - mdat_start
            out.write(struct.pack(">I4sQ", 1, b"mdat", mdat_size))
            out.seek(data_start)  # the hole: mdat payload nobody points into
            out.write(data)
            if not moov_first:
                out.write(new_moov)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def _rewrite_chunk_offsets(box: bytes, shift: int, data_start: int, data_len: int) -> bytes:
    """Copy of a box tree with every stco turned into co64 (offsets + shift); containers on
    the way get their sizes recomputed. Offsets must point into the mdat payload."""
    kind = box[4:8].decode("latin-1")
    header = 16 if struct.unpack(">I", box[:4])[0] == 1 else 8
    if kind == "stco" or kind == "co64":
        version_flags, count = struct.unpack(">4sI", box[header : header + 8])
        fmt = f">{count}I" if kind == "stco" else f">{count}Q"
        offsets = struct.unpack(fmt, box[header + 8 : header + 8 + struct.calcsize(fmt)])
        for off in offsets:
            if not data_start <= off < data_start + data_len:
                raise ValueError(f"chunk offset {off} outside the mdat payload")
        body = version_flags + struct.pack(f">I{count}Q", count, *(o + shift for o in offsets))
        return struct.pack(">I4s", 8 + len(body), b"co64") + body
    if kind not in {"moov", "trak", "mdia", "minf", "stbl"}:
        return box
    children = b"".join(
        _rewrite_chunk_offsets(box[c.offset : c.end], shift, data_start, data_len)
        for c in _iter_boxes_in(box, header, len(box))
    )
    return struct.pack(">I4s", 8 + len(children), kind.encode("latin-1")) + children


# --- reference packagings (ffmpeg's own HLS / DASH), to prove players and tools ------------


def static_hls(out_dir: Path, src: Path) -> Path:
    """ffmpeg's fMP4 HLS of src (stream copy, 2 s segments, VOD): returns master.m3u8, one
    variant with audio and video muxed. A known-good baseline, not the origin's output."""
    target = out_dir / f"hls_{src.stem}"
    master = target / "master.m3u8"
    if master.exists():
        return master
    tmp = out_dir / f".tmp-{os.getpid()}-hls_{src.stem}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run_ffmpeg([
        "-i", src, "-map", "0", "-c", "copy", "-f", "hls", "-hls_time", "2",
        "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
        "-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", tmp / "seg_%03d.m4s",
        "-master_pl_name", "master.m3u8", tmp / "media.m3u8",
    ])  # fmt: skip
    tmp.rename(target)
    return master


def static_dash(out_dir: Path, src: Path) -> Path:
    """ffmpeg's DASH of src (stream copy, 2 s segments, SegmentTemplate + timeline, one
    adaptation set per media type): returns manifest.mpd."""
    target = out_dir / f"dash_{src.stem}"
    mpd = target / "manifest.mpd"
    if mpd.exists():
        return mpd
    tmp = out_dir / f".tmp-{os.getpid()}-dash_{src.stem}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run_ffmpeg([
        "-i", src, "-map", "0", "-c", "copy", "-f", "dash", "-seg_duration", "2",
        "-use_template", "1", "-use_timeline", "1",
        "-adaptation_sets", "id=0,streams=v id=1,streams=a", tmp / "manifest.mpd",
    ])  # fmt: skip
    tmp.rename(target)
    return mpd
