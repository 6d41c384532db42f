"""The web app: people log in, upload a video, watch it restored and compare before with
after; scripts do the same through ``/api`` with a bearer token. See ``jobs.serve``.

Isolation: every job lookup goes through ``Database.job(user, id)``, so another user's
job answers 404 exactly like a missing one; the user's files live under
``STORE/users/<user id>/`` and are named by the server (the uploaded file name is only
shown, escaped). Browser forms carry a CSRF token bound to the signed session cookie;
the API takes no cookies, only ``Authorization: Bearer``.

(No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations,
which name the dependencies made inside ``create_app``.)
"""

import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from pipeline.storage import Store
from pipeline.storage.uri import is_s3, join
from pipeline.web import auth
from pipeline.web.db import Database, Job, User, new_id
from pipeline.web.runner import Runner

TEMPLATES = Jinja2Templates(directory=os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates"))
SCALES = (2, 3, 4)
SIZES = ("1280x720", "1920x1080", "3840x2160")  # output sizes offered (the continuous-scale preset: media.size, aspect kept)
# container formats PyAV names -> the extension the upload is stored with
_EXT = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "matroska,webm": ".mkv", "avi": ".avi"}
_CHUNK = 1 << 20
_FORM_SLACK = 64 * 1024  # the multipart form's other fields and headers, beside the file


@dataclass
class Settings:
    data: str  # the server's folder: database, session secret, logs, local store
    store_root: str = ""  # where uploads and outputs go (a folder or s3://bucket/prefix); default DATA/store
    max_upload_mb: float = 500.0
    jobs_per_user: int = 3  # queued + running jobs a user may have
    presets: list[str] = field(default_factory=list)  # offered presets (first: default); default: those with shipped weights
    ray_address: str = ""
    workers: int = 1
    restore_args: list[str] = field(default_factory=list)  # extra jobs.restore arguments for every job (e.g. --set ...)

    def __post_init__(self) -> None:
        self.data = os.path.abspath(self.data)
        self.store_root = self.store_root or os.path.join(self.data, "store")
        if not self.presets:
            from pipeline.presets import DEFAULT, PRESETS

            usable = [e.name for e in PRESETS if e.item.model.get("pretrained")]
            self.presets = sorted(usable, key=lambda n: n != DEFAULT)


def _secret(data: str) -> str:
    """The key that signs session cookies, made once per data folder (mode 600)."""
    path = os.path.join(data, "session.key")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(os.urandom(32).hex())
    with open(path) as fh:
        return fh.read().strip()


def open_db(data: str) -> Database:
    os.makedirs(data, exist_ok=True)
    return Database(os.path.join(data, "reelsr.db"))


