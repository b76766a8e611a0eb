"""The media catalogue API end to end: a real origin + library on 127.0.0.1 (in a thread), an
aiohttp client on the test's loop.

Covers API keys and organisations, list filters / full-text search / sorting / cursor
pagination, the Media record, PATCH validation, DELETE (files, caches, playback), status and
progress events, the signed processor webhook and outgoing webhooks. Every response the
helpers see is checked to be below 500 and, when it is an error, to be JSON.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from library_fixtures import (
    ADMIN_KEY,
    INSTRUCTOR_KEY,
    OTHER_ORG_KEY,
    STUDENT_KEY,
    library_config,
)
from origin_server import OriginThread
from pytest_aiohttp import AiohttpServer

from mediaorigin.api.app import create_api
from mediaorigin.api.auth import SIGNED_ROUTES
from mediaorigin.library.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    sign,
    verify,
)

FAST = {"quality": ["360p"], "thumbnails": False}  # passthrough only: ready in about a second
WAIT = 30.0  # upper bound for processing; only reached when something is broken
WEBHOOK_SECRET = "s3cret-s3cret"


# -- helpers ----------------------------------------------------------------------------------


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        return self.json()["error"]["code"]


@dataclass
class Api:
    """A client for one origin: every response is checked (< 500, errors are JSON)."""

    session: aiohttp.ClientSession
    base: str
    origin: OriginThread
    seen: list[tuple[str, str, int]] = field(default_factory=list)

    async def call(self, method: str, path: str, *, key: str | None = ADMIN_KEY,
                   headers: dict[str, str] | None = None, **kw: Any) -> Resp:
        hdrs = {"Authorization": f"Bearer {key}"} if key is not None else {}
        hdrs.update(headers or {})
        async with self.session.request(method, self.base + path, headers=hdrs,
                                        allow_redirects=False, **kw) as r:
            body = await r.read()
            resp = Resp(r.status, dict(r.headers), body)
        self.seen.append((method, path, resp.status))
        assert resp.status < 500, (method, path, resp.status, body[:500])
        if resp.status >= 400 and method != "HEAD":
            assert resp.headers["Content-Type"].startswith("application/json"), (method, path)
            assert isinstance(resp.json()["error"]["code"], str)
        return resp

    async def get(self, path: str, **kw: Any) -> Resp:
        return await self.call("GET", path, **kw)

    async def patch(self, media_id: str, body: Any, **kw: Any) -> Resp:
        return await self.call("PATCH", f"/api/media/{media_id}", json=body, **kw)

    async def upload(self, path: Path, metadata: dict[str, Any] | None = None,
                     processing: dict[str, Any] | None = None, *, key: str = ADMIN_KEY,
                     filename: str | None = None, content_type: str = "video/mp4") -> Resp:
        form = aiohttp.FormData()
        form.add_field("metadata", json.dumps(metadata or {}), content_type="application/json")
        form.add_field("processing", json.dumps(FAST if processing is None else processing),
                       content_type="application/json")
        form.add_field("file", io.BytesIO(path.read_bytes()), filename=filename or path.name,
                       content_type=content_type)
        return await self.call("POST", "/api/media/upload", key=key, data=form)

    async def upload_ready(self, path: Path, metadata: dict[str, Any] | None = None,
                           processing: dict[str, Any] | None = None, *,
                           key: str = ADMIN_KEY) -> dict[str, Any]:
        resp = await self.upload(path, metadata, processing, key=key)
        assert resp.status == 201, resp.body
        doc = resp.json()
        await self.settled(doc["id"])
        return doc

    async def settled(self, media_id: str, key: str = ADMIN_KEY) -> dict[str, Any]:
        """Poll .../status until the latest job has finished; the last status."""
        deadline = time.monotonic() + WAIT
        while True:
            state = (await self.get(f"/api/media/{media_id}/status", key=key)).json()
            if state["jobStatus"] in ("completed", "failed", "cancelled"):
                return state
            assert time.monotonic() < deadline, state
            await asyncio.sleep(0.05)

    async def add(self, source: Path, title: str, **fields: Any) -> str:
        """A ready media item registered directly (no processing), then PATCHed."""
        media_id = await asyncio.to_thread(self.origin.add, [source], title)
        if fields:
            resp = await self.patch(media_id, fields)
            assert resp.status == 200, resp.body
        return media_id

    async def ids(self, query: str, key: str = ADMIN_KEY) -> list[str]:
        resp = await self.get(f"/api/media?limit=100&{query}", key=key)
        assert resp.status == 200, (query, resp.body)
        assert resp.json()["nextCursor"] is None
        return [item["id"] for item in resp.json()["items"]]


@pytest.fixture
async def api(library_origin: OriginThread) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, library_origin.base, library_origin)


def file_form(data: bytes, name: str = "upload.mp4") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename=name)
    return form


def error_of(resp: Resp) -> tuple[int, str]:
    return resp.status, resp.code


async def read_events(resp: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    """A whole Server-Sent Events stream as (event, data) pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    return events


# -- 1. API keys, roles and organisations -------------------------------------------------------


def api_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """(method, path template) of every /api route that needs a key, from the app itself."""
    routes = []
    for route in create_api(library_config(tmp_path)).router.routes():
        if route.method in ("OPTIONS", "*") or route.name in SIGNED_ROUTES:  # own auth
            continue
        assert route.resource is not None
        routes.append((route.method, "/api" + route.resource.canonical))
    return routes


