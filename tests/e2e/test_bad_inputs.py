"""The bad-input corpus (tests/corpus.py, generated from real clips) mixed into one archive
with good videos, restored by one real run: every file either restores correctly (odd
sizes, 10-bit, rotation, variable frame rate, interlaced) or fails with a clear reason in
its report row, and the good videos are always restored. The corpus run skips fine-tuning
(Ray Train's start-up per video would dominate); a second, fine-tuned run at x3 restores an
odd-sized video (output cut to even) and files with unicode and 254-byte names. The media
layer's handling of every case (training frames included) is checked without Ray too."""

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline import reports
from pipeline.config import build_config
from pipeline.media.chunks import DamagedChunk, decode_chunk, iter_training_frames, plan_chunks, scan
from pipeline.media.probe import by_fields, probe
from pipeline.metrics.resize import bicubic_resize_uint8
from tests import corpus
from tests.conftest import run_job, tag

SETS = ["train.finetune=false", "media.max_damaged=0.15", "metrics.sample_frames=2", "metrics.niqe=false", "media.chunk_frames=10", "limits.max_pixels=1000000",
        "limits.max_seconds=10", "videos_at_once=2"]
FAST = ["--preset", "tiny"] + [a for s in SETS for a in ("--set", s)]
TAG = tag(build_config("tiny", overrides=SETS))
DAMAGED = {"corrupt_middle.mp4": 3, "corrupt_flagged.mp4": 1, "corrupt_silent.mp4": 1, "corrupt_keyframe.mp4": 8}  # frames the scan finds
UNICODE = "Cafe\u0301 \u2615 \u6620\u50cf \u0444\u0438\u043b\u044c\u043c.mp4"  # combining accent, emoji-like, CJK, Cyrillic
LONG = "\u00e9" * 125 + ".mp4"  # 254 bytes in UTF-8: a legal name whose derived names (.json, .pt ...) would not be

