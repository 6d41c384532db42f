"""Where a restored picture goes: from a source frame size and the requested scale or
output size to the model's output size, the encoded frame size and the picture's place
in it.

An integer model restores ``scale`` x the source (the encoded frame is that, cut to even
sides for 4:2:0). A continuous-scale model restores to any size. ``media.size`` WxH fits
the picture inside W x H with its aspect kept (``media.fit`` "keep": the encoded frame is
the picture), centred on a black W x H frame ("pad"), or covering W x H with the excess
cut off, centred ("crop"); an integer model reaches that picture by restoring at its
scale and resizing down (``inference.upscale_tensor``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Geometry:
    """scale: the picture's size over the source's (float; the height's ratio when the two
    sides round differently); picture (h, w): the model's output; frame (h, w): the encoded
    frame, both even; offset (y, x): the picture's top-left in the frame (negative: that
    much of the picture is cut off)."""

    scale: float
    picture: tuple[int, int]
    frame: tuple[int, int]
    offset: tuple[int, int] = (0, 0)

    @property
    def resized(self) -> bool:
        """Whether the picture is padded or cropped into its frame (not only cut to even sides)."""
        return self.offset != (0, 0) or self.frame[0] > self.picture[0] or self.frame[1] > self.picture[1]


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


def parse_size(size: str) -> tuple[int, int]:
    """"1920x1080" -> (1920, 1080): both even, at least 16 (ValueError naming the value)."""
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ValueError(f"media.size must be WIDTHxHEIGHT, e.g. 1920x1080, got {size!r}") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise ValueError(f"media.size must have even sides of at least 16 px (4:2:0 video), got {size!r}")
    return w, h


def geometry(width: int, height: int, scale: float, size: str = "", fit: str = "keep", integer_model: bool = True) -> Geometry:
    """The geometry of a ``width`` x ``height`` source restored at ``scale`` (or to
    ``size`` "WxH" with ``fit``, which then decides the scale)."""
    if not size:
        if integer_model and float(scale).is_integer():
            s = int(scale)
            return Geometry(float(s), (height * s, width * s), (height * s // 2 * 2, width * s // 2 * 2))
        pic = (_even(height * scale), _even(width * scale))
        return Geometry(pic[0] / height, pic, pic)
    W, H = parse_size(size)
    s = max(W / width, H / height) if fit == "crop" else min(W / width, H / height)
    pic = (_even(height * s), _even(width * s))
    if fit == "keep":
        return Geometry(pic[0] / height, pic, pic)
    return Geometry(pic[0] / height, pic, (H, W), ((H - pic[0]) // 2 // 2 * 2, (W - pic[1]) // 2 // 2 * 2))
