"""The GPU section of the benchmark, runnable where only torch is installed.

    python -m bench.run --gpu-only [--smoke] [--out bench/results]

It imports torch, numpy and reelsr's model, inference and training modules (PyAV, when
it is installed, for the host-side stages; they are reported as not measured when it is
not). On a machine without CUDA it runs the same code on the CPU (``--smoke``: tiny
sizes; the test suite does this). Sections:

* inference: EDSR-baseline x2 and x4 at 360p, 720p and 1080p input, batch and tiles
  planned as the actors plan them, the actors' path (uint8 upload, autocast, uint8
  result copied back);
* fine-tuning: steps/s of EDSR-baseline x4, batch 16, 48-px LR patches;
* a GPU actor's frame, part by part, at 720p and 1440p output: upload, model, colour
  conversion to I420 on the device, copy back;
* host-side stages per frame on one CPU core: decode, colour conversion (swscale), x264
  (veryfast, medium) and NVENC encodes; from them, the CPU cores a GPU needs per 100
  frames/s of output;
* tiling: pixels computed over frame pixels at 1080p x4, the tile plan then and now;
* the roofline: FLOPs per frame from the layer shapes against a bf16 matmul.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from pipeline import inference
from pipeline.config import TrainConfig
from pipeline.media.colour import rgb_to_i420
from pipeline.models.edsr import EDSR
from pipeline.train.finetune import finetune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"360p": (360, 640), "720p": (720, 1280), "1080p": (1080, 1920)}
SMOKE_SIZES = {"36p": (36, 64), "72p": (72, 128)}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def rate(fn: Callable[[], int], dev: torch.device, warmup: bool = True) -> tuple[float, float]:
    """(items per second, seconds) of ``fn`` (which returns how many items it did)."""
    if warmup:
        fn()
    _sync(dev)
    t0 = time.perf_counter()
    n = fn()
    _sync(dev)
    s = time.perf_counter() - t0
    return n / s, s


def model(scale: int, blocks: int, feats: int, dev: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return inference.prepare(EDSR(blocks, feats, 1.0, scale), dev)


def natural_frames(n: int, h: int, w: int) -> np.ndarray:
    """uint8 (n, h, w, 3) frames with smooth gradients and moving edges (codecs behave on
    them as on video, unlike on noise)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        r = 128 + 100 * np.sin(xx / 37 + i / 5) * np.cos(yy / 23)
        g = 128 + 90 * np.sin((xx + yy) / 51 - i / 7)
        b = (xx * 255 / max(1, w - 1) + 4 * i) % 256
        out[i] = np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)
        out[i, (h // 3 + 2 * i) % h: (h // 3 + 2 * i) % h + h // 8, w // 4: w // 2] = 30
    return out


def inference_rows(dev: torch.device, sizes: dict, blocks: int, feats: int, frames: int) -> list[dict[str, Any]]:
    amp = inference.autocast_dtype("auto", dev)
    rows = []
    for scale in (2, 4):
        net = model(scale, blocks, feats, dev)
        for h, w in sizes.values():
            batch, tile = inference.batch_and_tile(inference.auto_batch(dev, feats, h, w), 0, 16, dev, feats, scale, amp, (h, w))
            x = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
            reps = max(1, frames // batch)

            def run(x=x, net=net, scale=scale, tile=tile, reps=reps) -> int:
                for _ in range(reps):
                    inference.upscale_frames(net, x, scale, device=dev, tile=tile, overlap=16, amp=amp)
                return reps * x.shape[0]

            fps, s = rate(run, dev)
            row = {"stage": f"SR x{scale} {w}x{h}", "batch": batch, "tile": tile, "frames_per_s": round(fps, 2), "seconds": round(s, 3),
                   "tiled_pixels": round(inference.tiled_pixels(h, w, tile, 16), 3), "precision": str(amp).replace("torch.", "") if amp else "fp32"}
            print(f"  {row['stage']:<22} batch {batch:>2} tile {tile:>4}  {fps:9.2f} frames/s", flush=True)
            rows.append(row)
    return rows


def finetune_row(dev: torch.device, blocks: int, feats: int, steps: int) -> dict[str, Any]:
    net = EDSR(blocks, feats, 1.0, 4).to(dev)
    frames = list(natural_frames(8, 96, 128)) if steps <= 5 else list(natural_frames(16, 360, 640))
    cfg = TrainConfig(steps=steps, batch_size=16 if steps > 5 else 2, patch_size=192 if steps > 5 else 48)
    sps, s = rate(lambda: int(finetune(net, frames, cfg, 4, dev, 0)["steps"]), dev, warmup=False)
    print(f"  fine-tune {steps} steps: {sps:.2f} steps/s", flush=True)
    return {"stage": f"fine-tune EDSR {blocks}x{feats} x4, batch {cfg.batch_size}, {cfg.patch_size // 4} px LR", "steps_per_s": round(sps, 3),
            "seconds": round(s, 2)}


def actor_frame(dev: torch.device, sizes: dict, blocks: int, feats: int, frames: int) -> list[dict[str, Any]]:
    """Where a GPU actor's time goes per frame (x2), part by part."""
    amp = inference.autocast_dtype("auto", dev)
    net = model(2, blocks, feats, dev)
    rows = []
    for h, w in list(sizes.values())[:2]:
        x = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        up = torch.from_numpy(x).to(dev).permute(0, 3, 1, 2).float().div_(255)
        y = inference.upscale_tensor(net, up, 2, amp=amp)
        planes = rgb_to_i420(y, "bt709")
        host = inference.HostCopy()
        parts = {
            "upload (uint8)": lambda x=x: torch.from_numpy(x).to(dev).permute(0, 3, 1, 2).float().div_(255),
            "model": lambda up=up: inference.upscale_tensor(net, up, 2, amp=amp),
            "colour to I420 on the device": lambda y=y: rgb_to_i420(y, "bt709"),
            "copy back (I420, pinned)": lambda planes=planes, host=host: host.start(planes)(),
        }
        per = {}
        for part, fn in parts.items():
            def run(fn=fn) -> int:
                for _ in range(frames):
                    fn()
                return frames

            fps, _ = rate(run, dev)
            per[part] = round(1000 / fps, 3)
        rows.append({"output": f"{2 * w}x{2 * h}", "ms_per_frame": per})
        print(f"  actor frame {2 * w}x{2 * h}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in per.items()), flush=True)
    return rows


def host_stages(sizes: dict, frames: int) -> dict[str, Any]:
    """Per-frame time of the host-side stages on one CPU core, at each output size (x2 of
    the inputs), and the cores a GPU needs per 100 frames/s of output."""
    try:
        import av
    except ImportError:
        return {"measured": False, "why": "PyAV is not installed here"}
    from pipeline.media.chunks import decode_chunk, from_rgb, plan_chunks
    from pipeline.media.encode import ChunkWriter, nvenc_available
    from pipeline.media.probe import probe

    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"reelsr-gpu-bench-{os.getpid()}")
    os.makedirs(tmp, exist_ok=True)
    out: dict[str, Any] = {"measured": True, "pyav": av.__version__, "rows": []}
    for name, (h, w) in list(sizes.items())[:2]:
        src = natural_frames(frames, h, w)
        big = natural_frames(frames, 2 * h, 2 * w)
        clip = os.path.join(tmp, f"src-{name}.mp4")
        with ChunkWriter(clip, width=w, height=h, time_base=Fraction(1, 25), rate=Fraction(25), colorspace="bt709", crf=18, preset="veryfast",
                         gop_size=frames, threads=1) as wr:
            for i, f in enumerate(src):
                wr.write(i, f)
        info = probe(clip)
        chunk = plan_chunks(info, info.frames)[0]
        per: dict[str, float | None] = {}
        t0 = time.perf_counter()
        n = sum(1 for _ in decode_chunk(clip, chunk, info, threads=1))
        per["decode (H.264 input, to RGB)"] = round(1000 * (time.perf_counter() - t0) / n, 3)
        t0 = time.perf_counter()
        for f in big:
            from_rgb(f, "bt709")
        per["colour RGB -> I420 (swscale)"] = round(1000 * (time.perf_counter() - t0) / len(big), 3)
        planes = [from_rgb(f, "bt709").to_ndarray() for f in big]
        for label, codec, preset in (("x264 veryfast", "libx264", "veryfast"), ("x264 medium", "libx264", "medium"), ("NVENC", "h264_nvenc", "medium")):
            if codec == "h264_nvenc" and not nvenc_available():
                per[f"encode {label}"] = None
                continue
            path = os.path.join(tmp, f"enc-{name}-{codec}-{preset}.mp4")
            t0 = time.perf_counter()
            with ChunkWriter(path, width=2 * w, height=2 * h, time_base=Fraction(1, 25), rate=Fraction(25), colorspace="bt709", crf=12,
                             preset=preset, codec=codec, threads=1) as wr:
                for i, p in enumerate(planes):
                    wr.write_i420(i, p)
            per[f"encode {label}"] = round(1000 * (time.perf_counter() - t0) / len(planes), 3)
        # a GPU actor converts colour on the device, so the host decodes and encodes: cores per 100 output frames/s
        cores = {label: round(100 * (per["decode (H.264 input, to RGB)"] + per[f"encode {label}"]) / 1000, 2)
                 for label in ("x264 veryfast", "x264 medium") if per.get(f"encode {label}") is not None}
        out["rows"].append({"input": f"{w}x{h}", "output": f"{2 * w}x{2 * h}", "ms_per_frame_one_core": per, "cores_per_100_fps": cores})
        print(f"  host {2 * w}x{2 * h}: " + ", ".join(f"{k} {v} ms" for k, v in per.items()) + f"; cores per 100 frames/s {cores}", flush=True)
    return out


def tiling_rows() -> list[dict[str, Any]]:
    """Pixels computed over frame pixels at 1080p x4, with the tile plan before (tiles of
    the size, the last pushed to the edge) and now (equal tiles)."""
    def before(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
        if length <= tile:
            return [(0, length)]
        starts = list(range(0, length - tile, tile - overlap)) + [length - tile]
        return [(s, s + tile) for s in starts]

    rows = []
    for tile in (256, 384, 512, 768, 1024):
        old = sum((b - a) * (d - c) for a, b in before(1080, tile, 16) for c, d in before(1920, tile, 16)) / (1080 * 1920)
        rows.append({"tile": tile, "before": round(old, 3), "now": round(inference.tiled_pixels(1080, 1920, tile, 16), 3)})
    return rows


def roofline(dev: torch.device, h: int, w: int, smoke: bool) -> dict[str, Any]:
    net = EDSR(16, 64, 1.0, 4).to("meta")
    flops = 0.0

    def hook(m, inp, out):
        nonlocal flops
        flops += 2 * m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * out.shape[-2] * out.shape[-1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    net(torch.empty(1, 3, h, w, device="meta"))
    for hd in handles:
        hd.remove()
    n = 512 if smoke else 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)

    def mm() -> int:
        for _ in range(4):
            a @ a
        return 4

    per_s, _ = rate(mm, dev)
    tflops = per_s * 2 * n**3 / 1e12
    return {"gflop_per_frame": round(flops / 1e9, 1), "matmul_bf16_tflops": round(tflops, 2), "ceiling_fps": round(tflops * 1e12 / flops, 1)}


def markdown(result: dict[str, Any]) -> str:
    m = result["meta"]
    lines = [f"# reelsr GPU benchmark, {m['date']} on {m['host']}", "",
             f"device: {m['device']}; torch {m['torch']}, Python {m['python']}; commit {m['commit']}" + ("; SMOKE SIZE" if m["smoke"] else ""), "",
             "| stage | batch | tile | pixels computed / frame | precision | frames/s |", "|---|---:|---:|---:|---|---:|"]
    for r in result["inference"]:
        lines.append(f"| {r['stage']} | {r['batch']} | {r['tile'] or 'none'} | {r['tiled_pixels']} | {r['precision']} | {r['frames_per_s']} |")
    ft = result["finetune"]
    lines += ["", f"{ft['stage']}: {ft['steps_per_s']} steps/s.", "", "A GPU actor's frame (x2), ms:", ""]
    parts = list(result["actor"][0]["ms_per_frame"])
    lines += ["| output | " + " | ".join(parts) + " |", "|---|" + "---:|" * len(parts)]
    for r in result["actor"]:
        lines.append(f"| {r['output']} | " + " | ".join(str(r["ms_per_frame"][p]) for p in parts) + " |")
    host = result["host"]
    lines.append("")
    if host.get("measured"):
        keys = list(host["rows"][0]["ms_per_frame_one_core"])
        lines += ["Host-side stages, ms per frame on one CPU core (decode at the input size, the rest at the output size):", "", "| output | " + " | ".join(k.split(" (")[0] for k in keys) + " | cores per 100 frames/s |",
                  "|---|" + "---:|" * (len(keys) + 1)]
        for r in host["rows"]:
            vals = [("-" if r["ms_per_frame_one_core"][k] is None else str(r["ms_per_frame_one_core"][k])) for k in keys]
            lines.append(f"| {r['output']} | " + " | ".join(vals) + f" | {r['cores_per_100_fps']} |")
    else:
        lines.append(f"Host-side stages: not measured ({host['why']}).")
    lines += ["", "Tiling at 1080p x4, pixels computed / frame pixels:", "", "| tile | before | now |", "|---:|---:|---:|"]
    lines += [f"| {r['tile']} | {r['before']} | {r['now']} |" for r in result["tiling"]]
    rf = result["roofline"]
    lines += ["", f"Roofline, EDSR-baseline x4 on 640x360: {rf['gflop_per_frame']} GFLOP per frame; bf16 matmul {rf['matmul_bf16_tflops']} TFLOP/s "
              f"-> at most {rf['ceiling_fps']} frames/s."]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    smoke = args.smoke
    sizes = SMOKE_SIZES if smoke else SIZES
    blocks, feats = (2, 16) if smoke else (16, 64)
    frames = 2 if smoke else args.gpu_frames
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    started = datetime.datetime.now(datetime.UTC)
    print(f"reelsr GPU benchmark on {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'the CPU'}" + (" (smoke size)" if smoke else ""), flush=True)
    result = {
        "inference": inference_rows(dev, sizes, blocks, feats, frames),
        "finetune": finetune_row(dev, blocks, feats, 2 if smoke else args.gpu_train_steps),
        "actor": actor_frame(dev, sizes, blocks, feats, frames),
        "host": host_stages(sizes, 4 if smoke else 48),
        "tiling": tiling_rows(),
        "roofline": roofline(dev, 360, 640, smoke),
    }
    result["meta"] = {"date": started.strftime("%Y-%m-%d"), "host": socket.gethostname(), "smoke": smoke,
                      "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or 'unknown'})",
                      "torch": torch.__version__, "python": platform.python_version(), "commit": _commit()}
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"{result['meta']['date']}-{result['meta']['host']}-gpu" + ("-smoke" if smoke else ""))
    with open(base + ".json", "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    md = markdown(result)
    with open(base + ".md", "w") as fh:
        fh.write(md)
    print("\n" + md + f"results: {base}.json and {base}.md", flush=True)
    return 0


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