# How each file of the corpus must end: ("restored", None) or ("failed", words of the reason)
EXPECTED = {
    "good.mp4": ("restored", None),
    "good_audio.mp4": ("restored", None),
    "empty.mp4": ("failed", "empty file (0 bytes)"),
    "random.mp4": ("failed", "cannot read container: not a video, or truncated/damaged"),
    "truncated.mp4": ("failed", "cannot read container: not a video, or truncated/damaged"),
    "truncated_faststart.mp4": ("failed", "truncated: 23 of the 40 video frames its index declares lie past the end of the file"),
    "corrupt_middle.mp4": ("restored", None),  # damaged frames concealed (media.damaged=conceal, the default)
    "corrupt_keyframe.mp4": ("failed", "8 of 40 frames do not decode (at 0.63-0.87 s): 20%, over media.max_damaged (15%)"),
    "corrupt_flagged.mp4": ("restored", None),
    "corrupt_silent.mp4": ("restored", None),
    "audio_only.mp4": ("failed", "no video stream (audio only)"),
    "still.mp4": ("failed", "a still image (png_pipe), not a video"),
    "tiny_1x1.mp4": ("failed", "1x1 is too small to restore x2"),
    "odd_175x143.mp4": ("restored", None),
    "odd_175x143_yuv420p.mp4": ("restored", None),
    "ten_bit.mp4": ("restored", None),
    "rotated.mp4": ("restored", None),
    "vfr.mp4": ("restored", None),
    "interlaced.mp4": ("restored", None),
    "big.mp4": ("failed", "1920x1080 (2,073,600 pixels) is over limits.max_pixels (1,000,000)"),
    "long.mp4": ("failed", "12.0 s long, over limits.max_seconds (10 s)"),
    "trimmed_start.mp4": ("restored", None),
    "anamorphic.mp4": ("restored", None),
    "subtitled.mp4": ("restored", None),
    "subtitled_mkv.mkv": ("restored", None),
    f"names/{UNICODE}": ("restored", None),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    arch = tmp_path_factory.mktemp("archive")
    corpus.build(str(arch))
    (arch / "names").mkdir()
    corpus.make_good(str(arch / "names" / UNICODE))
    out = tmp_path_factory.mktemp("out")
    proc = run_job("jobs.restore", "--input", str(arch), "--output", str(out), *FAST, check=False)
    rows = {r["video"]: r for r in reports.read_table(str(out), "videos").to_pylist()}
    return arch, out, proc, rows


@pytest.mark.slow
def test_every_input_ends_as_expected(run):
    arch, out, proc, rows = run
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert set(rows) == set(EXPECTED), sorted(set(rows) ^ set(EXPECTED))
    for name, (status, words) in EXPECTED.items():
        row = rows[name]
        assert row["status"] == status, (name, row["error"])
        if words:
            assert words in row["error"], (name, row["error"])
            assert row["output"] is None and not (out / TAG / name).exists()
        else:
            assert os.path.isfile(row["output"]) and row["frames_out"] == row["frames_in"], name
            assert row["frames_damaged"] == DAMAGED.get(name, 0), (name, row["frames_damaged"])
    restored = sum(s == "restored" for s, _ in EXPECTED.values())
    assert f"{restored} restored, {len(EXPECTED) - restored} failed, 0 skipped" in proc.stdout
    assert "Traceback" not in proc.stdout
    for name, row in sorted(rows.items()):
        print(f"{name[:40]:40s} {row['status']:9s} {row['error'] or ''}")


@pytest.mark.slow
def test_damaged_videos_are_concealed_and_say_so(run):
    """The scan finds the damaged frames before anything is trained; each is put out as
    its stand-in, so the output has every frame at the source's timestamps; the log and
    the summary say how many were concealed, and a video over media.max_damaged fails
    before its fine-tune."""
    arch, _, proc, rows = run
    assert rows["corrupt_keyframe.mp4"]["frames_damaged"] == 8 and rows["corrupt_keyframe.mp4"]["train_seconds"] is None
    assert "[corrupt_middle.mp4] scan: 3 of 40 frames do not decode (at 0.43 s, 0.53 s, 0.60 s): each is concealed" in proc.stdout
    assert "corrupt_silent.mp4: 1 of 40 frames did not decode: each concealed by the nearest decoded frame" in proc.stdout
    for name in ("corrupt_middle.mp4", "corrupt_flagged.mp4", "corrupt_silent.mp4"):
        with av.open(rows[name]["output"]) as c:
            out = [p.pts * c.streams.video[0].time_base for p in c.demux(video=0) if p.size]
        with av.open(str(arch / name)) as c:
            src = [p.pts * c.streams.video[0].time_base for p in c.demux(video=0) if p.size]
        assert sorted(out) == sorted(src), name


@pytest.mark.parametrize("name", sorted(corpus.CASES))
def test_media_layer_on_the_corpus(tmp_path, name):
    """Without Ray: a file probe accepts decodes to exactly its frames at their own
    timestamps, the damaged ones (found by the scan) concealed; without the scan the
    damaged ones raise DamagedChunk with their count. Training frames of every policy
    come from it without raising (damaged packets skipped)."""
    path = corpus.CASES[name](str(tmp_path / name))
    try:
        info = probe(path)
    except ValueError as e:
        assert EXPECTED[name][0] == "failed" and EXPECTED[name][1] in str(e), (name, str(e))
        return
    scanned = scan(path, info)
    assert len(scanned.damaged) == DAMAGED.get(name, 0), (name, scanned.damaged)
    decoded, missing, lost = [], 0, 0
    for chunk in plan_chunks(info, 10):
        try:
            decoded.extend(pts for pts, _ in decode_chunk(path, chunk, info))
        except DamagedChunk as e:
            missing, lost = missing + e.missing, lost + e.frames
    assert len(decoded) + missing == info.frames, (name, len(decoded), missing)  # every frame out, or counted as lost
    assert (lost > 0) == name.startswith("corrupt"), (name, lost)
    concealed = [pts for chunk in plan_chunks(scanned, 10) for pts, _ in decode_chunk(path, chunk, scanned)]
    with av.open(path) as c:
        assert concealed == sorted(p.pts for p in c.demux(video=0) if p.size and not p.is_discard), name  # edit lists: shown frames
    for policy in ("iframes", "fps:5", "all"):
        got = list(iter_training_frames(path, policy, info))
        assert got and all(rgb.shape == (info.height, info.width, 3) for _, rgb in got), (name, policy)


def test_a_concealed_frame_is_its_nearest_decoded_neighbour(tmp_path):
    """corrupt_middle: packets 14-16 are garbage. Each damaged frame is put out as the
    picture of its stand-in (the nearest decoded frame), which lies in the same chunk or
    in the one before it."""
    path = corpus.make_corrupt_middle(str(tmp_path / "m.mp4"))
    info = scan(path, probe(path))
    stand_ins = dict(info.damaged)
    for min_frames in (10, 1000):  # stand-ins in the chunk itself, or decoded from another chunk
        frames = dict(f for chunk in plan_chunks(info, min_frames) for f in decode_chunk(path, chunk, info))
        for pts, near in stand_ins.items():
            assert np.array_equal(frames[pts], frames[near]) and pts != near
        assert len(frames) == 40


def test_packed_b_frames_come_out_in_display_order():
    """An AVI with MPEG-4 "packed B-frames" (a real DivX file): the decoder labels frames
    with a neighbour's timestamp (1, 2, 3, 5, 4, ...). Every frame comes out once, in
    order, and each is nearer to the next frame than the one after it is (display order,
    not decode order)."""
    path = os.path.join(os.path.dirname(__file__), "..", "data", "packed_b.avi")
    info = probe(path)
    with av.open(path) as c:
        raw = [f.pts for f in c.decode(video=0)]
    assert raw != sorted(raw)  # the labels the decoder gives
    assert scan(path, info).damaged == ()
    frames = [f for chunk in plan_chunks(info, 12) for f in decode_chunk(path, chunk, info)]
    assert [p for p, _ in frames] == sorted(raw)
    pics = [rgb.astype(np.float32) for _, rgb in frames]
    step = [np.abs(pics[i + 1] - pics[i]).mean() for i in range(len(pics) - 2)]
    skip = [np.abs(pics[i + 2] - pics[i]).mean() for i in range(len(pics) - 2)]
    assert all(a < b for a, b in zip(step, skip, strict=True))
    assert [t for t, _ in iter_training_frames(path, "all", info)] == [float((p - info.start_pts) * info.time_base) for p in sorted(raw)]


def _frames(path):
    with av.open(path) as c:
        s = c.streams.video[0]
        return [(f.pts * s.time_base, f.rotation, f.interlaced_frame, f.to_ndarray(format="rgb24")) for f in c.decode(s)]


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 10 * np.log10(255**2 / mse)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["odd_175x143.mp4", "odd_175x143_yuv420p.mp4", "ten_bit.mp4", "rotated.mp4", "vfr.mp4",
                                  "interlaced.mp4", "trimmed_start.mp4", "anamorphic.mp4"])
