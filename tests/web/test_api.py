"""The web app's HTTP API and pages without a restore running (the runner is not started):
the contract of /api/jobs, authentication, CSRF, per-user isolation, and uploads that
must be refused. The restore itself runs in tests/web/test_browser.py."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient

from pipeline.web import auth
from pipeline.web.app import Settings, create_app, open_db
from pipeline.web.runner import Runner, parse_progress
from tests.conftest import DATA, ROOT, job_env

CLIP = os.path.join(DATA, "carphone_gop10.mp4")


@pytest.fixture
def server(tmp_path):
    """(client, settings, {name: token}) of an app with two users, alice and bob."""
    settings = Settings(data=str(tmp_path / "data"), presets=["tiny"], max_upload_mb=2.0, jobs_per_user=2)
    db = open_db(settings.data)
    tokens = {name: auth.add_user(db, name, f"{name}-password") for name in ("alice", "bob")}
    app = create_app(settings, start_runner=False)
    with TestClient(app) as client:
        yield client, settings, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(client, token: str, path: str = CLIP, name: str = "carphone.mp4", **form):
    with open(path, "rb") as fh:
        return client.post("/api/jobs", headers=bearer(token), files={"video": (name, fh, "video/mp4")}, data=form)


def test_api_contract_create_get_list_delete(server):
    client, settings, tokens = server
    r = upload(client, tokens["alice"], scale="3", preset="tiny")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["status"] == "queued" and r.headers["location"] == f"/api/jobs/{job_id}"
    got = client.get(f"/api/jobs/{job_id}", headers=bearer(tokens["alice"])).json()
    assert got["status"] == "queued" and got["scale"] == 3 and got["preset"] == "tiny" and got["filename"] == "carphone.mp4"
    assert "input" not in got and "output" not in got  # no store locations in the API
    assert [j["id"] for j in client.get("/api/jobs", headers=bearer(tokens["alice"])).json()["jobs"]] == [job_id]
    # the upload is stored under the user's prefix, named by the server
    stored = os.path.join(settings.store_root, "users", "1", "jobs", job_id, "upload", "input.mp4")
    assert os.path.getsize(stored) == os.path.getsize(CLIP)
    r = client.get(f"/api/jobs/{job_id}/video", headers=bearer(tokens["alice"]))
    assert r.status_code == 409 and "queued" in r.json()["detail"]  # nothing to download yet
    assert client.delete(f"/api/jobs/{job_id}", headers=bearer(tokens["alice"])).status_code == 204
    assert client.get(f"/api/jobs/{job_id}", headers=bearer(tokens["alice"])).status_code == 404
    assert not os.path.exists(os.path.join(settings.store_root, "users", "1", "jobs", job_id))  # its files went with it


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic YWxpY2U6eA=="}])
def test_no_or_a_wrong_token_is_401(server, headers):
    client, _, tokens = server
    for method, path in (("get", "/api/jobs"), ("post", "/api/jobs"), ("get", "/api/jobs/0123456789abcdef"),
                         ("delete", "/api/jobs/0123456789abcdef"), ("get", "/api/jobs/0123456789abcdef/video")):
        r = getattr(client, method)(path, headers=headers)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"


def test_another_users_job_answers_404_like_a_missing_one(server):
    client, settings, tokens = server
    job_id = upload(client, tokens["alice"]).json()["id"]
    missing = "0123456789abcdef"
    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/video"):
        theirs, nothing = client.get(path, headers=bearer(tokens["bob"])), client.get(path.replace(job_id, missing), headers=bearer(tokens["bob"]))
        assert theirs.status_code == nothing.status_code == 404 and theirs.json() == nothing.json()
    assert client.delete(f"/api/jobs/{job_id}", headers=bearer(tokens["bob"])).status_code == 404
    assert client.get("/api/jobs", headers=bearer(tokens["bob"])).json() == {"jobs": []}
    assert client.get(f"/api/jobs/{job_id}", headers=bearer(tokens["alice"])).json()["status"] == "queued"  # still there
    # bob's browser session: the page, the crops and the download are 404 too
    login(client, "bob")
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/video", f"/jobs/{job_id}/crops/0/sheet.png"):
        assert client.get(path).status_code == 404, path
    assert job_id not in client.get("/").text


def test_bad_uploads_are_refused_with_the_reason(server, tmp_path):
    client, settings, tokens = server
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    r = upload(client, tokens["alice"], str(text), "notes.mp4")
    assert r.status_code == 400 and "not a video reelsr can restore" in r.json()["detail"]
    assert str(tmp_path) not in r.json()["detail"] and settings.data not in r.json()["detail"]  # no server paths in messages
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert upload(client, tokens["alice"], str(empty)).status_code == 400
    big = tmp_path / "big.mp4"
    with open(big, "wb") as fh:
        fh.write(open(CLIP, "rb").read())
        fh.write(os.urandom(int(2.1e6)))
    r = upload(client, tokens["alice"], str(big))
    assert r.status_code == 413 and "2 MB" in r.json()["detail"]  # refused by its declared size, before it is read
    with open(big, "rb") as fh:  # the same form streamed in chunks, with no declared size
        req = httpx.Request("POST", "http://testserver/api/jobs", files={"video": ("big.mp4", fh, "video/mp4")})
        body, ctype = req.read(), req.headers["content-type"]
    r = client.post("/api/jobs", content=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                    headers={**bearer(tokens["alice"]), "Content-Type": ctype})
    assert r.status_code == 413 and "2 MB" in r.json()["detail"], r.text  # counted as it is read
    assert upload(client, tokens["alice"], scale="5").status_code == 400
    assert upload(client, tokens["alice"], preset="full").status_code == 400  # not offered: no shipped weights
    assert client.post("/api/jobs", headers=bearer(tokens["alice"])).status_code == 422  # no file at all
    assert client.get("/api/jobs", headers=bearer(tokens["alice"])).json() == {"jobs": []}  # nothing was queued
    assert not os.listdir(os.path.join(settings.data, "tmp"))  # and no temporary file is left


def test_a_hostile_file_name_is_only_shown_never_used_as_a_path(server):
    client, settings, tokens = server
    r = upload(client, tokens["alice"], name="../../../etc/<script>alert(1)</script>.mp4")
    assert r.status_code == 202
    job = client.get(f"/api/jobs/{r.json()['id']}", headers=bearer(tokens["alice"])).json()
    assert job["filename"] == "script>.mp4"  # the last path part only
    files = [os.path.join(d, f) for d, _, fs in os.walk(settings.data) for f in fs]
    assert all(os.path.realpath(f).startswith(os.path.realpath(settings.data)) for f in files)
    assert not any("script" in f for f in files)
    login(client, "alice")
    page = client.get("/").text
    assert "<script>alert" not in page and "script&gt;.mp4" in page  # escaped where it is shown


def test_a_user_has_at_most_jobs_per_user_jobs_waiting(server):
    client, _, tokens = server
    assert [upload(client, tokens["alice"]).status_code for _ in range(3)] == [202, 202, 429]
    assert upload(client, tokens["bob"]).status_code == 202  # the limit is per user


def login(client, name: str, password: str | None = None):
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return client.post("/login", data={"name": name, "password": password or f"{name}-password", "csrf_token": token}, follow_redirects=False)


def test_login_sessions_and_csrf(server):
    client, _, _ = server
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert login(client, "alice", "wrong-password").status_code == 401
    assert login(client, "nobody", "whatever-pass").status_code == 401
    r = client.post("/login", data={"name": "alice", "password": "alice-password", "csrf_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403  # a form without the session's CSRF token
    assert login(client, "alice").status_code == 303
    home = client.get("/")
    assert home.status_code == 200 and "alice" in home.text
    with open(CLIP, "rb") as fh:  # an upload form without its token is refused, even logged in
        assert client.post("/jobs", files={"video": ("a.mp4", fh, "video/mp4")}, data={"csrf_token": "x"}).status_code == 403
    cookie = client.cookies.get("reelsr_session")
    assert cookie and "alice" not in cookie  # signed, and holds no name or password


def test_passwords_are_stored_as_argon2id_and_accounts_are_checked(tmp_path):
    db = open_db(str(tmp_path))
    token = auth.add_user(db, "carol", "a long password")
    user = db.user_by_name("carol")
    assert user.password_hash.startswith("$argon2id$") and "a long password" not in user.password_hash
    assert auth.user_for_token(db, token) == user and auth.user_for_token(db, token + "x") is None
    with pytest.raises(ValueError, match="exists already"):
        auth.add_user(db, "carol", "another password")
    with pytest.raises(ValueError, match="at least 8"):
        auth.add_user(db, "dave", "short")
    with pytest.raises(ValueError, match="user name"):
        auth.add_user(db, "../root", "a long password")


def test_a_restart_queues_again_what_was_running(server):
    client, settings, tokens = server
    job_id = upload(client, tokens["alice"]).json()["id"]
    db = open_db(settings.data)
    assert db.next_queued().id == job_id  # a runner took it ...
    assert client.get(f"/api/jobs/{job_id}", headers=bearer(tokens["alice"])).json()["status"] == "running"
    # ... and the server stopped: the next server's runner queues it again before taking jobs
    Runner(db, None, os.path.join(settings.data, "logs"), workers=0).start()
    job = client.get(f"/api/jobs/{job_id}", headers=bearer(tokens["alice"])).json()
    assert job["status"] == "queued" and "restart" in job["progress"]["stage"]


def test_progress_is_read_from_the_restores_own_lines():
    # lines as jobs.restore prints them (copied from a run of the tiny preset on carphone_gop10.mp4)
    p = parse_progress("[carphone_gop10.mp4] probe: 176x144 yuv420p 29.970 fps, 40 frames, 1.33 s, no audio, 2 chunks", {})
    assert p == {"stage": "probing", "frames_total": 40}
    p = parse_progress("[carphone_gop10.mp4] train: 6 frames (fps:4), 40 steps, EDSR 2x16, 1 CPU worker(s) of 1 CPU(s)", p)
    assert p["stage"] == "training"
    p = parse_progress("\x1b[36m(finetune-carphone_gop10.mp4 pid=10840)\x1b[0m [carphone_gop10.mp4] train: step 20/40  L1 0.0148  8.6 steps/s", p)
    assert p["stage"] == "training" and (p["steps_done"], p["steps_total"]) == (20, 40) and p["eta_s"] == pytest.approx(20 / 8.6, abs=0.1)
    q = parse_progress("[carphone_gop10.mp4] infer: 2 chunks on up to 2 actor(s) (1 CPU each)", p)
    assert q["stage"] == "restoring" and "eta_s" not in q  # the training's ETA is not shown for the restore
    p = parse_progress("[carphone_gop10.mp4] infer: 10/40 frames  1.5 fps", q)
    assert (p["stage"], p["frames_done"], p["frames_total"], p["fps"], p["eta_s"]) == ("restoring", 10, 40, 1.5, 20.0)
    assert parse_progress("[carphone_gop10.mp4] assemble: /x/carphone_gop10.mp4 (352x288, 40 frames)", p)["stage"] == "assembling"


def test_serve_add_user_prints_the_token_last(tmp_path):
    env = job_env()
    proc = subprocess.run([sys.executable, "-m", "jobs.serve", "--data", str(tmp_path), "add-user", "erin"], input="erin's password\n",
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("token: ")
    assert auth.user_for_token(open_db(str(tmp_path)), last.removeprefix("token: ")).name == "erin"
    again = subprocess.run([sys.executable, "-m", "jobs.serve", "--data", str(tmp_path), "add-user", "erin"], input="another password\n",
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert again.returncode == 2 and "exists already" in again.stderr


def test_uploads_land_under_the_users_prefix_in_the_configured_store(store_root, tmp_path):
    from pipeline.storage import Store

    settings = Settings(data=str(tmp_path / "data"), store_root=store_root, presets=["tiny"])
    token = auth.add_user(open_db(settings.data), "alice", "alice-password")
    with TestClient(create_app(settings, start_runner=False)) as client:
        job_id = upload(client, token).json()["id"]
        files = {e.uri: e.size for e in Store().list_files(store_root)}
        assert files == {f"{store_root}/users/1/jobs/{job_id}/upload/input.mp4": os.path.getsize(CLIP)}
        assert client.delete(f"/api/jobs/{job_id}", headers=bearer(token)).status_code == 204
        assert not list(Store().list_files(store_root))


@pytest.mark.slow
def test_a_failed_restore_shows_its_reason(tmp_path):
    """A job whose restore fails (here: a setting the restore refuses) ends ``failed``
    with the restore's own reason, on its page and in the API."""
    from pipeline.storage import Store

    settings = Settings(data=str(tmp_path / "data"), presets=["tiny"], restore_args=["--set", "train.steps=-1"])
    db = open_db(settings.data)
    token = auth.add_user(db, "alice", "alice-password")
    with TestClient(create_app(settings, start_runner=False)) as client:
        job_id = upload(client, token).json()["id"]
        runner = Runner(db, Store(), os.path.join(settings.data, "logs"), extra_args=settings.restore_args, env={"PYTHONPATH": ROOT})
        runner._run(db.next_queued())
        job = client.get(f"/api/jobs/{job_id}", headers=bearer(token)).json()
        assert job["status"] == "failed" and job["error"] == "train.steps must be >= 1, got -1", job
        login(client, "alice")
        assert "train.steps must be &gt;= 1, got -1" in client.get(f"/jobs/{job_id}").text


