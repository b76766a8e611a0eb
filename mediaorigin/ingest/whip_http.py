"""WHIP over HTTP (RFC 9725), and the "go live" page that uses it from a browser.

    POST    /live/{id}/whip            application/sdp offer -> 201 answer, Location, ETag
    DELETE  /live/{id}/whip/{session}  end the session (same bearer token) -> 200
    PATCH   /live/{id}/whip/{session}  405: no trickle ICE, no ICE restart
    OPTIONS /live/{id}/whip            204, Accept-Post: application/sdp
    GET     /live/{id}/golive          the publishing page (the token never goes in a URL)

Errors are JSON `{"error": {"code", "message"}}` like the rest of the origin.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from ..errors import ClientError
from ..origin.http import json_error
from .frames import PublishRefused
from .whip import WhipEndpoint

MAX_OFFER_BYTES = 64 * 1024  # a browser offer is 3-10 KB; anything near this is not one
SDP = "application/sdp"
CHALLENGE = 'Bearer realm="mediaorigin"'


def add_whip_routes(app: web.Application, endpoint_key: web.AppKey[WhipEndpoint]) -> None:
    """Route WHIP to the WhipEndpoint stored at `endpoint_key` (in this app or a parent)."""

    async def post_offer(request: web.Request) -> web.Response:
        if request.content_type != SDP:
            return json_error(415, "unsupported_media_type", f"the offer must be {SDP}")
        token = _bearer(request)
        if token is None:
            return _unauthorized()
        sdp = await _read_offer(request)
        if isinstance(sdp, web.Response):
            return sdp
        live_id = request.match_info["id"]
        try:
            session_id, answer = await request.config_dict[endpoint_key].offer(
                live_id, token, sdp, request.remote or "")
        except PublishRefused as e:
            return json_error(409 if e.code == "already_live" else 403, e.code, e.message)
        except ClientError as e:
            return json_error(e.status, e.code, e.message)
        location = f"{request.rel_url.raw_path.rstrip('/')}/{session_id}"
        return web.Response(status=201, text=answer, content_type=SDP,
                            headers={"Location": location, "ETag": f'"{session_id}"'})

    async def delete_session(request: web.Request) -> web.Response:
        token = _bearer(request)
        if token is None:
            return _unauthorized()
        endpoint = request.config_dict[endpoint_key]
        live_id, session_id = request.match_info["id"], request.match_info["session"]
        matches = endpoint.token_matches(live_id, session_id, token)
        if matches is None:
            return json_error(404, "not_found", "no such WHIP session")
        if not matches:
            return json_error(403, "forbidden", "not the token this session was published with")
        if not await endpoint.delete(live_id, session_id):
            return json_error(404, "not_found", "no such WHIP session")
        return web.Response(status=200)

    async def patch_session(request: web.Request) -> web.Response:
        resp = json_error(405, "trickle_not_supported",
                          "trickle ICE and ICE restarts (PATCH) are not supported: "
                          "send every candidate in the offer")
        resp.headers["Allow"] = "DELETE"
        return resp

    async def options(request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Accept-Post": SDP, "Allow": "POST, OPTIONS"})

    app.router.add_post("/live/{id}/whip", post_offer)
    app.router.add_route("OPTIONS", "/live/{id}/whip", options)
    app.router.add_delete("/live/{id}/whip/{session}", delete_session)
    app.router.add_patch("/live/{id}/whip/{session}", patch_session)
    app.router.add_get("/live/{id}/golive", golive_page)


async def golive_page(request: web.Request) -> web.Response:
    """The browser publisher. It takes the token from its URL fragment (never sent to a
    server) or asks for it; nothing is interpolated into the page."""
    page = resources.files("mediaorigin").joinpath("web/golive.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html", headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _unauthorized() -> web.Response:
    resp = json_error(401, "unauthorized", "a bearer token (the stream key) is required")
    resp.headers["WWW-Authenticate"] = CHALLENGE
    return resp


async def _read_offer(request: web.Request) -> str | web.Response:
    """The offer's text, or the error response (413 too large, 400 not UTF-8)."""
    too_large = json_error(413, "too_large", f"an offer is at most {MAX_OFFER_BYTES} bytes")
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        return too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > MAX_OFFER_BYTES:
            return too_large
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return json_error(400, "bad_offer", "the offer is not UTF-8 text")