def without_implicit_head(routes: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """aiohttp adds HEAD next to every GET; they are checked, but not listed below."""
    return {(m, p) for m, p in routes if not (m == "HEAD" and ("GET", p) in routes)}


def fill(template: str, media_id: str, job_id: str) -> str:
    return (template.replace("{media_id}", media_id).replace("{job_id}", job_id)
            .replace("{generation}", "1").replace("{upload_id}", "0123456789abcdef")
            .replace("{language}", "en").replace("{live_id}", "live_unknown0"))


EXPECTED_ROUTES = {
    ("POST", "/api/media/upload"), ("POST", "/api/media/webhook"), ("GET", "/api/media"),
    ("POST", "/api/live"), ("GET", "/api/live"), ("GET", "/api/live/{live_id}"),
    ("DELETE", "/api/live/{live_id}"), ("GET", "/api/live/{live_id}/token"),
    ("GET", "/api/media/{media_id}"), ("PATCH", "/api/media/{media_id}"),
    ("DELETE", "/api/media/{media_id}"), ("POST", "/api/media/{media_id}/upload"),
    ("POST", "/api/media/{media_id}/process"), ("GET", "/api/media/{media_id}/status"),
    ("GET", "/api/media/{media_id}/events"),
    ("DELETE", "/api/media/{media_id}/versions/{generation}"),
    ("GET", "/api/jobs/{job_id}"), ("POST", "/api/jobs/{job_id}/cancel"),
    ("POST", "/api/jobs/{job_id}/retry"),
    ("POST", "/api/uploads"), ("HEAD", "/api/uploads/{upload_id}"),
    ("PATCH", "/api/uploads/{upload_id}"), ("DELETE", "/api/uploads/{upload_id}"),
}


async def test_every_route_requires_a_valid_bearer_key(api: Api, tmp_path: Path,
                                                       compliant_mp4: Path) -> None:
    routes = api_routes(tmp_path / "routes")
    # The routes come from the application itself, so new ones are checked too; these must
    # be among them.
    assert EXPECTED_ROUTES <= without_implicit_head(routes) | {("POST", "/api/media/webhook")}
    doc = await api.upload_ready(compliant_mp4, {"title": "Secret lecture"},
                                 key=INSTRUCTOR_KEY)
    bad_credentials: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong-key-0123456789-abcdef"},
        {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_KEY}".encode()).decode()},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer"},
        {"Authorization": ADMIN_KEY},  # no scheme
        {"Authorization": f"Token {ADMIN_KEY}"},
        {"Authorization": f"Bearer {ADMIN_KEY[:-1]}"},  # a near miss
    ]
    for method, template in routes:
        path = fill(template, doc["id"], doc["jobId"])
        assert "{" not in path, f"a new route parameter to fill in: {template}"
        for headers in bad_credentials:
            resp = await api.call(method, path, key=None, headers=headers,
                                  data=b"{}" if method in ("POST", "PATCH") else None)
            assert resp.status == 401, (method, path, headers, resp.status)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
            if method != "HEAD":
                assert resp.code == "unauthorized", (method, path)
    # The scheme is case-insensitive (RFC 9110), surrounding spaces are not part of the key.
    for value in (f"bearer {ADMIN_KEY}", f"BEARER {ADMIN_KEY}", f"Bearer  {ADMIN_KEY} "):
        resp = await api.get(f"/api/media/{doc['id']}", key=None,
                             headers={"Authorization": value})
        assert resp.status == 200, value
    # Nothing was changed by the refused requests.
    assert (await api.get(f"/api/media/{doc['id']}")).json()["title"] == "Secret lecture"


async def test_student_reads_only(api: Api, compliant_mp4: Path) -> None:
    doc = await api.upload_ready(compliant_mp4, {"title": "Org A lecture"}, key=INSTRUCTOR_KEY)
    media_id, job_id = doc["id"], doc["jobId"]
    for path in ("/api/media", f"/api/media/{media_id}", f"/api/media/{media_id}/status",
                 f"/api/media/{media_id}/events", f"/api/jobs/{job_id}"):
        assert (await api.get(path, key=STUDENT_KEY)).status == 200, path
    assert [i["id"] for i in (await api.get("/api/media", key=STUDENT_KEY)).json()["items"]] \
        == [media_id]
    refused = [
        await api.upload(compliant_mp4, {"title": "student upload"}, key=STUDENT_KEY),
        await api.patch(media_id, {"title": "changed by a student"}, key=STUDENT_KEY),
        await api.call("DELETE", f"/api/media/{media_id}", key=STUDENT_KEY),
        await api.call("POST", f"/api/media/{media_id}/process", key=STUDENT_KEY, json={}),
        await api.call("POST", f"/api/media/{media_id}/upload", key=STUDENT_KEY,
                       data=file_form(b"x")),
        await api.call("DELETE", f"/api/media/{media_id}/versions/1", key=STUDENT_KEY),
        await api.call("POST", f"/api/jobs/{job_id}/cancel", key=STUDENT_KEY),
        await api.call("POST", f"/api/jobs/{job_id}/retry", key=STUDENT_KEY),
    ]
    for resp in refused:
        assert error_of(resp) == (403, "forbidden"), resp.body
    after = (await api.get(f"/api/media/{media_id}")).json()
    assert after["title"] == "Org A lecture" and after["status"] == "ready"
    assert len(after["storage"]["generations"]) == 1


async def test_organisations_are_isolated(api: Api, compliant_mp4: Path) -> None:
    doc = await api.upload_ready(compliant_mp4, {"title": "Org A only"}, key=INSTRUCTOR_KEY)
    media_id, job_id = doc["id"], doc["jobId"]
    assert doc["organization"]["id"] == "org-a"
    other = await api.add(compliant_mp4, "Org B item", organization="org-b")
    shared = await api.add(compliant_mp4, "No organisation")

    # org-b sees none of org-a's media, under any route, and cannot act on it.
    for method, path in (("GET", f"/api/media/{media_id}"),
                         ("GET", f"/api/media/{media_id}/status"),
                         ("GET", f"/api/media/{media_id}/events"),
                         ("DELETE", f"/api/media/{media_id}"),
                         ("POST", f"/api/media/{media_id}/process"),
                         ("GET", f"/api/jobs/{job_id}"),
                         ("POST", f"/api/jobs/{job_id}/retry")):
        resp = await api.call(method, path, key=OTHER_ORG_KEY,
                              json={} if method == "POST" else None)
        assert resp.status == 404, (method, path, resp.body)
    resp = await api.patch(media_id, {"title": "taken over"}, key=OTHER_ORG_KEY)
    assert error_of(resp) == (404, "media_not_found")
    assert await api.ids("", key=OTHER_ORG_KEY) == [other]
    # An organisation-scoped key cannot widen its view with the filter.
    assert await api.ids("organization=org-a", key=OTHER_ORG_KEY) == [other]
    assert await api.ids("", key=INSTRUCTOR_KEY) == [media_id]
    assert await api.ids("organization=org-b", key=STUDENT_KEY) == [media_id]
    # Only keys without an organisation may move media or upload elsewhere.
    resp = await api.patch(media_id, {"organization": "org-b"}, key=INSTRUCTOR_KEY)
    assert error_of(resp) == (403, "forbidden")
    resp = await api.upload(compliant_mp4, {"organization": "org-b"}, key=INSTRUCTOR_KEY)
    assert error_of(resp) == (403, "forbidden")

    # The admin key (no organisation) sees everything.
    assert set(await api.ids("")) == {media_id, other, shared}
    assert await api.ids("organization=org-a") == [media_id]
    assert (await api.get(f"/api/media/{media_id}")).status == 200
    assert (await api.get(f"/api/media/{media_id}", key=STUDENT_KEY)).status == 200
    assert (await api.get(f"/api/media/{shared}", key=INSTRUCTOR_KEY)).status == 404
    assert (await api.get(f"/api/media/{media_id}")).json()["title"] == "Org A only"


