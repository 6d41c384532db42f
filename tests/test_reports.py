"""Report writing is checked against schemas/: wrong rows never reach a file."""

import pyarrow.dataset as ds
import pytest

from pipeline import reports
from tests.conftest import video_row


def test_schema_files_cover_the_required_columns():
    names = set(reports.schema("videos").names) | {"run_id"}
    required = """run_id video output status error scale width height frames_in frames_out niqe_bicubic
    niqe_pretrained niqe_finetuned psnr_bicubic psnr_pretrained psnr_finetuned ssim_bicubic ssim_pretrained
    ssim_finetuned train_seconds infer_seconds total_seconds""".split()
    assert set(required) <= names
    for table in reports.TABLES:
        for f in reports.schema_doc(table)["fields"]:
            assert f["doc"], f"{table}.{f['name']} has no doc"


def test_write_and_read_back_hive_partitioned(tmp_path):
    reports.write(str(tmp_path), "videos", "r1", [video_row()])
    reports.write(str(tmp_path), "videos", "r2", [video_row(video="b.mp4", status="failed", error="bad", frames_out=None)])
    t = ds.dataset(str(tmp_path / "reports" / "videos"), partitioning="hive").to_table()
    assert sorted(t.column("run_id").to_pylist()) == ["r1", "r2"]
    assert reports.read_table(str(tmp_path), "videos").num_rows == 2
    assert not list((tmp_path / "reports").rglob(".*.tmp"))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bogus": 1}, "unknown columns \\['bogus'\\]"),
        ({"status": None}, "column 'status' may not be null"),
        ({"scale": "two"}, "do not fit the schema"),
    ],
)
def test_bad_rows_are_refused(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        reports.write(str(tmp_path), "videos", "r1", [video_row(**change)])
    assert not (tmp_path / "reports").exists() or not list((tmp_path / "reports").rglob("*.parquet"))


def test_missing_column_is_refused(tmp_path):
    row = video_row()
    del row["niqe_bicubic"]
    with pytest.raises(ValueError, match="missing columns \\['niqe_bicubic'\\]"):
        reports.write(str(tmp_path), "videos", "r1", [row])


def test_an_installed_package_writes_and_reads_reports(tmp_path):
    """The schemas ship as package data: a wheel installed outside the checkout (not in
    editable mode) writes and reads its reports."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ROOT, "-w", str(tmp_path / "whl")],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "whl").glob("reelsr-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, capture_output=True)
    code = ("import pipeline, pipeline.reports as r; from tests_row import row; "
            "r.write('out', 'videos', 'r1', [row]); print(pipeline.__file__, r.read_table('out', 'videos').num_rows)")
    (tmp_path / "tests_row.py").write_text(f"row = {video_row()!r}\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path / 'site'}:{tmp_path}"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    where, rows = out.stdout.split()
    assert where.startswith(str(tmp_path / "site")) and rows == "1"
