"""Decode ahead / encode behind: order, errors and early exits of the thread helpers,
and a chunk restored with the stages overlapped equals one restored in turn."""

import os
import threading
import time

import av
import numpy as np
import pytest
import torch

from pipeline import inference
from pipeline.actors import restore_chunk
from pipeline.config import InferConfig, MediaConfig
from pipeline.media.chunks import DamagedChunk, plan_chunks
from pipeline.media.probe import probe
from pipeline.models.edsr import EDSR
from pipeline.overlap import Behind, ahead

DATA = os.path.join(os.path.dirname(__file__), "data")


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


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
    assert "reelsr-ahead" not in _threads()


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
    assert "reelsr-ahead" not in _threads()


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
    assert "reelsr-behind" not in _threads()


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
    assert "reelsr-behind" not in _threads()
    time.sleep(0.5)
    assert len(consumed) == left_at < 8


def _frames(path):
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_overlapped_chunk_equals_the_stages_in_turn(tmp_path):
    clip = os.path.join(DATA, "carphone_gop10.mp4")
    info = probe(clip)
    chunk = plan_chunks(info, 20)[1]
    torch.manual_seed(0)
    model = inference.prepare(EDSR(scale=2, n_resblocks=2, n_feats=16), torch.device("cpu"))
    outs = {}
    for depth in (0, 2):
        path = str(tmp_path / f"d{depth}.mp4")
        n = restore_chunk(model, 2, info, chunk, path, MediaConfig(preset="veryfast"), InferConfig(batch_size=3), torch.device("cpu"), None, depth)
        assert n == chunk.frames
        outs[depth] = _frames(path)
    assert len(outs[2]) == chunk.frames
    for a, b in zip(outs[0], outs[2], strict=True):
        assert np.array_equal(a, b)


def test_a_damaged_chunk_still_fails_with_its_count(tmp_path):
    from tests.corpus import make_corrupt_middle

    src = make_corrupt_middle(str(tmp_path / "corrupt_middle.mp4"))
    info = probe(src)
    model = inference.prepare(EDSR(scale=2, n_resblocks=1, n_feats=8), torch.device("cpu"))
    damaged = []
    for chunk in plan_chunks(info, 10):
        try:
            restore_chunk(model, 2, info, chunk, str(tmp_path / f"c{chunk.index}.mp4"), MediaConfig(preset="ultrafast"),
                          InferConfig(), torch.device("cpu"), None)
        except DamagedChunk as e:
            damaged.append(e.frames)
    assert sum(damaged) == 3
    assert "reelsr-ahead" not in _threads() and "reelsr-behind" not in _threads()


def test_auto_batch_and_tiles():
    cpu = torch.device("cpu")
    assert inference.auto_batch(cpu, 64, 144, 176) == 1  # 6.5 MB per feature map: one frame at a time
    assert inference.auto_batch(cpu, 16, 144, 176) == 2
    assert inference.auto_batch(cpu, 16, 36, 44) == 8  # capped
    assert inference.auto_batch(torch.device("cuda"), 64, 360, 640) == inference.GPU_BATCH
    assert inference.tile_for(300, 16, cpu, 64, 4, 1, None) == 300  # a set tile is kept
    auto = inference.tile_for(0, 16, cpu, 64, 4, 1, None, (1080, 1920))
    assert 64 <= auto <= inference.CPU_TILE and auto % 64 == 0
    # GPU tiles from free memory: more memory or a smaller batch -> larger tiles; 1080p x4
    # on 40 GiB free in bf16 with batch 8 must be tiled, a 640x360 frame must not
    bf16 = torch.bfloat16
    t40 = inference.fit_tile(40 << 30, 64, 4, 8, bf16)
    assert 360 < t40 < 1920 and t40 % 64 == 0
    # a batch's full-size results are taken off the memory first: 1080p x4 at batch 8 is 4.8 GB
    assert inference.output_bytes(8, 1080, 1920, 4) == 8 * 1080 * 1920 * 16 * 3 * 6
    assert inference.fit_tile(80 << 30, 64, 4, 8, bf16) > t40 > inference.fit_tile(40 << 30, 64, 4, 16, bf16)
    assert inference.fit_tile(1 << 20, 64, 4, 8, bf16) == 64  # never below 64 px
    assert inference.fit_tile(-5, 64, 4, 8, bf16) == 64  # less than nothing left: still 64


def test_activation_estimate_covers_the_largest_maps():
    """The per-pixel estimate that sizes GPU tiles is at least what the widest layer
    holds at once (its input and output), at x2 and x4."""
    for scale in (2, 4):
        model = EDSR(scale=scale, n_resblocks=2, n_feats=16).eval()
        sizes = []
        hooks = [m.register_forward_hook(lambda _m, i, o, sizes=sizes: sizes.append(i[0].numel() + o.numel()))
                 for m in model.modules() if not list(m.children())]
        with torch.inference_mode():
            model(torch.rand(1, 3, 32, 32))
        for h in hooks:
            h.remove()
        assert max(sizes) * 4 / (32 * 32) <= inference.activation_bytes_per_pixel(16, scale, None)