def test_unusual_videos_keep_timing_orientation_and_picture(run, name):
    """The restored video has every source frame at its source time, the source's display
    rotation, yuv420p (yuv420p10le from the 10-bit source), progressive frames, and the source's picture (its bicubic
    downscale against the decoded source, > 28 dB)."""
    arch, out, _, rows = run
    src, dst = _frames(str(arch / name)), _frames(rows[name]["output"])
    assert [t for t, *_ in dst] == [t for t, *_ in src]  # every frame, at its own time (VFR included)
    assert {r for _, r, *_ in dst} == {src[0][1]}  # same display rotation
    assert not any(i for _, _, i, _ in dst)  # progressive
    info, sinfo = probe(rows[name]["output"]), probe(str(arch / name))
    assert info.pix_fmt == ("yuv420p10le" if name == "ten_bit.mp4" else "yuv420p") and (info.width, info.height) == (2 * sinfo.width, 2 * sinfo.height)
    worst = min(_psnr(bicubic_resize_uint8(d[3], s[3].shape[:2]), s[3]) for s, d in zip(src, dst, strict=True))
    print(f"\n{name}: {sinfo.width}x{sinfo.height} {sinfo.pix_fmt} rot {sinfo.rotation} -> {info.width}x{info.height}, "
          f"{len(dst)} frames, worst frame {worst:.1f} dB against the source")
    assert worst > 28, (name, worst)
    row = rows[name]
    assert row["pix_fmt"] == sinfo.pix_fmt and row["rotation"] == sinfo.rotation and row["interlaced"] == (name == "interlaced.mp4")


@pytest.mark.slow
def test_restored_videos_keep_shape_subtitles_chapters_and_tags(run):
    """Through the whole run: the anamorphic video keeps its 16:11 pixels (shown at 16:9,
    as the source), and the subtitled ones their subtitle streams (mov_text in the mp4
    output, with their languages and cues), chapters and tags."""
    from tests import corpus

    arch, _, _, rows = run
    with av.open(rows["anamorphic.mp4"]["output"]) as c, av.open(str(arch / "anamorphic.mp4")) as s:
        assert c.streams.video[0].display_aspect_ratio == s.streams.video[0].display_aspect_ratio == Fraction(16, 9)
        assert (c.streams.video[0].width, s.streams.video[0].width) == (352, 176)
    for name in ("subtitled.mp4", "subtitled_mkv.mkv"):
        with av.open(rows[name]["output"]) as c:
            assert [(s.codec_context.name, s.metadata.get("language")) for s in c.streams.subtitles] == [("mov_text", "eng"), ("mov_text", "fra")]
            assert [ch["metadata"]["title"] for ch in c.chapters()] == [t for *_, t in corpus.CHAPTERS]
            assert c.metadata.get("title") == corpus.TAGS["title"]
            cues = [bytes(p)[2:].decode() for p in c.demux(c.streams.subtitles[0]) if p.size > 2]
        assert cues == [t for *_, t in corpus.CUES["eng"]], (name, cues)