def create_app(settings: Settings, start_runner: bool = True) -> FastAPI:
    os.makedirs(settings.data, exist_ok=True)
    db = open_db(settings.data)
    store = Store()
    runner = Runner(db, store, os.path.join(settings.data, "logs"), ray_address=settings.ray_address, workers=settings.workers,
                    extra_args=settings.restore_args)
    app = FastAPI(title="reelsr", docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    app.add_middleware(SessionMiddleware, secret_key=_secret(settings.data), session_cookie="reelsr_session", same_site="lax",
                       max_age=7 * 24 * 3600)
    app.state.db, app.state.runner, app.state.settings, app.state.store = db, runner, settings, store

    @app.middleware("http")
    async def refuse_oversized(request: Request, call_next):
        """An upload whose declared size is over the limit is refused before its body is
        read (the multipart parser would otherwise spool all of it to disk first); one
        without a declared size is counted as it is read (``accept_upload``)."""
        declared = request.headers.get("content-length", "")
        if request.method == "POST" and declared.isdigit() and int(declared) > settings.max_upload_mb * 1e6 + _FORM_SLACK:
            return JSONResponse({"detail": f"the upload is over the limit of {settings.max_upload_mb:g} MB"}, status_code=413)
        return await call_next(request)

    if start_runner:
        @app.on_event("startup")
        def _start() -> None:
            runner.start()

        @app.on_event("shutdown")
        def _stop() -> None:
            runner.stop()

    # ------------------------------------------------------------------ who is asking

    def session_user(request: Request) -> User | None:
        uid = request.session.get("user_id")
        return db.user_by_id(uid) if isinstance(uid, int) else None

    def page_user(request: Request) -> User:
        user = session_user(request)
        if user is None:
            raise HTTPException(status_code=303, headers={"Location": "/login"})
        return user

    def api_user(request: Request) -> User:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        user = auth.user_for_token(db, token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HTTPException(status_code=401, detail="a valid API token is needed: Authorization: Bearer TOKEN",
                                headers={"WWW-Authenticate": "Bearer"})
        return user

    def any_user(request: Request) -> User:
        """GETs of a job: the browser's session (its page polls) or a token."""
        return session_user(request) or api_user(request)

    def csrf(request: Request) -> str:
        if "csrf" not in request.session:
            request.session["csrf"] = auth.new_csrf()
        return request.session["csrf"]

    def check_csrf(request: Request, token: str) -> None:
        if not auth.csrf_ok(request.session.get("csrf"), token):
            raise HTTPException(status_code=403, detail="the form is stale or forged (CSRF token mismatch): reload the page")

    def owned(user: User, job_id: str) -> Job:
        job = db.job(user.id, job_id) if re.fullmatch(r"[0-9a-f]{16}", job_id) else None
        if job is None:
            raise HTTPException(status_code=404, detail="no such job")
        return job

    def render(request: Request, template: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(request, template, {"csrf": csrf(request), "user": session_user(request), **ctx},
                                          status_code=status_code)

    # ------------------------------------------------------------------ uploads

    async def accept_upload(user: User, video: UploadFile, scale: int, preset: str, fps: str = "", size: str = "") -> Job:
        """Store the upload under the user's prefix and queue it, after checking its size
        and that it is a video the restore will take; raises HTTPException with the reason.
        ``size``: an output size of ``SIZES`` instead of the scale (a continuous preset)."""
        from pipeline.config import build_config
        from pipeline.media.probe import probe
        from pipeline.run.video import check_input

        if scale not in SCALES:
            raise HTTPException(status_code=400, detail=f"scale must be one of {', '.join(map(str, SCALES))}")
        if preset not in settings.presets:
            raise HTTPException(status_code=400, detail=f"preset must be one of {', '.join(settings.presets)}")
        if size and size not in SIZES:
            raise HTTPException(status_code=400, detail=f"size must be one of {', '.join(SIZES)} (or empty: the scale)")
        try:  # before the upload is read: a bad form needs no file
            cfg = build_config(preset, overrides=[f"scale={scale}"] + ([f"media.fps={fps}"] if fps else []) + ([f"media.size={size}"] if size else []))
        except ValueError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None
        limit = int(settings.max_upload_mb * 1e6)
        tmp_dir = os.path.join(settings.data, "tmp")
        os.makedirs(tmp_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=".upload")
        try:
            nbytes = 0
            with os.fdopen(fd, "wb") as fh:
                while chunk := await video.read(_CHUNK):
                    nbytes += len(chunk)
                    if nbytes > limit:
                        raise HTTPException(status_code=413, detail=f"the upload is over the limit of {settings.max_upload_mb:g} MB")
                    fh.write(chunk)
            if nbytes == 0:
                raise HTTPException(status_code=400, detail="the upload is empty")
            try:
                info = probe(tmp, max_pixels=cfg.limits.max_pixels)
                check_input(info, cfg)
                import av

                with av.open(tmp) as c:
                    fmt = c.format.name
            except ValueError as e:
                raise HTTPException(status_code=400, detail=f"not a video reelsr can restore: {_without(str(e), tmp)}") from None
            ext = _EXT.get(fmt, ".mkv" if "matroska" in fmt else ".mp4")
            job_id = new_id()
            base = join(settings.store_root, "users", str(user.id), "jobs", job_id)
            src = join(base, "upload", "input" + ext)
            store.put_file(tmp, src)
            job = db.add_job(user.id, _shown_name(video.filename), src, join(base, "out"), scale, preset, job_id, settings.jobs_per_user, fps, size)
            if job is None:
                store.delete_tree(base)
                raise HTTPException(status_code=429, detail=f"you have {settings.jobs_per_user} jobs queued or running: wait for one to end")
            runner.wake()
            return job
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def delete(user: User, job_id: str) -> None:
        job = owned(user, job_id)
        db.delete_job(user.id, job.id)
        runner.cancel(job.id)
        store.delete_tree(join(settings.store_root, "users", str(user.id), "jobs", job.id))
        log = runner.log_path(job.id)
        if os.path.exists(log):
            os.unlink(log)

    def video_response(user: User, job_id: str) -> Response:
        job = owned(user, job_id)
        uri = job.result.get("video")
        if job.status != "restored" or not uri:
            raise HTTPException(status_code=409, detail=f"the job is {job.status}: no restored video yet")
        path = store.local_copy(uri) if is_s3(uri) else uri
        stem = os.path.splitext(job.filename)[0] or "video"
        return FileResponse(path, media_type="video/mp4" if path.endswith(".mp4") else "application/octet-stream",
                            filename=f"{stem}_{job.size or f'x{job.scale}'}{os.path.splitext(path)[1]}")

    # ------------------------------------------------------------------ pages

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request):
        return render(request, "login.html")

    @app.post("/login")
    def login(request: Request, name: Annotated[str, Form()], password: Annotated[str, Form()], csrf_token: Annotated[str, Form()] = ""):
        check_csrf(request, csrf_token)
        user = auth.check_password(db, name, password)
        if user is None:
            return render(request, "login.html", status_code=401, error="wrong name or password", name=name)
        request.session.clear()
        request.session["user_id"] = user.id
        request.session["csrf"] = auth.new_csrf()  # a new session: a token seen before login is no use after it
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    def logout(request: Request, csrf_token: Annotated[str, Form()] = ""):
        check_csrf(request, csrf_token)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, user: Annotated[User, Depends(page_user)]):
        return render(request, "index.html", jobs=db.jobs(user.id), presets=settings.presets, scales=SCALES, sizes=SIZES,
                      max_mb=settings.max_upload_mb)

    @app.post("/jobs")
    async def upload_form(request: Request, user: Annotated[User, Depends(page_user)], video: Annotated[UploadFile, File()],
                          scale: Annotated[int, Form()] = 2, preset: Annotated[str, Form()] = "", fps: Annotated[str, Form()] = "",
                          size: Annotated[str, Form()] = "", csrf_token: Annotated[str, Form()] = ""):
        check_csrf(request, csrf_token)
        try:
            job = await accept_upload(user, video, scale, preset or settings.presets[0], fps, size)
        except HTTPException as e:
            return render(request, "index.html", status_code=e.status_code, error=e.detail, jobs=db.jobs(user.id),
                          presets=settings.presets, scales=SCALES, sizes=SIZES, max_mb=settings.max_upload_mb)
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: str, user: Annotated[User, Depends(page_user)]):
        job = owned(user, job_id)
        return render(request, "job.html", job=job, crops=list(range(len(job.result.get("crops", [])))))

    @app.post("/jobs/{job_id}/delete")
    def delete_form(request: Request, job_id: str, user: Annotated[User, Depends(page_user)], csrf_token: Annotated[str, Form()] = ""):
        check_csrf(request, csrf_token)
        delete(user, job_id)
        return RedirectResponse("/", status_code=303)

    @app.get("/jobs/{job_id}/video")
    def download_page(job_id: str, user: Annotated[User, Depends(any_user)]):
        return video_response(user, job_id)

    @app.get("/jobs/{job_id}/crops/{k}/{panel}.png")
    def crop_panel(job_id: str, k: int, panel: str, user: Annotated[User, Depends(any_user)]):
        """One panel of a crop (bicubic, pretrained, restored, reference) or the whole sheet, as PNG."""
        job = owned(user, job_id)
        crops = job.result.get("crops", [])
        if not 0 <= k < len(crops) or panel not in ("sheet", *PANELS):
            raise HTTPException(status_code=404, detail="no such picture")
        png = store.read_bytes(crops[k])
        return Response(png if panel == "sheet" else cut_panel(png, panel), media_type="image/png")

    @app.get("/archive", response_class=HTMLResponse)
    def archive(request: Request, user: Annotated[User, Depends(page_user)]):
        return render(request, "archive.html", **archive_view(user))

    def archive_view(user: User) -> dict[str, Any]:
        """The user's ended jobs, from their runs' Parquet reports (read when each job
        ended): NIQE gain of the restored file over bicubic upscaling, and the cost in
        seconds of restore per minute of video; the bars are scaled to the largest."""
        rows = []
        for job in db.jobs(user.id):
            if job.status not in ("restored", "failed"):
                continue
            m = job.result.get("metrics", {})
            total = (job.result.get("seconds") or {}).get("total") or ((job.finished or 0) - (job.started or 0))
            minutes = (job.result.get("duration_s") or 0) / 60
            gain = m["niqe_bicubic"] - m["niqe_output"] if "niqe_bicubic" in m and "niqe_output" in m else None
            rows.append({"job": job, "gain": gain, "seconds": total, "cost": total / minutes if minutes else None, "metrics": m})
        top_gain = max([abs(r["gain"]) for r in rows if r["gain"] is not None] or [1.0]) or 1.0
        top_cost = max([r["cost"] for r in rows if r["cost"]] or [1.0])
        for r in rows:
            r["gain_px"] = int(120 * abs(r["gain"]) / top_gain) if r["gain"] is not None else 0
            r["cost_px"] = int(120 * r["cost"] / top_cost) if r["cost"] else 0
        return {"rows": rows}

    # ------------------------------------------------------------------ the API

    @app.post("/api/jobs", status_code=202)
    async def api_create(user: Annotated[User, Depends(api_user)], video: Annotated[UploadFile, File()], scale: Annotated[int, Form()] = 2,
                         preset: Annotated[str, Form()] = "", fps: Annotated[str, Form()] = "", size: Annotated[str, Form()] = ""):
        job = await accept_upload(user, video, scale, preset or settings.presets[0], fps, size)
        return JSONResponse({"id": job.id, "status": job.status}, status_code=202, headers={"Location": f"/api/jobs/{job.id}"})

    @app.get("/api/jobs")
    def api_list(user: Annotated[User, Depends(api_user)]):
        return {"jobs": [j.public() for j in db.jobs(user.id)]}

    @app.get("/api/jobs/{job_id}")
    def api_get(job_id: str, user: Annotated[User, Depends(any_user)]):
        return owned(user, job_id).public()

    @app.get("/api/jobs/{job_id}/video")
    def api_video(job_id: str, user: Annotated[User, Depends(api_user)]):
        return video_response(user, job_id)

    @app.delete("/api/jobs/{job_id}", status_code=204)
    def api_delete(job_id: str, user: Annotated[User, Depends(api_user)]):
        delete(user, job_id)
        return Response(status_code=204)

    return app


PANELS = {"bicubic": "bicubic", "pretrained": "pretrained", "restored": "restored", "reference": "ground truth"}


def cut_panel(png: bytes, name: str) -> bytes:
    from pipeline.visual import panel

    try:
        return panel(png, PANELS[name])
    except KeyError:
        raise HTTPException(status_code=404, detail="no such panel") from None


def _without(message: str, path: str) -> str:
    """A probe's message with the server's temporary path taken out."""
    return message.replace(path + ": ", "").replace(path, "the upload")


def _shown_name(name: str | None) -> str:
    """The uploaded file's name for display only: its last path part, printable, at most 120 characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable())
    return base[:120] or "upload"
