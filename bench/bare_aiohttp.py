"""The floor of the live benchmark: bare aiohttp answering GETs with fixed bodies.

    python bench/bare_aiohttp.py PORT LOOP NAME=FILE [NAME=FILE ...]

Serves each FILE's bytes at /NAME with the two headers the origin sends with a playlist or
a part (Content-Type, Cache-Control) and nothing else: no middleware, one route, no
authorization, no metrics. What any aiohttp application pays per request on this machine;
bench/live_bench.py runs it beside the origin. LOOP: asyncio or uvloop.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

TYPES = {".m3u8": "application/vnd.apple.mpegurl; charset=utf-8", ".m4s": "video/iso.segment"}


def main() -> None:
    port, loop = int(sys.argv[1]), sys.argv[2]
    bodies = {}
    for arg in sys.argv[3:]:
        name, path = arg.split("=", 1)
        bodies[name] = (Path(path).read_bytes(), TYPES[Path(name).suffix])

    async def answer(request: web.Request) -> web.Response:
        body, content_type = bodies[request.match_info["name"]]
        return web.Response(body=body, headers={"Content-Type": content_type,
                                                "Cache-Control": "no-cache"})

    app = web.Application()
    app.router.add_get("/{name}", answer)
    if loop == "uvloop":
        import uvloop

        uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
