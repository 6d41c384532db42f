"""Output geometry: an integer scale, any scale, and a target size kept, padded or cropped."""

import pytest

from pipeline.media.geometry import Geometry, geometry, parse_size


def test_integer_models_keep_their_sizes():
    assert geometry(176, 144, 2) == Geometry(2.0, (288, 352), (288, 352))
    g = geometry(175, 143, 3)  # an odd side loses its last row / column for 4:2:0, as before
    assert g.picture == (429, 525) and g.frame == (428, 524) and not g.resized


def test_any_scale_rounds_the_picture_to_even_sides():
    g = geometry(176, 144, 2.5, integer_model=False)
    assert g.picture == g.frame == (360, 440) and g.scale == 2.5
    g = geometry(175, 143, 1.5, integer_model=False)
    assert g.picture == (214, 262) and g.scale == pytest.approx(214 / 143)


@pytest.mark.parametrize("fit,scale,picture,frame,offset", [
    ("keep", 1.875, (270, 330), (270, 330), (0, 0)),        # fits inside 480x270: the height decides
    ("pad", 1.875, (270, 330), (270, 480), (0, 74)),        # centred on black (an even offset, for 4:2:0)
    ("crop", 480 / 176, (392, 480), (270, 480), (-62, 0)),  # covers 480x270: the width decides, the excess cut
])
def test_a_size_kept_padded_or_cropped(fit, scale, picture, frame, offset):
    g = geometry(176, 144, 2, "480x270", fit, integer_model=False)
    assert g.picture == picture and g.frame == frame and g.offset == offset
    assert g.scale == pytest.approx(scale, rel=0.01)
    assert g.resized == (fit != "keep")


@pytest.mark.parametrize("bad", ["1920", "1920x", "axb", "1921x1080", "8x8"])
def test_sizes_are_checked(bad):
    with pytest.raises(ValueError, match="media.size"):
        parse_size(bad)
    assert parse_size("1920X1080") == (1920, 1080)
