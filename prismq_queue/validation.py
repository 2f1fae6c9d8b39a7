"""Validation: what the package accepts from its callers, checked once, before anything is written.

Queue and Worker check their arguments here and turn payloads and results into
the JSON text both backends store. Every refusal is the package's own
InvalidArgument (PayloadError for JSON), so a caller never sees a bare
TypeError, and nothing reaches the database that it could not give back as it was.
"""

from __future__ import annotations

import json
import math
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]  # typeshed omits the C half
from typing import Any

from .errors import InvalidArgument, PayloadError


def _unencodable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


if c_make_encoder is not None:
    # The C encoder called directly: the same output as json.dumps(separators=(",", ":"),
    # ensure_ascii=False, allow_nan=False), without a microsecond of Python-level set-up per
    # payload, which is a third of the cost of enqueue_many.
    _c_encode = c_make_encoder(None, _unencodable, encode_basestring, None, ":", ",", False, False, False)

    def _encode(value: Any) -> str:
        return "".join(_c_encode(value, 0))
else:  # pragma: no cover - CPython always has the C encoder
    _encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False,  # type: ignore[assignment]
                               default=_unencodable).encode

#: Deepest nesting of lists and dicts a payload or result may have. The C decoder
#: recurses once per level and fails near 1,000 levels at the default recursion
#: limit, less when called deep in a worker's stack; no real payload comes close.
MAX_NESTING = 256
_DEEP_TEXT = 2 * MAX_NESTING  # JSON text longer than this may nest deeper than MAX_NESTING
_CONTAINERS = (dict, list, tuple)


def _check_structure(value: Any, depth: int) -> None:
    """Refuse what JSON would not give back as it was: non-string keys, and nesting too deep to decode."""
    if depth > MAX_NESTING:
        raise ValueError(f"it nests more than {MAX_NESTING} levels deep (or refers to itself)")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                # JSON turns 1 into "1": {1: "a", "1": "b"} would come back as {"1": "b"}.
                raise ValueError(f"dict key {key!r} is not a string (JSON keys are strings)")
            if isinstance(item, _CONTAINERS):
                _check_structure(item, depth + 1)
    else:
        for item in value:
            if isinstance(item, _CONTAINERS):
                _check_structure(item, depth + 1)


def encode_checked(value: Any) -> str:
    """JSON text of `value` that both databases can store and decode back; ValueError/TypeError if not."""
    text = _encode(value)
    # Every dict writes a "{", and nesting n deep takes 2n characters: text with
    # neither holds no key to check and no depth to fear. A lone flat dict, the
    # usual payload, needs only its own keys checked: "".join does that in C.
    if "{" in text or len(text) > _DEEP_TEXT:
        if type(value) is dict and len(text) <= _DEEP_TEXT and text.count("{") == 1:
            try:
                "".join(value)
            except TypeError:
                _check_structure(value, 1)  # raises, naming the key
        elif isinstance(value, _CONTAINERS):
            _check_structure(value, 1)
    if not text.isascii():
        # A lone surrogate (a file name decoded with os.fsdecode) encodes to JSON
        # but not to UTF-8: neither database could store it.
        text.encode("utf-8")
    return text


def encode_json(value: Any, what: str) -> str:
    """JSON text of `value`, or PayloadError: payloads and results are JSON, never pickle."""
    try:
        return encode_checked(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise PayloadError(f"{what} cannot be stored as JSON: {encoding_problem(exc)}") from None


def encoding_problem(exc: BaseException) -> str:
    """Why encoding failed, in words for the PayloadError message."""
    if isinstance(exc, RecursionError):  # the encoder's own limit, below MAX_NESTING deep in a stack
        return f"it nests more than {MAX_NESTING} levels deep (or refers to itself)"
    return str(exc)


def storable_text(text: str) -> str:
    """`text` with what UTF-8 cannot hold (lone surrogates) written as backslash escapes."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_text(error: Any) -> str:
    """The text stored for a failed attempt: never raises, always storable."""
    try:
        if isinstance(error, str):
            text = error
        elif isinstance(error, BaseException):
            text = f"{type(error).__name__}: {error}"
        else:
            text = str(error)
    except Exception:  # an exception whose __str__ itself fails
        text = f"{type(error).__name__}: <error text unavailable: its str() raised>"
    return storable_text(text)


def check_seconds(name: str, value: Any, minimum: float = 0.0, allow_equal: bool = False) -> float:
    """`value` as float if it is a finite number of seconds above `minimum` (or equal, if allowed)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < minimum or (value == minimum and not allow_equal)):
        bound = ">=" if allow_equal else ">"
        raise InvalidArgument(f"{name} must be a finite number of seconds {bound} {minimum:g}, got {value!r}")
    return float(value)


def check_type(task_type: Any) -> str:
    """`task_type` if it is a non-empty string both databases can store; InvalidArgument if not."""
    if not isinstance(task_type, str) or not task_type.strip():
        raise InvalidArgument(f"task type must be a non-empty string, got {task_type!r}")
    if not task_type.isascii() and storable_text(task_type) is not task_type:
        raise InvalidArgument(f"task type {task_type!r} holds text that is not valid Unicode")
    return task_type


def check_int(name: str, value: Any) -> int:
    """`value` if it is an integer (not a bool) that fits the databases' 64-bit columns; InvalidArgument if not."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an integer, got {value!r}")
    if not -(2**63) <= value < 2**63:  # what both SQLite and PostgreSQL store
        raise InvalidArgument(f"{name} must fit in 64 bits, got {value!r}")
    return value
