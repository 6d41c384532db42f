"""One typed configuration for a restore run.

Every field is a frozen dataclass field with a docstring-like ``help`` text in its
metadata; ``--help``, the YAML loader and ``--set section.field=value`` overrides are
all generated from these classes, so a field documented here is a field a user can set.

Load order: preset -> YAML file -> ``--set`` overrides -> explicit CLI flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


SCRATCH = "scratch"  # model.pretrained: start from a fresh initialisation, on purpose

FRAME_POLICIES_HELP = '"iframes" (keyframes only, fast), "fps:N" (N frames per second), or "all"'


def validate_frame_policy(policy: str) -> None:
    if policy in ("iframes", "all"):
        return
    if policy.startswith("fps:"):
        try:
            n = float(policy[4:])
        except ValueError:
            n = -1.0
        if math.isfinite(n) and n > 0:
            return
    raise ValueError(f"train.frames must be {FRAME_POLICIES_HELP}, got {policy!r}")


@dataclass(frozen=True)
class MediaConfig:
    chunk_frames: int = _f(48, "Minimum frames per chunk: whole GOPs are merged until a chunk has this many (the unit of parallel inference).")
    crf: int = _f(12, "libx264 constant rate factor of the restored video (0 = lossless, 51 = worst). 12 keeps a decode-encode round trip above 40 dB PSNR.")
    preset: str = _f("medium", "libx264 speed/size preset (ultrafast ... veryslow).")
    container: str = _f("mp4", "Container of the restored video: mp4, mkv or mov.")
    codec: str = _f("libx264", "Video codec of the restored video: libx264 (H.264, default), libx265 (H.265/HEVC: about the same quality in fewer bytes, slower to encode and to play), or ffv1 (lossless, every frame intra, in mkv only: the archival master format; large). media.crf and media.preset apply to libx264 and libx265.")
    bit_depth: str = _f("source", 'Bits per sample of the restored video: "source" (10-bit output where the source has more than 8 bits: yuv420p10le, carried at 16 bits per channel from the decoder through the model to the encoder; 8-bit sources stay 8-bit) or "8" (always 8-bit yuv420p, as most players expect).')
    encoder_threads: int = _f(4, "libx264 frame threads of each chunk's encoder. Fixed, not the actor's CPU share: x264's output depends on its thread count, and a chunk must encode the same on any actor or machine (retries, resumed runs). NVENC ignores it.")
    deinterlace: str = _f("frame", 'Interlaced sources (deinterlaced with FFmpeg\'s bwdif): "frame" puts out one frame per frame (50i becomes 25p: half the motion samples lost), "field" one frame per field (50i becomes 50p, every field\'s motion kept; twice the frames to restore). Progressive sources are not touched.')
    damaged: str = _f("conceal", 'Frames that do not decode (damaged packets), found by a decode-only scan before any training or inference: "conceal" puts out the nearest decoded frame in place of each (timestamps kept, no frame dropped; counted in the report\'s frames_damaged), "fail" refuses such a video.')
    max_damaged: float = _f(0.2, "With media.damaged=conceal, the largest share of a video's frames that may be concealed; a video with more fails before any training.")
    fps: str = _f("", 'Frame rate of the restored video: empty (the source\'s), a multiple ("2x"), or a rate ("60", "59.94", "60000/1001") above the source\'s. New frames are made by motion-compensated interpolation (FFmpeg\'s minterpolate) of the restored frames, never across a scene cut; the duration and the audio stay as they were. The restored video is encoded once more for it (8-bit output only).')
    size: str = _f("", 'Output frame size WIDTHxHEIGHT (e.g. 1920x1080; even sides): each video is restored to fit it, at its own scale. The continuous-scale model (model.arch=liif, the preset any) restores straight to it (up to x4); an integer model restores at scale and is resized down to it (a video needing more than scale fails with the reason).')
    fit: str = _f("keep", 'With media.size: "keep" (the picture fits inside the size, its aspect kept: the output is the picture, as large as fits), "pad" (that picture centred on a black frame of exactly the size), or "crop" (the picture covers the size, its aspect kept, and the excess is cut off, centred).')
    encoder: str = _f("auto", 'H.264 encoder of the restored chunks (media.codec=libx264): "auto" (NVENC on a GPU actor whose GPU has it, else libx264), "x264", or "nvenc" (fails where NVENC cannot open). NVENC encodes at constant quality cq = media.crf.')

    def output_depth(self, source_depth: int) -> int:
        """Bits per sample of a restored video whose source has ``source_depth``: 8 or 10."""
        return 10 if self.bit_depth == "source" and source_depth > 8 else 8

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise ValueError(f"media.chunk_frames must be >= 1, got {self.chunk_frames}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"media.crf must be in 0..51, got {self.crf}")
        presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
        if self.preset not in presets:
            raise ValueError(f"media.preset must be one of {', '.join(presets)}, got {self.preset!r}")
        if not 1 <= self.encoder_threads <= 64:
            raise ValueError(f"media.encoder_threads must be in 1..64, got {self.encoder_threads}")
        if self.deinterlace not in ("frame", "field"):
            raise ValueError(f"media.deinterlace must be frame or field, got {self.deinterlace!r}")
        if self.damaged not in ("conceal", "fail"):
            raise ValueError(f"media.damaged must be conceal or fail, got {self.damaged!r}")
        if not 0.0 <= self.max_damaged <= 1.0:
            raise ValueError(f"media.max_damaged must be in 0..1, got {self.max_damaged}")
        if self.bit_depth not in ("source", "8"):
            raise ValueError(f"media.bit_depth must be source or 8, got {self.bit_depth!r}")
        if self.encoder not in ("auto", "x264", "nvenc"):
            raise ValueError(f"media.encoder must be auto, x264 or nvenc, got {self.encoder!r}")
        if self.container not in ("mp4", "mkv", "mov"):
            raise ValueError(f"media.container must be mp4, mkv or mov, got {self.container!r}")
        if self.fps:
            from pipeline.media.fruc import parse_fps

            try:
                parse_fps(self.fps, None)  # the form only: the source's rate is known at the probe
            except ValueError as e:
                raise ValueError(f"media.fps: {e}") from None
        if self.size:
            from pipeline.media.geometry import parse_size

            parse_size(self.size)
        if self.fit not in ("keep", "pad", "crop"):
            raise ValueError(f"media.fit must be keep, pad or crop, got {self.fit!r}")
        if self.codec not in ("libx264", "libx265", "ffv1"):
            raise ValueError(f"media.codec must be libx264, libx265 or ffv1, got {self.codec!r}")
        if self.codec == "ffv1" and self.container != "mkv":
            raise ValueError(f"media.codec=ffv1 is written in Matroska only: set media.container=mkv (got {self.container})")
        if self.encoder == "nvenc" and self.codec != "libx264":
            raise ValueError(f"media.encoder=nvenc encodes H.264: it cannot be combined with media.codec={self.codec}")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = _f("edsr", "Model architecture, from the table pipeline.models.ARCHS (edsr, duf, liif: any scale in [1, 4]).")
    n_resblocks: int = _f(16, "EDSR residual blocks.")
    n_feats: int = _f(64, "EDSR feature channels; DUF's after its first convolution.")
    n_layers: int = _f(6, "DUF dense layers (the last (frames - 1) / 2 shrink the window to its centre).")
    growth: int = _f(16, "DUF feature maps each dense layer adds.")
    frames: int = _f(7, "DUF window: frames in per frame out (odd; the centre one is restored). Windows stop at scene cuts.")
    res_scale: float = _f(1.0, "Residual scaling inside each block (the EDSR paper uses 0.1 for the 32x256 model).")
    hidden: int = _f(64, "LIIF: width of the local implicit function's MLP.")
    mlp_layers: int = _f(3, "LIIF: the MLP's layers after its first.")
    pretrained: str | None = _f(None, "Starting checkpoint: a reelsr checkpoint or an official EDSR-PyTorch .pt file of the same architecture and scale, or builtin:NAME for weights shipped with the package (the table pipeline.models.weights.WEIGHTS), or scratch to fine-tune a freshly initialised model (poor results: only when asked for). Empty: refused when the run starts, with where to get weights.")

    def __post_init__(self) -> None:
        from pipeline.models import ARCHS

        ARCHS.entry(self.arch)  # an unknown name raises, naming the known ones
        if self.arch == "duf":
            from pipeline.models.duf import DUF

            DUF(**{k: v for k, v in self.arch_dict(2).items() if k not in ("name", "scale")})  # its own checks, by name
        if self.n_resblocks < 1 or self.n_feats < 1:
            raise ValueError(f"model.n_resblocks and model.n_feats must be >= 1, got {self.n_resblocks}, {self.n_feats}")
        if not (math.isfinite(self.res_scale) and self.res_scale > 0):
            raise ValueError(f"model.res_scale must be a finite number > 0, got {self.res_scale}")


    def arch_dict(self, scale: float) -> dict[str, Any]:
        """The architecture these fields describe (``pipeline.models.build_model``'s dict)."""
        if self.arch == "liif":
            return {"name": "liif", "n_resblocks": self.n_resblocks, "n_feats": self.n_feats, "hidden": self.hidden,
                    "layers": self.mlp_layers, "scale": float(scale)}
        if self.arch == "duf":
            return {"name": "duf", "n_layers": self.n_layers, "n_feats": self.n_feats, "growth": self.growth, "frames": self.frames,
                    "scale": scale}
        return {"name": self.arch, "n_resblocks": self.n_resblocks, "n_feats": self.n_feats, "res_scale": self.res_scale, "scale": scale}


LOSS_HELP = 'Weighted sum of loss terms "name:weight,..." (the terms are listed at the end of --help)'


@dataclass(frozen=True)
class TrainConfig:
    finetune: bool = _f(True, "Fine-tune on the video's own frames. False (--no-finetune): restore with the starting model as it is.")
    frames: str = _f("fps:4", f"Training frames: {FRAME_POLICIES_HELP}. fps:4 measured better than iframes on average at every budget, by small margins (docs/RESULTS.md).")
    dedup: float = _f(0.0, "Drop a training frame whose mean absolute difference from the last kept one is below this (0-255 scale, on a 1/4-size grey copy), so long static shots do not dominate. 0: keep all.")
    max_frames: int = _f(200, "At most this many training frames are kept per video (uniform reservoir sample), bounding memory.")
    steps: int = _f(1000, "Optimisation steps of the per-video fine-tune (the budget's upper bound).")
    max_seconds: float = _f(0.0, "Training budget in seconds: stop at the first step past it (0: steps only).")
    patch_size: int = _f(96, "High-resolution patch side in pixels (the input patch is patch_size / scale).")
    patches: str = _f("uniform", 'Where patches are taken: "uniform", or "texture" (probability proportional to the patch\'s gradient energy).')
    batch_size: int = _f(16, "Patches per step (per worker).")
    lr: float = _f(1e-4, "Adam learning rate.")
    loss: str = _f("l1", LOSS_HELP + '. Example: "l1:1,ssim:0.2".')
    vgg_weights: str = _f("", "Local VGG-19 state dict (torchvision layout) for the vgg loss term; nothing is downloaded.")
    train_last: int = _f(0, "Train only the last K residual blocks (with the body's closing conv) and the upsampler, the rest frozen. 0: all layers.")
    augment: bool = _f(True, "Random flips and 90-degree rotations of the training patches.")
    degrade: str = _f("", 'How a self-pair\'s input is made from its target: empty (the default: the clean bicubic downscale), "auto" (experimental: the video\'s own degradation as estimated from the video -- blur and subsampling, noise, and a re-encode with its codec at its quantiser; "auto:blur,codec" takes only those parts of the estimate; at x4 on two held-out clean clips it lost 0.2 and 1.5 dB: docs/RESULTS.md), or named degradations after the bicubic downscale, each with probability 0.5, comma-separated "name:value" (listed at the end of --help). The estimate is recorded in the report whichever is used.')
    multiscale: bool = _f(False, "Also take self-pairs from the frames downscaled x2 (the same content at two scales).")
    min_pair_side: int = _f(32, "Fine-tune only when a self-pair's input -- a frame downscaled by the scale -- has a short side of at least this many pixels; below it the starting model restores the video (model_used=pretrained, with the reason): on 80x60 frames at x4 (self-pairs of 20x15 px) the fine-tune gained nothing on average and lost up to 0.6 dB, where larger frames gained (docs/RESULTS.md). 0: always fine-tune.")
    min_detail: float = _f(0.15, "Fine-tune only when the video's frames keep some fine detail: their finest frequency octave holds at least this fraction of the next octave's energy (the report's est_detail). A self-pair's target is the frame itself; softer frames (a strong blur before a small downscale) teach the fine-tune to restore soft output, and the starting model restores the video instead (model_used=pretrained, with the reason): at x2 the fine-tune lost 0.5 and 3.1 dB on two blurred clips whose frames read 0.089 and 0.057, while frames reading 0.26 to 0.48 gained 0.07 to 0.53 (docs/RESULTS.md). 0: always fine-tune.")
    holdout: int = _f(2, "Frames held out: their self-pairs score the starting model (step 0) and every validation; the fine-tuned weights are kept only when they beat the starting model there by keep_margin (do no harm), and training stops early when they stop improving. 0: no holdout (the fine-tuned weights are always used).")
    keep_margin: float = _f(0.005, "With holdout: the fine-tuned weights are used only when their held-out L1 is at least this fraction below the starting model's.")
    eval_every: int = _f(25, "With holdout: validate every this many steps.")
    patience: int = _f(4, "With holdout: stop after this many validations without improvement, keeping the best weights.")
    precision: str = _f("auto", 'Fine-tune arithmetic: "auto" (bf16 autocast on a GPU that computes bf16 natively, and on a CPU with AVX512-BF16 or AMX: about 2x the steps per second of fp32 there; else fp32), "fp32" or "bf16". Weights, optimiser, loss and the held-out scores stay fp32.')
    workers: int = _f(1, "Fine-tune workers: 1 runs as one Ray task; more train data-parallel on Ray Train. Each takes one GPU when the cluster has GPUs.")
    cpus_per_worker: int = _f(0, "CPUs each CPU fine-tune worker reserves from Ray, and runs as many threads. 0: half the CPUs of the cluster's largest node (the other half stays with inference), divided among the workers that fit on it.")
    seed: int = _f(0, "Random seed of patch sampling and initialisation.")

    def __post_init__(self) -> None:
        validate_frame_policy(self.frames)
        if self.cpus_per_worker < 0:
            raise ValueError(f"train.cpus_per_worker must be >= 0, got {self.cpus_per_worker}")
        for name in ("max_frames", "steps", "batch_size", "workers", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.min_detail) and self.min_detail >= 0):
            raise ValueError(f"train.min_detail must be a number >= 0, got {self.min_detail}")
        for name in ("train_last", "holdout", "min_pair_side"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.patch_size < 8:
            raise ValueError(f"train.patch_size must be >= 8, got {self.patch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"train.lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.dedup) and 0 <= self.dedup <= 255):
            raise ValueError(f"train.dedup must be in 0..255, got {self.dedup}")
        if not (math.isfinite(self.max_seconds) and self.max_seconds >= 0):
            raise ValueError(f"train.max_seconds must be >= 0, got {self.max_seconds}")
        if self.patches not in ("uniform", "texture"):
            raise ValueError(f"train.patches must be uniform or texture, got {self.patches!r}")
        if self.seed < 0:
            raise ValueError(f"train.seed must be >= 0, got {self.seed}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"train.precision must be auto, fp32 or bf16, got {self.precision!r}")
        from pipeline.datasets.degrade import parse_degrade
        from pipeline.losses import parse_loss

        if "vgg" in parse_loss(self.loss) and not self.vgg_weights:
            raise ValueError("train.loss has a vgg term: set train.vgg_weights to a local VGG-19 checkpoint (nothing is downloaded)")
        if self.degrade.startswith("auto"):
            from pipeline.train.finetune import auto_parts

            auto_parts(self.degrade)
        else:
            parse_degrade(self.degrade)
        if not (math.isfinite(self.keep_margin) and 0 <= self.keep_margin < 1):
            raise ValueError(f"train.keep_margin must be in [0, 1), got {self.keep_margin}")

    def not_for_windows(self) -> list[str]:
        """The choices set here that a multi-frame model's fine-tune (windows, L1, clean
        bicubic self-pairs, uniform patches, all layers) does not have yet."""
        return [name for name, unsupported in (("loss", self.loss != "l1"), ("patches", self.patches != "uniform"),
                                               ("multiscale", self.multiscale), ("degrade", bool(self.degrade)),
                                               ("train_last", bool(self.train_last))) if unsupported]


@dataclass(frozen=True)
class InferConfig:
    actors: int = _f(0, "Inference actors. 0: one per GPU, or one per CPU when there is no GPU (fewer, with more threads each, when the video has fewer chunks).")
    batch_size: int = _f(0, "Frames per forward pass. 0 (auto): 8 on a GPU; on the CPU as many as keep one feature map under 4 MiB (1 for EDSR 16x64 on 176x144), since larger batches measured slower there.")
    tile: int = _f(0, "Frames whose low-resolution side exceeds this many pixels are restored in tiles of this size. 0 (auto): the largest tile whose batch fits in half of the memory left after the batch's full-size results: on a GPU its free memory, on the CPU this CPU's share of the RAM, at most 512. A value above the frames' sides never tiles.")
    tile_overlap: int = _f(16, "Overlap between tiles, in low-resolution pixels.")
    precision: str = _f("auto", 'Inference precision: "auto" (bf16 on GPUs that support it, else fp16 on GPU, fp32 on CPU), "fp32", "bf16" or "fp16".')

    def __post_init__(self) -> None:
        if self.actors < 0:
            raise ValueError(f"infer.actors must be >= 0, got {self.actors}")
        if self.batch_size < 0:
            raise ValueError(f"infer.batch_size must be >= 0 (0: auto), got {self.batch_size}")
        if self.tile < 0 or self.tile_overlap < 0:
            raise ValueError(f"infer.tile and infer.tile_overlap must be >= 0, got {self.tile}, {self.tile_overlap}")
        if self.tile and self.tile_overlap * 2 >= self.tile:
            raise ValueError(f"infer.tile_overlap ({self.tile_overlap}) must be less than half of infer.tile ({self.tile})")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"infer.precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")


