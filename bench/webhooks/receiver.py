"""The benchmark's webhook receiver, run in its own process (so it does not share a core's event loop with
what is measured). A module of its own: ``multiprocessing``'s spawn cannot import a target defined in a
package's ``__main__`` (it skips re-importing ``*.__main__``), so the receiver would never start."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from aiohttp import web

from novapulse_runtime import jsonstrict


def _receiver(port: int) -> None:
    arrivals: list[tuple[str, float, float]] = []

    async def hook(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        if name.startswith("hang"):
            await asyncio.sleep(3600)
        now = time.time()
        sent = now
        if body[:1] == b"{":
            stamp = jsonstrict.loads(body).get("timestamp")
            if isinstance(stamp, str):
                sent = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        arrivals.append((name, now, now - sent))
        return web.Response(status=200)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(arrivals)

    async def reset(_: web.Request) -> web.Response:
        arrivals.clear()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{name}", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)
