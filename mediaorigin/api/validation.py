"""Checks for what clients send: upload metadata, processing configuration, PATCH bodies.

Every check raises ApiError(400|422, code, message) naming the offending field; what passes is
returned normalised, so the rest of the code trusts its shape.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from ..auth.rules import rules_from_dict
from ..library.records import MEDIA_STATUSES, MEDIA_TYPES
from ..processing.errors import ProcessingError
from ..processing.ladder import DEFAULT_RUNGS, parse_bitrate
from .errors import ApiError

LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
ORGANIZATION = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_JSON_FIELD = 256 * 1024
WATERMARK_POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")


def bad(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field}: {message}")


def load_json_object(raw: str | bytes | None, field: str) -> dict[str, Any]:
    if raw is None or raw == "" or raw == b"":
        return {}
    if len(raw) > MAX_JSON_FIELD:
        raise ApiError(413, "too_large", f"{field}: larger than {MAX_JSON_FIELD} bytes")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", f"{field} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_json", f"{field} must be a JSON object")
    return value


def _text(obj: dict[str, Any], key: str, limit: int, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise bad(key, "is required")
        return None
    if not isinstance(value, str):
        raise bad(key, "must be a string")
    value = value.strip()
    if required and not value:
        raise bad(key, "must not be empty")
    if len(value) > limit:
        raise bad(key, f"longer than {limit} characters")
    return value


def _tags(value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > 50:
        raise bad("tags", "must be a list of at most 50 strings")
    tags = []
    for tag in value:
        if not isinstance(tag, str) or not 0 < len(tag.strip()) <= 100:
            raise bad("tags", "each tag is a string of 1 to 100 characters")
        tags.append(tag.strip().lower())
    return list(dict.fromkeys(tags))


def _copyright(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"owner", "year", "license"}:
        raise bad("copyright", "must be an object with owner, year and license")
    year = value.get("year")
    if year is not None and (not isinstance(year, int) or isinstance(year, bool)
                             or not 1800 <= year <= 2200):
        raise bad("copyright.year", "must be a year like 2026")
    for key in ("owner", "license"):
        if value.get(key) is not None and (not isinstance(value[key], str)
                                           or len(value[key]) > 500):
            raise bad(f"copyright.{key}", "must be a string of at most 500 characters")
    return {"owner": value.get("owner"), "year": year, "license": value.get("license")}


def _permissions(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > 50:
        raise bad("permissions", "must be a list of {role, actions}")
    out = []
    for entry in value:
        if not isinstance(entry, dict) or not isinstance(entry.get("role"), str) or \
                not isinstance(entry.get("actions"), list) or \
                not all(isinstance(a, str) and len(a) <= 50 for a in entry["actions"]):
            raise bad("permissions", "each entry is {role: string, actions: [string]}")
        out.append({"role": entry["role"][:50], "actions": list(entry["actions"])})
    return out


def media_fields(obj: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Upload metadata or a PATCH body → normalised fields (only those given)."""
    allowed = {"title", "description", "type", "language", "tags", "copyright",
               "permissions", "organization", "status", "access"}
    unknown = set(obj) - allowed
    if unknown:
        raise bad(sorted(unknown)[0], "is not a field that can be set")
    out: dict[str, Any] = {}
    if (title := _text(obj, "title", 500, required=False)) is not None:
        if not title:
            raise bad("title", "must not be empty")
        out["title"] = title
    if (description := _text(obj, "description", 20000)) is not None:
        out["description"] = description
    if "type" in obj:
        if obj["type"] not in MEDIA_TYPES:
            raise bad("type", f"must be one of {', '.join(MEDIA_TYPES)}")
        out["type"] = obj["type"]
    if "language" in obj:
        lang = obj["language"]
        if lang is not None and (not isinstance(lang, str) or not LANGUAGE.match(lang)):
            raise bad("language", "must be a BCP 47 tag like en or pt-BR")
        out["language"] = lang
    if "tags" in obj:
        out["tags"] = _tags(obj["tags"])
    if "copyright" in obj:
        out["copyright"] = _copyright(obj["copyright"])
    if "permissions" in obj:
        out["permissions"] = _permissions(obj["permissions"])
    if "organization" in obj:
        org = obj["organization"]
        if org is not None and (not isinstance(org, str) or not ORGANIZATION.match(org)):
            raise bad("organization", "must be an id of letters, digits, _ . -")
        out["organization"] = org
    if "access" in obj:
        if obj["access"] is not None:
            if not isinstance(obj["access"], dict):
                raise bad("access", "must be an object of access rules or null")
            try:
                rules_from_dict(obj["access"])
            except ValueError as e:
                raise bad("access", str(e)) from None
        out["access"] = obj["access"]
    if "status" in obj:
        if creating or obj["status"] not in ("ready", "archived"):
            raise bad("status", "can only be set to archived or back to ready")
        out["status"] = obj["status"]
    return out


