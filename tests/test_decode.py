"""queue._decode: json.loads through the C scanner directly, the same values and the same errors."""

import json

import pytest
from hypothesis import given, strategies as st

from prismq_queue.queue import _decode

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(_json, st.sampled_from([(",", ":"), (", ", ": ")]), st.sampled_from(["", " ", "\n "]))
def test_same_value_as_json_loads(value, separators, around):
    text = around + json.dumps(value, separators=separators, ensure_ascii=False) + around
    assert _decode(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "x", "1 2", "{", "[1,]", "{\"a\" 1}", "nul"])
def test_same_error_as_json_loads(text):
    with pytest.raises(json.JSONDecodeError) as mine:
        _decode(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(mine.value) == str(theirs.value)
