"""Encrypted playback, chosen per request with `?drm=` on the entry manifest (and carried onto
every child URL with the rest of the query):

- `aes-128`: HLS (fMP4 or TS), every media segment AES-128-CBC encrypted whole, IV = its
  media sequence number; the key at `/vod/{id}/key`, served only to authorized requests.
- `sample-aes`: HLS MPEG-TS with H.264 NAL units and AAC frames encrypted in place (Apple's
  SAMPLE-AES), the PMT announcing the encrypted stream types; same key and IVs as aes-128.
- `cbcs` also for HLS fMP4 (FairPlay-style SAMPLE-AES key line, `skd://` key id).
- `cenc`, `cbcs`: DASH with Common Encryption (AES-CTR / AES-CBC 1:9 pattern), pssh for W3C
  ClearKey, Widevine and PlayReady in the init segments and ContentProtection in the MPD.
- `clearkey`: `cenc` for W3C ClearKey players, which get their license from
  `/vod/{id}/license/clearkey` (gated by the playback token like everything else; the
  `/api/media/{id}/stream` answer names it). The MPD carries no license URL: players
  resolve one against their page, not the MPD, and the origin does not know its public host.

Init segments, subtitles and I-frame-only playlists are not encrypted; I-frame streams are
left out of protected masters so nothing clear can be stitched back into a picture.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import replace
from urllib.parse import parse_qs

from ..auth.keystore import ContentKey
from ..errors import ClientError
from ..packaging.crypto import aes128
from ..packaging.crypto.cenc import encrypt_init, encrypt_segment_progressive, sample_ivs
from ..packaging.crypto.progressive import Progressive
from ..packaging.crypto.pssh import cenc_namespace_attr, content_protection_xml, system_pssh
from ..packaging.fmp4.writer import media_segment
from ..packaging.model import MediaError, SampleRun, Track

MODES = ("aes-128", "sample-aes", "cenc", "cbcs", "clearkey")
HLS_MODES = ("aes-128", "sample-aes", "cbcs")
DASH_MODES = ("cenc", "cbcs", "clearkey")
SYSTEMS = ("clearkey", "common", "widevine", "playready")


class PlaybackError(ClientError):
    """A protected-playback request refused (bad drm value, codec, protocol)."""


_ADAPTATION_SET = re.compile(r'(<AdaptationSet [^>]*contentType="(?:video|audio)"[^>]*>)')


def drm_mode(query: str) -> str | None:
    values = parse_qs(query).get("drm")
    if not values or values[-1] == "none":
        return None
    if values[-1] not in MODES:
        raise PlaybackError(400, "invalid_drm", f"drm must be one of {', '.join(MODES)}")
    return values[-1]


def check_protocol(drm: str, manifest: str) -> None:
    hls = manifest.endswith(".m3u8")
    if drm == "sample-aes" and manifest != "master-ts.m3u8":
        raise PlaybackError(400, "drm_not_for_protocol",
                            "SAMPLE-AES is served with MPEG-TS: use master-ts.m3u8")
    if drm == "cbcs" and manifest == "master-ts.m3u8":
        raise PlaybackError(400, "drm_not_for_protocol", "cbcs is served with fMP4")
    if (hls and drm not in HLS_MODES) or (not hls and drm not in DASH_MODES):
        raise PlaybackError(400, "drm_not_for_protocol",
                            f"{drm} is served with {'DASH' if hls else 'HLS'}, not here")


def scheme(drm: str) -> str:
    return "cbcs" if drm == "cbcs" else "cenc"


def constant_iv(content: ContentKey) -> bytes:
    """cbcs uses one IV per key: derived from the key id, the same on every replica."""
    return hashlib.sha256(b"mediaorigin cbcs iv\0" + content.kid).digest()[:16]


# -- manifests -------------------------------------------------------------------------------

def protect_master(text: str) -> str:
    return "\n".join(line for line in text.split("\n")
                     if not line.startswith("#EXT-X-I-FRAME-STREAM-INF"))


def fairplay_playlist(text: str, content: ContentKey) -> str:
    """HLS fMP4 with `cbcs` segments (FairPlay-style): one SAMPLE-AES key line naming the key
    by its id for the FairPlay key delivery, after EXT-X-MAP. The key itself comes from the
    platform's FairPlay key server (an integration point; none runs here)."""
    text = re.sub(r"#EXT-X-VERSION:\d+", "#EXT-X-VERSION:5", text, count=1)
    tag = (f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://{content.kid.hex()}",'
           'KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"')
    lines = text.split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("#EXTINF"))
    return "\n".join([*lines[:at], tag, *lines[at:]])


