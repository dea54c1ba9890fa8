"""Every service's OpenAPI document is self-contained and says what the process does (issue 10)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from novapulse_devkit.testing import ServiceProcess, TokenIssuer

from .conftest import PREFIXES, start_api

pytestmark = pytest.mark.e2e


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), ref
        assert part in node, f"dangling {ref}"
        node = node[part]
    return node


@pytest.mark.parametrize("service", sorted(PREFIXES))
async def test_every_ref_resolves_and_statuses_are_real(
    service: str, spawn: Callable[..., ServiceProcess], token_issuer: TokenIssuer, names: str
) -> None:
    api = await start_api(service, spawn, token_issuer, names)
    async with aiohttp.ClientSession() as http:
        async with http.get(api.openapi_url) as r:
            assert r.status == 200
            doc = await r.json()
        refs = set(_refs(doc))
        assert refs, "a document with no $ref proves nothing"
        dangling = []
        for ref in sorted(refs):
            try:
                _resolve(doc, ref)
            except AssertionError:
                dangling.append(ref)
        assert dangling == []
        # query parameters name their enums through components, with no null alternative
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                for param in op.get("parameters", []):
                    assert {"type": "null"} not in param["schema"].get("anyOf", []), (path, method, param)
                assert "503" in op["responses"], (path, method)
                # OPTIONS advertises exactly the documented methods of the path
                url = api.process.url + path.replace("{", "x").replace("}", "x")
                async with http.options(url) as r:
                    assert r.status == 204, (path, await r.text())
                    allowed = {m.strip() for m in r.headers["Allow"].split(",")}
                assert allowed == {m.upper() for m in ops} | {"OPTIONS"}, path
