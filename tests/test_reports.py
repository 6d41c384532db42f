"""Report writing is checked against schemas/: wrong rows never reach a file."""

import pyarrow.dataset as ds
import pytest

from pipeline import reports
from pipeline.orchestrate import EMPTY_METRICS


def video_row(**kw):
    row = {f["name"]: None for f in reports.schema_doc("videos")["fields"]}
    row.update(video="a.mp4", source="/in/a.mp4", status="restored", config_hash="abc", scale=2,
               total_seconds=1.5, config_json="{}", frames_in=10, frames_out=10, **EMPTY_METRICS)
    row.update(kw)
    return row


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
