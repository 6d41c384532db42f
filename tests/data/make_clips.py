"""Make the small real clips that reelsr's tests and demo ship with.

Run once by hand from the repository root, with the project venv active::

    python tests/data/make_clips.py --src FOLDER_WITH_THE_ORIGINAL_CLIPS

It reads two real clips (read-only) from ``--src`` and writes:

* ``tests/data/bbb_320x180.mp4`` -- first 50 frames of ``bigbuckbunny.mp4``
  scaled to 320x180, H.264 (libx264), GOP 12 (keyint=min-keyint=12, no scene
  cut), 3 B-frames, *open* GOPs (x264 ``open-gop=1``), BT.709 limited range and
  tagged so; the source's AAC audio packets for the same span copied unchanged.
* ``tests/data/carphone_gop10.mp4`` -- first 40 frames of
  ``carphone_pristine.mp4`` at 176x144, GOP 10 (closed), crf 12, no audio,
  untagged colour (so readers fall back to BT.601 for SD).
* ``demo/carphone_qcif.mp4`` -- all 120 frames of carphone at 176x144, GOP 30
  (closed), crf 12, no audio.
* ``tests/data/packed_b.avi`` (with ``--archive FOLDER_WITH_Megamind.avi``) -- 36
  video packets of that DivX-era AVI copied unchanged (no re-encode): the first 20
  of its GOP at dts 154 and the first 16 of the GOP at dts 200. MPEG-4 Part 2 with
  "packed B-frames", so the decoder labels frames out of order.

Frame timestamps keep the source's time base and pts (1/12800 s for Big Buck
Bunny, 1/30000 s for carphone). After writing, the script prints each file's
size and GOP structure and checks that the Big Buck Bunny clip really has an
open GOP: some frame that follows a non-first keyframe in decode order has a
pts lower than that keyframe. The project never reads the shared clips at run
or test time; only this script does.
"""

from __future__ import annotations

import argparse
import os

import av
from av.video.reformatter import Interpolation

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACCURATE = (
    Interpolation.BICUBIC
    | Interpolation.ACCURATE_RND
    | Interpolation.FULL_CHR_H_INT
    | Interpolation.FULL_CHR_H_INP
)


def _encode_video(
    src_path: str,
    dst_path: str,
    *,
    frames: int,
    size: tuple[int, int] | None,
    x264_params: str,
    crf: int,
    colorspace: str | None,
    copy_audio: bool,
) -> None:
    """Re-encode the first `frames` frames of `src_path` into `dst_path`.

    `colorspace` is "bt709", "bt601" or None (leave the output untagged and keep
    the source's YUV samples' matrix as it is). With `copy_audio`, the source's
    first audio stream's packets whose pts lies before the end of the last
    copied video frame are copied unchanged.
    """
    src = av.open(src_path)
    vin = src.streams.video[0]
    tb = vin.time_base
    width, height = size or (vin.codec_context.width, vin.codec_context.height)

    out = av.open(dst_path, "w")
    vout = out.add_stream("libx264", rate=vin.average_rate)
    vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
    vout.time_base = tb
    vout.codec_context.time_base = tb
    vout.options = {"crf": str(crf), "preset": "medium", "x264-params": x264_params}
    sws_cs = None
    if colorspace is not None:
        sws_cs = {"bt709": "ITU709", "bt601": "ITU601"}[colorspace]
        cc = vout.codec_context
        cc.colorspace = 1 if colorspace == "bt709" else 6  # AVCOL_SPC_BT709 / SMPTE170M
        cc.color_primaries = 1 if colorspace == "bt709" else 6
        cc.color_trc = 1 if colorspace == "bt709" else 6
        cc.color_range = 1  # MPEG (limited)
    ain = src.streams.audio[0] if (copy_audio and src.streams.audio) else None
    aout = out.add_stream_from_template(ain) if ain is not None else None

    end_pts = None
    for count, frame in enumerate(src.decode(vin)):
        if count == frames:
            break
        scaled = frame.reformat(
            width=width,
            height=height,
            format="yuv420p",
            src_colorspace=sws_cs,
            dst_colorspace=sws_cs,
            src_color_range="MPEG",
            dst_color_range="MPEG",
            interpolation=ACCURATE,
        )
        scaled.pts = frame.pts
        scaled.time_base = tb
        scaled.pict_type = av.video.frame.PictureType.NONE
        for packet in vout.encode(scaled):
            out.mux(packet)
        end_pts = frame.pts + frame.duration
    for packet in vout.encode(None):
        out.mux(packet)

    if ain is not None:
        end_s = end_pts * tb
        src.seek(0)
        for packet in src.demux(ain):
            if packet.pts is None or packet.size == 0:
                continue
            if packet.pts * ain.time_base >= end_s:
                break
            packet.stream = aout
            out.mux(packet)
    out.close()
    src.close()


