"""The middleware every request passes through: CORS, JSON errors and request metrics.

One middleware with plain functions inside, not three middlewares: in aiohttp each layer
costs a coroutine, a partial and (with sub-applications) a wrapper per request, and at the
thousands of LL-HLS requests a second a live lecture draws, cost per request is what bounds
the viewers one process holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..api.tus import EXPOSED_HEADERS as TUS_EXPOSED_HEADERS
from ..api.tus import REQUEST_HEADERS as TUS_REQUEST_HEADERS
from ..errors import ClientError
from .http import json_error
from .metrics import OriginMetrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

# Playback (ranges, conditional requests) and the API, tus uploads included.
ALLOWED_HEADERS = ", ".join(("Range", "If-None-Match", "If-Modified-Since", "If-Range",
                             "Authorization", "Content-Type", *TUS_REQUEST_HEADERS))
EXPOSED_HEADERS = ", ".join(dict.fromkeys((
    "Content-Length", "Content-Range", "ETag", "Last-Modified", "Location",
    *TUS_EXPOSED_HEADERS)))
ALLOWED_METHODS = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"


def edge(metrics: OriginMetrics, cors_origins: str) -> Middleware:
    """The application's outermost middleware."""
    cors = Cors(cors_origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        response: web.StreamResponse | None = None
        try:
            response = cors.preflight(request)
            if response is None:
                try:
                    response = await handler(request)
                except web.HTTPException as e:
                    status = e.status
                    response = http_exception_response(e)  # or raises it again
                except (ConnectionResetError, TimeoutError):
                    raise
                except Exception as e:  # answered, and logged when ours
                    response = error_response(request, e)
            cors.decorate(request, response)
            status = response.status
            return response
        finally:
            metrics.record(request, status, time.perf_counter() - start, response)

    return middleware


def error_response(request: web.Request, error: Exception) -> web.Response:
    """A JSON error for what a handler raised; nothing internal leaks."""
    if isinstance(error, ClientError):
        resp = json_error(error.status, error.code, error.message)
        if error.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="mediaorigin"'
        return resp
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return json_error(500, "internal_error", "internal error")


def http_exception_response(e: web.HTTPException) -> web.Response:
    """aiohttp's own errors (404, 405, 413 ...) as our JSON errors; redirects, and errors
    already in JSON with headers of their own (tus), are raised again."""
    if e.status < 400 or e.content_type == "application/json":
        raise e
    resp = json_error(e.status, _code_for(e.status), e.reason)
    if "Allow" in e.headers:  # 405 must say what is allowed
        resp.headers["Allow"] = e.headers["Allow"]
    return resp


def _code_for(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed", 400: "bad_request",
            413: "too_large", 415: "unsupported_media_type"}.get(status, "http_error")


class Cors:
    """CORS for browser players on other origins: simple GETs, Range preflights."""

    def __init__(self, allowed: str) -> None:
        self.origins = {o.strip() for o in allowed.split(",") if o.strip()}
        self.any = "*" in self.origins

    def _allow(self, request: web.Request) -> str | None:
        if self.any:
            return "*"
        origin = request.headers.get("Origin")
        return origin if origin in self.origins else None

    def preflight(self, request: web.Request) -> web.Response | None:
        """The answer to a preflight request, or None for any other request."""
        if request.method != "OPTIONS" or not request.headers.get("Origin") or \
                not request.headers.get("Access-Control-Request-Method"):
            return None
        resp = web.Response(status=204)
        if self._allow(request):
            resp.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            resp.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            resp.headers["Access-Control-Max-Age"] = "86400"
        return resp

    def decorate(self, request: web.Request, resp: web.StreamResponse) -> None:
        allow = self._allow(request)
        if allow:
            resp.headers["Access-Control-Allow-Origin"] = allow
            resp.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            if allow != "*":
                resp.headers["Vary"] = "Origin"
