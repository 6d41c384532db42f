"""One video through the stages, in the order of the data flow:

    probe -> check -> fine-tune (or reuse) -> restore the chunks -> assemble -> measure

each a Ray task or the run's actor pool; the video's report row is filled by the stage
that knows each value. Nothing partial is ever visible under a final name, and
committed chunks stay in the work folder for a rerun.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import ray

from pipeline.config import RestoreConfig
from pipeline.media.chunks import plan_chunks
from pipeline.media.fruc import parse_fps
from pipeline.media.geometry import Geometry, geometry
from pipeline.media.probe import by_fields
from pipeline.models import checkpoint, describe
from pipeline.run.layout import Layout, VideoJob
from pipeline.run.pool import Heartbeat, RestorerPool, say
from pipeline.run.row import VideoRow
from pipeline.run.session import check_train_workers, train_cpus
from pipeline.storage import Store
from pipeline.storage.uri import name_of


class DamagedVideo(ValueError):
    """Frames of a video could not be decoded: it is not restored (frames would be lost)."""


def output_geometry(info, cfg: RestoreConfig) -> Geometry:
    """The restored video's size and the picture's place in it (``media.geometry``): the
    scale's, or media.size's for this video (ValueError when that asks a scale the model
    cannot give: more than x4 for the continuous model, more than its scale for an integer
    one, which restores at its scale and resizes down; or less than x1)."""
    from pipeline.models.liif import SCALE_MAX

    continuous = cfg.model.arch == "liif"
    geo = geometry(info.width, info.height, cfg.scale, cfg.media.size, cfg.media.fit, integer_model=not continuous)
    most = SCALE_MAX if continuous else cfg.model_scale
    if cfg.media.size and not 1.0 <= geo.scale <= most:
        where = (f"the continuous-scale model restores from x1 to x{SCALE_MAX:g}" if continuous else
                 f"the x{cfg.model_scale} model restores at most x{cfg.model_scale} (then resizes down to the size)"
                 + (": give a larger --scale, or the continuous-scale model (--preset any)" if geo.scale > most else ""))
        raise ValueError(f"media.size {cfg.media.size} (fit {cfg.media.fit}) asks x{geo.scale:.2f} of this {info.width}x{info.height} video; {where}")
    return geo


def pair_scale(scale: float) -> float:
    """The scale a continuous model's self-pairs are made at for a video of ``scale``
    (``datasets.patches.scale_fraction``), so that a pair's input is a whole number of pixels."""
    from pipeline.datasets.patches import scale_fraction

    return float(scale_fraction(scale))


def check_input(info, cfg: RestoreConfig) -> Geometry:
    """Refuse, with the reason, a video the run should not restore: frames too small to
    train on, or longer than limits.max_seconds (from the packet index, before the video
    is decoded; limits.max_pixels is checked by the probe, from the header), or a
    media.size it cannot be restored to. Returns the video's geometry (``output_geometry``)."""
    lim = cfg.limits
    geo = output_geometry(info, cfg)
    side = math.ceil(2 * geo.scale)
    if min(info.width, info.height) < side:
        raise ValueError(f"{info.width}x{info.height} is too small to restore x{geo.scale:g} (each side needs at least {side} px)")
    if lim.max_seconds and info.duration > lim.max_seconds:
        raise ValueError(f"{info.duration:.1f} s long, over limits.max_seconds ({lim.max_seconds:g} s)")
    if cfg.media.fps:
        try:
            parse_fps(cfg.media.fps, info.rate)
        except ValueError as e:
            raise ValueError(f"media.fps: {e}") from None
        if cfg.media.output_depth(info.bit_depth) > 8:
            raise ValueError(f"media.fps: frame-rate conversion is 8-bit only and this {info.bit_depth}-bit source gives 10-bit output: "
                             "set media.bit_depth=8")
    return geo


