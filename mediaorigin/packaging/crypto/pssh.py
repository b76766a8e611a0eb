"""Protection System Specific Header boxes (ISO/IEC 23001-7 section 8.1) and their DASH form.

    |pssh| version, SystemID(16), [KID_count, KIDs (version 1)], DataSize, Data

Data per system, built here without the vendors' SDKs:
- Widevine: a `WidevinePsshData` protobuf, hand-encoded (key_id = 2, provider = 3,
  content_id = 4, protection_scheme = 9).
- PlayReady: a PlayReady Object holding one rights-management record, a WRMHEADER 4.3 in
  UTF-16LE. PlayReady writes a KID as a little-endian GUID: the first three fields (4, 2 and
  2 bytes) of the big-endian UUID we put in `tenc` are byte-swapped before base64.
- W3C Common (ClearKey): no data, the KIDs in a version 1 box.

DASH carries the same boxes base64-encoded in `<cenc:pssh>` under `ContentProtection`.
"""

from __future__ import annotations

import base64
import struct
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from ..mp4.boxes import full

WIDEVINE = uuid.UUID("edef8ba9-79d6-4ace-a3c8-27dcd51d21ed")
PLAYREADY = uuid.UUID("9a04f079-9840-4286-ab92-e65be0885f95")
COMMON = uuid.UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b")  # W3C Common PSSH / ClearKey
DASHIF_CLEARKEY = uuid.UUID("e2719d58-a985-b3c9-781a-b030af78d30e")

MP4_PROTECTION_SCHEME = "urn:mpeg:dash:mp4protection:2011"
CENC_NS = "urn:mpeg:cenc:2013"
PLAYREADY_HEADER_NS = "http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader"

SYSTEMS = {"widevine": WIDEVINE, "playready": PLAYREADY, "common": COMMON,
           "clearkey": DASHIF_CLEARKEY}  # fmt: skip
_SYSTEM_VALUES = {"widevine": "Widevine", "playready": "MSPR 2.0", "clearkey": "ClearKey1.0"}


def pssh_box(system_id: uuid.UUID | bytes, kids: Sequence[bytes] = (), data: bytes = b"",
             version: int = 1) -> bytes:
    """One pssh box; KIDs are listed only in version 1."""
    sid = system_id.bytes if isinstance(system_id, uuid.UUID) else bytes(system_id)
    if len(sid) != 16 or any(len(k) != 16 for k in kids):
        raise ValueError("system ID and KIDs must be 16 bytes")
    if version not in (0, 1):
        raise ValueError(f"pssh version {version} is not 0 or 1")
    listed = struct.pack(">I", len(kids)) + b"".join(kids) if version == 1 else b""
    return full(b"pssh", version, 0, sid, listed, struct.pack(">I", len(data)), data)


# --- Widevine ------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def widevine_pssh_data(kids: Sequence[bytes], content_id: bytes | None = None,
                       provider: str | None = None, protection_scheme: str | None = None) -> bytes:
    """A serialized WidevinePsshData message."""
    out = b"".join(_field_bytes(2, k) for k in kids)
    if provider is not None:
        out += _field_bytes(3, provider.encode())
    if content_id is not None:
        out += _field_bytes(4, content_id)
    if protection_scheme is not None:  # uint32 holding the fourcc, e.g. 'cbcs'
        out += _varint(9 << 3 | 0) + _varint(int.from_bytes(protection_scheme.encode(), "big"))
    return out


def widevine_pssh(kids: Sequence[bytes], content_id: bytes | None = None,
                  provider: str | None = None, protection_scheme: str | None = None,
                  version: int = 0) -> bytes:
    """Widevine pssh; version 0 by default, which every Widevine CDM accepts."""
    data = widevine_pssh_data(kids, content_id, provider, protection_scheme)
    return pssh_box(WIDEVINE, kids, data, version)


# --- PlayReady -----------------------------------------------------------------------------


def playready_kid(kid: bytes) -> str:
    """base64 of the KID as PlayReady's little-endian GUID (fields 1-3 byte-swapped)."""
    return base64.b64encode(uuid.UUID(bytes=kid).bytes_le).decode()