@dataclass(frozen=True)
class MetricsConfig:
    sample_frames: int = _f(8, "Frames per video (evenly spaced) on which NIQE, PSNR and SSIM are measured.")
    niqe: bool = _f(True, "Measure NIQE (no reference).")
    temporal_pairs: int = _f(4, "Of the sampled frames, this many (evenly spaced) are measured with the frame after each for temporal consistency: flicker (the output's frame-to-frame change where the source is still) and, with a reference, the temporal error (the output's frame difference against the reference's). Each pair costs one more restored frame per method. 0: off.")
    crops: int = _f(3, "Before/after crops per video (of the sampled frames, evenly spaced): bicubic | pretrained | restored (| ground truth), 256 px squares at full output resolution, saved as PNG under OUT/reports/crops/ and shown on the run's HTML page. 0: none.")

    def __post_init__(self) -> None:
        if self.sample_frames < 1:
            raise ValueError(f"metrics.sample_frames must be >= 1, got {self.sample_frames}")
        if self.crops < 0:
            raise ValueError(f"metrics.crops must be >= 0, got {self.crops}")
        if self.temporal_pairs < 0:
            raise ValueError(f"metrics.temporal_pairs must be >= 0, got {self.temporal_pairs}")


@dataclass(frozen=True)
class StorageConfig:
    endpoint_url: str = _f("", "S3 endpoint, e.g. http://minio:9000. Empty: the AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL environment variables, else AWS. Credentials always come from the standard AWS chain (environment, profile, instance role), never from this config.")
    region: str = _f("", "S3 region. Empty: AWS_REGION / AWS_DEFAULT_REGION / the profile's.")
    addressing_style: str = _f("auto", 'S3 addressing: "auto", "path" (MinIO, Ceph and most self-hosted stores) or "virtual".')
    retries: int = _f(8, "Attempts per S3 request (with backoff) on throttling, 5xx answers and dropped connections.")
    scratch_dir: str = _f("", "Node-local folder for scratch copies of S3 videos. Empty: <system temp>/reelsr-scratch.")
    scratch_gb: float = _f(20.0, "Scratch copies kept per node, in GB; the least recently used are deleted first.")

    def __post_init__(self) -> None:
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise ValueError(f"storage.addressing_style must be auto, path or virtual, got {self.addressing_style!r}")
        if self.retries < 1:
            raise ValueError(f"storage.retries must be >= 1, got {self.retries}")
        if not (math.isfinite(self.scratch_gb) and self.scratch_gb > 0):
            raise ValueError(f"storage.scratch_gb must be a number > 0, got {self.scratch_gb}")
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            raise ValueError(f"storage.endpoint_url must start with http:// or https://, got {self.endpoint_url!r}")
        if "@" in self.endpoint_url:
            raise ValueError("storage.endpoint_url must not hold credentials (user:password@): use the AWS environment variables or a profile")


