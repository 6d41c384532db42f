"""The fault-injecting proxy (tests/faultproxy.py) in front of the moto server: transparent when
idle (boto3 and pyarrow alike), and its injected S3 errors and cut-off downloads are what clients see."""

import os
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ResponseStreamingError

from tests.faultproxy import FaultProxy
from tests.s3server import SECRET


@pytest.fixture
def proxy(s3_server):
    with FaultProxy(s3_server.endpoint) as p:
        yield p


def client(proxy, s3_server, retries=0):
    """A boto3 client through the proxy. botocore's max_attempts counts retries: total attempts = retries + 1."""
    env = s3_server.env()
    return boto3.client("s3", endpoint_url=proxy.endpoint, region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"mode": "standard", "max_attempts": retries}))


def test_transparent_for_boto3_and_pyarrow(proxy, s3_server, tmp_path):
    from pyarrow import fs

    bucket, c = s3_server.bucket(), client(proxy, s3_server)
    c.put_object(Bucket=bucket, Key="small", Body=b"hello")
    assert c.get_object(Bucket=bucket, Key="small")["Body"].read() == b"hello"
    assert c.head_object(Bucket=bucket, Key="small")["ContentLength"] == 5
    big = os.urandom(9 << 20)  # over boto3's 8 MiB threshold: a multipart upload, ranged downloads
    (tmp_path / "big").write_bytes(big)
    c.upload_file(str(tmp_path / "big"), bucket, "dir/big")
    c.download_file(bucket, "dir/big", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == big
    assert {o["Key"] for o in c.list_objects_v2(Bucket=bucket)["Contents"]} == {"small", "dir/big"}
    c.delete_object(Bucket=bucket, Key="small")  # a 204

    # Arrow's C++ SDK uploads with Transfer-Encoding: chunked and an aws-chunked body with a trailing checksum.
    env = s3_server.env()
    afs = fs.S3FileSystem(endpoint_override=proxy.endpoint.split("://")[1], scheme="http", region=env["AWS_DEFAULT_REGION"],
                          access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"])
    with afs.open_output_stream(f"{bucket}/arrow.bin") as out:
        out.write(big[:3_000_001])
    with afs.open_input_stream(f"{bucket}/arrow.bin") as f:
        assert f.read() == big[:3_000_001]
    assert s3_server.keys(bucket) == {"dir/big": len(big), "arrow.bin": 3_000_001}  # as stored, read around the proxy
    assert proxy.requests > 10 and not proxy.injected and not proxy.faults


def test_retries_ride_out_injected_5xx(proxy, s3_server):
    bucket, c = s3_server.bucket(), client(proxy, s3_server, retries=10)
    proxy.fail(share=0.3, statuses=(500, 503), seed=1)
    blobs = {f"k{i}": os.urandom(1000 + i) for i in range(30)}

    def round_trip(key):  # SlowDown counts as throttling: backoff up to 1 s, so run a few at once
        c.put_object(Bucket=bucket, Key=key, Body=blobs[key])
        return c.get_object(Bucket=bucket, Key=key)["Body"].read() == blobs[key]

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(round_trip, blobs))
    assert proxy.injected[500] > 0 and proxy.injected[503] > 0 and set(proxy.injected) == {500, 503}
    assert len(proxy.faults) == sum(proxy.injected.values()) and {m for m, _, _ in proxy.faults} == {"PUT", "GET"}
    proxy.clear()
    assert s3_server.keys(bucket) == {k: len(v) for k, v in blobs.items()}


def test_every_nth_request_fails_in_turn(proxy, s3_server):
    """``every=N``: the Nth, 2Nth ... requests fail with the statuses in turn; a "reset" drawn
    on a request that is not an object GET waits for the next one."""
    bucket, c = s3_server.bucket(), client(proxy, s3_server, retries=10)
    c.put_object(Bucket=bucket, Key="k", Body=b"z" * 4000)
    proxy.fail(every=2, statuses=("reset", 500, 503))
    c.list_objects_v2(Bucket=bucket)  # 1st: passes
    c.list_objects_v2(Bucket=bucket)  # 2nd: a reset is due, but this is a listing: it passes, the reset waits
    body = c.get_object(Bucket=bucket, Key="k")["Body"]  # 3rd: an object GET: cut
    with pytest.raises(ResponseStreamingError):
        body.read()
    for _ in range(2):  # 4th: 500, retried (5th); 6th: 503, retried (7th)
        assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"z" * 4000
    assert proxy.injected == {"reset": 1, 500: 1, 503: 1}, proxy.injected


@pytest.mark.parametrize("status, code", [(403, "AccessDenied"), (507, "XMinioStorageFull"), (400, "EntityTooLarge")])
def test_injected_errors_reach_the_client(proxy, s3_server, status, code):
    bucket, c = s3_server.bucket(), client(proxy, s3_server, retries=3)
    proxy.fail(share=1.0, statuses=(status,), methods={"PUT"}, key_contains="/restored/")
    c.put_object(Bucket=bucket, Key="source/a", Body=b"kept")  # not matched: forwarded
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=bucket, Key="restored/a", Body=b"x" * 100_000)
    err = e.value.response
    assert err["Error"]["Code"] == code and err["ResponseMetadata"]["HTTPStatusCode"] == status
    assert SECRET not in str(e.value) and SECRET not in repr(err)
    assert proxy.faults == [("PUT", f"/{bucket}/restored/a", status)]  # not retried
    proxy.clear()  # the same kept-alive connection carries on
    c.put_object(Bucket=bucket, Key="restored/a", Body=b"y")
    assert s3_server.keys(bucket) == {"source/a": 4, "restored/a": 1}


def test_head_errors_have_no_body_and_resets_cut_downloads(proxy, s3_server, tmp_path):
    bucket, c = s3_server.bucket(), client(proxy, s3_server)
    data = os.urandom(1 << 20)
    c.put_object(Bucket=bucket, Key="v.mkv", Body=data)
    proxy.fail(share=1.0, statuses=(503,), methods={"HEAD"})
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket=bucket, Key="v.mkv")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    proxy.fail(share=1.0, statuses=("reset",))
    assert c.head_object(Bucket=bucket, Key="v.mkv")["ContentLength"] == len(data)  # resets only hit GETs of objects
    with pytest.raises(ResponseStreamingError, match="IncompleteRead"):  # a short body is an error, never silently truncated
        c.get_object(Bucket=bucket, Key="v.mkv")["Body"].read()
    proxy.fail(share=0.5, statuses=("reset",), seed=3)
    c.download_file(bucket, "v.mkv", str(tmp_path / "v.mkv"))  # s3transfer retries cut-off streams itself
    assert (tmp_path / "v.mkv").read_bytes() == data
    assert proxy.injected["reset"] >= 2 and proxy.injected[503] == 1