def _describe(path: str) -> bool:
    """Print size and GOP layout of `path`; return True if some GOP is open."""
    with av.open(path) as c:
        v = c.streams.video[0]
        packets = [p for p in c.demux(v) if p.size and p.pts is not None]
        audio = c.streams.audio[0] if c.streams.audio else None
        adur = (
            float(audio.duration * audio.time_base)
            if audio and audio.duration
            else None
        )
    keys = [i for i, p in enumerate(packets) if p.is_keyframe]
    open_gop = False
    for n, k in enumerate(keys[1:], start=1):
        end = keys[n + 1] if n + 1 < len(keys) else len(packets)
        if any(packets[i].pts < packets[k].pts for i in range(k + 1, end)):
            open_gop = True
    vdur = float(sum(p.duration for p in packets) * packets[0].time_base)
    print(
        f"{os.path.relpath(path, REPO)}: {os.path.getsize(path)} bytes, "
        f"{len(packets)} frames, keyframe pts {[packets[k].pts for k in keys]}, "
        f"open GOP: {open_gop}, video {vdur:.4f} s, audio {adur} s"
    )
    return open_gop


def _cut_packets(src: str, dst: str, spans: list[tuple[int, int]]) -> None:
    """Copy the video packets whose dts lies in one of ``spans`` ([a, b)) into an AVI."""
    with av.open(src) as inp, av.open(dst, "w", format="avi") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is not None and any(a <= packet.dts < b for a, b in spans):
                packet.stream = copy
                out.mux(packet)
    print(f"{os.path.relpath(dst, REPO)}: {os.path.getsize(dst)} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="folder with bigbuckbunny.mp4 and carphone_pristine.mp4 (see SOURCES.md)")
    parser.add_argument("--archive", help="folder with Megamind.avi (see SOURCES.md): also cut tests/data/packed_b.avi")
    args = parser.parse_args()
    bbb = os.path.join(args.src, "bigbuckbunny.mp4")
    carphone = os.path.join(args.src, "carphone_pristine.mp4")
    os.makedirs(os.path.join(REPO, "demo"), exist_ok=True)

    bbb_out = os.path.join(REPO, "tests", "data", "bbb_320x180.mp4")
    _encode_video(
        bbb,
        bbb_out,
        frames=50,
        size=(320, 180),
        crf=20,
        colorspace="bt709",
        x264_params="keyint=12:min-keyint=12:scenecut=0:bframes=3:open-gop=1",
        copy_audio=True,
    )
    gop10 = os.path.join(REPO, "tests", "data", "carphone_gop10.mp4")
    _encode_video(
        carphone,
        gop10,
        frames=40,
        size=None,
        crf=12,
        colorspace=None,
        x264_params="keyint=10:min-keyint=10:scenecut=0",
        copy_audio=False,
    )
    demo = os.path.join(REPO, "demo", "carphone_qcif.mp4")
    _encode_video(
        carphone,
        demo,
        frames=120,
        size=None,
        crf=12,
        colorspace=None,
        x264_params="keyint=30:min-keyint=30:scenecut=0",
        copy_audio=False,
    )
    if args.archive:
        _cut_packets(os.path.join(args.archive, "Megamind.avi"), os.path.join(REPO, "tests", "data", "packed_b.avi"),
                     [(154, 174), (200, 216)])
    if not _describe(bbb_out):
        raise SystemExit("bbb_320x180.mp4 has no open GOP")
    _describe(gop10)
    _describe(demo)


if __name__ == "__main__":
    main()