@dataclass(frozen=True)
class LimitsConfig:
    max_pixels: int = _f(3840 * 2160, "Largest input frame (width x height, as the file declares it) a video may have; larger videos fail with the reason. 0: no limit.")
    max_seconds: float = _f(6 * 3600.0, "Longest input (video stream duration, seconds) a video may have; longer videos fail with the reason. 0: no limit.")

    def __post_init__(self) -> None:
        if self.max_pixels < 0:
            raise ValueError(f"limits.max_pixels must be >= 0, got {self.max_pixels}")
        if not (math.isfinite(self.max_seconds) and self.max_seconds >= 0):
            raise ValueError(f"limits.max_seconds must be a number >= 0, got {self.max_seconds}")


#: Fields added after outputs were first hashed: left out of the config hash while they
#: hold their default (which restores as before), so that a scheduled run over an archive
#: does not restore every video again after an upgrade. (train.min_pair_side at its default
#: changes only videos whose frames are under 32 px x the scale: restored before, they are
#: kept as they were; train.min_detail likewise for videos whose frames hold little fine detail.)
HASH_SKIPS_DEFAULT: dict[str, tuple[str, ...]] = {"media": ("codec", "damaged", "max_damaged", "deinterlace", "bit_depth", "fps", "size", "fit"),
                                                  "train": ("cpus_per_worker", "precision", "min_pair_side", "min_detail"),
                                                  "model": ("n_layers", "growth", "frames", "hidden", "mlp_layers")}