def wrm_header(kids: Sequence[bytes], scheme: str = "cenc", la_url: str | None = None) -> str:
    """WRMHEADER version 4.3.0.0 (several KIDs, AESCTR or AESCBC)."""
    algid = "AESCBC" if scheme == "cbcs" else "AESCTR"
    keys = "".join(f'<KID ALGID="{algid}" VALUE="{playready_kid(k)}"></KID>' for k in kids)
    la = f"<LA_URL>{escape(la_url)}</LA_URL>" if la_url else ""
    return (f'<WRMHEADER xmlns="{PLAYREADY_HEADER_NS}" version="4.3.0.0"><DATA><PROTECTINFO>'
            f"<KIDS>{keys}</KIDS></PROTECTINFO>{la}</DATA></WRMHEADER>")


def playready_object(kids: Sequence[bytes], scheme: str = "cenc",
                     la_url: str | None = None) -> bytes:
    """PlayReady Object: u32 length, u16 record count, then records (type 1 = WRMHEADER), all
    little-endian."""
    header = wrm_header(kids, scheme, la_url).encode("utf-16-le")
    record = struct.pack("<HH", 1, len(header)) + header
    return struct.pack("<IH", 6 + len(record), 1) + record


def playready_pssh(kids: Sequence[bytes], scheme: str = "cenc", la_url: str | None = None,
                   version: int = 1) -> bytes:
    return pssh_box(PLAYREADY, kids, playready_object(kids, scheme, la_url), version)


# --- W3C Common / ClearKey -----------------------------------------------------------------


def common_pssh(kids: Sequence[bytes]) -> bytes:
    """The W3C Common PSSH (ClearKey): version 1, KIDs, no data."""
    return pssh_box(COMMON, kids, b"", 1)


def system_pssh(system: str, kids: Sequence[bytes], scheme: str = "cenc") -> bytes:
    """The default pssh of a named system: widevine, playready, or common/clearkey (both
    W3C ClearKey, which reads the common pssh)."""
    if system == "widevine":
        return widevine_pssh(kids, protection_scheme=scheme)
    if system == "playready":
        return playready_pssh(kids, scheme)
    if system in ("common", "clearkey"):
        return common_pssh(kids)
    raise ValueError(f"unknown protection system {system!r}, expected one of {sorted(SYSTEMS)}")


def cenc_pssh_base64(pssh: bytes) -> str:
    """A whole pssh box as the text of a DASH `<cenc:pssh>` element."""
    return base64.b64encode(pssh).decode()


# --- DASH ContentProtection ----------------------------------------------------------------


def content_protection_elements(scheme: str, kid: bytes,
                                systems: Sequence[str]) -> list[ET.Element]:
    """ContentProtection elements for one AdaptationSet: the mp4protection one (scheme and
    default_KID) then one per system (widevine, playready, common: W3C ClearKey with the
    common pssh; clearkey: the DASH-IF ClearKey descriptor, no pssh), in `systems` order.
    Names use the `cenc:` prefix literally: the MPD root must declare
    `xmlns:cenc="urn:mpeg:cenc:2013"` (see `cenc_namespace_attr`)."""
    out = [ET.Element("ContentProtection", {
        "schemeIdUri": MP4_PROTECTION_SCHEME, "value": scheme,
        "cenc:default_KID": str(uuid.UUID(bytes=kid))})]
    for name in systems:
        if name not in SYSTEMS:
            raise ValueError(f"unknown protection system {name!r}")
        attrs = {"schemeIdUri": f"urn:uuid:{SYSTEMS[name]}"}
        if name in _SYSTEM_VALUES:
            attrs["value"] = _SYSTEM_VALUES[name]
        cp = ET.Element("ContentProtection", attrs)
        if name != "clearkey":  # DASH-IF ClearKey carries no pssh (at most a Laurl)
            box = system_pssh(name, [kid], scheme)
            ET.SubElement(cp, "cenc:pssh").text = cenc_pssh_base64(box)
        out.append(cp)
    return out


def content_protection_xml(scheme: str, kid: bytes, systems: Sequence[str]) -> str:
    """`content_protection_elements` as text, one element per line."""
    return "\n".join(ET.tostring(e, "unicode") for e in
                     content_protection_elements(scheme, kid, systems))


def cenc_namespace_attr() -> str:
    """The attribute the MPD root needs for `cenc:` names."""
    return f"xmlns:cenc={quoteattr(CENC_NS)}"
