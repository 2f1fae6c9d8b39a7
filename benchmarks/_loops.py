"""An event loop per benchmark: asv has no asyncio support, so setup makes a loop and the
benchmark calls ``run_until_complete`` on it."""

from __future__ import annotations

import asyncio
from typing import Any


def new_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def close_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    if loop is None or loop.is_closed():
        return
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def run(coro_or_fn, *args) -> Any:
    """Run a coroutine (or a coroutine function with args) on a fresh loop, then close it."""
    loop = new_loop()
    try:
        coro = coro_or_fn(*args) if callable(coro_or_fn) else coro_or_fn
        return loop.run_until_complete(coro)
    finally:
        close_loop(loop)