@dataclass(frozen=True)
class RestoreConfig:
    scale: float = _f(2, "Upscaling factor: 2, 3 or 4, or any number in [1, 4] such as 2.5: an integer model then restores at the next integer scale (at least 2) and is resized down, the continuous-scale model (model.arch=liif, the preset any) restores straight to it. With media.size: the integer model's scale (each video gets the scale that fits the size).")
    device: str = _f("auto", 'Where training and inference run: "auto" (GPUs when the cluster has them now, else CPU), "gpu" (request GPUs: on an autoscaling cluster whose GPU workers start at zero), or "cpu".')
    media: MediaConfig = field(default_factory=MediaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    lock_wait: float = _f(0.0, "Seconds to wait when another run is writing to the same output (its lease in OUT/.reelsr/run.lock) before giving up with its name; 0: give up at once. A crashed run's lease expires after 10 minutes.")
    videos_at_once: int = _f(0, "Videos restored concurrently (their stages overlap on the cluster). 0: from the cluster, max(GPUs, CPUs // 4), at least 1, at most 16.")

    def __post_init__(self) -> None:
        if self.videos_at_once < 0:
            raise ValueError(f"videos_at_once must be >= 0, got {self.videos_at_once}")
        if not (math.isfinite(self.lock_wait) and self.lock_wait >= 0):
            raise ValueError(f"lock_wait must be a number of seconds >= 0, got {self.lock_wait}")
        if isinstance(self.scale, float) and self.scale.is_integer():
            object.__setattr__(self, "scale", int(self.scale))  # 2.0 is 2: the same outputs, the same config hash
        from pipeline.models.liif import check_scale

        check_scale(self.scale)  # any number in [1, 4]; an integer model's own scale is model_scale
        if self.model.arch != "liif" and self.scale == 1:
            raise ValueError("scale must be more than 1 for an integer model (x2, x3, x4, or e.g. 1.5: x2 then resized)")
        if self.device not in ("auto", "gpu", "cpu"):
            raise ValueError(f"device must be auto, gpu or cpu, got {self.device!r}")
        if self.model.arch != "liif" and self.train.patch_size % self.model_scale:
            raise ValueError(f"train.patch_size ({self.train.patch_size}) must be a multiple of scale ({self.model_scale})")
        if self.train.train_last > self.model.n_resblocks:
            raise ValueError(f"train.train_last ({self.train.train_last}) is more than the model's {self.model.n_resblocks} residual blocks")
        if self.model.arch == "duf" and self.train.finetune and self.train.not_for_windows():
            raise ValueError("model.arch=duf fine-tunes on clean bicubic self-pair windows with the L1 loss only so far: leave train.loss, "
                             "train.patches, train.multiscale, train.degrade and train.train_last at their defaults, or add --no-finetune")
        if self.model.arch == "liif" and self.train.finetune and self.train.not_for_windows():
            raise ValueError("model.arch=liif fine-tunes on clean bicubic self-pairs with the L1 loss only so far: leave train.loss, "
                             "train.patches, train.multiscale, train.degrade and train.train_last at their defaults, or add --no-finetune")
        if not self.train.finetune and self.model.pretrained in (None, "", SCRATCH):
            raise ValueError("--no-finetune (train.finetune=false) needs a starting model: set model.pretrained")

    @property
    def model_scale(self) -> float:
        """The scale the model itself restores at: ``scale`` for the continuous model; for
        an integer one the integer scale at or above it, at least 2 (then resized down)."""
        return self.scale if self.model.arch == "liif" else max(2, math.ceil(self.scale))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self, *sections: str, gpu: bool | None = None) -> str:
        """Stable 12-hex-digit hash of the fields that change results.

        With no section named: everything that changes the restored pixels -- scale,
        model, train, media, infer.precision, and the device the run uses (``gpu``, as
        resolved when the run starts; the configured ``device`` when not given). Not the
        rest of infer/metrics/storage, which change speed or what is measured (tiling's
        seams are negligible). With section names: only those (plus scale).
        """
        d = self.to_dict()
        for section, names in HASH_SKIPS_DEFAULT.items():  # (so that outputs made before they existed keep their hash)
            defaults = type(getattr(self, section))()
            for name in names:
                if d[section][name] == getattr(defaults, name):
                    del d[section][name]
        if sections:
            payload = {"scale": d["scale"], **{k: d[k] for k in sections}}
        else:
            device = ("gpu" if gpu else "cpu") if gpu is not None else d["device"]
            payload = {"scale": d["scale"], "model": d["model"], "train": d["train"], "media": d["media"],
                       "precision": d["infer"]["precision"], "device": device}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------
