"""A fault-injecting HTTP reverse proxy for the S3 tests (stdlib only).

It listens on a free loopback port in front of the moto server (tests/s3server.py) and forwards
every request (method, path and query, headers, body) to it, streaming the answer back. A test
can then make a seeded share of the requests fail the way real object stores do (500
InternalError, 503 SlowDown, 403 AccessDenied, MinIO's 507 XMinioStorageFull, 400
EntityTooLarge) or have object downloads cut off halfway, and check that clients retry, give up
or report the way they should:

    with FaultProxy(s3_server.endpoint) as proxy:
        proxy.fail(share=0.3, statuses=(500, 503), methods={"PUT"})
        client = boto3.client("s3", endpoint_url=proxy.endpoint, ...)
        ...
        assert proxy.injected[503] > 0

Request bodies arrive with Content-Length or `Transfer-Encoding: chunked`; they are read whole
(de-chunked at the HTTP layer only, so an aws-chunked payload and its x-amz-decoded-content-length
pass unchanged) and forwarded with a Content-Length. The Host header is kept as the client signed it.
"""

from __future__ import annotations

import collections
import http.client
import random
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# S3-style (code, message) for the statuses the proxy can answer by itself.
ERRORS = {
    400: ("EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size."),
    403: ("AccessDenied", "Access Denied"),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
    507: ("XMinioStorageFull", "Storage backend has reached its minimum free drive threshold. Please delete a few objects to proceed."),
}
RESET = "reset"  # send the headers and half the body of a GET object answer, then drop the connection

# Headers that describe one hop, not the message (RFC 9110 7.6.1); Expect is answered here.
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "expect"}


