"""Training windows for multi-frame models, synthesised from still images or cut from videos.

A window is T consecutive frames of a patch in motion: a random smooth trajectory of the
whole patch (velocity and acceleration, sub-pixel) plus a local motion field (a smooth
random displacement per frame, so parts of the picture move against each other, without
tearing or occlusion), sampled from the image with bicubic interpolation. The centre frame
is the image's own pixels (the target is never resampled); the others are where the
content was before and will be after. Its input is the frames degraded alike
(``ArchiveDegradation.window``, or the bicubic downscale).

Windows cut from video files carry what synthesis does not: real motion (occlusion,
motion blur, objects moving against each other). ``clip_shots`` decodes a file once,
shrinks its frames (so the file's own compression artefacts fall below a pixel and the
frames can serve as targets) and splits it at scene cuts; ``shot_store`` keeps the shots
of a run's videos on disk, decoded once, for every training process to memory-map;
``shot_windows`` lists every window of consecutive frames inside one shot as views, so a
window never spans a cut.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.datasets.patches import PatchSampler
from pipeline.metrics.resize import bicubic_resize

#: (hr frames float (T, 3, P, P) in [0, 1], scale, rng) -> their inputs (T, 3, P/scale, P/scale)
MakeWindowLR = Callable[[torch.Tensor, int, np.random.Generator], torch.Tensor]


def bicubic_window(frames: torch.Tensor, scale: int, rng: np.random.Generator) -> torch.Tensor:
    return bicubic_resize(frames, (frames.shape[-2] // scale, frames.shape[-1] // scale))


def margin(frames: int, max_speed: float, local: float) -> int:
    """Pixels of context a window of ``frames`` needs around its patch."""
    half = frames // 2
    return int(math.ceil(half * (max_speed + local) + 0.5 * 0.2 * half * half)) + 3


def smooth_field(size: int, amplitude: float, rng: np.random.Generator, cells: int = 3) -> torch.Tensor:
    """(2, size, size) random displacement that varies smoothly over the patch (a
    ``cells`` x ``cells`` grid of random vectors, bicubically interpolated), each
    component at most ``amplitude`` px."""
    grid = torch.from_numpy(rng.uniform(-amplitude, amplitude, (1, 2, cells, cells)).astype(np.float32))
    return F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)[0].clamp(-amplitude, amplitude)


def synth_window(region: np.ndarray, frames: int, patch: int, rng: np.random.Generator, max_speed: float = 2.0,
                 local: float = 0.5) -> torch.Tensor:
    """T = ``frames`` (odd) frames of the ``patch`` x ``patch`` centre of ``region`` (uint8
    (R, R, 3), R >= patch + 2 * ``margin``) in motion: float (T, 3, patch, patch) in
    [0, 1]. Global speed up to ``max_speed`` px/frame with a small acceleration, local
    motion up to ``local`` px/frame."""
    need = patch + 2 * margin(frames, max_speed, local)
    if min(region.shape[:2]) < need:
        raise ValueError(f"a region of {region.shape[1]}x{region.shape[0]} px is too small for {frames} frames of {patch} px (need {need})")
    img = torch.from_numpy(np.array(region)).permute(2, 0, 1).float().div_(255)[None]  # (a copy: regions may be read-only views)
    rh, rw = img.shape[-2:]
    top, left = (rh - patch) // 2, (rw - patch) // 2
    speed, angle = float(rng.uniform(0, max_speed)), float(rng.uniform(0, 2 * math.pi))
    v = torch.tensor([speed * math.cos(angle), speed * math.sin(angle)]).view(2, 1, 1)
    a = torch.from_numpy(rng.normal(0.0, 0.1, 2).astype(np.float32)).view(2, 1, 1)
    field = smooth_field(patch, local, rng) if local > 0 else torch.zeros(2, patch, patch)
    ys, xs = torch.meshgrid(torch.arange(patch, dtype=torch.float32) + top, torch.arange(patch, dtype=torch.float32) + left, indexing="ij")
    out = []
    for t in range(frames):
        tau = t - frames // 2
        if tau == 0:
            out.append(img[0, :, top:top + patch, left:left + patch])
            continue
        d = v * tau + 0.5 * a * tau * tau + field * tau  # (2, P, P): x, y displacement of each pixel's content
        gx = (xs + d[0] + 0.5) / rw * 2 - 1
        gy = (ys + d[1] + 0.5) / rh * 2 - 1
        grid = torch.stack([gx, gy], -1)[None]
        out.append(F.grid_sample(img, grid, mode="bicubic", padding_mode="border", align_corners=False)[0].clamp(0, 1))
    return torch.stack(out)


def sample_windows(sampler: PatchSampler, batch: int, patch: int, frames: int, scale: int, rng: np.random.Generator,
                   make_lr: MakeWindowLR = bicubic_window, augment: bool = True, max_speed: float = 2.0,
                   local: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Random training windows: (lr (N, T, 3, p, p), hr (N, 3, P, P)), the target the
    window's centre frame. ``sampler`` gives regions of ``patch + 2 * margin`` px (its
    ``patch``); flips, 90-degree rotations and time reversal when ``augment``."""
    lrs, hrs = [], []
    for _ in range(batch):
        region = sampler.sample(rng)
        if augment:
            if rng.random() < 0.5:
                region = region[:, ::-1]
            region = np.rot90(region, int(rng.integers(4)))
        w = synth_window(region, frames, patch, rng, max_speed, local)
        if augment and rng.random() < 0.5:
            w = w.flip(0)
        hrs.append(w[frames // 2])
        lrs.append(make_lr(w, scale, rng))
    return torch.stack(lrs), torch.stack(hrs)


def sample_mixed_windows(sampler: PatchSampler, clips: Sequence[np.ndarray], batch: int, n_video: int, patch: int, frames: int,
                         scale: int, rng: np.random.Generator, make_lr: MakeWindowLR = bicubic_window, max_speed: float = 2.0,
                         local: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of ``batch`` windows: ``batch - n_video`` synthesised (``sample_windows``),
    then ``n_video`` cut from ``clips`` (``shot_windows`` of training videos,
    ``sample_video_windows``)."""
    parts = []
    if n_video < batch:
        parts.append(sample_windows(sampler, batch - n_video, patch, frames, scale, rng, make_lr, True, max_speed, local))
    if n_video:
        parts.append(sample_video_windows(clips, n_video, patch, scale, rng, make_lr))
    return tuple(torch.cat(t) for t in zip(*parts, strict=True))


def clip_shots(path: str, downscale: int = 2) -> list[np.ndarray]:
    """The frames of the video file ``path``, each shrunk by ``downscale`` (the mean of
    each ``downscale`` x ``downscale`` block), split at scene cuts (``media.windows``'s
    cut test): one uint8 (N, H, W, 3) array per shot."""
    from pipeline.media.chunks import decode_chunk, plan_chunks, scan
    from pipeline.media.probe import probe
    from pipeline.media.windows import block_mean, luma_small, lumas_cut

    if downscale < 1:
        raise ValueError(f"downscale must be >= 1, got {downscale}")
    info = scan(path, probe(path))
    shots: list[list[np.ndarray]] = [[]]
    last = None
    for _, rgb in decode_chunk(path, plan_chunks(info, max(1, info.frames))[0], info):
        small = np.round(block_mean(rgb, downscale)).astype(np.uint8)
        luma = luma_small(small)
        if last is not None and lumas_cut(last, luma) and shots[-1]:
            shots.append([])
        shots[-1].append(small)
        last = luma
    if not shots[-1]:
        raise ValueError(f"{path}: no frames decoded")
    return [np.stack(s) for s in shots]


def shot_store(paths: Sequence[str], folder: str, downscale: int) -> list[str]:
    """The ``.npy`` files of the shots of the videos ``paths`` (``clip_shots``), written
    into ``folder`` once and reused while the sources (names, sizes, modification times)
    and ``downscale`` stay the same: training processes ``np.load(..., mmap_mode="r")``
    them instead of decoding the videos again."""
    from pipeline.datasets.images import fingerprint
    from pipeline.storage.local import atomic

    key = fingerprint(paths, downscale)
    index_path = os.path.join(folder, "index.json")
    try:
        with open(index_path, encoding="utf-8") as fh:
            index = json.load(fh)
        if index.get("fingerprint") == key:
            return [os.path.join(folder, f) for f in index["files"]]
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    os.makedirs(folder, exist_ok=True)
    files = []
    for i, path in enumerate(paths):
        for j, shot in enumerate(clip_shots(path, downscale)):
            files.append(f"{i}-{j}.npy")
            np.save(os.path.join(folder, files[-1]), shot)
    with atomic(index_path) as tmp, open(tmp, "w", encoding="utf-8") as fh:  # written last: a store cut short is rebuilt
        json.dump({"fingerprint": key, "files": files}, fh)
    return [os.path.join(folder, f) for f in files]


def shot_windows(shots: Sequence[np.ndarray], frames: int, patch: int) -> list[np.ndarray]:
    """Every window of ``frames`` consecutive frames inside one shot (views, no copies), of
    shots at least ``patch`` px on each side."""
    return [s[i:i + frames] for s in shots if min(s.shape[1:3]) >= patch for i in range(len(s) - frames + 1)]


def sample_video_windows(windows: Sequence[np.ndarray], batch: int, patch: int, scale: int, rng: np.random.Generator,
                         make_lr: MakeWindowLR = bicubic_window, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-transfer windows from a video's own frames: ``windows`` are uint8 (T, H, W, 3)
    (``media.windows``); each sample is the same ``patch`` x ``patch`` region of every frame
    of a window (the video's real motion), flipped, rotated and reversed in time alike
    when ``augment``. Returns (lr (N, T, 3, p, p) = ``make_lr`` of the frames, hr (N, 3,
    P, P) = the centre frame's region)."""
    lrs, hrs = [], []
    for _ in range(batch):
        w = windows[int(rng.integers(len(windows)))]
        y, x = int(rng.integers(w.shape[1] - patch + 1)), int(rng.integers(w.shape[2] - patch + 1))
        c = w[:, y:y + patch, x:x + patch]
        if augment:
            if rng.random() < 0.5:
                c = c[:, :, ::-1]
            c = np.rot90(c, int(rng.integers(4)), axes=(1, 2))
            if rng.random() < 0.5:
                c = c[::-1]
        t = torch.from_numpy(np.ascontiguousarray(c)).permute(0, 3, 1, 2).float().div_(255)  # (T, 3, P, P)
        hrs.append(t[len(t) // 2])
        lrs.append(make_lr(t, scale, rng))
    return torch.stack(lrs), torch.stack(hrs)
