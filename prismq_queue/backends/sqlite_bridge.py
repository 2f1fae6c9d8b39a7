"""The bridge between an asyncio event loop and one sqlite3 connection.

sqlite3 calls block, so the connection gets a thread of its own: the loop hands
it a whole function (a worker's acknowledge-recover-claim cycle, say) and awaits
the result, one hop across threads per function rather than per statement.
Requests run one at a time, in the order they were made.

A hop costs two cross-thread wake-ups (the request to the database thread, the
result back to the loop): about 0.1 ms on an idle machine, a hundred times the
cost of a short statement. So the bridge also lets the loop's own thread use
the connection, but only while no request is queued or running: then nothing
else touches the connection, and the order of requests is kept. Deciding
*which* functions may run there (short ones that cannot wait on a lock or a
disk) is the caller's business; see SQLiteBackend._call.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from typing import Any, Callable, Optional

_STOP = object()  # the request that ends the thread


class SQLiteBridge:
    """One sqlite3 connection and the thread that runs functions on it for an event loop."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str = "prismq-sqlite") -> None:
        self._connect = connect
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._pending = 0  # requests made and not yet answered on the loop: the thread may be using the connection
        self.connection: Optional[sqlite3.Connection] = None

    @property
    def idle(self) -> bool:
        """True while no request is queued or running: the loop's thread may use the connection itself."""
        return self._pending == 0 and self.connection is not None

    def on_its_thread(self) -> bool:
        """True when called from the connection's thread (from a function it runs)."""
        return threading.get_ident() == self._thread.ident

    async def open(self) -> sqlite3.Connection:
        """Start the thread and open the connection on it (opening touches the file: it may wait on the disk)."""
        self._thread.start()
        try:
            self.connection = await self.run(self._connect)
        except BaseException:
            self._requests.put(_STOP)
            raise
        return self.connection

    def run(self, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        """Run fn(*args) on the connection's thread, after every earlier request; await the result."""
        future = asyncio.get_running_loop().create_future()
        self._pending += 1
        self._requests.put((future, fn, args))
        return future

    async def close(self) -> None:
        """Close the connection on its thread, after every earlier request, and end the thread."""
        if not self._thread.is_alive():
            return
        connection, self.connection = self.connection, None
        try:
            if connection is not None:
                await self.run(connection.close)
        finally:
            self._requests.put(_STOP)

    def _serve(self) -> None:
        requests = self._requests
        while True:
            request = requests.get()
            if request is _STOP:
                return
            future, fn, args = request
            try:
                outcome = (True, fn(*args))
            except BaseException as exc:  # handed to the awaiting coroutine, whatever it is
                outcome = (False, exc)
            try:
                future.get_loop().call_soon_threadsafe(self._answer, future, outcome)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting for the answer any more

    def _answer(self, future: "asyncio.Future[Any]", outcome: tuple[bool, Any]) -> None:
        self._pending -= 1
        if future.cancelled():
            return  # the caller gave up waiting; the function ran all the same
        ok, value = outcome
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