def test_a_frame_rate_is_asked_for_checked_against_the_upload_and_passed_to_the_restore(server, tmp_path):
    import sqlite3

    client, settings, tokens = server
    r = upload(client, tokens["alice"], fps="2x")
    assert r.status_code == 202, r.text
    got = client.get(f"/api/jobs/{r.json()['id']}", headers=bearer(tokens["alice"])).json()
    assert got["fps"] == "2x"
    job = open_db(settings.data).job(1, got["id"])
    cmd = Runner(open_db(settings.data), None, str(tmp_path)).command(job)
    assert cmd[cmd.index("--fps") + 1] == "2x"
    r = upload(client, tokens["alice"], fps="25")  # the clip is 29.97 fps: 25 would drop frames
    assert r.status_code == 400 and "not above the source's 29.970" in r.json()["detail"]
    assert upload(client, tokens["alice"], fps="fast").status_code == 400
    # a database made before the column gets it, its jobs at the source's rate
    old = tmp_path / "old"
    old.mkdir()
    con = sqlite3.connect(old / "reelsr.db")
    con.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, status TEXT NOT NULL, filename TEXT NOT NULL, "
                "input TEXT NOT NULL, output TEXT NOT NULL, scale INTEGER NOT NULL, preset TEXT NOT NULL, created REAL NOT NULL, "
                "started REAL, finished REAL, progress TEXT NOT NULL DEFAULT '{}', error TEXT, result TEXT NOT NULL DEFAULT '{}')")
    con.execute("INSERT INTO jobs(id, user_id, status, filename, input, output, scale, preset, created) VALUES ('j', 1, 'queued', 'a.mp4', 'i', 'o', 2, 'tiny', 0)")
    con.commit()
    con.close()
    assert open_db(str(old)).job(1, "j").fps == ""


