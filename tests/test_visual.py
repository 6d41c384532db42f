"""Before/after crops and the run's page (pipeline.visual), on real frames."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from pipeline import visual
from tests.conftest import bird


def test_the_crop_goes_where_the_detail_is():
    """A flat frame with one textured square: the crop window covers that square."""
    frame = np.full((300, 400, 3), 128, np.uint8)
    frame[180:260, 250:330] = bird()[:80, :80]
    top, left, h, w = visual.detail_box(frame, size=96)
    assert (h, w) == (96, 96) and top <= 180 and top + h >= 260 and left <= 250 and left + w >= 330
    assert visual.detail_box(frame[:50, :60], size=96) == (0, 0, 50, 60)  # smaller than a crop: the whole frame


def test_panels_are_cut_at_full_resolution_side_by_side():
    img = bird()
    other = 255 - img
    box = (10, 20, 64, 80)
    sheet = np.asarray(Image.open(io.BytesIO(visual.comparison_png([("bicubic", img), ("restored", other)], box))).convert("RGB"))
    bar, gap = 22, 6
    assert sheet.shape == (64 + bar, 2 * 80 + gap, 3)
    assert np.array_equal(sheet[bar:, :80], img[10:74, 20:100])  # no rescaling, no filtering
    assert np.array_equal(sheet[bar:, 80 + gap:], other[10:74, 20:100])
    with pytest.raises(ValueError, match="does not hold the crop"):
        visual.comparison_png([("small", img[:30, :30])], box)


def test_crops_pick_evenly_spaced_frames_with_a_reference_panel():
    frames = [np.roll(bird(), i, axis=1) for i in range(5)]
    outputs = {"bicubic": frames, "pretrained": frames, "finetuned": frames, "output": frames}
    pics = visual.crops([0, 10, 20, 30, 40], [0.0, 0.4, 0.8, 1.2, 1.6], outputs, refs=frames, count=3, size=64)
    assert [p["frame_index"] for p in pics] == [0, 20, 40] and pics[1]["time_s"] == 0.8
    im = Image.open(io.BytesIO(pics[0]["png"]))
    assert im.size == (4 * 64 + 3 * 6, 64 + 22)  # bicubic | pretrained | restored | ground truth
    assert visual.crops([], [], outputs, None) == [] and visual.crops([0], [0.0], outputs, None, count=0) == []


def _row(video, status, **kw):
    return {"video": video, "status": status, "scale": 2, "width": 176, "height": 144, "frames_in": 40, "frames_out": 40,
            "output": f"/out/x2-abc/{video}" if status == "restored" else None, "error": None, **kw}


def test_the_page_embeds_crops_escapes_names_and_links_relative():
    png = visual.comparison_png([("bicubic", bird())], (0, 0, 32, 32))
    pics = {"a.mp4": [{"frame_index": 3, "time_s": 0.1, "box": (0, 0, 32, 32), "png": png, "uri": "/out/reports/crops/x2-abc/a.mp4.frame000003.png"}]}
    rows = [_row("a.mp4", "restored", niqe_bicubic=5.5, niqe_output=4.25, niqe_output_lo=4.0, niqe_output_hi=4.5),
            _row("<script>x</script>.mp4", "failed", error="bad <data>")]
    page = visual.run_page("R1", "/out/reports/runs/R1.html", rows, pics, skipped=3, skipped_names=["old1.mp4", "old2.mp4"])
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;.mp4" in page and "bad &lt;data&gt;" in page
    assert 'href="../../x2-abc/a.mp4"' in page
    data = page.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(data) == png
    assert "4.25" in page and "[4.00, 4.50]" in page and "1 restored, 1 failed, 3 skipped" in page
    assert "old1.mp4, old2.mp4 and 1 more" in page
    s3 = visual.run_page("R1", "s3://b/out/reports/runs/R1.html", [_row("a.mp4", "restored", output="s3://b/out/x2-abc/a.mp4")], {})
    assert 'href="../../x2-abc/a.mp4"' in s3


def test_a_large_run_links_its_pictures(monkeypatch):
    monkeypatch.setattr(visual, "EMBED_BYTES", 0)
    png = visual.comparison_png([("bicubic", bird())], (0, 0, 32, 32))
    pics = {"a.mp4": [{"frame_index": 3, "time_s": 0.1, "box": (0, 0, 32, 32), "png": png, "uri": "/out/reports/crops/x2-abc/a.mp4.frame000003.png"}]}
    page = visual.run_page("R1", "/out/reports/runs/R1.html", [_row("a.mp4", "restored")], pics)
    assert "data:image" not in page and 'src="../crops/x2-abc/a.mp4.frame000003.png"' in page