# building a config from presets, YAML and overrides

def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(RestoreConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(RestoreConfig) if dataclasses.is_dataclass(hints[f.name])}


def _field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    if name not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ValueError(f"unknown config field {name!r} (known: {known})")
    return hints[name]


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a YAML or command-line value to the field's declared type."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if typ in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{key} must be a number, got {value!r}")
        try:
            v = float(value) if typ is float else int(str(value), 10) if isinstance(value, str) else value
        except ValueError:
            raise ValueError(f"{key} must be {typ.__name__}, got {value!r}") from None
        if typ is int and (not isinstance(v, int) or isinstance(v, float)):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return v
    if typ is str:
        return "" if value is None else str(value)  # "--set train.degrade=" clears a text field
    raise ValueError(f"{key}: unsupported type {typ}")


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    sections = _sections()
    if len(parts) == 1:
        if parts[0] in sections:
            raise ValueError(f"{key!r} is a section; set one of its fields, e.g. {key}.{dataclasses.fields(sections[key])[0].name}")
        _field_type(RestoreConfig, parts[0])
        tree[parts[0]] = _coerce(value, _field_type(RestoreConfig, parts[0]), key)
        return
    if len(parts) != 2 or parts[0] not in sections:
        raise ValueError(f"unknown config key {key!r}; sections are {', '.join(sections)}")
    typ = _field_type(sections[parts[0]], parts[1])
    tree.setdefault(parts[0], {})[parts[1]] = _coerce(value, typ, key)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def build_config(
    preset: str | None = None,
    yaml_path: str | None = None,
    overrides: list[str] | None = None,
    **explicit: Any,
) -> RestoreConfig:
    """Build a RestoreConfig from a preset, a YAML file, ``key=value`` overrides and
    explicit dotted keys (``scale=4``, ``train.finetune=False``), later ones winning."""
    from pipeline.presets import PRESETS

    tree: dict[str, Any] = {}
    if preset is not None:
        for k, v in _flatten(PRESETS.get(preset).restore_tree()):
            _set(tree, k, v)
    import yaml  # here, not at the top: the torch-only GPU machines import the config without PyYAML

    if yaml_path:
        with open(yaml_path, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{yaml_path}: expected a mapping at the top level, got {type(loaded).__name__}")
        for k, v in _flatten(loaded):
            _set(tree, k, v)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set takes key=value, got {item!r}")
        k, v = item.split("=", 1)
        _set(tree, k.strip(), yaml.safe_load(v) if v.strip() else None)
    for k, v in explicit.items():
        if v is not None:
            _set(tree, k, v)
    sections = _sections()
    kwargs = {k: (sections[k](**v) if k in sections else v) for k, v in tree.items()}
    return RestoreConfig(**kwargs)


def describe_fields() -> str:
    """The config reference shown by ``--help``: every field, its default and meaning."""
    lines = ["configuration fields (set in YAML or with --set key=value):"]
    base = RestoreConfig(train=TrainConfig(), model=ModelConfig())
    for f in dataclasses.fields(RestoreConfig):
        value = getattr(base, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                lines.append(f"  {f.name}.{g.name} = {getattr(value, g.name)!r}\n      {g.metadata.get('help', '')}")
        else:
            lines.append(f"  {f.name} = {value!r}\n      {f.metadata.get('help', '')}")
    from pipeline.datasets.degrade import DEGRADATIONS
    from pipeline.losses import TERMS
    from pipeline.models import ARCHS
    from pipeline.presets import PRESETS

    lines.append("presets (--preset NAME; applied first):")
    lines += [f"  {e.name}: {e.help}" for e in PRESETS]
    lines.append("model architectures (model.arch):")
    lines += [f"  {e.name}: {e.help}" for e in ARCHS]
    lines.append("loss terms (train.loss, e.g. l1:1,ssim:0.2):")
    lines += [f"  {e.name}: {e.help}" for e in TERMS]
    lines.append("degradations (train.degrade, e.g. noise:2,x264:28):")
    lines += [f"  {e.name}:{e.item.param.split()[0].upper()}: {e.help} ({e.item.param} in {e.item.low:g}..{e.item.high:g})" for e in DEGRADATIONS]
    return "\n".join(lines)