def _number(value: Any, field: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise bad(field, f"must be a number between {lo:g} and {hi:g}")
    return float(value)


def _bitrate(value: Any, field: str) -> int:
    try:
        rate = parse_bitrate(value)
    except ProcessingError:
        raise bad(field, "must be a bitrate like 2500k, 5M or 800000") from None
    if not 16_000 <= rate <= 100_000_000:
        raise bad(field, "must be between 16k and 100M")
    return rate


def processing_config(obj: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The design's processing settings (upload `processing` or POST .../process) → normalised.

    Accepts the upload form (quality, formats, thumbnails, captions) and the processing
    configuration form (video, audio, thumbnails objects), or both together.
    """
    allowed = {"quality", "formats", "thumbnails", "captions", "video", "audio", "watermark",
               "passthrough", "priority"}
    unknown = set(obj) - allowed
    if unknown:
        raise bad(sorted(unknown)[0], "is not a processing setting")
    cfg: dict[str, Any] = json.loads(json.dumps(defaults))  # deep copy
    if "quality" in obj:
        q = obj["quality"]
        if not isinstance(q, list) or not q or not all(x in DEFAULT_RUNGS for x in q):
            raise bad("quality", f"must be a list of {', '.join(DEFAULT_RUNGS)}")
        cfg["quality"] = list(dict.fromkeys(q))
    if "formats" in obj:
        f = obj["formats"]
        if not isinstance(f, list) or not all(x in ("mp4", "hls", "dash") for x in f):
            raise bad("formats", "must be a list of mp4, hls, dash")
        cfg["formats"] = f
    if "passthrough" in obj:
        if not isinstance(obj["passthrough"], bool):
            raise bad("passthrough", "must be true or false")
        cfg["passthrough"] = obj["passthrough"]
    if "priority" in obj:
        cfg["priority"] = int(_number(obj["priority"], "priority", -10, 10))
    if "captions" in obj:
        c = obj["captions"]
        if isinstance(c, bool):
            c = {"generate": c}
        if not isinstance(c, dict):
            raise bad("captions", "must be true/false or {generate, languages}")
        cfg["captions"] = {"generate": bool(c.get("generate", False)),
                           "languages": [x for x in c.get("languages", [])
                                         if isinstance(x, str) and LANGUAGE.match(x)]}
    if "thumbnails" in obj:
        t = obj["thumbnails"]
        if isinstance(t, bool):
            cfg["thumbnails"]["enabled"] = t
        elif isinstance(t, dict):
            if set(t) - {"count", "interval", "size", "enabled"}:
                raise bad("thumbnails", "has count, interval, size")
            if "count" in t:
                cfg["thumbnails"]["count"] = int(_number(t["count"], "thumbnails.count", 0, 500))
                cfg["thumbnails"]["interval"] = None
            if t.get("interval") is not None:
                cfg["thumbnails"]["interval"] = _number(t["interval"], "thumbnails.interval",
                                                        1, 3600)
                if "count" not in t:
                    cfg["thumbnails"]["count"] = None
            if "size" in t:
                if not isinstance(t["size"], str) or not SIZE.match(t["size"]):
                    raise bad("thumbnails.size", "must be WIDTHxHEIGHT like 640x360")
                cfg["thumbnails"]["size"] = t["size"]
            cfg["thumbnails"]["enabled"] = bool(t.get("enabled", True))
        else:
            raise bad("thumbnails", "must be true/false or {count, interval, size}")
    if "video" in obj:
        v = obj["video"]
        if not isinstance(v, dict) or set(v) - {"codec", "bitrate", "framerate", "keyframe"}:
            raise bad("video", "has codec, bitrate, framerate, keyframe")
        if v.get("codec", "h264") != "h264":
            raise bad("video.codec", "only h264 is produced (what every player decodes)")
        if "bitrate" in v:
            if not isinstance(v["bitrate"], dict):
                raise bad("video.bitrate", "must map qualities to bitrates")
            for q, rate in v["bitrate"].items():
                if q not in DEFAULT_RUNGS:
                    raise bad("video.bitrate", f"unknown quality {q!r}")
                cfg["video"]["bitrate"][q] = _bitrate(rate, f"video.bitrate.{q}")
        if v.get("framerate") is not None:
            cfg["video"]["framerate"] = _number(v["framerate"], "video.framerate", 1, 120)
        if "keyframe" in v:
            cfg["video"]["keyframe"] = _number(v["keyframe"], "video.keyframe", 0.5, 20)
    if "audio" in obj:
        a = obj["audio"]
        if not isinstance(a, dict) or set(a) - {"codec", "bitrate", "channels", "sampling"}:
            raise bad("audio", "has codec, bitrate, channels, sampling")
        if a.get("codec", "aac") != "aac":
            raise bad("audio.codec", "only aac is produced")
        if "bitrate" in a:
            cfg["audio"]["bitrate"] = _bitrate(a["bitrate"], "audio.bitrate")
        if "channels" in a:
            cfg["audio"]["channels"] = int(_number(a["channels"], "audio.channels", 1, 2))
        if "sampling" in a:
            if a["sampling"] not in (22050, 24000, 32000, 44100, 48000):
                raise bad("audio.sampling", "must be 22050, 24000, 32000, 44100 or 48000")
            cfg["audio"]["sampling"] = a["sampling"]
    if "watermark" in obj:
        w = obj["watermark"]
        if w is None:
            cfg["watermark"] = None
        elif not isinstance(w, dict) or set(w) - {"text", "image", "position", "opacity"} or \
                not (w.get("text") or w.get("image")):
            raise bad("watermark", "is {text or image (base64 PNG), position, opacity}")
        else:
            if w.get("text") is not None and (not isinstance(w["text"], str)
                                              or len(w["text"]) > 100):
                raise bad("watermark.text", "must be a string of at most 100 characters")
            if w.get("image") is not None:
                try:
                    png = base64.b64decode(w["image"], validate=True)
                except (binascii.Error, TypeError):
                    raise bad("watermark.image", "must be base64") from None
                if not png.startswith(b"\x89PNG") or len(png) > 1024 * 1024:
                    raise bad("watermark.image", "must be a PNG of at most 1 MB")
            position = w.get("position", "bottom-right")
            if position not in WATERMARK_POSITIONS:
                raise bad("watermark.position", f"one of {', '.join(WATERMARK_POSITIONS)}")
            cfg["watermark"] = {"text": w.get("text"), "image": w.get("image"),
                                "position": position,
                                "opacity": _number(w.get("opacity", 0.5),
                                                   "watermark.opacity", 0.05, 1)}
    return cfg


def status_filter(value: str | None) -> str | None:
    if value is not None and value not in MEDIA_STATUSES:
        raise bad("status", f"must be one of {', '.join(MEDIA_STATUSES)}")
    return value


def type_filter(value: str | None) -> str | None:
    if value is not None and value not in MEDIA_TYPES:
        raise bad("type", f"must be one of {', '.join(MEDIA_TYPES)}")
    return value
