"""The image store pretraining streams from: every training image decoded once into one
packed uint8 file, memory-mapped by each worker, so a worker reads only the patches it
samples (the page cache shares them between workers on a node) instead of holding
every image.

    store = ImageStore.build(paths, folder)     # once: <folder>/images.u8 + index.json
    images = ImageStore.open(folder)            # in each worker: a sequence of (H, W, 3) views
    images[7][y:y + 96, x:x + 96]               # reads only those rows
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np

from pipeline.storage.local import atomic

FORMAT = "reelsr.images/1"


def fingerprint(paths: Sequence[str], min_side: int) -> str:
    """Names, sizes and modification times of the sources: a changed folder is rebuilt."""
    h = hashlib.sha256(f"{FORMAT}|{min_side}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.basename(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class ImageStore(Sequence[np.ndarray]):
    """A read-only sequence of uint8 (H, W, 3) images backed by one memory-mapped file."""

    def __init__(self, folder: str, index: dict) -> None:
        self.folder = folder
        self.index = index
        self._data = np.memmap(os.path.join(folder, "images.u8"), dtype=np.uint8, mode="r") if index["images"] else None

    @classmethod
    def build(cls, paths: Sequence[str], folder: str, min_side: int = 0) -> ImageStore:
        """Decode ``paths`` (grey images repeated to RGB) into ``folder``, leaving out images
        with a side under ``min_side``; reuses an existing store of the same sources."""
        from pipeline.benchmark import load_rgb

        key = fingerprint(paths, min_side)
        try:
            with open(os.path.join(folder, "index.json"), encoding="utf-8") as fh:
                index = json.load(fh)
            if index.get("fingerprint") == key:
                return cls(folder, index)
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        entries, offset = [], 0
        with atomic(os.path.join(folder, "images.u8")) as tmp, open(tmp, "wb") as fh:
            for p in paths:
                im = load_rgb(p)[0]
                if min(im.shape[:2]) < min_side:
                    continue
                fh.write(np.ascontiguousarray(im).tobytes())
                entries.append({"name": os.path.basename(p), "offset": offset, "shape": list(im.shape)})
                offset += im.size
            if not entries:
                raise ValueError(f"no training image has both sides >= {min_side} px")
        index = {"format": FORMAT, "fingerprint": key, "images": entries, "bytes": offset, "min_side": min_side}
        with atomic(os.path.join(folder, "index.json")) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(index, fh)
        return cls(folder, index)

    @classmethod
    def open(cls, folder: str) -> ImageStore:
        with open(os.path.join(folder, "index.json"), encoding="utf-8") as fh:
            return cls(folder, json.load(fh))

    def __len__(self) -> int:
        return len(self.index["images"])

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        e = self.index["images"][i]
        h, w, c = e["shape"]
        return self._data[e["offset"]:e["offset"] + h * w * c].reshape(h, w, c)
