"""Expressions of the definition language: JMESPath (https://jmespath.org/specification.html) with bounded
cost. Never Python ``eval``.

Bounds, all checked before anything is evaluated:

- an expression is at most ``MAX_EXPRESSION_CHARS`` characters and parses to at most ``MAX_NODES`` syntax
  nodes, nested at most ``MAX_DEPTH`` deep;
- multi-select lists/hashes (``[a, b]``, ``{a: a}``) copy references, so nesting them multiplies the work:
  the product of their widths along any path of the syntax tree is at most ``MAX_FANOUT``;
- the data searched (the context: trigger event, step outputs) is at most ``MAX_EXPRESSION_INPUT_BYTES`` as
  JSON, and a result larger than ``MAX_STEP_OUTPUT_BYTES`` is refused.

JMESPath has no loops, no recursion, no I/O and no access to Python objects: with the tree bounded and the
input bounded, one evaluation is bounded by (nodes * fan-out * input size).

Templates: a string value of a step input that is exactly ``${expr}`` becomes the expression's result (any
JSON value); ``${expr}`` inside a longer string is replaced by the result as text (JSON for non-strings).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import jmespath
from jmespath import exceptions as jmes_errors
from jmespath.parser import ParsedResult, Parser

from .constants import MAX_EXPRESSION_CHARS, MAX_EXPRESSION_INPUT_BYTES, MAX_STEP_OUTPUT_BYTES

MAX_NODES = 200
"""Syntax nodes of one parsed expression."""
MAX_DEPTH = 32
"""Nesting of one parsed expression's syntax tree."""
MAX_FANOUT = 64
"""Product of multi-select widths along any path of the syntax tree."""

TEMPLATE = re.compile(r"\$\{([^{}]*)\}")
"""``${expr}`` inside a string (the expression holds no braces; use JMESPath's ``[…]`` and literals)."""


class ExpressionError(Exception):
    """An expression that does not parse, breaks a bound, or fails on its data (``str(exc)`` says why)."""


def _walk(node: Any, depth: int, fanout: int, counts: list[int]) -> None:
    counts[0] += 1
    if counts[0] > MAX_NODES:
        raise ExpressionError(f"expression has more than {MAX_NODES} syntax nodes")
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression nests deeper than {MAX_DEPTH}")
    if not isinstance(node, dict):
        return
    children = node.get("children") or []
    if node.get("type") in ("multi_select_list", "multi_select_dict"):
        fanout *= max(1, len(children))
        if fanout > MAX_FANOUT:
            raise ExpressionError(f"nested multi-selects copy more than {MAX_FANOUT} times")
    for child in children:
        _walk(child, depth + 1, fanout, counts)


@lru_cache(maxsize=1024)
def compile_expression(text: str) -> ParsedResult:
    """Parse and check an expression once (cached).

    :raises ExpressionError: too long, a syntax error, or a bound of the module docstring broken."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    if not text.strip():
        raise ExpressionError("expression is empty")
    try:
        parsed = Parser().parse(text)
    except jmes_errors.JMESPathError as exc:
        raise ExpressionError(f"not a JMESPath expression: {str(exc).splitlines()[0][:200]}") from None
    _walk(parsed.parsed, 0, 1, [0])
    return parsed


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (``MAX_EXPRESSION_INPUT_BYTES`` + 1 for what cannot be encoded)."""
    try:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())
    except (TypeError, ValueError):
        return MAX_EXPRESSION_INPUT_BYTES + 1


def check_context(context: dict[str, Any]) -> None:
    """:raises ExpressionError: the context is larger than ``MAX_EXPRESSION_INPUT_BYTES``."""
    if json_size(context) > MAX_EXPRESSION_INPUT_BYTES:
        raise ExpressionError(f"expression data is larger than {MAX_EXPRESSION_INPUT_BYTES} bytes")


def evaluate(text: str, context: dict[str, Any], *, checked: bool = False) -> Any:
    """The value of expression ``text`` over ``context`` (``checked``: the caller checked the context's size).

    :raises ExpressionError: the expression is refused, fails on the data (a function given the wrong type)
        or gives a result over ``MAX_STEP_OUTPUT_BYTES``."""
    parsed = compile_expression(text)
    if not checked:
        check_context(context)
    try:
        result = parsed.search(context, options=jmespath.Options(dict_cls=dict))
    except jmes_errors.JMESPathError as exc:
        raise ExpressionError(f"expression failed: {str(exc).splitlines()[0][:200]}") from None
    if json_size(result) > MAX_STEP_OUTPUT_BYTES:
        raise ExpressionError(f"expression result is larger than {MAX_STEP_OUTPUT_BYTES} bytes")
    return result


def truthy(value: Any) -> bool:
    """JMESPath truth: false, null, empty string, list and object are false; everything else is true."""
    return not (value is None or value is False or value in ("", [], {}))


def template_expressions(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every ``(path, expression)`` of the templates in ``value`` (dicts and lists walked, dotted paths)."""
    found: list[tuple[str, str]] = []
    if isinstance(value, str):
        found += [(path, m.group(1)) for m in TEMPLATE.finditer(value)]
    elif isinstance(value, dict):
        for k, v in value.items():
            found += template_expressions(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += template_expressions(v, f"{path}.{i}" if path else str(i))
    return found


def render(value: Any, context: dict[str, Any]) -> Any:
    """``value`` with every template replaced (see the module docstring).

    :raises ExpressionError: an expression fails or the rendered value exceeds ``MAX_STEP_OUTPUT_BYTES``."""
    check_context(context)
    result = _render(value, context)
    if json_size(result) > MAX_STEP_OUTPUT_BYTES:
        raise ExpressionError(f"rendered input is larger than {MAX_STEP_OUTPUT_BYTES} bytes")
    return result


def _render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = TEMPLATE.fullmatch(value)
        if whole:
            return evaluate(whole.group(1), context, checked=True)

        def text(match: re.Match[str]) -> str:
            got = evaluate(match.group(1), context, checked=True)
            return got if isinstance(got, str) else json.dumps(got, separators=(",", ":"), default=str)

        return TEMPLATE.sub(text, value)
    if isinstance(value, dict):
        return {k: _render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    return value
