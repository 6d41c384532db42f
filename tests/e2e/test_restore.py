"""End to end: the real entry points (python -m jobs.restore / jobs.evaluate) on a real
local Ray cluster, on real clips; the restored files are opened with PyAV and the
reports with pyarrow."""

import json
import os
import re
import shutil

import av
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline import reports
from pipeline.config import build_config
from pipeline.media.probe import probe
from pipeline.models.weights import builtin
from tests.conftest import DATA, ROOT, frames_of, psnr, run_job, tag

pytestmark = pytest.mark.slow  # real Ray, jobs in subprocesses

FAST = ["--preset", "tiny", "--set", "train.steps=12", "--set", "metrics.sample_frames=3"]
TAG = tag(build_config("tiny", overrides=["train.steps=12", "metrics.sample_frames=3"]))  # OUT/<TAG>/: this config's videos


def frame_times(path):
    with av.open(path) as c:
        s = c.streams.video[0]
        return [float(f.pts * s.time_base) for f in c.decode(s)]


def stream_duration(path, kind):
    with av.open(path) as c:
        streams = getattr(c.streams, kind)
        if not streams:
            return None
        s = streams[0]
        pkts = [p for p in c.demux(s) if p.pts is not None]
        return float((max(p.pts + p.duration for p in pkts) - min(p.pts for p in pkts)) * s.time_base)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """An input folder with a nested layout, a non-video file and two real clips."""
    root = tmp_path_factory.mktemp("archive")
    shutil.copy(os.path.join(DATA, "bbb_320x180.mp4"), root / "bbb.mp4")
    (root / "reels" / "1994").mkdir(parents=True)
    shutil.copy(os.path.join(DATA, "carphone_gop10.mp4"), root / "reels" / "1994" / "carphone.mp4")
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def restored(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    proc = run_job("jobs.restore", "--input", str(archive), "--output", str(out), *FAST)
    return out, proc


def test_restore_folder_outputs(archive, restored):
    out, proc = restored
    for rel in ("bbb.mp4", os.path.join("reels", "1994", "carphone.mp4")):
        src, dst = str(archive / rel), str(out / TAG / rel)
        assert os.path.isfile(dst), proc.stdout
        si, oi = probe(src), probe(dst)
        assert (oi.width, oi.height) == (2 * si.width, 2 * si.height)
        st, ot = frame_times(src), frame_times(dst)
        assert len(ot) == len(st) == si.frames  # every frame in, exactly one out
        assert max(abs(a - b) for a, b in zip(st, ot, strict=True)) < 1e-3  # timestamps kept
        assert abs(oi.duration - si.duration) <= 1 / float(si.rate)
        assert oi.has_audio == si.has_audio
        if si.has_audio:
            assert abs(stream_duration(dst, "audio") - stream_duration(src, "audio")) <= 1 / float(si.rate)
    assert not os.path.exists(out / "notes.txt")
    # progress and summary
    assert "infer: " in proc.stdout and " fps" in proc.stdout and "train: step" in proc.stdout
    assert "2 restored, 0 failed, 0 skipped" in proc.stdout
    assert f"output:  {out / TAG / 'bbb.mp4'}" in proc.stdout
    assert not list((out / ".reelsr" / "work").rglob("*.mp4"))  # finished videos leave no chunks
    # one pool for the run: the second video reuses the actors the other stages left running
    m = re.search(r"(\d+) inference actor\(s\) started for 2 restored video\(s\) \(pool of (\d+)", proc.stdout)
    assert m and int(m.group(1)) < 2 * int(m.group(2)), proc.stdout[-3000:]


def test_reports_match_schemas(restored):
    out, _ = restored
    videos = ds.dataset(str(out / "reports" / "videos"), partitioning="hive").to_table().to_pylist()
    assert len(videos) == 2 and {v["status"] for v in videos} == {"restored"}
    assert len({v["run_id"] for v in videos}) == 1
    for v in videos:
        assert v["frames_in"] == v["frames_out"] > 0
        assert v["niqe_bicubic"] > 0 and v["niqe_finetuned"] > 0 and v["niqe_output"] > 0
        assert v["niqe_pretrained"] > 0 and v["pretrained"] == "builtin:edsr_2x16"  # the tiny preset's start
        assert v["pretrained_sha256"] == builtin("edsr_2x16").files[int(v["scale"])][1]  # and which file of it, exactly
        assert v["psnr_finetuned"] is None  # no reference: nothing to compare with
        assert v["train_steps"] == 12 and v["checkpoint_reused"] is False and os.path.isfile(v["checkpoint"])
        assert v["train_seconds"] > 0 and v["infer_seconds"] > 0 and v["total_seconds"] >= v["infer_seconds"]
        assert json.loads(v["config_json"])["train"]["steps"] == 12
        # the video's degradation is estimated and recorded (self-pairs follow it only with train.degrade=auto)
        assert v["est_codec"] == "h264" and v["est_bits_per_pixel"] > 0 and v["est_blur_sigma"] >= 0 and v["est_qp"] > 0
        # NIQE pooled over the sampled frames, inside its bootstrap interval
        assert v["niqe_output_lo"] <= v["niqe_output"] <= v["niqe_output_hi"]
    for table in reports.TABLES:
        for f in (out / "reports" / table).rglob("*.parquet"):
            assert pq.read_schema(f).remove_metadata() == reports.schema(table).remove_metadata()
    frames = reports.read_table(str(out), "frames").to_pylist()
    assert {f["method"] for f in frames} == {"bicubic", "pretrained", "finetuned", "output"}
    assert len(frames) == 2 * 4 * 3  # videos x methods x sampled frames


def test_a_run_leaves_crops_and_a_page(restored):
    """Each restored video has its before/after crops as PNG (bicubic | pretrained |
    restored, full output resolution), and the run a self-contained HTML page that the
    summary names: the videos, their metrics, the crops embedded, links to the outputs."""
    import base64

    from PIL import Image

    out, proc = restored
    pngs = sorted((out / "reports" / "crops" / TAG).rglob("*.png"))
    assert len(pngs) == 2 * 3, pngs  # videos x crops (metrics.crops 3 of the 3 sampled frames)
    for png in pngs:
        im = Image.open(png)
        assert im.format == "PNG" and im.size == (3 * 256 + 2 * 6, 256 + 22), im.size  # both outputs hold a 256 px square
    page = next((out / "reports" / "runs").glob("*.html"))
    assert f"page:    {page}" in proc.stdout
    text = page.read_text()
    assert "bbb.mp4" in text and "reels/1994/carphone.mp4" in text and text.count("restored</span>") == 2
    assert 'href="../../' + TAG + '/bbb.mp4"' in text  # relative: the folder can move
    embedded = [base64.b64decode(s.split('"')[0]) for s in text.split("src=\"data:image/png;base64,")[1:]]
    assert len(embedded) == 6 and {e for e in embedded} == {p.read_bytes() for p in pngs}
    assert "NIQE" in text and "fine-tuned" in text


def test_rerun_skips_and_a_new_config_writes_beside(archive, restored):
    """The same job again restores nothing; another encoding config restores again,
    beside the first results, reusing the fine-tuned checkpoint (same model and training)."""
    out, _ = restored
    first = {p: p.stat().st_mtime_ns for p in (out / TAG).rglob("*.mp4")}
    proc = run_job("jobs.restore", "--input", str(archive), "--output", str(out), *FAST)
    assert "0 restored, 0 failed, 2 skipped" in proc.stdout and "train:" not in proc.stdout
    rows = reports.read_table(str(out), "videos").to_pylist()
    latest = [r for r in rows if r["run_id"] == max(r["run_id"] for r in rows)]
    assert sorted(r["status"] for r in latest) == ["skipped", "skipped"]
    assert all(r["restored_run_id"] in {x["run_id"] for x in rows if x["status"] == "restored"} for r in latest)
    assert all(r["pretrained_sha256"] is None for r in latest)  # the restoring run's row has it

    proc = run_job("jobs.restore", "--input", str(archive / "bbb.mp4"), "--output", str(out), *FAST, "--set", "media.crf=14")
    assert "reusing fine-tuned checkpoint" in proc.stdout and "train: step" not in proc.stdout
    new_tag = tag(build_config("tiny", overrides=["train.steps=12", "metrics.sample_frames=3", "media.crf=14"]))
    assert new_tag != TAG and probe(str(out / new_tag / "bbb.mp4")).frames == probe(str(archive / "bbb.mp4")).frames
    assert {p: p.stat().st_mtime_ns for p in (out / TAG).rglob("*.mp4")} == first  # the first results untouched
    rows = reports.read_table(str(out), "videos").to_pylist()
    latest = max(rows, key=lambda r: r["run_id"])
    assert latest["checkpoint_reused"] is True and latest["status"] == "restored"
    assert latest["pretrained_sha256"] == builtin("edsr_2x16").files[2][1]  # from the reused checkpoint's provenance


def test_evaluate_fills_psnr_ssim_and_pretrained(restored, tmp_path):
    """jobs.evaluate: bicubic-downscaled input, restored with a starting checkpoint,
    compared with the original; and --no-finetune restores with that checkpoint as is."""
    out, _ = restored
    ckpt = str(next((out / "checkpoints").rglob("carphone.mp4.*.pt")))
    hr = os.path.join(DATA, "carphone_gop10.mp4")
    proc = run_job("jobs.evaluate", "--input", hr, "--output", str(tmp_path / "eval"), "--scale", "2", *FAST, "--set", f"model.pretrained={ckpt}")
    row = reports.read_table(str(tmp_path / "eval"), "videos").to_pylist()[0]
    assert row["status"] == "restored", proc.stdout
    assert (row["width"], row["height"]) == (88, 72)
    for m in ("bicubic", "pretrained", "finetuned", "output"):
        assert 20 < row[f"psnr_{m}"] < 60 and 0.5 < row[f"ssim_{m}"] <= 1, row
        assert row[f"niqe_{m}"] > 0
    # the starting model (tiny base, then fine-tuned on this clip at full size) must beat bicubic
    assert row["psnr_pretrained"] > row["psnr_bicubic"] + 0.5
    # the evaluation input has a keyframe every second: several chunks
    assert row["chunks"] >= 2
    assert "PSNR bicubic" in proc.stdout

    proc = run_job("jobs.restore", "--input", hr, "--output", str(tmp_path / "nf"), "--no-finetune", *FAST, "--set", f"model.pretrained={ckpt}")
    row = reports.read_table(str(tmp_path / "nf"), "videos").to_pylist()[0]
    assert row["status"] == "restored" and row["train_steps"] is None and row["niqe_finetuned"] is None
    assert row["niqe_pretrained"] > 0 and row["niqe_output"] > 0 and "skipped (--no-finetune)" in proc.stdout
    assert row["model_used"] == "pretrained" and "--no-finetune" in row["model_reason"]

    # frames whose self-pairs would be smaller than train.min_pair_side are not fine-tuned on, and the report says why
    proc = run_job("jobs.restore", "--input", hr, "--output", str(tmp_path / "small"), *FAST, "--set", "train.min_pair_side=80")
    row = reports.read_table(str(tmp_path / "small"), "videos").to_pylist()[0]
    assert row["status"] == "restored" and row["model_used"] == "pretrained" and row["checkpoint"] is None, proc.stdout
    assert "self-pairs' inputs are 88x72 px, below train.min_pair_side=80" in row["model_reason"]
    assert "train: skipped: frames too small" in proc.stdout and "train: step" not in proc.stdout
    assert row["niqe_finetuned"] is None and row["niqe_output"] > 0

    # frames with less fine detail than train.min_detail (the estimate, read after the training frames are extracted)
    # are not fine-tuned on either
    proc = run_job("jobs.restore", "--input", hr, "--output", str(tmp_path / "soft"), *FAST, "--set", "train.min_detail=100")
    row = reports.read_table(str(tmp_path / "soft"), "videos").to_pylist()[0]
    assert row["status"] == "restored" and row["model_used"] == "pretrained" and row["checkpoint"] is None, proc.stdout
    assert 0 < row["est_detail"] < 100 and f"holds {row['est_detail']:.3f} of the next octave's energy, below train.min_detail=100" in row["model_reason"]
    assert "train: skipped: frames too soft" in proc.stdout and "train: step" not in proc.stdout


def test_bad_input_fails_alone_and_scratch_start_warns(tmp_path):
    """A broken file fails alone; a reference that does not fit fails the measurements,
    not the restored video; a missing reference fails its video before any work."""
    arch, ref = tmp_path / "in", tmp_path / "ref"
    arch.mkdir()
    ref.mkdir()
    shutil.copy(os.path.join(DATA, "carphone_gop10.mp4"), arch / "good.mp4")
    shutil.copy(os.path.join(DATA, "bbb_320x180.mp4"), ref / "good.mp4")  # wrong size for 352x288
    shutil.copy(os.path.join(DATA, "carphone_gop10.mp4"), arch / "noref.mp4")
    (arch / "broken.mp4").write_bytes(os.urandom(4096))
    shutil.copy(arch / "broken.mp4", ref / "broken.mp4")
    out = tmp_path / "out"
    proc = run_job("jobs.restore", "--input", str(arch), "--output", str(out), "--reference", str(ref), *FAST,
                   "--set", "model.pretrained=scratch", check=False)
    assert "WARNING: model.pretrained=scratch" in proc.stdout
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {r["video"]: r for r in reports.read_table(str(out), "videos").to_pylist()}
    assert rows["broken.mp4"]["status"] == "failed" and "broken.mp4" in rows["broken.mp4"]["error"]
    assert rows["noref.mp4"]["status"] == "failed" and "reference not found" in rows["noref.mp4"]["error"]
    good = rows["good.mp4"]
    assert good["status"] == "restored" and os.path.isfile(good["output"])
    assert good["error"].startswith("metrics failed") and "sizes do not match" in good["error"]
    assert good["psnr_bicubic"] is None
    assert "1 restored, 2 failed" in proc.stdout
    assert "Traceback" not in proc.stdout and "ray::" not in rows["broken.mp4"]["error"]  # the reason, not a remote traceback
    # nothing half-made is left: no chunks, no partial outputs
    assert not list((out / ".reelsr" / "work").rglob("*.mp4"))
    assert not [p for p in out.rglob("*") if ".partial" in p.name or ".tmp" in p.name]


def test_cli_errors_are_clear(tmp_path):
    proc = run_job("jobs.restore", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "input not found" in proc.stderr
    # a preset without shipped weights and no model.pretrained: refused before any work, saying where weights come from
    proc = run_job("jobs.restore", "--input", DATA, "--output", str(tmp_path / "o"), "--preset", "full", "--scale", "4", check=False)
    assert proc.returncode == 2 and "no starting weights for EDSR 32x256 res_scale 0.1 x4" in proc.stderr and "edsr_x4-4f62e9ef.pt" in proc.stderr
    assert not (tmp_path / "o").exists()
    proc = run_job("jobs.restore", "--input", DATA, "--output", str(tmp_path / "o"), "--set", "train.steps=-1", check=False)
    assert proc.returncode == 2 and "train.steps must be >= 1, got -1" in proc.stderr
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: {steps: 3\n")
    proc = run_job("jobs.restore", "--input", DATA, "--output", str(tmp_path / "o"), "--config", str(bad_yaml), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "bad.yaml" in proc.stderr
    # a starting checkpoint of another architecture is a config error, before any work
    tiny = os.path.join(ROOT, "pipeline", "data", "weights", "edsr_2x16_x2.pt")
    proc = run_job("jobs.restore", "--input", DATA, "--output", str(tmp_path / "o"), "--set", f"model.pretrained={tiny}", check=False)
    assert proc.returncode == 2 and "is EDSR 2x16 x2, the config asks for EDSR 16x32 x2" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_a_new_frame_rate_keeps_the_duration_the_audio_and_the_source_frames(tmp_path):
    """--fps 2x: twice the frames at twice the rate, the same duration, the source's audio
    packets unchanged; the frames at the source's times are the source frames restored,
    the others new frames between them."""
    from pipeline.metrics.resize import bicubic_resize_uint8

    src = os.path.join(DATA, "bbb_320x180.mp4")
    out = tmp_path / "out"
    proc = run_job("jobs.restore", "--input", src, "--output", str(out), "--fps", "2x",
                   "--preset", "tiny", "--set", "metrics.sample_frames=3", "--no-finetune")
    fast = out / tag(build_config("tiny", overrides=["metrics.sample_frames=3", "media.fps=2x", "train.finetune=false"])) / "bbb_320x180.mp4"
    assert fast.is_file(), proc.stdout[-3000:]
    si, oi = probe(src), probe(str(fast))
    assert "assemble: 25.000 -> 50.000 fps" in proc.stdout
    assert oi.frames == 2 * si.frames and oi.rate == 2 * si.rate and (oi.width, oi.height) == (2 * si.width, 2 * si.height)
    times = frame_times(str(fast))
    assert max(abs(t - i / 50) for i, t in enumerate(times)) < 1e-3  # every 1/50 s from the start
    assert abs(oi.duration - si.duration) <= 1 / float(oi.rate)
    with av.open(src) as a, av.open(str(fast)) as b:  # the audio is the source's, packet for packet
        pa = [bytes(p) for p in a.demux(a.streams.audio[0]) if p.size]
        pb = [bytes(p) for p in b.demux(b.streams.audio[0]) if p.size]
    assert pa == pb
    source, new = frames_of(src), frames_of(str(fast))
    up = [bicubic_resize_uint8(f, (2 * si.height, 2 * si.width)) for f in source]
    assert min(psnr(new[2 * i], up[i]) for i in range(len(up))) > 30  # source times: the source frame, restored
    moving = [i for i in range(len(up) - 1) if psnr(up[i], up[i + 1]) < 35]
    assert moving  # (the clip pans)
    for i in moving:  # in between: a new frame, nearer the source frames either side than they are to each other
        mid = new[2 * i + 1]
        assert min(psnr(mid, new[2 * i]), psnr(mid, new[2 * i + 2])) < 60
        assert psnr(mid, new[2 * i]) + psnr(mid, new[2 * i + 2]) > 2 * psnr(new[2 * i], new[2 * i + 2])
    row = pq.read_table(next((out / "reports" / "videos").rglob("*.parquet"))).to_pylist()
    assert any(r["status"] == "restored" and r["fps"] == 25 and r["fps_out"] == 50 and r["frames_out"] == 100 and r["niqe_output"] for r in row)