class FaultProxy:
    """The proxy: construct with the upstream endpoint, start(), point clients at .endpoint."""

    def __init__(self, upstream: str) -> None:
        u = urlsplit(upstream)
        if u.scheme != "http":
            raise ValueError(f"only http upstreams are supported, not {upstream!r}")
        self.upstream = (u.hostname, u.port or 80)
        self.requests = 0  # requests seen, injected or not
        self.injected: collections.Counter = collections.Counter()  # status (or "reset") -> count
        self.faults: list[tuple[str, str, int | str]] = []  # (method, path, status) of each injected fault
        self._lock = threading.Lock()
        self._rule: tuple | None = None
        self._server: ThreadingHTTPServer | None = None
        self._conns: set[socket.socket] = set()
        self._every = self._seen = self._turn = 0
        self._reset_due = False

    # ------------------------------------------------------------------ control

    def fail(self, share: float = 0.2, statuses=(500, 503), seed: int = 0, methods=None, key_contains: str | None = None,
             every: int = 0) -> FaultProxy:
        """From now on answer a pseudo-random `share` (1.0: all) of the matching requests with
        one of `statuses` (HTTP codes from ERRORS, or "reset"), without forwarding them. `methods`
        (e.g. {"PUT", "POST"}) and `key_contains` (a substring of the path) narrow the match;
        "reset" only hits GETs of objects, other requests it draws are forwarded untouched.
        `every=N` instead: every Nth matching request fails, with `statuses` in turn, whatever
        order concurrent clients send in ("reset" waits for the next GET of an object)."""
        statuses = tuple(statuses)
        bad = [s for s in statuses if s != RESET and s not in ERRORS]
        if bad or not statuses:
            raise ValueError(f"unsupported statuses {bad or statuses}; choose from {sorted(ERRORS)} or {RESET!r}")
        methods = {m.upper() for m in ([methods] if isinstance(methods, str) else methods)} if methods else None
        with self._lock:
            self._rule = (share, statuses, random.Random(seed), methods, key_contains)
            self._every, self._seen, self._turn, self._reset_due = every, 0, 0, False
        return self

    def clear(self) -> None:
        """Stop injecting (counters are kept)."""
        with self._lock:
            self._rule = None

    def _draw(self, method: str, path: str) -> int | str | None:
        """Count the request and decide its fault, if any."""
        with self._lock:
            self.requests += 1
            if self._rule is None:
                return None
            share, statuses, rng, methods, key_contains = self._rule
            if (methods and method not in methods) or (key_contains and key_contains not in path):
                return None
            # Path-style addressing: /bucket/key; a GET with no key is a listing.
            object_get = method == "GET" and path.split("?")[0].strip("/").count("/") >= 1
            if self._every:
                self._seen += 1
                if self._reset_due and object_get:
                    status = RESET
                    self._reset_due = False
                elif self._seen % self._every:
                    return None
                else:
                    status = statuses[self._turn % len(statuses)]
                    self._turn += 1
                    if status == RESET and not object_get:
                        self._reset_due = True
                        return None
            else:
                if rng.random() >= share:
                    return None
                status = rng.choice(statuses)
                if status == RESET and not object_get:
                    return None
            self.injected[status] += 1
            self.faults.append((method, path, status))
            return status

    # ------------------------------------------------------------------ lifecycle

    @property
    def endpoint(self) -> str:
        assert self._server, "not started"
        return "http://%s:%d" % self._server.server_address[:2]

    def start(self) -> FaultProxy:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="faultproxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:  # also end the kept-alive client connections, whose threads outlive the server
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._conns.clear()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    """One client connection (kept alive across requests), with its own upstream connection."""

    protocol_version = "HTTP/1.1"  # keep-alive; also makes the base class answer Expect: 100-continue
    timeout = 120  # idle kept-alive connections end eventually
    _up: http.client.HTTPConnection | None = None

    @property
    def proxy(self) -> FaultProxy:
        return self.server.proxy  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        with self.proxy._lock:
            self.proxy._conns.add(self.connection)

    def finish(self) -> None:
        super().finish()
        with self.proxy._lock:
            self.proxy._conns.discard(self.connection)
        if self._up:
            self._up.close()

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # (ignored) trailer fields
                pass
            return b"".join(parts)
        n = self.headers.get("Content-Length")
        return self.rfile.read(int(n)) if n is not None else None

    def _serve(self) -> None:
        body = self._body()  # read whole first, so that an injected answer leaves the connection usable
        fault = self.proxy._draw(self.command, self.path)
        if fault is None or fault == RESET:
            self._forward(body, reset=fault == RESET)
        else:
            self._error(fault)

    def _error(self, status: int) -> None:
        code, message = ERRORS[status]
        rid = uuid.uuid4().hex[:16].upper()
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
               f"<Resource>{self.path.split('?')[0]}</Resource><RequestId>{rid}</RequestId></Error>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(xml)))
        self.send_header("x-amz-request-id", rid)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(xml)

    def _request(self, body: bytes | None) -> http.client.HTTPResponse:
        drop = HOP | {h.strip().lower() for h in self.headers.get("Connection", "").split(",")}
        for attempt in (0, 1):
            if self._up is None:
                self._up = http.client.HTTPConnection(*self.proxy.upstream, timeout=60)
            reused = self._up.sock is not None
            try:
                self._up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                if "Host" not in self.headers:
                    self._up.putheader("Host", "%s:%d" % self.proxy.upstream)
                for k, v in self.headers.items():
                    if k.lower() not in drop and k.lower() != "content-length":
                        self._up.putheader(k, v)
                if body is not None:
                    self._up.putheader("Content-Length", str(len(body)))
                self._up.endheaders(body)
                return self._up.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._up.close()
                if attempt or not reused:  # a stale kept-alive upstream socket gets one retry (the body is buffered)
                    raise
        raise AssertionError("unreachable")

    def _forward(self, body: bytes | None, reset: bool = False) -> None:
        try:
            resp = self._request(body)
        except OSError as e:
            if self._up:
                self._up.close()
            msg = f"faultproxy: upstream unreachable: {e}".encode()
            self.send_response(502)
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        drop = HOP | {h.strip().lower() for h in (resp.getheader("Connection") or "").split(",")}
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in drop]
        bodiless = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        data = None
        if not bodiless and resp.getheader("Content-Length") is None:  # upstream chunked or close-delimited
            data = resp.read()
            headers.append(("Content-Length", str(len(data))))
        self.send_response_only(resp.status, resp.reason)  # upstream's own Date and Server pass through
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if reset:  # half the body, then hang up on both sides
            self.wfile.write(data[: len(data) // 2] if data is not None else resp.read((resp.length or 0) // 2))
            self._up.close()
            self._up = None
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if data is not None:
            self.wfile.write(data)
        else:
            while chunk := resp.read(1 << 16):
                self.wfile.write(chunk)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _serve