# -- 2. list: filters, search, sorting, pagination ---------------------------------------------


@pytest.fixture
async def catalogue(api: Api, compliant_mp4: Path) -> dict[str, str]:
    """Seven items with different types, statuses, tags, languages, organisations, titles."""
    items = {
        "algebra": await api.add(
            compliant_mp4, "Introduction to Algebra", description="Linear equations and "
            "variables", tags=["Math", "algebra"], language="en", organization="org-a"),
        "chemistry": await api.add(
            compliant_mp4, "Organic Chemistry", description="Carbon compounds",
            tags=["chemistry"], language="de", organization="org-a", type="audio"),
        "zebra": await api.add(
            compliant_mp4, "Zebra Studies", description="A talk about stripes",
            tags=["biology", "savanna"], language="en", organization="org-b", type="audio"),
        "biology": await api.add(
            compliant_mp4, "Biology Basics", description="What cells are",
            tags=["biology", "cytology"], language="fr"),
        "same1": await api.add(compliant_mp4, "Same Title", tags=["dup"], language="en"),
        "same2": await api.add(compliant_mp4, "Same Title", tags=["dup"]),
        "same3": await api.add(compliant_mp4, "Same Title", tags=["dup"]),
    }
    resp = await api.patch(items["zebra"], {"status": "archived"})
    assert resp.status == 200 and resp.json()["status"] == "archived"
    return items


async def test_list_filters(api: Api, catalogue: dict[str, str]) -> None:
    c = catalogue

    async def names(query: str, key: str = ADMIN_KEY) -> set[str]:
        found = await api.ids(query, key)
        assert len(found) == len(set(found)), query
        inverse = {v: k for k, v in c.items()}
        return {inverse[i] for i in found}

    everything = set(c)
    assert await names("") == everything
    assert await names("type=audio") == {"chemistry", "zebra"}
    assert await names("type=video") == everything - {"chemistry", "zebra"}
    assert await names("type=image") == set()
    assert await names("status=archived") == {"zebra"}
    assert await names("status=ready") == everything - {"zebra"}
    assert await names("status=processing") == set()
    assert await names("tag=biology") == {"zebra", "biology"}
    assert await names("tag=MATH") == {"algebra"}  # tags are stored and matched lower-case
    assert await names("tag=dup") == {"same1", "same2", "same3"}
    assert await names("tag=nothing") == set()
    assert await names("language=en") == {"algebra", "zebra", "same1"}
    assert await names("language=de") == {"chemistry"}
    assert await names("organization=org-a") == {"algebra", "chemistry"}
    assert await names("organization=org-b") == {"zebra"}
    assert await names("organization=org-a", key=INSTRUCTOR_KEY) == {"algebra", "chemistry"}
    assert await names("type=audio&language=en&tag=biology") == {"zebra"}
    assert await names("type=audio&status=ready") == {"chemistry"}
    assert await names("type=audio", key=INSTRUCTOR_KEY) == {"chemistry"}


async def test_list_full_text_search(api: Api, catalogue: dict[str, str]) -> None:
    c = catalogue

    async def q(text: str) -> set[str]:
        inverse = {v: k for k, v in c.items()}
        return {inverse[i] for i in await api.ids(f"q={quote(text)}")}

    assert await q("algebra") == {"algebra"}  # title (and tag)
    assert await q("Chemistry") == {"chemistry"}  # case-insensitive
    assert await q("carbon") == {"chemistry"}  # description
    assert await q("stripes") == {"zebra"}  # description
    assert await q("cytology") == {"biology"}  # tag only
    assert await q("savanna") == {"zebra"}  # tag only
    assert await q("intro") == {"algebra"}  # prefix of "Introduction"
    assert await q("intro equa") == {"algebra"}  # every word, each a prefix
    assert await q("intro chemistry") == set()  # all words are required
    assert await q("biology") == {"zebra", "biology"}
    assert await q("same") == {"same1", "same2", "same3"}
    assert await q("xylophone") == set()
    # Combined with filters.
    assert await api.ids("q=biology&type=video") == [c["biology"]]
    # FTS syntax in user text never reaches the query language.
    for text in ['"', '"unbalanced', "*", "intro*", "AND", "OR", "NOT", "a AND b", "-",
                 "-algebra", ":", "title:zebra", "(", "(algebra", ")", "NEAR(a b)", "^",
                 "algebra OR chemistry", "{title}: x", "'", ";", "\\", "%", "_", "é",
                 "日本語", "\u0000", "a" * 600, " ".join(["w"] * 40)]:
        resp = await api.get(f"/api/media?q={quote(text)}")
        assert resp.status == 200, (text, resp.body)
    assert await q("title:zebra") == set()  # words "title" and "zebra", both required
    assert await q("(algebra") == {"algebra"}
    assert await q('"algebra') == {"algebra"}
    assert await q("***") == set(c)  # no words: no search condition


async def walk(api: Api, query: str, limit: int = 2) -> list[str]:
    """Every page of a listing, following nextCursor."""
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        url = f"/api/media?limit={limit}&{query}"
        if cursor:
            url += f"&cursor={cursor}"
        resp = await api.get(url)
        assert resp.status == 200, resp.body
        doc = resp.json()
        assert len(doc["items"]) <= limit
        seen += [i["id"] for i in doc["items"]]
        cursor = doc["nextCursor"]
        if cursor is None:
            return seen
        assert doc["items"], "a page with a cursor has items"
    raise AssertionError("pagination did not end")