def test_interlaced_chunks_equal_a_whole_decode(tmp_path):
    """Deinterlacing per chunk gives the frames of one pass over the whole video: each chunk
    starts decoding a GOP early, so its first frame has its real neighbour."""
    path = corpus.make_interlaced_gop10(str(tmp_path / "il.mp4"))
    info = probe(path)
    assert info.interlaced and len(info.keyframe_pts) == 4
    whole = list(decode_chunk(path, plan_chunks(info, 10**6)[0], info))
    chunked = [f for chunk in plan_chunks(info, 10) for f in decode_chunk(path, chunk, info)]
    assert [p for p, _ in chunked] == [p for p, _ in whole] and len(whole) == 40
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(chunked, whole, strict=True))


def test_field_mode_puts_out_every_field_at_its_own_time(tmp_path):
    """media.deinterlace=field on a 30 fps interlaced clip: one frame per field, 60 fps
    (each frame's two fields 1/60 s apart), chunked the same as in one pass; each field
    is a picture of its own (the two of a frame differ: motion kept)."""
    path = corpus.make_interlaced_gop10(str(tmp_path / "il.mp4"))
    info = probe(path)
    fields = by_fields(info)
    assert (fields.frames, fields.rate) == (2 * info.frames, 2 * info.rate)
    whole = list(decode_chunk(path, plan_chunks(fields, 10**6)[0], fields))
    chunked = [f for chunk in plan_chunks(fields, 10) for f in decode_chunk(path, chunk, fields)]
    assert [p for p, _ in chunked] == [p for p, _ in whole] and len(whole) == 80
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(chunked, whole, strict=True))
    times = [float((p - fields.start_pts) * fields.time_base) for p, _ in whole]
    assert times == pytest.approx([i / 60 for i in range(80)], abs=1e-6)
    assert min(np.abs(whole[i][1].astype(float) - whole[i + 1][1]).mean() for i in range(0, 80, 2)) > 1.0
    assert len(list(iter_training_frames(path, "all", fields))) == 80


@pytest.mark.slow
def test_an_interlaced_video_restored_one_frame_per_field(tmp_path):
    arch = tmp_path / "in"
    arch.mkdir()
    src = corpus.make_interlaced(str(arch / "il.mp4"))
    out = tmp_path / "out"
    sets = ["media.deinterlace=field", "train.finetune=false", "metrics.sample_frames=3", "metrics.niqe=false"]
    proc = run_job("jobs.restore", "--input", str(arch), "--output", str(out), "--preset", "tiny", *[a for s in sets for a in ("--set", s)])
    assert "interlaced: one frame per field, 60.000 fps" in proc.stdout
    row = reports.read_table(str(out), "videos").to_pylist()[0]
    assert row["status"] == "restored" and row["frames_in"] == 20 and row["frames_out"] == 40, row["error"]
    with av.open(row["output"]) as c:
        times = [f.pts * f.time_base for f in c.decode(video=0)]
    assert [float(t) for t in times] == pytest.approx([i / 60 for i in range(40)], abs=1e-4)
    assert probe(row["output"]).frames == 2 * probe(src).frames


@pytest.mark.slow
def test_x3_odd_size_under_a_long_unicode_name_fine_tuned(tmp_path):
    """Fine-tuned at x3: 175x143 becomes 525x429, and yuv420p needs even sides, so the
    last column and row go (524x428). The file's name is 254 bytes of unicode: it
    restores under that name (the Ray Train run is named in ASCII), and the names derived
    from it (done marker, checkpoint) are shortened with a hash to stay within 255 bytes."""
    arch = tmp_path / "in"
    (arch / "names").mkdir(parents=True)
    src = corpus.make_odd_175x143(str(arch / "names" / LONG))
    out = tmp_path / "out"
    sets = ["train.steps=4", "metrics.sample_frames=2", "scale=3"]
    run_job("jobs.restore", "--input", str(arch), "--output", str(out), "--preset", "tiny", *[a for s in sets for a in ("--set", s)])
    out_tag = tag(build_config("tiny", overrides=sets))
    row = reports.read_table(str(out), "videos").to_pylist()[0]
    assert row["status"] == "restored" and row["train_steps"] == 4, row["error"]
    assert row["output"] == str(out / out_tag / "names" / LONG)
    info = probe(row["output"])
    assert (info.width, info.height, info.frames) == (524, 428, probe(src).frames)
    assert row["niqe_output"] > 0  # measured on the cut frames
    derived = [p.name for p in (out / ".reelsr" / "done" / out_tag / "names").iterdir()] + [p.name for p in (out / "checkpoints" / "names").iterdir()]
    assert len(derived) == 2 and all(len(m.encode()) <= 255 and "~" in m for m in derived), derived