def output_rate(info, cfg: RestoreConfig) -> Fraction:
    """The restored video's frame rate: media.fps's (checked by ``check_input``), or the source's."""
    return parse_fps(cfg.media.fps, info.rate) if cfg.media.fps else info.rate


def check_damage(info, cfg: RestoreConfig) -> None:
    """Refuse, before any training or inference, a video whose damaged frames (found by
    the scan) media.damaged does not allow to conceal."""
    n, media = len(info.damaged), cfg.media
    if media.damaged == "fail":
        raise DamagedVideo(f"{n} of {info.frames} frames do not decode (at {_times(info)}); media.damaged=fail: not restored")
    if n > media.max_damaged * info.frames:
        raise DamagedVideo(f"{n} of {info.frames} frames do not decode (at {_times(info)}): {n / info.frames:.0%}, over "
                           f"media.max_damaged ({media.max_damaged:.0%}); not restored")


def _times(info, most: int = 6) -> str:
    """Where the damaged frames are, in seconds from the start (runs joined)."""
    step = 1 / (info.rate * info.time_base) if info.rate else 1
    runs: list[list[int]] = []
    for pts, _ in info.damaged:
        if runs and pts - runs[-1][1] <= 1.5 * step:
            runs[-1][1] = pts
        else:
            runs.append([pts, pts])
    secs = [(float((a - info.start_pts) * info.time_base), float((b - info.start_pts) * info.time_base)) for a, b in runs]
    text = ", ".join(f"{a:.2f} s" if a == b else f"{a:.2f}-{b:.2f} s" for a, b in secs[:most])
    return text + (f" and {len(secs) - most} more" if len(secs) > most else "")


