"""Strict JSON: every fault of the input is InvalidJSON, never another exception."""

from __future__ import annotations

import pytest

from novapulse_runtime.jsonstrict import InvalidJSON, dumps, loads

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"a": NaN}', "invalid JSON"),
        (b'{"a": Infinity}', "invalid JSON"),
        (b'{"a": -Infinity}', "invalid JSON"),
        (b'{"a": 1e999}', "out of range"),
        (b'{"a": [-1e999]}', "out of range"),
        (b'{"a": 1E+0309}', "out of range"),
        ('{"a": 1e400}', "out of range"),
        (b'{"a": 1' + b"0" * 309 + b".0}", "out of range"),
        (b'{"a": -1' + b"0" * 210 + b"e99}", "out of range"),
        (bytearray(b'{"a": {"b": [1.5e308, 1e309]}}'), "out of range"),
        (b'"\\ud800"', "invalid JSON"),
        (b"\xff", "invalid JSON"),
        (b"[" * 60000 + b"]" * 60000, "invalid JSON"),
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
    ],
)
def test_faults_are_invalid_json(raw: bytes | str, why: str) -> None:
    with pytest.raises(InvalidJSON, match=why):
        loads(raw)


def test_good_json_round_trips() -> None:
    doc = {"a": [1, 2.5, None, True], "é": "ü", "n": {"x": -0.0}}
    assert loads(dumps(doc)) == doc
    assert loads(dumps(doc).encode()) == doc


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"x": float("-inf")}, {"s": {1, 2}}])
def test_dumps_refuses_what_strict_parsers_refuse(bad: object) -> None:
    with pytest.raises(InvalidJSON):
        dumps(bad)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1.7976931348623157e308, "b": -1e99, "c": 1e-400}',
        b'{"big_int": 1' + b"0" * 400 + b"}",  # an integer stays an int: never infinite
        b'{"digits": 1.' + b"0" * 400 + b"1}",
        '{"text": "e999 1e999 is only text"}',
    ],
)
def test_numbers_in_range_and_text_that_looks_like_a_number_parse(raw: bytes | str) -> None:
    assert isinstance(loads(raw), dict)


def test_every_infinity_is_found_however_deep_it_sits() -> None:
    """The finiteness walk looks at every value of every object and array: random documents with a number
    out of range somewhere are refused exactly when the standard library's parser reads an infinity."""
    import json
    import math
    import random

    rng = random.Random(15)
    numbers = ["1", "-0.5", "1e308", "1e309", "-1E+400", "2.5e-999", "9" * 320, "9" * 320 + ".0", '"1e999"']

    def document(depth: int) -> str:
        if depth > 4 or rng.random() < 0.3:
            return rng.choice(numbers)
        items = [document(depth + 1) for _ in range(rng.randrange(0, 4))]
        if rng.random() < 0.5:
            return "[" + ",".join(items) + "]"
        return "{" + ",".join(f'"k{i}":{v}' for i, v in enumerate(items)) + "}"

    def infinite(value: object) -> bool:
        if isinstance(value, float):
            return not math.isfinite(value)
        if isinstance(value, dict):
            return any(infinite(v) for v in value.values())
        if isinstance(value, list):
            return any(infinite(v) for v in value)
        return False

    seen = 0
    for _ in range(3000):
        text = document(0)
        if infinite(json.loads(text)):
            seen += 1
            with pytest.raises(InvalidJSON, match="out of range"):
                loads(text)
        else:
            assert loads(text) == json.loads(text)
    assert 300 < seen < 2700  # both kinds of document were tried