async def test_list_sorting_and_cursor_pagination(api: Api, catalogue: dict[str, str]) -> None:
    items = {i["id"]: i for i in (await api.get("/api/media?limit=100")).json()["items"]}
    assert len(items) == 7
    by_title = sorted(items, key=lambda i: (items[i]["title"], i))
    assert await api.ids("sort=title") == by_title
    assert await api.ids("sort=-title") == by_title[::-1]
    creation = list(catalogue.values())
    assert await api.ids("sort=createdAt") == creation
    assert await api.ids("sort=-createdAt") == creation[::-1]
    assert await api.ids("") == creation[::-1]  # newest first by default
    # updatedAt: the archived item was changed last.
    assert (await api.ids("sort=-updatedAt"))[0] == catalogue["zebra"]

    # Walks: every item exactly once, in order, even where sort values tie (three "Same
    # Title", and every item has the same duration).
    for query, expected in (("sort=title", by_title), ("sort=-title", by_title[::-1]),
                            ("sort=createdAt", creation), ("sort=-createdAt", creation[::-1])):
        for limit in (1, 2, 3):
            assert await walk(api, query, limit) == expected, (query, limit)
    for query in ("sort=duration", "sort=-duration", "sort=updatedAt"):
        walked = await walk(api, query)
        assert walked == await api.ids(query), query
        assert sorted(walked) == sorted(items)
    assert await walk(api, "sort=title&tag=dup") == [i for i in by_title
                                                      if items[i]["title"] == "Same Title"]
    assert await walk(api, "sort=title&q=same", 1) == await api.ids("sort=title&q=same")

    # A cursor of one sort can be given with the same query only; garbage is refused.
    bad = ["garbage!!", "x", base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
           base64.urlsafe_b64encode(b'[["a"], "id"]').decode(),
           base64.urlsafe_b64encode(b'{"a": 1}').decode(),
           base64.urlsafe_b64encode(b"\xff\xfe").decode(), "%%%"]
    title_page = (await api.get("/api/media?sort=title&limit=2")).json()
    resp = await api.get(f"/api/media?sort=createdAt&cursor={title_page['nextCursor']}")
    assert error_of(resp) == (400, "invalid_query")  # a title cursor for another sort
    for cursor in bad:
        resp = await api.get(f"/api/media?sort=title&cursor={quote(cursor)}")
        assert error_of(resp) == (400, "invalid_query"), (cursor, resp.body)
    for query in ("limit=0", "limit=101", "limit=-1", "limit=abc", "limit=", "sort=bogus",
                  "sort=-", "sort=Title"):
        resp = await api.get(f"/api/media?{query}")
        assert error_of(resp) == (400, "invalid_query"), (query, resp.body)
    assert (await api.get("/api/media?limit=1")).status == 200
    assert (await api.get("/api/media?limit=100")).status == 200
    for query in ("type=podcast", "type=VIDEO", "status=deleted", "status="):
        resp = await api.get(f"/api/media?{query}")
        assert error_of(resp) == (422, "invalid_field"), (query, resp.body)


# -- 3. one record ------------------------------------------------------------------------------


async def test_record_has_every_design_field(api: Api, compliant_mp4: Path) -> None:
    meta = {"title": "Cells and Tissues", "description": "Week 3", "language": "en",
            "tags": ["biology", "week-3"],
            "copyright": {"owner": "Example University", "year": 2025, "license": "CC-BY-4.0"}}
    doc = await api.upload_ready(compliant_mp4, meta,
                                 {"quality": ["360p"], "thumbnails": {"count": 2}})
    media_id = doc["id"]
    resp = await api.get(f"/api/media/{media_id}")
    assert resp.status == 200
    r = resp.json()
    assert r["id"] == media_id
    assert (r["title"], r["description"], r["type"], r["status"]) == (
        "Cells and Tissues", "Week 3", "video", "ready")

    m = r["metadata"]
    assert m["format"] == "mp4"
    assert m["duration"] == pytest.approx(6.0, abs=0.2)
    assert m["dimensions"] == {"width": 640, "height": 360}
    assert m["size"] == compliant_mp4.stat().st_size
    assert isinstance(m["bitrate"], int) and m["bitrate"] > 0
    assert m["codec"] == "h264"
    assert m["language"] == "en"
    assert m["tags"] == ["biology", "week-3"]
    assert m["copyright"] == meta["copyright"]

    p = r["processing"]
    assert p["status"] == "completed" and p["progress"] == 100 and p["error"] is None
    assert p["jobId"] == doc["jobId"]
    assert p["history"] and all(set(h) >= {"action", "timestamp", "details"}
                                for h in p["history"])
    actions = [h["action"] for h in p["history"]]
    assert actions[0] == "uploaded" and "job.completed" in actions
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", h["timestamp"])
               for h in p["history"])
    assert p["settings"]["quality"] == ["360p"]
    assert p["settings"]["thumbnails"]["count"] == 2

    s = r["storage"]
    assert s["provider"] == "local" and s["location"] == f"media/{media_id}"
    assert s["versions"]
    for v in s["versions"]:
        assert set(v) >= {"quality", "format", "url", "size"}
        assert v["format"] == "mp4" and v["size"] > 0
    assert s["versions"][0]["quality"] == "360p"
    assert len(s["thumbnails"]) == 2
    for t in s["thumbnails"]:
        assert set(t) >= {"time", "url"} and isinstance(t["time"], float)
    for url in (s["versions"][0]["url"], s["thumbnails"][0]["url"]):
        assert url.startswith(f"/vod/{media_id}/assets/")
        assert (await api.get(url, key=None)).status == 200, url

    st = r["streaming"]
    assert st["provider"] == "mediaorigin" and st["protocol"] == "hls"
    assert st["urls"] == {"hls": f"/vod/{media_id}/master.m3u8",
                          "dash": f"/vod/{media_id}/manifest.mpd", "smooth": None}
    assert st["drm"]["enabled"] is False
    for url in (st["urls"]["hls"], st["urls"]["dash"]):
        assert (await api.get(url, key=None)).status == 200, url

    a = r["analytics"]
    assert set(a) >= {"views", "uniqueViewers", "totalPlaytime", "averageViewDuration",
                      "qualityDistribution", "bandwidth"}
    assert r["organization"] == {"id": None, "permissions": []}
    assert r["createdAt"] <= r["updatedAt"]

    # The list carries the same record.
    listed = (await api.get("/api/media")).json()["items"]
    assert [i["id"] for i in listed] == [media_id]
    assert listed[0]["metadata"] == r["metadata"]
    assert listed[0]["streaming"] == r["streaming"]


async def test_unknown_and_malformed_ids(api: Api) -> None:
    for media_id in ("nosuchmedia", "A" * 64, "-_-"):
        for method in ("GET", "PATCH", "DELETE"):
            resp = await api.call(method, f"/api/media/{media_id}",
                                  json={} if method == "PATCH" else None)
            assert error_of(resp) == (404, "media_not_found"), (media_id, method)
        resp = await api.get(f"/api/media/{media_id}/status")
        assert error_of(resp) == (404, "media_not_found")
    for media_id in ("A" * 65, "bad.id", "bad$id", "bad%20id", "%2e%2e", "b%C3%A4d", "x~y"):
        resp = await api.get(f"/api/media/{media_id}")
        assert resp.status == 404, (media_id, resp.status)
        assert resp.code in ("not_found", "media_not_found")
    resp = await api.get("/api/jobs/nosuchjob")
    assert error_of(resp) == (404, "job_not_found")