@dataclass
class VideoStages:
    """What every video of a run shares: the config, the store, the names, the starting
    model, the device and the inference pool."""

    cfg: RestoreConfig
    store: Store
    layout: Layout
    run_id: str
    pretrained: bytes | None
    gpu: bool
    pool: RestorerPool
    heartbeat: Heartbeat
    pictures: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # video -> its crops (for the run's page)

    def restore(self, job: VideoJob, row: VideoRow) -> list[dict[str, Any]]:
        """Restore one video, filling ``row`` as it goes; returns the frame rows. Raises on
        failure (the caller records it, with what ``row`` holds by then)."""
        from pipeline.actors import probe_task

        cfg, store, label = self.cfg, self.store, job.rel
        t_start = time.perf_counter()
        ref_version = ""
        if job.reference:
            try:
                ref_version = store.entry(job.reference).version
            except FileNotFoundError:
                raise FileNotFoundError(f"reference not found: {job.reference}") from None

        stored = ray.get(self.pool.stage("probe", probe_task, store, job.source, job.version, cfg.limits.max_pixels, True))
        info = by_fields(stored) if cfg.media.deinterlace == "field" else stored  # (one frame per field: twice the frames)
        chunks = plan_chunks(info, cfg.media.chunk_frames)
        row.probed(stored, len(chunks))
        say(label, f"probe: {info.width}x{info.height} {info.pix_fmt} {float(stored.rate):.3f} fps, {stored.frames} frames, "
            f"{info.duration:.2f} s, {'audio' if info.has_audio else 'no audio'}, {len(chunks)} chunks"
            + (f", rotated {info.rotation} deg" if info.rotation else "")
            + ((f", interlaced: one frame per field, {float(info.rate):.3f} fps" if info.fields else ", interlaced") if info.interlaced else "")
            + (f", pixel aspect {info.sar.numerator}:{info.sar.denominator}" if info.sar != 1 else ""))
        geo = check_input(info, cfg)
        row.scaled(geo)
        if geo.scale != cfg.scale or geo.resized:
            say(label, f"size: x{geo.scale:.4g} to {geo.picture[1]}x{geo.picture[0]}"
                + (f" in a {geo.frame[1]}x{geo.frame[0]} frame ({cfg.media.fit})" if geo.resized else ""))
        row.frames_damaged = len(stored.damaged)
        if stored.damaged:
            check_damage(stored, cfg)
            say(label, f"scan: {len(stored.damaged)} of {stored.frames} frames do not decode (at {_times(stored)}): "
                "each is concealed by the nearest decoded frame")

        t0 = time.perf_counter()
        ckpt = self.finetuned(job, info, row, geo)
        row.train_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        codec = self.infer(job, info, chunks, ckpt, row, geo)
        self.assemble(job, info, chunks, ckpt, codec, row)
        row.infer_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        frames = self.measure(job, info, ckpt, ref_version, row, geo)
        row.metrics_seconds = time.perf_counter() - t0
        row.total_seconds = time.perf_counter() - t_start
        return frames

    # ------------------------------------------------------------------ fine-tune

    def finetuned(self, job: VideoJob, info, row: VideoRow, geo: Geometry) -> bytes:
        """The video's fine-tuned checkpoint: an earlier run's when there is one, else
        trained now (its worker commits it to the store), on self-pairs at the video's
        scale (``pair_scale``)."""
        from pipeline.actors import extract_training_frames
        from pipeline.train.finetune import finetune_loop, too_small_for_self_pairs, too_soft_for_self_pairs
        from pipeline.train.launch import launch

        cfg, label = self.cfg, job.rel
        if not cfg.train.finetune:
            say(label, "train: skipped (--no-finetune), restoring with the starting model")
            row.model_used, row.model_reason = "pretrained", "not fine-tuned: train.finetune=false (--no-finetune)"
            return self.pretrained
        scale = pair_scale(geo.scale) if cfg.model.arch == "liif" else cfg.model_scale  # (an integer model trains at its scale)
        small = too_small_for_self_pairs(info.width, info.height, scale, cfg.train.min_pair_side) if self.pretrained is not None else None
        if small:
            say(label, f"train: skipped: {small}; restoring with the starting model")
            row.model_used, row.model_reason = "pretrained", small
            return self.pretrained
        t0 = time.perf_counter()
        uri = self.layout.checkpoint(job, cfg.hash("model", "train") + ("" if scale == cfg.model_scale else f"-x{scale:g}"))
        blob = self.store.read_bytes(uri, missing_ok=True)
        if blob is not None:
            row.trained(uri, True, checkpoint.load(blob)[1]["provenance"])
            say(label, f"train: reusing fine-tuned checkpoint {uri}")
            return blob
        if self.pretrained is None:
            say(label, "WARNING: model.pretrained=scratch: fine-tuning a freshly initialised model; expect lower quality")
        note = check_train_workers(cfg, self.gpu)
        if note:
            say(label, f"train: {note}")
        frames_ref, about_ref = self.pool.stage("extract", extract_training_frames, self.store, info, job.version, cfg.train.frames,
                                                cfg.train.max_frames, cfg.train.seed, cfg.train.dedup,
                                                scale if float(scale).is_integer() else min(4, max(2, round(scale))),  # (the estimate's scales)
                                                self.pool.arch.get("frames", 1) // 2, num_returns=2)
        about = ray.get(about_ref)
        n_frames = about["count"]
        if n_frames == 0:
            raise ValueError(f"no training frames with policy {cfg.train.frames!r}")
        degradation = about.get("degradation")
        if degradation:
            row.degraded(degradation)
            say(label, "train: the video's degradation as estimated: blur sigma {blur_sigma}, noise sigma {noise_sigma}, {codec} at "
                "{bits_per_pixel} bits/px, QP {qp}, detail {detail}".format(**degradation)
                + ("" if cfg.train.degrade.startswith("auto") else " (recorded; the self-pairs follow train.degrade)"))
            soft = too_soft_for_self_pairs(degradation.get("detail"), cfg.train.min_detail) if self.pretrained is not None else None
            if soft:
                say(label, f"train: skipped: {soft}; restoring with the starting model")
                row.model_used, row.model_reason = "pretrained", soft
                return self.pretrained
        what = f"{n_frames} windows of {self.pool.arch['frames']} frames" if self.pool.arch.get("frames", 1) > 1 else f"{n_frames} frames"
        say(label, f"train: {what} ({cfg.train.frames}), {cfg.train.steps} steps, {describe(self.pool.arch, scale=False)}, {cfg.train.workers} "
            + ("GPU worker(s)" if self.gpu else f"CPU worker(s) of {train_cpus(cfg)} CPU(s)"))
        safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in job.rel)[-60:]  # Ray's run name
        cpus = train_cpus(cfg)
        with self.pool.outside(cpus=0 if self.gpu else cfg.train.workers * cpus, gpus=cfg.train.workers if self.gpu else 0):
            launch(finetune_loop, {
                "frames": frames_ref, "train": cfg.train, "arch": self.pool.arch, "start": self.pretrained, "scale": scale,
                "label": label, "store": self.store, "checkpoint_uri": uri,
                "provenance": {"video": job.rel, "train_frames": n_frames, "frames_policy": cfg.train.frames,
                               "pretrained": cfg.model.pretrained, "pretrained_sha256": row.pretrained_sha256, "run_id": self.run_id,
                               "degradation": degradation},
            }, workers=cfg.train.workers, gpu=self.gpu, threads=cpus, name=f"finetune-{safe}")
        self.heartbeat.beat()
        blob = self.store.read_bytes(uri)
        stats = checkpoint.load(blob)[1]["provenance"]
        row.trained(uri, False, stats, cfg.train.steps)
        kept = stats.get("model_used", "finetuned")
        held = (f"; held-out L1 {stats['val_first']:.4f} (start) -> {stats['val_best']:.4f}, restoring with the {kept} model"
                if "val_first" in stats else "")
        say(label, f"train: done in {time.perf_counter() - t0:.1f} s ({stats.get('precision', 'fp32')}), L1 {stats.get('loss_first', 0):.4f} -> {stats.get('loss_last', 0):.4f}" + held)
        return blob

    # ------------------------------------------------------------------ inference and assembly

    @staticmethod
    def _work_key(ckpt: bytes, codec: str) -> str:
        """Committed chunks are reused only by the same model and encoder (chunks of two
        encoders do not join)."""
        return hashlib.sha256(ckpt).hexdigest()[:12] + ("-nvenc" if "nvenc" in codec else "" if codec == "libx264" else f"-{codec}")

    def _chunk_uris(self, job: VideoJob, chunks, ckpt: bytes, codec: str) -> list[str]:
        return [self.layout.chunk(job, self._work_key(ckpt, codec), c.index) for c in chunks]

    def infer(self, job: VideoJob, info, chunks, ckpt: bytes, row: VideoRow, geo: Geometry) -> str:
        """Restore the chunks not committed yet (an interrupted run's are reused) on the
        pool; a video with frames that cannot be decoded fails with their count. Returns
        the encoder of its chunks."""
        codec = self.pool.encoder(self.cfg.media, geo.frame, self.heartbeat, depth=self.cfg.media.output_depth(info.bit_depth))
        uris = self._chunk_uris(job, chunks, ckpt, codec)
        have = self.store.names(self.layout.model_work(job, self._work_key(ckpt, codec)))
        todo = [(c, u) for c, u in zip(chunks, uris, strict=True) if name_of(u) not in have]
        row.chunks_reused = len(chunks) - len(todo)
        reused_frames = sum(c.frames for c, u in zip(chunks, uris, strict=True) if name_of(u) in have)
        if row.chunks_reused:
            say(job.rel, f"infer: reusing {row.chunks_reused}/{len(chunks)} chunks ({reused_frames} frames) committed by an earlier run")
        damaged = self.pool.run_chunks(job.rel, info, todo, ckpt, self.store, job.version, self.cfg.media, self.heartbeat,
                                       done_frames=reused_frames, codec=codec, geometry=geo)
        if damaged:  # frames the scan decoded but this decode did not (or flagged corrupt)
            row.frames_damaged = len(info.damaged) + sum(d.frames for d in damaged)
            where = ", ".join(str(d.chunk) for d in sorted(damaged, key=lambda d: d.chunk))
            raise DamagedVideo(
                f"{job.source}: {sum(d.frames for d in damaged)} of {info.frames} frames could not be decoded in their chunks "
                f"({sum(d.missing for d in damaged)} missing, {sum(d.corrupt for d in damaged)} flagged corrupt; "
                f"chunk{'s' if len(damaged) > 1 else ''} {where}) although the scan decoded them; not restored, so that "
                "no frame is silently lost")
        return codec

    def assemble(self, job: VideoJob, info, chunks, ckpt: bytes, codec: str, row: VideoRow) -> None:
        from pipeline.actors import assemble_task

        media = self.cfg.media
        rate = output_rate(info, self.cfg)
        retimed = None
        if media.fps:
            retimed = {"rate_in": info.rate, "rate_out": rate, "colorspace": info.colorspace, "crf": media.crf, "preset": media.preset,
                       "codec": codec if codec in ("libx264", "libx265", "ffv1") else "libx264",  # (this runs on a CPU)
                       "threads": media.encoder_threads, "sar": info.sar, "start": Fraction(info.start_pts) * info.time_base}
            say(job.rel, f"assemble: {float(info.rate):.3f} -> {float(rate):.3f} fps (motion-compensated, cuts respected)")
        out = ray.get(self.pool.stage("assemble", assemble_task, self.store, self._chunk_uris(job, chunks, ckpt, codec), job.source,
                                      job.version, job.output, info.frames, info.rotation, retimed))
        row.frames_out, row.output = out["frames"], job.output
        row.fps_out = float(rate)
        say(job.rel, f"assemble: {job.output} ({out['width']}x{out['height']}, {out['frames']} frames)")
        for what in out.get("dropped", []):
            say(job.rel, f"assemble: WARNING: not kept: {what} (choose media.container=mkv to keep it)")

    # ------------------------------------------------------------------ metrics

    def measure(self, job: VideoJob, info, ckpt: bytes, ref_version: str, row: VideoRow, geo: Geometry) -> list[dict[str, Any]]:
        """NIQE (and PSNR/SSIM with a reference) on sampled frames; a failure here is
        recorded in the row's error, and the restored video stands."""
        from pipeline.actors import measure_video_task
        from pipeline.run.pool import reason

        cfg = self.cfg
        say(job.rel, f"metrics: {cfg.metrics.sample_frames} sampled frames" + (f", PSNR/SSIM against {job.reference}" if job.reference else ""))
        try:
            task = measure_video_task.options(num_gpus=1 if self.gpu else 0)
            measured = ray.get(self.pool.stage(
                "measure", task, self.store, {"source": job.version, "reference": ref_version}, gpus=1 if self.gpu else 0,
                video=job.rel, source=job.source, output=job.output, reference=job.reference, scale=cfg.scale, geometry=geo,
                total_frames=info.frames, sample_frames=cfg.metrics.sample_frames, pretrained=self.pretrained,
                finetuned=ckpt if row.checkpoint else None, niqe=cfg.metrics.niqe,  # nothing trained: no fine-tuned column
                precision=cfg.infer.precision, tile=cfg.infer.tile, tile_overlap=cfg.infer.tile_overlap, fields=info.fields,
                crops=cfg.metrics.crops, temporal_pairs=cfg.metrics.temporal_pairs,
                output_ratio=output_rate(info, cfg) / info.rate))
            row.measured(measured["summary"])
            for pic in measured["crops"]:
                pic["uri"] = self.layout.crop(job, pic["frame_index"])
                self.store.write_bytes(pic["uri"], pic["png"])
            self.pictures[job.rel] = measured["crops"]
            return measured["frames"]
        except Exception as e:  # noqa: BLE001
            row.error = f"metrics failed: {reason(e)}"
            say(job.rel, f"WARNING: {row.error}")
            return []
