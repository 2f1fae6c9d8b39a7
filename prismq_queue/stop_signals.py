"""StopSignals: SIGINT and SIGTERM stop every running Worker of the process, then reach the handler they replaced.

One handler per signal for the whole process, installed while any Worker runs and
removed (the previous handler put back) when the last one ends. Installing one per
Worker would not do: the event loop keeps a single handler per signal, so the last
Worker to start would be the only one a signal stops, and the application's own
handler would be lost for good when the first Worker ended.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
from typing import Any, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _is_interrupt_default(handler: Any) -> bool:
    """Handlers that only turn SIGINT into KeyboardInterrupt or a cancelled main task: a graceful stop replaces them."""
    if handler is signal.default_int_handler:
        return True
    # asyncio.run() (Python 3.11+) installs functools.partial(Runner._on_sigint, ...) for SIGINT.
    func = handler.func if isinstance(handler, functools.partial) else None
    return getattr(func, "__name__", None) == "_on_sigint" and "asyncio" in getattr(func, "__module__", "")


class StopSignals:
    """The process-wide registry of running Workers that a stop signal must reach."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: dict[Any, asyncio.AbstractEventLoop] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None  # the loop our handlers are installed on
        # signal -> (handler from signal.getsignal, handler the loop had for it or None)
        self._previous: dict[int, tuple[Any, Any]] = {}

    def add(self, worker: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Stop `worker` (running on `loop`) on SIGINT/SIGTERM; called from the loop's thread."""
        with self._lock:
            self._workers[worker] = loop
            if self._loop is None:
                self._install(loop)

    def discard(self, worker: Any) -> None:
        """Forget `worker`; the last Worker of the installing loop puts the previous handlers back."""
        with self._lock:
            self._workers.pop(worker, None)
            if self._loop is not None and all(loop is not self._loop for loop in self._workers.values()):
                self._uninstall()

    def _install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop_handlers = getattr(loop, "_signal_handlers", None)  # asyncio's, if it keeps them there
        for sig in STOP_SIGNALS:
            previous = signal.getsignal(sig)
            previous_loop = loop_handlers.get(sig) if isinstance(loop_handlers, dict) else None
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or a platform without loop signal handlers
            self._previous[sig] = (previous, previous_loop)
        if self._previous:
            self._loop = loop

    def _uninstall(self) -> None:
        loop, self._loop = self._loop, None
        previous, self._previous = self._previous, {}
        if loop is None or loop.is_closed():
            return
        loop_handlers = getattr(loop, "_signal_handlers", None)
        for sig, (handler, loop_handler) in previous.items():
            current = loop_handlers.get(sig) if isinstance(loop_handlers, dict) else None
            if current is not None and getattr(current, "_callback", None) != self._on_signal:
                continue  # the application installed another handler since: leave it
            try:
                loop.remove_signal_handler(sig)
                if loop_handler is not None and not loop_handler.cancelled():
                    loop.add_signal_handler(sig, loop_handler._callback, *loop_handler._args)
                elif handler is not None:
                    signal.signal(sig, handler)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def _on_signal(self, sig: int) -> None:
        with self._lock:
            workers = list(self._workers.items())
            previous, previous_loop = self._previous.get(sig, (None, None))
            here = self._loop
        for worker, loop in workers:
            if loop is here:
                worker.stop()
            elif not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(worker.stop)
                except RuntimeError:
                    pass  # its loop closed meanwhile: that worker has ended
        # Then whatever handled the signal before the workers started.
        if previous_loop is not None and not previous_loop.cancelled():
            previous_loop._callback(*previous_loop._args)
        elif callable(previous) and not (sig == signal.SIGINT and _is_interrupt_default(previous)):
            previous(sig, None)


#: the one registry of the process
stop_signals = StopSignals()
