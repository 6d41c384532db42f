"""Reports on S3 read back through pyarrow, and SQL over them (jobs.query)."""

import pytest

from jobs.query import EXAMPLES, query
from pipeline import reports
from pipeline.storage import Store
from tests.conftest import video_row


def test_reports_on_s3_through_boto3_and_pyarrow(s3_env):
    root = f"s3://{s3_env.bucket()}/restored"
    store = Store()
    assert reports.read_table(root, "videos").num_rows == 0  # no reports yet: empty, not an error
    reports.write(root, "videos", "r1", [video_row()], store)
    reports.write(root, "videos", "r2", [video_row(video="b.mp4", status="failed", error="bad", frames_out=None)], store)
    keys = s3_env.keys(root.split("/")[2], "restored/reports/videos/")
    assert len(keys) == 2 and all("/run_id=r" in k and k.endswith(".parquet") for k in keys)
    tbl = reports.read_table(root, "videos", store)  # pyarrow's S3 filesystem
    assert sorted(tbl.column("run_id").to_pylist()) == ["r1", "r2"]
    assert reports.read_table(root, "videos", store, run_id="r2").column("video").to_pylist() == ["b.mp4"]
    got = query(root, "SELECT video, error FROM videos WHERE run_id = (SELECT max(run_id) FROM videos) AND status = 'failed'")
    assert got.to_pylist() == [{"video": "b.mp4", "error": "bad"}]
    for _, sql in EXAMPLES.values():  # every README example runs on real reports
        query(root, sql)
    with pytest.raises(ValueError, match="SQL error"):
        query(root, "SELECT nope FROM videos")


def test_a_location_without_reports_is_an_error(tmp_path):
    from tests.conftest import run_job

    (tmp_path / "empty").mkdir()
    proc = run_job("jobs.query", "--reports", str(tmp_path / "empty"), "--example", "runs", check=False)
    assert proc.returncode == 2 and "no reports under" in proc.stderr and "(0 rows)" not in proc.stdout
    reports.write(str(tmp_path / "out"), "videos", "r1", [video_row()])
    assert query(str(tmp_path / "out"), "SELECT count(*) AS n FROM videos").to_pylist() == [{"n": 1}]
