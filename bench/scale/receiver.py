"""The webhook target of the scale benchmark: a fast HTTP receiver in its own process (so it does not share
the load generator's event loop), remembering the ``data.seq`` of every delivery it gets."""

from __future__ import annotations

import json
import multiprocessing
from multiprocessing.process import BaseProcess

from aiohttp import web

from novapulse_runtime import jsonstrict

SEEN_PATH = "/seen"
"""``GET``: the JSON list of every ``seq`` received so far (deliveries without one are counted only)."""


def _serve(port: int) -> None:
    seen: set[str] = set()
    other = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal other
        body = await request.read()
        try:
            seq = jsonstrict.loads(body).get("data", {}).get("seq")
        except (ValueError, AttributeError):
            seq = None
        if isinstance(seq, str):
            seen.add(seq)
        else:
            other += 1
        return web.Response(status=204)

    async def report(_: web.Request) -> web.Response:
        return web.Response(text=json.dumps({"seqs": sorted(seen), "other": other}), content_type="application/json")

    app = web.Application()
    app.router.add_get(SEEN_PATH, report)
    app.router.add_post("/{name:.*}", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


def start_receiver(port: int) -> BaseProcess:
    """The receiver on ``127.0.0.1:port`` (a spawned process; the caller waits for the port and terminates
    it)."""
    proc = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True, name="receiver")
    proc.start()
    return proc
