"""Decode ahead / encode behind: order, errors and early exits of the thread helpers."""

import threading
import time

import pytest

from pipeline.overlap import Behind, ahead
from tests.conftest import thread_names


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_ahead_keeps_order_and_raises_after_the_items_before(depth):
    def items():
        yield from range(5)
        raise KeyError("boom")

    got = []
    with pytest.raises(KeyError, match="boom"):
        for x in ahead(items(), depth):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]
    assert "reelsr-ahead" not in thread_names()


def test_ahead_runs_the_iterable_in_another_thread_and_stops_when_left():
    seen = []

    def items():
        for i in range(1000):
            seen.append(threading.current_thread().name)
            yield i

    gen = ahead(items(), 2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()  # leaving early: the producer stops instead of decoding the rest
    assert set(seen) == {"reelsr-ahead"}
    assert len(seen) < 10
    assert "reelsr-ahead" not in thread_names()


def test_behind_consumes_in_order_in_one_thread():
    out, where = [], set()

    def consume(x):
        time.sleep(0.001)
        out.append(x)
        where.add(threading.current_thread().name)

    with Behind(consume, 2) as b:
        for i in range(20):
            b.put(i)
    assert out == list(range(20))
    assert where == {"reelsr-behind"}


def test_behind_raises_the_consumers_error_and_drops_the_rest_on_an_error():
    def consume(x):
        if x == 3:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        with Behind(consume, 2) as b:
            for i in range(100):
                b.put(i)
    done = []
    with pytest.raises(ValueError, match="producer"):
        with Behind(lambda x: (time.sleep(0.01), done.append(x)), 4) as b:
            for i in range(10):
                b.put(i)
            raise ValueError("producer failed")
    assert len(done) < 10  # what was queued is dropped, not encoded
    assert "reelsr-behind" not in thread_names()


def test_an_interrupt_while_waiting_stops_the_consumer_before_leaving():
    """Ctrl-C while the caller waits for the queued items: the thread stops before the
    caller goes on (to close the encoder the thread writes into)."""
    import signal

    consumed = []

    def consume(x):
        time.sleep(0.2)
        consumed.append(x)

    main = threading.main_thread().ident
    timer = threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT))  # a real Ctrl-C, to the main thread
    # Python's own handler, as in a terminal: a shell gives a command it runs in the
    # background SIGINT ignored, and pytest started that way would never see this one
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with Behind(consume, 8) as b:
                for i in range(8):
                    b.put(i)
                timer.start()  # fires while __exit__ waits for the 8 items (1.6 s)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, inherited)
    left_at = len(consumed)
    assert "reelsr-behind" not in thread_names()
    time.sleep(0.5)
    assert len(consumed) == left_at < 8
