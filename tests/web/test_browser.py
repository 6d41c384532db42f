"""The web app as a person uses it: a real server (``python -m jobs.serve``, restoring on a
local Ray) driven by headless Chromium (Debian's package, which ``make test`` installs)
through Playwright. One person logs in, uploads a clip, watches its progress, compares
before with after, downloads the restored video and sees it in the archive; a second
person cannot reach the first one's job; a script does the same through the API.

Screenshots of each page are written to ``$REELSR_SCREENSHOTS`` when it is set (the
docs' pictures are made that way: ``REELSR_SCREENSHOTS=docs/web pytest tests/web``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from pipeline.media.probe import probe
from pipeline.web import auth
from pipeline.web.app import open_db
from tests.conftest import DATA, ROOT, job_env
from tests.s3server import free_port

pytestmark = pytest.mark.slow
CLIP = os.path.join(DATA, "carphone_gop10.mp4")  # 176x144, 40 frames
FAST = ["--set", "train.steps=200", "--set", "metrics.sample_frames=3"]  # jobs.serve passes them to every restore; 200 steps keep the training stage and its ETA on the page for several of its 1 s polls under CI load


def chromium() -> str:
    path = os.environ.get("REELSR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("the browser test needs Chromium: `make browser` installs Debian's package (or set REELSR_CHROMIUM)")
    return path


class Server:
    """``python -m jobs.serve`` on a free port of this machine, as an administrator starts it."""

    def __init__(self, data) -> None:
        self.data, self.port = data, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(data / "server.log", "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "jobs.serve", "--data", str(data), "--port", str(self.port), *FAST],
                                     cwd=ROOT, env=job_env(), stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(240):
            try:
                httpx.get(self.base + "/login", timeout=2)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"the server exited: {(data / 'server.log').read_text()[-3000:]}") from None
                time.sleep(0.5)
        raise AssertionError("the server did not answer in 2 minutes")

    def stop(self) -> None:
        self.proc.terminate()  # SIGTERM, as a service manager stops it
        self.proc.wait(timeout=90)
        self.log.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """(base URL, {name: API token}, data folder) of a running server with users alice and bob."""
    data = tmp_path_factory.mktemp("serve")
    db = open_db(str(data))
    tokens = {name: auth.add_user(db, name, f"{name}-password") for name in ("alice", "bob")}
    server = Server(data)
    try:
        yield server.base, tokens, data
    finally:
        server.stop()


def api(base: str, token: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    r = httpx.request(method, base + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return r.status_code, r.content


def shot(page, name: str) -> None:
    folder = os.environ.get("REELSR_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)


def log_in(browser, base: str, name: str, screenshot: bool = False):
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 800})
    page = ctx.new_page()
    page.goto(base + "/")
    assert page.url.endswith("/login")
    page.fill("#name", name)
    page.fill("#password", f"{name}-password")
    if screenshot:
        shot(page, "login")
    page.click("#login")
    page.wait_for_url(base + "/")
    return ctx, page


def test_a_person_restores_a_clip_in_the_browser_and_another_cannot_see_it(live, tmp_path):
    from playwright.sync_api import sync_playwright

    base, tokens, _ = live
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            ctx, page = log_in(browser, base, "alice", screenshot=True)
            assert "No jobs yet" in page.inner_text("main")
            page.set_input_files("#video", CLIP)
            page.select_option("#scale", "2")
            page.select_option("#preset", "tiny")
            shot(page, "upload")
            t0 = time.monotonic()
            page.click("#upload")
            page.wait_for_url(f"{base}/jobs/*")
            job_id = page.url.rsplit("/", 1)[1]
            # live progress: the page polls the API and shows the stage, then the frames and an ETA
            seen = set()
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not page.locator("#download").count():
                text = page.locator("#progress").inner_text() if page.locator("#progress").count() else ""
                if " left" in text and "eta" not in seen:  # the first state with an ETA
                    shot(page, "progress")
                    seen.add("eta")
                seen.update(s for s in ("queued", "starting", "probing", "training", "restoring", "assembling", "measuring") if s in text)
                if "step " in text or " frames" in text:
                    seen.add("counts")
                page.wait_for_timeout(250)
            assert page.locator("#download").count(), f"not restored in time; last seen {seen}; status {page.inner_text('#status')}"
            upload_to_restored = time.monotonic() - t0
            assert {"training", "restoring", "counts", "eta"} <= seen, seen
            assert page.inner_text("#status") == "restored"
            # the comparison: bicubic over restored, at full output resolution, with a slider
            page.wait_for_load_state("networkidle")
            sizes = page.eval_on_selector_all(".compare img", "imgs => imgs.map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
            assert len(sizes) >= 2 and {alt for alt, *_ in sizes} == {"bicubic", "restored"} and all(w > 0 and h > 0 for _, w, h in sizes)
            page.eval_on_selector(".compare .slider", "s => { s.value = 20; s.dispatchEvent(new Event('input')); }")
            assert page.eval_on_selector(".compare .before", "b => b.style.width") == "20%"
            assert page.locator("#metrics").count() and "NIQE" in page.inner_text("#metrics")
            shot(page, "comparison")
            with page.expect_download() as dl:
                page.click("#download")
            saved = str(tmp_path / dl.value.suggested_filename)
            dl.value.save_as(saved)
            t_done = time.monotonic() - t0
            assert dl.value.suggested_filename == "carphone_gop10_x2.mp4"
            info, src = probe(saved), probe(CLIP)
            assert (info.width, info.height, info.frames) == (2 * src.width, 2 * src.height, src.frames)
            page.click("text=archive")
            assert "carphone_gop10.mp4" in page.inner_text("#archive") and "restored" in page.inner_text("#archive")
            shot(page, "archive")
            # a script reads the same job through the API, and gets the same file
            status, body = api(base, tokens["alice"], f"/api/jobs/{job_id}")
            job = json.loads(body)
            assert status == 200 and job["status"] == "restored" and job["progress"]["stage"] == "done" and job["metrics"]["niqe_output"] > 0
            assert job["model_used"] in ("finetuned", "pretrained") and "held-out self-pair L1" in job["model_reason"]
            assert job["metrics"]["flicker_output"] >= 0 and job["metrics"]["flicker_bicubic"] >= 0
            status, video = api(base, tokens["alice"], f"/api/jobs/{job_id}/video")
            assert status == 200 and video == open(saved, "rb").read()
            # bob: no trace of alice's job, by page, picture, download or API
            ctx_b, page_b = log_in(browser, base, "bob")
            assert "No jobs yet" in page_b.inner_text("main")
            for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/video", f"/jobs/{job_id}/crops/0/restored.png"):
                assert page_b.goto(base + path).status == 404, path
            assert api(base, tokens["bob"], f"/api/jobs/{job_id}")[0] == 404
            assert api(base, tokens["bob"], f"/api/jobs/{job_id}", "DELETE")[0] == 404
            assert api(base, tokens["alice"], f"/api/jobs/{job_id}")[0] == 200
            ctx_b.close()
            ctx.close()
        finally:
            browser.close()
    print(f"upload to restored {upload_to_restored:.1f} s, to downloaded {t_done:.1f} s (carphone_gop10.mp4, 40 frames 176x144, x2)")


def test_a_server_stopped_mid_restore_finishes_the_job_after_its_restart(tmp_path):
    data = tmp_path / "serve"
    data.mkdir()
    token = auth.add_user(open_db(str(data)), "alice", "alice-password")
    server = Server(data)
    try:
        with open(CLIP, "rb") as fh:
            r = httpx.post(server.base + "/api/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=60,
                           files={"video": ("carphone.mp4", fh, "video/mp4")}, data={"scale": "2", "preset": "tiny"})
        assert r.status_code == 202
        job_id = r.json()["id"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # wait until the restore is under way
            job = json.loads(api(server.base, token, f"/api/jobs/{job_id}")[1])
            if job["progress"].get("stage") in ("training", "restoring"):
                break
            time.sleep(0.3)
        assert job["status"] == "running", job
    finally:
        server.stop()
    assert open_db(str(data)).job(1, job_id).status == "running"  # left running by the stopped server
    server = Server(data)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            job = json.loads(api(server.base, token, f"/api/jobs/{job_id}")[1])
            if job["status"] in ("restored", "failed"):
                break
            time.sleep(0.5)
        assert job["status"] == "restored", job
        status, video = api(server.base, token, f"/api/jobs/{job_id}/video")
        out = tmp_path / "restored.mp4"
        out.write_bytes(video)
        assert status == 200 and probe(str(out)).frames == probe(CLIP).frames
        assert "queued again" in (data / "server.log").read_text()
    finally:
        server.stop()
