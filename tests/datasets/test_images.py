"""The image store pretraining streams from: built once, memory-mapped, rebuilt when the
sources change."""

import os

import numpy as np
import pytest

from pipeline.datasets.images import ImageStore
from pipeline.train.pretrain import list_images, load_images
from tests.conftest import DATA


def test_store_holds_the_images_and_reads_slices(tmp_path):
    paths = list_images(os.path.join(DATA, "set5", "HR"))
    store = ImageStore.build(paths, str(tmp_path / "s"), min_side=250)
    kept = load_images(paths, min_side=250)
    assert len(store) == len(kept) == 4  # all but woman (228 px wide)
    for a, b in zip(store, kept, strict=True):
        assert isinstance(a, np.memmap) and a.shape == b.shape and np.array_equal(a, b)
    again = ImageStore.open(str(tmp_path / "s"))
    assert np.array_equal(again[1][10:20, 30:40], kept[1][10:20, 30:40])
    assert ImageStore.build(paths, str(tmp_path / "s"), min_side=250).index == store.index  # reused, not rebuilt
    with pytest.raises(ValueError, match="no training image"):
        ImageStore.build(paths, str(tmp_path / "t"), min_side=10_000)


def test_a_benchmark_set_folder_means_its_hr_images():
    """Set5 laid out as HR/ beside LR_bicubic/X2..X4: the set's folder lists the 5 HR
    images, not the 20 files (validating on the LR copies as targets read 3.4 dB low)."""
    root = os.path.join(DATA, "set5")
    assert list_images(root) == list_images(os.path.join(root, "HR"))
    assert len(list_images(root)) == 5 and all(os.sep + "HR" + os.sep in p for p in list_images(root))