def protect_media_playlist(text: str, query: str, drm: str = "aes-128",
                           rotation: int = 0) -> str:
    """An EXT-X-KEY line with an explicit IV (the segment's media sequence number) before
    every segment; EXT-X-MAP stays above them all, so the init segment stays clear. With
    `rotation`, every that many segments use a key of their own (`key?period=p`)."""
    if drm == "sample-aes":  # SAMPLE-AES needs protocol version 5
        text = re.sub(r"#EXT-X-VERSION:\d+", "#EXT-X-VERSION:5", text, count=1)
    out, number = [], 0
    for line in text.split("\n"):
        if line.startswith("#EXTINF"):
            number += 1  # MEDIA-SEQUENCE is 1: segment n has sequence number n
            params = [f"period={key_period(number, rotation)}"] if rotation > 0 else []
            uri = "../key" + ("?" + "&".join(params + ([query] if query else []))
                              if params or query else "")
            out.append(aes128.key_tag(uri, aes128.segment_iv(number), method=drm.upper()))
        out.append(line)
    return "\n".join(out)


def key_period(number: int, rotation: int) -> int:
    return (number - 1) // rotation if rotation > 0 else 0


def hls_key(content: ContentKey, period: int, rotation: int) -> bytes:
    """The AES key of one rotation period: derived from the media's key, so every replica
    agrees and only the media key is stored."""
    if rotation <= 0:
        return content.key
    return hmac.new(content.key, b"mediaorigin hls key period" + period.to_bytes(8, "big"),
                    hashlib.sha256).digest()[:16]


def protect_mpd(text: str, drm: str, content: ContentKey) -> str:
    xml = content_protection_xml(scheme(drm), content.kid, SYSTEMS)
    text = text.replace("<MPD ", f"<MPD {cenc_namespace_attr()} ", 1)
    return _ADAPTATION_SET.sub(lambda m: m.group(1) + "\n" + xml, text)


# -- segments --------------------------------------------------------------------------------

def protect_init(data: bytes, drm: str, content: ContentKey) -> bytes:
    if drm == "aes-128":
        return data  # HLS AES-128 leaves the init segment clear
    kids = [content.kid]
    boxes = [system_pssh(s, kids, scheme(drm)) for s in ("common", "widevine", "playready")]
    if drm == "cbcs":
        return encrypt_init(data, "cbcs", content.kid, boxes, iv_size=0,
                            constant_iv=constant_iv(content))
    return encrypt_init(data, "cenc", content.kid, boxes, iv_size=8)


def segment_parts(run: SampleRun, number: int) -> tuple[bytes, bytes]:
    """`media_segment(run, number)` in the two parts that make it, (styp + moof + mdat
    header, the samples), for protect_segment: both encryptors take the parts and copy the
    segment once, into their output. The writer is given no samples, so the mdat header it
    writes last says 8 bytes: its size is set to the real one here."""
    head = bytearray(media_segment(replace(run, data=b""), number))
    if head[-8:] != b"\0\0\0\x08mdat" or 8 + len(run.data) > 0xFFFFFFFF:
        raise MediaError("cannot write this media segment in parts")
    head[-8:-4] = (8 + len(run.data)).to_bytes(4, "big")
    return bytes(head), run.data


def protect_segment(data: bytes | tuple[bytes, bytes], drm: str, content: ContentKey,
                    track: Track, number: int, context: str, rotation: int = 0
                    ) -> Progressive:
    """An encrypted media segment, to be made progressively; `data` is the clear one, or
    its segment_parts (fMP4)."""
    if drm == "aes-128":
        key = hls_key(content, key_period(number, rotation), rotation)
        return aes128.encrypt_progressive(data, key, aes128.segment_iv(number))
    codec = {"avc1": "avc", "avc3": "avc", "hvc1": "hevc", "hev1": "hevc"}.get(
        track.codec.fourcc, "aac" if track.kind == "audio" else None)
    if codec is None:
        raise PlaybackError(422, "drm_unsupported_codec",
                            f"{track.codec.fourcc} cannot be encrypted here")
    nal = 4
    if codec == "avc" and len(track.codec.config) > 4:
        nal = (track.codec.config[4] & 3) + 1
    elif codec == "hevc" and len(track.codec.config) > 21:
        nal = (track.codec.config[21] & 3) + 1
    if drm == "cbcs":
        return encrypt_segment_progressive(data, "cbcs", content.key, content.kid,
                                           constant_iv(content), nal, codec, iv_size=0)
    ivs = sample_ivs(content.kid, number, context=context.encode())
    return encrypt_segment_progressive(data, "cenc", content.key, content.kid, ivs, nal, codec)
