"""A videos report row as a type: every column of ``schemas/videos.json`` is a field,
filled by the stage that knows it. Checked against the schema when this module loads
(names, order and types), so the two cannot drift apart."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any

from pipeline.metrics import METRICS
from pipeline.reports import schema_doc

METHODS = ("bicubic", "pretrained", "finetuned", "output")
METRIC_COLUMNS = {f"{m.column_prefix}_{method}" for m in METRICS.values() for method in METHODS}


@dataclass
class VideoRow:
    video: str
    source: str
    source_bytes: int | None
    output: str | None = None
    status: str = "failed"  # until the video is restored
    error: str | None = None
    restored_run_id: str | None = None
    config_hash: str = ""
    preset: str | None = None
    scale: float = 2
    width: int | None = None
    height: int | None = None
    width_out: int | None = None
    height_out: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    has_audio: bool | None = None
    pix_fmt: str | None = None
    rotation: int | None = None
    interlaced: bool | None = None
    chunks: int | None = None
    frames_in: int | None = None
    frames_out: int | None = None
    fps_out: float | None = None
    frames_damaged: int | None = None
    train_frames: int | None = None
    train_steps: int | None = None
    train_loss_first: float | None = None
    train_loss_last: float | None = None
    model_used: str | None = None
    model_reason: str | None = None
    holdout_l1_pretrained: float | None = None
    holdout_l1_finetuned: float | None = None
    est_blur_sigma: float | None = None
    est_noise_sigma: float | None = None
    est_codec: str | None = None
    est_bits_per_pixel: float | None = None
    est_qp: float | None = None
    est_detail: float | None = None
    checkpoint: str | None = None
    checkpoint_reused: bool | None = None
    chunks_reused: int | None = None
    pretrained: str | None = None
    pretrained_sha256: str | None = None
    metric_frames: int | None = None
    niqe_bicubic: float | None = None
    niqe_pretrained: float | None = None
    niqe_finetuned: float | None = None
    niqe_output: float | None = None
    niqe_bicubic_lo: float | None = None
    niqe_bicubic_hi: float | None = None
    niqe_pretrained_lo: float | None = None
    niqe_pretrained_hi: float | None = None
    niqe_finetuned_lo: float | None = None
    niqe_finetuned_hi: float | None = None
    niqe_output_lo: float | None = None
    niqe_output_hi: float | None = None
    psnr_bicubic: float | None = None
    psnr_pretrained: float | None = None
    psnr_finetuned: float | None = None
    psnr_output: float | None = None
    ssim_bicubic: float | None = None
    ssim_pretrained: float | None = None
    ssim_finetuned: float | None = None
    ssim_output: float | None = None
    flicker_bicubic: float | None = None
    flicker_pretrained: float | None = None
    flicker_finetuned: float | None = None
    flicker_output: float | None = None
    terr_bicubic: float | None = None
    terr_pretrained: float | None = None
    terr_finetuned: float | None = None
    terr_output: float | None = None
    train_seconds: float | None = None
    infer_seconds: float | None = None
    metrics_seconds: float | None = None
    total_seconds: float = 0.0
    config_json: str = ""

    @classmethod
    def new(cls, job, cfg, config_hash: str, preset: str | None, pretrained_sha256: str | None = None) -> VideoRow:
        """The row of a listed video, a failure until a stage says otherwise."""
        return cls(video=job.rel, source=job.source, source_bytes=job.size, config_hash=config_hash, preset=preset,
                   scale=cfg.scale, pretrained=cfg.model.pretrained, pretrained_sha256=pretrained_sha256,
                   config_json=json.dumps(cfg.to_dict(), sort_keys=True))

    def probed(self, info, chunks: int) -> None:
        self.width, self.height, self.fps, self.duration_s = info.width, info.height, float(info.rate), info.duration
        self.has_audio, self.pix_fmt, self.rotation, self.interlaced = info.has_audio, info.pix_fmt, info.rotation, info.interlaced
        self.chunks, self.frames_in = chunks, info.frames

    def scaled(self, geo) -> None:
        """The video's own scale and output size (``media.geometry.Geometry``)."""
        self.scale = geo.scale
        self.height_out, self.width_out = geo.frame

    def trained(self, uri: str, reused: bool, provenance: dict[str, Any], steps_default: int = 0) -> None:
        self.checkpoint, self.checkpoint_reused = uri, reused
        if reused:  # fine-tuned in an earlier run, perhaps from an earlier file behind the same builtin name
            self.pretrained_sha256 = provenance.get("pretrained_sha256")
        self.train_frames = _int(provenance.get("train_frames"))
        self.train_steps = int(provenance.get("steps", steps_default))
        self.train_loss_first, self.train_loss_last = provenance.get("loss_first"), provenance.get("loss_last")
        self.model_used = provenance.get("model_used", "finetuned")
        self.model_reason = provenance.get("model_reason")
        self.holdout_l1_pretrained, self.holdout_l1_finetuned = provenance.get("val_first"), provenance.get("val_best")
        if provenance.get("degradation"):
            self.degraded(provenance["degradation"])

    def degraded(self, d: dict[str, Any]) -> None:
        """The video's estimated degradation (``pipeline.estimate.Degradation``)."""
        self.est_blur_sigma, self.est_noise_sigma, self.est_codec = d["blur_sigma"], d["noise_sigma"], d["codec"]
        self.est_bits_per_pixel, self.est_qp, self.est_detail = d["bits_per_pixel"], d["qp"], d.get("detail")

    def measured(self, summary: dict[str, Any]) -> None:
        """The metrics task's summary: ``metric_frames`` and ``<metric>_<method>`` means."""
        for k, v in summary.items():
            if k != "metric_frames" and k not in METRIC_COLUMNS and k.removesuffix("_lo").removesuffix("_hi") not in METRIC_COLUMNS:
                raise ValueError(f"unknown metric column {k!r}")
            setattr(self, k, v)

    def record(self) -> dict[str, Any]:
        """The row as the report writes it (``reports.write`` checks it against the schema)."""
        return dataclasses.asdict(self)


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


_TYPES = {"string": str, "int32": int, "int64": int, "float64": float, "bool": bool}


def _check_against_schema() -> None:
    fields = schema_doc("videos")["fields"]
    hints = typing.get_type_hints(VideoRow)
    mine = [f.name for f in dataclasses.fields(VideoRow)]
    missing = METRIC_COLUMNS - set(mine)
    if missing:
        raise RuntimeError(f"pipeline.metrics.METRICS names report columns VideoRow lacks: {sorted(missing)}")
    theirs = [f["name"] for f in fields]
    if mine != theirs:
        raise RuntimeError(f"VideoRow and schemas/videos.json differ: only in VideoRow {sorted(set(mine) - set(theirs))}, "
                           f"only in the schema {sorted(set(theirs) - set(mine))}, or in another order")
    for f in fields:
        want = _TYPES[f["type"]] | None if f["nullable"] else _TYPES[f["type"]]
        if hints[f["name"]] != want:
            raise RuntimeError(f"VideoRow.{f['name']} is {hints[f['name']]}, schemas/videos.json says {f['type']} (nullable {f['nullable']})")


_check_against_schema()
