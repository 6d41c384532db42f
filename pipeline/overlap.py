"""Run the stages of a chunk's restore side by side: decoding ahead of the model in
one thread, encoding behind it in another.

PyAV releases the GIL inside FFmpeg (decode, encode, colour conversion) and torch
releases it inside its kernels, so the three stages overlap on separate cores while
each keeps its own order. Queues are bounded, so memory holds a few frames, never a
chunk. An error in either thread is raised in the caller; leaving early stops both.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put unless ``stop`` is set meanwhile; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def ahead(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a thread, at most ``depth`` items ahead of the consumer.

    The iterable is created and advanced only in that thread (a PyAV container it
    opens stays in one thread). An exception it raises is raised here, after the items
    before it; closing this generator early stops the thread. ``depth`` 0: no thread,
    the items are iterated here (for comparison).
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in items:
                if not _put(q, item, stop):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            _put(q, _Failed(e), stop)
            return
        _put(q, _END, stop)

    thread = threading.Thread(target=run, name="reelsr-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class Behind(Generic[T]):
    """Call ``consume(item)`` for every ``put`` item, in order, in a thread at most
    ``depth`` items behind (a context manager).

    Leaving the block normally waits for the last item; an error of ``consume`` is
    raised by the next ``put`` or on leaving. Leaving on an exception drops what is
    still queued. ``depth`` 0: no thread, ``put`` consumes the item itself.
    """

    def __init__(self, consume: Callable[[T], None], depth: int) -> None:
        self._consume = consume
        self._inline = depth <= 0
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._done = threading.Event()  # waited on, not join(): an interrupted join() can leave is_alive() False too early
        self._thread = threading.Thread(target=self._run, name="reelsr-behind", daemon=True)

    def _run(self) -> None:
        try:
            while True:
                item = self._q.get()
                if item is _END or self._stop.is_set():
                    return
                try:
                    self._consume(item)
                except BaseException as e:  # noqa: BLE001 - raised in the producer
                    self._error = e
                    self._stop.set()
                    return
        finally:
            self._done.set()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T) -> None:
        if self._inline:
            self._consume(item)
            return
        self._check()
        if not _put(self._q, item, self._stop):
            self._check()

    def __enter__(self) -> Behind[T]:
        if not self._inline:
            self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._inline:
            return
        if exc_type is not None:
            self._stop.set()
        try:
            # the thread ends on _END, on stop, or on an error; a full queue drains as it runs.
            # Not _put(): when stopped, _END must still be tried once, to wake a thread
            # blocked in get() on an empty queue
            while not self._done.is_set():
                try:
                    self._q.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        break
            while not self._done.wait(0.1):
                pass
        except BaseException:  # interrupted while waiting: stop the thread before leaving,
            self._stop.set()  # so no one else touches what it consumes into (an encoder)
            while not self._done.is_set():
                with contextlib.suppress(BaseException):
                    self._done.wait(0.1)
            raise
        finally:
            if self._done.is_set():
                self._thread.join()
        if exc_type is None:
            self._check()