# -- 4. PATCH -----------------------------------------------------------------------------------


async def test_patch_round_trips_and_reindexes(api: Api, compliant_mp4: Path) -> None:
    media_id = await api.add(compliant_mp4, "Quantum Mechanics")
    before = (await api.get(f"/api/media/{media_id}")).json()
    assert await api.ids("q=quantum") == [media_id]
    change = {"title": "  Thermodynamics Primer  ", "description": "Heat and work",
              "tags": ["Physics", "heat", "physics", " Heat "], "language": "pt-BR",
              "copyright": {"owner": "Example University", "year": 2024, "license": "CC0"},
              "permissions": [{"role": "student", "actions": ["view"]},
                              {"role": "instructor", "actions": ["view", "edit"]}]}
    resp = await api.patch(media_id, change)
    assert resp.status == 200, resp.body
    for r in (resp.json(), (await api.get(f"/api/media/{media_id}")).json()):
        assert r["title"] == "Thermodynamics Primer"
        assert r["description"] == "Heat and work"
        assert r["metadata"]["tags"] == ["heat", "physics"]
        assert r["metadata"]["language"] == "pt-BR"
        assert r["metadata"]["copyright"] == change["copyright"]
        assert r["organization"]["permissions"] == change["permissions"]
        assert r["updatedAt"] >= before["updatedAt"]
        assert r["createdAt"] == before["createdAt"]
        assert r["status"] == "ready" and r["type"] == "video"
    # Search follows the edit: the new title is found, the old one no longer.
    assert await api.ids("q=quantum") == []
    assert await api.ids("q=thermo") == [media_id]
    assert await api.ids("q=heat") == [media_id]
    assert await api.ids("tag=physics") == [media_id]
    assert await api.ids("language=pt-BR") == [media_id]

    # Tags are replaced, not merged; fields not sent are kept.
    resp = await api.patch(media_id, {"tags": ["optics"]})
    r = resp.json()
    assert r["metadata"]["tags"] == ["optics"]
    assert r["title"] == "Thermodynamics Primer" and r["description"] == "Heat and work"
    assert await api.ids("tag=physics") == []
    assert await api.ids("q=heat") == [media_id]  # still in the description
    assert await api.ids("q=physics") == []
    assert (await api.patch(media_id, {"tags": []})).json()["metadata"]["tags"] == []
    assert await api.ids("q=optics") == []
    # An empty body changes nothing.
    resp = await api.patch(media_id, {})
    assert resp.status == 200 and resp.json()["title"] == "Thermodynamics Primer"
    # null language clears it.
    assert (await api.patch(media_id, {"language": None})).json()["metadata"]["language"] \
        is None


async def test_patch_validation(api: Api, compliant_mp4: Path) -> None:
    media_id = await api.add(compliant_mp4, "Unchanged")
    invalid: list[Any] = [
        {"title": ""}, {"title": "   "}, {"title": "x" * 501}, {"title": 5},
        {"description": "d" * 20001}, {"description": ["x"]},
        {"language": "english!"}, {"language": "e"}, {"language": 12},
        {"tags": "math"}, {"tags": {"a": 1}}, {"tags": [f"t{i}" for i in range(51)]},
        {"tags": [""]}, {"tags": [3]}, {"tags": ["x" * 101]},
        {"copyright": {"year": "2020"}}, {"copyright": {"year": 1200}},
        {"copyright": {"year": True}}, {"copyright": {"holder": "x"}}, {"copyright": "me"},
        {"copyright": {"owner": 5}},
        {"permissions": "all"}, {"permissions": [{"role": "x"}]},
        {"unknown": 1}, {"id": "other"}, {"createdAt": "2020-01-01T00:00:00Z"},
        {"type": "podcast"}, {"organization": "bad org!"},
        {"status": "processing"}, {"status": "failed"}, {"status": "deleted"},
    ]
    for body in invalid:
        resp = await api.patch(media_id, body)
        assert error_of(resp) == (422, "invalid_field"), (body, resp.body)
    assert "title" in (await api.patch(media_id, {"title": ""})).json()["error"]["message"]
    for raw in (b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b"null"):
        resp = await api.call("PATCH", f"/api/media/{media_id}", data=raw,
                              headers={"Content-Type": "application/json"})
        assert error_of(resp) == (400, "invalid_json"), (raw, resp.body)
    ok = {"title": "x" * 500, "tags": [f"t{i}" for i in range(50)], "language": "en-GB",
          "copyright": {"year": 2020}}
    assert (await api.patch(media_id, ok)).status == 200
    r = (await api.get(f"/api/media/{media_id}")).json()
    assert r["title"] == "x" * 500 and len(r["metadata"]["tags"]) == 50
    assert r["metadata"]["copyright"] == {"owner": None, "year": 2020, "license": None}

    # Archive and back.
    resp = await api.patch(media_id, {"status": "archived"})
    assert resp.status == 200 and resp.json()["status"] == "archived"
    assert (await api.get(f"/api/media/{media_id}/status")).json()["mediaStatus"] == "archived"
    assert await api.ids("status=archived") == [media_id]
    resp = await api.patch(media_id, {"status": "ready"})
    assert resp.status == 200 and resp.json()["status"] == "ready"
    assert await api.ids("status=archived") == []


# -- 5. DELETE ----------------------------------------------------------------------------------


async def first_segment(api: Api, media_id: str) -> str:
    """The path of the first media segment of the first variant, found via the playlists."""
    master = await api.get(f"/vod/{media_id}/master.m3u8", key=None)
    assert master.status == 200
    variant = next(line for line in master.body.decode().splitlines()
                   if line and not line.startswith("#"))
    base = f"/vod/{media_id}/"
    playlist = await api.get(base + variant, key=None)
    assert playlist.status == 200
    segment = next(line for line in playlist.body.decode().splitlines()
                   if line and not line.startswith("#"))
    return base + variant.rsplit("/", 1)[0] + "/" + segment if "/" in variant else \
        base + segment


