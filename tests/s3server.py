"""A real S3-protocol server on loopback for the tests: moto's server mode, in a thread
of the test process, reached over HTTP by boto3, pyarrow and the Ray workers alike."""

from __future__ import annotations

import os
import socket
import uuid

# Fake credentials: the server accepts any; tests check this secret never leaks.
SECRET = "reelsr-test-secret-" + uuid.uuid4().hex[:12]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> S3Server:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def env(self) -> dict[str, str]:
        """The standard AWS variables pointing at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "AKIAREELSRTEST",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="AKIAREELSRTEST", aws_secret_access_key=SECRET)

    def bucket(self) -> str:
        name = "reelsr-" + uuid.uuid4().hex[:10]
        self.client().create_bucket(Bucket=name)
        return name

    def upload(self, path: str, bucket: str, key: str) -> None:
        self.client().upload_file(path, bucket, key)

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        out = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return out

    def download(self, bucket: str, key: str, path: str) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.client().download_file(bucket, key, path)
        return path