def test_an_output_size_needs_the_continuous_preset_fits_the_upload_and_reaches_the_restore(tmp_path):
    settings = Settings(data=str(tmp_path / "data"), presets=["tiny", "any"], max_upload_mb=2.0, jobs_per_user=4)
    token = auth.add_user(open_db(settings.data), "alice", "alice-password")
    with TestClient(create_app(settings, start_runner=False)) as client:
        bbb = os.path.join(DATA, "bbb_320x180.mp4")
        r = upload(client, token, bbb, "bbb.mp4", size="1280x720", preset="any")
        assert r.status_code == 202, r.text
        got = client.get(f"/api/jobs/{r.json()['id']}", headers=bearer(token)).json()
        assert got["size"] == "1280x720" and got["preset"] == "any"
        cmd = Runner(open_db(settings.data), None, str(tmp_path)).command(open_db(settings.data).job(1, got["id"]))
        assert cmd[cmd.index("--size") + 1] == "1280x720" and "--scale" not in cmd  # the continuous model: the size decides
        r = upload(client, token, bbb, "bbb.mp4", size="1280x720", preset="tiny")  # the x2 model cannot make 720 lines of 180
        assert r.status_code == 400 and "asks x4.00 of this 320x180 video; the x2 model restores at most x2" in r.json()["detail"]
        assert upload(client, token, bbb, "bbb.mp4", size="1000x1000", preset="any").status_code == 400
        r = upload(client, token, size="1920x1080", preset="any")  # 176x144 to 1080 lines: x7.5
        assert r.status_code == 400 and "asks x7.50 of this 176x144 video" in r.json()["detail"]