async def test_delete_removes_record_files_caches_and_playback(
        api: Api, compliant_mp4: Path) -> None:
    config = api.origin.config
    root = config.path(config.storage.root)
    cache = config.path(config.storage.cache_dir)
    media_id = await api.add(compliant_mp4, "To be deleted")
    keep = await api.add(compliant_mp4, "Kept")
    folder = root / "media" / media_id
    keys = [p.relative_to(root).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert keys

    for _ in range(2):  # served and cached
        assert (await api.get(f"/vod/{media_id}/master.m3u8", key=None)).status == 200
    segment = await first_segment(api, media_id)
    assert (await api.get(segment, key=None)).status == 200
    assert (await api.get(f"/vod/{keep}/master.m3u8", key=None)).status == 200
    keep_segment = await first_segment(api, keep)
    assert (await api.get(keep_segment, key=None)).status == 200
    index_files = [cache / "index" / (hashlib.sha256(k.encode()).hexdigest() + ".moix")
                   for k in keys]
    assert any(f.exists() for f in index_files)
    assert (cache / "segments" / media_id).is_dir()
    assert any((cache / "segments" / media_id).iterdir())

    resp = await api.call("DELETE", f"/api/media/{media_id}")
    assert resp.status == 204 and resp.body == b""

    assert error_of(await api.get(f"/api/media/{media_id}")) == (404, "media_not_found")
    assert media_id not in await api.ids("")
    assert not folder.exists()
    assert not (cache / "segments" / media_id).exists()
    assert not any(f.exists() for f in index_files)
    for path in (f"/vod/{media_id}/master.m3u8", f"/vod/{media_id}/manifest.mpd", segment):
        resp = await api.get(path, key=None)
        assert resp.status == 404, (path, resp.status)
    resp = await api.call("DELETE", f"/api/media/{media_id}")
    assert error_of(resp) == (404, "media_not_found")

    # The other item is untouched.
    assert (await api.get(f"/vod/{keep}/master.m3u8", key=None)).status == 200
    assert (await api.get(keep_segment, key=None)).status == 200
    assert (root / "media" / keep).is_dir()
    assert await api.ids("") == [keep]


async def test_delete_of_uploaded_media(api: Api, compliant_mp4: Path) -> None:
    doc = await api.upload_ready(compliant_mp4, {"title": "Uploaded then deleted"})
    media_id = doc["id"]
    config = api.origin.config
    folder = config.path(config.storage.root) / "media" / media_id
    assert folder.is_dir()
    assert (await api.get(f"/vod/{media_id}/master.m3u8", key=None)).status == 200
    assert (await api.call("DELETE", f"/api/media/{media_id}", key=None)).status == 401
    assert (await api.call("DELETE", f"/api/media/{media_id}", key=OTHER_ORG_KEY)).status \
        == 404
    assert (await api.call("DELETE", f"/api/media/{media_id}")).status == 204
    assert not folder.exists()
    assert (await api.get(f"/vod/{media_id}/master.m3u8", key=None)).status == 404
    assert error_of(await api.get(f"/api/jobs/{doc['jobId']}")) == (404, "job_not_found")


# -- 6. status and progress events --------------------------------------------------------------


async def test_status_and_events_follow_processing(api: Api, compliant_mp4: Path) -> None:
    resp = await api.upload(compliant_mp4, {"title": "Watch me"})
    assert resp.status == 201
    assert resp.headers["Location"] == f"/api/media/{resp.json()['id']}"
    doc = resp.json()
    media_id = doc["id"]
    assert doc["status"] == "processing"
    assert doc["processing"]["status"] in ("queued", "running")

    async def stream() -> list[tuple[str, dict[str, Any]]]:
        async with api.session.get(f"{api.base}/api/media/{media_id}/events",
                                   headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            return await read_events(r)

    events_task = asyncio.create_task(asyncio.wait_for(stream(), WAIT))
    statuses: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while not statuses or statuses[-1]["jobStatus"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        statuses.append((await api.get(f"/api/media/{media_id}/status")).json())
        await asyncio.sleep(0.02)
    events = await events_task

    assert statuses[-1]["status"] == "ready" and statuses[-1]["jobStatus"] == "completed"
    assert statuses[-1]["percentage"] == 100 and statuses[-1]["jobId"] == doc["jobId"]
    seq = [s["status"] for s in statuses]
    first_ready = seq.index("ready")
    assert set(seq[:first_ready]) <= {"processing"} and set(seq[first_ready:]) == {"ready"}
    pcts = [s["percentage"] for s in statuses]
    assert pcts == sorted(pcts), pcts

    assert events, "no events"
    assert events[-1][0] == "done" and events[-1][1]["status"] == "ready"
    assert events[-1][1]["jobStatus"] == "completed"
    progress = [data for name, data in events if name == "progress"]
    assert progress and all(name in ("progress", "done") for name, _ in events)
    assert [n for n, _ in events].count("done") == 1
    percentages = [p["percentage"] for p in progress]
    assert percentages == sorted(percentages), percentages
    assert percentages[-1] == 100

    # A finished item: one progress event, done, and the stream ends at once.
    started = time.monotonic()
    async with api.session.get(f"{api.base}/api/media/{media_id}/events",
                               headers={"Authorization": f"Bearer {STUDENT_KEY}"}) as r:
        assert r.status == 404  # not the student's organisation
    async with api.session.get(f"{api.base}/api/media/{media_id}/events",
                               headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
        assert r.status == 200
        events = await asyncio.wait_for(read_events(r), 5)
    assert time.monotonic() - started < 3
    assert [name for name, _ in events] == ["progress", "done"]
    assert events[0][1]["status"] == events[1][1]["status"] == "ready"

    # An item that never had a job (registered directly) behaves the same.
    added = await api.add(compliant_mp4, "No job")
    async with api.session.get(f"{api.base}/api/media/{added}/events",
                               headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
        events = await asyncio.wait_for(read_events(r), 5)
    assert [name for name, _ in events] == ["progress", "done"]
    assert events[1][1]["jobId"] is None and events[1][1]["status"] == "ready"

    resp = await api.get("/api/media/nosuchmedia/events")
    assert error_of(resp) == (404, "media_not_found")
    assert resp.headers["Content-Type"].startswith("application/json")


# -- 7. the processor webhook (incoming, signed) -------------------------------------------------


@pytest.fixture
def signed_origin(tmp_path: Path) -> Iterator[OriginThread]:
    """An origin with a webhook secret whose jobs stay queued: nothing consumes them (the
    Redis queue it would use is not reachable), as with an external processor."""
    config = library_config(tmp_path / "signed", webhooks={"secret": WEBHOOK_SECRET},
                            jobs={"backend": "redis", "run_in_server": False},
                            redis={"url": "redis://127.0.0.1:9/0"})
    origin = OriginThread(config).start()
    yield origin
    origin.stop()


async def test_processor_webhook(signed_origin: OriginThread, compliant_mp4: Path) -> None:
    secret = WEBHOOK_SECRET.encode()
    async with aiohttp.ClientSession() as session:
        api = Api(session, signed_origin.base, signed_origin)
        resp = await api.upload(compliant_mp4, {"title": "Processed elsewhere"})
        assert resp.status == 201
        media_id, job_id = resp.json()["id"], resp.json()["jobId"]
        job = (await api.get(f"/api/jobs/{job_id}")).json()
        assert job["status"] == "queued"

        async def hook(update: Any, *, raw: bytes | None = None, t: float | None = None,
                       key: bytes = secret, header: str | None = "sign",
                       api_key: str | None = None) -> Resp:
            body = raw if raw is not None else json.dumps(update).encode()
            headers = {"Content-Type": "application/json"}
            if header == "sign":
                headers[SIGNATURE_HEADER] = sign(key, body, int(t if t is not None
                                                                else time.time()))
            elif header is not None:
                headers[SIGNATURE_HEADER] = header
            return await api.call("POST", "/api/media/webhook", key=api_key, data=body,
                                  headers=headers)

        running = {"jobId": job_id, "status": "running",
                   "progress": {"stage": "external", "percentage": 40}}
        # Refusals first: nothing may change the job.
        assert error_of(await hook(running, header=None)) == (401, "missing_signature")
        assert error_of(await hook(running, header="")) == (401, "missing_signature")
        assert error_of(await hook(running, key=b"wrong-secret")) == (401, "bad_signature")
        assert error_of(await hook(running, t=time.time() - 3600)) == (401, "stale_signature")
        assert error_of(await hook(running, t=time.time() + 3600)) == (401, "stale_signature")
        assert error_of(await hook(running, header="t=1,v1=zz")) == (401,
                                                                      "malformed_signature")
        resp = await hook(running, header=None)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        # A signature over other bytes does not verify this body.
        signed_other = sign(secret, b"{}", int(time.time()))
        assert error_of(await hook(running, header=signed_other)) == (401, "bad_signature")
        # An API key is no substitute for the signature.
        assert error_of(await hook(running, header=None, api_key=ADMIN_KEY)) == (
            401, "missing_signature")
        big = json.dumps({"jobId": job_id, "pad": "x" * (256 * 1024)}).encode()
        assert error_of(await hook(None, raw=big)) == (413, "too_large")
        assert error_of(await hook({"jobId": "nosuchjob", "status": "running"})) == (
            404, "job_not_found")
        assert error_of(await hook({"status": "running"})) == (404, "job_not_found")
        assert error_of(await hook(None, raw=b"{not json")) == (400, "invalid_json")
        assert error_of(await hook(None, raw=b"[1]")) == (400, "invalid_json")
        assert (await api.get(f"/api/jobs/{job_id}")).json()["status"] == "queued"

        # A signed update needs no API key (an irrelevant Authorization header is ignored).
        resp = await hook(running)
        assert resp.status == 200, resp.body
        assert resp.json()["status"] == "running"
        assert resp.json()["progress"]["stage"] == "external"
        assert resp.json()["progress"]["percentage"] == 40
        job = (await api.get(f"/api/jobs/{job_id}")).json()
        assert job["status"] == "running" and job["progress"]["percentage"] == 40
        state = (await api.get(f"/api/media/{media_id}/status")).json()
        assert (state["jobStatus"], state["stage"], state["percentage"]) == (
            "running", "external", 40)
        resp = await hook({**running, "progress": {"stage": "external", "percentage": 70}},
                          api_key="not-a-key")
        assert resp.status == 200 and resp.json()["progress"]["percentage"] == 70

        # Completion; a second completion is a conflict; a late "running" is ignored.
        resp = await hook({"jobId": job_id, "status": "completed"})
        assert resp.status == 200 and resp.json()["status"] == "completed"
        assert resp.json()["progress"]["percentage"] == 100
        assert error_of(await hook({"jobId": job_id, "status": "completed"})) == (
            409, "job_finished")
        assert error_of(await hook({"jobId": job_id, "status": "failed"})) == (
            409, "job_finished")
        resp = await hook(running)
        assert resp.status == 200
        assert resp.json()["status"] == "completed"
        assert resp.json()["progress"]["percentage"] == 100
        record = (await api.get(f"/api/media/{media_id}")).json()
        assert record["processing"]["status"] == "completed"
        assert "job.callback" in [h["action"] for h in record["processing"]["history"]]

        # A failure report on another job: the item without a playable version fails.
        resp = await api.upload(compliant_mp4, {"title": "Fails elsewhere"})
        other_media, other_job = resp.json()["id"], resp.json()["jobId"]
        resp = await hook({"jobId": other_job, "status": "failed",
                           "error": {"code": "encoder_crashed", "message": "it crashed"}})
        assert resp.status == 200 and resp.json()["status"] == "failed"
        record = (await api.get(f"/api/media/{other_media}")).json()
        assert record["status"] == "failed"
        assert record["processing"]["error"] == "it crashed"

        # Malformed but signed updates are refused as invalid, never a server error.
        resp = await api.upload(compliant_mp4, {"title": "Odd callbacks"})
        odd_media, odd_job = resp.json()["id"], resp.json()["jobId"]
        for update in ({"jobId": odd_job, "status": "running", "progress": "half"},
                       {"jobId": odd_job, "status": "running",
                        "progress": {"percentage": "forty"}},
                       {"jobId": odd_job, "status": "running", "progress": {"percentage": 400}},
                       {"jobId": odd_job, "status": "exploded"},
                       {"jobId": odd_job, "status": "failed", "error": "a plain string"},
                       {"jobId": odd_job, "status": "failed", "error": {"code": 5}}):
            resp = await hook(update)
            assert error_of(resp) == (422, "invalid_field"), (update, resp.body)
        assert (await api.get(f"/api/jobs/{odd_job}")).json()["status"] == "queued"
        assert (await api.get(f"/api/media/{odd_media}")).status == 200
        resp = await hook({"jobId": odd_job, "status": "failed", "error": {"code": "x"}})
        assert resp.status == 200
        record = (await api.get(f"/api/media/{odd_media}")).json()
        assert record["status"] == "failed" and record["processing"]["error"]


async def test_processor_webhook_without_a_secret(api: Api) -> None:
    body = b'{"jobId": "x", "status": "running"}'
    resp = await api.call("POST", "/api/media/webhook", key=None, data=body, headers={
        SIGNATURE_HEADER: sign(b"anything", body, int(time.time()))})
    assert error_of(resp) == (401, "unauthorized")


# -- 8. outgoing webhooks -----------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.got]

    async def wait_for(self, kind: str, media_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while True:
            for event in self.events():
                if event["type"] == kind and event["data"].get("mediaId") == media_id:
                    return event
            remaining = deadline - time.monotonic()
            assert remaining > 0, (kind, media_id, [e["type"] for e in self.events()])
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> Receiver:
    rec = Receiver("")

    async def hook(request: web.Request) -> web.Response:
        rec.got.append((dict(request.headers), await request.read()))
        rec.changed.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", hook)
    server = await aiohttp_server(app, host="127.0.0.1")
    rec.url = str(server.make_url("/hooks"))
    return rec


async def test_outgoing_webhooks(receiver: Receiver, tmp_path: Path,
                                 compliant_mp4: Path) -> None:
    secret = "outgoing-secret-0123"
    config = library_config(tmp_path / "hooks",
                            webhooks={"urls": receiver.url, "secret": secret})
    origin = await asyncio.to_thread(lambda: OriginThread(config).start())
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, origin.base, origin)
            good = await api.upload_ready(compliant_mp4, {"title": "Hooked"})
            notes = tmp_path / "notes.txt"
            notes.write_text("These are lecture notes, not a video.\n" * 20)
            resp = await api.upload(notes, {"title": "Notes"}, filename="notes.txt",
                                    content_type="text/plain")
            assert resp.status == 201
            bad = resp.json()
            state = await api.settled(bad["id"])
            assert state["status"] == "failed" and state["error"]["code"] == "not_media"
            async with session.get(f"{origin.base}/api/media/{bad['id']}/events",
                                   headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
                events = await asyncio.wait_for(read_events(r), 5)
            assert [name for name, _ in events] == ["progress", "done"]
            assert events[1][1]["status"] == "failed"
            assert events[1][1]["error"]["code"] == "not_media"
            ready = await receiver.wait_for("media.ready", good["id"])
            failed = await receiver.wait_for("media.failed", bad["id"])
    finally:
        await asyncio.to_thread(origin.stop)

    assert ready["data"]["jobId"] == good["jobId"]
    assert failed["data"]["jobId"] == bad["jobId"]
    assert failed["data"]["error"]["code"] == "not_media"
    events = receiver.events()
    for_good = [e for e in events if e["data"].get("mediaId") == good["id"]]
    assert [e["type"] for e in for_good].count("media.ready") == 1
    assert not [e for e in for_good if e["type"] == "media.failed"]
    progress = [e for e in for_good if e["type"] == "job.progress"]
    assert progress
    assert all(e["data"]["jobId"] == good["jobId"] for e in progress)
    assert [e for e in events if e["data"].get("mediaId") == bad["id"]
            and e["type"] == "media.failed"] == [failed]
    assert not [e for e in events if e["data"].get("mediaId") == bad["id"]
                and e["type"] == "media.ready"]

    deliveries = set()
    for headers, body in receiver.got:
        verify(secret.encode(), body, headers[SIGNATURE_HEADER], time.time())
        event = json.loads(body)
        assert headers[EVENT_HEADER] == event["type"]
        assert headers["Content-Type"] == "application/json"
        assert re.fullmatch(r"[0-9a-f]{32}", headers[DELIVERY_HEADER])
        deliveries.add(headers[DELIVERY_HEADER])
        assert set(event) == {"id", "type", "created", "data"}
    assert len(deliveries) == len(receiver.got)
    assert len({e["id"] for e in events}) == len(events)


# -- 9. errors are JSON everywhere --------------------------------------------------------------


async def test_errors_are_json(api: Api, compliant_mp4: Path, tmp_path: Path) -> None:
    media_id = await api.add(compliant_mp4, "Errors")
    resp = await api.get("/api/nothing-here")
    assert error_of(resp) == (404, "not_found")
    resp = await api.get("/api/media/x/y/z")
    assert error_of(resp) == (404, "not_found")
    assert error_of(await api.get("/nothing-here", key=None)) == (404, "not_found")
    assert error_of(await api.get("/api/nothing-here", key=None)) == (401, "unauthorized")

    for method, path, allowed in (("PUT", "/api/media", {"GET"}),
                                  ("DELETE", "/api/media", {"GET"}),
                                  ("POST", f"/api/media/{media_id}", {"GET", "PATCH", "DELETE"}),
                                  ("GET", "/api/jobs/somejob/cancel", {"POST"}),
                                  ("PUT", f"/api/media/{media_id}/status", {"GET"})):
        resp = await api.call(method, path)
        assert error_of(resp) == (405, "method_not_allowed"), (method, path, resp.status)
        assert allowed <= {m.strip() for m in resp.headers["Allow"].split(",")}, resp.headers

    # Upload bodies that are not what the API takes.
    resp = await api.call("POST", "/api/media/upload", json={"title": "x"})
    assert error_of(resp) == (415, "unsupported_media_type")
    resp = await api.call("POST", "/api/media/upload",
                          data=aiohttp.FormData({"metadata": "{}"}, default_to_multipart=True))
    assert error_of(resp) == (400, "missing_file")
    for part, value, expected in (("metadata", "{oops", (400, "invalid_json")),
                                  ("processing", "[]", (400, "invalid_json")),
                                  ("metadata", '{"title": ""}', (422, "invalid_field")),
                                  ("processing", '{"quality": ["9000p"]}',
                                   (422, "invalid_field")),
                                  ("surprise", "x", (400, "invalid_multipart"))):
        form = aiohttp.FormData()
        form.add_field(part, value)
        form.add_field("file", io.BytesIO(compliant_mp4.read_bytes()), filename="a.mp4")
        resp = await api.call("POST", "/api/media/upload", data=form)
        assert error_of(resp) == expected, (part, value, resp.body)
    assert error_of(await api.call("POST", "/api/media/upload", data=file_form(b""))) == (
        422, "empty_file")
    # Refused uploads leave no media behind and no spool files.
    assert await api.ids("") == [media_id]
    uploads = api.origin.config.path(api.origin.config.library.uploads_dir)
    assert not [p for p in uploads.glob("multipart-*")]

    # Processing: bad settings, and a conflicting job.
    resp = await api.call("POST", f"/api/media/{media_id}/process", data=b"{nope")
    assert error_of(resp) == (400, "invalid_json")
    resp = await api.call("POST", f"/api/media/{media_id}/process", json={"bogus": 1})
    assert error_of(resp) == (422, "invalid_field")
    resp = await api.call("POST", "/api/jobs/nosuchjob/cancel")
    assert error_of(resp) == (404, "job_not_found")
    resp = await api.call("DELETE", f"/api/media/{media_id}/versions/7")
    assert error_of(resp) == (404, "version_not_found")
    resp = await api.call("DELETE", f"/api/media/{media_id}/versions/1")
    assert error_of(resp) == (409, "version_current")

    assert api.seen and all(status < 500 for _, _, status in api.seen)
